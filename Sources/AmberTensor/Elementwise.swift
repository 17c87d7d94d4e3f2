#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// Elementwise ops. Binary ops broadcast as NumPy does: shapes are aligned at their last axis and
// an axis of extent 1 (or a missing leading axis) repeats. The gradient of a broadcast input is
// the output gradient summed over the axes it was repeated along.

protocol BinaryKernel {
    static func apply(_ a: Float, _ b: Float) -> Float
}

enum AddKernel: BinaryKernel { @inline(__always) static func apply(_ a: Float, _ b: Float) -> Float { a + b } }
enum SubtractKernel: BinaryKernel { @inline(__always) static func apply(_ a: Float, _ b: Float) -> Float { a - b } }
enum MultiplyKernel: BinaryKernel { @inline(__always) static func apply(_ a: Float, _ b: Float) -> Float { a * b } }
enum DivideKernel: BinaryKernel { @inline(__always) static func apply(_ a: Float, _ b: Float) -> Float { a / b } }

/// How two shapes broadcast: the result shape and each operand's element strides in it
/// (0 along repeated axes).
struct BroadcastPlan {
    let shape: [Int]
    let leftStrides: [Int]
    let rightStrides: [Int]

    init(_ left: [Int], _ right: [Int]) {
        let rank = max(left.count, right.count)
        var shape = [Int](repeating: 1, count: rank)
        for axis in 0..<rank {
            let l = axis - (rank - left.count) >= 0 ? left[axis - (rank - left.count)] : 1
            let r = axis - (rank - right.count) >= 0 ? right[axis - (rank - right.count)] : 1
            precondition(l == r || l == 1 || r == 1, "cannot broadcast shapes \(left) and \(right)")
            shape[axis] = l == 1 ? r : l
        }
        self.shape = shape
        self.leftStrides = BroadcastPlan.strides(of: left, in: shape)
        self.rightStrides = BroadcastPlan.strides(of: right, in: shape)
    }

    /// Strides of `operand` when it is broadcast to `target` (0 on repeated axes).
    static func strides(of operand: [Int], in target: [Int]) -> [Int] {
        let rank = target.count
        var strides = [Int](repeating: 0, count: rank)
        var running = 1
        for axis in stride(from: rank - 1, through: 0, by: -1) {
            let operandAxis = axis - (rank - operand.count)
            guard operandAxis >= 0 else { break }
            let extent = operand[operandAxis]
            strides[axis] = extent == 1 ? 0 : running
            running *= extent
        }
        return strides
    }

    /// Visits every run of the result's last axis: `body(outputStart, leftStart, rightStart)`.
    /// Inside a run, the operands advance by their last-axis strides.
    @inline(__always)
    func forEachRow(_ body: (Int, Int, Int) -> Void) {
        let rank = shape.count
        guard rank > 0 else { body(0, 0, 0); return }
        let inner = shape[rank - 1]
        let total = Tensor.elementCount(shape)
        guard total > 0 else { return }
        var index = [Int](repeating: 0, count: rank)
        var left = 0, right = 0, output = 0
        while output < total {
            body(output, left, right)
            output += inner
            // Advance the odometer over axes 0..<rank-1.
            var axis = rank - 2
            while axis >= 0 {
                index[axis] += 1
                left += leftStrides[axis]
                right += rightStrides[axis]
                if index[axis] < shape[axis] { break }
                left -= leftStrides[axis] * shape[axis]
                right -= rightStrides[axis] * shape[axis]
                index[axis] = 0
                axis -= 1
            }
        }
    }
}

