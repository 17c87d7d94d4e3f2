import AmberCatalog
import AmberTensor
import Dispatch
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Updates parameters from their accumulated gradients.
public protocol Optimizer: AnyObject {
    /// The parameters this optimizer updates.
    var parameters: [Parameter] { get }
    /// Updates taken so far.
    var stepCount: Int { get }
    /// Applies one update with `learningRate`; parameters without a gradient are left alone.
    func step(learningRate: Float)
    /// The optimizer's state (moments, step count) as named tensors, for a checkpoint.
    func stateTensors() -> [String: Tensor]
    /// Restores the state written by ``stateTensors()``.
    func loadState(_ tensors: [String: Tensor]) throws
}

extension Optimizer {
    /// Forgets every parameter's gradient.
    public func zeroGradients() {
        for parameter in parameters { parameter.zeroGradient() }
    }
}

/// A checkpoint's optimizer state does not fit the model.
public struct OptimizerStateError: Error, CustomStringConvertible {
    public let description: String
}

/// AdamW: Adam with decoupled weight decay (Loshchilov & Hutter, ICLR 2019).
///
/// For each parameter `θ` with gradient `g`, at step `t` (from 1):
/// ```
/// θ ← θ − η λ θ                        (decoupled weight decay)
/// m ← β₁ m + (1 − β₁) g
/// v ← β₂ v + (1 − β₂) g²
/// θ ← θ − η · (m / (1 − β₁ᵗ)) / (√(v / (1 − β₂ᵗ)) + ε)
/// ```
/// as `torch.optim.AdamW`.
public final class AdamW: Optimizer {
    public struct Configuration: Sendable, Codable, Equatable {
        /// `β₁`, decay of the first moment. Default 0.9.
        public var beta1: Float = 0.9
        /// `β₂`, decay of the second moment. Default 0.999.
        public var beta2: Float = 0.999
        /// `ε` added to the root of the second moment. Default 1e-8.
        public var epsilon: Float = 1e-8
        /// `λ`, decoupled weight decay. Default 1e-4.
        public var weightDecay: Float = 1e-4

        public init(beta1: Float = 0.9, beta2: Float = 0.999, epsilon: Float = 1e-8, weightDecay: Float = 1e-4) {
            self.beta1 = beta1
            self.beta2 = beta2
            self.epsilon = epsilon
            self.weightDecay = weightDecay
        }
    }

    public let parameters: [Parameter]
    public let configuration: Configuration
    public private(set) var stepCount = 0
    private var firstMoments: [Tensor]
    private var secondMoments: [Tensor]

    public init(parameters: [Parameter], configuration: Configuration = Configuration()) {
        precondition(Set(parameters.map(\.name)).count == parameters.count,
                     "AdamW: parameter names must be unique (they name the optimizer state)")
        self.parameters = parameters
        self.configuration = configuration
        self.firstMoments = parameters.map { Tensor.zeros($0.shape) }
        self.secondMoments = parameters.map { Tensor.zeros($0.shape) }
    }

    public func step(learningRate: Float) {
        stepCount += 1
        let c = configuration
        let correction1 = 1 - powf(c.beta1, Float(stepCount))
        let correction2 = 1 - powf(c.beta2, Float(stepCount))
        // m̂ / (√v̂ + ε) = (m / c₁) / (√v / √c₂ + ε): fold the corrections into two constants.
        let constants = AdamWKernel(
            beta1: c.beta1, beta2: c.beta2, epsilon: c.epsilon,
            decay: 1 - learningRate * c.weightDecay,
            stepSize: learningRate / correction1,
            inverseRootCorrection2: 1 / correction2.squareRoot()
        )
        for (index, parameter) in parameters.enumerated() {
            guard let gradient = parameter.gradient else { continue }
            gradient.withUnsafeBufferPointer { g in
                firstMoments[index].withUnsafeMutableBufferPointer { m in
                    secondMoments[index].withUnsafeMutableBufferPointer { v in
                        parameter.updateValue { theta in
                            let count = theta.count
                            let (tp, gp, mp, vp) = (theta.baseAddress!, g.baseAddress!, m.baseAddress!, v.baseAddress!)
                            parallelChunks(count: count) { range in
                                constants.apply(theta: tp, gradient: gp, first: mp, second: vp, range: range)
                            }
                        }
                    }
                }
            }
        }
    }

