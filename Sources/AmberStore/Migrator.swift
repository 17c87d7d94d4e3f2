import AmberCatalog
import Foundation

/// One schema change: `NNNN_verb_noun.up.sql` and its inverse `NNNN_verb_noun.down.sql`.
public struct Migration: Sendable, Equatable {
    public let version: Int
    public let name: String
    public let up: String
    public let down: String
}

/// A problem with the migrations themselves (files, numbering, edits after applying).
public struct MigrationError: Error, CustomStringConvertible {
    public let description: String
}

/// Applies migrations in order, each in its own transaction, recorded in
/// `amber_meta.schema_migrations`, under a session advisory lock so that several Amber processes
/// starting at once migrate one after another. An applied migration whose file changed is an
/// error: never edit an applied migration, add a new one.
public struct Migrator: Sendable {
    public let migrations: [Migration]

    /// Advisory lock key shared by every Amber process (`hashtext('amber.migrate')` would do too).
    static let lockKey: Int64 = 0x616D_6265_725F_6D67

    public init(migrations: [Migration]) throws {
        let sorted = migrations.sorted { $0.version < $1.version }
        for (index, migration) in sorted.enumerated() where migration.version != index + 1 {
            throw MigrationError(description: "migrations must be numbered 0001, 0002, … without gaps; found \(String(format: "%04d", migration.version))_\(migration.name) at position \(index + 1)")
        }
        self.migrations = sorted
    }

