import AmberCatalog
import AmberTensor
import Foundation

/// A problem with an input directory: the file, where in it (when known), and what is wrong.
public struct IngestError: Error, CustomStringConvertible, Equatable {
    public let file: String
    public let line: Int?
    public let problem: String

    public init(file: String, line: Int? = nil, _ problem: String) {
        self.file = file
        self.line = line
        self.problem = problem
    }

    public var description: String {
        line.map { "\(file):\($0): \(problem)" } ?? "\(file): \(problem)"
    }
}

/// Vectors of one item as stored: little-endian float16/float32 bytes from a mapped file.
public struct FeatureBlock: @unchecked Sendable {
    public let elementType: ElementType
    /// Rows (1 for a global vector, fragments for local vectors).
    public let rows: Int
    public let dimension: Int
    public let bytes: UnsafeRawBufferPointer
}

/// Features of one item as ingested: the global vector and the local vectors, still in their file bytes.
public struct IngestFeatures: Sendable {
    public let global: FeatureBlock
    public let local: FeatureBlock
}

public struct IngestImage: Sendable {
    public let externalID: String
    public let features: IngestFeatures?
}

public struct IngestText: Sendable {
    public let externalID: String
    public let caption: String
    /// `nil` when the layout has no text features (SCAN precomp): the text encoder fills them.
    public let features: IngestFeatures?
}

public struct IngestPair: Sendable {
    public let imageExternalID: String
    public let textExternalID: String
    public let split: Split
}

/// Everything one ingest writes, validated, with feature bytes still in the mapped files.
public struct IngestDataset: @unchecked Sendable {
    /// Label stored in `items.source`.
    public let source: String
    public let images: [IngestImage]
    public let texts: [IngestText]
    public let pairs: [IngestPair]
    /// Mapped files the feature blocks point into.
    let keepAlive: [Any]
    /// Thumbnails of images (by external id), stored with them (`amber.item_images`).
    public var thumbnails: [String: StoredImage] = [:]

    /// The images at `range` (positions in `images`), the pairs of those images and their texts:
    /// a slice to ingest on its own (e.g. in chunks, while a trainer runs).
    public func subset(images range: Range<Int>) -> IngestDataset {
        let clamped = range.clamped(to: 0..<images.count)
        let kept = Array(images[clamped])
        let imageIDs = Set(kept.map(\.externalID))
        let keptPairs = pairs.filter { imageIDs.contains($0.imageExternalID) }
        let textIDs = Set(keptPairs.map(\.textExternalID))
        var subset = IngestDataset(source: source, images: kept, texts: texts.filter { textIDs.contains($0.externalID) },
                                   pairs: keptPairs, keepAlive: keepAlive)
        subset.thumbnails = thumbnails.filter { imageIDs.contains($0.key) }
        return subset
    }
}

/// How an input directory is laid out.
public enum DatasetLayout: Sendable, Equatable {
    /// `ims_global.npy`, `ims_local.npy`, `image_ids.txt`, `caps.txt`, `caps_global.npy`,
    /// `caps_tokens.npy`, `caps_tok_offsets.npy` (the layout `amber encode` writes).
    case globalLocal
    /// SCAN/VSE precomp: `{split}_ims.npy` (N, R, D), `{split}_caps.txt`, `{split}_ids.txt`.
    case precomp(splits: [String])

    /// Detects the layout of `directory`.
    public static func detect(_ directory: String) throws -> DatasetLayout {
        let files = Set((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [])
        if files.isEmpty && !FileManager.default.fileExists(atPath: directory) {
            throw IngestError(file: directory, "no such directory")
        }
        if files.contains("ims_global.npy") || files.contains("caps.txt") { return .globalLocal }
        let splits = files.filter { $0.hasSuffix("_ims.npy") }.map { String($0.dropLast(8)) }.sorted()
        if !splits.isEmpty { return .precomp(splits: splits) }
        throw IngestError(file: directory, "not a dataset directory: expected ims_global.npy + caps.txt (global/local layout) or {split}_ims.npy + {split}_caps.txt (SCAN precomp layout)")
    }
}

/// Reads and validates input directories.
public enum DatasetReader {
    /// Options for the global/local layout, which has no split files.
    public struct Options: Sendable {
        /// Captions per image: caption `j` belongs to image `j / captionsPerImage`. Default 5.
        public var captionsPerImage = 5
        /// Images from this index on are `dev` (default: the last eighth, 700 of 800).
        public var devStart: Int?
        /// Images from this index on are `test` (default: none).
        public var testStart: Int?
        /// What features an item may have (fragment counts, magnitudes, dimensions): the same
        /// limits the query service and the trainer apply.
        public var features = FeatureLimits()

