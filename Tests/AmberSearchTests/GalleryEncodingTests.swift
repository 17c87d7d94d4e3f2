import AmberCatalog
import AmberModel
@testable import AmberSearch
import AmberTensor
import AmberTestSupport
import Foundation
import Testing

@Suite("Gallery encodings and their cache")
struct GalleryEncodingTests {
    static func fixture() -> (TrainedModel, images: [(GalleryItem, ItemFeatures)], texts: [(GalleryItem, ItemFeatures)]) {
        let (images, texts) = SearchEngineFixture.features(SearchEngineFixture.data())
        return (SearchEngineFixture.model(alpha: 0.6, beta: 10), images, texts)
    }

    /// Fragments of one row.
    static func fragments(_ encoding: GalleryEncoding, _ row: Int) -> [Float] {
        let starts = encoding.fragmentStarts
        return Array(encoding.fragments[(starts[row] * encoding.dimension) ..< (starts[row + 1] * encoding.dimension)])
    }

    @Test func fragmentsAreRaggedSoOneWideItemCostsOnlyItsOwnRows() {
        let (model, images, texts) = Self.fixture()
        // One text with 200 tokens among 2–4-token ones: the encoding holds Σ n_i rows, not G × 200.
        var generator = RandomGenerator(seed: 5)
        let wide = ItemFeatures(global: texts[0].1.global, local: Tensor.randomNormal([200, 8], using: &generator).scalars, localCount: 200)
        let entries = texts.map { ($0.0.itemID, $0.1) } + [(Int64(9999), wide)]
        let encoding = GalleryEncoding.encode(entries, of: .text, model: model)
        let rows = entries.reduce(0) { $0 + $1.1.localCount }
        #expect(encoding.fragments.count == rows * encoding.dimension)
        #expect(encoding.fragments.count < 2 * (texts.count * 4 + 200) * encoding.dimension)
        // And the wide item is encoded exactly as it would be alone.
        let alone = GalleryEncoding.encode([(Int64(9999), wide)], of: .text, model: model)
        #expect(zip(Self.fragments(encoding, entries.count - 1), alone.fragments).allSatisfy { abs($0 - $1) < 1e-5 })
        // Stage 2 on it ranks as a search that re-encodes it.
        let engine = SearchEngine(model: model, version: 1, images: (images.map(\.0), GalleryEncoding.encode(images.map { ($0.0.itemID, $0.1) }, of: .image, model: model)),
                                  texts: (entries.map { GalleryItem(itemID: $0.0, externalID: "t\($0.0)", caption: "c") }, encoding))
        let byItem = engine.search(itemAt: entries.count - 1, of: .text, options: SearchOptions(k: 5, rerank: 5))
        let byFeatures = engine.search(wide, of: .text, options: SearchOptions(k: 5, rerank: 5))
        #expect(byItem.map(\.item) == byFeatures.map(\.item))
        #expect(zip(byItem, byFeatures).allSatisfy { abs(($0.local ?? 0) - ($1.local ?? 0)) < 1e-4 })
    }

    @Test func encodingInPiecesAndJoiningEqualsEncodingAtOnce() {
        let (model, _, texts) = Self.fixture()
        let entries = texts.map { ($0.0.itemID, $0.1) }
        let whole = GalleryEncoding.encode(entries, of: .text, model: model, chunkSize: 7)
        // Pieces of different widths (2–4 tokens), joined, then put back in the original order.
        let odd = entries.enumerated().filter { $0.offset % 3 == 1 }.map(\.element)
        let rest = entries.enumerated().filter { $0.offset % 3 != 1 }.map(\.element)
        let joined = GalleryEncoding.concatenate([GalleryEncoding.encode(rest, of: .text, model: model),
                                                  GalleryEncoding.encode(odd, of: .text, model: model)],
                                                 dimension: whole.dimension, withOffsets: true)
        let position = Dictionary(joined.itemIDs.enumerated().map { ($1, $0) }, uniquingKeysWith: { a, _ in a })
        let reordered = joined.rows(whole.itemIDs.map { position[$0]! })
        #expect(reordered.itemIDs == whole.itemIDs && reordered.fragmentCounts == whole.fragmentCounts)
        #expect(zip(reordered.fused, whole.fused).allSatisfy { abs($0 - $1) < 1e-5 })
        #expect(zip(reordered.offsets!, whole.offsets!).allSatisfy { abs($0 - $1) < 1e-4 }, "offsets are per item")
        for row in 0..<whole.count {
            #expect(zip(Self.fragments(reordered, row), Self.fragments(whole, row)).allSatisfy { abs($0 - $1) < 1e-5 }, "row \(row)")
        }
        // The engine built from the joined encoding ranks as the one that encoded everything.
        let (_, images, _) = Self.fixture()
        let direct = SearchEngine(model: model, version: 1, images: images, texts: texts)
        let rebuilt = SearchEngine(model: model, version: 1, images: (images.map(\.0), direct.images.encoding),
                                   texts: (texts.map(\.0), reordered))
        for query in 0..<images.count {
            let a = direct.search(images[query].1, of: .image, options: SearchOptions(k: 20, rerank: 5))
            let b = rebuilt.search(images[query].1, of: .image, options: SearchOptions(k: 20, rerank: 5))
            #expect(a.map(\.item) == b.map(\.item))
        }
    }

