import AmberCatalog
import AmberModel
import AmberTensor
import AmberTrain
import Foundation
import Testing

@Suite("Batching and the VSE++ trainer")
struct PairBatcherTests {
    @Test func epochsArePermutationsAndTheSeedFixesThem() {
        var a = PairBatcher(count: 10, batchSize: 3, seed: 4), b = PairBatcher(count: 10, batchSize: 3, seed: 4)
        var seen: [Int] = []
        for _ in 0..<3 { seen += a.next() }
        #expect(Set(seen).count == 9, "one epoch never repeats a pair")
        #expect(a.state.epoch == 0)
        _ = a.next()
        #expect(a.state.epoch == 1)
        for _ in 0..<3 { _ = b.next() }
        _ = b.next()
        #expect(a.state == b.state)
    }

    @Test func savedStateResumesTheSameBatches() throws {
        var original = PairBatcher(count: 50, batchSize: 8, seed: 1)
        for _ in 0..<9 { _ = original.next() }
        let saved = try JSONEncoder().encode(original.state)
        var resumed = PairBatcher(count: 50, batchSize: 8, state: try JSONDecoder().decode(PairBatcher.State.self, from: saved))
        for _ in 0..<12 { #expect(original.next() == resumed.next()) }
    }

    /// Synthetic pairs: text features are a noisy linear map of image features.
    static func syntheticData(images: Int, seed: UInt64) -> RetrievalData {
        var generator = RandomGenerator(seed: seed)
        let imageGlobal = Tensor.randomNormal([images, 12], using: &generator)
        let map = Tensor.randomNormal([12, 8], using: &generator)
        let imageOfText = (0..<(images * 5)).map { $0 / 5 }
        let textGlobal = Tensor.matmul(imageGlobal.indexSelect(imageOfText), map)
            + Tensor.randomNormal([images * 5, 8], standardDeviation: 0.5, using: &generator)
        return RetrievalData(imageGlobal: imageGlobal, imageLocal: imageGlobal.reshaped([images, 1, 12]), textGlobal: textGlobal,
                             textTokens: textGlobal, tokenOffsets: Array(0...(images * 5)), imageOfText: imageOfText, captions: [])
    }

    @Test func vseLearnsSyntheticPairsAndIsDeterministic() {
        let data = Self.syntheticData(images: 120, seed: 2)
        let train = data.subset(images: 0..<100), dev = data.subset(images: 100..<120)
        var configuration = VSETrainer.Configuration()
        configuration.jointDimension = 16
        configuration.optimization.batchSize = 32
        configuration.optimization.steps = 300
        configuration.optimization.learningRate = 5e-3
        configuration.optimization.warmupSteps = 10
        configuration.optimization.allNegativesSteps = 20
        configuration.optimization.evaluateEvery = 100
        let first = VSETrainer(configuration: configuration).train(train: train, dev: dev)
        let second = VSETrainer(configuration: configuration).train(train: train, dev: dev)
        #expect(first.map(\.metrics) == second.map(\.metrics), "same seed and data must give the same model")
        #expect(first.last!.loss < first[1].loss)
        // Chance rsum on 20 images / 100 captions is far below this.
        #expect(first.last!.metrics.rsum > 300, "\(first.last!.metrics)")
    }
}
