import AmberTensor
import Foundation

/// What an ingest added (re-ingesting the same data adds nothing).
public struct IngestReport: Sendable, Equatable {
    public var imagesAdded = 0
    public var textsAdded = 0
    public var featuresAdded = 0
    public var pairsAdded = 0
    /// Rows sent (items + features + pairs), for rates.
    public var rowsSent = 0
    public var seconds = 0.0

    public var itemsAdded: Int { imagesAdded + textsAdded }
}

/// Progress of a running ingest.
public struct IngestProgress: Sendable {
    public let phase: String
    public let done: Int
    public let total: Int
}

/// Writes an ``IngestDataset`` in one transaction: everything or nothing.
///
/// Items and pairs stream with binary `COPY` into temporary staging tables and move into
/// `amber.items` and `amber.pairs` with `ON CONFLICT DO NOTHING` on external ids; features of
/// items that have none yet are copied straight into `amber.features`. Re-ingesting a
/// directory adds nothing. A failure or a killed process leaves the database as
/// it was: the transaction never commits.
public enum Ingestor {
    public static func ingest(
        _ dataset: IngestDataset, into connection: PostgresConnection,
        progress: (IngestProgress) -> Void = { _ in }
    ) throws -> IngestReport {
        let started = Date()
        var report = IngestReport()
        try connection.transaction {
            try registerDimensions(dataset, on: connection)
            try connection.executeScript("""
                CREATE TEMP TABLE stage_items (ordinal bigint, modality text, external_id text, caption text) ON COMMIT DROP;
                CREATE TEMP TABLE stage_pairs (ordinal bigint, image_external_id text, text_external_id text, split text) ON COMMIT DROP;
                """)
            let itemTotal = dataset.images.count + dataset.texts.count
            report.rowsSent += try connection.copy(into: "stage_items", columns: ["ordinal", "modality", "external_id", "caption"]) { sink in
                var ordinal: Int64 = 0
                for image in dataset.images {
                    try sink.append([.int(ordinal), .text("image"), .text(image.externalID), .null])
                    ordinal += 1
                    if ordinal % 1024 == 0 { progress(IngestProgress(phase: "items", done: Int(ordinal), total: itemTotal)) }
                }
                for text in dataset.texts {
                    try sink.append([.int(ordinal), .text("text"), .text(text.externalID), .text(text.caption)])
                    ordinal += 1
                    if ordinal % 1024 == 0 { progress(IngestProgress(phase: "items", done: Int(ordinal), total: itemTotal)) }
                }
            }
            progress(IngestProgress(phase: "items", done: itemTotal, total: itemTotal))
            let items = try connection.execute("""
                WITH added AS (
                    INSERT INTO amber.items (modality, external_id, caption, source)
                    SELECT modality::amber.modality, external_id, caption, $1 FROM stage_items ORDER BY ordinal
                    ON CONFLICT (modality, external_id) DO NOTHING
                    RETURNING modality
                )
                SELECT count(*) FILTER (WHERE modality = 'image') AS images,
                       count(*) FILTER (WHERE modality = 'text') AS texts FROM added
                """, [.text(dataset.source)])
            report.imagesAdded = try items.value(Int.self, column: "images")
            report.textsAdded = try items.value(Int.self, column: "texts")

            // Features go straight into amber.features with COPY (no staging copy of the large
            // vectors); concurrent ingests are serialised here so they never race on an item.
            try connection.execute("SELECT pg_advisory_xact_lock(hashtext('amber.features.ingest'))")
            let needing = try connection.execute("""
                SELECT s.ordinal, i.item_id
                FROM stage_items s
                JOIN amber.items i ON i.modality = s.modality::amber.modality AND i.external_id = s.external_id
                LEFT JOIN amber.features f ON f.item_id = i.item_id
                WHERE f.item_id IS NULL
                """)
            var itemIDs: [Int: Int64] = [:]
            for row in 0..<needing.rowCount {
                itemIDs[try needing.value(Int.self, row: row, column: "ordinal")] = try needing.value(Int64.self, row: row, column: "item_id")
            }
            let candidates: [(Int, String, IngestFeatures)] =
                dataset.images.enumerated().compactMap { index, image in image.features.map { (index, "image", $0) } }
                + dataset.texts.enumerated().compactMap { index, text in text.features.map { (dataset.images.count + index, "text", $0) } }
            let pending = candidates.filter { itemIDs[$0.0] != nil }
            report.featuresAdded = try connection.copy(into: "amber.features", columns: [
                "item_id", "modality", "global_dim", "local_dim", "local_count", "global_type", "local_type",
                "global_vector", "local_vectors",
            ]) { sink in
                for (index, (ordinal, modality, features)) in pending.enumerated() {
                    try sink.append([
                        .int(itemIDs[ordinal]!), .text(modality),
                        .int32(Int32(features.global.dimension)), .int32(Int32(features.local.dimension)),
                        .int32(Int32(features.local.rows)),
                        .text(features.global.elementType.rawValue), .text(features.local.elementType.rawValue),
                        .bytes(Array(features.global.bytes)), .bytes(Array(features.local.bytes)),
                    ])
                    if (index + 1) % 256 == 0 { progress(IngestProgress(phase: "features", done: index + 1, total: pending.count)) }
                }
            }
            report.rowsSent += pending.count
            progress(IngestProgress(phase: "features", done: pending.count, total: pending.count))

            report.rowsSent += try connection.copy(into: "stage_pairs", columns: ["ordinal", "image_external_id", "text_external_id", "split"]) { sink in
                for (index, pair) in dataset.pairs.enumerated() {
                    try sink.append([.int(Int64(index)), .text(pair.imageExternalID), .text(pair.textExternalID), .text(pair.split.rawValue)])
                }
            }
            progress(IngestProgress(phase: "pairs", done: dataset.pairs.count, total: dataset.pairs.count))
            report.pairsAdded = try connection.execute("""
                INSERT INTO amber.pairs (image_id, text_id, split)
                SELECT im.item_id, tx.item_id, s.split::amber.split
                FROM stage_pairs s
                JOIN amber.items im ON im.modality = 'image' AND im.external_id = s.image_external_id
                JOIN amber.items tx ON tx.modality = 'text' AND tx.external_id = s.text_external_id
                ORDER BY s.ordinal
                ON CONFLICT (image_id, text_id) DO NOTHING
                """).affectedRows
        }
        report.seconds = Date().timeIntervalSince(started)
        return report
    }