    public func stateTensors() -> [String: Tensor] {
        var state: [String: Tensor] = ["step": Tensor(Float(stepCount))]
        for (index, parameter) in parameters.enumerated() {
            state["\(parameter.name).m"] = firstMoments[index]
            state["\(parameter.name).v"] = secondMoments[index]
        }
        return state
    }

    public func loadState(_ tensors: [String: Tensor]) throws {
        guard let step = tensors["step"] else { throw OptimizerStateError(description: "AdamW state has no 'step'") }
        var first = firstMoments, second = secondMoments
        for (index, parameter) in parameters.enumerated() {
            guard let m = tensors["\(parameter.name).m"], let v = tensors["\(parameter.name).v"] else {
                throw OptimizerStateError(description: "AdamW state has no moments for parameter '\(parameter.name)'")
            }
            guard m.shape == parameter.shape, v.shape == parameter.shape else {
                throw OptimizerStateError(description: "AdamW state for '\(parameter.name)' has shape \(m.shape), the parameter \(parameter.shape)")
            }
            first[index] = m
            second[index] = v
        }
        firstMoments = first
        secondMoments = second
        stepCount = Int(step.scalar)
    }
}

/// Stochastic gradient descent with momentum (as `torch.optim.SGD`):
/// ```
/// g ← g + λ θ            (L2 weight decay, coupled)
/// b ← μ b + g            (b = g at the first step)
/// θ ← θ − η b
/// ```
public final class SGD: Optimizer {
    public let parameters: [Parameter]
    /// `μ`. Default 0.9.
    public let momentum: Float
    /// `λ`. Default 0.
    public let weightDecay: Float
    public private(set) var stepCount = 0
    private var buffers: [Tensor?]

    public init(parameters: [Parameter], momentum: Float = 0.9, weightDecay: Float = 0) {
        precondition(Set(parameters.map(\.name)).count == parameters.count,
                     "SGD: parameter names must be unique (they name the optimizer state)")
        self.parameters = parameters
        self.momentum = momentum
        self.weightDecay = weightDecay
        self.buffers = Array(repeating: nil, count: parameters.count)
    }

    public func step(learningRate: Float) {
        stepCount += 1
        for (index, parameter) in parameters.enumerated() {
            guard let gradient = parameter.gradient else { continue }
            var buffer = buffers[index] ?? Tensor.zeros(parameter.shape)
            let first = buffers[index] == nil
            buffers[index] = nil
            gradient.withUnsafeBufferPointer { g in
                buffer.withUnsafeMutableBufferPointer { b in
                    parameter.updateValue { theta in
                        for i in 0..<theta.count {
                            let gi = g[i] + weightDecay * theta[i]
                            b[i] = first ? gi : momentum * b[i] + gi
                            theta[i] -= learningRate * (momentum == 0 ? gi : b[i])
                        }
                    }
                }
            }
            buffers[index] = buffer
        }
    }

    public func stateTensors() -> [String: Tensor] {
        var state: [String: Tensor] = ["step": Tensor(Float(stepCount))]
        for (index, parameter) in parameters.enumerated() {
            if let buffer = buffers[index] { state["\(parameter.name).momentum"] = buffer }
        }
        return state
    }

    public func loadState(_ tensors: [String: Tensor]) throws {
        guard let step = tensors["step"] else { throw OptimizerStateError(description: "SGD state has no 'step'") }
        var restored: [Tensor?] = []
        for parameter in parameters {
            let buffer = tensors["\(parameter.name).momentum"]
            if let buffer, buffer.shape != parameter.shape {
                throw OptimizerStateError(description: "SGD state for '\(parameter.name)' has shape \(buffer.shape), the parameter \(parameter.shape)")
            }
            restored.append(buffer)
        }
        buffers = restored
        stepCount = Int(step.scalar)
    }
}

/// Scales all gradients together so that their global L2 norm is at most `maximumNorm`
/// (as `torch.nn.utils.clip_grad_norm_`, scale `maximumNorm / (norm + 1e-6)`).
/// - Returns: the global norm before clipping.
@discardableResult
public func clipGradientNorm(_ parameters: [Parameter], maximumNorm: Float) -> Float {
    var total: Double = 0
    for parameter in parameters {
        guard let gradient = parameter.gradient else { continue }
        gradient.withUnsafeBufferPointer { g in
            var sum: Float = 0
            for value in g { sum += value * value }
            total += Double(sum)
        }
    }
    let norm = Float(total.squareRoot())
    if norm > maximumNorm {
        let scale = maximumNorm / (norm + 1e-6)
        for parameter in parameters { parameter.scaleGradient(by: scale) }
    }
    return norm
}

