import AmberCatalog
@testable import AmberStore
import AmberModel
import AmberTensor
import Foundation
import Testing

/// Runs `amber` to completion; returns exit status, stdout and stderr. (posix_spawn and
/// waitpid rather than Foundation's Process, whose waitUntilExit can miss a child's exit on
/// Linux when other code reaps children too.)
func runAmber(_ arguments: [String], environment: [String: String] = [:]) throws -> (status: Int32, output: String, error: String) {
    var env = ProcessInfo.processInfo.environment
    env.removeValue(forKey: "AMBER_DATABASE_URL")
    for (key, value) in environment { env[key] = value }
    let process = try AmberProcess.launch(arguments, environment: env)
    let status = process.wait()
    return (status, process.stdoutText, process.stderrText)
}

@Suite("The amber command line (real PostgreSQL)")
struct CommandLineTests {
    @Test func embeddedClusterLifecycleAndMigrations() throws {
        let home = "/tmp/amber-cli-home-\(UUID().uuidString.prefix(8))"
        defer {
            _ = try? runAmber(["db", "stop", "--home", home])
            try? FileManager.default.removeItem(atPath: home)
        }
        #expect(try runAmber(["db", "status", "--home", home]).output.contains("not initialised"))
        let start = try runAmber(["db", "start", "--home", home])
        #expect(start.status == 0, "\(start.error)")
        #expect(start.output.contains("started PostgreSQL"))
        #expect(try runAmber(["db", "start", "--home", home]).output.contains("already running"))
        #expect(try runAmber(["db", "status", "--home", home]).output.contains("running (pid"))
        let url = try runAmber(["db", "url", "--home", home]).output.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(url.hasPrefix("postgresql:///amber?host=\(home)/run"))

        let migrate = try runAmber(["migrate", "--home", home])
        #expect(migrate.status == 0, "\(migrate.error)")
        #expect(migrate.output.contains("applied 0001_create_catalog"))
        let down = try runAmber(["migrate", "down", "9", "--home", home])
        #expect(down.output.contains("reverted 0011_create_item_labels") && down.output.contains("reverted 0010_add_feedback_cursor") && down.output.contains("reverted 0009_create_feedback") && down.output.contains("reverted 0008_create_item_images") && down.output.contains("reverted 0007_restrict_roles") && down.output.contains("reverted 0006_replace_prototype_agreement")
                && down.output.contains("reverted 0005_create_checkpoints")
                && down.output.contains("reverted 0004_create_roles")
                && down.output.contains("reverted 0003_create_audit_views"))
        let status = try runAmber(["migrate", "status", "--home", home])
        #expect(status.output.contains("applied  0002") && status.output.contains("pending  0003"))
        #expect(try runAmber(["migrate", "sideways", "--home", home]).status != 0)

