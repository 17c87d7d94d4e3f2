import AmberCatalog
import AmberIngest
import AmberTensor
import Foundation

/// Writes an ``IngestDataset`` in one transaction: everything or nothing.
///
/// Items and pairs stream with binary `COPY` into staging rows (`amber.ingest_stage_*`, under the
/// transaction's id, deleted before it commits: no temporary tables, which the service roles may
/// not create) and move into
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
            let txid = try connection.execute("SELECT txid_current() AS txid").value(Int64.self, column: "txid")
            let itemTotal = dataset.images.count + dataset.texts.count
            report.rowsSent += try connection.copy(into: "amber.ingest_stage_items", columns: ["txid", "ordinal", "modality", "external_id", "caption"]) { sink in
                var ordinal: Int64 = 0
                for image in dataset.images {
                    try sink.append([.int(txid), .int(ordinal), .text(Modality.image.rawValue), .text(image.externalID), .null])
                    ordinal += 1
                    if ordinal % 1024 == 0 { progress(IngestProgress(phase: "items", done: Int(ordinal), total: itemTotal)) }
                }
                for text in dataset.texts {
                    try sink.append([.int(txid), .int(ordinal), .text(Modality.text.rawValue), .text(text.externalID), .text(text.caption)])
                    ordinal += 1
                    if ordinal % 1024 == 0 { progress(IngestProgress(phase: "items", done: Int(ordinal), total: itemTotal)) }
                }
            }
            progress(IngestProgress(phase: "items", done: itemTotal, total: itemTotal))
            let items = try connection.execute("""
                WITH added AS (
                    INSERT INTO amber.items (modality, external_id, caption, source)
                    SELECT modality::amber.modality, external_id, caption, $1 FROM amber.ingest_stage_items WHERE txid = $2 ORDER BY ordinal
                    ON CONFLICT (modality, external_id) DO NOTHING
                    RETURNING modality
                )
                SELECT count(*) FILTER (WHERE modality = 'image') AS images,
                       count(*) FILTER (WHERE modality = 'text') AS texts FROM added
                """, [.text(dataset.source), .int(txid)])
            report.imagesAdded = try items.value(Int.self, column: "images")
            report.textsAdded = try items.value(Int.self, column: "texts")

            // Features go straight into amber.features with COPY (no staging copy of the large
            // vectors); concurrent ingests are serialised here so they never race on an item.
            try connection.execute("SELECT 1 FROM amber.ingest_locks WHERE name = 'features' FOR UPDATE")
            let needing = try connection.execute("""
                SELECT s.ordinal, i.item_id
                FROM amber.ingest_stage_items s
                JOIN amber.items i ON i.modality = s.modality::amber.modality AND i.external_id = s.external_id
                LEFT JOIN amber.features f ON f.item_id = i.item_id
                WHERE s.txid = $1 AND f.item_id IS NULL
                """, [.int(txid)])
            var itemIDs: [Int: Int64] = [:]
            for row in 0..<needing.rowCount {
                itemIDs[try needing.value(Int.self, row: row, column: "ordinal")] = try needing.value(Int64.self, row: row, column: "item_id")
            }
            let candidates: [(Int, Modality, IngestFeatures)] =
                dataset.images.enumerated().compactMap { index, image in image.features.map { (index, Modality.image, $0) } }
                + dataset.texts.enumerated().compactMap { index, text in text.features.map { (dataset.images.count + index, Modality.text, $0) } }
            let pending = candidates.filter { itemIDs[$0.0] != nil }
            report.featuresAdded = try connection.copy(into: "amber.features", columns: [
                "item_id", "modality", "global_dim", "local_dim", "local_count", "global_type", "local_type",
                "global_vector", "local_vectors",
            ]) { sink in
                for (index, (ordinal, modality, features)) in pending.enumerated() {
                    guard let itemID = itemIDs[ordinal] else { continue }
                    try sink.append([
                        .int(itemID), .text(modality.rawValue),
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

            report.rowsSent += try connection.copy(into: "amber.ingest_stage_pairs", columns: ["txid", "ordinal", "image_external_id", "text_external_id", "split"]) { sink in
                for (index, pair) in dataset.pairs.enumerated() {
                    try sink.append([.int(txid), .int(Int64(index)), .text(pair.imageExternalID), .text(pair.textExternalID), .text(pair.split.rawValue)])
                }
            }
            progress(IngestProgress(phase: "pairs", done: dataset.pairs.count, total: dataset.pairs.count))
            report.pairsAdded = try connection.execute("""
                INSERT INTO amber.pairs (image_id, text_id, split)
                SELECT im.item_id, tx.item_id, s.split::amber.split
                FROM amber.ingest_stage_pairs s
                JOIN amber.items im ON im.modality = 'image' AND im.external_id = s.image_external_id
                JOIN amber.items tx ON tx.modality = 'text' AND tx.external_id = s.text_external_id
                WHERE s.txid = $1
                ORDER BY s.ordinal
                ON CONFLICT (image_id, text_id) DO NOTHING
                """, [.int(txid)]).affectedRows
            for (externalID, image) in dataset.thumbnails.sorted(by: { $0.key < $1.key }) {
                report.thumbnailsAdded += try StoredImage.insert(image, forImage: externalID, on: connection)
            }
            try connection.execute("DELETE FROM amber.ingest_stage_items WHERE txid = $1", [.int(txid)])
            try connection.execute("DELETE FROM amber.ingest_stage_pairs WHERE txid = $1", [.int(txid)])
        }
        report.seconds = Date().timeIntervalSince(started)
        return report
    }

    /// Records the dataset's feature dimensions per modality, or fails if the database already
    /// holds features of other dimensions for that modality.
    static func registerDimensions(_ dataset: IngestDataset, on connection: PostgresConnection) throws {
        var wanted: [(Modality, Int, Int)] = []
        if let features = dataset.images.first(where: { $0.features != nil })?.features {
            wanted.append((.image, features.global.dimension, features.local.dimension))
        }
        if let features = dataset.texts.first(where: { $0.features != nil })?.features {
            wanted.append((.text, features.global.dimension, features.local.dimension))
        }
        for (modality, global, local) in wanted {
            let (storedGlobal, storedLocal) = try FeatureDimensions.register(modality: modality, global: global, local: local, on: connection)
            guard storedGlobal == global && storedLocal == local else {
                throw IngestError(file: dataset.source, "\(modality) features are \(global) global + n×\(local) local, but the database holds \(modality) features of \(storedGlobal) + n×\(storedLocal); one database serves one pair of encoders")
            }
        }
    }
}
