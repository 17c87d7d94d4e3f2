import AmberCatalog
@testable import AmberIngest
@testable import AmberStore
import AmberTensor
import Foundation
import Testing

/// Writes a small dataset in the global/local layout (5 captions per image), as `amber encode` does.
struct GlobalLocalFixture {
    let directory: String
    let images: Int
    let regions: Int
    let imageDimension: Int
    let textDimension: Int

    /// `prefix` starts every image id, so that several fixtures can go into one database.
    init(images: Int = 8, regions: Int = 4, imageDimension: Int = 6, textDimension: Int = 5, seed: UInt64 = 1, prefix: String = "") throws {
        self.images = images
        self.regions = regions
        self.imageDimension = imageDimension
        self.textDimension = textDimension
        directory = NSTemporaryDirectory() + "amber-ingest-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var generator = RandomGenerator(seed: seed)
        let local = Tensor.randomNormal([images, regions, imageDimension], using: &generator)
        try NumpyFile.write(local, to: path("ims_local.npy"), as: .float16)
        try NumpyFile.write(local.mean(axis: 1), to: path("ims_global.npy"))
        try (0..<images).map { "\(prefix)image\($0).jpg" }.joined(separator: "\n").appending("\n")
            .write(toFile: path("image_ids.txt"), atomically: true, encoding: .utf8)
        let captions = images * 5
        try (0..<captions).map { "a caption number \($0), with ünïcode" }.joined(separator: "\n").appending("\n")
            .write(toFile: path("caps.txt"), atomically: true, encoding: .utf8)
        var offsets: [Int64] = [0]
        for j in 0..<captions { offsets.append(offsets.last! + Int64(3 + j % 4)) }
        try NumpyFile.write(offsets, shape: [offsets.count], to: path("caps_tok_offsets.npy"))
        try NumpyFile.write(Tensor.randomNormal([Int(offsets.last!), textDimension], using: &generator), to: path("caps_tokens.npy"), as: .float16)
        try NumpyFile.write(Tensor.randomNormal([captions, textDimension], using: &generator).l2Normalized(), to: path("caps_global.npy"))
    }

    func path(_ name: String) -> String { directory + "/" + name }
}

func count(_ connection: PostgresConnection, _ table: String) throws -> Int {
    try connection.execute("SELECT count(*) AS n FROM \(table)").value(Int.self, column: "n")
}

func databaseCounts(_ connection: PostgresConnection) throws -> [Int] {
    try ["amber.items", "amber.features", "amber.pairs", "amber.feature_dimensions"].map { try count(connection, $0) }
}

@Suite("Ingest (real PostgreSQL)")
struct IngestTests {
    @Test func ingestsTheGlobalLocalLayoutOnce() throws {
        let fixture = try GlobalLocalFixture()
        let connection = try PostgresConnection(url: try TestDatabase.fresh(migrated: true))
        let dataset = try DatasetReader.read(fixture.directory)
        var phases = Set<String>()
        let report = try Ingestor.ingest(dataset, into: connection) { phases.insert($0.phase) }
        #expect(report.imagesAdded == 8 && report.textsAdded == 40 && report.featuresAdded == 48 && report.pairsAdded == 40)
        #expect(phases == ["items", "features", "pairs"])
        // Splits: the last eighth of the images is dev.
        let splits = try connection.execute("SELECT split::text AS s, count(*) AS n FROM amber.pairs GROUP BY 1 ORDER BY 1")
        #expect(try splits.column(String.self) == ["train", "dev"].sorted())
        #expect(try splits.value(Int.self, row: 0, column: "n") == 5)
        // Stored bytes are the file's bytes; captions and external ids follow the conventions.
        let row = try connection.execute("""
            SELECT f.local_count, f.local_type::text AS lt, f.local_vectors, f.global_vector
            FROM amber.features f JOIN amber.items i USING (item_id) WHERE i.external_id = 'image3.jpg'
            """)
        let local = try NumpyFile.read(fixture.path("ims_local.npy"))
        let expectedLocal = Array(UnsafeRawBufferPointer(rebasing: local.bytes[(3 * 4 * 6 * 2) ..< (4 * 4 * 6 * 2)]))
        #expect(try row.value([UInt8].self, column: "local_vectors") == expectedLocal)
        #expect(try row.value(Int.self, column: "local_count") == 4)
        #expect(try row.value(String.self, column: "lt") == "float16")
        let text = try connection.execute("""
            SELECT i.caption, f.local_count FROM amber.items i JOIN amber.features f USING (item_id) WHERE i.external_id = 'image2.jpg#1'
            """)
        #expect(try text.value(String.self, column: "caption") == "a caption number 11, with ünïcode")
        #expect(try text.value(Int.self, column: "local_count") == 3 + 11 % 4)
        let pairOrder = try connection.execute("""
            SELECT i.external_id FROM amber.pairs p JOIN amber.items i ON i.item_id = p.text_id ORDER BY p.pair_id LIMIT 2
            """).column(String.self)
        #expect(pairOrder == ["image0.jpg#0", "image0.jpg#1"])

        let again = try Ingestor.ingest(try DatasetReader.read(fixture.directory), into: connection)
        #expect(again.itemsAdded == 0 && again.featuresAdded == 0 && again.pairsAdded == 0)
        #expect(try databaseCounts(connection) == [48, 48, 40, 2])
    }

