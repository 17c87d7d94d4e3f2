import AmberCatalog
/// A bank entry that must not be written.
public struct BankEntryError: Error, CustomStringConvertible {
    public let description: String
}

/// Writes memory-bank slots: the slots given are replaced (deleted, then loaded with binary
/// `COPY` into `real[]`). Call it inside the checkpoint's transaction.
public enum MemoryBankStore {
    /// Replaces the entries' slots of `run`.
    /// - Throws: ``BankEntryError`` before writing anything if an embedding holds NaN or ±Inf or
    ///   is empty, or embeddings of one modality differ in length; ``PostgresError`` from the server.
    @discardableResult
    public static func replace(_ entries: [BankSlot], run: Int64, on connection: PostgresConnection) throws -> Int {
        var lengths: [Modality: Int] = [:]
        for entry in entries {
            guard !entry.embedding.isEmpty, entry.embedding.allSatisfy(\.isFinite) else {
                throw BankEntryError(description: "bank entry \(entry.modality) slot \(entry.slot) (item \(entry.itemID)) has an empty or non-finite embedding")
            }
            if let length = lengths[entry.modality], length != entry.embedding.count {
                throw BankEntryError(description: "bank entries of modality \(entry.modality) have embeddings of \(length) and \(entry.embedding.count) values")
            }
            lengths[entry.modality] = entry.embedding.count
        }
        for modality in Set(entries.map(\.modality)) {
            let slots = entries.filter { $0.modality == modality }.map { Int64($0.slot) }
            try connection.execute(
                "DELETE FROM amber.memory_bank WHERE run_id = $1 AND modality = $2::amber.modality AND slot = ANY($3)",
                [.int(run), .text(modality.rawValue), .ints(slots)])
        }
        return try connection.copy(into: "amber.memory_bank", columns: [
            "run_id", "modality", "slot", "item_id", "pair_id", "image_id", "embedding", "prototype", "ambiguity",
            "neighbour_item_id", "enqueued_step", "model_version",
        ]) { sink in
            for entry in entries {
                try sink.append([
                    .int(run), .text(entry.modality.rawValue), .int32(Int32(entry.slot)), .int(entry.itemID),
                    entry.pairID.map(PostgresValue.int) ?? .null, .int(entry.imageID),
                    .floats(entry.embedding), entry.prototype.map { .int32(Int32($0)) } ?? .null,
                    entry.ambiguity.map(PostgresValue.float) ?? .null, entry.neighbourItemID.map(PostgresValue.int) ?? .null,
                    .int(Int64(entry.enqueuedStep)), entry.modelVersion.map(PostgresValue.int) ?? .null,
                ])
            }
        }
    }
}