        public init(captionsPerImage: Int = 5, devStart: Int? = nil, testStart: Int? = nil) {
            self.captionsPerImage = captionsPerImage
            self.devStart = devStart
            self.testStart = testStart
        }
    }

    /// Reads `directory` in whichever layout it has.
    public static func read(_ directory: String, options: Options = Options()) throws -> IngestDataset {
        switch try DatasetLayout.detect(directory) {
        case .globalLocal: return try readGlobalLocal(directory, options: options)
        case .precomp(let splits): return try readPrecomp(directory, splits: splits, options: options)
        }
    }

    // MARK: Global/local layout

    static func readGlobalLocal(_ directory: String, options: Options) throws -> IngestDataset {
        let path = { (name: String) in directory + "/" + name }
        let imageIDs = try lines(path("image_ids.txt"))
        let captions = try lines(path("caps.txt"))
        let imsGlobal = try array(path("ims_global.npy"), rank: 2)
        let imsLocal = try array(path("ims_local.npy"), rank: 3)
        let capsGlobal = try array(path("caps_global.npy"), rank: 2)
        let capsTokens = try array(path("caps_tokens.npy"), rank: 2)
        let offsetsArray = try NumpyFile.read(path("caps_tok_offsets.npy"))
        let offsets: [Int64]
        do { offsets = try offsetsArray.int64Values() } catch { throw IngestError(file: path("caps_tok_offsets.npy"), "\(error)") }

        let imageCount = imageIDs.count
        try expect(imsGlobal.shape[0] == imageCount, path("ims_global.npy"),
                   "has \(imsGlobal.shape[0]) rows but image_ids.txt lists \(imageCount) images")
        try expect(imsLocal.shape[0] == imageCount, path("ims_local.npy"),
                   "has \(imsLocal.shape[0]) images but image_ids.txt lists \(imageCount)")
        let limits = options.features
        try expect((limits.minimumFragments...limits.maximumImageFragments).contains(imsLocal.shape[1]), path("ims_local.npy"),
                   "has \(imsLocal.shape[1]) local vectors per image; allowed \(limits.minimumFragments)…\(limits.maximumImageFragments)")
        try expect(captions.count == options.captionsPerImage * imageCount, path("caps.txt"),
                   "has \(captions.count) captions for \(imageCount) images; expected \(options.captionsPerImage) per image (\(options.captionsPerImage * imageCount))")
        try expect(capsGlobal.shape[0] == captions.count, path("caps_global.npy"),
                   "has \(capsGlobal.shape[0]) rows for \(captions.count) captions")
        try expect(offsets.count == captions.count + 1, path("caps_tok_offsets.npy"),
                   "has \(offsets.count) offsets; expected one per caption plus one (\(captions.count + 1))")
        try expect(offsets.first == 0 && offsets.last == Int64(capsTokens.shape[0]), path("caps_tok_offsets.npy"),
                   "must start at 0 and end at the token count \(capsTokens.shape[0]) (found \(offsets.first ?? -1)…\(offsets.last ?? -1))")
        for j in 0..<captions.count {
            let count = offsets[j + 1] - offsets[j]
            guard count >= Int64(limits.minimumFragments) && count <= Int64(limits.maximumTextFragments) else {
                throw IngestError(file: path("caps_tok_offsets.npy"), "caption \(j) has \(count) tokens (offsets \(offsets[j])…\(offsets[j + 1])); each needs \(limits.minimumFragments)…\(limits.maximumTextFragments)")
            }
        }
        for array in [imsGlobal, imsLocal, capsGlobal, capsTokens] { try checkValues(array, limits: limits) }
        try checkUnique(imageIDs, file: path("image_ids.txt"))

        let images = (0..<imageCount).map { i in
            IngestImage(externalID: imageIDs[i], features: IngestFeatures(
                global: block(imsGlobal, rows: i..<i + 1), local: block(imsLocal, rows: i..<i + 1, flatten: true)))
        }
        var texts: [IngestText] = []
        var pairs: [IngestPair] = []
        var splitOptions = options
        do {
            let recorded = try LayoutSplits.read(directory: directory, imageCount: imageCount)
            splitOptions.devStart = options.devStart ?? recorded.devStart
            splitOptions.testStart = options.testStart ?? recorded.testStart
        } catch { throw IngestError(file: path("meta.json"), "\(error)") }
        let split = splitPlan(imageCount: imageCount, options: splitOptions)
        for j in 0..<captions.count {
            let image = j / options.captionsPerImage
            let externalID = "\(imageIDs[image])#\(j % options.captionsPerImage)"
            let tokenRows = Int(offsets[j])..<Int(offsets[j + 1])
            texts.append(IngestText(externalID: externalID, caption: captions[j], features: IngestFeatures(
                global: block(capsGlobal, rows: j..<j + 1), local: block(capsTokens, rows: tokenRows))))
            pairs.append(IngestPair(imageExternalID: imageIDs[image], textExternalID: externalID, split: split(image)))
        }
        try checkCaptions(captions, file: path("caps.txt"))
        return IngestDataset(source: URL(fileURLWithPath: directory).lastPathComponent, images: images, texts: texts,
                             pairs: pairs, keepAlive: [imsGlobal, imsLocal, capsGlobal, capsTokens])
    }

