import Foundation

/// What an ingest added (re-ingesting the same data adds nothing).
public struct IngestReport: Sendable, Equatable {
    public var imagesAdded = 0
    public var textsAdded = 0
    public var featuresAdded = 0
    public var pairsAdded = 0
    public var thumbnailsAdded = 0
    /// Rows sent (items + features + pairs), for rates.
    public var rowsSent = 0
    public var seconds = 0.0

    public var itemsAdded: Int { imagesAdded + textsAdded }

    public init() {}
}

/// Progress of a running ingest.
public struct IngestProgress: Sendable {
    public let phase: String
    public let done: Int
    public let total: Int

    public init(phase: String, done: Int, total: Int) {
        self.phase = phase
        self.done = done
        self.total = total
    }
}
