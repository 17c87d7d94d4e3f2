import AmberModel
import AmberTensor
import Foundation

/// How a model is optimised: the part of a trainer's configuration every model shares.
public struct OptimizationConfiguration: Sendable, Codable, Equatable {
    public var batchSize = 128
    public var steps = 1500
    /// Peak learning rate (after linear warm-up), then ×0.1 every `decayEvery` steps.
    public var learningRate: Float = 5e-4
    public var warmupSteps = 100
    public var decayEvery = 1000
    /// AdamW decoupled weight decay.
    public var weightDecay: Float = 1e-4
    /// Triplet margin.
    public var margin: Float = 0.2
    /// Steps with all negatives before the hardest-negative triplet.
    public var allNegativesSteps = 200
    public var gradientClip: Float = 2
    public var evaluateEvery = 100
    public var seed: UInt64 = 1

    public init() {}

    /// The triplet loss for `step` (all negatives during the warm-up, then the hardest).
    public func triplet(atStep step: Int) -> TripletLoss {
        TripletLoss(margin: margin, negatives: step < allNegativesSteps ? .all : .hardest)
    }
}

/// One evaluation on dev during training.
public struct TrainingEvaluation: Sendable, Codable {
    public let step: Int
    /// Mean training loss since the previous evaluation.
    public let loss: Float
    public let pairsPerSecond: Double
    public let metrics: RetrievalMetrics
}

/// The loop every trainer runs: seeded caption batches, AdamW with warm-up and step decay,
/// global-norm clipping, and a dev evaluation with a progress line every `evaluateEvery` steps.
struct TrainingLoop {
    let configuration: OptimizationConfiguration
    let parameters: [Parameter]

    /// - Parameters:
    ///   - loss: the loss of a batch of caption indices at a step (builds the graph).
    ///   - afterStep: called after each optimiser step (momentum updates, queues).
    ///   - evaluate: dev metrics of the current model.
    func run(
        pairCount: Int,
        loss: (_ step: Int, _ batch: [Int]) -> Tensor,
        afterStep: (_ step: Int) -> Void = { _ in },
        evaluate: () -> RetrievalMetrics,
        progress: (String) -> Void
    ) -> [TrainingEvaluation] {
        let c = configuration
        let optimizer = AdamW(parameters: parameters, configuration: .init(weightDecay: c.weightDecay))
        let schedule = WarmupStepDecay(base: c.learningRate, warmupSteps: c.warmupSteps, decayEvery: c.decayEvery, factor: 0.1)
        var batcher = PairBatcher(count: pairCount, batchSize: c.batchSize, seed: c.seed &+ 1)
        var history: [TrainingEvaluation] = []
        var started = Date()
        var lossSum: Float = 0, lossCount = 0
        for step in 0..<c.steps {
            optimizer.zeroGradients()
            let value = loss(step, batcher.next())
            value.backward()
            clipGradientNorm(parameters, maximumNorm: c.gradientClip)
            optimizer.step(learningRate: schedule.learningRate(atStep: step))
            afterStep(step)
            lossSum += value.scalar
            lossCount += 1
            if (step + 1) % c.evaluateEvery == 0 || step + 1 == c.steps {
                let rate = Double(lossCount * c.batchSize) / Date().timeIntervalSince(started)
                let metrics = withoutGradients { evaluate() }
                history.append(TrainingEvaluation(step: step + 1, loss: lossSum / Float(lossCount), pairsPerSecond: rate, metrics: metrics))
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