        let stop = try runAmber(["db", "stop", "--home", home])
        #expect(stop.status == 0)
        #expect(try runAmber(["db", "status", "--home", home]).output.contains("stopped"))
        // A command that needs the database starts the cluster and stops it again afterwards.
        #expect(try runAmber(["migrate", "--home", home]).output.contains("applied 0003"))
        #expect(try runAmber(["db", "status", "--home", home]).output.contains("stopped"))
    }

    @Test func optionsThatCrashedOrHungAreRefusedNamingTheOption() throws {
        // Each exits 64 at once with the option named; none reaches the database (the URL is never used).
        let cases: [([String], String)] = [
            (["train", "--continuous", "--batch-size", "0"], "--batch-size"),
            (["train", "--continuous", "--batch-size", "1"], "--batch-size"),
            (["train", "--continuous", "--dimension", "0"], "joint dimension"),
            (["train", "--continuous", "--learning-rate", "nan"], "--learning-rate"),
            (["train", "--continuous", "--queue-size", "0", "--memory-weight", "0.5"], "--queue-size"),
            (["train", "--continuous", "--memory-weight=-1"], "--memory-weight"),
            (["train", "--continuous", "--new-share", "0"], "--new-share"),
            (["train", "--data", "/nonexistent", "--steps", "0"], "--steps"),
            (["serve", "--port", "70000"], "--port"),
            (["serve", "--max-text-fragments", "1"], "--max-text-fragments"),
            (["serve", "--max-feature-magnitude", "inf"], "--max-feature-magnitude"),
            (["bench", "http", "--connections", "0"], "--connections"),
        ]
        for (arguments, option) in cases {
            let result = try runAmber(arguments + ["--database-url", "postgresql:///nowhere?host=/nonexistent"])
            #expect(result.status == 64, "\(arguments) → \(result.status) \(result.error)")
            #expect(result.error.contains(option), "\(arguments) → \(result.error)")
        }
    }

    @Test func ingestReportsBadInputByFileAndLine() throws {
        let fixture = try GlobalLocalFixture()
        try (0..<8).map { $0 == 4 ? "   " : "image\($0).jpg" }.joined(separator: "\n")
            .write(toFile: fixture.path("image_ids.txt"), atomically: true, encoding: .utf8)
        let url = try TestDatabase.fresh(migrated: true)
        let result = try runAmber(["ingest", fixture.directory, "--database-url", url])
        #expect(result.status != 0)
        #expect(result.error.contains("\(fixture.path("image_ids.txt")):5: empty line"), "\(result.error)")
    }

    @Test func ingestCommandLoadsAndIsIdempotent() throws {
        let fixture = try GlobalLocalFixture()
        let url = try TestDatabase.fresh(migrated: true)
        let first = try runAmber(["ingest", fixture.directory, "--database-url", url])
        #expect(first.status == 0, "\(first.error)")
        #expect(first.output.contains("added 8 images, 40 texts, 48 feature rows, 40 pairs"))
        #expect(first.error.contains("ingest features"))
        let second = try runAmber(["ingest", fixture.directory, "--database-url", url])
        #expect(second.output.contains("added 0 images, 0 texts, 0 feature rows, 0 pairs"))
    }

    /// `labels.tsv` beside the data (or `--labels FILE`): categories added after the items; a bad
    /// line is refused by file and line before anything is written; an unknown item after the
    /// items are in, with no label written.
    @Test func ingestAddsLabelsFromAFileAndNamesBadLines() throws {
        let fixture = try GlobalLocalFixture()
        let url = try TestDatabase.fresh(migrated: true)
        let connection = try PostgresConnection(url: url)
        try "# category of each photo\nimage\timage0.jpg\tdog\nimage\timage1.jpg\tcat\n\nimage\timage0.jpg\tpet\ntext\timage0.jpg#0\tdog\n"
            .write(toFile: fixture.path("labels.tsv"), atomically: true, encoding: .utf8)
        let first = try runAmber(["ingest", fixture.directory, "--database-url", url])
        #expect(first.status == 0 && first.output.contains("added 4 labels from"), "\(first.output) \(first.error)")
        let rows = try connection.execute("SELECT label, modality::text AS m, items FROM amber.label_overview ORDER BY label, m")
        #expect(try rows.column(String.self) == ["cat", "dog", "dog", "pet"])
        #expect(try runAmber(["ingest", fixture.directory, "--database-url", url]).output.contains("added 0 labels"))

        let bad = fixture.directory + "/bad.tsv"
        try "image\timage0.jpg\tok\nimage\timage1.jpg\n".write(toFile: bad, atomically: true, encoding: .utf8)
        let refused = try runAmber(["ingest", fixture.directory, "--labels", bad, "--database-url", url])
        #expect(refused.status != 0 && refused.error.contains("\(bad):2: needs 3 tab-separated fields"), "\(refused.error)")
        try "image\timage0.jpg\tnew\nvideo\tx\ty\n".write(toFile: bad, atomically: true, encoding: .utf8)
        #expect(try runAmber(["ingest", fixture.directory, "--labels", bad, "--database-url", url]).error.contains("\(bad):2: modality must be image or text"))
        try "image\timage0.jpg\tnew\nimage\tnowhere.jpg\tx\n".write(toFile: bad, atomically: true, encoding: .utf8)
        let unknown = try runAmber(["ingest", fixture.directory, "--labels", bad, "--database-url", url])
        #expect(unknown.status != 0 && unknown.error.contains("\(bad):2: no image with external id 'nowhere.jpg' is stored"), "\(unknown.error)")
        #expect(try count(connection, "amber.item_labels") == 4, "nothing of a refused file is written")
    }
}

