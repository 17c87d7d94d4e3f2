import AmberCatalog
import AmberTensor

/// Batches of caption indices (each caption comes with its image): every epoch is a fresh
/// seeded permutation, cut into batches of `batchSize` (the last, shorter batch is dropped).
/// The same seed gives the same batches; `state` resumes exactly where a checkpoint left off.
public struct PairBatcher: Sendable {
    public struct State: Sendable, Codable, Equatable {
        public var generator: RandomGenerator
        public var order: [Int]
        public var position: Int
        public var epoch: Int
    }

    public let count: Int
    public let batchSize: Int
    public private(set) var state: State

    public init(count: Int, batchSize: Int, seed: UInt64) {
        precondition(batchSize >= 2 && count >= batchSize, "PairBatcher: \(count) pairs cannot fill batches of \(batchSize)")
        self.count = count
        self.batchSize = batchSize
        var generator = RandomGenerator(seed: seed)
        let order = generator.permutation(count)
        state = State(generator: generator, order: order, position: 0, epoch: 0)
    }

    /// Restores a saved state.
    public init(count: Int, batchSize: Int, state: State) {
        precondition(state.order.count == count, "PairBatcher: state holds \(state.order.count) pairs, not \(count)")
        self.count = count
        self.batchSize = batchSize
        self.state = state
    }

    /// The next batch of indices.
    public mutating func next() -> [Int] {
        if state.position + batchSize > count {
            state.order = state.generator.permutation(count)
            state.position = 0
            state.epoch += 1
        }
        defer { state.position += batchSize }
        return Array(state.order[state.position ..< state.position + batchSize])
    }

    public var batchesPerEpoch: Int { count / batchSize }
}
