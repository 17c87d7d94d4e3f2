import AmberCatalog
import AmberImage
import AmberTensor
import AmberText
import Foundation

/// Where ingest writes: the catalogue (PostgreSQL's `PostgresCatalogWriter` in `AmberStore`).
public protocol CatalogWriter {
    /// Items already stored with features, and the stored pairs, by external id.
    func storedCatalog() throws -> StoredCatalog
    /// Writes `dataset` in one transaction: everything or nothing; what is stored already is left as it is.
    func ingest(_ dataset: IngestDataset) throws -> IngestReport
}

/// Items already stored with features: images (id → source) and texts (id → caption, source),
/// and the pairs between them.
public struct StoredCatalog: Sendable {
    public var images: [String: String] = [:]
    public var texts: [String: (caption: String, source: String)] = [:]
    /// Pairs by image and text external id (``pairKey(_:_:)``).
    public var pairs: Set<String> = []

    public init() {}

    public static func pairKey(_ image: String, _ text: String) -> String { image + "\u{1F}" + text }
}

/// `amber ingest` of a folder of photos with a captions file: both modalities encoded natively,
/// in chunks of photos that each commit in one transaction, so that a re-run after a crash (or
/// after new photos arrive) encodes only what the database does not hold yet.
public struct PhotoIngest: Sendable {
    public let photos: PhotoCaptions
    public let splits: [String: Split]
    public let chunkSize: Int
    public let skipBadImages: Bool
    public let limits: ImageLimits
    /// Put before every external id (photo file names are only unique within a folder).
    public var idPrefix = ""
    /// `items.source` of what this folder adds.
    public let source: String
    /// Labels earlier versions stored for this folder (the parent of a flat photo folder).
    public var legacySources: Set<String> = []

    public init(photos: PhotoCaptions, splits: [String: Split], chunkSize: Int, skipBadImages: Bool, limits: ImageLimits, source: String) {
        self.photos = photos
        self.splits = splits
        self.chunkSize = chunkSize
        self.skipBadImages = skipBadImages
        self.limits = limits
        self.source = source
    }

    /// The source label of a folder: its name (the folder holding the captions file).
    public static func defaultSource(of photos: PhotoCaptions) -> String {
        URL(fileURLWithPath: photos.captionsFile).deletingLastPathComponent().standardizedFileURL.lastPathComponent
    }

    /// What versions before 0.9 stored: the name of the image folder's parent.
    public static func legacySource(of photos: PhotoCaptions) -> String {
        URL(fileURLWithPath: photos.imageDirectory).standardizedFileURL.deletingLastPathComponent().lastPathComponent
    }

    /// What a run did.
    public struct Summary: Sendable {
        public var photosEncoded = 0, captionsEncoded = 0, photosPresent = 0, skipped: [String] = []
        public var report = IngestReport()
        public var seconds = 0.0
    }

    /// The external id of a photo's image item and of its `n`th caption.
    public func imageID(_ file: String) -> String { idPrefix + file }
    public func textID(_ file: String, _ n: Int) -> String { PhotoCaptions.textID(imageID(file), n) }

    /// Refuses, before anything is written, a folder whose photos or captions collide with stored
    /// items of another source (another catalogue's IMG_0001.jpg), and captions edited in place.
    func checkStored(_ stored: StoredCatalog) throws {
        func sameSource(_ other: String) -> Bool { other == source || legacySources.contains(other) }
        for photo in photos.photos {
            if let other = stored.images[imageID(photo.file)], !sameSource(other) {
                throw IngestError(file: photos.captionsFile, "\(photo.file): an image '\(imageID(photo.file))' from source '\(other)' is stored, and this folder is source '\(source)'. If it is another catalogue, give this folder's items their own ids with --id-prefix (e.g. --id-prefix \(source)/); if it is the same folder under a new name, say --source \(other)")
            }
            for (n, caption) in photo.captions.enumerated() {
                let id = textID(photo.file, n)
                guard let existing = stored.texts[id] else { continue }
                if !sameSource(existing.source) {
                    throw IngestError(file: photos.captionsFile, "caption \(n + 1) of \(photo.file): a text '\(id)' from source '\(existing.source)' is stored, and this folder is source '\(source)'; give this folder's items their own ids with --id-prefix")
                }
                if existing.caption != caption {
                    throw IngestError(file: photos.captionsFile, "caption \(n + 1) of \(photo.file) ('\(caption)') differs from the stored \(id) ('\(existing.caption)'): captions are identified by their position among a photo's captions, so add new ones after the existing ones")
                }
            }
        }
    }