    /// Records the dataset's feature dimensions per modality, or fails if the database already
    /// holds features of other dimensions for that modality.
    static func registerDimensions(_ dataset: IngestDataset, on connection: PostgresConnection) throws {
        var wanted: [(String, Int, Int)] = []
        if let features = dataset.images.first(where: { $0.features != nil })?.features {
            wanted.append(("image", features.global.dimension, features.local.dimension))
        }
        if let features = dataset.texts.first(where: { $0.features != nil })?.features {
            wanted.append(("text", features.global.dimension, features.local.dimension))
        }
        for (modality, global, local) in wanted {
            try connection.execute("""
                INSERT INTO amber.feature_dimensions (modality, global_dim, local_dim) VALUES ($1::amber.modality, $2, $3)
                ON CONFLICT (modality) DO NOTHING
                """, [.text(modality), .int(Int64(global)), .int(Int64(local))])
            let existing = try connection.execute("SELECT global_dim, local_dim FROM amber.feature_dimensions WHERE modality = $1::amber.modality", [.text(modality)])
            let storedGlobal = try existing.value(Int.self, column: "global_dim"), storedLocal = try existing.value(Int.self, column: "local_dim")
            guard storedGlobal == global && storedLocal == local else {
                throw IngestError(file: dataset.source, "\(modality) features are \(global) global + n×\(local) local, but the database holds \(modality) features of \(storedGlobal) + n×\(storedLocal); one database serves one pair of encoders")
            }
        }
    }
}