extension Tensor {
    static func broadcastBinary<K: BinaryKernel>(_ a: Tensor, _ b: Tensor, _: K.Type) -> Tensor {
        let pa = a.pointer, pb = b.pointer
        if a.shape == b.shape {
            let result = Tensor(uninitializedShape: a.shape)
            let out = result.pointer
            for i in 0..<a.count { out[i] = K.apply(pa[i], pb[i]) }
            return result
        }
        let plan = BroadcastPlan(a.shape, b.shape)
        let result = Tensor(uninitializedShape: plan.shape)
        let out = result.pointer
        if b.count == 1 {
            let s = pb[0]
            for i in 0..<result.count { out[i] = K.apply(pa[i], s) }
            return result
        }
        if a.count == 1 {
            let s = pa[0]
            for i in 0..<result.count { out[i] = K.apply(s, pb[i]) }
            return result
        }
        let inner = plan.shape.last ?? 1
        let ls = plan.leftStrides.last ?? 0, rs = plan.rightStrides.last ?? 0
        plan.forEachRow { o, l, r in
            let po = out + o, pl = pa + l, pr = pb + r
            switch (ls, rs) {
            case (1, 1): for j in 0..<inner { po[j] = K.apply(pl[j], pr[j]) }
            case (1, 0): let s = pr[0]; for j in 0..<inner { po[j] = K.apply(pl[j], s) }
            case (0, 1): let s = pl[0]; for j in 0..<inner { po[j] = K.apply(s, pr[j]) }
            default: for j in 0..<inner { po[j] = K.apply(pl[j * ls], pr[j * rs]) }
            }
        }
        return result
    }

    /// Sums this (broadcast) gradient back to `target` shape: the adjoint of broadcasting.
    public func sumToShape(_ target: [Int]) -> Tensor {
        if shape == target { return self }
        precondition(Tensor.elementCount(target) > 0 || count == 0, "sumToShape: empty target \(target)")
        let plan = BroadcastPlan(shape, target)
        precondition(plan.shape == shape, "sumToShape: \(target) does not broadcast to \(shape)")
        let result = Tensor(shape: target, repeating: 0)
        let out = result.pointer, input = pointer
        let inner = shape.last ?? 1
        let ts = plan.rightStrides.last ?? 0
        plan.forEachRow { o, _, t in
            let pin = input + o, pt = out + t
            if ts == 0 {
                var acc: Float = 0
                for j in 0..<inner { acc += pin[j] }
                pt[0] += acc
            } else {
                for j in 0..<inner { pt[j] += pin[j] }
            }
        }
        return result
    }

    /// This tensor repeated along broadcast axes to `target`.
    public func broadcast(to target: [Int]) -> Tensor {
        if shape == target { return self }
        let plan = BroadcastPlan(shape, target)
        precondition(plan.shape == target, "broadcast(to:): \(shape) does not broadcast to \(target)")
        let zeros = Tensor(shape: target, repeating: 0)
        let result = Tensor.broadcastBinary(self.detached, zeros, AddKernel.self)
        let sourceShape = shape
        return Tensor.record(result, inputs: [self]) { g in [g.sumToShape(sourceShape)] }
    }

    /// Adds `other` (same shape) into this tensor in place; no graph is recorded.
    public mutating func addInPlace(_ other: Tensor) {
        precondition(shape == other.shape, "addInPlace: shapes \(shape) and \(other.shape)")
        makeUniqueStorage()
        let out = pointer, input = other.pointer
        for i in 0..<count { out[i] += input[i] }
    }

    /// Multiplies every element by `factor` in place; no graph is recorded.
    public mutating func scaleInPlace(by factor: Float) {
        makeUniqueStorage()
        let out = pointer
        for i in 0..<count { out[i] *= factor }
    }

    // MARK: Arithmetic

    public static func + (a: Tensor, b: Tensor) -> Tensor {
        let result = broadcastBinary(a, b, AddKernel.self)
        let sa = a.shape, sb = b.shape
        return record(result, inputs: [a, b]) { g in [g.sumToShape(sa), g.sumToShape(sb)] }
    }

    public static func - (a: Tensor, b: Tensor) -> Tensor {
        let result = broadcastBinary(a, b, SubtractKernel.self)
        let sa = a.shape, sb = b.shape
        return record(result, inputs: [a, b]) { g in [g.sumToShape(sa), (-g).sumToShape(sb)] }
    }