    @Test func splitsComeFromMetaJSONUnlessGiven() throws {
        let fixture = try GlobalLocalFixture(images: 8)
        defer { try? FileManager.default.removeItem(atPath: fixture.directory) }
        func splits(_ options: DatasetReader.Options = .init()) throws -> [Split] {
            try DatasetReader.read(fixture.directory, options: options).pairs.map(\.split)
        }
        // No meta.json: the last eighth is dev.
        #expect(try splits().filter { $0 == .dev }.count == 5)
        try #"{"n_images": 8, "dev_start": 5, "test_start": 7}"#.write(toFile: fixture.path("meta.json"), atomically: true, encoding: .utf8)
        #expect(try splits() == Array(repeating: .train, count: 25) + Array(repeating: .dev, count: 10) + Array(repeating: .test, count: 5))
        #expect(try splits(.init(devStart: 6)).filter { $0 == .dev }.count == 5, "an option wins over meta.json")
        for bad in [#"{"dev_start": 9}"#, #"{"dev_start": "5"}"#, #"{"dev_start": 5, "test_start": 2}"#, "[1]", #"{"dev_start": true}"#] {
            try bad.write(toFile: fixture.path("meta.json"), atomically: true, encoding: .utf8)
            do { _ = try splits(); Issue.record("\(bad) accepted") } catch {
                #expect("\(error)".contains("meta.json"), "\(error)")
            }
        }
    }

    @Test func ingestsTheSCANPrecompLayout() throws {
        let directory = NSTemporaryDirectory() + "amber-precomp-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var generator = RandomGenerator(seed: 3)
        for (split, count) in [("train", 3), ("dev", 2)] {
            try NumpyFile.write(Tensor.randomNormal([count, 3, 4], using: &generator), to: "\(directory)/\(split)_ims.npy")
            try (0..<(count * 5)).map { "\(split) caption \($0)" }.joined(separator: "\n")
                .write(toFile: "\(directory)/\(split)_caps.txt", atomically: true, encoding: .utf8)
            try (0..<count).map { "\(1000 + $0)" }.joined(separator: "\n")
                .write(toFile: "\(directory)/\(split)_ids.txt", atomically: true, encoding: .utf8)
        }
        let connection = try PostgresConnection(url: try TestDatabase.fresh(migrated: true))
        let dataset = try DatasetReader.read(directory)
        #expect(dataset.texts.allSatisfy { $0.features == nil })
        let report = try Ingestor.ingest(dataset, into: connection)
        #expect(report.imagesAdded == 5 && report.textsAdded == 25 && report.featuresAdded == 5 && report.pairsAdded == 25)
        // The global vector is the mean of the regions, as float32.
        let ims = try NumpyFile.read("\(directory)/dev_ims.npy").tensor()
        let expected = ims.slice(axis: 0, 1..<2).mean(axis: 1).scalars
        let stored = try connection.execute("""
            SELECT f.global_vector FROM amber.features f JOIN amber.items i USING (item_id) WHERE i.external_id = 'dev/1001'
            """).value([UInt8].self, column: "global_vector")
        let values = stored.withUnsafeBytes { raw in (0..<4).map { Float(bitPattern: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self)) } }
        for (a, b) in zip(values, expected) { #expect(abs(a - b) < 1e-6) }
        let splits = try connection.execute("SELECT count(*) FILTER (WHERE split = 'dev') AS dev FROM amber.pairs")
        #expect(try splits.value(Int.self, column: "dev") == 10)
    }

