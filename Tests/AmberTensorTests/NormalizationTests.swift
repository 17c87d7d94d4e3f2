@testable import AmberTensor
import Foundation
import AmberTestSupport
import Testing

@Suite("Normalisations")
struct NormalizationTests {
    @Test("L2 normalisation along every axis", arguments: [0, 1, 2])
    func l2(axis: Int) {
        let x = randomTensor([2, 3, 4], seed: 31)
        let y = x.l2Normalized(axis: axis)
        expectClose(y, referenceAlongAxis(x, axis: axis) { lane in
            let norm = lane.map { $0 * $0 }.reduce(0, +).squareRoot()
            return lane.map { $0 / norm }
        })
        expectGradients([x], epsilon: 1e-3) { $0[0].l2Normalized(axis: axis) }
    }

    @Test func l2OfZeroVectorIsFinite() {
        let y = Tensor.zeros([2, 3]).l2Normalized()
        #expect(y.isFinite)
        expectClose(y, [0, 0, 0, 0, 0, 0])
    }

    @Test func layerNormMatchesReference() {
        let x = randomTensor([3, 2, 6], seed: 32, lower: -3, upper: 3)
        let gain = randomTensor([6], seed: 33, lower: 0.5, upper: 1.5)
        let bias = randomTensor([6], seed: 34)
        let y = x.layerNormalized(gain: gain, bias: bias, epsilon: 1e-12)
        var expected: [Float] = []
        let values = x.scalars.map(Double.init)
        for row in 0..<6 {
            let lane = Array(values[(row * 6)..<(row * 6 + 6)])
            let mean = lane.reduce(0, +) / 6
            let variance = lane.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / 6
            for j in 0..<6 {
                expected.append(Float((lane[j] - mean) / (variance + 1e-12).squareRoot() * Double(gain[j]) + Double(bias[j])))
            }
        }
        expectClose(y, expected, shape: [3, 2, 6], tolerance: 1e-5)
        // Recorded for a backward pass (x̂ kept) and not: the same values.
        let recorded = Parameter(x).tensor.layerNormalized(gain: gain, bias: bias, epsilon: 1e-12)
        expectClose(recorded, expected, shape: [3, 2, 6], tolerance: 1e-5)
        expectGradients([x, gain, bias], epsilon: 1e-3) {
            $0[0].layerNormalized(gain: $0[1], bias: $0[2], epsilon: 1e-12)
        }
    }
}
