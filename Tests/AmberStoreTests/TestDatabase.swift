import AmberCatalog
@testable import AmberStore
import Foundation
import Testing

/// A real PostgreSQL for integration tests.
///
/// Uses the server at `AMBER_TEST_DATABASE_URL` (a URL whose role may create databases) when
/// set; otherwise starts one embedded cluster for the whole test process in a temporary
/// directory (fsync off) and stops it at exit. Every test gets a database of its own.
enum TestDatabase {
    private static let server: Result<(adminURL: String, make: @Sendable (String) -> String), Error> = {
        if let url = ProcessInfo.processInfo.environment["AMBER_TEST_DATABASE_URL"], !url.isEmpty {
            return .success((url, { name in replacingDatabase(in: url, with: name) }))
        }
        let home = "/tmp/amber-test-\(getpid())"
        let cluster = EmbeddedPostgres(home: home, durability: .ephemeral)
        do {
            try cluster.start()
        } catch {
            return .failure(error)
        }
        clusterToStop = cluster
        atexit {
            if let cluster = TestDatabase.clusterToStop {
                try? cluster.stop()
                try? FileManager.default.removeItem(atPath: cluster.home)
            }
        }
        return .success((cluster.url(database: "postgres"), { name in cluster.url(database: name) }))
    }()

    nonisolated(unsafe) static var clusterToStop: EmbeddedPostgres?

    static func replacingDatabase(in url: String, with name: String) -> String {
        guard var components = URLComponents(string: url) else { return url }
        components.path = "/" + name
        return components.string ?? url
    }

    /// A new, empty database; returns its URL.
    static func fresh(migrated: Bool = false) throws -> String {
        let (adminURL, make) = try server.get()
        let name = "amber_test_\(UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(16).lowercased())"
        let admin = try PostgresConnection(url: adminURL)
        try admin.executeScript("CREATE DATABASE \(name)")
        let url = make(name)
        if migrated {
            let connection = try PostgresConnection(url: url)
            try Migrator(directory: migrationsDirectory).migrateUp(on: connection)
        }
        return url
    }

    static var repositoryRoot: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    }

    static var migrationsDirectory: String { repositoryRoot + "/migrations" }
}

/// Expects `body` to throw a ``PostgresError`` of `kind`; returns it.
@discardableResult
func expectPostgresError(
    _ kind: PostgresError.Kind, sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void
) -> PostgresError? {
    do {
        try body()
        Issue.record("expected a PostgreSQL error of kind \(kind); nothing was thrown", sourceLocation: sourceLocation)
    } catch let error as PostgresError {
        #expect(error.kind == kind, "got \(error)", sourceLocation: sourceLocation)
        return error
    } catch {
        Issue.record("expected a PostgresError of kind \(kind), got \(error)", sourceLocation: sourceLocation)
    }
    return nil
}
