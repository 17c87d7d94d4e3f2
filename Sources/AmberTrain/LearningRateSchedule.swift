#if canImport(Glibc)
import AmberCatalog
import Glibc
#endif

/// The learning rate as a function of the number of updates already taken (`step`, from 0).
public protocol LearningRateSchedule: Sendable {
    func learningRate(atStep step: Int) -> Float
}

/// Linear warm-up from `base / warmupSteps` to `base` over the first `warmupSteps` updates, then
/// `base · factor^⌊(step − warmupSteps) / decayEvery⌋` (step decay, as VSE++/AAHR).
public struct WarmupStepDecay: LearningRateSchedule, Codable, Equatable {
    /// Peak rate. Default 5e-4 (AAHR's).
    public var base: Float
    /// Updates of linear warm-up (0: none).
    public var warmupSteps: Int
    /// Updates between decays after warm-up (0: never decay).
    public var decayEvery: Int
    /// Multiplier at each decay. Default 0.1.
    public var factor: Float

    public init(base: Float = 5e-4, warmupSteps: Int = 0, decayEvery: Int = 0, factor: Float = 0.1) {
        precondition(base > 0 && warmupSteps >= 0 && decayEvery >= 0 && factor > 0,
                     "WarmupStepDecay: base \(base), warm-up \(warmupSteps), decayEvery \(decayEvery), factor \(factor)")
        self.base = base
        self.warmupSteps = warmupSteps
        self.decayEvery = decayEvery
        self.factor = factor
    }

    public func learningRate(atStep step: Int) -> Float {
        if step < warmupSteps { return base * Float(step + 1) / Float(warmupSteps) }
        guard decayEvery > 0 else { return base }
        return base * powf(factor, Float((step - warmupSteps) / decayEvery))
    }
}

/// Linear warm-up, then a cosine from `base` down to `minimum` at `totalSteps`
/// (Loshchilov & Hutter, SGDR, without restarts); `minimum` after that.
public struct WarmupCosine: LearningRateSchedule, Codable, Equatable {
    public var base: Float
    public var warmupSteps: Int
    public var totalSteps: Int
    public var minimum: Float

    public init(base: Float, warmupSteps: Int = 0, totalSteps: Int, minimum: Float = 0) {
        precondition(base > 0 && warmupSteps >= 0 && totalSteps > warmupSteps && minimum >= 0,
                     "WarmupCosine: base \(base), warm-up \(warmupSteps), total \(totalSteps), minimum \(minimum)")
        self.base = base
        self.warmupSteps = warmupSteps
        self.totalSteps = totalSteps
        self.minimum = minimum
    }

    public func learningRate(atStep step: Int) -> Float {
        if step < warmupSteps { return base * Float(step + 1) / Float(warmupSteps) }
        if step >= totalSteps { return minimum }
        let progress = Float(step - warmupSteps) / Float(totalSteps - warmupSteps)
        return minimum + 0.5 * (base - minimum) * (1 + cosf(Float.pi * progress))
    }
}
