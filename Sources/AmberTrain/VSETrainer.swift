import AmberCatalog
import AmberModel
import AmberTensor

/// Trains the VSE++ baseline on a train split and selects on dev.
public struct VSETrainer: Sendable {
    public struct Configuration: Sendable, Codable, Equatable {
        public var jointDimension = 1024
        public var optimization = OptimizationConfiguration()

        public init() {
            optimization.steps = 2000
            optimization.learningRate = 2e-4
            optimization.decayEvery = 1500
            optimization.evaluateEvery = 200
        }
    }

    public let configuration: Configuration

    public init(configuration: Configuration) {
        self.configuration = configuration
    }

    /// Trains; `progress` receives a line per evaluation.
    public func train(train: RetrievalData, dev: RetrievalData, progress: (String) -> Void = { _ in }) -> [TrainingEvaluation] {
        let c = configuration
        var generator = RandomGenerator(seed: c.optimization.seed)
        let model = VSEBaseline(imageDimension: train.imageGlobal.shape[1], textDimension: train.textGlobal.shape[1],
                                jointDimension: c.jointDimension, generator: &generator)
        return TrainingLoop(configuration: c.optimization, parameters: model.parameters, pairCount: train.textCount).run(
            loss: { step, batch in
                let imageIDs = batch.map { train.imageOfText[$0] }
                let images = model.embedImages(train.imageGlobal.indexSelect(imageIDs))
                let texts = model.embedTexts(train.textGlobal.indexSelect(batch))
                var terms = LossTerms()
                terms.add("triplet", c.optimization.triplet(atStep: step)(scores: Tensor.matmul(images, texts, transposeB: true), imageIDs: imageIDs))
                return terms
            },
            evaluate: {
                RetrievalMetrics.evaluate(images: model.embedImages(dev.imageGlobal), texts: model.embedTexts(dev.textGlobal), imageOfText: dev.imageOfText)
            },
            afterEvaluation: { _ in },
            progress: progress)
    }
}
