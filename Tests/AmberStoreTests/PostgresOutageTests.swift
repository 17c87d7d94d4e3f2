import AmberCatalog
@testable import AmberIngest
@testable import AmberStore
import Foundation
import Testing

/// PostgreSQL killed under a running `amber train --continuous`: the trainer waits and retries
/// with a log line, carries on when the server is back, and loses no committed step; SIGTERM
/// then stops it after a last checkpoint. Uses a cluster of its own (the other tests' server
/// stays up).
@Suite("Continuous training through a PostgreSQL outage (real PostgreSQL, real process)")
struct PostgresOutageTests {
    static func committedStep(_ url: String) throws -> Int {
        let row = try PostgresConnection(url: url).execute("SELECT coalesce(max(step), 0) AS s FROM amber.checkpoints")
        return try row.value(Int.self, column: "s")
    }

    static func waitUntil(_ timeout: Double, _ condition: () throws -> Bool) rethrows -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if try condition() { return true }
            usleep(50_000)
        }
        return try condition()
    }

    @Test func theTrainerWaitsOutAKilledServerAndStopsCleanlyOnSIGTERM() throws {
        let home = "/tmp/amber-outage-\(UUID().uuidString.prefix(8))"
        // Durable: with synchronous_commit off (the ephemeral test setting) a crash may lose acknowledged commits.
        let cluster = EmbeddedPostgres(home: home, durability: .durable)
        try cluster.start()
        defer {
            try? cluster.stop()
            try? FileManager.default.removeItem(atPath: home)
        }
        let url = cluster.url
        let db = try PostgresConnection(url: url)
        try Migrator(directory: TestDatabase.migrationsDirectory).migrateUp(on: db)
        try Ingestor.ingest(try DatasetReader.read(try GlobalLocalFixture(images: 16, regions: 3).directory), into: db)

        var environment = ProcessInfo.processInfo.environment
        environment["AMBER_DATABASE_URL"] = url
        let trainer = try AmberProcess.launch(ContinuousTrainingCrashTests.arguments, environment: environment)
        defer { kill(trainer.pid, SIGKILL) }
        #expect(try Self.waitUntil(60) { try Self.committedStep(url) >= 6 }, "the trainer must commit before the outage: \(trainer.stdoutText)\(trainer.stderrText)")
        let before = try Self.committedStep(url)

        // Kill the server: SIGQUIT to the postmaster is PostgreSQL's immediate shutdown (every
        // backend dies at once, nothing is flushed; crash recovery on restart).
        let pidLine = try String(contentsOfFile: cluster.dataDirectory + "/postmaster.pid", encoding: .utf8).split(separator: "\n").first
        let postmaster = try #require(pidLine.flatMap { pid_t(String($0)) })
        kill(postmaster, SIGQUIT)
        #expect(Self.waitUntil(30) { kill(postmaster, 0) != 0 }, "the postmaster must go away")
        #expect(Self.waitUntil(30) { trainer.stdoutText.contains("store unavailable while") }, "no retry line: \(trainer.stdoutText)")
        var status: Int32 = 0
        #expect(waitpid(trainer.pid, &status, WNOHANG) == 0, "the trainer must keep waiting, not exit: \(trainer.stderrText)")
        let retryLine = trainer.stdoutText.split(separator: "\n").first { $0.contains("store unavailable while") } ?? ""
        #expect(retryLine.contains("retrying in"), "\(retryLine)")

        // Back up: the trainer reconnects by itself and commits again, past where it was.
        usleep(1_000_000)
        try cluster.start()
        #expect(Self.waitUntil(60) { trainer.stdoutText.contains("store reachable again") }, "\(trainer.stdoutText)")
        #expect(try Self.waitUntil(60) { try Self.committedStep(url) > before + 3 }, "no progress after the outage: \(trainer.stdoutText)")
        // One snapshot: every committed step is recorded, once.
        let snapshot = try PostgresConnection(url: url).execute("""
            SELECT (SELECT count(*) FROM amber.training_steps) AS n, (SELECT max(step) FROM amber.checkpoints) AS committed
            """)
        let committed = try snapshot.value(Int.self, column: "committed")
        #expect(try snapshot.value(Int.self, column: "n") == committed, "every committed step is recorded once")

        // SIGTERM: a last checkpoint, the run marked stopped, exit 0.
        kill(trainer.pid, SIGTERM)
        #expect(trainer.wait() == 0, "\(trainer.stderrText)")
        #expect(trainer.stdoutText.contains("stopped at step"))
        #expect(trainer.stderrText.contains("stopping after a last checkpoint"))
        let run = try PostgresConnection(url: url).execute("SELECT status, last_step FROM amber.training_runs WHERE name = 'main'")
        #expect(try run.value(String.self, column: "status") == "stopped")
        let last = try run.value(Int.self, column: "last_step")
        let finalCommit = try Self.committedStep(url)
        #expect(last >= committed && last == finalCommit)
        #expect(try PostgresConnection(url: url).execute("SELECT count(*) AS n FROM amber.training_steps").value(Int.self, column: "n") == last)
    }
}
