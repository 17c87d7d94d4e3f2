import AmberCatalog
@testable import AmberStore
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
        let down = try runAmber(["migrate", "down", "8", "--home", home])
        #expect(down.output.contains("reverted 0010_add_feedback_cursor") && down.output.contains("reverted 0009_create_feedback") && down.output.contains("reverted 0008_create_item_images") && down.output.contains("reverted 0007_restrict_roles") && down.output.contains("reverted 0006_replace_prototype_agreement")
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
        #expect(twoStage.output.contains("two-stage (α 0.50, top 4 re-ranked)"), "\(twoStage.output)")

        let missing = try runAmber(["eval", "--model", fixture.directory + "/nothing.safetensors"] + common)
        #expect(missing.status != 0 && missing.error.contains("nothing.safetensors"), "\(missing.error)")
        let badAlpha = try runAmber(["eval", "--model", output + "/best.safetensors", "--alpha", "2"] + common)
        #expect(badAlpha.status != 0 && badAlpha.error.contains("--alpha must be in [0, 1]"), "\(badAlpha.error)")
        let notAModel = try runAmber(["eval", "--model", output + "/training.safetensors"] + common)
        #expect(notAModel.status != 0 && notAModel.error.contains("training.safetensors") && notAModel.error.contains("not an Amber model"), "\(notAModel.error)")
    }
}