    public static func * (a: Tensor, b: Tensor) -> Tensor {
        let result = broadcastBinary(a, b, MultiplyKernel.self)
        let da = a.detached, db = b.detached
        let needA = a.node != nil, needB = b.node != nil
        return record(result, inputs: [a, b]) { g in
            [needA ? (g * db).sumToShape(da.shape) : nil,
             needB ? (g * da).sumToShape(db.shape) : nil]
        }
    }

    public static func / (a: Tensor, b: Tensor) -> Tensor {
        let result = broadcastBinary(a, b, DivideKernel.self)
        let da = a.detached, db = b.detached, dr = result
        let needA = a.node != nil, needB = b.node != nil
        return record(result, inputs: [a, b]) { g in
            [needA ? (g / db).sumToShape(da.shape) : nil,
             needB ? (-(g * dr) / db).sumToShape(db.shape) : nil]
        }
    }

    public static prefix func - (a: Tensor) -> Tensor {
        a.map({ -$0 }, derivative: { _, _ in -1 })
    }

    public static func + (a: Tensor, s: Float) -> Tensor { a.map({ $0 + s }, derivative: { _, _ in 1 }) }
    public static func + (s: Float, a: Tensor) -> Tensor { a + s }
    public static func - (a: Tensor, s: Float) -> Tensor { a + (-s) }
    public static func - (s: Float, a: Tensor) -> Tensor { a.map({ s - $0 }, derivative: { _, _ in -1 }) }
    public static func * (a: Tensor, s: Float) -> Tensor { a.map({ $0 * s }, derivative: { _, _ in s }) }
    public static func * (s: Float, a: Tensor) -> Tensor { a * s }
    public static func / (a: Tensor, s: Float) -> Tensor { a * (1 / s) }
    public static func / (s: Float, a: Tensor) -> Tensor {
        a.map({ s / $0 }, derivative: { x, _ in -s / (x * x) })
    }

    public static func += (a: inout Tensor, b: Tensor) { a = a + b }
    public static func -= (a: inout Tensor, b: Tensor) { a = a - b }
    public static func *= (a: inout Tensor, b: Tensor) { a = a * b }

    // MARK: Unary maps

    /// Applies `function` to every element; the gradient multiplies by
    /// `derivative(input, output)` element-wise.
    @inline(__always)
    func map(_ function: (Float) -> Float, derivative: @escaping (Float, Float) -> Float) -> Tensor {
        let result = Tensor(uninitializedShape: shape)
        let input = pointer, out = result.pointer
        for i in 0..<count { out[i] = function(input[i]) }
        let saved = detached
        return Tensor.record(result, inputs: [self]) { g in
            let grad = Tensor(uninitializedShape: g.shape)
            let pg = g.pointer, px = saved.pointer, py = result.pointer, pd = grad.pointer
            for i in 0..<g.count { pd[i] = pg[i] * derivative(px[i], py[i]) }
            return [grad]
        }
    }

