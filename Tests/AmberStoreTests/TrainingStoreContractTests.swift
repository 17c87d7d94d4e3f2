@testable import AmberStore
import AmberCatalog
import AmberModel
import AmberTensor
import AmberTestSupport
import AmberTrain
import AmberStore
import Foundation
import Testing

/// The contract of ``TrainingStore``, held by both implementations: the same catalogue in the
/// in-memory store and in PostgreSQL gives the same pages, the same runs, checkpoints, versions
/// and rejections — and a continuous trainer that cannot tell them apart.
@Suite("Training store contract (in memory and PostgreSQL)")
struct TrainingStoreContractTests {
    /// Both stores over one catalogue: the PostgreSQL fixture of ``PostgresTrainingStoreTests``
    /// and an in-memory copy of it (same pair order and features; its own item ids, mapped).
    struct Stores {
        let postgres: PostgresTrainingStore
        let url: String
        let memory: InMemoryTrainingStore
        /// PostgreSQL item id → in-memory item id.
        let itemInMemory: [Int64: Int64]
    }

    static func stores() throws -> Stores {
        let (url, _) = try PostgresTrainingStoreTests.database()
        let postgres = PostgresTrainingStore(url: url)
        let page = try postgres.pairs(after: 0, limit: 10_000)
        let memory = InMemoryTrainingStore()
        var mapped: [Int64: Int64] = [:]
        for pair in page.pairs {
            for id in [pair.imageID, pair.textID] where mapped[id] == nil {
                guard let features = page.features[id] else { continue }
                mapped[id] = memory.addItem(features)
            }
        }
        memory.addPairs(page.pairs.compactMap { pair in
            guard let image = mapped[pair.imageID], let text = mapped[pair.textID] else { return nil }
            return (image, text, pair.split)
        })
        return Stores(postgres: postgres, url: url, memory: memory, itemInMemory: mapped)
    }

    /// A page as the trainer sees it, with item ids replaced by their position of first use.
    static func shape(_ page: PairPage) -> [String] {
        var order: [Int64: Int] = [:]
        func position(_ id: Int64) -> Int {
            if let known = order[id] { return known }
            order[id] = order.count
            return order.count - 1
        }
        return page.pairs.map { pair in
            let image = page.features[pair.imageID], text = page.features[pair.textID]
            return "\(pair.pairID) \(pair.split) image \(position(pair.imageID)) \(image?.global.count ?? -1)+\(image?.localCount ?? -1)×\(image?.localDimension ?? -1) "
                + "text \(position(pair.textID)) \(text?.localCount ?? -1) \(image.map { $0.local.prefix(3).map { $0 } } ?? [])"
        }
    }

    @Test func bothStoresPageTheSamePairsWithTheSameFeatures() throws {
        let stores = try Self.stores()
        for (after, limit) in [(Int64(0), 7), (7, 30), (37, 1000), (80, 10)] {
            let a = try stores.postgres.pairs(after: after, limit: limit), b = try stores.memory.pairs(after: after, limit: limit)
            #expect(Self.shape(a) == Self.shape(b), "after \(after), limit \(limit)")
        }
        #expect(try stores.memory.pairs(after: 80, limit: 10).pairs.isEmpty && stores.postgres.pairs(after: 80, limit: 10).pairs.isEmpty)
    }

