@testable import AmberModel
import AmberTensor
import AmberTestSupport
import Testing

@Suite("Triplet loss")
struct TripletLossTests {
    /// Naive reference from the formula, in Double.
    func reference(_ s: [[Double]], imageIDs: [Int], margin: Double, hardest: Bool) -> Double {
        let B = s.count
        var total = 0.0
        for k in 0..<B {
            let costs = (0..<B).filter { imageIDs[$0] != imageIDs[k] }.map { max(0, margin + s[k][$0] - s[k][k]) }
            total += hardest ? (costs.max() ?? 0) : costs.reduce(0, +)
        }
        for l in 0..<B {
            let costs = (0..<B).filter { imageIDs[$0] != imageIDs[l] }.map { max(0, margin + s[$0][l] - s[l][l]) }
            total += hardest ? (costs.max() ?? 0) : costs.reduce(0, +)
        }
        return total / Double(B)
    }

    @Test("matches the formula and its gradient", arguments: [NegativeSelection.hardest, .all])
    func matchesReference(negatives: NegativeSelection) {
        let B = 5
        let scores = separatedTensor([B, B], seed: 3, gap: 0.03)
        let ids = [0, 1, 1, 2, 3]           // pairs 1 and 2 share an image
        let loss = TripletLoss(margin: 0.2, negatives: negatives)
        let s = (0..<B).map { k in (0..<B).map { Double(scores[k, $0]) } }
        let expected = reference(s, imageIDs: ids, margin: 0.2, hardest: negatives == .hardest)
        #expect(abs(Double(loss(scores: scores, imageIDs: ids).scalar) - expected) < 1e-5)
        #expect(expected > 0)
        expectGradients([scores], epsilon: 1e-3) { loss(scores: $0[0], imageIDs: ids) }
    }

    @Test func wellSeparatedPairsCostNothing() {
        var scores = Tensor(shape: [3, 3], repeating: 0)
        for k in 0..<3 { scores[k, k] = 1 }
        #expect(TripletLoss()(scores: scores, imageIDs: [0, 1, 2]).scalar == 0)
    }
}
