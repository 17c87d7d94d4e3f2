import AmberTensor

#if canImport(Glibc)
import Glibc
#endif

// Shape legend: `B` queries, `Q` queue entries, `D` embedding dimension.

/// A first-in-first-out queue of momentum-encoder keys of one modality (MoCo, He et al. 2020),
/// with what the ambiguity-aware loss needs to know about each entry.
public struct MemoryQueue: Sendable {
    public let capacity: Int
    public let dimension: Int
    /// `[capacity, D]`; rows past `count` are unused.
    public private(set) var keys: Tensor
    public private(set) var itemIDs: [Int]
    public private(set) var imageIDs: [Int]
    public private(set) var prototypes: [Int]
    public private(set) var enqueuedSteps: [Int]
    /// Entries filled so far (≤ capacity).
    public private(set) var count = 0
    /// Slot the next key goes to.
    public private(set) var head = 0

    public init(capacity: Int, dimension: Int) {
        precondition(capacity >= 1 && dimension >= 1, "MemoryQueue: capacity \(capacity), dimension \(dimension)")
        self.capacity = capacity
        self.dimension = dimension
        keys = Tensor.zeros([capacity, dimension])
        itemIDs = Array(repeating: -1, count: capacity)
        imageIDs = Array(repeating: -1, count: capacity)
        prototypes = Array(repeating: -1, count: capacity)
        enqueuedSteps = Array(repeating: -1, count: capacity)
    }

    /// A queue as saved: `keys` `[capacity, D]`, per-slot ids, and the fill state.
    public init(keys: Tensor, itemIDs: [Int], imageIDs: [Int], prototypes: [Int], enqueuedSteps: [Int], count: Int, head: Int) throws {
        guard keys.rank == 2, keys.shape[0] >= 1, keys.shape[1] >= 1 else { throw MemoryQueueError("keys have shape \(keys.shape), not [capacity, D]") }
        let capacity = keys.shape[0]
        guard [itemIDs.count, imageIDs.count, prototypes.count, enqueuedSteps.count].allSatisfy({ $0 == capacity }) else {
            throw MemoryQueueError("per-slot ids have \([itemIDs.count, imageIDs.count, prototypes.count, enqueuedSteps.count]) entries for \(capacity) slots")
        }
        guard count >= 0, count <= capacity, head >= 0, head < capacity, count == capacity || head == count else {
            throw MemoryQueueError("count \(count) and head \(head) do not fit a queue of \(capacity)")
        }
        self.capacity = capacity
        dimension = keys.shape[1]
        self.keys = keys
        self.itemIDs = itemIDs
        self.imageIDs = imageIDs
        self.prototypes = prototypes
        self.enqueuedSteps = enqueuedSteps
        self.count = count
        self.head = head
    }

    /// Writes `newKeys` `[B, D]` over the oldest entries. Returns the slots written.
    @discardableResult
    public mutating func enqueue(_ newKeys: Tensor, itemIDs newItems: [Int], imageIDs newImages: [Int],
                                 prototypes newPrototypes: [Int]? = nil, step: Int) -> [Int] {
        let B = newKeys.shape[0]
        precondition(newKeys.shape == [B, dimension] && newItems.count == B && newImages.count == B,
                     "MemoryQueue.enqueue: keys \(newKeys.shape), \(newItems.count) items, \(newImages.count) images")
        var slots: [Int] = []
        let values = newKeys.scalars
        keys.withUnsafeMutableBufferPointer { out in
            for b in 0..<B {
                let slot = head
                for d in 0..<dimension { out[slot * dimension + d] = values[b * dimension + d] }
                itemIDs[slot] = newItems[b]
                imageIDs[slot] = newImages[b]
                prototypes[slot] = newPrototypes?[b] ?? -1
                enqueuedSteps[slot] = step
                slots.append(slot)
                head = (head + 1) % capacity
                count = min(count + 1, capacity)
            }
        }
        return slots
    }

    /// The filled entries' keys, `[count, D]`.
    public var filledKeys: Tensor { keys.slice(axis: 0, 0..<count) }
}

/// A saved queue that cannot be restored.
public struct MemoryQueueError: Error, CustomStringConvertible {
    public let description: String
    init(_ problem: String) { description = "memory queue: " + problem }
}

/// Memory-augmented, ambiguity-aware InfoNCE (L_mem of the matching objective; after MoCo and AAHR):
/// ```
/// L = − 1/B Σ_b log  exp(q_b·k_b / τ) / ( exp(q_b·k_b / τ) + Σ_j w_bj exp(q_b·m_j / τ) )
/// ```
/// `q_b` the query (an online local vector, unit length), `k_b` its paired key from the
/// momentum encoder (no gradient), `m_j` the queue of the other modality. Entries of the same
/// item or image as the query are removed (`w = 0`); entries sharing the query's prototype are
/// soft positives, down-weighted (`w = softPositiveWeight`); entries a user rejected for this
/// query (search feedback: a near-miss named as wrong) are hard negatives, up-weighted
/// (`w = hardNegativeWeight`, never soft); all others `w = 1`.
public struct MemoryContrastiveLoss: Sendable {
    /// `τ`. Default 0.07.
    public var temperature: Float = 0.07
    /// Weight of soft positives in the denominator. Default 0.5.
    public var softPositiveWeight: Float = 0.5
    /// Weight of hard negatives in the denominator. Default 1 (no emphasis).
    public var hardNegativeWeight: Float = 1