    @Test func theCacheRoundTripsAndRefusesAnotherModel() throws {
        let (model, images, _) = Self.fixture()
        let directory = NSTemporaryDirectory() + "amber-gallery-cache-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let cache = GalleryCache(directory: directory)
        let encoding = GalleryEncoding.encode(images.map { ($0.0.itemID, $0.1) }, of: .image, model: model)
        let fingerprint = GalleryCache.fingerprint(try model.encoded())
        #expect(cache.load(version: 3, modality: .image, fingerprint: fingerprint, dimension: 64, withOffsets: true) == nil, "nothing cached yet")
        try cache.store(encoding, version: 3, modality: .image, fingerprint: fingerprint)
        let loaded = try #require(cache.load(version: 3, modality: .image, fingerprint: fingerprint, dimension: 64, withOffsets: true))
        #expect(loaded.itemIDs == encoding.itemIDs && loaded.fused == encoding.fused && loaded.offsets == encoding.offsets
                && loaded.fragments == encoding.fragments && loaded.fragmentCounts == encoding.fragmentCounts)
        #expect(cache.load(version: 3, modality: .image, fingerprint: "0", dimension: 64, withOffsets: true) == nil, "another model under the same version is a miss")
        #expect(cache.load(version: 4, modality: .image, fingerprint: fingerprint, dimension: 64, withOffsets: true) == nil)
        #expect(cache.load(version: 3, modality: .image, fingerprint: fingerprint, dimension: 32, withOffsets: true) == nil, "another dimension is a miss")
        #expect(cache.load(version: 3, modality: .image, fingerprint: fingerprint, dimension: 64, withOffsets: false) == nil, "offsets the model does not have")
        #expect(cache.load(version: 3, modality: .text, fingerprint: fingerprint, dimension: 64, withOffsets: true) == nil)
        // A damaged manifest, or a file shorter than the manifest says, is a miss, not a crash.
        let gallery = cache.path(version: 3, modality: .image)
        let manifest = try Data(contentsOf: URL(fileURLWithPath: gallery + "/manifest.json"))
        try Data("not a manifest".utf8).write(to: URL(fileURLWithPath: gallery + "/manifest.json"))
        #expect(cache.load(version: 3, modality: .image, fingerprint: fingerprint, dimension: 64, withOffsets: true) == nil)
        try manifest.write(to: URL(fileURLWithPath: gallery + "/manifest.json"))
        let fused = try Data(contentsOf: URL(fileURLWithPath: gallery + "/fused.f32"))
        try fused.prefix(fused.count - 4).write(to: URL(fileURLWithPath: gallery + "/fused.f32"))
        #expect(cache.load(version: 3, modality: .image, fingerprint: fingerprint, dimension: 64, withOffsets: true) == nil)
        // Pruning keeps the versions asked for, and removes files of the single-file format.
        try Data("old".utf8).write(to: URL(fileURLWithPath: directory + "/v5-image.safetensors"))
        try cache.store(encoding, version: 5, modality: .image, fingerprint: fingerprint)
        try cache.store(encoding, version: 12, modality: .text, fingerprint: fingerprint)
        let removed = cache.prune(keeping: [5])
        #expect(Set(removed.map { ($0 as NSString).lastPathComponent }) == ["v3-image.gallery", "v12-text.gallery", "v5-image.safetensors"])
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory) == ["v5-image.gallery"])
    }

    @Test func fingerprintsAreFNV1a() {
        #expect(GalleryCache.fingerprint([]) == "cbf29ce484222325")
        #expect(GalleryCache.fingerprint(Array("a".utf8)) == "af63dc4c8601ec8c")   // published FNV-1a 64 test vector
    }

    @Test func aGrowingGalleryAppendsToItsCacheAndACrashedAppendLeavesThePreviousCount() throws {
        let (model, images, _) = Self.fixture()
        let directory = NSTemporaryDirectory() + "amber-gallery-append-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let cache = GalleryCache(directory: directory)
        let fingerprint = GalleryCache.fingerprint(try model.encoded())
        let all = GalleryEncoding.encode(images.map { ($0.0.itemID, $0.1) }, of: .image, model: model)
        let first = all.rows(Array(0..<10)), second = all.rows(Array(10..<13)), third = all.rows(Array(13..<all.count))
        func load() -> GalleryEncoding? { cache.load(version: 1, modality: .image, fingerprint: fingerprint, dimension: 64, withOffsets: all.offsets != nil) }
        #expect(try !cache.append(second, after: 10, version: 1, modality: .image, fingerprint: fingerprint), "no cache yet: nothing appended")
        try cache.store(first, version: 1, modality: .image, fingerprint: fingerprint)
        #expect(try !cache.append(second, after: 9, version: 1, modality: .image, fingerprint: fingerprint), "a cache of another length is not appended to")
        #expect(try !cache.append(second, after: 10, version: 1, modality: .image, fingerprint: "0"), "nor one of another model")
        #expect(load()?.count == 10)
        #expect(try cache.append(second, after: 10, version: 1, modality: .image, fingerprint: fingerprint))
        // A crash in the middle of the next append: bytes written past the valid rows, manifest not replaced.
        let gallery = cache.path(version: 1, modality: .image)
        for name in ["item_ids.i64", "fused.f32", "fragments.f32"] {
            let handle = try #require(FileHandle(forWritingAtPath: gallery + "/" + name))
            handle.seekToEndOfFile()
            handle.write(Data(repeating: 0xFF, count: 100))
            try handle.close()
        }
        let afterCrash = try #require(load())
        #expect(afterCrash.count == 13 && afterCrash.itemIDs == Array(all.itemIDs.prefix(13)))
        #expect(try cache.append(third, after: 13, version: 1, modality: .image, fingerprint: fingerprint))
        let grown = try #require(load())
        #expect(grown.itemIDs == all.itemIDs && grown.fused == all.fused && grown.offsets == all.offsets
                && grown.fragments == all.fragments && grown.fragmentCounts == all.fragmentCounts, "appending equals storing the whole")
    }
}
