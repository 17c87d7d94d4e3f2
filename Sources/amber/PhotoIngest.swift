import AmberCatalog
import AmberImage
import AmberServer
import AmberStore
import AmberTensor
import AmberText
import ArgumentParser
import Foundation

/// Where a photo folder's captions and images are; shared by `amber ingest` and `amber encode`.
struct PhotoFolderOptions: ParsableArguments {
    @Option(help: "Photos: the captions file (default: captions.tsv, captions.csv, Flickr8k.token.txt, captions.txt or the one *.json in the directory).")
    var captions: String?

    @Option(help: "Photos: the folder of image files (default: DIR/images when present, else DIR).")
    var imageDirectory: String?

    @Option(help: "Photos: the captions file's format (flickr-token, tsv, csv, coco; default: from its name and first line).")
    var format: String?

    func validate() throws {
        if let format, Self.format(format) == nil {
            throw ValidationError("--format must be flickr-token, tsv, csv or coco, got '\(format)'")
        }
    }

    static func format(_ name: String) -> PhotoCaptions.Format? {
        switch name.lowercased() {
        case "flickr-token", "token", "flickr": .flickrToken
        case "tsv": .tsv
        case "csv": .csv
        case "coco", "json": .coco
        default: nil
        }
    }

    /// Whether the options name photos (else the directory decides).
    var given: Bool { captions != nil || imageDirectory != nil }

    /// The photos of `directory` (only those at `images`, `START:END`, when given) and their splits.
    /// - Throws: `ValidationError` naming the file and line.
    func read(_ directory: String, images: String?) throws -> (photos: PhotoCaptions, splits: [String: Split]) {
        guard let captionsFile = captions ?? PhotoCaptions.findCaptionsFile(in: directory) else {
            throw ValidationError("\(directory): no captions file (captions.tsv, captions.csv, Flickr8k.token.txt, captions.txt or one *.json); name it with --captions")
        }
        var photos: PhotoCaptions
        let splits: [String: Split]
        do {
            photos = try PhotoCaptions.read(captionsFile: captionsFile, imageDirectory: imageDirectory ?? PhotoCaptions.findImageDirectory(in: directory),
                                            format: format.flatMap(Self.format))
            splits = try photos.splits(listDirectory: URL(fileURLWithPath: captionsFile).deletingLastPathComponent().path)
        } catch let error as IngestError {
            throw ValidationError("\(error)")
        }
        if let images {
            photos = photos.subset(try imageRange(images, count: photos.photos.count, in: captionsFile))
        }
        return (photos, splits)
    }
}

/// `--images START:END` against a count of `count` (photos or images of `file`).
func imageRange(_ text: String, count: Int, in file: String) throws -> Range<Int> {
    let bounds = text.split(separator: ":", omittingEmptySubsequences: false).map { Int($0) }
    guard bounds.count == 2, let start = bounds[0], let end = bounds[1], start >= 0, start < end else {
        throw ValidationError("--images must be START:END with 0 ≤ START < END, got '\(text)'")
    }
    guard start < count else { throw ValidationError("--images \(text): \(file) has \(count)") }
    return start..<end
}

/// `amber ingest` of a folder of photos with a captions file: both modalities encoded natively,
/// in chunks of photos that each commit in one transaction, so that a re-run after a crash (or
/// after new photos arrive) encodes only what the database does not hold yet.
struct PhotoIngest {
    let photos: PhotoCaptions
    let splits: [String: Split]
    let chunkSize: Int
    let skipBadImages: Bool
    let limits: ImageLimits
    /// Put before every external id (photo file names are only unique within a folder).
    var idPrefix = ""
    /// `items.source` of what this folder adds.
    let source: String
    /// Labels earlier versions stored for this folder (the parent of a flat photo folder).
    var legacySources: Set<String> = []

    /// The source label of a folder: its name (the folder holding the captions file).
    static func defaultSource(of photos: PhotoCaptions) -> String {
        URL(fileURLWithPath: photos.captionsFile).deletingLastPathComponent().standardizedFileURL.lastPathComponent
    }

    /// What versions before 0.9 stored: the name of the image folder's parent.
    static func legacySource(of photos: PhotoCaptions) -> String {
        URL(fileURLWithPath: photos.imageDirectory).standardizedFileURL.deletingLastPathComponent().lastPathComponent
    }

