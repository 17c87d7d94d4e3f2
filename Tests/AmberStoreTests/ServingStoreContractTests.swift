import AmberCatalog
import AmberModel
import AmberSearch
import AmberServer
import AmberStore
import AmberTensor
import AmberTestSupport
import Foundation
import Testing

/// The contract of ``ServingStore``, held by both implementations: the same writes to the
/// in-memory store and to PostgreSQL give the same answers, the same errors (naming the same
/// field) and the same reads — galleries, features, pictures, model versions and promotions.
@Suite("Serving store contract (in memory and PostgreSQL)")
struct ServingStoreContractTests {
    /// Everything a store tells about itself, with item ids replaced by their rank (PostgreSQL's
    /// identity values may skip after a refused write; the order is the contract).
    static func snapshot(_ store: any ServingStore) async throws -> [String] {
        var lines: [String] = []
        for modality in Modality.allCases {
            let catalog = try await store.galleryCatalog(modality)
            let rank = Dictionary(uniqueKeysWithValues: catalog.enumerated().map { ($1.itemID, $0) })
            lines += catalog.map { "\(modality) #\(rank[$0.itemID]!) \($0.externalID) \($0.caption ?? "-") labels \($0.labels)" }
            // Features of every other item (and an id no item has), by item id.
            let asked = catalog.enumerated().filter { $0.offset % 2 == 0 }.map(\.element.itemID) + [987_654_321]
            for (id, features) in try await store.galleryFeatures(modality, ids: asked) {
                lines.append("features #\(rank[id]!) \(features.global) \(features.localCount)×\(features.localDimension) \(features.local.prefix(4))")
            }
            for item in catalog {
                if let picture = try await store.itemImage(item.itemID) { lines.append("picture #\(rank[item.itemID]!) \(picture.width)×\(picture.height) \(picture.bytes)") }
            }
        }
        for version in try await store.modelVersions(limit: 10) {
            lines.append("version \(version.version) step \(version.step) \(version.status) promoted \(version.promotedAt != nil) rsum \(version.rsum.map { "\($0)" } ?? "-") gate \(version.gate ?? "-")")
        }
        lines.append("serving \(try await store.servingModel()?.version.description ?? "none")")
        lines.append("bank \(try await store.bankSummary().count)")
        return lines
    }