@Suite("The amber command line: train, resume, eval")
struct TrainingCommandLineTests {
    @Test func trainResumesEvaluatesAndNamesBadInput() throws {
        let fixture = try GlobalLocalFixture(images: 40, regions: 3, imageDimension: 6, textDimension: 5)
        let output = fixture.directory + "/run"
        defer { try? FileManager.default.removeItem(atPath: fixture.directory) }
        let common = ["--data", fixture.directory, "--dev-start", "32"]
        let train = ["train"] + common + ["--dimension", "8", "--batch-size", "16", "--evaluate-every", "10", "--output", output]

        let first = try runAmber(train + ["--steps", "20"])
        #expect(first.status == 0, "\(first.error)")
        #expect(first.output.contains("step    20/20") && first.output.contains("best on dev at step"), "\(first.output)")
        for file in ["best.safetensors", "training.safetensors", "report.svg"] {
            #expect(FileManager.default.fileExists(atPath: output + "/" + file), "\(file)")
        }
        // The run exists: without --resume it is not overwritten.
        let again = try runAmber(train + ["--steps", "20"])
        #expect(again.status != 0)
        #expect(again.error.contains("\(output)/training.safetensors exists") && again.error.contains("--resume"), "\(again.error)")
        let resumed = try runAmber(train + ["--steps", "30", "--resume"])
        #expect(resumed.status == 0, "\(resumed.error)")
        #expect(resumed.output.contains("resuming \(output)/training.safetensors at step 20") && resumed.output.contains("step    30/30"), "\(resumed.output)")
        let changed = try runAmber(train + ["--steps", "40", "--resume", "--memory-weight", "0.5"])
        #expect(changed.status != 0 && changed.error.contains("different configuration"), "\(changed.error)")

        let eval = try runAmber(["eval", "--model", output + "/best.safetensors"] + common)
        #expect(eval.status == 0, "\(eval.error)")
        #expect(eval.output.contains("dev: 8 images, 40 texts") && eval.output.contains("stage 1 (fused embeddings):") && eval.output.contains("rsum"), "\(eval.output)")
        let twoStage = try runAmber(["eval", "--model", output + "/best.safetensors", "--alpha", "0.5", "--depth", "4"] + common)
        #expect(twoStage.output.contains("two-stage, scan (α 0.50, top 4 re-ranked)"), "\(twoStage.output)")

        let missing = try runAmber(["eval", "--model", fixture.directory + "/nothing.safetensors"] + common)
        #expect(missing.status != 0 && missing.error.contains("nothing.safetensors"), "\(missing.error)")
        let badAlpha = try runAmber(["eval", "--model", output + "/best.safetensors", "--alpha", "2"] + common)
        #expect(badAlpha.status != 0 && badAlpha.error.contains("--alpha must be in [0, 1]"), "\(badAlpha.error)")
        let notAModel = try runAmber(["eval", "--model", output + "/training.safetensors"] + common)
        #expect(notAModel.status != 0 && notAModel.error.contains("training.safetensors") && notAModel.error.contains("not an Amber model"), "\(notAModel.error)")
    }