    static func splitPlan(imageCount: Int, options: Options) -> (Int) -> Split {
        let devStart = options.devStart ?? (imageCount - imageCount / 8)
        let testStart = options.testStart ?? Int.max
        return { image in image >= testStart ? .test : (image >= devStart ? .dev : .train) }
    }

    // MARK: SCAN precomp layout

    static func readPrecomp(_ directory: String, splits: [String], options: Options) throws -> IngestDataset {
        struct Part { let split: Split; let ims: RawArray; let captions: [String]; let ids: [String] }
        var parts: [Part] = []
        for name in splits {
            let split: Split
            switch name {
            case "train": split = .train
            case "dev", "val": split = .dev
            case "test", "testall": split = .test
            default: throw IngestError(file: "\(directory)/\(name)_ims.npy", "unknown split '\(name)'; use train, dev (or val), test (or testall)")
            }
            let imsPath = "\(directory)/\(name)_ims.npy", capsPath = "\(directory)/\(name)_caps.txt", idsPath = "\(directory)/\(name)_ids.txt"
            let ims = try array(imsPath, rank: 3)
            let captions = try lines(capsPath)
            let count = ims.shape[0]
            let limits = options.features
            try expect((limits.minimumFragments...limits.maximumImageFragments).contains(ims.shape[1]), imsPath,
                       "has \(ims.shape[1]) regions per image; allowed \(limits.minimumFragments)…\(limits.maximumImageFragments)")
            try expect(captions.count == options.captionsPerImage * count, capsPath,
                       "has \(captions.count) captions for \(count) images; expected \(options.captionsPerImage) per image (\(options.captionsPerImage * count))")
            var ids = (0..<count).map { "\($0)" }
            if FileManager.default.fileExists(atPath: idsPath) {
                let raw = try lines(idsPath)
                if raw.count == count {
                    ids = raw
                } else if raw.count == captions.count {
                    ids = stride(from: 0, to: raw.count, by: options.captionsPerImage).map { raw[$0] }
                } else {
                    throw IngestError(file: idsPath, "has \(raw.count) ids; expected one per image (\(count)) or one per caption (\(captions.count))")
                }
            }
            try checkValues(ims, limits: limits)
            try checkCaptions(captions, file: capsPath)
            try checkUnique(ids, file: idsPath)
            parts.append(Part(split: split, ims: ims, captions: captions, ids: ids.map { "\(name)/\($0)" }))
        }
        guard let dimension = parts.first?.ims.shape[2], parts.allSatisfy({ $0.ims.shape[2] == dimension }) else {
            throw IngestError(file: directory, "the splits' features have different dimensions")
        }
        // Global vectors: the mean of each image's regions, as float32, in one owned buffer.
        let imageCount = parts.reduce(0) { $0 + $1.ims.shape[0] }
        let globals = OwnedBytes(count: imageCount * dimension * 4)
        var row = 0
        for part in parts {
            for i in 0..<part.ims.shape[0] {
                let regions = block(part.ims, rows: i..<i + 1, flatten: true)
                let mean = regions.meanRow()
                for (k, value) in mean.enumerated() {
                    ElementType.float32.store(value, into: globals.start, at: row * dimension + k)
                }
                row += 1
            }
        }
        var images: [IngestImage] = [], texts: [IngestText] = [], pairs: [IngestPair] = []
        row = 0
        for part in parts {
            for i in 0..<part.ims.shape[0] {
                let start = row * dimension * 4
                let global = FeatureBlock(elementType: .float32, rows: 1, dimension: dimension,
                                          bytes: UnsafeRawBufferPointer(rebasing: globals.bytes[start ..< start + dimension * 4]))
                images.append(IngestImage(externalID: part.ids[i], features: IngestFeatures(
                    global: global, local: block(part.ims, rows: i..<i + 1, flatten: true))))
                for k in 0..<options.captionsPerImage {
                    let externalID = "\(part.ids[i])#\(k)"
                    texts.append(IngestText(externalID: externalID, caption: part.captions[i * options.captionsPerImage + k], features: nil))
                    pairs.append(IngestPair(imageExternalID: part.ids[i], textExternalID: externalID, split: part.split))
                }
                row += 1
            }
        }
        let globalArray = RawArray(shape: [imageCount, dimension], elementType: .float32, bytes: globals.bytes,
                                   path: directory, owner: globals)
        return IngestDataset(source: URL(fileURLWithPath: directory).lastPathComponent, images: images, texts: texts,
                             pairs: pairs, keepAlive: parts.map(\.ims) + [globalArray])
    }