    /// Reads `NNNN_name.up.sql` / `NNNN_name.down.sql` pairs from `directory`.
    public init(directory: String) throws {
        let files: [String]
        do {
            files = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(".sql") }
        } catch {
            throw MigrationError(description: "cannot read the migrations directory \(directory): \(error.localizedDescription); set AMBER_MIGRATIONS or pass --migrations")
        }
        var ups: [Int: (String, String)] = [:], downs: [Int: (String, String)] = [:]
        for file in files {
            let parts = file.split(separator: "_", maxSplits: 1)
            guard parts.count == 2, parts[0].count == 4, let version = Int(parts[0]), version > 0 else {
                throw MigrationError(description: "\(directory)/\(file): migration files are named NNNN_verb_noun.up.sql or .down.sql")
            }
            let rest = String(parts[1])
            let contents = try String(contentsOfFile: directory + "/" + file, encoding: .utf8)
            if rest.hasSuffix(".up.sql") {
                guard ups[version] == nil else { throw MigrationError(description: "\(directory): two up migrations numbered \(parts[0])") }
                ups[version] = (String(rest.dropLast(7)), contents)
            } else if rest.hasSuffix(".down.sql") {
                guard downs[version] == nil else { throw MigrationError(description: "\(directory): two down migrations numbered \(parts[0])") }
                downs[version] = (String(rest.dropLast(9)), contents)
            } else {
                throw MigrationError(description: "\(directory)/\(file): migration files end in .up.sql or .down.sql")
            }
        }
        var migrations: [Migration] = []
        for (version, up) in ups {
            guard let down = downs[version], down.0 == up.0 else {
                throw MigrationError(description: "\(directory): \(String(format: "%04d", version))_\(up.0).up.sql has no matching .down.sql")
            }
            migrations.append(Migration(version: version, name: up.0, up: up.1, down: down.1))
        }
        if let orphan = downs.keys.first(where: { ups[$0] == nil }) {
            throw MigrationError(description: "\(directory): down migration \(String(format: "%04d", orphan)) has no matching .up.sql")
        }
        try self.init(migrations: migrations)
    }

    /// The migrations directory: `AMBER_MIGRATIONS`, else `migrations/` beside the checkout
    /// that holds the running executable (`.build/<config>/amber`), else `./migrations`.
    public static func defaultDirectory() -> String {
        if let configured = ProcessInfo.processInfo.environment["AMBER_MIGRATIONS"] { return configured }
        var directory = URL(fileURLWithPath: CommandLine.arguments.first ?? ".").resolvingSymlinksInPath().deletingLastPathComponent()
        for _ in 0..<5 {
            let candidate = directory.appendingPathComponent("migrations")
            if FileManager.default.fileExists(atPath: candidate.appendingPathComponent("0001_create_catalog.up.sql").path) {
                return candidate.path
            }
            directory.deleteLastPathComponent()
        }
        return FileManager.default.currentDirectoryPath + "/migrations"
    }

    /// A migration recorded as applied.
    public struct Applied: Sendable, Equatable {
        public let version: Int
        public let name: String
    }

    /// Versions applied so far, in order.
    public func applied(on connection: PostgresConnection) throws -> [Applied] {
        try ensureVersionsTable(on: connection)
        let result = try connection.execute("SELECT version, name FROM amber_meta.schema_migrations ORDER BY version")
        return try (0..<result.rowCount).map {
            Applied(version: try result.value(Int.self, row: $0, column: "version"), name: try result.value(String.self, row: $0, column: "name"))
        }
    }

    /// Applies every pending migration up to `target` (default: all).
    /// - Returns: the migrations applied by this call.
    @discardableResult
    public func migrateUp(on connection: PostgresConnection, to target: Int? = nil) throws -> [Migration] {
        try withLock(on: connection) {
            try ensureVersionsTable(on: connection)
            let done = try appliedChecksums(on: connection)
            for migration in migrations where done[migration.version] != nil {
                let current = try connection.execute("SELECT md5($1) AS sum", [.text(migration.up)]).value(String.self, column: "sum")
                guard current == done[migration.version] else {
                    throw MigrationError(description: "migration \(String(format: "%04d", migration.version))_\(migration.name) was edited after it was applied (checksum differs); never edit an applied migration, add a new one")
                }
            }
            if let latest = done.keys.max(), latest > migrations.count {
                throw MigrationError(description: "the database has migration \(latest) applied, newer than the \(migrations.count) this Amber knows; run a newer Amber")
            }
            var applied: [Migration] = []
            for migration in migrations where done[migration.version] == nil && migration.version <= (target ?? Int.max) {
                try connection.transaction {
                    try connection.executeScript(migration.up)
                    try connection.execute(
                        "INSERT INTO amber_meta.schema_migrations (version, name, checksum) VALUES ($1, $2, md5($3))",
                        [.int(Int64(migration.version)), .text(migration.name), .text(migration.up)])
                }
                applied.append(migration)
            }
            return applied
        }
    }

    /// Reverts the latest `steps` applied migrations, newest first.
    /// - Returns: the migrations reverted.
    @discardableResult
    public func migrateDown(on connection: PostgresConnection, steps: Int) throws -> [Migration] {
        precondition(steps >= 0, "migrateDown: steps must not be negative")
        return try withLock(on: connection) {
            try ensureVersionsTable(on: connection)
            let done = try appliedChecksums(on: connection).keys.sorted(by: >)
            var reverted: [Migration] = []
            for version in done.prefix(steps) {
                guard let migration = migrations.first(where: { $0.version == version }) else {
                    throw MigrationError(description: "migration \(version) is applied but unknown to this Amber; cannot revert it")
                }
                try connection.transaction {
                    try connection.executeScript(migration.down)
                    try connection.execute("DELETE FROM amber_meta.schema_migrations WHERE version = $1", [.int(Int64(version))])
                }
                reverted.append(migration)
            }
            return reverted
        }
    }

    private func withLock<R>(on connection: PostgresConnection, _ body: () throws -> R) throws -> R {
        try connection.execute("SELECT pg_advisory_lock($1)", [.int(Migrator.lockKey)])
        defer { _ = try? connection.execute("SELECT pg_advisory_unlock($1)", [.int(Migrator.lockKey)]) }
        return try body()
    }

    private func ensureVersionsTable(on connection: PostgresConnection) throws {
        try connection.executeScript("""
            CREATE SCHEMA IF NOT EXISTS amber_meta;
            CREATE TABLE IF NOT EXISTS amber_meta.schema_migrations (
                version    integer PRIMARY KEY,
                name       text NOT NULL,
                checksum   text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            );
            """)
    }

    private func appliedChecksums(on connection: PostgresConnection) throws -> [Int: String] {
        let result = try connection.execute("SELECT version, checksum FROM amber_meta.schema_migrations")
        var checksums: [Int: String] = [:]
        for row in 0..<result.rowCount {
            checksums[try result.value(Int.self, row: row, column: "version")] = try result.value(String.self, row: row, column: "checksum")
        }
        return checksums
    }
}
