import AmberCatalog
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
    /// AdamW decoupled weight decay (SGD: L2 weight decay).
    public var weightDecay: Float = 1e-4
    /// `adamw`, or `sgd` (momentum 0.9), which moves each weight in proportion to its gradient
    /// instead of by about the learning rate: gentler on a warm start.
    public var optimizer: OptimizerKind = .adamw
    /// Triplet margin.
    public var margin: Float = 0.2
    /// Steps with all negatives before the hardest-negative triplet.
    public var allNegativesSteps = 200
    public var gradientClip: Float = 2
    public var evaluateEvery = 100
    public var seed: UInt64 = 1

    public init() {}

    /// What is wrong with these settings (named by their `amber train` option), or nil.
    public var problem: String? {
        if !(2...65_536).contains(batchSize) { return "the batch size (--batch-size) must be 2…65536, got \(batchSize)" }
        if steps < 0 { return "the step count (--steps) must not be negative, got \(steps)" }
        if !(learningRate.isFinite && learningRate > 0 && learningRate <= 10) {
            return "the learning rate (--learning-rate) must be a finite number in (0, 10], got \(learningRate)"
        }
        if warmupSteps < 0 || decayEvery < 1 { return "warm-up steps must be ≥ 0 and decay every ≥ 1 steps" }
        if !(weightDecay.isFinite && weightDecay >= 0 && weightDecay < 1) { return "the weight decay (--weight-decay) must be in [0, 1), got \(weightDecay)" }
        if !(margin.isFinite && margin >= 0) { return "the triplet margin must be finite and ≥ 0, got \(margin)" }
        if allNegativesSteps < 0 { return "--all-negatives-steps must not be negative, got \(allNegativesSteps)" }
        if !(gradientClip.isFinite && gradientClip > 0) { return "the gradient clip must be positive and finite, got \(gradientClip)" }
        if evaluateEvery < 1 { return "--evaluate-every must be at least 1, got \(evaluateEvery)" }
        return nil
    }

    /// The triplet loss for `step` (all negatives during the warm-up, then the hardest).
    public func triplet(atStep step: Int) -> TripletLoss {
        TripletLoss(margin: margin, negatives: step < allNegativesSteps ? .all : .hardest)
    }
}

/// The optimisers a trainer can use.
public enum OptimizerKind: String, Sendable, Codable, CaseIterable {
    case adamw, sgd
}

/// One evaluation on dev during training.
public struct TrainingEvaluation: Sendable, Codable, Equatable {
    public let step: Int
    /// Mean training loss since the previous evaluation (NaN for the evaluation at step 0).
    public let loss: Float
    /// Mean of each weighted loss term since the previous evaluation (they sum to `loss`).
    public let terms: [String: Float]
    public let pairsPerSecond: Double
    public let metrics: RetrievalMetrics
}

/// The loss of one step: named, weighted terms whose sum is minimised.
public struct LossTerms {
    public private(set) var terms: [(name: String, value: Tensor)] = []

    public init() {}

    public mutating func add(_ name: String, _ value: Tensor) {
        precondition(value.shape.isEmpty, "LossTerms: '\(name)' is \(value.shape), not a scalar")
        terms.append((name, value))
    }

    public var total: Tensor {
        precondition(!terms.isEmpty, "LossTerms: no loss term")
        return terms.dropFirst().reduce(terms[0].value) { $0 + $1.value }
    }
}

/// The loop every trainer runs: seeded caption batches, AdamW (or SGD) with warm-up and step decay,
/// global-norm clipping, and a dev evaluation with a progress line every `evaluateEvery` steps.
/// Its position (step, batcher, history) and the optimiser's state can be saved at an
/// evaluation and restored, so a resumed run continues exactly where the saved one stood.
final class TrainingLoop {
    /// Where a run stands, at an evaluation boundary.
    struct Position: Codable, Equatable {
        var step: Int
        /// Nil for a loop fed batches from outside (continuous training).
        var batcher: PairBatcher.State?
        var history: [TrainingEvaluation]
    }

    let configuration: OptimizationConfiguration
    let parameters: [Parameter]
    let optimizer: any Optimizer
    private let schedule: WarmupStepDecay
    private var batcher: PairBatcher?
    private(set) var step = 0
    var history: [TrainingEvaluation] = []
    /// Elastic pull towards given values (L2-SP, Li et al. 2018): after each step,
    /// `θ ← θ − η λ (θ − θ₀)` for each anchored parameter, `λ = anchorStrength`.
    var anchors: [(parameter: Parameter, value: Tensor)] = []
    var anchorStrength: Float = 0

    /// - Parameter pairCount: the caption count the loop's own batcher draws from; nil when
    ///   batches come from outside (``optimize(_:)``).
    init(configuration: OptimizationConfiguration, parameters: [Parameter], pairCount: Int?) {
        let c = configuration
        self.configuration = c
        self.parameters = parameters
        switch c.optimizer {
        case .adamw: optimizer = AdamW(parameters: parameters, configuration: .init(weightDecay: c.weightDecay))
        case .sgd: optimizer = SGD(parameters: parameters, momentum: 0.9, weightDecay: c.weightDecay)
        }
        schedule = WarmupStepDecay(base: c.learningRate, warmupSteps: c.warmupSteps, decayEvery: c.decayEvery, factor: 0.1)
        batcher = pairCount.map { PairBatcher(count: $0, batchSize: c.batchSize, seed: c.seed &+ 1) }
    }

