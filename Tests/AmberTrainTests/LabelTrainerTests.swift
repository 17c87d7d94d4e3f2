import AmberCatalog
import AmberModel
import AmberTensor
import AmberTrain
import Foundation
import Testing

@Suite("DRCL label-supervised training")
struct LabelTrainerTests {
    /// Three classes; each modality's items are noisy copies of a per-class centre in its own
    /// feature space (images 6-d, texts 4-d), so nothing but the labels ties the two spaces.
    static func data(count: Int = 120, seed: UInt64 = 1) -> LabelledData {
        var generator = RandomGenerator(seed: seed)
        let imageCentres = Tensor.randomNormal([3, 6], standardDeviation: 2, using: &generator)
        let textCentres = Tensor.randomNormal([3, 4], standardDeviation: 2, using: &generator)
        let labels = (0..<count).map { [$0 % 3] }
        func items(_ centres: Tensor) -> LabelledItems {
            let d = centres.shape[1]
            let noise = Tensor.randomNormal([count, d], using: &generator)
            return LabelledItems(features: centres.indexSelect(labels.map { $0[0] }) + noise, labels: labels)
        }
        return LabelledData(items: [.image: items(imageCentres), .text: items(textCentres)], classCount: 3)
    }

    static func configuration(seed: UInt64 = 1) -> LabelTrainer.Configuration {
        var c = LabelTrainer.Configuration()
        c.network = LabelEncoder.Configuration(hidden: [16], output: 8)
        c.priorEpochs = 15
        c.epochs = 30
        c.batchSize = 32
        c.priorLearningRate = 5e-3
        c.imageLearningRate = 5e-3
        c.textLearningRate = 5e-3
        c.seed = seed
        return c
    }

    static func trainer(seed: UInt64 = 1) -> LabelTrainer {
        let (train, validation) = data().split(validationShare: 0.25, seed: 0)
        return LabelTrainer(configuration: configuration(seed: seed), train: train, validation: validation)
    }

    @Test func learnsASharedSpaceFromLabelsAlone() throws {
        let trainer = Self.trainer()
        let model = try trainer.run([.image, .text])
        let metrics = try #require(model.metrics)
        // Chance is ≈ 0.36 (a third of the gallery is relevant); separable classes are near 1.
        #expect(metrics.mean > 0.9, "validation \(metrics)")
        #expect(model.encoders.keys.sorted { $0.rawValue < $1.rawValue } == [.image, .text])
        // Both stages ran for both modalities, and stage 2 keeps the best validation epoch.
        #expect(trainer.history.filter { $0.stage == 1 }.count == 30 && trainer.history.filter { $0.stage == 2 }.count == 60)
        #expect(trainer.history.allSatisfy { $0.loss.isFinite })
        // The prior is the classifier of the modality with the better validation score.
        let scores = Dictionary(grouping: trainer.history.filter { $0.stage == 1 }, by: \.modality).mapValues { $0.map(\.score).max()! }
        #expect(model.priorModality == scores.max { $0.value < $1.value }!.key)
    }

    @Test func theSameSeedGivesTheSameModel() throws {
        let a = try Self.trainer(seed: 2).run([.image, .text]), b = try Self.trainer(seed: 2).run([.image, .text])
        #expect(a.prior.scalars == b.prior.scalars)
        for modality in Modality.allCases {
            #expect(zip(a.encoders[modality]!.parameters, b.encoders[modality]!.parameters).allSatisfy { $0.value.scalars == $1.value.scalars })
        }
        let c = try Self.trainer(seed: 3).run([.image, .text])
        #expect(c.prior.scalars != a.prior.scalars)
    }

    /// DRCL's promise: a modality can be added later without retraining the others. The text
    /// side trained after the image side was written leaves the image network, its embeddings
    /// and the prior exactly as they were.
    @Test func aModalityAddedLaterLeavesTheOtherUnchanged() throws {
        let imageOnly = try Self.trainer().run([.image])
        #expect(imageOnly.encoders.keys.map(\.self) == [.image] && imageOnly.priorModality == .image && imageOnly.metrics == nil)
        let path = NSTemporaryDirectory() + "amber-label-\(UUID().uuidString).safetensors"
        try imageOnly.write(to: path)
        let served = try LabelSupervisedModel.read(from: path)
        let (_, validation) = Self.data().split(validationShare: 0.25, seed: 0)
        let images = validation.items[.image]!.features
        let before = served.encoders[.image]!.embed(images)

        let both = try Self.trainer().run([.text], existing: served)
        #expect(both.prior.scalars == imageOnly.prior.scalars && both.priorModality == .image)
        #expect(both.encoders[.image]!.embed(images).scalars == before.scalars)
        #expect(zip(both.encoders[.image]!.parameters, imageOnly.encoders[.image]!.parameters).allSatisfy { $0.value.scalars == $1.value.scalars })
        let metrics = try #require(both.metrics)
        #expect(metrics.mean > 0.9, "validation \(metrics)")
    }
}
