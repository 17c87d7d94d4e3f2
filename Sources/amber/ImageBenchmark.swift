import AmberCatalog
import AmberImage
import AmberTensor
import ArgumentParser
import Foundation

struct ImageBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "image",
        abstract: "Native image encoder (EfficientNet-Lite0): batched images/s and single-image p50/p99, decode included and excluded, time per layer kind; with --reference, the PyTorch reference in the same run."
    )

    @Option(help: "Directory of JPEG/PNG files (default: ../shared/data/flickr8k/images).")
    var images: String = "../shared/data/flickr8k/images"

    @Option(help: "Images encoded in batches.")
    var batched: Int = 256

    @Option(help: "Images timed one at a time.")
    var single: Int = 100

    @Option(help: "Batch size for the throughput run.")
    var batchSize: Int = 4

    @OptionGroup var imageModel: ImageModelOptions

    @Option(help: "OpenBLAS threads (default: every core).")
    var threads: Int?

    @Option(help: "Python with torch, efficientnet-lite-pytorch and pillow: runs ops/dev/image_reference_bench.py on the same files, same thread count, after Amber.")
    var reference: String?

    func validate() throws {
        guard batched >= 1, single >= 1, batchSize >= 1 else { throw ValidationError("--batched, --single and --batch-size must be at least 1") }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
    }

    func run() throws {
        if let threads { BLASThreads.count = threads }
        let encoder = try imageModel.load(batchSize: batchSize)
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: images)) ?? [])
            .filter { name in [".jpg", ".jpeg", ".png"].contains { name.lowercased().hasSuffix($0) } }
            .sorted()
        guard !names.isEmpty else { throw ValidationError("\(images): no JPEG or PNG files") }
        let files = (0..<max(batched, single)).map { images + "/" + names[$0 % names.count] }
        let bytes = try files.map { path -> [UInt8] in
            do { return try ImageDecoder.readFile(path) } catch { throw ValidationError("\(path): \(error)") }
        }
        print("amber bench image")
        print("machine: \(MachineDescription.current); OpenBLAS threads \(BLASThreads.count)")
        print("\(names.count) files in \(images); batch \(batchSize)\n")

        // Decode alone.
        var started = Date()
        let decoded = try bytes.prefix(batched).enumerated().map { index, data in
            do { return try ImageDecoder.decode(data) } catch { throw ValidationError("\(files[index]): \(error)") }
        }
        let decodeSeconds = Date().timeIntervalSince(started)
        _ = encoder.encode(Array(decoded.prefix(batchSize)))   // warm-up
        started = Date()
        _ = encoder.encode(decoded)
        let encodeSeconds = Date().timeIntervalSince(started)
        let rate = { (count: Int, seconds: Double) in String(format: "%.1f", Double(count) / seconds) }
        print("batched, \(batched) images: decode \(rate(batched, decodeSeconds)) images/s; encode (decoded) \(rate(batched, encodeSeconds)) images/s; decode + encode \(rate(batched, decodeSeconds + encodeSeconds)) images/s")

        var latencies: [Double] = [], encodeOnly: [Double] = []
        for index in 0..<single {
            let start = Date()
            guard let image = try? ImageDecoder.decode(bytes[index]) else { continue }
            let middle = Date()
            _ = encoder.encode(image)
            let end = Date()
            latencies.append(end.timeIntervalSince(start) * 1000)
            encodeOnly.append(end.timeIntervalSince(middle) * 1000)
        }
        func percentile(_ values: [Double], _ p: Double) -> Double {
            let sorted = values.sorted()
            return sorted[min(sorted.count - 1, Int((Double(sorted.count - 1) * p).rounded()))]
        }
        print(String(format: "single image, %d: decode + encode p50 %.2f ms, p99 %.2f ms; encode only p50 %.2f ms, p99 %.2f ms",
                     latencies.count, percentile(latencies, 0.5), percentile(latencies, 0.99),
                     percentile(encodeOnly, 0.5), percentile(encodeOnly, 0.99)))

        let profile = encoder.profile(Array(decoded.prefix(batchSize)))
        let total = profile.reduce(0) { $0 + $1.seconds }
        print("\none batch of \(min(batchSize, decoded.count)), time per layer kind:")
        for (kind, seconds) in profile {
            print(String(format: "  %-10@ %8.1f ms  %5.1f %%", kind, seconds * 1000, 100 * seconds / total))
        }
        if let reference {
            print("\nPyTorch reference (same files, \(BLASThreads.count) threads, batch \(batchSize)):")
            try runReference(python: reference, script: "ops/dev/image_reference_bench.py",
                             arguments: [images, String(batched), String(single), String(batchSize), String(BLASThreads.count)])
        }
    }
}

/// Runs a peer's benchmark script (in `ops/dev`, found from the working directory or the
/// checkout) with `python` after Amber's own numbers are printed.
/// As ``runReference(python:script:arguments:)``, also returning what the script printed.
func runReferenceCapturing(python: String, script relative: String, arguments: [String]) throws -> String {
    let script = FileManager.default.fileExists(atPath: relative) ? relative
        : URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent(relative).path
    fflush(nil)
    let process = Process()
    process.executableURL = URL(fileURLWithPath: python)
    process.arguments = [script] + arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    let output = String(decoding: data, as: UTF8.self)
    print(output, terminator: "")
    guard process.terminationStatus == 0 else { throw ValidationError("\(python) \(script) exited with \(process.terminationStatus)") }
    return output
}

func runReference(python: String, script relative: String, arguments: [String]) throws {
    _ = try runReferenceCapturing(python: python, script: relative, arguments: arguments)
}
