import AmberModel
import AmberTensor
import ArgumentParser
import Foundation

/// `amber bench rerank`: the cost of stage 2 per query and per re-ranked candidate, SCAN-style
/// alignment against GARE, both directions, at the shared sets' shapes (49 grid cells per image,
/// 15 tokens per caption, D = 1024).
struct RerankBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rerank",
        abstract: "Stage 2 per query: SCAN-style alignment and GARE re-ranking K candidates (µs per query and per candidate, median of N)."
    )

    @Option(parsing: .upToNextOption, help: "Candidates re-ranked per query.") var candidates: [Int] = [32, 100]
    @Option(help: "Joint dimension D.") var dimension: Int = 1024
    @Option(help: "GARE's width.") var gareWidth: Int = 256
    @Option(help: "Timed queries per setting (after 3 warm-up queries).") var queries: Int = 50

    func validate() throws {
        guard !candidates.isEmpty, candidates.allSatisfy({ (1...10_000).contains($0) }) else { throw ValidationError("--candidates must be 1…10000") }
        guard (1...8192).contains(dimension), (1...8192).contains(gareWidth) else { throw ValidationError("--dimension and --gare-width must be 1…8192") }
        guard (1...100_000).contains(queries) else { throw ValidationError("--queries must be 1…100000") }
    }

    func run() throws {
        print("amber bench rerank")
        print("machine: \(MachineDescription.current); OpenBLAS threads \(BLASThreads.count)")
        var generator = RandomGenerator(seed: 1)
        let gare = GapAwareScorer(dimension: dimension, configuration: .init(width: gareWidth), generator: &generator)
        gare.head.weight.assign(Tensor.randomNormal(gare.head.weight.shape, standardDeviation: 0.02, using: &generator))
        let scorers: [PairScorer] = [.scan(LocalAlignment()), .gare(gare)]
        let cells = 49, tokens = 15
        for K in candidates {
            let images = Tensor.randomNormal([K, cells, dimension], using: &generator)
            let texts = Tensor.randomNormal([K, tokens, dimension], using: &generator)
            let textFused = Tensor.randomNormal([K, dimension], using: &generator).l2Normalized(axis: -1)
            let queryImage = images.slice(axis: 0, 0..<1), queryText = texts.slice(axis: 0, 0..<1), queryFused = textFused.slice(axis: 0, 0..<1)
            for scorer in scorers {
                for direction in ["text → images", "image → texts"] {
                    func once() {
                        if direction == "text → images" {
                            _ = scorer.scores(imageFragments: images, imageCounts: Array(repeating: cells, count: K),
                                              textFragments: queryText, textCounts: [tokens], textFused: queryFused)
                        } else {
                            _ = scorer.scores(imageFragments: queryImage, imageCounts: [cells],
                                              textFragments: texts, textCounts: Array(repeating: tokens, count: K), textFused: textFused)
                        }
                    }
                    for _ in 0..<3 { once() }
                    var times: [Double] = []
                    for _ in 0..<queries {
                        let start = Date()
                        once()
                        times.append(Date().timeIntervalSince(start))
                    }
                    let median = times.sorted()[times.count / 2]
                    print(String(format: "%@, %@, top %d: %.0f µs per query, %.1f µs per candidate (median of %d)",
                                 scorer.kind == .scan ? "SCAN-style" : "GARE", direction, K, median * 1e6, median * 1e6 / Double(K), queries))
                }
            }
        }
    }
}