/// Exponential moving average of parameters, for momentum encoders (MoCo, He et al. 2020):
/// `θ_target ← m · θ_target + (1 − m) · θ_source`.
public struct ExponentialMovingAverage: Sendable {
    /// `m`. Default 0.999.
    public var momentum: Float

    public init(momentum: Float = 0.999) {
        precondition(momentum >= 0 && momentum <= 1, "ExponentialMovingAverage: momentum \(momentum) must be in [0, 1]")
        self.momentum = momentum
    }

    /// Moves every target towards its source (pairs matched by position; shapes must agree).
    public func update(targets: [Parameter], sources: [Parameter]) {
        precondition(targets.count == sources.count, "EMA: \(targets.count) targets for \(sources.count) sources")
        let m = momentum
        for (target, source) in zip(targets, sources) {
            precondition(target.shape == source.shape,
                         "EMA: target \(target.name) \(target.shape) and source \(source.name) \(source.shape) differ")
            source.value.withUnsafeBufferPointer { s in
                target.updateValue { t in
                    for i in 0..<t.count { t[i] = m * t[i] + (1 - m) * s[i] }
                }
            }
        }
    }
}

/// The AdamW update (Loshchilov & Hutter 2019) over a range of elements, 16 lanes at a time.
struct AdamWKernel: Sendable {
    let beta1: Float, beta2: Float, epsilon: Float
    /// `1 − η λ`.
    let decay: Float
    /// `η / (1 − β₁ᵗ)`.
    let stepSize: Float
    /// `1 / √(1 − β₂ᵗ)`.
    let inverseRootCorrection2: Float

    @inline(__always)
    func apply(
        theta: UnsafeMutablePointer<Float>, gradient: UnsafePointer<Float>,
        first: UnsafeMutablePointer<Float>, second: UnsafeMutablePointer<Float>, range: Range<Int>
    ) {
        typealias Lanes = SIMD16<Float>
        var i = range.lowerBound
        let b1 = Lanes(repeating: beta1), b2 = Lanes(repeating: beta2)
        let oneMinusB1 = Lanes(repeating: 1 - beta1), oneMinusB2 = Lanes(repeating: 1 - beta2)
        let eps = Lanes(repeating: epsilon), shrink = Lanes(repeating: decay)
        let size = Lanes(repeating: stepSize), root2 = Lanes(repeating: inverseRootCorrection2)
        while i + 16 <= range.upperBound {
            let g = UnsafeRawPointer(gradient + i).loadUnaligned(as: Lanes.self)
            var m = UnsafeRawPointer(first + i).loadUnaligned(as: Lanes.self)
            var v = UnsafeRawPointer(second + i).loadUnaligned(as: Lanes.self)
            var t = UnsafeRawPointer(theta + i).loadUnaligned(as: Lanes.self)
            m = b1 * m + oneMinusB1 * g
            v = b2 * v + oneMinusB2 * (g * g)
            t = t * shrink - size * m / (v.squareRoot() * root2 + eps)
            UnsafeMutableRawPointer(first + i).storeBytes(of: m, as: Lanes.self)
            UnsafeMutableRawPointer(second + i).storeBytes(of: v, as: Lanes.self)
            UnsafeMutableRawPointer(theta + i).storeBytes(of: t, as: Lanes.self)
            i += 16
        }
        while i < range.upperBound {
            let g = gradient[i]
            first[i] = beta1 * first[i] + (1 - beta1) * g
            second[i] = beta2 * second[i] + (1 - beta2) * g * g
            theta[i] = theta[i] * decay - stepSize * first[i] / (second[i].squareRoot() * inverseRootCorrection2 + epsilon)
            i += 1
        }
    }
}

/// Runs `body` over `0..<count` split into one chunk per core when the work is large enough to
/// pay for the hand-off (≥ 256 Ki elements), else in one call.
func parallelChunks(count: Int, _ body: (Range<Int>) -> Void) {
    _ = Parallel.map(count, minimum: 1 << 18, body)
}
