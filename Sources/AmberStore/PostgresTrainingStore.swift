import AmberCatalog
import AmberModel
import AmberTrain
import Foundation
import Logging

/// The continuous trainer's store in PostgreSQL (schema `amber`, migrations 0001–0005).
///
/// One connection for reads and writes and one that `LISTEN`s on `amber_new_pairs`, both opened
/// on first use and opened again after a failure: a call that fails because the server went
/// away throws a transient ``PostgresError`` (the trainer waits and retries the call), and the
/// next call reconnects. A checkpoint is one transaction: the checkpoint row (and the pruning
/// of older ones), its memory-bank slots, its steps, the run's progress and the trainer's
/// ingest cursor commit together or not at all.
public final class PostgresTrainingStore: TrainingStore {
    public let url: String
    private let logger: Logger
    private var connection: PostgresConnection?
    private var listener: PostgresConnection?
    private var runName = ""

    public init(url: String, logger: Logger = Logger(label: "amber.train.store")) {
        self.url = url
        self.logger = logger
    }

    /// The working connection, opened again after a failure.
    private func connected() throws -> PostgresConnection {
        if let connection, connection.isHealthy { return connection }
        connection = nil
        let fresh = try PostgresConnection(url: url, lockTimeout: 30)
        connection = fresh
        return fresh
    }

    /// Runs `body` on the connection; a failure that broke the connection drops it.
    private func using<T>(_ body: (PostgresConnection) throws -> T) throws -> T {
        let connection = try connected()
        do {
            return try body(connection)
        } catch {
            if !connection.isHealthy { self.connection = nil }
            throw error
        }
    }

    public func isTransient(_ error: any Error) -> Bool {
        (error as? PostgresError)?.isTransient ?? false
    }

    // MARK: - Runs

    public func openRun(name: String, seed: UInt64, configuration: String) throws -> StoredRun {
        runName = name
        return try using { db in
            try db.transaction {
                let run = try db.execute("""
                    INSERT INTO amber.training_runs (name, seed, config, host) VALUES ($1, $2, $3, $4)
                    ON CONFLICT (name) WHERE name IS NOT NULL
                    DO UPDATE SET status = 'running', finished_at = NULL, heartbeat_at = now()
                    RETURNING run_id
                    """, [.text(name), .int(Int64(bitPattern: seed)), .json(configuration), .text(ProcessInfo.processInfo.hostName)])
                    .value(Int64.self, column: "run_id")
                try db.execute("""
                    INSERT INTO amber.ingest_cursor (consumer) VALUES ($1) ON CONFLICT (consumer) DO NOTHING
                    """, [.text(Self.consumer(name))])
                let latest = try db.execute("""
                    SELECT step, state, pair_cursor, sampler::text AS sampler, model_version, feedback_cursor
                    FROM amber.checkpoints WHERE run_id = $1 ORDER BY step DESC LIMIT 1
                    """, [.int(run)])
                guard latest.rowCount == 1 else { return StoredRun(runID: run, checkpoint: nil) }
                return StoredRun(runID: run, checkpoint: StoredCheckpoint(
                    step: try latest.value(Int.self, column: "step"), state: try latest.value([UInt8].self, column: "state"),
                    cursor: try latest.value(Int64.self, column: "pair_cursor"), sampler: try latest.value(String.self, column: "sampler"),
                    modelVersion: try latest.decode(Int64.self, row: 0, column: "model_version"),
                    feedbackCursor: try latest.value(Int64.self, column: "feedback_cursor")))
            }
        }
    }

    /// The `ingest_cursor` consumer of a trainer run.
    public static func consumer(_ runName: String) -> String { "trainer:" + runName }

    public func closeRun(_ runID: Int64, status: String) throws {
        try using { db in
            try db.execute("UPDATE amber.training_runs SET status = $2, finished_at = now(), heartbeat_at = now() WHERE run_id = $1",
                           [.int(runID), .text(status)])
        }
    }

    // MARK: - Pairs

