@testable import AmberTensor
import Foundation
import AmberTestSupport
import Testing

@Suite("Vectorised exp and erf")
struct VectorMathTests {
    @Test func expIsAccurateOverItsRangeAndHandlesExtremes() {
        var worst = 0.0
        var x: Float = -87
        while x < 88 {
            let lanes = VectorMath.exp(Lanes(repeating: x) + Lanes(0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07))
            for lane in 0..<8 {
                let input = Double(x) + Double(lane) * 0.01
                let exact = Foundation.exp(Double(Float(input)))
                worst = max(worst, Swift.abs(Double(lanes[lane]) - exact) / exact)
            }
            x += 0.37
        }
        #expect(worst < 3e-7, "worst relative error \(worst)")
        let extremes = VectorMath.exp(Lanes(-1e9, -100, -88, 0, 89, 1000, .nan, -.infinity))
        #expect(extremes[0] == 0 && extremes[1] == 0 && extremes[2] == 0)
        #expect(extremes[3] == 1)
        #expect(extremes[4] == .infinity && extremes[5] == .infinity)
        #expect(extremes[6].isNaN)
        #expect(extremes[7] == 0)
    }

    @Test func erfIsWithinItsBound() {
        var worst = 0.0
        var x: Float = -6
        while x < 6 {
            let lanes = VectorMath.erf(Lanes(repeating: x))
            worst = max(worst, Swift.abs(Double(lanes[0]) - Foundation.erf(Double(x))))
            x += 0.013
        }
        #expect(worst < 4e-7, "worst absolute error \(worst)")   // 1.5e-7 (formula) + Float32 rounding
    }

    @Test func tensorOpsUseTheVectorPathAndTheTail() {
        // 19 elements: two full lanes of 8 and a scalar tail of 3.
        let x = Tensor(shape: [19]) { Float($0) * 0.4 - 4 }
        expectClose(x.exp(), x.scalars.map { Float(Foundation.exp(Double($0))) }, tolerance: 1e-6)
        expectClose(x.gelu(), x.scalars.map { Float(0.5 * Double($0) * (1 + Foundation.erf(Double($0) / 2.0.squareRoot()))) }, tolerance: 1e-6)
        expectClose(x.tanh(), x.scalars.map { Float(Foundation.tanh(Double($0))) }, tolerance: 1e-6)
        expectClose(x.sigmoid(), x.scalars.map { Float(1 / (1 + Foundation.exp(-Double($0)))) }, tolerance: 1e-6)
        expectClose(x.softmax(), {
            let e = x.scalars.map { Foundation.exp(Double($0)) }
            let total = e.reduce(0, +)
            return e.map { Float($0 / total) }
        }(), tolerance: 1e-6)
    }
}
