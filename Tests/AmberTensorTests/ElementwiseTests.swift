@testable import AmberTensor
import Foundation
import AmberTestSupport
import Testing

@Suite("Elementwise ops")
struct ElementwiseTests {
    static let broadcastCases: [([Int], [Int])] = [
        ([2, 3], [2, 3]),
        ([2, 3], [3]),
        ([2, 3], [2, 1]),
        ([2, 1, 4], [3, 1]),
        ([1, 3], [2, 1]),
        ([2, 3], [1]),
        ([], [2, 2]),
        ([4], []),
    ]

    typealias Binary = @Sendable (Tensor, Tensor) -> Tensor

    static let binaryOps: [(String, Binary, @Sendable (Double, Double) -> Double)] = [
        ("add", { $0 + $1 }, { $0 + $1 }),
        ("subtract", { $0 - $1 }, { $0 - $1 }),
        ("multiply", { $0 * $1 }, { $0 * $1 }),
        ("divide", { $0 / $1 }, { $0 / $1 }),
    ]

    @Test("binary ops broadcast like NumPy", arguments: 0..<4)
    func binaryForward(opIndex: Int) {
        let (name, op, reference) = Self.binaryOps[opIndex]
        for (seed, (sa, sb)) in Self.broadcastCases.enumerated() {
            let a = randomTensor(sa, seed: UInt64(seed), lower: 0.5, upper: 2)
            let b = randomTensor(sb, seed: UInt64(seed) + 100, lower: 0.5, upper: 2)
            let result = op(a, b)
            let plan = BroadcastPlan(sa, sb)
            #expect(result.shape == plan.shape, "\(name) \(sa) \(sb)")
            let expected = (0..<result.count).map { flat -> Float in
                let index = multiIndex(flat, plan.shape)
                return Float(reference(Double(broadcastElement(a.scalars, sa, at: index)),
                                       Double(broadcastElement(b.scalars, sb, at: index))))
            }
            expectClose(result, expected, tolerance: 1e-6)
        }
    }

    @Test("binary op gradients sum over broadcast axes", arguments: 0..<4)
    func binaryGradients(opIndex: Int) {
        let (_, op, _) = Self.binaryOps[opIndex]
        for (seed, (sa, sb)) in Self.broadcastCases.enumerated() {
            let a = randomTensor(sa, seed: UInt64(seed), lower: 0.5, upper: 2)
            let b = randomTensor(sb, seed: UInt64(seed) + 100, lower: 0.5, upper: 2)
            expectGradients([a, b], epsilon: 1e-3) { op($0[0], $0[1]) }
        }
    }

    @Test func scalarOperators() {
        let a = Tensor(shape: [3], scalars: [1, 2, 4])
        expectClose(a + 1, [2, 3, 5])
        expectClose(1 - a, [0, -1, -3])
        expectClose(a * 3, [3, 6, 12])
        expectClose(a / 2, [0.5, 1, 2])
        expectClose(2 / a, [2, 1, 0.5])
        expectClose(-a, [-1, -2, -4])
        expectGradients([a]) { 2 / $0[0] + ($0[0] * 3 - 1) }
    }

    static let unaryOps: [(String, @Sendable (Tensor) -> Tensor, @Sendable (Double) -> Double, Float, Float)] = [
        ("exp", { $0.exp() }, { Foundation.exp($0) }, -2, 2),
        ("log", { $0.log() }, { Foundation.log($0) }, 0.2, 3),
        ("sqrt", { $0.sqrt() }, { $0.squareRoot() }, 0.2, 3),
        ("squared", { $0.squared() }, { $0 * $0 }, -2, 2),
        ("tanh", { $0.tanh() }, { Foundation.tanh($0) }, -3, 3),
        ("sigmoid", { $0.sigmoid() }, { 1 / (1 + Foundation.exp(-$0)) }, -6, 6),
        ("relu", { $0.relu() }, { max($0, 0) }, -2, 2),
        ("leakyRelu", { $0.leakyRelu(slope: 0.1) }, { $0 > 0 ? $0 : 0.1 * $0 }, -2, 2),
        ("gelu", { $0.gelu() }, { 0.5 * $0 * (1 + Foundation.erf($0 / 2.0.squareRoot())) }, -3, 3),
        ("abs", { $0.abs() }, { Swift.abs($0) }, -2, 2),
        ("clamped", { $0.clamped(lower: -0.5, upper: 0.7) }, { min(max($0, -0.5), 0.7) }, -2, 2),
    ]

