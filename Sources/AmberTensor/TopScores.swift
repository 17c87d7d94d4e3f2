/// The `k` best (score, index) pairs offered — higher score first, ties to the lower index — kept
/// in a binary min-heap whose root is the worst kept: O(log k) per offer, O(k) memory. The one
/// top-k of Amber's ranking code (stage 1, stage-2 candidates, the relation graph's neighbours,
/// the simulated user); ``Tensor/topK(_:axis:)`` is the differentiable tensor op.
public struct TopScores: Sendable {
    public let k: Int
    @usableFromInline var heap: [(score: Float, index: Int)] = []
    /// The kept entries, in heap order (not sorted).
    public var entries: [(score: Float, index: Int)] { heap }

    public init(_ k: Int) {
        self.k = max(k, 0)
        heap.reserveCapacity(self.k)
    }

    /// Whether `a` ranks below `b`.
    @inlinable @inline(__always)
    static func worse(_ a: (score: Float, index: Int), _ b: (score: Float, index: Int)) -> Bool {
        a.score < b.score || (a.score == b.score && a.index > b.index)
    }

    /// Keeps `(score, index)` if it is among the best `k` so far.
    @inlinable
    public mutating func offer(_ score: Float, _ index: Int) {
        let entry = (score: score, index: index)
        if heap.count < k {
            heap.append(entry)
            var child = heap.count - 1
            while child > 0 {
                let parent = (child - 1) / 2
                guard Self.worse(heap[child], heap[parent]) else { break }
                heap.swapAt(child, parent)
                child = parent
            }
        } else if k > 0, Self.worse(heap[0], entry) {
            heap[0] = entry
            var parent = 0
            while true {
                let left = 2 * parent + 1, right = left + 1
                var worst = parent
                if left < k && Self.worse(heap[left], heap[worst]) { worst = left }
                if right < k && Self.worse(heap[right], heap[worst]) { worst = right }
                if worst == parent { break }
                heap.swapAt(parent, worst)
                parent = worst
            }
        }
    }

    /// The kept entries, best first.
    public var sorted: [(score: Float, index: Int)] { heap.sorted { Self.worse($1, $0) } }

    /// The indices of the `k` best of `scores`, best first (ties to the lower index).
    public static func indices(of scores: UnsafeBufferPointer<Float>, k: Int) -> [Int] {
        var top = TopScores(k)
        for (index, score) in scores.enumerated() { top.offer(score, index) }
        return top.sorted.map(\.index)
    }

    /// The indices of the `k` best of `scores`, best first (ties to the lower index).
    public static func indices(of scores: [Float], k: Int) -> [Int] {
        scores.withUnsafeBufferPointer { indices(of: $0, k: k) }
    }
}
