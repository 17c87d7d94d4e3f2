import AmberCatalog
import AmberModel
import AmberTensor
import Foundation
#if canImport(Glibc)
import Glibc
#endif

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
    /// two fragments, the model's dimensions): the store and the API check them. A model without
    /// a local stage keeps no fragments (every item's count is 0).
    public static func encode(_ items: [(itemID: Int64, features: ItemFeatures)], of modality: Modality, model: ServedModel,
                              chunkSize: Int = 256) -> GalleryEncoding {
        let D = model.jointDimension
        let querybank = model.querybank.flatMap { $0.beta > 0 ? $0 : nil }
        guard !items.isEmpty else { return .empty(dimension: D, withOffsets: querybank != nil) }
        let keepsFragments = model.localStage != nil
        var fused: [Float] = [], fragments: [Float] = []
        fused.reserveCapacity(items.count * D)
        if keepsFragments { fragments.reserveCapacity(items.reduce(0) { $0 + $1.features.localCount } * D) }
        for start in stride(from: 0, to: items.count, by: chunkSize) {
            let batch = items[start ..< min(start + chunkSize, items.count)].map(\.features)
            let encoded = model.encode(modality, batch)
            fused += encoded.fused.scalars
            guard let projected = encoded.fragments else { continue }
            let n = projected.shape[1]
            projected.scalars.withUnsafeBufferPointer { padded in
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
                               fragmentCounts: keepsFragments ? items.map(\.features.localCount) : [Int](repeating: 0, count: items.count),
                               dimension: D)
    }

    /// ``encode(_:of:model:chunkSize:)`` with a matching model.
    public static func encode(_ items: [(itemID: Int64, features: ItemFeatures)], of modality: Modality, model: TrainedModel,
                              chunkSize: Int = 256) -> GalleryEncoding {
        encode(items, of: modality, model: .matching(model), chunkSize: chunkSize)
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

/// Gallery encodings kept on disk per model version and modality, so a restarted server (or a
/// second replica on the same disk) encodes only the items it has not encoded with that model
/// before. Each is a directory `v<version>-<modality>.gallery` of little-endian arrays that only
/// grow — `item_ids.i64`, `fragment_counts.i64`, `fused.f32` (`[G, D]`), `offsets.f32` (`[G]`,
/// with a querybank), `fragments.f32` (`[F, D]`) — and `manifest.json`, which says how many rows
/// are valid (and for which model: its fingerprint). A gallery that grows appends its new rows
/// (``append(_:after:version:modality:fingerprint:)``: O(new rows), the files are not rewritten)
/// and then replaces the manifest atomically, so a crash at any point leaves the previous count
/// (bytes past it are cut off by the next append). A directory is used only when its manifest,
/// fingerprint, dimension, querybank and file sizes agree (a damaged or foreign cache is a miss,
/// never a trap). ``prune(keeping:)`` removes other versions' directories (and files of the
/// earlier single-file format).
public struct GalleryCache: Sendable {
    public let directory: String

    public init(directory: String) {
        self.directory = directory
    }

    static let format = "amber-gallery-3"

    /// The directory of one version's gallery of `modality`.
    public func path(version: Int64, modality: Modality) -> String {
        (directory as NSString).appendingPathComponent("v\(version)-\(modality.rawValue).gallery")
    }

    struct Manifest: Codable, Equatable {
        var format: String
        var fingerprint: String
        var version: Int64
        var modality: String
        var dimension: Int
        var count: Int
        var fragmentRows: Int
        var offsets: Bool
    }

    private func manifestPath(_ gallery: String) -> String { gallery + "/manifest.json" }

    private func readManifest(_ gallery: String) -> Manifest? {
        guard let data = FileManager.default.contents(atPath: manifestPath(gallery)),
              let manifest = try? JSONDecoder().decode(Manifest.self, from: data), manifest.format == Self.format,
              manifest.dimension > 0, manifest.count >= 0, manifest.fragmentRows >= 0 else { return nil }
        return manifest
    }

    private func writeManifest(_ manifest: Manifest, in gallery: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        try AtomicFile.write([Array(try encoder.encode(manifest))], to: manifestPath(gallery))
    }

    /// The files and the bytes each holds per row (fragments: per fragment row).
    private static func files(withOffsets: Bool, dimension D: Int) -> [(name: String, rowBytes: Int, perFragment: Bool)] {
        [("item_ids.i64", 8, false), ("fragment_counts.i64", 8, false), ("fused.f32", 4 * D, false)]
            + (withOffsets ? [("offsets.f32", 4, false)] : []) + [("fragments.f32", 4 * D, true)]
    }

    /// The bytes `encoding` adds to each file, in ``files(withOffsets:dimension:)`` order.
    private static func bytes(of encoding: GalleryEncoding) -> [[UInt8]] {
        func raw<T>(_ values: [T]) -> [UInt8] { values.withUnsafeBytes { Array($0) } }
        return [raw(encoding.itemIDs), raw(encoding.fragmentCounts.map(Int64.init)), raw(encoding.fused)]
            + (encoding.offsets.map { [raw($0)] } ?? []) + [raw(encoding.fragments)]
    }

    /// Holds an exclusive lock on the gallery directory (replicas may share the disk) for `body`.
    private func locked<T>(_ gallery: String, _ body: () throws -> T) throws -> T {
        try FileManager.default.createDirectory(atPath: gallery, withIntermediateDirectories: true)
        let descriptor = open(gallery + "/lock", O_RDWR | O_CREAT, 0o644)
        guard descriptor >= 0 else { throw TensorFileError(path: gallery, problem: "cannot open its lock: \(String(cString: strerror(errno)))") }
        defer { close(descriptor) }
        while flock(descriptor, LOCK_EX) != 0 {
            guard errno == EINTR else { throw TensorFileError(path: gallery, problem: "cannot lock: \(String(cString: strerror(errno)))") }
        }
        defer { flock(descriptor, LOCK_UN) }
        return try body()
    }

    /// Writes `chunks` at byte `offset` of `path` (cutting the file there first), then flushes it.
    private static func write(_ bytes: [UInt8], to path: String, at offset: Int) throws {
        let descriptor = open(path, O_WRONLY | O_CREAT, 0o644)
        guard descriptor >= 0 else { throw TensorFileError(path: path, problem: "cannot open: \(String(cString: strerror(errno)))") }
        defer { close(descriptor) }
        guard ftruncate(descriptor, off_t(offset)) == 0, lseek(descriptor, off_t(offset), SEEK_SET) == off_t(offset) else {
            throw TensorFileError(path: path, problem: "cannot cut to \(offset) bytes: \(String(cString: strerror(errno)))")
        }
        var written = 0
        while written < bytes.count {
            let result = bytes.withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress! + written, bytes.count - written) }
            if result < 0 {
                if errno == EINTR { continue }
                throw TensorFileError(path: path, problem: "write failed: \(String(cString: strerror(errno)))")
            }
            written += result
        }
        guard fsync(descriptor) == 0 else { throw TensorFileError(path: path, problem: "fsync failed: \(String(cString: strerror(errno)))") }
    }

    /// The cached encoding of `modality` under model `version`, or nil when there is none, it
    /// was written for another model (fingerprint), is unreadable, or does not hold what the
    /// model makes (`dimension`, offsets exactly when `withOffsets`, 1…4096 fragments per item,
    /// finite values): a damaged or foreign cache is a miss, never a trap.
    public func load(version: Int64, modality: Modality, fingerprint: String, dimension: Int, withOffsets: Bool) -> GalleryEncoding? {
        let gallery = path(version: version, modality: modality)
        guard let manifest = readManifest(gallery), manifest.fingerprint == fingerprint, manifest.dimension == dimension,
              manifest.offsets == withOffsets, manifest.version == version, manifest.modality == modality.rawValue else { return nil }
        var files: [MappedFile] = []
        for file in Self.files(withOffsets: withOffsets, dimension: dimension) {
            let (rows, overflow) = (file.perFragment ? manifest.fragmentRows : manifest.count).multipliedReportingOverflow(by: file.rowBytes)
            guard !overflow, let mapped = try? MappedFile(path: gallery + "/" + file.name), mapped.bytes.count >= rows else { return nil }
            files.append(mapped)
        }
        /// The first `count` values of a mapped file, copied into an array.
        func values<T>(_ file: MappedFile, _ count: Int, as type: T.Type) -> [T] {
            [T](unsafeUninitializedCapacity: count) { buffer, initialized in
                if count > 0, let source = file.bytes.baseAddress { memcpy(buffer.baseAddress!, source, count * MemoryLayout<T>.stride) }
                initialized = count
            }
        }
        let G = manifest.count, F = manifest.fragmentRows
        let ids = values(files[0], G, as: Int64.self), counts = values(files[1], G, as: Int64.self)
        let fused = values(files[2], G * dimension, as: Float.self)
        let offsets = withOffsets ? values(files[3], G, as: Float.self) : nil
        let fragments = values(files[files.count - 1], F * dimension, as: Float.self)
        guard counts.allSatisfy({ (1...4096).contains($0) }), counts.reduce(0, +) == Int64(manifest.fragmentRows),
              fused.allSatisfy(\.isFinite), fragments.allSatisfy(\.isFinite), offsets?.allSatisfy(\.isFinite) ?? true else { return nil }
        return GalleryEncoding(itemIDs: ids, fused: fused, offsets: offsets, fragments: fragments,
                               fragmentCounts: counts.map(Int.init), dimension: dimension)
    }

    /// Writes `encoding` as the cache of `modality` under model `version`, replacing what was
    /// there (the manifest goes first, so a crash meanwhile leaves no cache rather than a mixed one).
    public func store(_ encoding: GalleryEncoding, version: Int64, modality: Modality, fingerprint: String) throws {
        let gallery = path(version: version, modality: modality)
        try locked(gallery) {
            if FileManager.default.fileExists(atPath: manifestPath(gallery)) { try FileManager.default.removeItem(atPath: manifestPath(gallery)) }
            let files = Self.files(withOffsets: encoding.offsets != nil, dimension: encoding.dimension)
            for (file, bytes) in zip(files, Self.bytes(of: encoding)) { try Self.write(bytes, to: gallery + "/" + file.name, at: 0) }
            try writeManifest(Manifest(format: Self.format, fingerprint: fingerprint, version: version, modality: modality.rawValue,
                                       dimension: encoding.dimension, count: encoding.count,
                                       fragmentRows: encoding.fragmentCounts.reduce(0, +), offsets: encoding.offsets != nil), in: gallery)
        }
    }

    /// Appends `encoding` (items that joined the gallery) to the cache of `modality` under
    /// `version`, when that cache holds exactly the `start` items before them for this model;
    /// returns false (and writes nothing) otherwise — the caller then stores the gallery whole.
    @discardableResult
    public func append(_ encoding: GalleryEncoding, after start: Int, version: Int64, modality: Modality, fingerprint: String) throws -> Bool {
        let gallery = path(version: version, modality: modality)
        guard FileManager.default.fileExists(atPath: manifestPath(gallery)) else { return false }
        return try locked(gallery) {
            guard var manifest = readManifest(gallery), manifest.fingerprint == fingerprint, manifest.count == start,
                  manifest.dimension == encoding.dimension, manifest.offsets == (encoding.offsets != nil) else { return false }
            let files = Self.files(withOffsets: manifest.offsets, dimension: manifest.dimension)
            for (file, bytes) in zip(files, Self.bytes(of: encoding)) {
                let validRows = file.perFragment ? manifest.fragmentRows : manifest.count
                try Self.write(bytes, to: gallery + "/" + file.name, at: validRows * file.rowBytes)
            }
            manifest.count += encoding.count
            manifest.fragmentRows += encoding.fragmentCounts.reduce(0, +)
            try writeManifest(manifest, in: gallery)
            return true
        }
    }

    /// Removes the caches of every version not in `versions` (and any file of the earlier
    /// single-file format); returns the paths removed.
    @discardableResult
    public func prune(keeping versions: Set<Int64>) -> [String] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return [] }
        var removed: [String] = []
        for name in names where name.hasPrefix("v") && (name.hasSuffix(".gallery") || name.hasSuffix(".safetensors")) {
            let digits = name.dropFirst().prefix { $0.isNumber }
            guard let version = Int64(digits), name.hasSuffix(".safetensors") || !versions.contains(version) else { continue }
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
