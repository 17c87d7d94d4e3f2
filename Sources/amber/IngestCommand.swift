import AmberCatalog
import AmberIngest
import AmberImage
import AmberStore
import ArgumentParser
import Foundation

struct IngestCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ingest",
        abstract: "Load photos and captions (encoded natively) or precomputed features into the database; each load commits whole.",
        discussion: """
        Photos: a folder of JPEG/PNG files (in DIR or DIR/images) with a captions file — the Flickr8k \
        token format (name.jpg#n<TAB>caption), a TSV or CSV with a header row (image, caption[, split]), \
        or COCO captions JSON; both modalities are encoded natively (EfficientNet-Lite0, MiniLM) in \
        chunks that each commit, so a re-run encodes only what is missing. Splits come from a split \
        column, from train_images.txt/dev_images.txt/test_images.txt beside the captions, or one photo \
        in eight (by a hash of its name) is dev. \
        Features: the global/local layout amber encode writes (ims_global.npy, ims_local.npy, image_ids.txt, \
        caps.txt, caps_global.npy, caps_tokens.npy, caps_tok_offsets.npy) and the SCAN/VSE precomp layout \
        ({split}_ims.npy, {split}_caps.txt, {split}_ids.txt). Re-ingesting a directory adds nothing. \
        Invalid input is rejected with the file and the problem, and nothing is written.
        """
    )

    @Argument(help: "The directory to ingest.")
    var directory: String

    @Option(help: "Global/local layout: images from this index on are dev (default: the last eighth).")
    var devStart: Int?

    @Option(help: "Global/local layout: images from this index on are test (default: none).")
    var testStart: Int?

    @Option(help: "Captions per image (caption j belongs to image j / N).")
    var captionsPerImage: Int = 5

    @Option(help: "Only these images (positions in the directory, START:END, END excluded) with their captions and pairs, e.g. 0:100.")
    var images: String?

    @OptionGroup var photoFolder: PhotoFolderOptions

    @Option(help: "Photos: photos encoded and committed together.")
    var chunk: Int = 128

    @Flag(help: "Photos: skip (and list) image files that cannot be decoded instead of stopping at the first.")
    var skipBadImages = false

    @Option(help: "Photos: put this before every external id (file names are only unique within a folder), e.g. 'shop-a/'.")
    var idPrefix: String = ""

    @Option(help: "Photos: the source label stored with the items (default: the folder's name).")
    var source: String?

    @OptionGroup var imageModel: ImageModelOptions

    @OptionGroup var textModel: TextModelOptions

    @Option(help: "Categories of items: a file of 'modality<TAB>external_id<TAB>label' lines, added after the items (default: labels.tsv in the directory, if there).")
    var labels: String?

    @Flag(help: "Apply pending migrations first.")
    var migrate = false

    @OptionGroup var database: DatabaseOptions

    func validate() throws {
        guard (1...1000).contains(captionsPerImage) else { throw ValidationError("--captions-per-image must be 1…1000, got \(captionsPerImage)") }
        if let devStart, devStart < 0 { throw ValidationError("--dev-start must not be negative, got \(devStart)") }
        if let testStart, testStart < 0 { throw ValidationError("--test-start must not be negative, got \(testStart)") }
        guard (1...4096).contains(chunk) else { throw ValidationError("--chunk must be 1…4096, got \(chunk)") }
        for (name, value) in [("--id-prefix", idPrefix), ("--source", source ?? "x")] {
            guard value.utf8.count <= 200, !value.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
                throw ValidationError("\(name) must be at most 200 bytes without control characters")
            }
        }
        if source?.isEmpty == true { throw ValidationError("--source must not be empty") }
    }

    var isPhotoDirectory: Bool { photoFolder.given || PhotoCaptions.looksLikePhotoDirectory(directory) }

    /// The labels file, read and checked before anything is written (nil when there is none).
    func labelFile() throws -> LabelFile? {
        let path = labels ?? (directory as NSString).appendingPathComponent(LabelFile.defaultName)
        guard labels != nil || FileManager.default.fileExists(atPath: path) else { return nil }
        do { return try LabelFile.read(path, idPrefix: isPhotoDirectory ? idPrefix : "") } catch let error as IngestError { throw ValidationError("\(error)") }
    }

    /// Adds the labels of `file` after the items were written.
    func addLabels(_ file: LabelFile?, on connection: PostgresConnection) throws {
        guard let file else { return }
        do {
            let added = try ItemLabels.add(file, on: connection)
            print("added \(added) labels from \(file.path) (\(file.entries.count - added) were there already)")
        } catch let error as IngestError {
            throw ValidationError("\(error) (the items are ingested; no label of the file was written)")
        }
    }

    func runPhotos() throws {
        let labelFile = try labelFile()
        let readStart = Date()
        let (photos, splits) = try photoFolder.read(directory, images: images)
        let captionsFile = photos.captionsFile
        let captionCount = photos.photos.reduce(0) { $0 + $1.captions.count }
        let counts = Dictionary(grouping: photos.photos, by: { splits[$0.file] ?? .train }).mapValues(\.count)
        FileHandle.standardError.write(Data(String(format: "read %d photos with %d captions from %@ (%@; train %d, dev %d, test %d) in %.1fs\n",
                                                   photos.photos.count, captionCount, captionsFile, photos.format.rawValue,
                                                   counts[.train] ?? 0, counts[.dev] ?? 0, counts[.test] ?? 0,
                                                   Date().timeIntervalSince(readStart)).utf8))
        let imageEncoder = try imageModel.load()
        let textEncoder = try textModel.load()
        try database.withDatabase { url in
            let connection = try PostgresConnection(url: url)
            if migrate { try Migrator(directory: Migrator.defaultDirectory()).migrateUp(on: connection) }
            var ingest = PhotoIngest(photos: photos, splits: splits, chunkSize: chunk, skipBadImages: skipBadImages, limits: .standard,
                                     source: source ?? PhotoIngest.defaultSource(of: photos))
            ingest.idPrefix = idPrefix
            if source == nil { ingest.legacySources = [PhotoIngest.legacySource(of: photos)] }
            let summary: PhotoIngest.Summary
            let bar = ProgressBar(label: "ingest")
            do {
                defer { bar.finish() }
                summary = try ingest.run(into: PostgresCatalogWriter(connection: connection), images: imageEncoder, texts: textEncoder) { done, total in
                    bar.update(phase: "photos", done: done, total: total, unit: "photos")
                }
            } catch let error as IngestError {
                throw ValidationError("\(error) (photos before it are committed; a re-run continues from there)")
            }
            let r = summary.report
            print(String(format: "encoded %d photos and %d captions (%d photos already in the database); added %d images, %d texts, %d feature rows, %d pairs, %d thumbnails in %.1fs (%.1f photos/s)",
                         summary.photosEncoded, summary.captionsEncoded, summary.photosPresent, r.imagesAdded, r.textsAdded,
                         r.featuresAdded, r.pairsAdded, r.thumbnailsAdded, summary.seconds, Double(summary.photosEncoded) / max(summary.seconds, 1e-9)))
            if !summary.skipped.isEmpty {
                print("skipped \(summary.skipped.count) undecodable photos: \(summary.skipped.prefix(10).joined(separator: ", "))\(summary.skipped.count > 10 ? ", …" : "")")
            }
            try addLabels(labelFile, on: connection)
        }
    }

    func run() throws {
        if isPhotoDirectory { return try runPhotos() }
        let labelFile = try labelFile()
        let readStart = Date()
        var dataset: IngestDataset
        do {
            dataset = try DatasetReader.read(directory, options: .init(captionsPerImage: captionsPerImage, devStart: devStart, testStart: testStart))
        } catch let error as IngestError {
            throw ValidationError("\(error)")
        }
        if let images {
            dataset = dataset.subset(images: try imageRange(images, count: dataset.images.count, in: directory))
        }
        FileHandle.standardError.write(Data(String(format: "read and validated %d images, %d texts, %d pairs in %.1fs\n",
                                                   dataset.images.count, dataset.texts.count, dataset.pairs.count,
                                                   Date().timeIntervalSince(readStart)).utf8))
        try database.withDatabase { url in
            let connection = try PostgresConnection(url: url)
            if migrate { try Migrator(directory: Migrator.defaultDirectory()).migrateUp(on: connection) }
            let bar = ProgressBar(label: "ingest")
            let report: IngestReport
            do {
                report = try Ingestor.ingest(dataset, into: connection) { bar.update(phase: $0.phase, done: $0.done, total: $0.total) }
            } catch let error as IngestError {
                bar.finish()
                throw ValidationError("\(error)")
            }
            bar.finish()
            let items = dataset.images.count + dataset.texts.count
            print(String(format: "added %d images, %d texts, %d feature rows, %d pairs (%.2fs, %.0f items/s)",
                         report.imagesAdded, report.textsAdded, report.featuresAdded, report.pairsAdded,
                         report.seconds, Double(items) / max(report.seconds, 1e-9)))
            let missing = dataset.texts.filter { $0.features == nil }.count
            if missing > 0 {
                print("\(missing) texts have no features in this layout; the text encoder computes them")
            }
            try addLabels(labelFile, on: connection)
        }
    }
}