    /// `amber train --supervision labels`, `amber eval labels` and `amber baseline labels` on a
    /// small labelled set; a modality added later with `--from`; bad input named.
    @Test func labelSupervisedTrainingEvaluationAndBaselines() throws {
        let directory = NSTemporaryDirectory() + "amber-labelled-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var generator = RandomGenerator(seed: 4)
        let labels = (0..<60).map { Int64($0 % 3) }
        let imageCentres = Tensor.randomNormal([3, 6], standardDeviation: 2, using: &generator)
        let textCentres = Tensor.randomNormal([3, 4], standardDeviation: 2, using: &generator)
        try NumpyFile.write(imageCentres.indexSelect(labels.map { Int($0) }) + Tensor.randomNormal([60, 6], using: &generator), to: directory + "/image.npy")
        try NumpyFile.write(textCentres.indexSelect(labels.map { Int($0) }) + Tensor.randomNormal([60, 4], using: &generator), to: directory + "/text.npy")
        try NumpyFile.write(labels, shape: [60], to: directory + "/labels.npy")
        let small = ["--supervision", "labels", "--data", directory, "--hidden", "12", "--output-dimension", "6", "--prior-epochs", "5", "--epochs", "10",
                     "--batch-size", "16", "--image-learning-rate", "5e-3", "--prior-learning-rate", "5e-3"]
        let imageOnly = try runAmber(["train"] + small + ["--modality", "image", "--output", directory + "/image"])
        #expect(imageOnly.status == 0, "\(imageOnly.error)")
        #expect(imageOnly.output.contains("prior: image") && imageOnly.output.contains("stage 2 image epoch 10/10"), "\(imageOnly.output)")
        let both = try runAmber(["train"] + small + ["--modality", "text", "--from", directory + "/image/model.safetensors", "--output", directory + "/both"])
        #expect(both.status == 0 && both.output.contains("validation: mAP@all"), "\(both.output) \(both.error)")
        #expect(!both.output.contains("stage 1"), "the prior comes from --from")
        let eval = try runAmber(["eval", "labels", "--model", directory + "/both/model.safetensors", "--data", directory])
        #expect(eval.status == 0 && eval.output.contains("validation of \(directory) (12 images, 12 texts): mAP@all i→t"), "\(eval.output) \(eval.error)")
        let halfModel = try runAmber(["eval", "labels", "--model", directory + "/image/model.safetensors", "--data", directory])
        #expect(halfModel.status != 0 && halfModel.error.contains("need both an image and a text side"), "\(halfModel.error)")
        let baseline = try runAmber(["baseline", "labels", "--data", directory, "--components", "2", "--power", "1", "--regularization", "0.1", "--penalty", "0.01"])
        #expect(baseline.status == 0 && baseline.output.contains("CCA, best on validation") && baseline.output.contains("class posteriors (L2 0.01)"), "\(baseline.output) \(baseline.error)")

        let narrow = try runAmber(["train"] + small + ["--output-dimension", "2", "--output", directory + "/x"])
        #expect(narrow.status != 0 && narrow.error.contains("3 classes") && narrow.error.contains("--output-dimension 2"), "\(narrow.error)")
        let widerImages = directory + "/wide"
        try FileManager.default.createDirectory(atPath: widerImages, withIntermediateDirectories: true)
        try NumpyFile.write(Tensor.randomNormal([60, 7], using: &generator), to: widerImages + "/image.npy")
        try FileManager.default.copyItem(atPath: directory + "/text.npy", toPath: widerImages + "/text.npy")
        try FileManager.default.copyItem(atPath: directory + "/labels.npy", toPath: widerImages + "/labels.npy")
        let mismatched = try runAmber(["train"] + small.map { $0 == directory ? widerImages : $0 } + ["--modality", "text", "--from", directory + "/image/model.safetensors", "--output", directory + "/x"])
        #expect(mismatched.status != 0 && mismatched.error.contains("reads image features of 6 dimensions"), "\(mismatched.error)")
        let otherShape = try runAmber(["train"] + small + ["--modality", "text", "--from", directory + "/image/model.safetensors", "--hidden", "7", "--output", directory + "/x"])
        #expect(otherShape.status == 64 && otherShape.error.contains("--hidden"), "\(otherShape.error)")
        let nowhere = try runAmber(["train", "--supervision", "labels", "--data", directory + "/nowhere"])
        #expect(nowhere.status != 0 && nowhere.error.contains("nowhere does not exist"), "\(nowhere.error)")
        let badShare = try runAmber(["train"] + small + ["--validation-share", "1.5"])
        #expect(badShare.status != 0 && badShare.error.contains("--validation-share"), "\(badShare.error)")
        let noRounds = try runAmber(["train", "--supervision", "labels", "--continuous", "--rounds", "0", "--database-url", "postgresql:///nowhere?host=/nonexistent"])
        #expect(noRounds.status == 64 && noRounds.error.contains("--rounds"), "\(noRounds.error)")
        let nanShare = try runAmber(["train", "--supervision", "labels", "--continuous", "--validation-share", "nan", "--database-url", "postgresql:///nowhere?host=/nonexistent"])
        #expect(nanShare.status == 64 && nanShare.error.contains("--validation-share"), "\(nanShare.error)")
        let badComponents = try runAmber(["baseline", "labels", "--data", directory, "--components", "-1"])
        #expect(badComponents.status == 64 && badComponents.error.contains("--components"), "\(badComponents.error)")
        try NumpyFile.write(labels.map { $0 == 2 ? -2 : $0 }, shape: [60], to: directory + "/labels.npy")
        let badLabels = try runAmber(["train"] + small)
        #expect(badLabels.status != 0 && badLabels.error.contains("\(directory)/labels.npy") && badLabels.error.contains("class -2"), "\(badLabels.error)")
    }

