import AmberCatalog
@testable import AmberModel
import AmberSearch
@testable import AmberServer
import AmberStore
import AmberTestSupport
import Foundation
import Logging
import ServiceLifecycle
import Testing

/// PostgreSQL restarted under a running query service: searches keep answering from memory,
/// writes answer 503 with Retry-After while it is down, and recover by themselves.
// Part of the serialized HTTP suite: servers of concurrent suites interfered with each other's
// loopback connections here (intermittent refused connections), so all server tests run one at a time.
extension ServerTests {
    static var migrations: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path + "/migrations"
    }

    /// A cluster of this test's own (the shared test server stays up), migrated, with the
    /// fixture gallery stored. The caller stops it.
    static func database(_ name: String) throws -> (cluster: EmbeddedPostgres, db: PostgresConnection) {
        let cluster = EmbeddedPostgres(home: "/tmp/amber-\(name)-\(UUID().uuidString.prefix(8))", durability: .ephemeral)
        try cluster.start()
        let db = try PostgresConnection(url: cluster.url)
        try Migrator(directory: migrations).migrateUp(on: db)
        let (images, texts) = SearchEngineFixture.features(SearchEngineFixture.data())
        func item(_ entry: (GalleryItem, ItemFeatures), _ modality: Modality) -> NewItem {
            NewItem(modality: modality, externalID: entry.0.externalID, caption: entry.0.caption, features: ItemFeatures(global: entry.1.global,
                    local: entry.1.local, localCount: entry.1.localCount))
        }
        try ItemWriter.write(images.map { item($0, .image) } + texts.map { item($0, .text) }, on: db)
        return (cluster, db)
    }

    static func remove(_ cluster: EmbeddedPostgres) {
        try? cluster.stop()
        try? FileManager.default.removeItem(atPath: cluster.home)
    }

    @Test func searchesKeepAnsweringAndWritesWaitForTheDatabase() async throws {
        let (cluster, db) = try Self.database("restart")
        defer { Self.remove(cluster) }
        let model = SearchEngineFixture.model(alpha: 0.7, beta: 10)
        let version = try ModelRegistry.add(model: try model.encoded(), step: 0, configuration: "{}", metrics: "{}", on: db)
        try ModelRegistry.promote(version, on: db)

        let client = PostgresClient(url: cluster.url, maximumConnections: 2)
        let service = QueryService(store: PostgresServingStore(client: client), textEncoder: nil)
        #expect(try await service.reload() == version)
        let keys = try APIKeys(configuration: "admin:admin-key-0123456789")
        let admin = ["Authorization": "Bearer admin-key-0123456789"]
        let firstImage = try db.execute("SELECT min(item_id) AS i FROM amber.items WHERE modality = 'image'").value(Int64.self, column: "i")
        let search = "{\"item_id\": \(firstImage), \"k\": 3}"
        let newItem = #"{"items": [{"modality": "image", "external_id": "late.jpg", "features": {"global": [0,0,0,0,0,0,0,0,0,0,0,1], "local": [[0,0,0,0,0,0,0,0,0,0,0,1], [0,0,0,0,0,0,0,0,0,0,1,0]]}}]}"#
        try await withServer(service, keys: keys) { port in
            #expect(try http("POST", "/v1/search", port: port, body: search, headers: admin).status == 200)
            #expect(try http("GET", "/v1/models", port: port, headers: admin).status == 200)

            try cluster.stop()
            for _ in 0..<5 {
                #expect(try http("POST", "/v1/search", port: port, body: search, headers: admin).status == 200, "searches answer from memory")
            }
            let write = try http("POST", "/v1/items", port: port, body: newItem, headers: admin)
            #expect(write.status == 503 && write.headers["retry-after"] == "5", "\(write.status) \(write.body)")
            #expect(!write.body.contains("PostgreSQL") && !write.body.contains("socket"), "database errors stay in the log: \(write.body)")
            let read = try http("GET", "/v1/models", port: port, headers: admin)
            #expect(read.status == 503 && read.headers["retry-after"] == "5")

            try cluster.start()
            var status = 0
            for _ in 0..<10 where status != 200 {
                status = try http("POST", "/v1/items", port: port, body: newItem, headers: admin).status
                if status != 200 { usleep(200_000) }
            }
            #expect(status == 200, "writes recover by themselves once the database is back")
            #expect(try http("POST", "/v1/search", port: port, body: search, headers: admin).status == 200)
        }
        await client.shutdown()
    }

    @Test func aPromotionReachesTheServiceByNotifyAndSwapsTheEngine() async throws {
        let (cluster, db) = try Self.database("swap")
        defer { Self.remove(cluster) }
        let first = try ModelRegistry.add(model: try SearchEngineFixture.model(alpha: 1, beta: 0).encoded(), step: 0, configuration: "{}", metrics: "{}", on: db)
        let second = try ModelRegistry.add(model: try SearchEngineFixture.model(alpha: 0.5, beta: 10).encoded(), step: 1, configuration: "{}", metrics: "{}", on: db)
        try ModelRegistry.promote(first, on: db)
        let client = PostgresClient(url: cluster.url, maximumConnections: 2)
        let service = QueryService(store: PostgresServingStore(client: client), textEncoder: nil)
        var watcher = ModelWatcher(service: service, feed: PostgresChangeFeed(url: cluster.url), logger: Logger(label: "test"))
        watcher.retryDelay = 1
        let task = Task { [watcher] in try await watcher.run() }
        func waitFor(_ version: Int64) async -> Bool {
            for _ in 0..<100 {
                if service.engine?.version == version { return true }
                try? await Task.sleep(for: .milliseconds(50))
            }
            return false
        }
        #expect(await waitFor(first), "the watcher loads the promoted model at start")
        let before = try #require(service.engine)
        try ModelRegistry.promote(second, on: db)            // another process's promotion: NOTIFY only
        #expect(await waitFor(second), "the promotion swaps the engine")
        #expect(before.version == first && before.images.count == 16, "an engine a query already holds stays whole")
        #expect(service.engine?.model.localStage?.ranking.alpha == 0.5)

        // Items that arrive with a pair (NOTIFY amber_new_pairs) join the galleries of the model in service.
        let (images, texts) = SearchEngineFixture.features(SearchEngineFixture.data())
        try ItemWriter.write([NewItem(modality: .image, externalID: "late.jpg", caption: nil, features: ItemFeatures(global: images[0].1.global,
                                      local: images[0].1.local, localCount: 3)),
                              NewItem(modality: .text, externalID: "late-caption", caption: "a late caption", features: ItemFeatures(global: texts[0].1.global,
                                      local: texts[0].1.local, localCount: texts[0].1.localCount))], on: db)
        try ItemWriter.write([NewPair(image: "late.jpg", text: "late-caption", split: .train)], on: db)
        var grown = false
        for _ in 0..<100 where !grown {
            grown = service.engine?.images.count == 17 && service.engine?.texts.count == 65
            if !grown { try? await Task.sleep(for: .milliseconds(50)) }
        }
        #expect(grown, "the new items are searchable without a new model")
        #expect(service.engine?.version == second)
        let late = try db.execute("SELECT item_id FROM amber.items WHERE external_id = 'late.jpg'").value(Int64.self, column: "item_id")
        #expect(service.engine?.images.position(of: late) == 16)
        task.cancel()
        _ = try? await task.value
        await client.shutdown()
    }

    @Test func aGracefulShutdownStopsTheWatcherWhileItWaitsForNotifications() async throws {
        let (cluster, db) = try Self.database("shutdown")
        defer { Self.remove(cluster) }
        let version = try ModelRegistry.add(model: try SearchEngineFixture.model(alpha: 1, beta: 0).encoded(), step: 0, configuration: "{}", metrics: "{}", on: db)
        try ModelRegistry.promote(version, on: db)
        let client = PostgresClient(url: cluster.url, maximumConnections: 2)
        let service = QueryService(store: PostgresServingStore(client: client), textEncoder: nil)
        let watcher = ModelWatcher(service: service, feed: PostgresChangeFeed(url: cluster.url), logger: Logger(label: "test"))
        let group = ServiceGroup(configuration: ServiceGroupConfiguration(services: [.init(service: watcher)], logger: Logger(label: "test")))
        let running = Task { try await group.run() }
        for _ in 0..<100 where service.engine == nil { try await Task.sleep(for: .milliseconds(50)) }
        #expect(service.engine?.version == version)
        try await Task.sleep(for: .milliseconds(200))          // now inside the wait for a notification
        let started = Date()
        await group.triggerGracefulShutdown()
        // The group ends by itself (SIGTERM to `amber serve` takes this path); a watcher that
        // ignored the shutdown would keep it waiting — cancel after 10 s to keep the suite bounded.
        let stopped = await withTaskGroup(of: Bool.self) { race in
            race.addTask { (try? await running.value) != nil || true }
            race.addTask { try? await Task.sleep(for: .seconds(10)); return false }
            let first = await race.next()!
            if !first { running.cancel() }               // the group's task, so that the race can end
            race.cancelAll()
            return first
        }
        #expect(stopped && Date().timeIntervalSince(started) < 5, "stopped \(stopped) after \(Date().timeIntervalSince(started)) s")
        await client.shutdown()
    }
}