    var position: Position { Position(step: step, batcher: batcher?.state, history: history) }

    func restore(_ position: Position, optimizerState: [String: Tensor]) throws {
        try optimizer.loadState(optimizerState)
        if let batcher {
            guard let state = position.batcher, state.order.count == batcher.count else {
                throw OptimizerStateError(description: "the saved batcher does not match \(batcher.count) training pairs")
            }
            self.batcher = PairBatcher(count: batcher.count, batchSize: batcher.batchSize, state: state)
        }
        step = position.step
        history = position.history
    }

    /// Steps whose loss or gradient was not finite: their update was skipped.
    private(set) var skippedSteps = 0

    /// One optimisation step on `terms`: backward, clipping, the learning rate of this step,
    /// the optimiser, the anchors; then the step count advances. Returns the learning rate used.
    /// A step whose loss or gradient norm is not finite changes no parameter and no optimiser
    /// moment (one bad batch must not turn the model into NaN); it is counted in ``skippedSteps``.
    @discardableResult
    func optimize(_ terms: LossTerms) -> Float {
        let total = terms.total
        total.backward()
        let norm = clipGradientNorm(parameters, maximumNorm: configuration.gradientClip)
        let learningRate = schedule.learningRate(atStep: step)
        guard total.scalar.isFinite, norm.isFinite else {
            skippedSteps += 1
            step += 1
            return learningRate
        }
        optimizer.step(learningRate: learningRate)
        if anchorStrength > 0 {
            let pull = min(learningRate * anchorStrength, 1)
            for anchor in anchors {
                anchor.parameter.updateValue { theta in
                    anchor.value.withUnsafeBufferPointer { start in
                        for i in 0..<theta.count { theta[i] -= pull * (theta[i] - start[i]) }
                    }
                }
            }
        }
        step += 1
        return learningRate
    }

    func learningRate(atStep step: Int) -> Float { schedule.learningRate(atStep: step) }

    /// Runs from the current step to `configuration.steps`.
    /// - Parameters:
    ///   - loss: the loss terms of a batch of caption indices at a step (builds the graph).
    ///   - afterStep: called after each optimiser step (momentum updates, queues).
    ///   - evaluate: dev metrics of the current model.
    ///   - afterEvaluation: called with each evaluation once it is in `history` (checkpoints).
    func run(
        loss: (_ step: Int, _ batch: [Int]) -> LossTerms,
        afterStep: (_ step: Int) -> Void = { _ in },
        evaluate: () -> RetrievalMetrics,
        afterEvaluation: (TrainingEvaluation) throws -> Void = { _ in },
        stepTimer: ((_ step: Int, _ seconds: Double) -> Void)? = nil,
        progress: (String) -> Void
    ) rethrows -> [TrainingEvaluation] {
        let c = configuration
        var started = Date()
        var sums: [String: Float] = [:], names: [String] = []
        var lossSum: Float = 0, lossCount = 0
        if step == 0 && history.isEmpty {
            // The starting point is a candidate too (with a warm start it can be the best).
            let metrics = withoutGradients { evaluate() }
            let evaluation = TrainingEvaluation(step: 0, loss: .nan, terms: [:], pairsPerSecond: 0, metrics: metrics)
            history.append(evaluation)
            progress(String(format: "step %5d/%d  (start)  dev %@", 0, c.steps, metrics.description))
            try afterEvaluation(evaluation)
            started = Date()
        }
        precondition(batcher != nil, "TrainingLoop.run needs a loop made with a pair count")
        while step < c.steps {
            let stepStart = stepTimer == nil ? nil : Date()
            optimizer.zeroGradients()
            let thisStep = step
            let terms = loss(thisStep, batcher!.next())
            optimize(terms)
            afterStep(thisStep)
            if let stepStart { stepTimer?(thisStep, Date().timeIntervalSince(stepStart)) }
            lossSum += terms.total.scalar
            lossCount += 1
            for term in terms.terms {
                if sums[term.name] == nil { names.append(term.name) }
                sums[term.name, default: 0] += term.value.scalar
            }
            if step % c.evaluateEvery == 0 || step == c.steps {
                let rate = Double(lossCount * c.batchSize) / Date().timeIntervalSince(started)
                let metrics = withoutGradients { evaluate() }
                let evaluation = TrainingEvaluation(step: step, loss: lossSum / Float(lossCount), terms: sums.mapValues { $0 / Float(lossCount) },
                                                    pairsPerSecond: rate, metrics: metrics)
                history.append(evaluation)
                let eta = Double(c.steps - step) * Double(c.batchSize) / rate
                let termText = names.count > 1 ? " (" + names.map { String(format: "%@ %.3f", $0, sums[$0]! / Float(lossCount)) }.joined(separator: ", ") + ")" : ""
                progress(String(format: "step %5d/%d  loss %.4f%@  lr %.2e  %.0f pairs/s  ETA %.0fs  dev %@",
                                step, c.steps, evaluation.loss, termText, schedule.learningRate(atStep: step - 1), rate, eta, metrics.description))
                try afterEvaluation(evaluation)
                sums = [:]
                names = []
                lossSum = 0
                lossCount = 0
                started = Date()
            }
        }
        return history
    }
}
