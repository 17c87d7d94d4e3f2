@testable import AmberStore
import AmberCatalog
@testable import AmberIngest
import AmberModel
import AmberTensor
import AmberTestSupport
import AmberTrain
import AmberStore
import Foundation
import Testing

@Suite("Continuous training on PostgreSQL (real PostgreSQL)")
struct PostgresTrainingStoreTests {
    /// A migrated database with a 16-image fixture ingested (14 train images = 70 pairs, 2 dev
    /// images = 10 pairs; float16 local features).
    static func database() throws -> (url: String, fixture: GlobalLocalFixture) {
        let url = try TestDatabase.fresh(migrated: true)
        let fixture = try GlobalLocalFixture(images: 16, regions: 3)
        try Ingestor.ingest(try DatasetReader.read(fixture.directory), into: try PostgresConnection(url: url))
        return (url, fixture)
    }

    static var configuration: ContinuousTrainer.Configuration {
        var c = ContinuousTrainer.Configuration()
        c.model.encoder.jointDimension = 8
        c.model.optimization.batchSize = 16
        c.model.optimization.learningRate = 3e-3
        c.model.optimization.warmupSteps = 5
        c.model.optimization.allNegativesSteps = 10
        c.model.optimization.decayEvery = 100_000
        c.model.memoryWeight = 0.5
        c.model.queueSize = 32
        c.model.momentum = 0.9
        c.model.prototypeWeight = 0.2
        c.model.prototypeCount = 4
        c.model.prototypeWarmupSteps = 5
        c.model.graphWeight = 0.5
        c.model.rerankDepth = 4
        c.checkpointEvery = 10
        c.evaluateEvery = 15
        c.keepCheckpoints = 2
        c.idleWait = 0.05
        c.retryDelay = 0.05
        return c
    }

    @Test func featuresComeBackAsIngestedFloat16Included() throws {
        let (url, fixture) = try Self.database()
        let store = PostgresTrainingStore(url: url)
        let page = try store.pairs(after: 0, limit: 7)
        #expect(page.pairs.map(\.pairID) == Array(1...7))
        #expect(page.pairs.allSatisfy { $0.split == .train })
        let image = try #require(page.features[page.pairs[0].imageID])
        let local = try NumpyFile.read(fixture.path("ims_local.npy")).tensor()     // float16 on disk
        #expect(image.localCount == 3 && image.localDimension == 6)
        #expect(image.local == Array(local.scalars.prefix(18)))
        let rest = try store.pairs(after: 7, limit: 1000)
        #expect(rest.pairs.count == 73 && rest.pairs.suffix(10).allSatisfy { $0.split == .dev })
        #expect(try store.pairs(after: 80, limit: 10).pairs.isEmpty)
    }