    /// A sequence of writes, good and bad, and what each answered.
    static func exercise(_ store: any ServingStore, addModel: ([UInt8], Int, Double?, String?) throws -> Int64) async throws -> [String] {
        var log: [String] = []
        func record(_ name: String, _ body: () async throws -> String) async {
            do { log.append("\(name): \(try await body())") } catch let error as ItemWriteError {
                log.append("\(name): ItemWriteError \(error.field) — \(error.description)")
            } catch let error as RegistryError {
                log.append("\(name): RegistryError \(error.description)")
            } catch let error as UnservableModelError {
                log.append("\(name): UnservableModelError \(error.version)")
            } catch {
                log.append("\(name): \(type(of: error))")
            }
        }
        func image(_ id: String, global: [Float] = [1, 2, 3], thumbnail: StoredImage? = nil) -> NewItem {
            NewItem(modality: .image, externalID: id, caption: nil,
                    features: ItemFeatures(global: global, local: [1, 0, 0, 1, 2, 2], localCount: 3), thumbnail: thumbnail)
        }
        func text(_ id: String, _ caption: String, local: [Float] = [0.5, 1, 1.5, 2]) -> NewItem {
            NewItem(modality: .text, externalID: id, caption: caption, features: ItemFeatures(global: [3, 4], local: local, localCount: 2))
        }
        let picture = StoredImage(width: 4, height: 3, bytes: [0xFF, 0xD8, 0xFF, 0xD9])
        await record("items") { "\(try await store.addItems([image("a.jpg", thumbnail: picture), image("b.jpg"), text("a#0", "a dog"), text("b#0", "a cat")]))" }
        await record("items again, one new") { "\(try await store.addItems([image("a.jpg", thumbnail: nil), text("a#1", "a dog running")]))" }
        // A different picture for a stored photo is not taken: the item keeps what it has.
        await record("thumbnail of a stored photo") { "\(try await store.addItems([image("a.jpg", thumbnail: StoredImage(width: 9, height: 9, bytes: [1]))]))" }
        // Wrong dimensions: refused, naming the entry; the good item before it is not stored either.
        await record("global of other width") { "\(try await store.addItems([image("c.jpg"), image("d.jpg", global: [1, 2])]))" }
        await record("local of other width") { "\(try await store.addItems([text("c#0", "a bird"), text("d#0", "a fish", local: [1, 2, 3, 4, 5, 6])]))" }
        // Labels: given with new items and added to stored ones (a union: none is removed); a
        // refused batch adds none.
        func labelled(_ item: NewItem, _ labels: [String]) -> NewItem { var item = item; item.labels = labels; return item }
        await record("labels") { "\(try await store.addItems([labelled(image("e.jpg"), ["dog", "animal", "dog"]), labelled(text("e#0", "a dog"), ["dog"])]))" }
        await record("labels added to stored items") { "\(try await store.addItems([labelled(image("e.jpg"), ["pet"]), labelled(image("a.jpg"), ["dog"])]))" }
        await record("labels of a refused batch") { "\(try await store.addItems([labelled(image("b.jpg"), ["never"]), image("f.jpg", global: [1, 2])]))" }
        await record("pairs") { "\(try await store.addPairs([NewPair(image: "a.jpg", text: "a#0", split: .train), NewPair(image: "b.jpg", text: "b#0", split: .dev)]))" }
        await record("pairs again, one new") { "\(try await store.addPairs([NewPair(image: "a.jpg", text: "a#0", split: .dev), NewPair(image: "a.jpg", text: "a#1", split: .train)]))" }
        await record("pair of an unknown image") { "\(try await store.addPairs([NewPair(image: "b.jpg", text: "a#1", split: .train), NewPair(image: "zz.jpg", text: "a#0", split: .train)]))" }
        await record("pair of an unknown text") { "\(try await store.addPairs([NewPair(image: "a.jpg", text: "zz", split: .train)]))" }
        await record("a text named as the image") { "\(try await store.addPairs([NewPair(image: "a#0", text: "a#0", split: .train)]))" }
        await record("the refused batch wrote nothing") { "\(try await store.addPairs([NewPair(image: "b.jpg", text: "a#1", split: .train)]))" }

        let good = try SearchEngineFixture.model(alpha: 1, beta: 0).encoded()
        let first = try addModel(good, 100, 280.5, "passed")
        let second = try addModel(good, 200, nil, nil)
        let broken = try addModel([1, 2, 3], 300, nil, nil)
        await record("promote the first") { try await store.promote(first); return "ok" }
        await record("promote the second") { try await store.promote(second); return "ok" }
        await record("promote a broken file") { try await store.promote(broken); return "ok" }
        await record("promote an unknown version") { try await store.promote(broken + 41); return "ok" }
        return log
    }

    @Test func bothStoresAnswerAlike() async throws {
        let url = try TestDatabase.fresh(migrated: true)
        let client = PostgresClient(url: url, maximumConnections: 2)
        let postgres = PostgresServingStore(client: client)
        let memory = InMemoryServingStore()
        #expect(try await Self.snapshot(postgres) == Self.snapshot(memory), "empty stores")

        let db = try PostgresConnection(url: url)
        let postgresLog = try await Self.exercise(postgres) { bytes, step, rsum, gate in
            let metrics = "{" + [rsum.map { "\"rsum\": \($0)" }, gate.map { "\"gate\": \"\($0)\"" }].compactMap { $0 }.joined(separator: ", ") + "}"
            return try ModelRegistry.add(model: bytes, step: step, configuration: "{}", metrics: metrics, on: db)
        }
        let memoryLog = try await Self.exercise(memory) { bytes, step, rsum, gate in memory.addModel(bytes, step: step, rsum: rsum, gate: gate) }
        #expect(postgresLog == memoryLog)
        let postgresState = try await Self.snapshot(postgres), memoryState = try await Self.snapshot(memory)
        #expect(postgresState == memoryState)

        // What the writes must have left, stated once (so the two cannot agree on a wrong answer).
        #expect(memoryLog.contains("items: (added: 4, existing: 0)"))
        #expect(memoryLog.contains("items again, one new: (added: 1, existing: 1)"))
        #expect(memoryLog.contains { $0.hasPrefix("global of other width: ItemWriteError items[1].features.global") })
        #expect(memoryLog.contains { $0.hasPrefix("local of other width: ItemWriteError items[1].features.local") })
        #expect(memoryLog.contains("pairs again, one new: (added: 1, existing: 1)"))
        #expect(memoryLog.contains { $0.hasPrefix("pair of an unknown image: ItemWriteError pairs[1].image") })
        #expect(memoryLog.contains { $0.hasPrefix("pair of an unknown text: ItemWriteError pairs[0].text") })
        #expect(memoryLog.contains { $0.hasPrefix("a text named as the image: ItemWriteError pairs[0].image") })
        #expect(memoryLog.contains("the refused batch wrote nothing: (added: 1, existing: 0)"))
        #expect(memoryLog.contains("promote a broken file: UnservableModelError 3"))
        #expect(memoryLog.contains { $0.hasPrefix("promote an unknown version: RegistryError model version 44 does not exist") })
        #expect(memoryLog.contains("labels: (added: 2, existing: 0)"))
        #expect(memoryLog.contains("labels added to stored items: (added: 0, existing: 2)"))
        #expect(memoryLog.contains { $0.hasPrefix("labels of a refused batch: ItemWriteError items[1].features.global") })
        #expect(memoryState.filter { $0.hasPrefix("image #") } == ["image #0 a.jpg - labels [\"dog\"]", "image #1 b.jpg - labels []",
                                                                   "image #2 e.jpg - labels [\"animal\", \"dog\", \"pet\"]"])
        #expect(memoryState.filter { $0.hasPrefix("text #") } == ["text #0 a#0 a dog labels []", "text #1 b#0 a cat labels []", "text #2 a#1 a dog running labels []",
                                                                  "text #3 e#0 a dog labels [\"dog\"]"])
        #expect(memoryState.filter { $0.hasPrefix("picture") } == ["picture #0 4×3 [255, 216, 255, 217]"])
        #expect(memoryState.filter { $0.hasPrefix("version") } == [
            "version 3 step 300 candidate promoted false rsum - gate -",
            "version 2 step 200 promoted promoted true rsum - gate -",
            "version 1 step 100 retired promoted true rsum 280.5 gate passed",
        ])
        #expect(memoryState.contains("serving 2"))
    }
}
