import AmberCatalog
import AmberModel
import AmberTensor
import Foundation

// Shape legend: `G` items, `n_i` fragments of item `i`, `F = Σ n_i` fragments in all, `D` joint
// dimension.

/// One modality's items as one model encodes them: everything the search needs per item and
/// nothing that depends on the other items, so encodings of disjoint item sets can be joined
/// (a gallery grows by encoding only its new items) and kept on disk per model version
/// (``GalleryCache``).
///
/// Fragments are ragged: item `i`'s projected fragments are rows `start[i] ..< start[i] + n_i`
/// of one `[F, D]` array, so an item with many fragments costs its own rows and nothing more
/// (padding every item to the widest one let one 1,900-token text grow a gallery tenfold).
public struct GalleryEncoding: @unchecked Sendable {
    /// The store's item ids, by row.
    public var itemIDs: [Int64]
    /// `[G, D]` fused embeddings.
    public var fused: [Float]
    /// `[G]` querybank offsets, or nil when the model has no querybank.
    public var offsets: [Float]?
    /// `[F, D]` projected fragments, item after item.
    public var fragments: [Float]
    /// Fragment rows per item (`n_i`).
    public var fragmentCounts: [Int]
    public let dimension: Int

    public var count: Int { itemIDs.count }

    public init(itemIDs: [Int64], fused: [Float], offsets: [Float]?, fragments: [Float], fragmentCounts: [Int], dimension: Int) {
        precondition(fused.count == itemIDs.count * dimension && fragmentCounts.count == itemIDs.count
                     && fragments.count == fragmentCounts.reduce(0, +) * dimension
                     && (offsets?.count ?? itemIDs.count) == itemIDs.count,
                     "GalleryEncoding: \(itemIDs.count) items, \(fused.count) fused values, \(fragments.count) fragment values for counts summing to \(fragmentCounts.reduce(0, +)), D = \(dimension)")
        self.itemIDs = itemIDs
        self.fused = fused
        self.offsets = offsets
        self.fragments = fragments
        self.fragmentCounts = fragmentCounts
        self.dimension = dimension
    }

    /// No items.
    public static func empty(dimension: Int, withOffsets: Bool) -> GalleryEncoding {
        GalleryEncoding(itemIDs: [], fused: [], offsets: withOffsets ? [] : nil, fragments: [], fragmentCounts: [], dimension: dimension)
    }

    /// Encodes `items` of `modality` with `model` in chunks of `chunkSize`; the querybank offsets
    /// (when the model has a querybank with β > 0) rank this modality against the other
    /// modality's training queries. Items must satisfy the model's ``FeatureLimits`` (at least
    /// two fragments, the model's dimensions): the store and the API check them.
    public static func encode(_ items: [(itemID: Int64, features: ItemFeatures)], of modality: Modality, model: TrainedModel,
                              chunkSize: Int = 256) -> GalleryEncoding {
        let encoder = modality == .image ? model.model.imageEncoder : model.model.textEncoder
        let D = model.encoder.jointDimension
        let querybank = model.querybank.flatMap { $0.beta > 0 ? $0 : nil }
        guard !items.isEmpty else { return .empty(dimension: D, withOffsets: querybank != nil) }
        var fused: [Float] = [], fragments: [Float] = []
        fused.reserveCapacity(items.count * D)
        fragments.reserveCapacity(items.reduce(0) { $0 + $1.features.localCount } * D)
        for start in stride(from: 0, to: items.count, by: chunkSize) {
            let batch = items[start ..< min(start + chunkSize, items.count)].map(\.features)
            let encoded = withoutGradients { encoder(SearchEngine.input(batch)) }
            fused += encoded.fused.scalars
            let n = encoded.fragments.shape[1]
            encoded.fragments.scalars.withUnsafeBufferPointer { padded in
                for (row, features) in batch.enumerated() {
                    fragments += padded[(row * n * D) ..< ((row * n + features.localCount) * D)]
                }
            }
        }
        let offsets = querybank.map { bank in
            bank.offsets(gallery: Tensor(shape: [items.count, D], scalars: fused),
                         queries: modality == .image ? bank.textQueries : bank.imageQueries)
        }
        return GalleryEncoding(itemIDs: items.map(\.itemID), fused: fused, offsets: offsets, fragments: fragments,
                               fragmentCounts: items.map(\.features.localCount), dimension: D)
    }

    /// The first fragment row of each item, and `F` at the end (`G + 1` values).
    public var fragmentStarts: [Int] {
        var starts = [0]
        starts.reserveCapacity(count + 1)
        for n in fragmentCounts { starts.append(starts[starts.count - 1] + n) }
        return starts
    }

    /// The rows at `positions`, in that order.
    public func rows(_ positions: [Int]) -> GalleryEncoding {
        if positions.count == count && positions.elementsEqual(0..<count) { return self }
        let D = dimension
        let starts = fragmentStarts
        var fused = [Float](), fragments = [Float]()
        fused.reserveCapacity(positions.count * D)
        for p in positions {
            fused += self.fused[(p * D) ..< ((p + 1) * D)]
            fragments += self.fragments[(starts[p] * D) ..< (starts[p + 1] * D)]
        }
        return GalleryEncoding(itemIDs: positions.map { itemIDs[$0] }, fused: fused, offsets: offsets.map { o in positions.map { o[$0] } },
                               fragments: fragments, fragmentCounts: positions.map { fragmentCounts[$0] }, dimension: D)
    }

