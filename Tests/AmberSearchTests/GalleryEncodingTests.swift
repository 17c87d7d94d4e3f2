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

    /// Fragments of one row without the padding.
    static func fragments(_ encoding: GalleryEncoding, _ row: Int) -> [Float] {
        let count = encoding.fragmentCounts[row]
        return encoding.fragments.slice(axis: 0, row ..< row + 1).slice(axis: 1, 0..<count).scalars
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
        #expect(cache.load(version: 3, modality: .image, fingerprint: fingerprint) == nil, "nothing cached yet")
        try cache.store(encoding, version: 3, modality: .image, fingerprint: fingerprint)
        let loaded = try #require(cache.load(version: 3, modality: .image, fingerprint: fingerprint))
        #expect(loaded.itemIDs == encoding.itemIDs && loaded.fused == encoding.fused && loaded.offsets == encoding.offsets
                && loaded.fragments.scalars == encoding.fragments.scalars && loaded.fragmentCounts == encoding.fragmentCounts)
        #expect(cache.load(version: 3, modality: .image, fingerprint: "0") == nil, "another model under the same version is a miss")
        #expect(cache.load(version: 4, modality: .image, fingerprint: fingerprint) == nil)
        #expect(cache.load(version: 3, modality: .text, fingerprint: fingerprint) == nil)
        // A damaged file is a miss, not a crash.
        let path = cache.path(version: 3, modality: .image)
        try Data("not a safetensors file".utf8).write(to: URL(fileURLWithPath: path))
        #expect(cache.load(version: 3, modality: .image, fingerprint: fingerprint) == nil)
        // Pruning keeps the versions asked for.
        try cache.store(encoding, version: 5, modality: .image, fingerprint: fingerprint)
        try cache.store(encoding, version: 12, modality: .text, fingerprint: fingerprint)
        let removed = cache.prune(keeping: [5])
        #expect(Set(removed.map { ($0 as NSString).lastPathComponent }) == ["v3-image.safetensors", "v12-text.safetensors"])
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory) == ["v5-image.safetensors"])
    }

    @Test func fingerprintsAreFNV1a() {
        #expect(GalleryCache.fingerprint([]) == "cbf29ce484222325")
        #expect(GalleryCache.fingerprint(Array("a".utf8)) == "af63dc4c8601ec8c")   // published FNV-1a 64 test vector
    }
}
