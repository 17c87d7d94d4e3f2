import AmberCatalog
import AmberModel
import Foundation

/// Where a continuous trainer reads pairs and keeps what it learns: the port of
/// ``ContinuousTrainer``. `PostgresTrainingStore` (target AmberTrainingStore) is the durable
/// implementation; ``InMemoryTrainingStore`` serves tests.
///
/// Every method is synchronous and may block; the trainer calls them from its own thread.
/// Errors a store marks transient (``isTransient(_:)``: the server went away, a connection
/// broke) make the trainer wait and retry the same call; any other error stops it.
public protocol TrainingStore: AnyObject {
    /// The run called `name`, created when missing (status running), and its newest committed
    /// checkpoint, if any.
    func openRun(name: String, seed: UInt64, configuration: String) throws -> StoredRun
    /// Up to `limit` pairs with `pairID > cursor`, oldest first, with the features of every item
    /// they reference. Pair ids are allocated in commit order, so a cursor never skips a pair
    /// that commits later.
    func pairs(after cursor: Int64, limit: Int) throws -> PairPage
    /// Results users rejected in search feedback (`POST /v1/feedback`), from the feedback rows
    /// that made a pair with `feedbackID > cursor`, oldest first, at most `limit` rows: when the
    /// pair is a train pair, the pair's other item (the query) and every rejected item of the
    /// chosen result's modality that is in no dev or test pair, in the user's order. The page's
    /// cursor passes every row read, whether it gave rejections or not; such rows become visible
    /// in id order (as pairs do), so the cursor never passes one that commits later.
    func rejections(after cursor: Int64, limit: Int) throws -> RejectionPage
    /// Blocks until new pairs may have arrived (a notification) or `timeout` seconds pass.
    /// Returns whether a notification came.
    func waitForPairs(timeout: Double) throws -> Bool
    /// Writes a checkpoint in one transaction: state, cursor, bank slots, step metrics, run
    /// progress, and, when the checkpoint carries one, a new model version with its prototypes
    /// (promoted in the same transaction when `promote` is set: the serving pointer changes and
    /// the query service is notified at commit). Nothing of it is visible unless all of it is.
    /// Returns the new version's number, if one was written.
    @discardableResult
    func commit(_ checkpoint: CheckpointRecord) throws -> Int64?
    /// The model the query service serves, if any.
    func servingModel() throws -> StoredModel?
    /// Marks the run stopped (graceful shutdown).
    func closeRun(_ runID: Int64, status: String) throws
    /// Whether `error` is worth waiting out (the store is unreachable, not wrong).
    func isTransient(_ error: any Error) -> Bool
}

/// A stored pair: an image and a text that match.
public struct StoredPair: Sendable, Equatable {
    public var pairID: Int64
    public var imageID: Int64
    public var textID: Int64
    public var split: Split

    public init(pairID: Int64, imageID: Int64, textID: Int64, split: Split) {
        self.pairID = pairID
        self.imageID = imageID
        self.textID = textID
        self.split = split
    }
}

/// New pairs, oldest first, and the features of the items they reference (by item id).
public struct PairPage: Sendable {
    public var pairs: [StoredPair]
    public var features: [Int64: ItemFeatures]

    public init(pairs: [StoredPair], features: [Int64: ItemFeatures]) {
        self.pairs = pairs
        self.features = features
    }
}

/// A result a user rejected for a query: a hard negative of that query.
public struct StoredRejection: Sendable, Equatable {
    /// The feedback that said so (rejections of one feedback come in the user's order).
    public var feedbackID: Int64
    public var queryItemID: Int64
    public var rejectedItemID: Int64

    public init(feedbackID: Int64, queryItemID: Int64, rejectedItemID: Int64) {
        self.feedbackID = feedbackID
        self.queryItemID = queryItemID
        self.rejectedItemID = rejectedItemID
    }
}

/// Rejections read from the feedback, and the cursor past the feedback rows read.
public struct RejectionPage: Sendable, Equatable {
    public var rejections: [StoredRejection]
    /// The largest feedback id read (the cursor given when none was read).
    public var cursor: Int64
    /// Feedback rows read (some give no rejection).
    public var rowsRead: Int

    public init(rejections: [StoredRejection], cursor: Int64, rowsRead: Int) {
        self.rejections = rejections
        self.cursor = cursor
        self.rowsRead = rowsRead
    }
}

/// A run as the store holds it.
public struct StoredRun: Sendable {
    public var runID: Int64
    public var checkpoint: StoredCheckpoint?

