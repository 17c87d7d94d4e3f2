import AmberCatalog
import ArgumentParser

struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure Amber's speed on this machine (numbers for docs/benchmarks.md).",
        subcommands: [TensorBenchCommand.self, StoreBenchCommand.self, TextBenchCommand.self, ImageBenchCommand.self, TrainBenchCommand.self, SearchBenchCommand.self, HTTPBenchCommand.self, RerankBenchCommand.self]
    )
}

struct TensorBenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tensor",
        abstract: "sgemm through Tensor vs direct cblas_sgemm, elementwise GB/s, and an MLP training step."
    )

    @Option(help: "Timed repetitions of each measurement (the median is reported).")
    var repetitions: Int = 7

    @Option(help: "OpenBLAS threads (default: every core).")
    var threads: Int?

    @Option(help: "Run only these parts (comma-separated: sgemm, elementwise, step).")
    var only: String = "sgemm,elementwise,step"

    @Flag(help: "Smaller shapes and fewer repetitions, for a quick check that the benchmark runs.")
    var quick = false

    func validate() throws {
        let parts = Set(only.split(separator: ",").map(String.init))
        let unknown = parts.subtracting(["sgemm", "elementwise", "step"])
        guard unknown.isEmpty else { throw ValidationError("--only: unknown part(s) \(unknown.sorted().joined(separator: ", ")); use sgemm, elementwise, step") }
        guard repetitions >= 1 else { throw ValidationError("--repetitions must be at least 1") }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
    }

    func run() async throws {
        var benchmark = TensorBenchmark(repetitions: quick ? 2 : repetitions, quick: quick)
        if let threads { benchmark.threads = threads }
        benchmark.parts = Set(only.split(separator: ",").map(String.init))
        benchmark.run()
    }
}