    @Test("unary ops match Double references", arguments: 0..<11)
    func unaryForward(opIndex: Int) {
        let (name, op, reference, lower, upper) = Self.unaryOps[opIndex]
        let x = randomTensor([5, 7], seed: 3, lower: lower, upper: upper)
        let expected = x.scalars.map { Float(reference(Double($0))) }
        let y = op(x)
        #expect(y.shape == [5, 7], "\(name)")
        expectClose(y, expected, tolerance: 2e-6)
    }

    @Test("unary op gradients", arguments: 0..<11)
    func unaryGradients(opIndex: Int) {
        let (_, op, _, lower, upper) = Self.unaryOps[opIndex]
        // Values spread over the range but at least 0.05 from 0, -0.5 and 0.7 (kinks).
        var x = separatedTensor([4, 5], seed: 5, gap: (upper - lower) / 24)
        x = x + (lower + upper) / 2
        x = Tensor(shape: x.shape, scalars: x.scalars.map { v in
            for kink: Float in [0, -0.5, 0.7] where abs(v - kink) < 0.05 { return v + 0.1 }
            return v
        })
        expectGradients([x], epsilon: 1e-3) { op($0[0]) }
    }

    @Test func sigmoidIsStableForLargeInputs() {
        let y = Tensor(shape: [4], scalars: [-100, -30, 30, 100]).sigmoid()
        #expect(y.isFinite)
        expectClose(y, [0, 9.357623e-14, 1, 1], tolerance: 1e-6)
    }

    @Test func maskedFillReplacesAndBlocksGradient() {
        let x = Tensor(shape: [2, 2], scalars: [1, 2, 3, 4])
        let mask = [false, true, true, false]
        expectClose(x.maskedFill(mask, with: -9), [1, -9, -9, 4])
        let p = Parameter(x)
        p.tensor.maskedFill(mask, with: -9).sum().backward()
        expectClose(p.gradient!, [1, 0, 0, 1])
        expectGradients([x]) { $0[0].maskedFill(mask, with: 0.5).squared() }
    }

    @Test func dropoutIsSeededScaledAndMasksGradient() {
        let x = Tensor.ones([1000])
        var g1 = RandomGenerator(seed: 7), g2 = RandomGenerator(seed: 7)
        let y1 = x.dropout(rate: 0.25, using: &g1)
        let y2 = x.dropout(rate: 0.25, using: &g2)
        #expect(y1.scalars == y2.scalars)
        let kept = y1.scalars.filter { $0 != 0 }
        #expect(kept.allSatisfy { abs($0 - 4.0 / 3.0) < 1e-6 })
        #expect(abs(Float(kept.count) / 1000 - 0.75) < 0.05)
        var g3 = RandomGenerator(seed: 7)
        let p = Parameter(x)
        p.tensor.dropout(rate: 0.25, using: &g3).sum().backward()
        #expect(p.gradient!.scalars == y1.scalars)
        var g4 = RandomGenerator(seed: 7)
        #expect(x.dropout(rate: 0, using: &g4).scalars == x.scalars)
    }

    @Test func broadcastToAndSumToShapeAreAdjoint() {
        let x = randomTensor([3, 1], seed: 1)
        let y = x.broadcast(to: [2, 3, 4])
        #expect(y.shape == [2, 3, 4])
        #expect(y[1, 2, 3] == x[2, 0])
        let summed = y.sumToShape([3, 1])
        expectClose(summed, x.scalars.map { $0 * 8 }, shape: [3, 1])
        expectGradients([x]) { $0[0].broadcast(to: [2, 3, 4]) }
    }

    @Test func incompatibleShapesAreRejectedWithBothShapes() async {
        await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            _ = Tensor.zeros([2, 3]) + Tensor.zeros([4])
        }.map { result in
            let message = String(decoding: result.standardErrorContent, as: UTF8.self)
            #expect(message.contains("cannot broadcast shapes [2, 3] and [4]"))
        }
    }
}
