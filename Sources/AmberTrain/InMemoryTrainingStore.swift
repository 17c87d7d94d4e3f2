import AmberCatalog
import AmberModel
import Foundation

/// A ``TrainingStore`` in memory: for tests and for trying the trainer without a database.
/// It keeps what the PostgreSQL store keeps (pairs, features, runs, checkpoints, bank slots,
/// steps, model versions, the serving pointer), with the same rules: a commit replaces the
/// bank slots it names and keeps the newest `keep` checkpoints.
public final class InMemoryTrainingStore: TrainingStore, @unchecked Sendable {
    public struct Run {
        public var name: String
        public var status: String
        public var lastStep: Int
        public var checkpoints: [CheckpointRecord]
        public var bank: [String: BankSlot]
        public var steps: [Int: StepRecord]
    }

    public struct Version {
        public var record: ModelVersionRecord
        public var status: String
    }

    private let lock = NSCondition()
    private var storedPairs: [StoredPair] = []
    private var storedFeatures: [Int64: ItemFeatures] = [:]
    private var storedRejections: [(feedbackID: Int64, query: Int64, rejected: [Int64])] = []
    private var nextItemID: Int64 = 1
    private var notified = false
    public private(set) var runs: [Int64: Run] = [:]
    public private(set) var versions: [Int64: Version] = [:]
    public private(set) var serving: Int64?
    /// When set, every call throws it (a database that went away), until cleared.
    public var outage: (any Error)?

    public init() {}

    /// Adds an item with its features; returns its id.
    @discardableResult
    public func addItem(_ features: ItemFeatures) -> Int64 {
        lock.lock()
        defer { lock.unlock() }
        let id = nextItemID
        nextItemID += 1
        storedFeatures[id] = features
        return id
    }

    /// Adds pairs (ids in order) and wakes a waiting trainer.
    public func addPairs(_ pairs: [(image: Int64, text: Int64, split: Split)]) {
        lock.lock()
        defer { lock.unlock() }
        for pair in pairs {
            storedPairs.append(StoredPair(pairID: Int64(storedPairs.count + 1), imageID: pair.image, textID: pair.text, split: pair.split))
        }
        notified = true
        lock.broadcast()
    }

    public var pairCount: Int {
        lock.lock()
        defer { lock.unlock() }
        return storedPairs.count
    }

    private func check() throws {
        if let outage { throw outage }
    }

    public func openRun(name: String, seed: UInt64, configuration: String) throws -> StoredRun {
        lock.lock()
        defer { lock.unlock() }
        try check()
        if let (id, run) = runs.first(where: { $0.value.name == name }) {
            runs[id]?.status = "running"
            let last = run.checkpoints.last
            return StoredRun(runID: id, checkpoint: last.map {
                StoredCheckpoint(step: $0.step, state: $0.state, cursor: $0.cursor, sampler: $0.sampler, modelVersion: $0.modelVersion,
                                 feedbackCursor: $0.feedbackCursor)
            })
        }
        let id = Int64(runs.count + 1)
        runs[id] = Run(name: name, status: "running", lastStep: 0, checkpoints: [], bank: [:], steps: [:])
        return StoredRun(runID: id, checkpoint: nil)
    }

    public func pairs(after cursor: Int64, limit: Int) throws -> PairPage {
        lock.lock()
        defer { lock.unlock() }
        try check()
        let page = Array(storedPairs.filter { $0.pairID > cursor }.prefix(limit))
        var features: [Int64: ItemFeatures] = [:]
        for pair in page {
            features[pair.imageID] = storedFeatures[pair.imageID]
            features[pair.textID] = storedFeatures[pair.textID]
        }
        return PairPage(pairs: page, features: features)
    }

    public func rejections(after cursor: Int64, limit: Int) throws -> RejectionPage {
        lock.lock()
        defer { lock.unlock() }
        try check()
        let page = storedRejections.filter { $0.feedbackID > cursor }.prefix(limit)
        return RejectionPage(rejections: page.flatMap { feedback in
                                 feedback.rejected.map { StoredRejection(feedbackID: feedback.feedbackID, queryItemID: feedback.query, rejectedItemID: $0) } },
                             cursor: page.last?.feedbackID ?? cursor, rowsRead: page.count)
    }

    /// Records search feedback on a train pair: `rejected` items were rejected for the query
    /// item `query` (as ``rejections(after:limit:)`` gives them back).
    public func addRejections(query: Int64, rejected: [Int64]) {
        lock.lock()
        defer { lock.unlock() }
        storedRejections.append((feedbackID: Int64(storedRejections.count + 1), query: query, rejected: rejected))
    }

    public func waitForPairs(timeout: Double) throws -> Bool {
        lock.lock()
        defer { lock.unlock() }
        try check()
        if !notified { _ = lock.wait(until: Date().addingTimeInterval(timeout)) }
        defer { notified = false }
        return notified
    }

    public func commit(_ checkpoint: CheckpointRecord) throws -> Int64? {
        lock.lock()
        defer { lock.unlock() }
        try check()
        guard var run = runs[checkpoint.runID] else { throw InMemoryStoreError(description: "no run \(checkpoint.runID)") }
        var record = checkpoint
        var written: Int64?
        if let version = checkpoint.newVersion {
            let id = Int64(versions.count + 1)
            versions[id] = Version(record: version, status: checkpoint.promote ? "promoted" : "candidate")
            if checkpoint.promote {
                if let serving { versions[serving]?.status = "retired" }
                serving = id
            }
            record.modelVersion = id
            written = id
        }
        run.checkpoints.append(record)
        run.checkpoints = Array(run.checkpoints.suffix(max(checkpoint.keep, 1)))
        for var slot in checkpoint.bank {
            slot.modelVersion = record.modelVersion
            run.bank["\(slot.modality)/\(slot.slot)"] = slot
        }
        for step in checkpoint.steps { run.steps[step.step] = step }
        run.lastStep = checkpoint.step
        runs[checkpoint.runID] = run
        return written
    }

    public func servingModel() throws -> StoredModel? {
        lock.lock()
        defer { lock.unlock() }
        try check()
        return serving.flatMap { version in versions[version].map { StoredModel(version: version, model: $0.record.model) } }
    }

    /// Serves `version` (what `amber models promote` does to the database).
    public func promote(version: Int64) throws {
        lock.lock()
        defer { lock.unlock() }
        try check()
        guard versions[version] != nil else { throw InMemoryStoreError(description: "model version \(version) does not exist") }
        if let serving { versions[serving]?.status = "retired" }
        versions[version]?.status = "promoted"
        serving = version
    }

    public func closeRun(_ runID: Int64, status: String) throws {
        lock.lock()
        defer { lock.unlock() }
        try check()
        runs[runID]?.status = status
    }

    public func isTransient(_ error: any Error) -> Bool { error is InMemoryOutage }
}

/// The error ``InMemoryTrainingStore/outage`` is usually set to: transient.
public struct InMemoryOutage: Error, CustomStringConvertible {
    public init() {}
    public var description: String { "the in-memory store is unavailable (simulated outage)" }
}

public struct InMemoryStoreError: Error, CustomStringConvertible {
    public let description: String
}
