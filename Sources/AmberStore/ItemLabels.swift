import AmberCatalog
import AmberIngest

/// Labels of stored items (`amber.item_labels`).
public enum ItemLabels {
    /// Adds every label of `file` in one transaction (a label an item has already is left as it
    /// is). - Returns: labels added.
    /// - Throws: ``IngestError`` naming the file and line of an entry whose item is not stored
    ///   (nothing is written then).
    public static func add(_ file: LabelFile, on db: PostgresConnection) throws -> Int {
        try db.transaction {
            var added = 0
            for entry in file.entries {
                let item = try db.execute("SELECT item_id FROM amber.items WHERE modality = $1::amber.modality AND external_id = $2",
                                          [.text(entry.modality.rawValue), .text(entry.externalID)])
                guard item.rowCount == 1 else {
                    throw IngestError(file: file.path, line: entry.line, "no \(entry.modality.rawValue) with external id '\(entry.externalID)' is stored")
                }
                added += try db.execute("INSERT INTO amber.item_labels (item_id, label) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                                        [.int(try item.value(Int64.self, column: "item_id")), .text(entry.label)]).affectedRows
            }
            // Query servers take the new labels into their galleries' items.
            if added > 0 { try db.execute("SELECT pg_notify('amber_new_items', '0')") }
            return added
        }
    }
}
