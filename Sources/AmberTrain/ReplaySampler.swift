import AmberCatalog
import AmberTensor

/// Batches for a training set that grows: each batch takes the oldest pairs not yet trained on
/// ("unseen") up to a share of the batch, and fills the rest with a seeded, uniform replay of
/// pairs already trained on (distinct within a batch).
///
/// Pairs join in arrival order and unseen pairs leave oldest first, so the unseen pairs are
/// always the suffix `firstUnseen ..< count` of the arrival order: the state is that index and
/// the generator. Every pair that arrives is trained on once the unseen pairs before it are,
/// whatever the replay does.
public struct ReplaySampler: Sendable, Codable, Equatable {
    /// Share of a batch taken from unseen pairs while there are any (0 < share ≤ 1).
    public var newShare: Double
    public private(set) var generator: RandomGenerator
    /// Pairs `0 ..< firstUnseen` have been trained on.
    public private(set) var firstUnseen = 0
    /// Pairs known (trained on or not).
    public private(set) var count = 0

    public init(newShare: Double, seed: UInt64) {
        precondition(newShare > 0 && newShare <= 1, "ReplaySampler: newShare \(newShare) must be in (0, 1]")
        self.newShare = newShare
        generator = RandomGenerator(seed: seed)
    }

    /// Pairs not yet trained on.
    public var unseen: Range<Int> { firstUnseen ..< count }

    /// `added` more pairs arrived (they get the next indices).
    public mutating func grow(by added: Int) {
        precondition(added >= 0, "ReplaySampler: cannot shrink")
        count += added
    }

    /// The next batch of `size` distinct pair indices, or nil while fewer than `size` pairs exist.
    public mutating func next(size: Int) -> [Int]? {
        guard size >= 1, count >= size else { return nil }
        let seen = firstUnseen
        // New pairs: their share of the batch, more when the replay pool cannot fill the rest.
        let share = Int((newShare * Double(size)).rounded(.up))
        let fresh = min(unseen.count, max(share, size - seen))
        var batch = Array(firstUnseen ..< firstUnseen + fresh)
        firstUnseen += fresh
        // Replay: distinct pairs drawn uniformly from those trained on before this batch.
        var chosen = Set<Int>()
        while batch.count < size {
            let index = generator.nextInt(below: seen)
            if chosen.insert(index).inserted { batch.append(index) }
        }
        return batch
    }
}
