import AmberModel
import AmberTensor
import Foundation

/// Trains the VSE++ baseline on a train split and selects on dev.
public struct VSETrainer: Sendable {
    public struct Configuration: Sendable, Codable, Equatable {
        public var jointDimension = 1024
        public var batchSize = 128
        public var steps = 2000
        public var learningRate: Float = 2e-4
        public var warmupSteps = 100
        public var decayEvery = 1500
        public var weightDecay: Float = 1e-4
        public var margin: Float = 0.2
        /// Steps with all negatives before switching to the hardest.
        public var allNegativesSteps = 200
        public var gradientClip: Float = 2
        public var evaluateEvery = 200
        public var seed: UInt64 = 1

        public init() {}
    }

    /// One evaluation on dev.
    public struct Evaluation: Sendable, Codable {
        public let step: Int
        public let loss: Float
        public let metrics: RetrievalMetrics
    }

    public let configuration: Configuration

    public init(configuration: Configuration) {
        self.configuration = configuration
    }

    /// Trains; `progress` receives a line per evaluation and the running speed.
    public func train(train: RetrievalData, dev: RetrievalData, progress: (String) -> Void = { _ in }) -> [Evaluation] {
        let c = configuration
        var generator = RandomGenerator(seed: c.seed)
        let model = VSEBaseline(imageDimension: train.imageGlobal.shape[1], textDimension: train.textGlobal.shape[1],
                                jointDimension: c.jointDimension, generator: &generator)
        let optimizer = AdamW(parameters: model.parameters, configuration: .init(weightDecay: c.weightDecay))
        let schedule = WarmupStepDecay(base: c.learningRate, warmupSteps: c.warmupSteps, decayEvery: c.decayEvery, factor: 0.1)
        var batcher = PairBatcher(count: train.textCount, batchSize: c.batchSize, seed: c.seed &+ 1)
        var history: [Evaluation] = []
        let started = Date()
        var lossSum: Float = 0, lossCount = 0
        for step in 0..<c.steps {
            let batch = batcher.next()
            let imageIDs = batch.map { train.imageOfText[$0] }
            optimizer.zeroGradients()
            let images = model.embedImages(train.imageGlobal.indexSelect(imageIDs))
            let texts = model.embedTexts(train.textGlobal.indexSelect(batch))
            let scores = Tensor.matmul(images, texts, transposeB: true)
            let loss = TripletLoss(margin: c.margin, negatives: step < c.allNegativesSteps ? .all : .hardest)(scores: scores, imageIDs: imageIDs)
            loss.backward()
            clipGradientNorm(model.parameters, maximumNorm: c.gradientClip)
            optimizer.step(learningRate: schedule.learningRate(atStep: step))
            lossSum += loss.scalar
            lossCount += 1
            if (step + 1) % c.evaluateEvery == 0 || step + 1 == c.steps {
                let metrics = withoutGradients {
                    RetrievalMetrics.evaluate(images: model.embedImages(dev.imageGlobal), texts: model.embedTexts(dev.textGlobal), imageOfText: dev.imageOfText)
                }
                history.append(Evaluation(step: step + 1, loss: lossSum / Float(lossCount), metrics: metrics))
                let elapsed = Date().timeIntervalSince(started)
                let rate = Double((step + 1) * c.batchSize) / elapsed
                let eta = elapsed / Double(step + 1) * Double(c.steps - step - 1)
                progress(String(format: "step %5d/%d  loss %.4f  %.0f pairs/s  ETA %.0fs  dev %@",
                                step + 1, c.steps, lossSum / Float(lossCount), rate, eta, metrics.description))
                lossSum = 0
                lossCount = 0
            }
        }
        return history
    }
}