    // MARK: Checks

    static func lines(_ path: String) throws -> [String] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw IngestError(file: path, "missing or unreadable")
        }
        guard let text = String(data: data, encoding: .utf8) else { throw IngestError(file: path, "is not UTF-8 text") }
        // LF or CRLF (CRLF is one Character in Swift, so splitting at "\n" alone would miss it).
        var result = text.split(omittingEmptySubsequences: false) { $0 == "\n" || $0 == "\r\n" }.map {
            String($0.hasSuffix("\r") ? $0.dropLast() : $0)
        }
        if result.last == "" { result.removeLast() }
        for (index, line) in result.enumerated() where line.trimmingCharacters(in: .whitespaces).isEmpty {
            throw IngestError(file: path, line: index + 1, "empty line")
        }
        return result
    }

    static func array(_ path: String, rank: Int) throws -> RawArray {
        let array: RawArray
        do { array = try NumpyFile.read(path) } catch let error as TensorFileError {
            throw IngestError(file: error.path, error.problem)
        }
        guard array.elementType == .float16 || array.elementType == .float32 else {
            throw IngestError(file: path, "holds \(array.elementType.rawValue); features must be float16 or float32")
        }
        guard array.shape.count == rank else {
            throw IngestError(file: path, "has shape \(array.shape); expected \(rank) axes")
        }
        guard array.shape.allSatisfy({ $0 > 0 }) else { throw IngestError(file: path, "is empty (shape \(array.shape))") }
        return array
    }

    static func expect(_ condition: Bool, _ file: String, _ problem: @autoclosure () -> String) throws {
        if !condition { throw IngestError(file: file, problem()) }
    }

    /// Rejects NaN, ±Inf and values beyond the limits' magnitude by their bit patterns (for
    /// non-negative floats bit order is value order), naming the first bad row; and dimensions
    /// beyond the limits.
    static func checkValues(_ array: RawArray, limits: FeatureLimits) throws {
        guard let dimension = array.shape.last, dimension <= limits.maximumDimension else {
            throw IngestError(file: array.path, "has vectors of \(array.shape.last ?? 0) values; at most \(limits.maximumDimension)")
        }
        let rowLength = array.shape.dropFirst().reduce(1, *)
        guard let base = array.bytes.baseAddress else { return }
        let problem = { (i: Int) in
            IngestError(file: array.path, "row \(i / rowLength) holds a NaN, infinite or too large value (element \(i % rowLength)); features must be finite with |x| ≤ \(limits.maximumMagnitude)")
        }
        switch array.elementType {
        case .float16:
            let bound = Float16(min(limits.maximumMagnitude, 65504)).bitPattern
            for i in 0..<array.count where base.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self).littleEndian & 0x7FFF > bound { throw problem(i) }
        case .float32:
            let bound = limits.maximumMagnitude.bitPattern
            for i in 0..<array.count where base.loadUnaligned(fromByteOffset: i * 4, as: UInt32.self).littleEndian & 0x7FFF_FFFF > bound { throw problem(i) }
        default:
            break
        }
    }

    static func checkUnique(_ ids: [String], file: String) throws {
        var seen: [String: Int] = [:]
        for (index, id) in ids.enumerated() {
            // Precomp ids get a "split/" prefix and "#k" suffix: leave room for both.
            if let problem = CatalogText.problem(id, field: "the id", codePoints: 1...(CatalogText.maximumExternalID - 16)) {
                throw IngestError(file: file, line: index + 1, problem.message)
            }
            if let first = seen[id] {
                throw IngestError(file: file, line: index + 1, "duplicate id '\(id)' (first on line \(first + 1))")
            }
            seen[id] = index
        }
    }

    static func checkCaptions(_ captions: [String], file: String) throws {
        for (index, caption) in captions.enumerated() {
            if let problem = CatalogText.problem(caption, field: "the caption", codePoints: 1...CatalogText.maximumCaption) {
                throw IngestError(file: file, line: index + 1, problem.message)
            }
        }
    }

    /// Rows `rows` of a (N, …, D) array as a block of `rows.count × D` (or, with `flatten`, the
    /// middle axis of one row as the block's rows).
    static func block(_ array: RawArray, rows: Range<Int>, flatten: Bool = false) -> FeatureBlock {
        let dimension = array.shape.last!
        let perRow = array.shape.dropFirst().reduce(1, *)
        let size = array.elementType.byteCount
        let bytes = UnsafeRawBufferPointer(rebasing: array.bytes[(rows.lowerBound * perRow * size) ..< (rows.upperBound * perRow * size)])
        let blockRows = flatten ? rows.count * (perRow / dimension) : rows.count
        return FeatureBlock(elementType: array.elementType, rows: blockRows, dimension: dimension, bytes: bytes)
    }
}

/// Owns computed bytes (precomp global vectors) for feature blocks to point into.
final class OwnedBytes: @unchecked Sendable {
    let start: UnsafeMutableRawPointer
    let count: Int
    var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: start, count: count) }

    init(count: Int) {
        start = UnsafeMutableRawPointer.allocate(byteCount: max(count, 1), alignment: 16)
        self.count = count
    }

    deinit { start.deallocate() }
}

extension FeatureBlock {
    /// Element `index` as a Float.
    func element(_ index: Int) -> Float {
        guard let base = bytes.baseAddress else { return 0 }
        return elementType.float(in: base, at: index)
    }

    /// The mean of the rows.
    func meanRow() -> [Float] {
        var total = [Double](repeating: 0, count: dimension)
        for r in 0..<rows {
            for k in 0..<dimension { total[k] += Double(element(r * dimension + k)) }
        }
        return total.map { Float($0 / Double(rows)) }
    }
}
