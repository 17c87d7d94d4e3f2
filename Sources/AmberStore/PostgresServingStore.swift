import AmberCatalog
import AmberModel
import AmberSearch
import AmberServer
import Foundation
import Logging

// The query service's ports, in PostgreSQL: the serving store (models, galleries, writes from
// the HTTP API) and the change feed (`LISTEN` on the channels the schema notifies).

/// The serving store in PostgreSQL.
public struct PostgresServingStore: ServingStore {
    public let client: PostgresClient
    public let logger: Logger

    public init(client: PostgresClient, logger: Logger = Logger(label: "amber.serve")) {
        self.client = client
        self.logger = logger
    }

    public func servingModel() async throws -> (version: Int64, model: ServedModel)? {
        guard let file = try await client.withConnection({ db in try ModelRegistry.servingModelFile(on: db) }) else { return nil }
        return (file.version, try UnservableModelError.check(file.bytes, version: file.version))
    }

    public func galleryCatalog(_ modality: Modality) async throws -> [GalleryItem] {
        try await client.withConnection { db in
            let rows = try db.execute("""
                SELECT i.item_id, i.external_id, i.caption,
                       (SELECT json_agg(l.label ORDER BY l.label) FROM amber.item_labels l WHERE l.item_id = i.item_id)::text AS labels
                FROM amber.items i JOIN amber.features f USING (item_id)
                WHERE i.modality = $1::amber.modality ORDER BY i.item_id
                """, [.text(modality.rawValue)])
            return try (0..<rows.rowCount).map { row in
                let itemID = try rows.value(Int64.self, row: row, column: "item_id")
                var labels: [String] = []
                if let json = try rows.decode(String.self, row: row, column: "labels") {
                    // A label list that does not decode is logged and left out: the item still serves.
                    do { labels = try JSONDecoder().decode([String].self, from: Data(json.utf8)) } catch {
                        logger.error("labels of an item skipped", metadata: ["serve.item": "\(itemID)", "error": "\(error)"])
                    }
                }
                return GalleryItem(itemID: itemID, externalID: try rows.value(String.self, row: row, column: "external_id"),
                                   caption: try rows.decode(String.self, row: row, column: "caption"), labels: labels)
            }
        }
    }

    public func galleryFeatures(_ modality: Modality, ids: [Int64]) async throws -> [(itemID: Int64, features: ItemFeatures)] {
        guard !ids.isEmpty else { return [] }
        return try await client.withConnection { db in
            let rows = try db.execute("""
                SELECT i.item_id, f.local_count, f.global_type::text AS global_type, f.local_type::text AS local_type,
                       f.global_vector, f.local_vectors
                FROM amber.items i JOIN amber.features f USING (item_id)
                WHERE i.modality = $1::amber.modality AND i.item_id = ANY($2::bigint[]) ORDER BY i.item_id
                """, [.text(modality.rawValue), .text("{" + ids.map(String.init).joined(separator: ",") + "}")])
            return (0..<rows.rowCount).compactMap { row in
                // A row that does not decode is skipped and logged: one bad row must not stop a gallery.
                do {
                    return try FeatureBytes.itemFeatures(rows, row: row)
                } catch {
                    logger.error("features row skipped", metadata: ["serve.row": "\(row)", "error": "\(error)"])
                    return nil
                }
            }
        }
    }

    public func modelVersions(limit: Int) async throws -> [ModelVersion] {
        try await client.withConnection { db in try ModelRegistry.list(on: db, limit: limit) }
    }

    /// Promotes `version` once its file is known to be servable.
    /// - Throws: ``UnservableModelError`` (nothing promoted), ``RegistryError`` for an unknown version.
    public func promote(_ version: Int64) async throws {
        try await client.withConnection { db in
            if let bytes = try ModelRegistry.modelFile(version, on: db) { _ = try UnservableModelError.check(bytes, version: version) }
            try ModelRegistry.promote(version, on: db)
        }
    }

    public func addItems(_ items: [NewItem]) async throws -> (added: Int, existing: Int) {
        try await client.withConnection { db in try ItemWriter.write(items, on: db) }
    }

    public func addPairs(_ pairs: [NewPair]) async throws -> (added: Int, existing: Int) {
        try await client.withConnection { db in try ItemWriter.write(pairs, on: db) }
    }

    public func itemImage(_ itemID: Int64) async throws -> StoredImage? {
        try await client.withConnection { db in try StoredImage.fetch(itemID: itemID, on: db) }
    }

    public func addFeedback(_ feedback: NewFeedback) async throws -> FeedbackResult {
        try await client.withConnection { db in try FeedbackWriter.write(feedback, on: db) }
    }

    public func bankSummary() async throws -> [BankSummary] {
        try await client.withConnection { db in
            let rows = try db.execute("""
                SELECT run_id, modality::text AS modality, entries, distinct_items, staleness_steps, mean_ambiguity
                FROM amber.bank_overview ORDER BY run_id DESC, modality
                """)
            return try (0..<rows.rowCount).map { row in
                BankSummary(runID: try rows.value(Int64.self, row: row, column: "run_id"), modality: try rows.value(String.self, row: row, column: "modality"),
                            entries: try rows.value(Int.self, row: row, column: "entries"),
                            distinctItems: try rows.value(Int.self, row: row, column: "distinct_items"),
                            stalenessSteps: try rows.value(Int.self, row: row, column: "staleness_steps"),
                            meanAmbiguity: try rows.decode(Float.self, row: row, column: "mean_ambiguity"))
            }
        }
    }
}

/// The query service's change feed on PostgreSQL: `LISTEN amber_model_promoted, amber_new_pairs,
/// amber_new_items` on a connection of its own.
public struct PostgresChangeFeed: ChangeFeed {
    public let listener: PostgresListener

    public init(url: String, pollInterval: Double = 0.2) {
        listener = PostgresListener(url: url, channels: ["amber_model_promoted", "amber_new_pairs", "amber_new_items"],
                                    pollInterval: pollInterval)
    }

    public func connect() async throws { try await listener.connect() }

    public func next(timeout: Double) async throws -> CatalogChange? {
        guard let notification = try await listener.next(timeout: timeout) else { return nil }
        switch notification.channel {
        case "amber_model_promoted": return .modelPromoted(notification.payload)
        case "amber_new_pairs": return .pairsAdded
        default: return .itemsAdded
        }
    }
}