    @Test func aRunWritesCheckpointsBankStepsVersionsAndTheCursorThatTheAuditQueriesRead() throws {
        let (url, _) = try Self.database()
        var c = Self.configuration
        c.maximumSteps = 30
        var lines: [String] = []
        let summary = try ContinuousTrainer(configuration: c, store: PostgresTrainingStore(url: url)) { lines.append($0) }.run()
        #expect(summary.step == 30 && summary.trainPairs == 70 && summary.devPairs == 10 && summary.cursor == 80)
        let db = try PostgresConnection(url: url)
        let run = try db.execute("SELECT run_id, status, last_step FROM amber.training_runs WHERE name = 'main'")
        #expect(try run.value(String.self, column: "status") == "stopped" && run.value(Int.self, column: "last_step") == 30)
        #expect(try db.execute("SELECT step FROM amber.checkpoints ORDER BY step").column(Int.self) == [20, 30])
        #expect(try count(db, "amber.training_steps") == 30)
        #expect(try db.execute("SELECT count(*) AS n FROM amber.training_steps WHERE losses ? 'triplet' AND losses ? 'memory'")
            .value(Int.self, column: "n") > 0)
        // The bank holds both queues (32 slots each) in store ids, with the newest version.
        #expect(try count(db, "amber.memory_bank") == 64)
        let orphans = try db.execute("""
            SELECT count(*) AS n FROM amber.memory_bank b LEFT JOIN amber.pairs p ON p.pair_id = b.pair_id
            WHERE b.modality = 'text' AND (p.pair_id IS NULL OR p.text_id <> b.item_id OR p.image_id <> b.image_id)
            """)
        #expect(try orphans.value(Int.self, column: "n") == 0, "text slots point at their pair, text and image")
        // Versions at steps 15 and 30, each with 4 prototypes; the first promoted.
        let versions = try db.execute("SELECT version, step, status::text AS status, metrics->>'gate' AS gate FROM amber.models ORDER BY version")
        #expect(try versions.column(Int.self, 1) == [15, 30])
        #expect(try versions.value(String.self, row: 0, column: "gate") == "promoted: nothing served yet")
        #expect(try count(db, "amber.prototypes") == 8)
        #expect(try db.execute("SELECT model_version FROM amber.serving").value(Int64.self, column: "model_version")
                == summary.versionsPromoted.last)
        #expect(try db.execute("SELECT last_pair_id FROM amber.ingest_cursor WHERE consumer = 'trainer:main'").value(Int.self, column: "last_pair_id") == 80)
        let overview = try db.execute("SELECT step, pending_pairs, pairs_not_taken_in FROM amber.checkpoint_overview")
        #expect(try overview.value(Int.self, column: "step") == 30 && overview.value(Int.self, column: "pending_pairs") == 0
                && overview.value(Int.self, column: "pairs_not_taken_in") == 0)
        // The stored model file loads and is the one promoted.
        let model = try TrainedModel.read(bytes: try db.execute("SELECT parameters FROM amber.models WHERE version = 1").value([UInt8].self, column: "parameters"),
                                          name: "version 1")
        #expect(model.step == 15 && model.encoder.jointDimension == 8)

        // Every documented audit question answers, as the auditor, on the bank this run wrote.
        try db.executeScript("SET ROLE amber_auditor")
        for query in try AuditQueriesTests.documentedQueries() {
            do {
                _ = try db.execute(query)
            } catch {
                Issue.record("\(error)\nin:\n\(query)")
            }
        }
        let ambiguous = try db.execute("SELECT count(*) AS n FROM amber.ambiguous_entries WHERE neighbour_item_id IS NOT NULL")
        #expect(try ambiguous.value(Int.self, column: "n") == 64)
    }

    @Test func aResumeFromTheDatabaseEndsWhereAnUninterruptedRunDoes() throws {
        var c = Self.configuration
        c.maximumSteps = 30
        c.evaluateEvery = 1000
        let (reference, _) = try Self.database()
        _ = try ContinuousTrainer(configuration: c, store: PostgresTrainingStore(url: reference)).run()
        let (url, _) = try Self.database()
        #expect(throws: CrashingStore<PostgresTrainingStore>.Crash.self) {
            _ = try ContinuousTrainer(configuration: c, store: CrashingStore(PostgresTrainingStore(url: url), afterCommits: 1)).run()
        }
        var lines: [String] = []
        _ = try ContinuousTrainer(configuration: c, store: PostgresTrainingStore(url: url)) { lines.append($0) }.run()
        #expect(lines.first?.hasPrefix("resumed run main at step 10") == true, "\(lines.first ?? "")")
        func final(_ url: String) throws -> (state: Data, bank: [Float], losses: [Float]) {
            let db = try PostgresConnection(url: url)
            let state = Data(try db.execute("SELECT state FROM amber.checkpoints ORDER BY step DESC LIMIT 1").value([UInt8].self, column: "state"))
            let bank = try db.execute("SELECT embedding FROM amber.memory_bank ORDER BY modality, slot").column([Float].self).flatMap { $0 ?? [] }
            let losses = try db.execute("SELECT total_loss FROM amber.training_steps ORDER BY step").column(Float.self).map { $0 ?? .nan }
            return (state, bank, losses)
        }
        let a = try final(reference), b = try final(url)
        #expect(a.state == b.state, "same parameters, optimiser, queues and generators at step 30")
        #expect(a.bank == b.bank && a.losses == b.losses && a.losses.count == 30)
    }

    @Test func aBrokenConnectionIsTransientAndTheNextCallReconnects() throws {
        let (url, _) = try Self.database()
        let store = PostgresTrainingStore(url: url)
        _ = try store.openRun(name: "r", seed: 1, configuration: "{}")
        // Kill the store's backend from another session.
        let admin = try PostgresConnection(url: url)
        try admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
        do {
            _ = try store.pairs(after: 0, limit: 1)
            Issue.record("a terminated connection must fail once")
        } catch {
            #expect(store.isTransient(error), "\(error)")
        }
        #expect(try store.pairs(after: 0, limit: 1).pairs.count == 1, "the next call reconnects")
        #expect(!store.isTransient(PostgresError(code: "23505", message: "duplicate")))
    }
}
