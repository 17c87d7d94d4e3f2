import AmberCatalog
import Foundation

/// Stores feedback in one transaction: the row (`amber.feedback`), and when the chosen result is
/// of the other modality and no item of the pair is held out (dev, test), a training pair of the
/// query and the chosen result. A free-text query becomes a text item (source `feedback`,
/// external id `feedback:` + a hash of the text) so that the trainer can use it.
public enum FeedbackWriter {
    /// - Throws: ``ItemWriteError`` (nothing written) naming `chosen`, `query.item_id` or
    ///   `rejected[i]` when it is not a stored item.
    public static func write(_ feedback: NewFeedback, on db: PostgresConnection) throws -> FeedbackResult {
        try db.transaction {
            func modality(of item: Int64, field: String) throws -> Modality {
                let row = try db.execute("SELECT modality::text AS modality FROM amber.items WHERE item_id = $1", [.int(item)])
                guard row.rowCount == 1, let name = try row.decode(String.self, row: 0, column: "modality"),
                      let modality = Modality(rawValue: name) else {
                    throw ItemWriteError(field: field, description: "\(field): no item with item_id \(item)")
                }
                return modality
            }
            let chosenModality = try modality(of: feedback.chosen, field: "chosen")
            let queryModality: Modality
            var queryItem: Int64?
            var queryText: String?
            switch feedback.query {
            case .item(let id):
                queryModality = try modality(of: id, field: "query.item_id")
                queryItem = id
            case .text(let text, _):
                queryModality = .text
                queryText = text
            }
            if !feedback.rejected.isEmpty {
                let found = try db.execute("SELECT item_id FROM amber.items WHERE item_id = ANY($1::bigint[])",
                                           [.text("{" + feedback.rejected.map(String.init).joined(separator: ",") + "}")])
                let known = Set(try (0..<found.rowCount).map { try found.value(Int64.self, row: $0, column: "item_id") })
                if let index = feedback.rejected.firstIndex(where: { !known.contains($0) }) {
                    throw ItemWriteError(field: "rejected[\(index)]", description: "rejected[\(index)]: no item with item_id \(feedback.rejected[index])")
                }
            }

            // The pair, if this feedback makes one.
            var pairID: Int64?, pairAdded = false, reason: String?
            if queryModality == chosenModality {
                reason = "the query and the chosen result are both \(chosenModality.rawValue)s: no image–text pair"
            } else {
                let imageID = chosenModality == .image ? feedback.chosen : queryItem
                var textID = chosenModality == .text ? feedback.chosen : queryItem
                let heldOut = try db.execute("""
                    SELECT count(*)::bigint AS n FROM amber.pairs
                    WHERE split <> 'train' AND (image_id = $1 OR text_id = $2)
                    """, [imageID.map(PostgresValue.int) ?? .null, textID.map(PostgresValue.int) ?? .null])
                if try heldOut.value(Int64.self, column: "n") > 0 {
                    reason = "an item of the pair is in the dev or test split, which is never trained on"
                } else if case .text(let text, let features) = feedback.query {
                    if var item = features {
                        item.externalID = externalID(ofQuery: text)
                        item.caption = text
                        item.modality = .text
                        let (added, _, _) = try ItemWriter.insert([item], source: "feedback", on: db)
                        if added > 0 { try db.execute("SELECT pg_notify('amber_new_items', '1')") }
                        let row = try db.execute("SELECT item_id FROM amber.items WHERE modality = 'text' AND external_id = $1", [.text(item.externalID)])
                        textID = try row.value(Int64.self, column: "item_id")
                    } else {
                        reason = "this server has no text encoder to store the query text with"
                    }
                }
                if reason == nil, let imageID, let textID {
                    let inserted = try db.execute("""
                        INSERT INTO amber.pairs (image_id, text_id, split) VALUES ($1, $2, 'train')
                        ON CONFLICT (image_id, text_id) DO NOTHING RETURNING pair_id
                        """, [.int(imageID), .int(textID)])
                    if inserted.rowCount == 1 {
                        pairID = try inserted.value(Int64.self, column: "pair_id")
                        pairAdded = true
                    } else {
                        let existing = try db.execute("SELECT pair_id FROM amber.pairs WHERE image_id = $1 AND text_id = $2", [.int(imageID), .int(textID)])
                        pairID = try existing.value(Int64.self, column: "pair_id")
                    }
                }
            }
            let row = try db.execute("""
                INSERT INTO amber.feedback (query_modality, query_item_id, query_text, chosen_item_id, chosen_rank, rejected_item_ids,
                                            model_version, client, pair_id, not_paired_because)
                VALUES ($1::amber.modality, $2, $3, $4, $5, $6::bigint[], $7, $8, $9, $10) RETURNING feedback_id
                """, [.text(queryModality.rawValue), queryItem.map(PostgresValue.int) ?? .null, queryText.map(PostgresValue.text) ?? .null,
                      .int(feedback.chosen), feedback.chosenRank.map { .int32(Int32(clamping: $0)) } ?? .null,
                      .text("{" + feedback.rejected.map(String.init).joined(separator: ",") + "}"),
                      feedback.modelVersion.map(PostgresValue.int) ?? .null, feedback.client.map(PostgresValue.text) ?? .null,
                      pairID.map(PostgresValue.int) ?? .null, reason.map(PostgresValue.text) ?? .null])
            return FeedbackResult(feedbackID: try row.value(Int64.self, column: "feedback_id"), pairID: pairID, pairAdded: pairAdded,
                                  notPairedBecause: reason)
        }
    }

    /// The external id a free-text query is stored under: `feedback:` and the FNV-1a 64 hash of
    /// its UTF-8 bytes (the same text twice is one item).
    public static func externalID(ofQuery text: String) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01B3
        }
        let hex = String(hash, radix: 16)
        return "feedback:" + String(repeating: "0", count: 16 - hex.count) + hex
    }
}
