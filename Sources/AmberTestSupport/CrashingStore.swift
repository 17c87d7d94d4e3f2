import AmberTrain

/// A ``TrainingStore`` that forwards to another and fails for good once `afterCommits` commits
/// went through: a crash between two checkpoints, as the trainer sees it (the error is not
/// transient, so the trainer stops without a last checkpoint).
public final class CrashingStore<Inner: TrainingStore>: TrainingStore {
    public struct Crash: Error {}

    public let inner: Inner
    public private(set) var commitsLeft: Int

    public init(_ inner: Inner, afterCommits: Int) {
        self.inner = inner
        commitsLeft = afterCommits
    }

    public func openRun(name: String, seed: UInt64, configuration: String) throws -> StoredRun {
        try inner.openRun(name: name, seed: seed, configuration: configuration)
    }

    public func pairs(after cursor: Int64, limit: Int) throws -> PairPage { try inner.pairs(after: cursor, limit: limit) }
    public func rejections(after cursor: Int64, limit: Int) throws -> RejectionPage { try inner.rejections(after: cursor, limit: limit) }
    public func waitForPairs(timeout: Double) throws -> Bool { try inner.waitForPairs(timeout: timeout) }

    public func commit(_ checkpoint: CheckpointRecord) throws -> Int64? {
        guard commitsLeft > 0 else { throw Crash() }
        commitsLeft -= 1
        return try inner.commit(checkpoint)
    }

    public func servingModel() throws -> StoredModel? { try inner.servingModel() }
    public func closeRun(_ runID: Int64, status: String) throws { try inner.closeRun(runID, status: status) }
    public func isTransient(_ error: any Error) -> Bool { false }
}