    public init(temperature: Float = 0.07, softPositiveWeight: Float = 0.5, hardNegativeWeight: Float = 1) {
        self.temperature = temperature
        self.softPositiveWeight = softPositiveWeight
        self.hardNegativeWeight = hardNegativeWeight
    }

    /// - Parameters:
    ///   - queries: `[B, D]`.
    ///   - positiveKeys: `[B, D]` (treated as constants).
    ///   - queue: `[Q, D]` (constants).
    ///   - excluded: `B × Q` flags, row-major: queue entries that are not negatives of query `b`.
    ///   - softPositive: `B × Q` flags: entries sharing the query's prototype.
    ///   - hardNegative: `B × Q` flags (or empty: none): entries rejected for the query; a flag
    ///     here wins over `softPositive`.
    public func callAsFunction(queries: Tensor, positiveKeys: Tensor, queue: Tensor, excluded: [Bool], softPositive: [Bool],
                               hardNegative: [Bool] = []) -> Tensor {
        let B = queries.shape[0], Q = queue.shape[0]
        precondition(positiveKeys.shape == queries.shape && queue.shape[1] == queries.shape[1]
                     && excluded.count == B * Q && softPositive.count == B * Q && (hardNegative.isEmpty || hardNegative.count == B * Q),
                     "MemoryContrastiveLoss: queries \(queries.shape), keys \(positiveKeys.shape), queue \(queue.shape), masks \(excluded.count)/\(softPositive.count)/\(hardNegative.count)")
        let positive = (queries * positiveKeys.detached).sum(axis: 1, keepingDimension: true)          // [B, 1]
        let negatives = Tensor.matmul(queries, queue.detached, transposeB: true)                         // [B, Q]
        // exp((s + τ log w) / τ) = w exp(s / τ): the weights enter as a bias on the logits.
        let softBias = logf(softPositiveWeight) * temperature, hardBias = logf(hardNegativeWeight) * temperature
        let bias = Tensor(shape: [B, Q], scalars: (0..<(B * Q)).map {
            excluded[$0] ? -1e9 : (!hardNegative.isEmpty && hardNegative[$0]) ? hardBias : (softPositive[$0] ? softBias : 0)
        })
        let logits = Tensor.concatenate([positive, negatives + bias], axis: 1) * (1 / temperature)     // [B, 1 + Q]
        return logits.logSoftmax(axis: 1).slice(axis: 1, 0..<1).mean() * -1
    }

    /// The queue's keys `[Q, D]` followed by `extraKeys` `[R, D]` (keys of items rejected for
    /// some queries, encoded this step), with the masks widened to `B × (Q + R)`: extra column
    /// `r` is a hard negative of query `b` when `b` is among `owners[r]` and excluded for every
    /// other query; a queue entry whose id (`queueItems`) is one of `extraItems[r]` (the ids the
    /// queue knows column `r`'s item by) is excluded for `r`'s owners, so that each rejected
    /// item counts once.
    public static func appendingHardNegatives(queue: Tensor, queueItems: [Int], excluded: [Bool], softPositive: [Bool],
                                              extraKeys: Tensor, extraItems: [Set<Int>], owners: [Set<Int>], batch B: Int)
        -> (queue: Tensor, excluded: [Bool], softPositive: [Bool], hardNegative: [Bool]) {
        let Q = queue.shape[0], R = extraKeys.shape[0]
        precondition(queueItems.count == Q && excluded.count == B * Q && softPositive.count == B * Q
                     && extraItems.count == R && owners.count == R && extraKeys.shape[1] == queue.shape[1],
                     "appendingHardNegatives: queue \(queue.shape), \(queueItems.count) queue items, masks \(excluded.count)/\(softPositive.count), extra \(extraKeys.shape), \(extraItems.count) items, \(owners.count) owners, batch \(B)")
        let W = Q + R
        var wideExcluded = [Bool](repeating: true, count: B * W)
        var wideSoft = [Bool](repeating: false, count: B * W), hard = [Bool](repeating: false, count: B * W)
        for b in 0..<B {
            var rejected = Set<Int>()
            for r in 0..<R where owners[r].contains(b) {
                rejected.formUnion(extraItems[r])
                hard[b * W + Q + r] = true
                wideExcluded[b * W + Q + r] = false
            }
            for j in 0..<Q {
                wideExcluded[b * W + j] = excluded[b * Q + j] || rejected.contains(queueItems[j])
                wideSoft[b * W + j] = softPositive[b * Q + j]
            }
        }
        return (Tensor.concatenate([queue, extraKeys], axis: 0), wideExcluded, wideSoft, hard)
    }

    /// Masks of a batch against a queue: excluded = same item or same image (or an unfilled
    /// slot), soft positive = same prototype (when both are known).
    public static func masks(queryItems: [Int], queryImages: [Int], queryPrototypes: [Int]?, queue: MemoryQueue) -> (excluded: [Bool], softPositive: [Bool]) {
        let B = queryItems.count, Q = queue.count
        var excluded = [Bool](repeating: false, count: B * Q), soft = [Bool](repeating: false, count: B * Q)
        for b in 0..<B {
            for j in 0..<Q {
                excluded[b * Q + j] = queue.itemIDs[j] == queryItems[b] || queue.imageIDs[j] == queryImages[b]
                if let prototypes = queryPrototypes, prototypes[b] >= 0, queue.prototypes[j] == prototypes[b] {
                    soft[b * Q + j] = true
                }
            }
        }
        return (excluded, soft)
    }
}