    /// `parts` one after the other.
    public static func concatenate(_ parts: [GalleryEncoding], dimension: Int, withOffsets: Bool) -> GalleryEncoding {
        let parts = parts.filter { $0.count > 0 }
        guard !parts.isEmpty else { return .empty(dimension: dimension, withOffsets: withOffsets) }
        if parts.count == 1 { return parts[0] }
        precondition(parts.allSatisfy { $0.dimension == dimension && ($0.offsets != nil) == withOffsets },
                     "GalleryEncoding.concatenate: parts of another dimension or querybank")
        return GalleryEncoding(itemIDs: parts.flatMap(\.itemIDs), fused: parts.flatMap(\.fused),
                               offsets: withOffsets ? parts.flatMap { $0.offsets! } : nil,
                               fragments: parts.flatMap(\.fragments), fragmentCounts: parts.flatMap(\.fragmentCounts), dimension: dimension)
    }
}

/// Gallery encodings kept on disk, one safetensors file per model version and modality
/// (`v<version>-<modality>.safetensors` in `directory`), so a restarted server (or a second
/// replica on the same disk) encodes only the items it has not encoded with that model before.
/// A file is used only when its model fingerprint matches (the same version number from another
/// database, or a rewritten model, is a miss); files are written atomically, so a crash leaves
/// the previous file or none. ``prune(keeping:)`` removes other versions' files.
public struct GalleryCache: Sendable {
    public let directory: String

    public init(directory: String) {
        self.directory = directory
    }

    static let format = "amber-gallery-2"

    public func path(version: Int64, modality: Modality) -> String {
        (directory as NSString).appendingPathComponent("v\(version)-\(modality.rawValue).safetensors")
    }

    /// The cached encoding of `modality` under model `version`, or nil when there is none, it
    /// was written for another model (fingerprint), is unreadable, or does not hold what the
    /// model makes (`dimension`, offsets exactly when `withOffsets`, 1…4096 fragments per item,
    /// finite values): a damaged or foreign file is a miss, never a trap.
    public func load(version: Int64, modality: Modality, fingerprint: String, dimension: Int, withOffsets: Bool) -> GalleryEncoding? {
        let path = path(version: version, modality: modality)
        guard FileManager.default.fileExists(atPath: path), let file = try? SafetensorsFile(path: path),
              file.metadata["format"] == Self.format, file.metadata["fingerprint"] == fingerprint,
              let ids = try? file.arrays["item_ids"]?.int64Values(), let counts = try? file.arrays["fragment_counts"]?.int64Values(),
              let fused = try? file.tensor("fused"), let fragments = try? file.tensor("fragments"),
              fused.shape.count == 2, fused.shape[0] == ids.count, fused.shape[1] == dimension, dimension > 0,
              counts.count == ids.count, counts.allSatisfy({ (1...4096).contains($0) }),
              fragments.shape.count == 2, fragments.shape[0] == Int(counts.reduce(0, +)), fragments.shape[1] == dimension,
              (file.arrays["offsets"] != nil) == withOffsets,
              fused.scalars.allSatisfy(\.isFinite), fragments.scalars.allSatisfy(\.isFinite) else { return nil }
        let offsets = file.arrays["offsets"] == nil ? nil : try? file.tensor("offsets").scalars
        if withOffsets && (offsets?.count != ids.count || offsets?.allSatisfy(\.isFinite) != true) { return nil }
        return GalleryEncoding(itemIDs: ids, fused: fused.scalars, offsets: offsets, fragments: fragments.scalars,
                               fragmentCounts: counts.map(Int.init), dimension: fused.shape[1])
    }

    /// Writes `encoding` as the cache of `modality` under model `version` (atomically).
    public func store(_ encoding: GalleryEncoding, version: Int64, modality: Modality, fingerprint: String) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var entries: [String: SafetensorsFile.Entry] = [
            "item_ids": .int64(encoding.itemIDs, shape: [encoding.count]),
            "fragment_counts": .int64(encoding.fragmentCounts.map(Int64.init), shape: [encoding.count]),
            "fused": .float(Tensor(shape: [encoding.count, encoding.dimension], scalars: encoding.fused), .float32),
            "fragments": .float(Tensor(shape: [encoding.fragmentCounts.reduce(0, +), encoding.dimension], scalars: encoding.fragments), .float32),
        ]
        if let offsets = encoding.offsets { entries["offsets"] = .float(Tensor(shape: [encoding.count], scalars: offsets), .float32) }
        try SafetensorsFile.write(entries, metadata: ["format": Self.format, "fingerprint": fingerprint, "version": "\(version)",
                                                      "modality": modality.rawValue], to: path(version: version, modality: modality))
    }

    /// Removes the cache files of every version not in `versions`; returns the paths removed.
    @discardableResult
    public func prune(keeping versions: Set<Int64>) -> [String] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return [] }
        var removed: [String] = []
        for name in names where name.hasPrefix("v") && name.hasSuffix(".safetensors") {
            let digits = name.dropFirst().prefix { $0.isNumber }
            guard let version = Int64(digits), !versions.contains(version) else { continue }
            let path = (directory as NSString).appendingPathComponent(name)
            if (try? FileManager.default.removeItem(atPath: path)) != nil { removed.append(path) }
        }
        return removed
    }

    /// A fingerprint of a model file's bytes (FNV-1a, 64 bits, hex).
    public static func fingerprint(_ bytes: [UInt8]) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in bytes {
            hash ^= UInt64(byte)
            hash = hash &* 0x100_0000_01b3
        }
        return String(hash, radix: 16)
    }
}
