@testable import AmberModel
import AmberTensor
import AmberTestSupport
import Foundation
import Testing

@Suite("Memory bank queue and contrastive loss")
struct MemoryContrastiveLossTests {
    @Test func queueIsFirstInFirstOut() {
        var queue = MemoryQueue(capacity: 3, dimension: 2)
        queue.enqueue(Tensor(shape: [2, 2], scalars: [1, 1, 2, 2]), itemIDs: [10, 11], imageIDs: [0, 1], step: 1)
        #expect(queue.count == 2 && queue.head == 2)
        let slots = queue.enqueue(Tensor(shape: [2, 2], scalars: [3, 3, 4, 4]), itemIDs: [12, 13], imageIDs: [2, 3], prototypes: [5, 6], step: 2)
        #expect(slots == [2, 0])
        #expect(queue.count == 3)
        #expect(queue.keys.scalars == [4, 4, 2, 2, 3, 3])
        #expect(queue.itemIDs == [13, 11, 12] && queue.enqueuedSteps == [2, 1, 2] && queue.prototypes == [6, -1, 5])
    }

    /// The formula in Double loops.
    func reference(q: [[Double]], k: [[Double]], m: [[Double]], excluded: [Bool], soft: [Bool], tau: Double, w: Double) -> Double {
        let B = q.count, Q = m.count
        var total = 0.0
        for b in 0..<B {
            let pos = Foundation.exp(zip(q[b], k[b]).map { $0 * $1 }.reduce(0, +) / tau)
            var denominator = pos
            for j in 0..<Q where !excluded[b * Q + j] {
                denominator += (soft[b * Q + j] ? w : 1) * Foundation.exp(zip(q[b], m[j]).map { $0 * $1 }.reduce(0, +) / tau)
            }
            total += -Foundation.log(pos / denominator)
        }
        return total / Double(B)
    }

    @Test func matchesTheFormulaAndItsGradient() {
        let queries = randomTensor([3, 4], seed: 1).l2Normalized()
        let keys = randomTensor([3, 4], seed: 2).l2Normalized()
        let queue = randomTensor([5, 4], seed: 3).l2Normalized()
        let excluded = (0..<15).map { $0 % 7 == 0 }
        let soft = (0..<15).map { $0 % 4 == 1 }
        let loss = MemoryContrastiveLoss(temperature: 0.2, softPositiveWeight: 0.5)
        let value = loss(queries: queries, positiveKeys: keys, queue: queue, excluded: excluded, softPositive: soft).scalar
        func rows(_ t: Tensor) -> [[Double]] { (0..<t.shape[0]).map { r in (0..<t.shape[1]).map { Double(t[r, $0]) } } }
        let expected = reference(q: rows(queries), k: rows(keys), m: rows(queue), excluded: excluded, soft: soft, tau: 0.2, w: 0.5)
        #expect(abs(Double(value) - expected) < 1e-4)
        expectGradients([queries], epsilon: 1e-3) { loss(queries: $0[0], positiveKeys: keys, queue: queue, excluded: excluded, softPositive: soft) }
    }

    @Test func masksExcludeSameItemOrImageAndMarkSharedPrototypes() {
        var queue = MemoryQueue(capacity: 4, dimension: 1)
        queue.enqueue(Tensor.zeros([3, 1]), itemIDs: [1, 2, 3], imageIDs: [7, 8, 9], prototypes: [0, 1, 0], step: 0)
        let (excluded, soft) = MemoryContrastiveLoss.masks(queryItems: [2, 5], queryImages: [9, 4], queryPrototypes: [0, 1], queue: queue)
        #expect(excluded == [false, true, true, false, false, false])
        #expect(soft == [true, false, true, false, true, false])
    }

