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
        #expect(first.last!.loss < first.first!.loss)
        // Chance rsum on 20 images / 100 captions is far below this.
        #expect(first.last!.metrics.rsum > 300, "\(first.last!.metrics)")
    }
}

@Suite("Matching-model trainer")
struct MatchingTrainerTests {
    @Test func learnsSyntheticPairsDeterministically() {
        let data = PairBatcherTests.syntheticData(images: 60, seed: 4)
        let train = data.subset(images: 0..<50), dev = data.subset(images: 50..<60)
        // Fragments: two copies of the global vector with noise, so max-2 and attention have work.
        func withFragments(_ d: RetrievalData, seed: UInt64) -> RetrievalData {
            var generator = RandomGenerator(seed: seed)
            let images = Tensor.concatenate([d.imageGlobal.reshaped([d.imageCount, 1, 12]), d.imageGlobal.reshaped([d.imageCount, 1, 12])], axis: 1)
                + Tensor.randomNormal([d.imageCount, 2, 12], standardDeviation: 0.1, using: &generator)
            let tokens = Tensor.concatenate([d.textGlobal, d.textGlobal], axis: 1).reshaped([d.textCount * 2, 8])
            return RetrievalData(imageGlobal: d.imageGlobal, imageLocal: images, textGlobal: d.textGlobal, textTokens: tokens,
                                 tokenOffsets: (0...d.textCount).map { $0 * 2 }, imageOfText: d.imageOfText, captions: [])
        }
        var configuration = MatchingTrainer.Configuration()
        configuration.encoder.jointDimension = 16
        configuration.optimization.batchSize = 25
        configuration.optimization.steps = 120
        configuration.optimization.learningRate = 3e-3
        configuration.optimization.warmupSteps = 10
        configuration.optimization.allNegativesSteps = 20
        configuration.optimization.evaluateEvery = 60
        let trainer = MatchingTrainer(configuration: configuration)
        let first = trainer.train(train: withFragments(train, seed: 1), dev: withFragments(dev, seed: 2))
        let second = trainer.train(train: withFragments(train, seed: 1), dev: withFragments(dev, seed: 2))
        #expect(first.map(\.metrics) == second.map(\.metrics))
        #expect(first.last!.loss < first.first!.loss)
        #expect(first.last!.metrics.rsum > 300, "\(first.last!.metrics)")

        // With the memory bank (momentum encoder + queues) on: still deterministic, still learns,
        // and a different model from the triplet-only one.
        var withMemory = configuration
        withMemory.memoryWeight = 0.5
        withMemory.queueSize = 64
        withMemory.momentum = 0.9
        withMemory.memoryTemperature = 0.1
        let memoryTrainer = MatchingTrainer(configuration: withMemory)
        let third = memoryTrainer.train(train: withFragments(train, seed: 1), dev: withFragments(dev, seed: 2))
        let fourth = memoryTrainer.train(train: withFragments(train, seed: 1), dev: withFragments(dev, seed: 2))
        #expect(third.map(\.metrics) == fourth.map(\.metrics))
        #expect(third.map(\.loss) != first.map(\.loss))
        #expect(third.last!.metrics.rsum > 300, "\(third.last!.metrics)")

        // Prototypes on from the start (Sinkhorn codes, soft positives in the queues).
        var withPrototypes = withMemory
        withPrototypes.prototypeWeight = 0.2
        withPrototypes.prototypeCount = 4
        withPrototypes.prototypeWarmupSteps = 0
        let fifth = MatchingTrainer(configuration: withPrototypes).train(train: withFragments(train, seed: 1), dev: withFragments(dev, seed: 2))
        #expect(fifth.map(\.loss) != third.map(\.loss))
        #expect(fifth.allSatisfy { $0.loss.isFinite })
        #expect(fifth.last!.metrics.rsum > 300, "\(fifth.last!.metrics)")

        // And the relation graph on top.
        var withGraph = withPrototypes
        withGraph.graphWeight = 0.5
        let sixth = MatchingTrainer(configuration: withGraph).train(train: withFragments(train, seed: 1), dev: withFragments(dev, seed: 2))
        #expect(sixth.map(\.loss) != fifth.map(\.loss))
        #expect(sixth.last!.metrics.rsum > 300, "\(sixth.last!.metrics)")

    }
}