    public init(runID: Int64, checkpoint: StoredCheckpoint?) {
        self.runID = runID
        self.checkpoint = checkpoint
    }
}

/// The newest committed checkpoint of a run.
public struct StoredCheckpoint: Sendable {
    public var step: Int
    /// The trainer's state (``MatchingTrainer/stateBytes()``).
    public var state: [UInt8]
    /// The largest pair id taken in.
    public var cursor: Int64
    /// The sampler's state (JSON).
    public var sampler: String
    /// The newest model version of the run when the checkpoint was written.
    public var modelVersion: Int64?
    /// The largest feedback id read (users' rejections up to it were hard negatives).
    public var feedbackCursor: Int64

    public init(step: Int, state: [UInt8], cursor: Int64, sampler: String, modelVersion: Int64?, feedbackCursor: Int64 = 0) {
        self.step = step
        self.state = state
        self.cursor = cursor
        self.sampler = sampler
        self.modelVersion = modelVersion
        self.feedbackCursor = feedbackCursor
    }
}

/// The losses of one training step, for `training_steps`.
public struct StepRecord: Sendable, Equatable {
    public var step: Int
    public var loss: Float
    public var terms: [String: Float]
    public var learningRate: Float
    public var pairsPerSecond: Double?

    public init(step: Int, loss: Float, terms: [String: Float], learningRate: Float, pairsPerSecond: Double?) {
        self.step = step
        self.loss = loss
        self.terms = terms
        self.learningRate = learningRate
        self.pairsPerSecond = pairsPerSecond
    }
}

/// Everything one checkpoint writes, in one transaction.
public struct CheckpointRecord: Sendable {
    public var runID: Int64
    public var step: Int
    public var state: [UInt8]
    public var cursor: Int64
    public var sampler: String
    /// Pairs taken in and not yet trained on (for audit; the sampler state is what resumes).
    public var pendingPairs: [Int64]
    /// Bank slots written since the previous checkpoint.
    public var bank: [BankSlot]
    /// Steps taken since the previous checkpoint.
    public var steps: [StepRecord]
    /// The newest model version of the run before this checkpoint; a new version written with
    /// the checkpoint replaces it (for the checkpoint row and the bank slots).
    public var modelVersion: Int64?
    /// A model version to write with the checkpoint, and whether to promote it.
    public var newVersion: ModelVersionRecord?
    public var promote: Bool
    /// Checkpoints kept per run (older ones are deleted in the same transaction).
    public var keep: Int
    /// The largest feedback id read.
    public var feedbackCursor: Int64

    public init(runID: Int64, step: Int, state: [UInt8], cursor: Int64, sampler: String, pendingPairs: [Int64],
                bank: [BankSlot], steps: [StepRecord], modelVersion: Int64?, newVersion: ModelVersionRecord? = nil,
                promote: Bool = false, keep: Int, feedbackCursor: Int64 = 0) {
        self.feedbackCursor = feedbackCursor
        self.runID = runID
        self.step = step
        self.state = state
        self.cursor = cursor
        self.sampler = sampler
        self.pendingPairs = pendingPairs
        self.bank = bank
        self.steps = steps
        self.modelVersion = modelVersion
        self.newVersion = newVersion
        self.promote = promote
        self.keep = keep
    }
}

/// A candidate model version.
public struct ModelVersionRecord: Sendable {
    public var runID: Int64
    public var parentVersion: Int64?
    public var step: Int
    /// JSON of the training configuration.
    public var configuration: String
    /// The model file's bytes (``AmberModel/TrainedModel/encoded()``).
    public var model: [UInt8]
    /// JSON of the dev metrics and the gate's verdict.
    public var metrics: String
    /// `[K, D]` prototype centroids, row-major, and bank entries per prototype and modality.
    public var prototypes: [[Float]]
    public var prototypeImageCounts: [Int]
    public var prototypeTextCounts: [Int]

    public init(runID: Int64, parentVersion: Int64?, step: Int, configuration: String, model: [UInt8], metrics: String,
                prototypes: [[Float]], prototypeImageCounts: [Int], prototypeTextCounts: [Int]) {
        self.runID = runID
        self.parentVersion = parentVersion
        self.step = step
        self.configuration = configuration
        self.model = model
        self.metrics = metrics
        self.prototypes = prototypes
        self.prototypeImageCounts = prototypeImageCounts
        self.prototypeTextCounts = prototypeTextCounts
    }
}

/// A stored model version.
public struct StoredModel: Sendable {
    public var version: Int64
    public var model: [UInt8]

    public init(version: Int64, model: [UInt8]) {
        self.version = version
        self.model = model
    }
}
