import AmberCatalog
@testable import AmberStore
import Foundation
import Testing

/// Migration 0007 on a real PostgreSQL: the auditor only reads, the service role writes without
/// DDL, and concurrent first writers of an empty database do not race.
@Suite("Roles and locks (real PostgreSQL)")
struct PrivilegeTests {
    /// `url` with another user (the test cluster trusts its socket; an external server needs the role's password in `url`).
    static func url(_ url: String, user: String) -> String {
        guard var components = URLComponents(string: url) else { return url }
        if components.queryItems?.contains(where: { $0.name == "user" }) == true {
            components.queryItems = components.queryItems?.map { $0.name == "user" ? URLQueryItem(name: "user", value: user) : $0 }
        } else {
            components.user = user
        }
        return components.string ?? url
    }

    @Test func theAuditorReadsButCannotBlockIngestNorCreateThings() throws {
        let owner = try TestDatabase.fresh(migrated: true)
        let admin = try PostgresConnection(url: owner)
        try admin.executeScript("DO $$ BEGIN CREATE ROLE amber_test_auditor LOGIN IN ROLE amber_auditor; EXCEPTION WHEN duplicate_object THEN NULL; END $$")
        let auditor = try PostgresConnection(url: Self.url(owner, user: "amber_test_auditor"))
        #expect(try auditor.execute("SELECT count(*) AS n FROM amber.items").value(Int.self, column: "n") == 0, "it reads")
        for statement in [
            "SELECT 1 FROM amber.ingest_locks WHERE name = 'pairs' FOR UPDATE",       // the ingest lock
            "LOCK TABLE amber.ingest_locks IN EXCLUSIVE MODE",
            "CREATE TEMP TABLE t (x int)",
            "SELECT lo_create(0)",
            "SELECT pg_advisory_lock(1)",
            "INSERT INTO amber.items (modality, external_id) VALUES ('image', 'x')",
        ] {
            expectPostgresError(.insufficientPrivilege) { try auditor.execute("BEGIN"); defer { _ = try? auditor.execute("ROLLBACK") }; try auditor.execute(statement) }
        }
        // The service role writes items and pairs (through the pair lock) but has no DDL.
        let service = try PostgresConnection(url: Self.url(owner, user: EmbeddedPostgres.serviceRole))
        let image = NewItem(modality: .image, externalID: "a.jpg", caption: nil, features: ItemFeatures(global: [1, 2], local: [1, 2, 3, 4], localCount: 2))
        let text = NewItem(modality: .text, externalID: "a.jpg#0", caption: "a dog", features: ItemFeatures(global: [1], local: [1, 2], localCount: 2))
        #expect(try ItemWriter.write([image, text], on: service) == (2, 0))
        #expect(try ItemWriter.write([NewPair(image: "a.jpg", text: "a.jpg#0", split: .train)], on: service) == (1, 0))
        expectPostgresError(.insufficientPrivilege) { try service.execute("CREATE TABLE amber.nope (x int)") }
        expectPostgresError(.insufficientPrivilege) { try service.execute("CREATE TEMP TABLE t (x int)") }
    }

    @Test func aHeldIngestLockTimesOutAsATransientError() throws {
        let owner = try TestDatabase.fresh(migrated: true)
        let holder = try PostgresConnection(url: owner)
        try ItemWriter.write([NewItem(modality: .image, externalID: "a.jpg", caption: nil, features: ItemFeatures(global: [1], local: [1, 2], localCount: 2)),
                              NewItem(modality: .text, externalID: "t", caption: "c", features: ItemFeatures(global: [1], local: [1, 2], localCount: 2))], on: holder)
        try holder.execute("BEGIN")
        try holder.execute("SELECT 1 FROM amber.ingest_locks WHERE name = 'pairs' FOR UPDATE")
        let writer = try PostgresConnection(url: owner, lockTimeout: 0.3)
        let error = expectPostgresError(.lockNotAvailable) { try ItemWriter.write([NewPair(image: "a.jpg", text: "t", split: .train)], on: writer) }
        #expect(error?.isTransient == true)
        try holder.execute("ROLLBACK")
        #expect(try ItemWriter.write([NewPair(image: "a.jpg", text: "t", split: .train)], on: writer) == (1, 0))
    }

    @Test func concurrentFirstWritersOfAnEmptyDatabaseAllSucceed() throws {
        let url = try TestDatabase.fresh(migrated: true)
        let failures = NSLock()
        nonisolated(unsafe) var errors: [String] = []
        DispatchQueue.concurrentPerform(iterations: 8) { i in
            do {
                let db = try PostgresConnection(url: url)
                let item = NewItem(modality: .image, externalID: "img\(i).jpg", caption: nil, features: ItemFeatures(global: [1, 2, 3], local: [1, 2, 3, 4, 5, 6], localCount: 2))
                _ = try ItemWriter.write([item], on: db)
            } catch {
                failures.lock()
                errors.append("\(error)")
                failures.unlock()
            }
        }
        #expect(errors.isEmpty, "\(errors)")
        let db = try PostgresConnection(url: url)
        #expect(try db.execute("SELECT count(*) AS n FROM amber.items").value(Int.self, column: "n") == 8)
    }
}
