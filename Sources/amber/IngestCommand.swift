import AmberStore
import ArgumentParser
import Foundation

struct IngestCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ingest",
        abstract: "Load items, features and pairs from a directory into the database, in one transaction.",
        discussion: """
        Layouts: the global/local layout of flickr8k-800 (ims_global.npy, ims_local.npy, image_ids.txt, \
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

    @Flag(help: "Apply pending migrations first.")
    var migrate = false

    @OptionGroup var database: DatabaseOptions

    func validate() throws {
        guard (1...1000).contains(captionsPerImage) else { throw ValidationError("--captions-per-image must be 1…1000, got \(captionsPerImage)") }
        if let devStart, devStart < 0 { throw ValidationError("--dev-start must not be negative, got \(devStart)") }
        if let testStart, testStart < 0 { throw ValidationError("--test-start must not be negative, got \(testStart)") }
    }

    func run() throws {
        let readStart = Date()
        var dataset: IngestDataset
        do {
            dataset = try DatasetReader.read(directory, options: .init(captionsPerImage: captionsPerImage, devStart: devStart, testStart: testStart))
        } catch let error as IngestError {
            throw ValidationError("\(error)")
        }
        if let images {
            let bounds = images.split(separator: ":", omittingEmptySubsequences: false).map { Int($0) }
            guard bounds.count == 2, let start = bounds[0], let end = bounds[1], start >= 0, start < end else {
                throw ValidationError("--images must be START:END with 0 ≤ START < END, got '\(images)'")
            }
            guard start < dataset.images.count else {
                throw ValidationError("--images \(images): \(directory) has \(dataset.images.count) images")
            }
            dataset = dataset.subset(images: start..<end)
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
        }
    }
}