    /// Each broken input is refused with the file and the problem, before anything is written.
    @Test func malformedInputsAreRejectedWithFileAndProblem() throws {
        typealias Breakage = (String, (GlobalLocalFixture) throws -> Void, String, String)
        let cases: [Breakage] = [
            ("row count", { f in try NumpyFile.write(Tensor.zeros([7, 6]), to: f.path("ims_global.npy")) },
             "ims_global.npy", "has 7 rows but image_ids.txt lists 8 images"),
            ("captions", { f in
                try (0..<39).map { "c\($0)" }.joined(separator: "\n").write(toFile: f.path("caps.txt"), atomically: true, encoding: .utf8)
             }, "caps.txt", "has 39 captions for 8 images; expected 5 per image (40)"),
            ("NaN", { f in
                var bad = try NumpyFile.read(f.path("caps_global.npy")).tensor()
                bad[12, 2] = .nan
                try NumpyFile.write(bad, to: f.path("caps_global.npy"))
             }, "caps_global.npy", "row 12 holds a NaN, infinite or too large value (element 2)"),
            ("infinity", { f in
                var bad = try NumpyFile.read(f.path("ims_local.npy")).tensor()
                bad[5, 1, 0] = .infinity
                try NumpyFile.write(bad, to: f.path("ims_local.npy"), as: .float16)
             }, "ims_local.npy", "row 5 holds a NaN, infinite or too large value"),
            ("huge", { f in
                var bad = try NumpyFile.read(f.path("caps_global.npy")).tensor()
                bad[3, 1] = 3e38
                try NumpyFile.write(bad, to: f.path("caps_global.npy"))
             }, "caps_global.npy", "row 3 holds a NaN, infinite or too large value"),
            ("one token", { f in
                var offsets = try NumpyFile.read(f.path("caps_tok_offsets.npy")).int64Values()
                offsets[1] = 1
                try NumpyFile.write(offsets, shape: [offsets.count], to: f.path("caps_tok_offsets.npy"))
             },
             "caps_tok_offsets.npy", "caption 0 has 1 tokens"),
            ("NUL in an id", { f in
                try (0..<8).map { "image\($0)\($0 == 3 ? "\u{0}x" : "").jpg" }.joined(separator: "\n")
                    .write(toFile: f.path("image_ids.txt"), atomically: true, encoding: .utf8)
             }, "image_ids.txt", "NUL"),
            ("truncated", { f in
                let data = try Data(contentsOf: URL(fileURLWithPath: f.path("caps_tokens.npy")))
                try data.prefix(data.count - 10).write(to: URL(fileURLWithPath: f.path("caps_tokens.npy")))
             }, "caps_tokens.npy", "truncated data"),
            ("wrong rank", { f in try NumpyFile.write(Tensor.zeros([8, 24]), to: f.path("ims_local.npy")) },
             "ims_local.npy", "expected 3 axes"),
            ("offsets", { f in try NumpyFile.write([0, 5], shape: [2], to: f.path("caps_tok_offsets.npy")) },
             "caps_tok_offsets.npy", "has 2 offsets; expected one per caption plus one (41)"),
            ("duplicate id", { f in
                try (0..<8).map { "image\($0 == 6 ? 2 : $0).jpg" }.joined(separator: "\n")
                    .write(toFile: f.path("image_ids.txt"), atomically: true, encoding: .utf8)
             }, "image_ids.txt", "duplicate id 'image2.jpg'"),
            ("missing file", { f in try FileManager.default.removeItem(atPath: f.path("caps.txt")) }, "caps.txt", "missing"),
        ]
        for (name, breakIt, file, problem) in cases {
            let fixture = try GlobalLocalFixture()
            try breakIt(fixture)
            do {
                _ = try DatasetReader.read(fixture.directory)
                Issue.record("\(name): the broken input was accepted")
            } catch let error as IngestError {
                #expect(error.file.hasSuffix(file), "\(name): \(error)")
                #expect(error.description.contains(problem), "\(name): \(error)")
            }
        }
    }

    @Test func aFailureInsideTheTransactionLeavesNothing() throws {
        let connection = try PostgresConnection(url: try TestDatabase.fresh(migrated: true))
        try Ingestor.ingest(try DatasetReader.read(try GlobalLocalFixture(images: 8).directory), into: connection)
        let before = try databaseCounts(connection)
        // New items of other dimensions: the check fails after items were staged and inserted.
        let other = try GlobalLocalFixture(images: 16, imageDimension: 7, seed: 9)
        try FileManager.default.moveItem(atPath: other.path("image_ids.txt"), toPath: other.path("ids.tmp"))
        try (0..<16).map { "other\($0).jpg" }.joined(separator: "\n").write(toFile: other.path("image_ids.txt"), atomically: true, encoding: .utf8)
        do {
            _ = try Ingestor.ingest(try DatasetReader.read(other.directory), into: connection)
            Issue.record("features of other dimensions must be refused")
        } catch let error as IngestError {
            #expect(error.description.contains("image features are 7 global + n×7 local, but the database holds image features of 6 + n×6"))
        }
        #expect(try databaseCounts(connection) == before)
        #expect(connection.isHealthy)
    }

