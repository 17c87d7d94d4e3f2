import AmberCatalog
import AmberModel
import AmberTensor
import Foundation
import Logging

/// The catalogue's labelled items as a labelled set: every item with features and at least one
/// label, its global vector, its labels as classes (the label names sorted; class `c` is the
/// `c`-th name). What `amber train --supervision labels --continuous` learns from.
public enum LabelledCatalog {
    /// What the labelled part of the catalogue holds now: labelled items with features and the
    /// newest label's time; a change means a new training run has something new to learn.
    public struct Version: Sendable, Equatable {
        public var items: Int
        public var labels: Int
        public var newest: String
    }

    public static func version(on db: PostgresConnection) throws -> Version {
        let row = try db.execute("""
            SELECT count(DISTINCT l.item_id) AS items, count(*) AS labels, coalesce(max(l.created_at)::text, '') AS newest
            FROM amber.item_labels l JOIN amber.features f USING (item_id)
            """)
        return Version(items: try row.value(Int.self, column: "items"), labels: try row.value(Int.self, column: "labels"),
                       newest: try row.value(String.self, column: "newest"))
    }

    /// The labelled items split into training and validation by a seeded hash of each item's id:
    /// an item stays on its side as the catalogue grows, so a model trained on today's items is
    /// compared with the serving one on items neither trained on. Nil when there are fewer than
    /// two labels or no items.
    public static func read(on db: PostgresConnection, validationShare share: Double, seed: UInt64,
                            logger: Logger = Logger(label: "amber.train")) throws -> (train: LabelledData, validation: LabelledData)? {
        guard let (data, ids) = try readWithIDs(on: db, logger: logger) else { return nil }
        var train: [Modality: LabelledItems] = [:], validation: [Modality: LabelledItems] = [:]
        for (modality, items) in data.items {
            let held = ids[modality]!.map { isValidation($0, share: share, seed: seed) }
            train[modality] = items.subset(held.indices.filter { !held[$0] })
            validation[modality] = items.subset(held.indices.filter { held[$0] })
        }
        return (LabelledData(items: train, classCount: data.classCount, classNames: data.classNames),
                LabelledData(items: validation, classCount: data.classCount, classNames: data.classNames))
    }

    /// Whether item `id` is held out for validation (a SplitMix64 hash of id and seed below the share).
    public static func isValidation(_ id: Int64, share: Double, seed: UInt64) -> Bool {
        var z = UInt64(bitPattern: id) &+ seed &* 0x9E37_79B9_7F4A_7C15 &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        return Double(z >> 11) / Double(1 << 53) < share
    }

    /// The labelled items, or nil when there are fewer than two labels or no items. A row that
    /// does not decode (a vector of another type or width) is skipped and logged.
    public static func read(on db: PostgresConnection, logger: Logger = Logger(label: "amber.train")) throws -> LabelledData? {
        try readWithIDs(on: db, logger: logger)?.data
    }

    private static func readWithIDs(on db: PostgresConnection, logger: Logger) throws -> (data: LabelledData, ids: [Modality: [Int64]])? {
        let rows = try db.execute("""
            SELECT i.item_id, i.modality::text AS modality, f.global_type::text AS global_type, f.global_vector,
                   (SELECT json_agg(l.label ORDER BY l.label) FROM amber.item_labels l WHERE l.item_id = i.item_id)::text AS labels
            FROM amber.items i JOIN amber.features f USING (item_id)
            WHERE EXISTS (SELECT 1 FROM amber.item_labels l WHERE l.item_id = i.item_id)
            ORDER BY i.item_id
            """)
        var vectors: [Modality: [[Float]]] = [:], names: [Modality: [[String]]] = [:], ids: [Modality: [Int64]] = [:]
        for row in 0..<rows.rowCount {
            do {
                let id = try rows.value(Int64.self, row: row, column: "item_id")
                guard let modality = Modality(rawValue: try rows.value(String.self, row: row, column: "modality")) else { continue }
                let global = try FeatureBytes.floats(try rows.value([UInt8].self, row: row, column: "global_vector"),
                                                     type: try rows.value(String.self, row: row, column: "global_type"), item: id)
                let labels = try JSONDecoder().decode([String].self, from: Data(try rows.value(String.self, row: row, column: "labels").utf8))
                guard !labels.isEmpty, global.count == vectors[modality]?.first?.count ?? global.count,
                      FeatureLimits().firstOutOfRange(global) == nil else {
                    logger.error("labelled item skipped: its global vector does not fit", metadata: ["train.item_id": "\(id)"])
                    continue
                }
                vectors[modality, default: []].append(global)
                names[modality, default: []].append(labels)
                ids[modality, default: []].append(id)
            } catch {
                logger.error("labelled item row skipped", metadata: ["train.row": "\(row)", "error": "\(error)"])
            }
        }
        let classNames = Array(Set(names.values.joined().joined())).sorted()
        guard classNames.count >= 2, !vectors.isEmpty else { return nil }
        let index = Dictionary(uniqueKeysWithValues: classNames.enumerated().map { ($1, $0) })
        var items: [Modality: LabelledItems] = [:]
        for (modality, rows) in vectors {
            let dimension = rows[0].count
            items[modality] = LabelledItems(features: Tensor(shape: [rows.count, dimension], scalars: rows.flatMap { $0 }),
                                            labels: names[modality]!.map { $0.compactMap { index[$0] } })
        }
        return (LabelledData(items: items, classCount: classNames.count, classNames: classNames), ids)
    }
}
