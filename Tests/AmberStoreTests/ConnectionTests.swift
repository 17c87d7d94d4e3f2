import AmberCatalog
@testable import AmberStore
import Foundation
import Testing

@Suite("libpq connection (real PostgreSQL)")
struct ConnectionTests {
    @Test func parametersAndResultsRoundTripInBinary() throws {
        let connection = try PostgresConnection(url: try TestDatabase.fresh())
        let result = try connection.execute("""
            SELECT $1::bigint AS i, $2::integer AS i32, $3::float8 AS d, $4::real AS f, $5::text AS t,
                   $6::bytea AS b, $7::real[] AS fs, $8::bigint[] AS is, $9::text[] AS ts, $10::jsonb AS j,
                   $11::boolean AS flag, $12::text AS missing, now() AS at, interval '90 seconds' AS span
            """, [.int(-42), .int32(7), .double(2.5), .float(-0.25), .text("héllo"), .bytes([0, 255, 1]),
                  .floats([1, 2.5, -3]), .ints([5, 6]), .texts(["a", "b c"]), .json(#"{"k": 1}"#), .bool(true), .null])
        #expect(try result.value(Int.self, column: "i") == -42)
        #expect(try result.value(Int.self, column: "i32") == 7)
        #expect(try result.value(Double.self, column: "d") == 2.5)
        #expect(try result.value(Float.self, column: "f") == -0.25)
        #expect(try result.value(String.self, column: "t") == "héllo")
        #expect(try result.value([UInt8].self, column: "b") == [0, 255, 1])
        #expect(try result.value([Float].self, column: "fs") == [1, 2.5, -3])
        #expect(try result.value([Int64].self, column: "is") == [5, 6])
        #expect(try result.value([String].self, column: "ts") == ["a", "b c"])
        #expect(try result.value(String.self, column: "j") == #"{"k": 1}"#)
        #expect(try result.value(Bool.self, column: "flag"))
        #expect(try result.decode(String.self, row: 0, column: "missing") == nil)
        #expect(abs(try result.value(Date.self, column: "at").timeIntervalSinceNow) < 60)
        #expect(try result.value(Double.self, column: "span") == 90)
        #expect(throws: PostgresError.self) { try result.value(Int.self, column: "t") }
        #expect(throws: PostgresError.self) { try result.value(Int.self, column: "nonexistent") }
    }

    @Test func errorsCarrySQLStateKindAndAdvice() throws {
        let connection = try PostgresConnection(url: try TestDatabase.fresh())
        try connection.executeScript("CREATE TABLE t (id integer PRIMARY KEY, v integer CHECK (v > 0))")
        try connection.execute("INSERT INTO t VALUES (1, 1)")
        let duplicate = expectPostgresError(.uniqueViolation) { try connection.execute("INSERT INTO t VALUES (1, 2)") }
        #expect(duplicate?.code == "23505")
        #expect(duplicate?.detail?.contains("(id)=(1)") == true)
        expectPostgresError(.constraintViolation) { try connection.execute("INSERT INTO t VALUES (2, -1)") }
        let missing = expectPostgresError(.undefinedObject) { try connection.execute("SELECT * FROM amber.items") }
        #expect(missing?.description.contains("amber migrate") == true)
        expectPostgresError(.other) { try connection.execute("SELEC 1") }
        expectPostgresError(.invalidData) { try connection.execute("SELECT $1::integer", [.text("twelve")]) }
        // The connection stays usable after errors.
        #expect(try connection.execute("SELECT 1 AS one").value(Int.self, column: "one") == 1)
    }

    @Test func badURLFailsToConnectWithAdvice() {
        let error = expectPostgresError(.connectionFailure) {
            _ = try PostgresConnection(url: "postgresql:///nowhere?host=/nonexistent-dir&port=1")
        }
        #expect(error?.description.contains("check that PostgreSQL is running") == true)
    }

    @Test func transactionsCommitOrRollBack() throws {
        let connection = try PostgresConnection(url: try TestDatabase.fresh())
        try connection.executeScript("CREATE TABLE t (v integer)")
        try connection.transaction { try connection.execute("INSERT INTO t VALUES (1)") }
        struct Boom: Error {}
        #expect(throws: Boom.self) {
            try connection.transaction {
                try connection.execute("INSERT INTO t VALUES (2)")
                throw Boom()
            }
        }
        expectPostgresError(.uniqueViolation) {
            try connection.transaction {
                try connection.execute("INSERT INTO t VALUES (3)")
                try connection.execute("CREATE UNIQUE INDEX ON t (v)")
                try connection.execute("INSERT INTO t VALUES (3)")
            }
        }
        #expect(try connection.execute("SELECT array_agg(v ORDER BY v) AS vs FROM t").value([Int64].self, column: "vs") == [1])
    }

    @Test func binaryCopyLoadsRowsOfEveryType() throws {
        let connection = try PostgresConnection(url: try TestDatabase.fresh())
        try connection.executeScript("CREATE TABLE c (id bigint, n integer, name text, blob bytea, vec real[], flag boolean)")
        let rows = try connection.copy(into: "c", columns: ["id", "n", "name", "blob", "vec", "flag"]) { sink in
            for i in 0..<5000 {
                try sink.append([.int(Int64(i)), .int32(Int32(i % 7)), i % 2 == 0 ? .text("even \(i)") : .null,
                                 .bytes([UInt8(i % 256)]), .floats([Float(i), 0.5]), .bool(i % 3 == 0)])
            }
        }
        #expect(rows == 5000)
        let check = try connection.execute("""
            SELECT count(*) AS n, sum(id)::bigint AS s, count(name) AS named, sum(vec[1])::float8 AS v, count(*) FILTER (WHERE flag) AS flags
            FROM c
            """)
        #expect(try check.value(Int.self, column: "n") == 5000)
        #expect(try check.value(Int.self, column: "s") == 4999 * 5000 / 2)
        #expect(try check.value(Int.self, column: "named") == 2500)
        #expect(try check.value(Double.self, column: "v") == Double(4999 * 5000 / 2))
        #expect(try check.value(Int.self, column: "flags") == 1667)
        // A type mismatch fails the COPY with the server's error; nothing is loaded.
        expectPostgresError(.invalidData) {
            try connection.copy(into: "c", columns: ["n"]) { sink in try sink.append([.int(1)]) }
        }
        #expect(try connection.execute("SELECT count(*) AS n FROM c").value(Int.self, column: "n") == 5000)
    }

    @Test func poolRunsConcurrentWorkOnDedicatedThreads() async throws {
        let client = PostgresClient(url: try TestDatabase.fresh(), maximumConnections: 2)
        try await client.withConnection { try $0.executeScript("CREATE TABLE hits (v integer)") }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<16 {
                group.addTask {
                    try await client.transaction { connection in
                        try connection.execute("SELECT pg_sleep(0.01)")
                        try connection.execute("INSERT INTO hits VALUES ($1)", [.int(Int64(i))])
                    }
                }
            }
            try await group.waitForAll()
        }
        let count = try await client.withConnection { try $0.execute("SELECT count(*) AS n FROM hits").value(Int.self, column: "n") }
        #expect(count == 16)
        let backends = try await client.withConnection {
            try $0.execute("SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database()").value(Int.self, column: "n")
        }
        #expect(backends <= 2)
        await client.shutdown()
    }

    @Test func listenerReceivesNotificationsAndHonoursCancellation() async throws {
        let url = try TestDatabase.fresh()
        let listener = PostgresListener(url: url, channels: ["amber_test"], pollInterval: 0.05)
        try await listener.connect()
        let sender = try PostgresConnection(url: url)
        try sender.notify("amber_test", payload: "42")
        let received = try await listener.next(timeout: 5)
        #expect(received?.channel == "amber_test" && received?.payload == "42")
        #expect(try await listener.next(timeout: 0.1) == nil)

        // Notifications sent inside a transaction arrive only after COMMIT.
        try sender.executeScript("BEGIN")
        try sender.notify("amber_test", payload: "later")
        #expect(try await listener.next(timeout: 0.2) == nil)
        try sender.executeScript("COMMIT")
        #expect(try await listener.next(timeout: 5)?.payload == "later")

        let waiting = Task { try await listener.next(timeout: 60) }
        try await Task.sleep(for: .milliseconds(100))
        let started = Date()
        waiting.cancel()
        await #expect(throws: CancellationError.self) { try await waiting.value }
        #expect(Date().timeIntervalSince(started) < 2)
    }

    @Test func brokenConnectionsAreReportedAndReplaced() async throws {
        let url = try TestDatabase.fresh()
        let client = PostgresClient(url: url, maximumConnections: 1)
        let pid = try await client.withConnection { $0.backendProcessID }
        let killer = try PostgresConnection(url: url)
        try killer.execute("SELECT pg_terminate_backend($1)", [.int32(Int32(pid))])
        try await Task.sleep(for: .milliseconds(200))
        do {
            _ = try await client.withConnection { try $0.execute("SELECT 1").rowCount }
            Issue.record("a terminated backend must surface as an error")
        } catch let error as PostgresError {
            #expect(error.isTransient, "got \(error)")
        }
        // The next use reconnects.
        let value = try await client.withConnection { try $0.execute("SELECT 7 AS v").value(Int.self, column: "v") }
        #expect(value == 7)
    }
}
