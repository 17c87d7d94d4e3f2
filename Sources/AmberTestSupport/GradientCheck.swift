import AmberTensor
import Testing

// Helpers shared by the test targets: seeded tensors, the gradient checker, tolerance checks.

/// Seeded random tensor with elements in `[lower, upper)`.
public func randomTensor(_ shape: [Int], seed: UInt64, lower: Float = -1, upper: Float = 1) -> Tensor {
    var generator = RandomGenerator(seed: seed)
    return Tensor.randomUniform(shape, lower: lower, upper: upper, using: &generator)
}

/// Seeded random tensor whose elements differ pairwise by at least `gap` (no ties, away from
/// kinks of max/top-k/relu when `avoidZero`).
public func separatedTensor(_ shape: [Int], seed: UInt64, gap: Float = 0.05, avoidZero: Bool = true) -> Tensor {
    let count = shape.reduce(1, *)
    var generator = RandomGenerator(seed: seed)
    var values = (0..<count).map { Float($0) * gap - Float(count) * gap / 2 }
    if avoidZero { values = values.map { $0 >= 0 ? $0 + gap / 2 : $0 - gap / 2 } }
    generator.shuffle(&values)
    return Tensor(shape: shape, scalars: values)
}

/// Outcome of a gradient check: the worst analytic-vs-numeric disagreement.
public struct GradientCheckReport {
    public var worstError: Float = 0
    public var worstLocation = ""
    public var passed: Bool { worstError <= 1 }
}

/// Compares the gradients `backward()` gives with central finite differences.
///
/// The scalar checked is `L = Σ f(x) ⊙ R` with a fixed random `R`, so every output element
/// matters. For each input element, `n = (L(x + ε) − L(x − ε)) / 2ε` (in Double over Float32
/// evaluations); the error is `|a − n| / (absoluteTolerance + relativeTolerance · |n|)` and
/// must be ≤ 1.
public func gradientCheck(
    _ inputs: [Tensor],
    epsilon: Float = 1e-2,
    absoluteTolerance: Float = 2e-3,
    relativeTolerance: Float = 1e-2,
    seed: UInt64 = 99,
    _ function: ([Tensor]) -> Tensor
) -> GradientCheckReport {
    let parameters = inputs.enumerated().map { Parameter($1, name: "x\($0)") }
    let output = function(parameters.map(\.tensor))
    let weights = randomTensor(output.shape, seed: seed, lower: -1, upper: 1)
    (output * weights).sum().backward()

    func loss(_ values: [Tensor]) -> Double {
        withoutGradients {
            let y = function(values)
            var total = 0.0
            y.withUnsafeBufferPointer { py in
                weights.withUnsafeBufferPointer { pw in
                    for i in 0..<py.count { total += Double(py[i]) * Double(pw[i]) }
                }
            }
            return total
        }
    }

    var report = GradientCheckReport()
    for (index, parameter) in parameters.enumerated() {
        let analytic = parameter.gradient ?? Tensor.zeros(parameter.shape)
        for element in 0..<parameter.value.count {
            var plus = inputs, minus = inputs
            plus[index].withUnsafeMutableBufferPointer { $0[element] += epsilon }
            minus[index].withUnsafeMutableBufferPointer { $0[element] -= epsilon }
            let numeric = Float((loss(plus) - loss(minus)) / (2 * Double(epsilon)))
            let a = analytic.scalars[element]
            let error = abs(a - numeric) / (absoluteTolerance + relativeTolerance * abs(numeric))
            if !(error <= report.worstError) {
                report.worstError = error.isNaN ? .infinity : error
                report.worstLocation = "input \(index) element \(element): analytic \(a), numeric \(numeric)"
            }
        }
    }
    return report
}

/// Expects the gradient check of `function` at `inputs` to pass.
public func expectGradients(
    _ inputs: [Tensor], epsilon: Float = 1e-2, absoluteTolerance: Float = 2e-3, relativeTolerance: Float = 1e-2,
    sourceLocation: SourceLocation = #_sourceLocation, _ function: ([Tensor]) -> Tensor
) {
    let report = gradientCheck(inputs, epsilon: epsilon, absoluteTolerance: absoluteTolerance,
                               relativeTolerance: relativeTolerance, function)
    #expect(report.passed, "gradient mismatch (error \(report.worstError)) at \(report.worstLocation)",
            sourceLocation: sourceLocation)
}

/// Expects `tensor` to have `shape` and elements within `tolerance` of `expected`.
public func expectClose(
    _ tensor: Tensor, _ expected: [Float], shape: [Int]? = nil, tolerance: Float = 1e-5,
    sourceLocation: SourceLocation = #_sourceLocation
) {
    if let shape { #expect(tensor.shape == shape, sourceLocation: sourceLocation) }
    let actual = tensor.scalars
    #expect(actual.count == expected.count, "count \(actual.count) vs \(expected.count)", sourceLocation: sourceLocation)
    for (i, (a, e)) in zip(actual, expected).enumerated() where !(abs(a - e) <= tolerance * max(1, abs(e))) {
        Issue.record("element \(i): \(a) vs expected \(e)", sourceLocation: sourceLocation)
        return
    }
}

/// Naive row-major multi-index helpers for reference implementations.
public func strides(_ shape: [Int]) -> [Int] {
    var result = [Int](repeating: 1, count: shape.count)
    for axis in stride(from: shape.count - 2, through: 0, by: -1) { result[axis] = result[axis + 1] * shape[axis + 1] }
    return result
}

public func multiIndex(_ flat: Int, _ shape: [Int]) -> [Int] {
    var index = [Int](repeating: 0, count: shape.count)
    var rest = flat
    for axis in stride(from: shape.count - 1, through: 0, by: -1) {
        index[axis] = rest % shape[axis]
        rest /= shape[axis]
    }
    return index
}

/// Reference broadcast: element of `tensor` at an output multi-index, NumPy rules.
public func broadcastElement(_ tensor: [Float], _ shape: [Int], at outputIndex: [Int]) -> Float {
    let offset = outputIndex.count - shape.count
    var flat = 0
    let s = strides(shape)
    for axis in 0..<shape.count {
        let i = shape[axis] == 1 ? 0 : outputIndex[axis + offset]
        flat += i * s[axis]
    }
    return tensor[flat]
}
