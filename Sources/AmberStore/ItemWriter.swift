import Foundation

/// An item to store (from the HTTP API): features as float32.
public struct NewItem: Sendable, Equatable {
    public var modality: String
    public var externalID: String
    public var caption: String?
    /// `[Dg]` and `[localCount, Dl]` row-major.
    public var global: [Float]
    public var local: [Float]
    public var localCount: Int
    /// An image's picture, stored with it.
    public var thumbnail: StoredImage?

    public init(modality: String, externalID: String, caption: String?, global: [Float], local: [Float], localCount: Int,
                thumbnail: StoredImage? = nil) {
        self.thumbnail = thumbnail
        self.modality = modality
        self.externalID = externalID
        self.caption = caption
        self.global = global
        self.local = local
        self.localCount = localCount
    }
}

/// A pair to store, by the items' external ids.
public struct NewPair: Sendable, Equatable {
    public var image: String
    public var text: String
    public var split: String

    public init(image: String, text: String, split: String) {
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
}

/// Writes items (with their features) and pairs in one transaction each call, idempotently:
/// an item whose external id is already stored for its modality, or a pair already stored, is
/// left as it is and counted as existing. New pairs notify `amber_new_pairs` (the trainer).
public enum ItemWriter {
    /// - Returns: items added and items that already existed.
    /// - Throws: ``ItemWriteError`` (nothing written) when an item's feature dimensions differ
    ///   from those its modality has in the database.
    public static func write(_ items: [NewItem], source: String = "http", on db: PostgresConnection) throws -> (added: Int, existing: Int) {
        try db.transaction {
            let (added, existing) = try insert(items, source: source, on: db)
            // Query servers grow their galleries on this (an item need not wait for its pairs).
            if added > 0 { try db.execute("SELECT pg_notify('amber_new_items', $1)", [.text(String(added))]) }
            return (added, existing)
        }
    }

    /// The body of ``write(_:source:on:)`` inside the caller's transaction (no notification).
    static func insert(_ items: [NewItem], source: String, on db: PostgresConnection) throws -> (added: Int, existing: Int) {
        do {
            var dimensions: [String: (global: Int, local: Int)] = [:]
            var added = 0
            for (index, item) in items.enumerated() {
                let localDimension = item.local.count / max(item.localCount, 1)
                let known: (global: Int, local: Int)
                if let registered = dimensions[item.modality] {
                    known = registered
                } else {
                    known = try FeatureDimensions.register(modality: item.modality, global: item.global.count, local: localDimension, on: db)
                    dimensions[item.modality] = known
                }
                guard known.global == item.global.count else {
                    throw ItemWriteError(field: "items[\(index)].features.global",
                                         description: "items[\(index)].features.global has \(item.global.count) values; stored \(item.modality) features have \(known.global)")
                }
                guard known.local == localDimension else {
                    throw ItemWriteError(field: "items[\(index)].features.local",
                                         description: "items[\(index)].features.local has vectors of \(localDimension) values; stored \(item.modality) features have \(known.local)")
                }
                let inserted = try db.execute("""
                    INSERT INTO amber.items (modality, external_id, caption, source) VALUES ($1::amber.modality, $2, $3, $4)
                    ON CONFLICT (modality, external_id) DO NOTHING RETURNING item_id
                    """, [.text(item.modality), .text(item.externalID), item.caption.map(PostgresValue.text) ?? .null, .text(source)])
                // An existing item keeps what it has: its features, and its thumbnail or none (this
                // upload's picture need not be the photo those features came from).
                guard inserted.rowCount == 1 else { continue }
                let id = try inserted.value(Int64.self, column: "item_id")
                if let thumbnail = item.thumbnail, item.modality == "image" { try StoredImage.insert(thumbnail, forImage: item.externalID, on: db) }
                try db.execute("""
                    INSERT INTO amber.features (item_id, modality, global_dim, local_dim, local_count, global_type, local_type, global_vector, local_vectors)
                    VALUES ($1, $2::amber.modality, $3, $4, $5, 'float32', 'float32', $6, $7)
                    """, [.int(id), .text(item.modality), .int32(Int32(item.global.count)), .int32(Int32(localDimension)),
                          .int32(Int32(item.localCount)), .bytes(littleEndian(item.global)), .bytes(littleEndian(item.local))])
                added += 1
            }
            return (added, items.count - added)
        }
    }

    /// - Returns: pairs added and pairs that already existed.
    /// - Throws: ``ItemWriteError`` (nothing written) when a pair names an item that is not stored.
    public static func write(_ pairs: [NewPair], on db: PostgresConnection) throws -> (added: Int, existing: Int) {
        try db.transaction {
            var added = 0
            for (index, pair) in pairs.enumerated() {
                let ids = try db.execute("""
                    SELECT (SELECT item_id FROM amber.items WHERE modality = 'image' AND external_id = $1) AS image,
                           (SELECT item_id FROM amber.items WHERE modality = 'text' AND external_id = $2) AS text
                    """, [.text(pair.image), .text(pair.text)])
                guard let image = try ids.decode(Int64.self, row: 0, column: "image") else {
                    throw ItemWriteError(field: "pairs[\(index)].image", description: "pairs[\(index)].image: no image with external id '\(pair.image)'")
                }
                guard let text = try ids.decode(Int64.self, row: 0, column: "text") else {
                    throw ItemWriteError(field: "pairs[\(index)].text", description: "pairs[\(index)].text: no text with external id '\(pair.text)'")
                }
                added += try db.execute("""
                    INSERT INTO amber.pairs (image_id, text_id, split) VALUES ($1, $2, $3::amber.split) ON CONFLICT (image_id, text_id) DO NOTHING
                    """, [.int(image), .int(text), .text(pair.split)]).affectedRows
            }
            return (added, pairs.count - added)
        }
    }

    static func littleEndian(_ values: [Float]) -> [UInt8] {
        var bytes = [UInt8]()
        bytes.reserveCapacity(values.count * 4)
        for value in values {
            let bits = value.bitPattern.littleEndian
            withUnsafeBytes(of: bits) { bytes += $0 }
        }
        return bytes
    }
}
