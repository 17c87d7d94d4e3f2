import AmberCatalog
import Foundation

/// Model versions as operators see them: list, promote, roll back. Promotion goes through
/// `amber.promote_model` (one transaction: statuses, the serving pointer, a `NOTIFY
/// amber_model_promoted` that the query service hears).
public enum ModelRegistry {
    /// The newest `limit` versions, newest first.
    public static func list(on connection: PostgresConnection, limit: Int = 50) throws -> [ModelVersion] {
        let rows = try connection.execute("""
            SELECT m.version, m.parent_version, r.name AS run, m.step, m.status::text AS status,
                   (m.metrics->>'rsum')::float8 AS rsum,
                   m.metrics->>'gate' AS gate, m.created_at, m.promoted_at
            FROM amber.models m LEFT JOIN amber.training_runs r USING (run_id)
            ORDER BY m.version DESC LIMIT $1
            """, [.int(Int64(limit))])
        return try (0..<rows.rowCount).map { row in
            ModelVersion(version: try rows.value(Int64.self, row: row, column: "version"),
                    parentVersion: try rows.decode(Int64.self, row: row, column: "parent_version"),
                    run: try rows.decode(String.self, row: row, column: "run"),
                    step: try rows.value(Int.self, row: row, column: "step"),
                    status: try rows.value(String.self, row: row, column: "status"),
                    rsum: try rows.decode(Double.self, row: row, column: "rsum"),
                    gate: try rows.decode(String.self, row: row, column: "gate"),
                    createdAt: try rows.value(Date.self, row: row, column: "created_at"),
                    promotedAt: try rows.decode(Date.self, row: row, column: "promoted_at"))
        }
    }

    /// The version being served, if any.
    public static func serving(on connection: PostgresConnection) throws -> Int64? {
        let row = try connection.execute("SELECT model_version FROM amber.serving")
        return row.rowCount == 1 ? try row.value(Int64.self, column: "model_version") : nil
    }

    /// The version being served and its model file's bytes, if any.
    public static func servingModelFile(on connection: PostgresConnection) throws -> (version: Int64, bytes: [UInt8])? {
        let row = try connection.execute("SELECT m.version, m.parameters FROM amber.serving s JOIN amber.models m ON m.version = s.model_version")
        guard row.rowCount == 1 else { return nil }
        return (try row.value(Int64.self, column: "version"), try row.value([UInt8].self, column: "parameters"))
    }

    /// The model file's bytes of `version`, or nil when there is no such version.
    public static func modelFile(_ version: Int64, on connection: PostgresConnection) throws -> [UInt8]? {
        let row = try connection.execute("SELECT parameters FROM amber.models WHERE version = $1", [.int(version)])
        return row.rowCount == 1 ? try row.value([UInt8].self, column: "parameters") : nil
    }

    /// Serves `version`.
    /// - Throws: ``RegistryError`` when there is no such version.
    public static func promote(_ version: Int64, on connection: PostgresConnection) throws {
        do {
            try connection.execute("SELECT amber.promote_model($1)", [.int(version)])
        } catch let error as PostgresError where error.code == "P0002" {
            throw RegistryError(description: "model version \(version) does not exist (amber models list shows the versions)")
        }
    }

    /// Serves `version` if the serving version is still `expected` (nil: none is served), in one
    /// transaction that holds the serving row: a gate that compared with `expected` cannot undo
    /// a promotion made meanwhile. Returns whether it promoted.
    public static func promote(_ version: Int64, ifServing expected: Int64?, on connection: PostgresConnection) throws -> Bool {
        try connection.transaction {
            let row = try connection.execute("SELECT model_version FROM amber.serving WHERE singleton FOR UPDATE")
            let current = row.rowCount == 1 ? try row.decode(Int64.self, row: 0, column: "model_version") : nil
            guard current == expected else { return false }
            try promote(version, on: connection)
            return true
        }
    }

    /// Registers a model file (the bytes of a `TrainedModel`) as a new candidate version; returns
    /// its number.
    public static func add(model bytes: [UInt8], step: Int, configuration: String, metrics: String, on connection: PostgresConnection) throws -> Int64 {
        try connection.execute("""
            INSERT INTO amber.models (step, config, parameters, metrics) VALUES ($1, $2, $3, $4) RETURNING version
            """, [.int(Int64(step)), .json(configuration), .bytes(bytes), .json(metrics)]).value(Int64.self, column: "version")
    }

    /// Serves again the version promoted before the current one; returns it.
    /// - Throws: ``RegistryError`` when nothing was promoted before.
    @discardableResult
    public static func rollback(on connection: PostgresConnection) throws -> Int64 {
        try connection.transaction {
            let current = try serving(on: connection)
            let previous = try connection.execute("""
                SELECT version FROM amber.models
                WHERE promoted_at IS NOT NULL AND version IS DISTINCT FROM $1
                ORDER BY promoted_at DESC, version DESC LIMIT 1
                """, [current.map(PostgresValue.int) ?? .null])
            guard previous.rowCount == 1 else {
                throw RegistryError(description: "no earlier promoted version to roll back to" + (current.map { " (serving \($0))" } ?? ""))
            }
            let version = try previous.value(Int64.self, column: "version")
            try connection.execute("SELECT amber.promote_model($1)", [.int(version)])
            return version
        }
    }
}
