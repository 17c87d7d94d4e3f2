import AmberCatalog
import AmberTensor
import Foundation

/// Writes items (with their features) and pairs in one transaction each call, idempotently:
/// an item whose external id is already stored for its modality, or a pair already stored, is
/// left as it is and counted as existing. New pairs notify `amber_new_pairs` (the trainer).
public enum ItemWriter {
    /// - Returns: items added and items that already existed.
    /// - Throws: ``ItemWriteError`` (nothing written) when an item's feature dimensions differ
    ///   from those its modality has in the database.
    public static func write(_ items: [NewItem], source: String = "http", on db: PostgresConnection) throws -> (added: Int, existing: Int) {
        try db.transaction {
            let (added, existing, labelled) = try insert(items, source: source, on: db)
            // Query servers grow their galleries on this (an item need not wait for its pairs),
            // and take stored items' new labels.
            if added > 0 || labelled > 0 { try db.execute("SELECT pg_notify('amber_new_items', $1)", [.text(String(added))]) }
            return (added, existing)
        }
    }

    /// The body of ``write(_:source:on:)`` inside the caller's transaction (no notification).
    static func insert(_ items: [NewItem], source: String, on db: PostgresConnection) throws -> (added: Int, existing: Int, labelled: Int) {
        do {
            var dimensions: [Modality: (global: Int, local: Int)] = [:]
            var added = 0, labelled = 0
            for (index, item) in items.enumerated() {
                let localDimension = item.features.localDimension
                let known: (global: Int, local: Int)
                if let registered = dimensions[item.modality] {
                    known = registered
                } else {
                    known = try FeatureDimensions.register(modality: item.modality, global: item.features.global.count, local: localDimension, on: db)
                    dimensions[item.modality] = known
                }
                guard known.global == item.features.global.count else {
                    throw ItemWriteError(field: "items[\(index)].features.global",
                                         description: "items[\(index)].features.global has \(item.features.global.count) values; stored \(item.modality) features have \(known.global)")
                }
                guard known.local == localDimension else {
                    throw ItemWriteError(field: "items[\(index)].features.local",
                                         description: "items[\(index)].features.local has vectors of \(localDimension) values; stored \(item.modality) features have \(known.local)")
                }
                let inserted = try db.execute("""
                    INSERT INTO amber.items (modality, external_id, caption, source) VALUES ($1::amber.modality, $2, $3, $4)
                    ON CONFLICT (modality, external_id) DO NOTHING RETURNING item_id
                    """, [.text(item.modality.rawValue), .text(item.externalID), item.caption.map(PostgresValue.text) ?? .null, .text(source)])
                // Labels are added to the item, new or stored (never removed here).
                for label in Set(item.labels).sorted() {
                    labelled += try db.execute("""
                        INSERT INTO amber.item_labels (item_id, label)
                        SELECT item_id, $3 FROM amber.items WHERE modality = $1::amber.modality AND external_id = $2
                        ON CONFLICT DO NOTHING
                        """, [.text(item.modality.rawValue), .text(item.externalID), .text(label)]).affectedRows
                }
                // An existing item keeps what it has: its features, and its thumbnail or none (this
                // upload's picture need not be the photo those features came from).
                guard inserted.rowCount == 1 else { continue }
                let id = try inserted.value(Int64.self, column: "item_id")
                if let thumbnail = item.thumbnail, item.modality == .image { try StoredImage.insert(thumbnail, forImage: item.externalID, on: db) }
                try db.execute("""
                    INSERT INTO amber.features (item_id, modality, global_dim, local_dim, local_count, global_type, local_type, global_vector, local_vectors)
                    VALUES ($1, $2::amber.modality, $3, $4, $5, 'float32', 'float32', $6, $7)
                    """, [.int(id), .text(item.modality.rawValue), .int32(Int32(item.features.global.count)), .int32(Int32(localDimension)),
                          .int32(Int32(item.features.localCount)), .bytes(ElementType.float32.bytes(item.features.global)), .bytes(ElementType.float32.bytes(item.features.local))])
                added += 1
            }
            return (added, items.count - added, labelled)
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
                    """, [.int(image), .int(text), .text(pair.split.rawValue)]).affectedRows
            }
            return (added, pairs.count - added)
        }
    }
}