    @Test func runsCheckpointsVersionsAndServingBehaveAlike() throws {
        let stores = try Self.stores()
        func exercise(_ store: any TrainingStore) throws -> [String] {
            var lines: [String] = []
            let run = try store.openRun(name: "contract", seed: 7, configuration: "{}")
            lines.append("new run has a checkpoint: \(run.checkpoint != nil)")
            lines.append("serving before: \(try store.servingModel()?.version ?? -1)")
            let model = SearchEngineFixture.model(alpha: 1, beta: 0)
            let bytes = try model.encoded()
            for step in [10, 20, 30] {
                let version = step == 20
                    ? ModelVersionRecord(runID: run.runID, parentVersion: nil, step: step, configuration: "{}", model: bytes,
                                         metrics: #"{"rsum": 1}"#, prototypes: [], prototypeImageCounts: [], prototypeTextCounts: [])
                    : nil
                let written = try store.commit(CheckpointRecord(
                    runID: run.runID, step: step, state: [UInt8(step), 1, 2], cursor: Int64(step), sampler: #"{"s": \#(step)}"#,
                    pendingPairs: [], bank: [], steps: [], modelVersion: nil, newVersion: version, promote: step == 20, keep: 2,
                    feedbackCursor: Int64(step / 10)))
                lines.append("commit \(step) wrote version: \(written != nil)")
            }
            let reopened = try store.openRun(name: "contract", seed: 7, configuration: "{}")
            let checkpoint = try #require(reopened.checkpoint)
            lines.append("same run: \(reopened.runID == run.runID)")
            lines.append("newest: step \(checkpoint.step), state \(checkpoint.state), cursor \(checkpoint.cursor), sampler \(checkpoint.sampler), "
                         + "feedback \(checkpoint.feedbackCursor), has version \(checkpoint.modelVersion != nil)")
            let serving = try #require(try store.servingModel())
            lines.append("serving model bytes equal: \(serving.model == bytes)")
            try store.closeRun(run.runID, status: "stopped")
            return lines
        }
        let inMemory = try exercise(stores.memory), inPostgres = try exercise(stores.postgres)
        #expect(inMemory == inPostgres)
        #expect(inMemory.contains("newest: step 30, state [30, 1, 2], cursor 30, sampler {\"s\": 30}, feedback 3, has version false"), "\(inMemory)")
    }

    @Test func rejectionsComeBackAlike() throws {
        let stores = try Self.stores()
        let page = try stores.postgres.pairs(after: 0, limit: 15)          // three images' captions
        let db = try PostgresConnection(url: stores.url)
        // Users searching with the first two captions chose their own images and rejected others.
        var expected: [(query: Int64, rejected: [Int64])] = []
        for (index, pair) in page.pairs.prefix(2).enumerated() {
            let others = page.pairs.map(\.imageID).filter { $0 != pair.imageID }
            let rejected = Array(Set(others)).sorted().prefix(index + 1).map { $0 }
            _ = try FeedbackWriter.write(NewFeedback(query: .item(pair.textID), chosen: pair.imageID, rejected: Array(rejected)), on: db)
            stores.memory.addRejections(query: stores.itemInMemory[pair.textID]!, rejected: rejected.map { stores.itemInMemory[$0]! })
            expected.append((pair.textID, Array(rejected)))
        }
        let fromPostgres = try stores.postgres.rejections(after: 0, limit: 100)
        let fromMemory = try stores.memory.rejections(after: 0, limit: 100)
        let mappedPostgres = fromPostgres.rejections.map { "\($0.feedbackID) \(stores.itemInMemory[$0.queryItemID]!) \(stores.itemInMemory[$0.rejectedItemID]!)" }
        #expect(mappedPostgres == fromMemory.rejections.map { "\($0.feedbackID) \($0.queryItemID) \($0.rejectedItemID)" })
        #expect(fromPostgres.rejections.count == 3, "\(fromPostgres)")
        #expect(fromPostgres.cursor == fromMemory.cursor && fromPostgres.rowsRead == fromMemory.rowsRead, "\(fromPostgres) \(fromMemory)")
        #expect(try stores.postgres.rejections(after: fromPostgres.cursor, limit: 100).rejections.isEmpty
                && stores.memory.rejections(after: fromMemory.cursor, limit: 100).rejections.isEmpty)
    }

    @Test func aContinuousTrainerCannotTellTheStoresApart() throws {
        let stores = try Self.stores()
        var c = PostgresTrainingStoreTests.configuration
        c.maximumSteps = 30
        c.evaluateEvery = 1000      // evaluations record their pairs/s (a timing) in the state
        let a = try ContinuousTrainer(configuration: c, store: stores.memory).run()
        let b = try ContinuousTrainer(configuration: c, store: stores.postgres).run()
        #expect(a.step == b.step && a.trainPairs == b.trainPairs && a.devPairs == b.devPairs && a.cursor == b.cursor)
        #expect(a.versionsWritten.count == b.versionsWritten.count && a.versionsPromoted.count == b.versionsPromoted.count)
        let memoryState = try #require(stores.memory.runs.values.first?.checkpoints.last?.state)
        let postgresState = try #require(try stores.postgres.openRun(name: c.runName, seed: c.model.optimization.seed, configuration: "{}").checkpoint?.state)
        #expect(Data(memoryState) == Data(postgresState), "the same parameters, optimiser, queues and generators")
    }
}
