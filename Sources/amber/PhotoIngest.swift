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

    struct Summary {
        var photosEncoded = 0, captionsEncoded = 0, photosPresent = 0, skipped: [String] = []
        var report = IngestReport()
        var seconds = 0.0
    }

    /// External ids of items that already have features, per modality.
    /// External ids of items that already have features: images, and texts with their captions.
    static func encodedItems(on connection: PostgresConnection) throws -> (images: Set<String>, texts: [String: String]) {
        let result = try connection.execute("""
            SELECT i.modality::text AS modality, i.external_id, i.caption FROM amber.items i
            JOIN amber.features f ON f.item_id = i.item_id
            """)
        var images = Set<String>(), texts: [String: String] = [:]
        for row in 0..<result.rowCount {
            guard let modality = try result.decode(String.self, row: row, column: "modality"),
                  let id = try result.decode(String.self, row: row, column: "external_id") else { continue }
            if modality == "image" { images.insert(id) } else { texts[id] = try result.decode(String.self, row: row, column: "caption") ?? "" }
        }
        return (images, texts)
    }

    /// A caption whose id (photo#n, its position among the photo's captions) is stored with
    /// another text: the file was edited in place. Refused before anything is written.
    func checkStoredCaptions(_ stored: [String: String]) throws {
        for photo in photos.photos {
            for (n, caption) in photo.captions.enumerated() {
                let id = PhotoCaptions.textID(photo.file, n)
                if let existing = stored[id], existing != caption {
                    throw IngestError(file: photos.captionsFile, "caption \(n + 1) of \(photo.file) ('\(caption)') differs from the stored \(id) ('\(existing)'): captions are identified by their position among a photo's captions, so add new ones after the existing ones")
                }
            }
        }
    }

    func run(on connection: PostgresConnection, images imageEncoder: EfficientNetLiteEncoder, texts textEncoder: MiniLMEncoder) throws -> Summary {
        let started = Date()
        var summary = Summary()
        let present = try Self.encodedItems(on: connection)
        try checkStoredCaptions(present.texts)
        let source = URL(fileURLWithPath: photos.imageDirectory).deletingLastPathComponent().lastPathComponent
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
            let pendingImages = chunk.filter { !present.images.contains($0.file) }
            var pendingTexts: [(id: String, caption: String)] = []
            for photo in chunk {
                for (n, caption) in photo.captions.enumerated() where present.texts[PhotoCaptions.textID(photo.file, n)] == nil {
                    pendingTexts.append((PhotoCaptions.textID(photo.file, n), caption))
                }
            }
            summary.photosPresent += chunk.count - pendingImages.count
            if pendingImages.isEmpty && pendingTexts.isEmpty { continue }

            // Decode; a bad file stops the ingest (chunks before it stay committed) unless skipped.
            // Each photo is cut to the network's input size and its thumbnail made as soon as it is
            // decoded (the encoder would resize it the same way), so a chunk never holds originals.
            let size = imageEncoder.architecture.imageSize
            var decoded: [(String, RGBImage)] = []
            var thumbnails: [String: StoredImage] = [:]
            for photo in pendingImages {
                let path = photos.imageDirectory + "/" + photo.file
                do {
                    guard let data = FileManager.default.contents(atPath: path) else {
                        throw IngestError(file: path, "cannot be read")
                    }
                    do {
                        let image = try ImageDecoder.decode([UInt8](data), limits: limits)
                        thumbnails[photo.file] = StoredImage.thumbnail(of: image)
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
                images.append(IngestImage(externalID: file, encoded: IngestFeatures(
                    encodedGlobal: store.block(encoding.globalVector.scalars, rows: 1, dimension: local.shape[1], as: .float32),
                    local: store.block(local.scalars, rows: local.shape[0], dimension: local.shape[1], as: .float16))))
            }
            // Photos already encoded are named without features: their rows exist.
            for photo in chunk where present.images.contains(photo.file) {
                images.append(IngestImage(externalID: photo.file))
            }
            let keptTexts = pendingTexts.filter { !skipped.contains(String($0.id[..<($0.id.lastIndex(of: "#") ?? $0.id.endIndex)])) }
            let textEncodings = textEncoder.encode(keptTexts.map(\.caption))
            var texts: [IngestText] = []
            for (text, encoding) in zip(keptTexts, textEncodings) {
                let tokens = encoding.tokenVectors
                texts.append(IngestText(externalID: text.id, caption: text.caption, encoded: IngestFeatures(
                    encodedGlobal: store.block(encoding.sentenceVector.scalars, rows: 1, dimension: tokens.shape[1], as: .float32),
                    local: store.block(tokens.scalars, rows: tokens.shape[0], dimension: tokens.shape[1], as: .float16))))
            }
            let keptIDs = Set(keptTexts.map(\.id))
            var pairs: [IngestPair] = []
            for photo in chunk where !skipped.contains(photo.file) {
                let split = splits[photo.file] ?? PhotoCaptions.defaultSplit(photo.file)
                for n in photo.captions.indices where keptIDs.contains(PhotoCaptions.textID(photo.file, n)) {
                    pairs.append(IngestPair(image: photo.file, text: PhotoCaptions.textID(photo.file, n), split: split))
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
