import AmberCatalog
import AmberIngest
import AmberStore
import AmberTensor
import ArgumentParser
import Foundation

struct StoreBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "store",
        abstract: "Ingest rate (items/s) of a dataset and the time to write a memory bank in one transaction."
    )

    @Option(help: "Dataset to ingest (default: .amber/features/flickr8k, from ops/dev/flickr8k-features, when present).")
    var data: String?

    @Option(help: "Bank entries per modality.")
    var bankSize: Int = 4096

    @Option(help: "Embedding dimension of bank entries.")
    var dimension: Int = 1024

    @Option(help: "Repetitions of the bank write (median reported).")
    var repetitions: Int = 5

    @OptionGroup var database: DatabaseOptions

    func run() throws {
        print("amber bench store")
        print("machine: \(MachineDescription.current)")
        try database.withDatabase { url in
            // A scratch database on the same server, dropped at the end.
            let admin = try PostgresConnection(url: url)
            let name = "amber_bench_\(getpid())"
            try admin.executeScript("DROP DATABASE IF EXISTS \(name)")
            try admin.executeScript("CREATE DATABASE \(name)")
            defer { try? admin.executeScript("DROP DATABASE IF EXISTS \(name) WITH (FORCE)") }
            guard var components = URLComponents(string: url) else {
                throw ValidationError("--database-url: '\(url)' is not a URL (postgresql://user@host:port/database)")
            }
            components.path = "/" + name
            guard let scratchURL = components.string else {
                throw ValidationError("--database-url: cannot name a scratch database on '\(url)'")
            }
            let connection = try PostgresConnection(url: scratchURL)
            print("server: \(try connection.execute("SHOW server_version").value(String.self, column: "server_version")), scratch database \(name)\n")
            try Migrator(directory: Migrator.defaultDirectory()).migrateUp(on: connection)
            try ingest(connection)
            try bankWrite(connection)
        }
    }

    func ingest(_ connection: PostgresConnection) throws {
        let directory = data ?? OfflineDataOptions.defaultData
        guard FileManager.default.fileExists(atPath: directory) else {
            print("ingest: skipped (no dataset at \(directory); pass --data)\n")
            return
        }
        let readStart = Date()
        let dataset = try DatasetReader.read(directory)
        let readSeconds = Date().timeIntervalSince(readStart)
        let features: [IngestFeatures] = dataset.images.compactMap(\.features) + dataset.texts.compactMap(\.features)
        var bytes = 0
        for feature in features { bytes += feature.global.bytes.count + feature.local.bytes.count }
        let report = try Ingestor.ingest(dataset, into: connection)
        let items = report.itemsAdded
        print("ingest of \(directory): \(dataset.images.count) images, \(dataset.texts.count) texts, \(dataset.pairs.count) pairs, \(bytes >> 20) MiB of features")
        print(String(format: "  read + validate %.2fs; database transaction %.2fs: %.0f items/s, %.0f MiB/s of features",
                     readSeconds, report.seconds, Double(items) / report.seconds, Double(bytes) / 1_048_576 / report.seconds))
        let again = try Ingestor.ingest(try DatasetReader.read(directory), into: connection)
        print(String(format: "  re-ingest (adds %d items): %.2fs", again.itemsAdded, again.seconds))
        // `features` points into the dataset's mapped files: keep them mapped until the bound is measured.
        try withExtendedLifetime(dataset) {
            try serverBound(connection, features: features, items: items, ingestSeconds: report.seconds)
        }
    }

    /// The floor of the server's write path for the same bytes: one `COPY` of every item's
    /// feature bytes into a bare table (no index, no constraint, no TOAST compression), in one
    /// durable transaction; then with every blob cut to half its size (the bytes a layout with
    /// one byte per value instead of two would write).
    func serverBound(_ connection: PostgresConnection, features: [IngestFeatures], items: Int, ingestSeconds: Double) throws {
        try connection.executeScript("""
            CREATE TABLE bench_bound (id bigint, global bytea, local bytea);
            ALTER TABLE bench_bound ALTER COLUMN global SET STORAGE EXTERNAL, ALTER COLUMN local SET STORAGE EXTERNAL;
            """)
        defer { try? connection.executeScript("DROP TABLE IF EXISTS bench_bound") }
        for (label, fraction) in [("same bytes", 1.0), ("half the bytes", 0.5)] {
            try connection.executeScript("TRUNCATE bench_bound")
            // The rows are made before the clock starts: only the server's work is timed.
            let rows: [[PostgresValue]] = features.enumerated().map { index, feature in
                [.int(Int64(index)), .bytes(Array(feature.global.bytes.prefix(Int(Double(feature.global.bytes.count) * fraction)))),
                 .bytes(Array(feature.local.bytes.prefix(Int(Double(feature.local.bytes.count) * fraction))))]
            }
            let bytes = rows.reduce(0) { total, row in
                total + row.reduce(0) { if case .bytes(let b) = $1 { return $0 + b.count } else { return $0 } }
            }
            let start = Date()
            try connection.executeScript("BEGIN")
            _ = try connection.copy(into: "bench_bound", columns: ["id", "global", "local"]) { sink in
                for row in rows { try sink.append(row) }
            }
            try connection.executeScript("COMMIT")
            let seconds = Date().timeIntervalSince(start)
            print(String(format: "  server bound, bare COPY of %@ (%d MiB): %.2fs: %.0f items/s, %.0f MiB/s (Amber's ingest: %.0f%% of this rate)",
                         label, bytes >> 20, seconds, Double(features.count) / seconds, Double(bytes) / 1_048_576 / seconds,
                         100 * seconds / ingestSeconds * Double(items) / Double(features.count)))
        }
        print("")
    }

    func bankWrite(_ connection: PostgresConnection) throws {
        // Items for the bank to reference (not timed).
        let run = try connection.execute("INSERT INTO amber.training_runs (seed) VALUES (1) RETURNING run_id").value(Int64.self, column: "run_id")
        try connection.copy(into: "amber.items", columns: ["modality", "external_id", "caption"]) { sink in
            for i in 0..<bankSize {
                try sink.append([.text("image"), .text("bench-image-\(i)"), .null])
                try sink.append([.text("text"), .text("bench-text-\(i)"), .text("caption \(i)")])
            }
        }
        let ids = try connection.execute("SELECT item_id, modality::text AS m FROM amber.items WHERE external_id LIKE 'bench-%' ORDER BY item_id")
        var imageIDs: [Int64] = [], textIDs: [Int64] = []
        for row in 0..<ids.rowCount {
            let id = try ids.value(Int64.self, row: row, column: "item_id")
            if try ids.value(String.self, row: row, column: "m") == "image" { imageIDs.append(id) } else { textIDs.append(id) }
        }
        var generator = RandomGenerator(seed: 1)
        func entries(step: Int64) -> [BankSlot] {
            (0..<bankSize).flatMap { slot -> [BankSlot] in
                let image = Tensor.randomNormal([dimension], using: &generator).l2Normalized().scalars
                let text = Tensor.randomNormal([dimension], using: &generator).l2Normalized().scalars
                return [
                    BankSlot(modality: .image, slot: slot, itemID: imageIDs[slot], pairID: nil, imageID: imageIDs[slot], embedding: image,
                             prototype: slot % 64, ambiguity: 0.5, neighbourItemID: nil, enqueuedStep: Int(step)),
                    BankSlot(modality: .text, slot: slot, itemID: textIDs[slot], pairID: nil, imageID: imageIDs[slot], embedding: text,
                             prototype: slot % 64, ambiguity: 0.5, neighbourItemID: nil, enqueuedStep: Int(step)),
                ]
            }
        }
        var times: [Double] = []
        for repetition in 0..<repetitions {
            let batch = entries(step: Int64(repetition))
            let start = Date()
            try connection.transaction { try MemoryBankStore.replace(batch, run: run, on: connection) }
            times.append(Date().timeIntervalSince(start))
        }
        let median = times.sorted()[times.count / 2]
        let floats = 2 * bankSize * dimension
        print("memory bank write: 2 × \(bankSize) × \(dimension) floats (\((floats * 4) >> 20) MiB) replacing every slot, one transaction")
        print(String(format: "  median %.3fs over %d (min %.3fs, max %.3fs): %.0f rows/s, %.0f MiB/s",
                     median, times.count, times.min()!, times.max()!, Double(2 * bankSize) / median,
                     Double(floats * 4) / 1_048_576 / median))
    }
}
