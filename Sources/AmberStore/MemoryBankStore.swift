/// One memory-bank slot as written with a checkpoint.
public struct BankEntry: Sendable {
    public var modality: String
    public var slot: Int
    public var itemID: Int64
    public var pairID: Int64?
    public var imageID: Int64?
    public var embedding: [Float]
    public var prototype: Int?
    public var ambiguity: Float?
    public var neighbourItemID: Int64?
    public var enqueuedStep: Int64
    public var modelVersion: Int64?

    public init(modality: String, slot: Int, itemID: Int64, pairID: Int64? = nil, imageID: Int64? = nil,
                embedding: [Float], prototype: Int? = nil, ambiguity: Float? = nil, neighbourItemID: Int64? = nil,
                enqueuedStep: Int64, modelVersion: Int64? = nil) {
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
    public static func replace(_ entries: [BankEntry], run: Int64, on connection: PostgresConnection) throws -> Int {
        var lengths: [String: Int] = [:]
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
                [.int(run), .text(modality), .ints(slots)])
        }
        return try connection.copy(into: "amber.memory_bank", columns: [
            "run_id", "modality", "slot", "item_id", "pair_id", "image_id", "embedding", "prototype", "ambiguity",
            "neighbour_item_id", "enqueued_step", "model_version",
        ]) { sink in
            for entry in entries {
                try sink.append([
                    .int(run), .text(entry.modality), .int32(Int32(entry.slot)), .int(entry.itemID),
                    entry.pairID.map(PostgresValue.int) ?? .null, entry.imageID.map(PostgresValue.int) ?? .null,
                    .floats(entry.embedding), entry.prototype.map { .int32(Int32($0)) } ?? .null,
                    entry.ambiguity.map(PostgresValue.float) ?? .null, entry.neighbourItemID.map(PostgresValue.int) ?? .null,
                    .int(entry.enqueuedStep), entry.modelVersion.map(PostgresValue.int) ?? .null,
                ])
            }
        }
    }
}