    /// `amber train --supervision labels --continuous` on the catalogue's labelled items: a model
    /// version per round, promoted when nothing serves or when it does no worse than the serving
    /// label model on the same validation items.
    @Test func continuousLabelTrainingRegistersAndPromotesVersions() throws {
        let url = try TestDatabase.fresh(migrated: true)
        let connection = try PostgresConnection(url: url)
        var generator = RandomGenerator(seed: 5)
        let imageCentres = Tensor.randomNormal([3, 6], standardDeviation: 2, using: &generator)
        let textCentres = Tensor.randomNormal([3, 4], standardDeviation: 2, using: &generator)
        var items: [NewItem] = []
        for k in 0..<36 {
            let c = k % 3
            let image = (imageCentres.slice(axis: 0, c ..< c + 1) + Tensor.randomNormal([1, 6], using: &generator)).scalars
            let text = (textCentres.slice(axis: 0, c ..< c + 1) + Tensor.randomNormal([1, 4], using: &generator)).scalars
            items.append(NewItem(modality: .image, externalID: "i\(k)", caption: nil, features: ItemFeatures(global: image, local: [1, 2, 3, 4], localCount: 2),
                                 labels: ["class \(c)"]))
            items.append(NewItem(modality: .text, externalID: "t\(k)", caption: "text \(k)", features: ItemFeatures(global: text, local: [1, 2], localCount: 2),
                                 labels: ["class \(c)"]))
        }
        _ = try ItemWriter.write(items, on: connection)
        let train = ["train", "--supervision", "labels", "--continuous", "--rounds", "1", "--hidden", "12", "--output-dimension", "6",
                     "--prior-epochs", "10", "--epochs", "20", "--batch-size", "16", "--image-learning-rate", "5e-3", "--prior-learning-rate", "5e-3",
                     "--database-url", url]
        let first = try runAmber(train)
        #expect(first.status == 0 && first.output.contains("round 1: 3 labels") && first.output.contains("model version 1: validation mAP@all"),
                "\(first.output) \(first.error)")
        #expect(try ModelRegistry.serving(on: connection) == 1)
        // The same data and seed again: the same quality, promoted; the served file is a label model with both networks and the labels' names.
        let second = try runAmber(train)
        #expect(second.status == 0 && second.output.contains("serving version 1: validation mAP@all") && second.output.contains("promoting"), "\(second.output)")
        #expect(try ModelRegistry.serving(on: connection) == 2)
        let file = try #require(try ModelRegistry.servingModelFile(on: connection))
        guard case .labels(let model) = try ServedModel.read(bytes: file.bytes, name: "v2") else { Issue.record("not a label model"); return }
        #expect(model.classNames == ["class 0", "class 1", "class 2"] && model.encoders.count == 2)
        // The validation side of an item is fixed by its id (and the split seed), whatever else is stored.
        let sides = (1...2000).map { LabelledCatalog.isValidation(Int64($0), share: 0.2, seed: 0) }
        #expect(sides == (1...2000).map { LabelledCatalog.isValidation(Int64($0), share: 0.2, seed: 0) })
        #expect((330...470).contains(sides.filter { $0 }.count), "\(sides.filter { $0 }.count) of 2000 held out at share 0.2")
        #expect(sides != (1...2000).map { LabelledCatalog.isValidation(Int64($0), share: 0.2, seed: 1) })
        // A gate that compared with the serving version does not override a promotion made meanwhile.
        #expect(try !ModelRegistry.promote(1, ifServing: nil, on: connection) && ModelRegistry.serving(on: connection) == 2)
        #expect(try ModelRegistry.promote(1, ifServing: 2, on: connection) && ModelRegistry.serving(on: connection) == 1)
        // Chance is ≈ 0.36 (a third of each gallery is relevant); 20 epochs of a small network get well above it.
        #expect((model.metrics?.mean ?? 0) > 0.5, "\(String(describing: model.metrics))")
    }
}
