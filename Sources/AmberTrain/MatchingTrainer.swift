import AmberModel
import AmberTensor
import Foundation

/// Offline training of the ``MatchingModel`` on a train split with selection on dev.
/// Batches are captions with their images (seeded shuffles); AdamW with warm-up and step decay,
/// global-norm clipping; dev evaluation every `evaluateEvery` steps.
public struct MatchingTrainer: Sendable {
    public struct Configuration: Sendable, Codable, Equatable {
        public var encoder = ModalityEncoder.Configuration()
        public var batchSize = 128
        public var steps = 1500
        public var learningRate: Float = 5e-4
        public var warmupSteps = 100
        public var decayEvery = 1000
        public var weightDecay: Float = 1e-4
        public var margin: Float = 0.2
        public var allNegativesSteps = 200
        public var gradientClip: Float = 2
        public var evaluateEvery = 100
        public var seed: UInt64 = 1
        /// Start the global projections from the CCA solution on the training pairs.
        public var warmStartFromCCA = false

        public init() {}
    }

    public struct Evaluation: Sendable, Codable {
        public let step: Int
        public let loss: Float
        public let pairsPerSecond: Double
        public let metrics: RetrievalMetrics
    }

    public let configuration: Configuration

    public init(configuration: Configuration) {
        self.configuration = configuration
    }

    public func train(train: RetrievalData, dev: RetrievalData, progress: (String) -> Void = { _ in }) -> [Evaluation] {
        let c = configuration
        var generator = RandomGenerator(seed: c.seed)
        let model = MatchingModel(imageGlobal: train.imageGlobal.shape[1], imageFragment: train.imageLocal.shape[2],
                                  textGlobal: train.textGlobal.shape[1], textFragment: train.textTokens.shape[1],
                                  configuration: c.encoder, generator: &generator)
        if c.warmStartFromCCA {
            let cca = try! LinearCCA.fit(x: train.imageGlobal.indexSelect(train.imageOfText), y: train.textGlobal,
                                         configuration: .init(regularization: 2, components: c.encoder.jointDimension, power: 1))
            model.warmStart(from: cca)
        }
        let optimizer = AdamW(parameters: model.parameters, configuration: .init(weightDecay: c.weightDecay))
        let schedule = WarmupStepDecay(base: c.learningRate, warmupSteps: c.warmupSteps, decayEvery: c.decayEvery, factor: 0.1)
        var batcher = PairBatcher(count: train.textCount, batchSize: c.batchSize, seed: c.seed &+ 1)
        var dropout = RandomGenerator(seed: c.seed &+ 2)
        var history: [Evaluation] = []
        var started = Date()
        var lossSum: Float = 0, lossCount = 0
        for step in 0..<c.steps {
            let batch = batcher.next()
            let imageIDs = batch.map { train.imageOfText[$0] }
            optimizer.zeroGradients()
            let images = model.imageEncoder(train.imageInput(imageIDs), dropoutUsing: &dropout).fused
            let texts = model.textEncoder(train.textInput(batch), dropoutUsing: &dropout).fused
            let scores = Tensor.matmul(images, texts, transposeB: true)
            let loss = TripletLoss(margin: c.margin, negatives: step < c.allNegativesSteps ? .all : .hardest)(scores: scores, imageIDs: imageIDs)
            loss.backward()
            clipGradientNorm(model.parameters, maximumNorm: c.gradientClip)
            optimizer.step(learningRate: schedule.learningRate(atStep: step))
            lossSum += loss.scalar
            lossCount += 1
            if (step + 1) % c.evaluateEvery == 0 || step + 1 == c.steps {
                let elapsed = Date().timeIntervalSince(started)
                let rate = Double(lossCount * c.batchSize) / elapsed
                let (devImages, devTexts) = model.embed(dev)
                let metrics = RetrievalMetrics.evaluate(images: devImages, texts: devTexts, imageOfText: dev.imageOfText)
                history.append(Evaluation(step: step + 1, loss: lossSum / Float(lossCount), pairsPerSecond: rate, metrics: metrics))
                let eta = Double(c.steps - step - 1) * Double(c.batchSize) / rate
                progress(String(format: "step %5d/%d  loss %.4f  lr %.2e  %.0f pairs/s  ETA %.0fs  dev %@",
                                step + 1, c.steps, lossSum / Float(lossCount), schedule.learningRate(atStep: step), rate, eta, metrics.description))
                lossSum = 0
                lossCount = 0
                started = Date()
            }
        }
        return history
    }
}
