import AmberCatalog
@testable import AmberIngest
@testable import AmberStore
import AmberTensor
import Foundation
import Testing

/// `amber train --continuous` killed with SIGKILL at random points, again and again, while
/// pairs keep arriving: every restart resumes from the last committed checkpoint, the database
/// never holds a half-written checkpoint, and every ingested pair is eventually trained on.
@Suite("Continuous training survives SIGKILL (real PostgreSQL, real process)")
struct ContinuousTrainingCrashTests {
    static let arguments = [
        "train", "--continuous", "--dimension", "8", "--batch-size", "16", "--learning-rate", "0.003",
        "--memory-weight", "0.5", "--queue-size", "32", "--prototype-weight", "0.2", "--prototypes", "4", "--graph-weight", "0.5",
        "--checkpoint-every", "3", "--version-every", "7", "--rerank-depth", "4",
    ]

    struct Committed: Equatable {
        var step: Int
        var modelVersion: Int64?
    }

    static func committed(_ db: PostgresConnection) throws -> Committed? {
        let row = try db.execute("SELECT step, model_version FROM amber.checkpoints ORDER BY step DESC LIMIT 1")
        guard row.rowCount == 1 else { return nil }
        return Committed(step: try row.value(Int.self, column: "step"), modelVersion: try row.decode(Int64.self, row: 0, column: "model_version"))
    }

    /// What must hold after any crash: steps 1…S recorded once each for the committed step S,
    /// no bank entry newer than S or written by a version newer than the checkpoint's, the
    /// run's progress at S, the trainer's cursor at the checkpoint's.
    static func checkInvariants(_ db: PostgresConnection, _ state: Committed, context: String) throws {
        let steps = try db.execute("SELECT count(*) AS n, coalesce(max(step), 0) AS top FROM amber.training_steps")
        #expect(try steps.value(Int.self, column: "n") == state.step && steps.value(Int.self, column: "top") == state.step, "\(context)")
        let bank = try db.execute("""
            SELECT count(*) FILTER (WHERE enqueued_step >= $1) AS newer,
                   count(*) FILTER (WHERE model_version > $2) AS ahead,
                   count(*) AS total
            FROM amber.memory_bank
            """, [.int(Int64(state.step)), .int(state.modelVersion ?? 0)])
        #expect(try bank.value(Int.self, column: "newer") == 0 && bank.value(Int.self, column: "ahead") == 0, "\(context)")
        #expect(try bank.value(Int.self, column: "total") <= 64, "\(context)")
        #expect(try db.execute("SELECT last_step FROM amber.training_runs WHERE name = 'main'").value(Int.self, column: "last_step") == state.step, "\(context)")
        let cursors = try db.execute("""
            SELECT c.pair_cursor, i.last_pair_id FROM amber.checkpoints c, amber.ingest_cursor i
            WHERE i.consumer = 'trainer:main' ORDER BY c.step DESC LIMIT 1
            """)
        #expect(try cursors.value(Int.self, column: "pair_cursor") == cursors.value(Int.self, column: "last_pair_id"), "\(context)")
    }

    @Test func twentyKillsLoseNoCommittedStepAndNoPair() throws {
        let url = try TestDatabase.fresh(migrated: true)
        let db = try PostgresConnection(url: url)
        // Five chunks of 8 images (7 train + 1 dev each); the first is there from the start, the
        // others arrive while the trainer is being killed and restarted.
        let chunks = try (0..<5).map { try GlobalLocalFixture(images: 8, regions: 3, seed: UInt64(10 + $0), prefix: "chunk\($0)-") }
        try Ingestor.ingest(try DatasetReader.read(chunks[0].directory), into: db)
        var generator = RandomGenerator(seed: 2026)
        var environment = ProcessInfo.processInfo.environment
        environment["AMBER_DATABASE_URL"] = url
        var resumes = 0
        var previous: Committed?
        for attempt in 0..<20 {
            if attempt % 5 == 2 { try Ingestor.ingest(try DatasetReader.read(chunks[1 + attempt / 5].directory), into: db) }
            let before = try Self.committed(db)
            let process = try AmberProcess.launch(Self.arguments, environment: environment)
            // Every fourth kill lands during start-up; the others once training runs, somewhere
            // in the next few checkpoints (commits included).
            if attempt % 4 != 3 {
                let deadline = Date().addingTimeInterval(30)
                while Date() < deadline && !process.stdoutText.contains("model started") && !process.stdoutText.contains("resumed run") {
                    usleep(10_000)
                }
            }
            usleep(UInt32(20_000 + generator.nextInt(below: 600_000)))
            kill(process.pid, SIGKILL)
            let status = process.wait()
            #expect(status == 128 + SIGKILL, "attempt \(attempt): the trainer exited by itself (\(status)): \(process.stderrText)")
            let after = try Self.committed(db)
            if let before, let line = process.stdoutText.split(separator: "\n").first(where: { $0.contains("resumed run main at step") }) {
                #expect(line.contains("resumed run main at step \(before.step):"), "attempt \(attempt): \(line) after a commit at \(before.step)")
                resumes += 1
            }
            if let after {
                #expect(after.step >= (previous?.step ?? 0), "attempt \(attempt): the committed step went back")
                try Self.checkInvariants(db, after, context: "after kill \(attempt)")
                previous = after
            }
        }
        print("crash test: 20 SIGKILLs, \(resumes) restarts resumed from the committed step, last commit at step \(previous?.step ?? 0)")
        #expect(resumes >= 12, "most restarts must get as far as resuming (\(resumes) did)")
        #expect((previous?.step ?? 0) > 30, "the runs must make progress between kills")

        // A last, uninterrupted run to 40 steps past the last commit: every pair taken in, every
        // train pair trained on.
        let final = (previous?.step ?? 0) + 40
        let last = try AmberProcess.launch(Self.arguments + ["--steps", "\(final)"], environment: environment)
        #expect(last.wait() == 0, "\(last.stderrText)")
        let overview = try db.execute("SELECT step, pending_pairs, pairs_not_taken_in, pair_cursor FROM amber.checkpoint_overview")
        #expect(try overview.value(Int.self, column: "step") == final)
        #expect(try overview.value(Int.self, column: "pending_pairs") == 0 && overview.value(Int.self, column: "pairs_not_taken_in") == 0)
        #expect(try overview.value(Int64.self, column: "pair_cursor") == db.execute("SELECT max(pair_id) AS m FROM amber.pairs").value(Int64.self, column: "m"))
        #expect(try count(db, "amber.pairs") == 5 * 40)
        try Self.checkInvariants(db, try #require(try Self.committed(db)), context: "final")
        #expect(last.stdoutText.contains("stopped at step \(final)"))
    }
}