    struct Summary {
        var photosEncoded = 0, captionsEncoded = 0, photosPresent = 0, skipped: [String] = []
        var report = IngestReport()
        var seconds = 0.0
    }

    /// Items already stored with features: images (id → source) and texts (id → caption, source).
    struct Stored {
        var images: [String: String] = [:]
        var texts: [String: (caption: String, source: String)] = [:]
        /// Pairs by image and text external id.
        var pairs: Set<String> = []
        static func pairKey(_ image: String, _ text: String) -> String { image + "\u{1F}" + text }
    }

    static func stored(on connection: PostgresConnection) throws -> Stored {
        var stored = Stored()
        let items = try connection.execute("""
            SELECT i.modality::text AS modality, i.external_id, i.caption, i.source FROM amber.items i
            JOIN amber.features f ON f.item_id = i.item_id
            """)
        for row in 0..<items.rowCount {
            guard let modality = try items.decode(String.self, row: row, column: "modality").flatMap(Modality.init(rawValue:)),
                  let id = try items.decode(String.self, row: row, column: "external_id") else { continue }
            let source = try items.decode(String.self, row: row, column: "source") ?? ""
            if modality == .image {
                stored.images[id] = source
            } else {
                stored.texts[id] = (try items.decode(String.self, row: row, column: "caption") ?? "", source)
            }
        }
        let pairs = try connection.execute("""
            SELECT im.external_id AS image, tx.external_id AS text FROM amber.pairs p
            JOIN amber.items im ON im.item_id = p.image_id JOIN amber.items tx ON tx.item_id = p.text_id
            """)
        for row in 0..<pairs.rowCount {
            guard let image = try pairs.decode(String.self, row: row, column: "image"),
                  let text = try pairs.decode(String.self, row: row, column: "text") else { continue }
            stored.pairs.insert(Stored.pairKey(image, text))
        }
        return stored
    }

    /// The external id of a photo's image item and of its `n`th caption.
    func imageID(_ file: String) -> String { idPrefix + file }
    func textID(_ file: String, _ n: Int) -> String { PhotoCaptions.textID(imageID(file), n) }

    /// Refuses, before anything is written, a folder whose photos or captions collide with stored
    /// items of another source (another catalogue's IMG_0001.jpg), and captions edited in place.
    func checkStored(_ stored: Stored) throws {
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

    func run(on connection: PostgresConnection, images imageEncoder: EfficientNetLiteEncoder, texts textEncoder: MiniLMEncoder) throws -> Summary {
        let started = Date()
        var summary = Summary()
        let present = try Self.stored(on: connection)
        try checkStored(present)
        let bar = ProgressBar(label: "ingest")
        let total = photos.photos.count
        var done = 0
        var start = 0
        bar.update(phase: "photos", done: 0, total: total, unit: "photos")
        while start < total {
            let chunk = photos.photos[start ..< min(start + chunkSize, total)]
            start += chunk.count
            defer {
                done += chunk.count
                bar.update(phase: "photos", done: done, total: total, unit: "photos")
            }
            let pendingImages = chunk.filter { present.images[imageID($0.file)] == nil }
            var pendingTexts: [(file: String, id: String, caption: String)] = []
            var missingPairs = false
            for photo in chunk {
                for (n, caption) in photo.captions.enumerated() {
                    let id = textID(photo.file, n)
                    if present.texts[id] == nil { pendingTexts.append((photo.file, id, caption)) }
                    if !present.pairs.contains(Stored.pairKey(imageID(photo.file), id)) { missingPairs = true }
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
                    guard skipBadImages else {
                        bar.finish()
                        throw error
                    }
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
            let report: IngestReport
            do {
                report = try Ingestor.ingest(dataset, into: connection)
            } catch {
                bar.finish()
                throw error
            }
            summary.report.imagesAdded += report.imagesAdded
            summary.report.textsAdded += report.textsAdded
            summary.report.featuresAdded += report.featuresAdded
            summary.report.pairsAdded += report.pairsAdded
            summary.report.thumbnailsAdded += report.thumbnailsAdded
            summary.photosEncoded += decoded.count
            summary.captionsEncoded += keptTexts.count
        }
        bar.finish()
        summary.seconds = Date().timeIntervalSince(started)
        return summary
    }
}