    /// The formula with per-entry weights: 0 excluded, `wh` hard negative, `ws` soft positive, else 1.
    func weightedReference(q: [[Double]], k: [[Double]], m: [[Double]], weight: (Int, Int) -> Double, tau: Double) -> Double {
        var total = 0.0
        for b in 0..<q.count {
            let pos = Foundation.exp(zip(q[b], k[b]).map { $0 * $1 }.reduce(0, +) / tau)
            var denominator = pos
            for j in 0..<m.count {
                denominator += weight(b, j) * Foundation.exp(zip(q[b], m[j]).map { $0 * $1 }.reduce(0, +) / tau)
            }
            total += -Foundation.log(pos / denominator)
        }
        return total / Double(q.count)
    }

    @Test func hardNegativesAreUpWeightedAndTheGradientChecks() {
        let queries = randomTensor([3, 4], seed: 11).l2Normalized()
        let keys = randomTensor([3, 4], seed: 12).l2Normalized()
        let queue = randomTensor([5, 4], seed: 13).l2Normalized()
        let excluded = (0..<15).map { $0 % 7 == 0 }
        let soft = (0..<15).map { $0 % 4 == 1 }
        let hard = (0..<15).map { $0 % 3 == 1 }          // 1 and 13 are also soft: hard wins
        let loss = MemoryContrastiveLoss(temperature: 0.2, softPositiveWeight: 0.5, hardNegativeWeight: 3)
        let value = loss(queries: queries, positiveKeys: keys, queue: queue, excluded: excluded, softPositive: soft, hardNegative: hard).scalar
        func rows(_ t: Tensor) -> [[Double]] { (0..<t.shape[0]).map { r in (0..<t.shape[1]).map { Double(t[r, $0]) } } }
        let expected = weightedReference(q: rows(queries), k: rows(keys), m: rows(queue), weight: { b, j in
            let i = b * 5 + j
            return excluded[i] ? 0 : hard[i] ? 3 : soft[i] ? 0.5 : 1
        }, tau: 0.2)
        #expect(abs(Double(value) - expected) < 1e-4)
        // Up-weighting negatives raises the loss; no flags at all is the plain loss.
        let plain = loss(queries: queries, positiveKeys: keys, queue: queue, excluded: excluded, softPositive: soft).scalar
        let noFlags = loss(queries: queries, positiveKeys: keys, queue: queue, excluded: excluded, softPositive: soft,
                           hardNegative: [Bool](repeating: false, count: 15)).scalar
        #expect(value > plain)
        #expect(noFlags == plain)
        expectGradients([queries], epsilon: 1e-3) {
            loss(queries: $0[0], positiveKeys: keys, queue: queue, excluded: excluded, softPositive: soft, hardNegative: hard)
        }
    }

    @Test func appendedHardNegativesBelongToTheirQueriesOnly() {
        let queue = Tensor(shape: [3, 2], scalars: [1, 0, 0, 1, 1, 1])
        let extra = Tensor(shape: [2, 2], scalars: [5, 5, 6, 6])
        // Query 0 rejected item 20 (also in the queue, slot 1) and query 1 rejected item 30; both rejected 30.
        let wide = MemoryContrastiveLoss.appendingHardNegatives(
            queue: queue, queueItems: [10, 20, 30], excluded: [true, false, false, false, false, false],
            softPositive: [false, true, false, false, false, true], extraKeys: extra, extraItems: [[20], [30]],
            owners: [[0], [0, 1]], batch: 2)
        #expect(wide.queue.shape == [5, 2])
        #expect(wide.queue.scalars == [1, 0, 0, 1, 1, 1, 5, 5, 6, 6])
        // Row 0: queue slots 1 (item 20) and 2 (item 30) give way to the fresh copies.
        #expect(wide.excluded == [true, true, true, false, false,
                                  false, false, true, true, false])
        #expect(wide.softPositive == [false, true, false, false, false,
                                      false, false, true, false, false])
        #expect(wide.hardNegative == [false, false, false, true, true,
                                      false, false, false, false, true])
    }
}