    /// Encodes and writes the photos not stored yet, chunk by chunk, each chunk one
    /// ``CatalogWriter/ingest(_:)`` (one transaction). `progress(done, total)` follows the photos;
    /// it is also called with `done == total` when the run stops early on an error.
    public func run(into writer: CatalogWriter, images imageEncoder: EfficientNetLiteEncoder, texts textEncoder: MiniLMEncoder,
                    progress: (_ done: Int, _ total: Int) -> Void = { _, _ in }) throws -> Summary {
        let started = Date()
        var summary = Summary()
        let present = try writer.storedCatalog()
        try checkStored(present)
        let total = photos.photos.count
        var done = 0
        var start = 0
        progress(0, total)
        while start < total {
            let chunk = photos.photos[start ..< min(start + chunkSize, total)]
            start += chunk.count
            defer {
                done += chunk.count
                progress(done, total)
            }
            let pendingImages = chunk.filter { present.images[imageID($0.file)] == nil }
            var pendingTexts: [(file: String, id: String, caption: String)] = []
            var missingPairs = false
            for photo in chunk {
                for (n, caption) in photo.captions.enumerated() {
                    let id = textID(photo.file, n)
                    if present.texts[id] == nil { pendingTexts.append((photo.file, id, caption)) }
                    if !present.pairs.contains(StoredCatalog.pairKey(imageID(photo.file), id)) { missingPairs = true }
                }
            }
            summary.photosPresent += chunk.count - pendingImages.count
            // A chunk whose items and pairs are all stored is done; one with items but not all
            // their pairs (pairs deleted since) writes the pairs again.
            if pendingImages.isEmpty && pendingTexts.isEmpty && !missingPairs { continue }

            // Decode; a bad file stops the ingest (chunks before it stay committed) unless skipped.
            // Each photo is cut to the network's input size and its thumbnail made as soon as it is
            // decoded (the encoder would resize it the same way), so a chunk never holds originals.
            let size = imageEncoder.architecture.imageSize
            var decoded: [(String, RGBImage)] = []
            var thumbnails: [String: StoredImage] = [:]
            for photo in pendingImages {
                let path = photos.imageDirectory + "/" + photo.file
                do {
                    do {
                        let image = try ImageDecoder.decode(file: path, limits: limits)
                        thumbnails[imageID(photo.file)] = StoredImage.thumbnail(of: image)
                        decoded.append((photo.file, Resample.bicubic(image, width: size, height: size)))
                    } catch {
                        throw IngestError(file: path, "\(error)")
                    }
                } catch let error as IngestError {
                    guard skipBadImages else { throw error }
                    FileHandle.standardError.write(Data("skipped \(error)\n".utf8))
                    summary.skipped.append(photo.file)
                }
            }
            let skipped = Set(summary.skipped)
            let store = EncodedFeatureStore()
            let imageEncodings = imageEncoder.encode(decoded.map(\.1))
            var images: [IngestImage] = []
            for ((file, _), encoding) in zip(decoded, imageEncodings) {
                let local = encoding.localVectors
                images.append(IngestImage(externalID: imageID(file), encoded: IngestFeatures(
                    encodedGlobal: store.block(encoding.globalVector.scalars, rows: 1, dimension: local.shape[1], as: .float32),
                    local: store.block(local.scalars, rows: local.shape[0], dimension: local.shape[1], as: .float16))))
            }
            // Photos already encoded are named without features: their rows exist.
            for photo in chunk where present.images[imageID(photo.file)] != nil {
                images.append(IngestImage(externalID: imageID(photo.file)))
            }
            let keptTexts = pendingTexts.filter { !skipped.contains($0.file) }
            let textEncodings = textEncoder.encode(keptTexts.map(\.caption))
            var texts: [IngestText] = []
            for (text, encoding) in zip(keptTexts, textEncodings) {
                let tokens = encoding.tokenVectors
                texts.append(IngestText(externalID: text.id, caption: text.caption, encoded: IngestFeatures(
                    encodedGlobal: store.block(encoding.sentenceVector.scalars, rows: 1, dimension: tokens.shape[1], as: .float32),
                    local: store.block(tokens.scalars, rows: tokens.shape[0], dimension: tokens.shape[1], as: .float16))))
            }
            // Every pair of the chunk's photos that were not skipped: the new ones, and stored
            // ones again (ON CONFLICT DO NOTHING), so pairs missing from stored items come back.
            var pairs: [IngestPair] = []
            for photo in chunk where !skipped.contains(photo.file) {
                let split = splits[photo.file] ?? PhotoCaptions.defaultSplit(photo.file)
                for n in photo.captions.indices {
                    pairs.append(IngestPair(image: imageID(photo.file), text: textID(photo.file, n), split: split))
                }
            }
            var dataset = IngestDataset(source: source, images: images, texts: texts, pairs: pairs, store: store)
            dataset.thumbnails = thumbnails
            let report = try writer.ingest(dataset)
            summary.report.imagesAdded += report.imagesAdded
            summary.report.textsAdded += report.textsAdded
            summary.report.featuresAdded += report.featuresAdded
            summary.report.pairsAdded += report.pairsAdded
            summary.report.thumbnailsAdded += report.thumbnailsAdded
            summary.photosEncoded += decoded.count
            summary.captionsEncoded += keptTexts.count
        }
        summary.seconds = Date().timeIntervalSince(started)
        return summary
    }
}

extension StoredImage {
    /// The picture kept for a photo (``Thumbnail``: ≤ 256 px JPEG); nil if it cannot be made.
    public static func thumbnail(of image: RGBImage) -> StoredImage? {
        (try? Thumbnail.make(image)).map { StoredImage(width: $0.width, height: $0.height, bytes: $0.jpeg) }
    }
}