    public func pairs(after cursor: Int64, limit: Int) throws -> PairPage {
        try using { db in
            let rows = try db.execute("""
                SELECT pair_id, image_id, text_id, split::text AS split FROM amber.pairs
                WHERE pair_id > $1 ORDER BY pair_id LIMIT $2
                """, [.int(cursor), .int(Int64(limit))])
            var pairs: [StoredPair] = []
            pairs.reserveCapacity(rows.rowCount)
            for row in 0..<rows.rowCount {
                let splitName = try rows.value(String.self, row: row, column: "split")
                guard let split = Split(rawValue: splitName) else {
                    throw PostgresError(code: "", message: "pair has unknown split '\(splitName)'", kind: .invalidData)
                }
                pairs.append(StoredPair(pairID: try rows.value(Int64.self, row: row, column: "pair_id"),
                                        imageID: try rows.value(Int64.self, row: row, column: "image_id"),
                                        textID: try rows.value(Int64.self, row: row, column: "text_id"), split: split))
            }
            let items = Array(Set(pairs.flatMap { [$0.imageID, $0.textID] }))
            guard !items.isEmpty else { return PairPage(pairs: [], features: [:]) }
            let features = try db.execute("""
                SELECT item_id, global_dim, local_dim, local_count, global_type::text AS global_type, local_type::text AS local_type,
                       global_vector, local_vectors
                FROM amber.features WHERE item_id = ANY($1)
                """, [.ints(items)])
            var byItem: [Int64: ItemFeatures] = [:]
            for row in 0..<features.rowCount {
                // A row that does not decode is left out (its pairs are skipped, named, by the trainer).
                do {
                    let (id, item) = try FeatureBytes.itemFeatures(features, row: row)
                    byItem[id] = item
                } catch {
                    logger.error("features row skipped", metadata: ["train.row": "\(row)", "error": "\(error)"])
                }
            }
            return PairPage(pairs: pairs, features: byItem)
        }
    }

    public func rejections(after cursor: Int64, limit: Int) throws -> RejectionPage {
        try using { db in
            // One row per (feedback, valid rejected item), in the user's order; a feedback row with
            // none still gives one row (NULLs) so that the cursor passes it. Only feedback that
            // made a pair is read: those rows take the pairs' ingest lock before their id is
            // drawn (even when the pair existed), so their ids become visible in order and the
            // cursor never passes one that commits later.
            let rows = try db.execute("""
                WITH page AS (
                    SELECT feedback_id, pair_id, chosen_item_id, rejected_item_ids FROM amber.feedback
                    WHERE feedback_id > $1 AND pair_id IS NOT NULL ORDER BY feedback_id LIMIT $2)
                SELECT g.feedback_id,
                       CASE WHEN c.modality = 'image' THEN p.text_id ELSE p.image_id END AS query_id,
                       r.item_id AS rejected_id
                FROM page g
                LEFT JOIN amber.pairs p ON p.pair_id = g.pair_id AND p.split = 'train'
                LEFT JOIN amber.items c ON c.item_id = g.chosen_item_id
                LEFT JOIN LATERAL (
                    SELECT i.item_id, u.ord FROM unnest(g.rejected_item_ids) WITH ORDINALITY AS u(item_id, ord)
                    JOIN amber.items i ON i.item_id = u.item_id AND i.modality = c.modality
                    WHERE p.pair_id IS NOT NULL
                      AND NOT EXISTS (SELECT 1 FROM amber.pairs h
                                      WHERE h.split <> 'train' AND (h.image_id = u.item_id OR h.text_id = u.item_id))
                ) r ON true
                ORDER BY g.feedback_id, r.ord
                """, [.int(cursor), .int(Int64(limit))])
            var rejections: [StoredRejection] = []
            var last = cursor
            var feedbackRows = Set<Int64>()
            for row in 0..<rows.rowCount {
                let feedback = try rows.value(Int64.self, row: row, column: "feedback_id")
                feedbackRows.insert(feedback)
                last = max(last, feedback)
                if let query = try rows.decode(Int64.self, row: row, column: "query_id"),
                   let rejected = try rows.decode(Int64.self, row: row, column: "rejected_id") {
                    rejections.append(StoredRejection(feedbackID: feedback, queryItemID: query, rejectedItemID: rejected))
                }
            }
            return RejectionPage(rejections: rejections, cursor: last, rowsRead: feedbackRows.count)
        }
    }

    public func waitForPairs(timeout: Double) throws -> Bool {
        let listening: PostgresConnection
        if let listener, listener.isHealthy {
            listening = listener
        } else {
            listener = nil
            listening = try PostgresConnection(url: url)
            try listening.listen("amber_new_pairs")
            listener = listening
        }
        do {
            var notified = try listening.waitForNotification(timeout: timeout) != nil
            // Several commits may have notified: take them all.
            while try listening.waitForNotification(timeout: 0) != nil { notified = true }
            return notified
        } catch {
            if !listening.isHealthy { listener = nil }
            throw error
        }
    }

    // MARK: - Checkpoints