    @Test func killingTheIngestHalfwayLeavesTheDatabaseAsItWas() throws {
        let url = try TestDatabase.fresh(migrated: true)
        let connection = try PostgresConnection(url: url)
        try Ingestor.ingest(try DatasetReader.read(try GlobalLocalFixture(images: 8, imageDimension: 256).directory), into: connection)
        let before = try databaseCounts(connection)
        // Large enough that the COPY of features takes a while (≈ 20 MB of float16 locals).
        let big = try GlobalLocalFixture(images: 800, regions: 49, imageDimension: 256, seed: 5)
        // Same dimensions as the first ingest, new ids: rewrite image ids.
        try (0..<800).map { "big\($0).jpg" }.joined(separator: "\n").write(toFile: big.path("image_ids.txt"), atomically: true, encoding: .utf8)
        let process = try AmberProcess.launch(["ingest", big.directory, "--database-url", url])
        // Kill as soon as features are streaming, well before the commit.
        let killedAt = try process.killWhenStderrContains("features", timeout: 60)
        #expect(killedAt, "the ingest never reported its features phase; stderr: \(process.stderrText)")
        #expect(process.terminatedBySignal, "the ingest finished before it could be killed; make the fixture bigger")
        // The server notices the broken connection and rolls back.
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline, try connection.execute("SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()").value(Int.self, column: "n") > 0 {
            usleep(50_000)
        }
        #expect(try databaseCounts(connection) == before)
        // And the same ingest then completes.
        let report = try Ingestor.ingest(try DatasetReader.read(big.directory), into: connection)
        #expect(report.imagesAdded == 800)
    }
}


/// The `amber` executable of this build, run as a child process.
final class AmberProcess {
    let pid: pid_t
    private let stderrPath: String
    private let stdoutPath: String
    private(set) var terminatedBySignal = false

    static var executable: String {
        // Tests run from .build/<triple>/debug/…xctest; the executable sits beside it.
        let candidates = [
            Bundle.main.bundleURL.deletingLastPathComponent().appendingPathComponent("amber").path,
            Bundle.main.bundleURL.appendingPathComponent("amber").path,
            TestDatabase.repositoryRoot + "/.build/debug/amber",
        ]
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) } ?? candidates.last!
    }

    private init(pid: pid_t, stdoutPath: String, stderrPath: String) {
        self.pid = pid
        self.stdoutPath = stdoutPath
        self.stderrPath = stderrPath
    }

    static func launch(_ arguments: [String], environment: [String: String]? = nil) throws -> AmberProcess {
        let base = NSTemporaryDirectory() + "amber-child-\(UUID().uuidString)"
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, base + ".out", O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_addopen(&actions, 2, base + ".err", O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        let argv = [executable] + arguments
        var cArguments = argv.map { strdup($0) } + [nil]
        defer { for pointer in cArguments { free(pointer) } }
        var cEnvironment = (environment ?? ProcessInfo.processInfo.environment).map { strdup("\($0)=\($1)") } + [nil]
        defer { for pointer in cEnvironment { free(pointer) } }
        var pid: pid_t = 0
        let status = posix_spawn(&pid, executable, &actions, nil, &cArguments, &cEnvironment)
        guard status == 0 else { throw IngestError(file: executable, "cannot launch: \(String(cString: strerror(status)))") }
        return AmberProcess(pid: pid, stdoutPath: base + ".out", stderrPath: base + ".err")
    }

    var stderrText: String { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }
    var stdoutText: String { (try? String(contentsOfFile: stdoutPath, encoding: .utf8)) ?? "" }

    /// Waits for the child to exit; its exit status (128 + signal when killed).
    func wait() -> Int32 {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return status & 0x7F == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
    }

    /// Sends SIGKILL once stderr contains `marker`; returns whether it did before the child
    /// exited or `timeout` passed. Reaps the child.
    func killWhenStderrContains(_ marker: String, timeout: Double) throws -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        var status: Int32 = 0
        while Date() < deadline {
            if stderrText.contains(marker) {
                kill(pid, SIGKILL)
                waitpid(pid, &status, 0)
                terminatedBySignal = status & 0x7F == SIGKILL
                return true
            }
            if waitpid(pid, &status, WNOHANG) == pid { return false }
            usleep(2_000)
        }
        kill(pid, SIGKILL)
        waitpid(pid, &status, 0)
        return false
    }
}