    /// `eˣ` (vectorised; see `VectorMath`).
    public func exp() -> Tensor {
        let result = Tensor(uninitializedShape: shape)
        VectorMath.map(pointer, result.pointer, count: count, lanes: VectorMath.exp, scalar: { expf($0) })
        return Tensor.record(result, inputs: [self]) { g in [g * result] }
    }
    /// Natural logarithm.
    public func log() -> Tensor { map({ logf($0) }, derivative: { x, _ in 1 / x }) }
    /// Square root.
    public func sqrt() -> Tensor { map({ $0.squareRoot() }, derivative: { _, y in 0.5 / y }) }
    /// `x²`.
    public func squared() -> Tensor { map({ $0 * $0 }, derivative: { x, _ in 2 * x }) }
    /// Hyperbolic tangent.
    public func tanh() -> Tensor {
        let result = Tensor(uninitializedShape: shape)
        VectorMath.map(pointer, result.pointer, count: count, lanes: VectorMath.tanh, scalar: { tanhf($0) })
        return Tensor.record(result, inputs: [self]) { g in [g * (1 - result * result)] }
    }
    /// Logistic sigmoid `1 / (1 + e⁻ˣ)` (vectorised).
    public func sigmoid() -> Tensor {
        let result = Tensor(uninitializedShape: shape)
        VectorMath.map(pointer, result.pointer, count: count, lanes: VectorMath.sigmoid,
                       scalar: { x in x >= 0 ? 1 / (1 + expf(-x)) : expf(x) / (1 + expf(x)) })
        return Tensor.record(result, inputs: [self]) { g in [g * result * (1 - result)] }
    }
    /// `max(x, 0)`; the gradient at 0 is 0.
    public func relu() -> Tensor { map({ Swift.max($0, 0) }, derivative: { x, _ in x > 0 ? 1 : 0 }) }
    /// `x` for `x > 0`, else `slope · x`.
    public func leakyRelu(slope: Float = 0.01) -> Tensor {
        map({ $0 > 0 ? $0 : slope * $0 }, derivative: { x, _ in x > 0 ? 1 : slope })
    }
    /// GELU, erf form: `x · Φ(x) = ½ x (1 + erf(x / √2))` (as BERT uses; vectorised erf).
    public func gelu() -> Tensor {
        let result = Tensor(uninitializedShape: shape)
        VectorMath.map(pointer, result.pointer, count: count,
                       lanes: { x in 0.5 * x * (1 + VectorMath.erf(x * 0.70710678118654752)) },
                       scalar: { x in 0.5 * x * (1 + erff(x * 0.70710678118654752)) })
        let saved = detached
        return Tensor.record(result, inputs: [self]) { g in
            [g * saved.map({ x in
                let cdf = 0.5 * (1 + erff(x * 0.70710678118654752))
                let pdf = expf(-0.5 * x * x) * 0.39894228040143268
                return cdf + x * pdf
            }, derivative: { _, _ in 0 })]
        }
    }

    /// `|x|`; the gradient at 0 is 0.
    public func abs() -> Tensor {
        map({ Swift.abs($0) }, derivative: { x, _ in x > 0 ? 1 : (x < 0 ? -1 : 0) })
    }
    /// `min(max(x, lower), upper)`; no gradient outside the range.
    public func clamped(lower: Float = -.infinity, upper: Float = .infinity) -> Tensor {
        map({ Swift.min(Swift.max($0, lower), upper) },
            derivative: { x, _ in x >= lower && x <= upper ? 1 : 0 })
    }

    /// Elements where `mask` is true replaced by `value`; no gradient flows to them.
    /// - Parameter mask: one flag per element, row-major, `count` long.
    public func maskedFill(_ mask: [Bool], with value: Float) -> Tensor {
        precondition(mask.count == count, "maskedFill: mask has \(mask.count) flags for shape \(shape)")
        let result = Tensor(uninitializedShape: shape)
        let input = pointer, out = result.pointer
        for i in 0..<count { out[i] = mask[i] ? value : input[i] }
        return Tensor.record(result, inputs: [self]) { g in
            let grad = Tensor(uninitializedShape: g.shape)
            let pg = g.pointer, pd = grad.pointer
            for i in 0..<g.count { pd[i] = mask[i] ? 0 : pg[i] }
            return [grad]
        }
    }

    /// Randomly zeroes elements with probability `rate` and scales survivors by `1/(1−rate)`
    /// (inverted dropout). The identity when `rate == 0`.
    public func dropout(rate: Float, using generator: inout RandomGenerator) -> Tensor {
        precondition(rate >= 0 && rate < 1, "dropout: rate \(rate) must be in [0, 1)")
        guard rate > 0 else { return self }
        let scale = 1 / (1 - rate)
        let keep = Tensor(shape: shape) { _ in generator.nextUniform() >= rate ? scale : 0 }
        return self * keep
    }
}
