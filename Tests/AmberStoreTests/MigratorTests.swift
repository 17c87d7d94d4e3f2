import AmberCatalog
@testable import AmberStore
import Foundation
import Testing

@Suite("Migrations (real PostgreSQL)")
struct MigratorTests {
    let migrator: Migrator

    init() throws {
        migrator = try Migrator(directory: TestDatabase.migrationsDirectory)
    }

    func tables(_ connection: PostgresConnection) throws -> [String] {
        try connection.execute("""
            SELECT table_name FROM information_schema.tables WHERE table_schema = 'amber' ORDER BY table_name
            """).column(String.self).compactMap { $0 }
    }

    @Test func upDownUpLeavesTheSameSchema() throws {
        let connection = try PostgresConnection(url: try TestDatabase.fresh())
        let applied = try migrator.migrateUp(on: connection)
        #expect(applied.map(\.version) == Array(1...migrator.migrations.count))
        let schema = try tables(connection)
        #expect(schema.contains("items") && schema.contains("memory_bank") && schema.contains("bank_overview"))
        #expect(try migrator.applied(on: connection).count == migrator.migrations.count)
        #expect(try migrator.migrateUp(on: connection).isEmpty, "a second run applies nothing")

        let reverted = try migrator.migrateDown(on: connection, steps: migrator.migrations.count)
        #expect(reverted.map(\.version) == Array((1...migrator.migrations.count).reversed()))
        #expect(try tables(connection).isEmpty)
        #expect(try connection.execute("SELECT 1 FROM pg_namespace WHERE nspname = 'amber'").rowCount == 0)

        try migrator.migrateUp(on: connection)
        #expect(try tables(connection) == schema)
    }

    @Test func migratesToATargetAndDownStepByStep() throws {
        let connection = try PostgresConnection(url: try TestDatabase.fresh())
        try migrator.migrateUp(on: connection, to: 1)
        #expect(try migrator.applied(on: connection).map(\.version) == [1])
        #expect(try tables(connection).contains("items"))
        #expect(!(try tables(connection).contains("models")))
        try migrator.migrateUp(on: connection)
        try migrator.migrateDown(on: connection, steps: 1)
        #expect(try migrator.applied(on: connection).map(\.version) == Array(1..<migrator.migrations.count))
    }

    @Test func concurrentMigratorsApplyEachMigrationOnce() async throws {
        let url = try TestDatabase.fresh()
        let migrator = self.migrator
        let counts = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<4 {
                group.addTask {
                    let connection = try PostgresConnection(url: url)
                    return try migrator.migrateUp(on: connection).count
                }
            }
            return try await group.reduce(into: [Int]()) { $0.append($1) }
        }
        #expect(counts.reduce(0, +) == migrator.migrations.count)
    }

    @Test func anEditedAppliedMigrationIsRefused() throws {
        let connection = try PostgresConnection(url: try TestDatabase.fresh())
        try migrator.migrateUp(on: connection, to: 1)
        var edited = migrator.migrations
        edited[0] = Migration(version: 1, name: edited[0].name, up: edited[0].up + "\n-- edited", down: edited[0].down)
        let tampered = try Migrator(migrations: edited)
        #expect(throws: MigrationError.self) { try tampered.migrateUp(on: connection) }
    }

    @Test func aFailingMigrationRollsBackWhole() throws {
        let connection = try PostgresConnection(url: try TestDatabase.fresh())
        let broken = try Migrator(migrations: [
            Migration(version: 1, name: "create_things", up: "CREATE TABLE things (id int); CREATE TABLE things (id int);", down: "DROP TABLE things;"),
        ])
        expectPostgresError(.other) { try broken.migrateUp(on: connection) }
        #expect(try connection.execute("SELECT 1 FROM pg_tables WHERE tablename = 'things'").rowCount == 0)
        #expect(try broken.applied(on: connection).isEmpty)
    }

    @Test func badMigrationDirectoriesAreExplained() throws {
        let directory = NSTemporaryDirectory() + "amber-migrations-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try "SELECT 1;".write(toFile: directory + "/0001_create_a.up.sql", atomically: true, encoding: .utf8)
        #expect(throws: MigrationError.self) { try Migrator(directory: directory) }      // no down
        try "SELECT 1;".write(toFile: directory + "/0001_create_a.down.sql", atomically: true, encoding: .utf8)
        try "SELECT 1;".write(toFile: directory + "/0003_create_c.up.sql", atomically: true, encoding: .utf8)
        try "SELECT 1;".write(toFile: directory + "/0003_create_c.down.sql", atomically: true, encoding: .utf8)
        do {
            _ = try Migrator(directory: directory)
            Issue.record("a gap in numbering must be refused")
        } catch let error as MigrationError {
            #expect(error.description.contains("without gaps"))
        }
        try "x".write(toFile: directory + "/notes.sql", atomically: true, encoding: .utf8)
        #expect(throws: MigrationError.self) { try Migrator(directory: directory) }
        #expect(throws: MigrationError.self) { try Migrator(directory: directory + "/missing") }
    }
}
