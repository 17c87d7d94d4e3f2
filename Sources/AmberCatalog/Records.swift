// The catalogue's records as every layer speaks of them — items and pairs to store, feedback,
// stored pictures, model versions, memory-bank slots — one type each, with strings only where
// they meet SQL and JSON. No dependencies: the model, the trainer, the server and the PostgreSQL
// adapter all import this module, none of them each other's types for these.

import Foundation

/// The split a pair belongs to. Dev and test pairs are held out: never trained on, never a
/// source of feedback pairs.
public enum Split: String, Sendable, Codable, CaseIterable {
    case train, dev, test
}

/// An item to store (from the HTTP API, an ingest, or a feedback's free-text query).
public struct NewItem: Sendable, Equatable {
    public var modality: Modality
    public var externalID: String
    public var caption: String?
    public var features: ItemFeatures
    /// An image's picture, stored with it.
    public var thumbnail: StoredImage?
    /// Categories (see ``CatalogText/labelProblem(_:field:)``): added to the item, new or stored.
    public var labels: [String]

    public init(modality: Modality, externalID: String, caption: String?, features: ItemFeatures, thumbnail: StoredImage? = nil,
                labels: [String] = []) {
        self.modality = modality
        self.externalID = externalID
        self.caption = caption
        self.features = features
        self.thumbnail = thumbnail
        self.labels = labels
    }
}

/// A pair to store, by the items' external ids.
public struct NewPair: Sendable, Equatable {
    public var image: String
    public var text: String
    public var split: Split

    public init(image: String, text: String, split: Split) {
        self.image = image
        self.text = text
        self.split = split
    }
}

/// A request to store items or pairs that the database cannot take, naming the entry.
public struct ItemWriteError: Error, CustomStringConvertible, Equatable {
    /// JSON path of the entry, e.g. `items[3].features.global`.
    public let field: String
    public let description: String

    public init(field: String, description: String) {
        self.field = field
        self.description = description
    }
}

/// What a user of the search said about one result list (`POST /v1/feedback`).
public struct NewFeedback: Sendable, Equatable {
    public enum Query: Sendable, Equatable {
        /// A stored item was the query (search by `item_id`).
        case item(Int64)
        /// Free text was the query; `features` are its encoding (nil: no text encoder here),
        /// needed only to store it as a text item when the feedback becomes a pair.
        case text(String, features: NewItem?)
    }

    public var query: Query
    /// The result the user chose.
    public var chosen: Int64
    /// Results the user rejected (shown above the chosen one, or marked wrong).
    public var rejected: [Int64]
    /// Where the chosen result stood in the list the user saw (1 = first).
    public var chosenRank: Int?
    /// The model version that ranked the list.
    public var modelVersion: Int64?
    /// Who sent it (an application's name), for the audit.
    public var client: String?

    public init(query: Query, chosen: Int64, rejected: [Int64] = [], chosenRank: Int? = nil, modelVersion: Int64? = nil, client: String? = nil) {
        self.query = query
        self.chosen = chosen
        self.rejected = rejected
        self.chosenRank = chosenRank
        self.modelVersion = modelVersion
        self.client = client
    }
}

/// What became of a feedback: its row, and the training pair it added or why it added none.
public struct FeedbackResult: Sendable, Equatable {
    public var feedbackID: Int64
    public var pairID: Int64?
    /// The pair was stored by this feedback (not before it).
    public var pairAdded: Bool
    public var notPairedBecause: String?

    public init(feedbackID: Int64, pairID: Int64?, pairAdded: Bool, notPairedBecause: String?) {
        self.feedbackID = feedbackID
        self.pairID = pairID
        self.pairAdded = pairAdded
        self.notPairedBecause = notPairedBecause
    }
}

/// The picture kept for an image item (`amber.item_images`): a small JPEG for showing results.
public struct StoredImage: Sendable, Equatable {
    public static let mediaType = "image/jpeg"
    public var width: Int
    public var height: Int
    public var bytes: [UInt8]

    public init(width: Int, height: Int, bytes: [UInt8]) {
        self.width = width
        self.height = height
        self.bytes = bytes
    }
}

/// One model version, as operators see it (`amber models list`, `GET /v1/models`).
public struct ModelVersion: Sendable, Equatable {
    public var version: Int64
    public var parentVersion: Int64?
    public var run: String?
    public var step: Int
    public var status: String
    /// Dev rsum of the ranking as served, and the gate's verdict, from the metrics JSON.
    public var rsum: Double?
    public var gate: String?
    public var createdAt: Date
    public var promotedAt: Date?

    public init(version: Int64, parentVersion: Int64?, run: String?, step: Int, status: String, rsum: Double?, gate: String?,
                createdAt: Date, promotedAt: Date?) {
        self.version = version
        self.parentVersion = parentVersion
        self.run = run
        self.step = step
        self.status = status
        self.rsum = rsum
        self.gate = gate
        self.createdAt = createdAt
        self.promotedAt = promotedAt
    }
}

/// An operator's request that cannot be carried out.
public struct RegistryError: Error, CustomStringConvertible {
    public let description: String

    public init(description: String) {
        self.description = description
    }
}

/// One memory-bank slot as a checkpoint writes it, in the store's ids.
public struct BankSlot: Sendable, Equatable {
    public var modality: Modality
    public var slot: Int
    public var itemID: Int64
    public var pairID: Int64?
    public var imageID: Int64
    public var embedding: [Float]
    public var prototype: Int?
    /// Cosine similarity to the nearest bank entry of another image, and that entry's item.
    public var ambiguity: Float?
    public var neighbourItemID: Int64?
    public var enqueuedStep: Int
    /// The model version the checkpoint that wrote the slot belongs to (set by the store).
    public var modelVersion: Int64?

    public init(modality: Modality, slot: Int, itemID: Int64, pairID: Int64? = nil, imageID: Int64, embedding: [Float],
                prototype: Int? = nil, ambiguity: Float? = nil, neighbourItemID: Int64? = nil, enqueuedStep: Int, modelVersion: Int64? = nil) {
        self.modality = modality
        self.slot = slot
        self.itemID = itemID
        self.pairID = pairID
        self.imageID = imageID
        self.embedding = embedding
        self.prototype = prototype
        self.ambiguity = ambiguity
        self.neighbourItemID = neighbourItemID
        self.enqueuedStep = enqueuedStep
        self.modelVersion = modelVersion
    }
}


/// An error of a store (the PostgreSQL adapter, or any other) that says whether waiting may cure
/// it: the HTTP layer answers 503 with `Retry-After` for a transient one, 500 otherwise.
public protocol StoreError: Error {
    var isTransient: Bool { get }
}
