import AmberCatalog
@testable import AmberModel
import AmberSearch
@testable import AmberServer
import AmberTestSupport
import Foundation
import Testing

@Suite("Query service: galleries grow, and are cached per model version")
struct GalleryRefreshTests {
    /// A store with the fixture's first `images` images and `texts` captions.
    static func store(images: Int, texts: Int) -> (MemoryServingStore, all: (images: [(GalleryItem, ItemFeatures)], texts: [(GalleryItem, ItemFeatures)])) {
        let all = SearchEngineFixture.features(SearchEngineFixture.data())
        let store = MemoryServingStore()
        store.model = (3, SearchEngineFixture.model(alpha: 0.7, beta: 10))
        store.images = Array(all.images.prefix(images))
        store.texts = Array(all.texts.prefix(texts))
        return (store, all)
    }

    /// Rankings of every image as a query, to compare engines.
    static func rankings(_ engine: SearchEngine, _ queries: [(GalleryItem, ItemFeatures)]) -> [[Int64]] {
        queries.map { engine.search($0.1, of: .image, options: SearchOptions(k: 30, rerank: 6)).map(\.item.itemID) }
    }

    @Test func newItemsJoinTheGalleryAndOnlyTheyAreEncoded() async throws {
        let (store, all) = Self.store(images: 16, texts: 40)
        let service = QueryService(store: store, textEncoder: nil)
        #expect(try await service.reload() == 3)
        #expect(store.featureRequests == [16, 40])
        let first = try #require(service.engine)
        #expect(try await service.reload() == 3)
        #expect(service.engine === first, "nothing new: the engine stays")
        #expect(store.featureRequests == [16, 40])

        store.lock.withLock { store.texts = all.texts }                // 24 captions arrive
        try await service.reload()
        let grown = try #require(service.engine)
        #expect(grown !== first && grown.texts.count == 64 && grown.images.count == 16)
        #expect(store.featureRequests.suffix(1) == [24], "only the new captions are encoded")
        // The grown engine ranks exactly as one built from scratch over the same items.
        let scratch = SearchEngine(model: store.model!.1, version: 3, images: all.images, texts: all.texts)
        #expect(Self.rankings(grown, all.images) == Self.rankings(scratch, all.images))
        #expect(first.texts.count == 40, "an engine a query holds is not changed")
        #expect(grown.images === first.images, "the gallery with nothing new is shared, not rebuilt")
    }

    @Test func aGrownGalleryIsAppendedToTheCacheAndARestartReadsItWhole() async throws {
        let directory = NSTemporaryDirectory() + "amber-serve-append-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let (store, all) = Self.store(images: 16, texts: 40)
        let cache = GalleryCache(directory: directory)
        let service = QueryService(store: store, textEncoder: nil, cache: cache)
        try await service.reload()
        let model = store.model!.1
        func cached(_ modality: Modality) -> GalleryEncoding? {
            cache.load(version: 3, modality: modality, fingerprint: GalleryCache.fingerprint(try! model.encoded()), dimension: 64,
                       withOffsets: (model.querybank?.beta ?? 0) > 0)
        }
        #expect(cached(.text)?.count == 40)
        for count in [41, 52, 64] {                                    // captions arrive in three batches
            store.lock.withLock { store.texts = Array(all.texts.prefix(count)) }
            try await service.reload()
            #expect(cached(.text)?.count == count)
        }
        #expect(cached(.text)?.itemIDs == all.texts.map(\.0.itemID))
        store.featureRequests = []
        let restarted = QueryService(store: store, textEncoder: nil, cache: cache)
        try await restarted.reload()
        #expect(store.featureRequests.isEmpty, "everything came from the cache: \(store.featureRequests)")
        let scratch = SearchEngine(model: model, version: 3, images: all.images, texts: all.texts)
        #expect(Self.rankings(try #require(restarted.engine), all.images) == Self.rankings(scratch, all.images))
    }

    @Test func aRestartedServiceReadsTheCacheAndANewModelDoesNot() async throws {
        let directory = NSTemporaryDirectory() + "amber-serve-cache-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let (store, all) = Self.store(images: 16, texts: 64)
        let cache = GalleryCache(directory: directory)
        let service = QueryService(store: store, textEncoder: nil, cache: cache)
        try await service.reload()
        #expect(Set(try FileManager.default.contentsOfDirectory(atPath: directory)) == ["v3-image.gallery", "v3-text.gallery"])
        let reference = Self.rankings(try #require(service.engine), all.images)

        // A restart: nothing to encode.
        store.featureRequests = []
        let restarted = QueryService(store: store, textEncoder: nil, cache: cache)
        try await restarted.reload()
        #expect(store.featureRequests.isEmpty, "no features read: \(store.featureRequests)")
        #expect(Self.rankings(try #require(restarted.engine), all.images) == reference)

        // A restart after two more images arrived: only they are encoded, and the cache grows.
        let extra = all.images.prefix(2).enumerated().map { offset, entry in
            (GalleryItem(itemID: 500 + Int64(offset), externalID: "late\(offset)", caption: nil), entry.1)
        }
        store.lock.withLock { store.images += extra }
        store.featureRequests = []
        let third = QueryService(store: store, textEncoder: nil, cache: cache)
        try await third.reload()
        #expect(store.featureRequests == [2], "the two new images only")
        #expect(cache.load(version: 3, modality: .image, fingerprint: GalleryCache.fingerprint(try store.model!.1.encoded()), dimension: 64,
                           withOffsets: (store.model!.1.querybank?.beta ?? 0) > 0)?.count == 18)

        // Another model under the same version number (another database): the cache is not used.
        store.lock.withLock { store.model = (3, SearchEngineFixture.model(alpha: 0.5, beta: 0)) }
        store.featureRequests = []
        let other = QueryService(store: store, textEncoder: nil, cache: cache)
        try await other.reload()
        #expect(store.featureRequests.sorted() == [18, 64])
        let scratch = SearchEngine(model: store.model!.1, version: 3, images: store.images, texts: store.texts)
        #expect(Self.rankings(try #require(other.engine), all.images) == Self.rankings(scratch, all.images))

        // A newer version: its files are written and the older versions' pruned (the previous kept).
        store.lock.withLock { store.model = (4, SearchEngineFixture.model(alpha: 0.7, beta: 10)) }
        try await other.reload()
        store.lock.withLock { store.model = (5, SearchEngineFixture.model(alpha: 0.7, beta: 10)) }
        try await other.reload()
        #expect(Set(try FileManager.default.contentsOfDirectory(atPath: directory))
                == ["v4-image.gallery", "v4-text.gallery", "v5-image.gallery", "v5-text.gallery"])
    }
}
