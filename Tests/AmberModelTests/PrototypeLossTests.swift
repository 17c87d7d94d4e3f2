@testable import AmberModel
import AmberTensor
import AmberTestSupport
import Foundation
import Testing

@Suite("Sinkhorn prototypes")
struct PrototypeLossTests {
    @Test func sinkhornCodesAreBalancedAndFollowTheScores() {
        var generator = RandomGenerator(seed: 1)
        let scores = Tensor.randomUniform([12, 4], lower: -1, upper: 1, using: &generator)
        let codes = SinkhornKnopp.codes(scores, epsilon: 0.1, iterations: 50)
        for b in 0..<12 { #expect(abs(codes.slice(axis: 0, b..<b + 1).sum().scalar - 1) < 1e-4) }
        for k in 0..<4 { #expect(abs(codes.slice(axis: 1, k..<k + 1).sum().scalar - 3) < 1e-3) }   // B / K each
        // With few iterations rows still sum to 1 (the last normalisation is over rows).
        let rough = SinkhornKnopp.codes(scores, epsilon: 0.1, iterations: 3)
        for b in 0..<12 { #expect(abs(rough.slice(axis: 0, b..<b + 1).sum().scalar - 1) < 1e-4) }
        // An item whose score is far higher on one prototype is coded to it.
        var peaked = Tensor.zeros([4, 4])
        for b in 0..<4 { peaked[b, (b + 1) % 4] = 1 }
        #expect(SinkhornKnopp.codes(peaked).argmax(axis: 1) == [1, 2, 3, 0])
    }

    @Test func lossMatchesTheFormulaAndItsGradient() {
        var generator = RandomGenerator(seed: 2)
        let loss = PrototypeLoss(count: 3, dimension: 4, generator: &generator)
        let images = Tensor.randomNormal([5, 4], using: &generator).l2Normalized()
        let texts = Tensor.randomNormal([5, 4], using: &generator).l2Normalized()
        let (value, imageAssignments, _) = loss(images: images, texts: texts)
        // Reference in Double.
        let c = loss.prototypes.value.l2Normalized()
        func logSoftmaxRows(_ s: Tensor) -> [[Double]] {
            (0..<s.shape[0]).map { b in
                let row = (0..<s.shape[1]).map { Double(s[b, $0]) / 0.1 }
                let peak = row.max()!
                let lse = peak + Foundation.log(row.map { Foundation.exp($0 - peak) }.reduce(0, +))
                return row.map { $0 - lse }
            }
        }
        let si = Tensor.matmul(images, c, transposeB: true), st = Tensor.matmul(texts, c, transposeB: true)
        let qi = SinkhornKnopp.codes(si), qt = SinkhornKnopp.codes(st)
        let li = logSoftmaxRows(si), lt = logSoftmaxRows(st)
        var total = 0.0
        for b in 0..<5 { for k in 0..<3 { total += Double(qt[b, k]) * li[b][k] + Double(qi[b, k]) * lt[b][k] } }
        #expect(abs(Double(value.scalar) - (-0.5 * total / 5)) < 1e-4)
        #expect(imageAssignments == qi.argmax(axis: 1))
        // Gradients with respect to the embeddings (codes are constants).
        expectGradients([images, texts], epsilon: 1e-3, absoluteTolerance: 5e-3) { x in
            let scoresI = Tensor.matmul(x[0], c, transposeB: true), scoresT = Tensor.matmul(x[1], c, transposeB: true)
            let fixedI = qi, fixedT = qt
            return ((fixedT * (scoresI * 10).logSoftmax(axis: 1)).sum() + (fixedI * (scoresT * 10).logSoftmax(axis: 1)).sum()) * (-0.1)
        }
        // The prototypes receive a gradient.
        loss.prototypes.zeroGradient()
        loss(images: images, texts: texts).loss.backward()
        #expect(loss.prototypes.gradient != nil && loss.prototypes.gradient!.abs().sum().scalar > 0)
    }
}