    @discardableResult
    public func commit(_ checkpoint: CheckpointRecord) throws -> Int64? {
        try using { db in
            try db.transaction {
                // A new model version first: the checkpoint row and the bank slots refer to it.
                let written = try checkpoint.newVersion.map { try Self.insert($0, on: db) }
                if let written, checkpoint.promote { try db.execute("SELECT amber.promote_model($1)", [.int(written)]) }
                let modelVersion = written ?? checkpoint.modelVersion
                let bank = checkpoint.bank.map { slot in
                    var stamped = slot
                    stamped.modelVersion = modelVersion
                    return stamped
                }
                try db.execute("""
                    INSERT INTO amber.checkpoints (run_id, step, state, pair_cursor, sampler, pending_pairs, model_version, bank_slots, feedback_cursor)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                    ON CONFLICT (run_id, step) DO UPDATE SET state = EXCLUDED.state, pair_cursor = EXCLUDED.pair_cursor,
                        feedback_cursor = EXCLUDED.feedback_cursor,
                        sampler = EXCLUDED.sampler, pending_pairs = EXCLUDED.pending_pairs, model_version = EXCLUDED.model_version,
                        bank_slots = EXCLUDED.bank_slots, created_at = now()
                    """, [.int(checkpoint.runID), .int(Int64(checkpoint.step)), .bytes(checkpoint.state), .int(checkpoint.cursor),
                          .json(checkpoint.sampler), .ints(checkpoint.pendingPairs), modelVersion.map(PostgresValue.int) ?? .null,
                          .int32(Int32(bank.count)), .int(checkpoint.feedbackCursor)])
                try db.execute("""
                    DELETE FROM amber.checkpoints WHERE run_id = $1 AND step NOT IN
                        (SELECT step FROM amber.checkpoints WHERE run_id = $1 ORDER BY step DESC LIMIT $2)
                    """, [.int(checkpoint.runID), .int(Int64(checkpoint.keep))])
                if !bank.isEmpty { try MemoryBankStore.replace(bank, run: checkpoint.runID, on: db) }
                if !checkpoint.steps.isEmpty {
                    let terms = try checkpoint.steps.map { step -> String in
                        // JSON has no NaN: a non-finite term (a skipped step) is stored as null.
                        String(decoding: try JSONSerialization.data(withJSONObject: step.terms.mapValues { $0.isFinite ? Double($0) as Any : NSNull() },
                                                                    options: [.sortedKeys]), as: UTF8.self)
                    }
                    try db.execute("""
                        INSERT INTO amber.training_steps (run_id, step, total_loss, losses, learning_rate, pairs_per_second)
                        SELECT $1, s, l, t::jsonb, r, p FROM unnest($2::bigint[], $3::real[], $4::text[], $5::real[], $6::real[]) AS u(s, l, t, r, p)
                        ON CONFLICT (run_id, step) DO UPDATE SET total_loss = EXCLUDED.total_loss, losses = EXCLUDED.losses,
                            learning_rate = EXCLUDED.learning_rate, pairs_per_second = EXCLUDED.pairs_per_second, recorded_at = now()
                        """, [.int(checkpoint.runID), .ints(checkpoint.steps.map { Int64($0.step) }),
                              .floats(checkpoint.steps.map(\.loss)), .texts(terms),
                              .floats(checkpoint.steps.map(\.learningRate)), .floats(checkpoint.steps.map { Float($0.pairsPerSecond ?? 0) })])
                }
                try db.execute("UPDATE amber.training_runs SET last_step = $2, heartbeat_at = now() WHERE run_id = $1",
                               [.int(checkpoint.runID), .int(Int64(checkpoint.step))])
                try db.execute("""
                    INSERT INTO amber.ingest_cursor (consumer, last_pair_id, updated_at) VALUES ($1, $2, now())
                    ON CONFLICT (consumer) DO UPDATE SET last_pair_id = EXCLUDED.last_pair_id, updated_at = now()
                    """, [.text(Self.consumer(runName)), .int(checkpoint.cursor)])
                return written
            }
        }
    }

    // MARK: - Model versions

    /// Inserts a model version and its prototypes (inside the caller's transaction).
    static func insert(_ version: ModelVersionRecord, on db: PostgresConnection) throws -> Int64 {
        let number = try db.execute("""
            INSERT INTO amber.models (parent_version, run_id, step, config, parameters, metrics)
            VALUES ($1, $2, $3, $4, $5, $6) RETURNING version
            """, [version.parentVersion.map(PostgresValue.int) ?? .null, .int(version.runID), .int(Int64(version.step)),
                  .json(version.configuration), .bytes(version.model), .json(version.metrics)])
            .value(Int64.self, column: "version")
        if !version.prototypes.isEmpty {
            try db.copy(into: "amber.prototypes", columns: ["model_version", "index", "centroid", "image_count", "text_count"]) { sink in
                for (index, centroid) in version.prototypes.enumerated() {
                    try sink.append([.int(number), .int32(Int32(index)), .floats(centroid),
                                     .int32(Int32(version.prototypeImageCounts[index])), .int32(Int32(version.prototypeTextCounts[index]))])
                }
            }
        }
        return number
    }

    public func servingModel() throws -> StoredModel? {
        try using { db in try ModelRegistry.servingModelFile(on: db).map { StoredModel(version: $0.version, model: $0.bytes) } }
    }

}
