import AmberCatalog
import AmberModel
import AmberTensor
import AmberTrain
import ArgumentParser
import Foundation

struct TrainBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Training step of the matching model (triplet only, and the full model with memory bank, prototypes and graph): pairs/s, median of N steps after warm-up, and the share in BLAS.",
        discussion: """
        With --reference PYTHON, ops/dev/train_reference_bench.py runs the same model and step in PyTorch \
        (same shapes, batch, D and threads) after each round of Amber's, so that both see the same machine; \
        the summary gives each round's ratio and their median.
        """
    )

    @Option(help: "Batch size.") var batchSize: Int = 128
    @Option(help: "Joint dimension D.") var dimension: Int = 1024
    @Option(help: "Timed steps (after 3 warm-up steps).") var steps: Int = 20
    @Option(help: "Python with torch: runs ops/dev/train_reference_bench.py (the same model in PyTorch) after each round.")
    var reference: String?
    @Option(help: "Rounds of Amber then PyTorch (default: 3 with --reference, else 1).") var rounds: Int?
    @Flag(help: "Also time the full model with GARE's objective (weight 0.5, width --gare-width) and give the ratio, same run.") var gare = false
    @Option(help: "GARE: width of the increment network.") var gareWidth: Int = 256

    func validate() throws {
        guard (2...4096).contains(batchSize) else { throw ValidationError("--batch-size must be 2…4096, got \(batchSize)") }
        guard (1...8192).contains(dimension) else { throw ValidationError("--dimension must be 1…8192, got \(dimension)") }
        guard (1...10_000).contains(steps) else { throw ValidationError("--steps must be 1…10000, got \(steps)") }
        guard (1...8192).contains(gareWidth) else { throw ValidationError("--gare-width must be 1…8192, got \(gareWidth)") }
        if let rounds, !(1...100).contains(rounds) { throw ValidationError("--rounds must be 1…100, got \(rounds)") }
    }

    func run() throws {
        print("amber bench train")
        print("machine: \(MachineDescription.current); OpenBLAS threads \(BLASThreads.count)")
        var amber: [(triplet: Double, full: Double)] = [], torch: [(triplet: Double, full: Double)] = []
        for round in 0..<(rounds ?? (reference == nil ? 1 : 3)) {
            if reference != nil { print("round \(round + 1)") }
            let triplet = try tripletOnly(), full = try fullModel()
            amber.append((triplet, full))
            if gare {
                let withGARE = try fullModel(gare: GapAwareScorer.Configuration(width: gareWidth))
                print(String(format: "GARE objective: %.0f → %.0f pairs/s (×%.2f of the step time)", Double(batchSize) / full, Double(batchSize) / withGARE, withGARE / full))
            }
            if let reference {
                let output = try runReferenceCapturing(python: reference, script: "ops/dev/train_reference_bench.py",
                                                       arguments: ["\(batchSize)", "\(dimension)", "\(steps)", "\(BLASThreads.count)"])
                guard let t = Self.milliseconds(in: output, after: "PyTorch triplet only"), let f = Self.milliseconds(in: output, after: "PyTorch full model") else {
                    throw ValidationError("\(reference) ops/dev/train_reference_bench.py: no step times in its output")
                }
                torch.append((t / 1000, f / 1000))
            }
        }
        guard !torch.isEmpty else { return }
        func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }
        print("\nsummary (pairs/s; ratio = Amber / PyTorch, each round measured back to back):")
        print("round  Amber triplet  PyTorch triplet  ratio   Amber full  PyTorch full  ratio")
        for (index, (a, p)) in zip(amber, torch).enumerated() {
            print(String(format: "%-6d %-14.0f %-16.0f %-7.2f %-11.0f %-13.0f %.2f", index + 1, Double(batchSize) / a.triplet, Double(batchSize) / p.triplet,
                         p.triplet / a.triplet, Double(batchSize) / a.full, Double(batchSize) / p.full, p.full / a.full))
        }
        print(String(format: "median ratio: triplet only %.2f×, full model %.2f×",
                     median(zip(amber, torch).map { $1.triplet / $0.triplet }), median(zip(amber, torch).map { $1.full / $0.full })))
    }

    /// The number before " ms" on the first line starting with `prefix`.
    static func milliseconds(in output: String, after prefix: String) -> Double? {
        guard let line = output.split(separator: "\n").first(where: { $0.hasPrefix(prefix) }),
              let range = line.range(of: "step "), let end = line.range(of: " ms", range: range.upperBound..<line.endIndex) else { return nil }
        return Double(line[range.upperBound..<end.lowerBound])
    }

    /// The triplet-only step: median seconds.
    func tripletOnly() throws -> Double {
        // Shapes of the shared sets' features: images 1280 + 49 × 1280, texts 384 + ~15 × 384 (random values).
        var generator = RandomGenerator(seed: 1)
        let B = batchSize
        let images = EncoderInput(global: Tensor.randomNormal([B, 1280], using: &generator),
                                  fragments: Tensor.randomNormal([B, 49, 1280], using: &generator),
                                  fragmentCounts: Array(repeating: 49, count: B))
        let texts = EncoderInput(global: Tensor.randomNormal([B, 384], using: &generator),
                                 fragments: Tensor.randomNormal([B, 18, 384], using: &generator),
                                 fragmentCounts: (0..<B).map { 12 + $0 % 7 })
        var encoder = ModalityEncoder.Configuration()
        encoder.jointDimension = dimension
        let model = MatchingModel(imageGlobal: 1280, imageFragment: 1280, textGlobal: 384, textFragment: 384,
                                  configuration: encoder, generator: &generator)
        let optimizer = AdamW(parameters: model.parameters)
        let imageIDs = Array(0..<B)
        func step() {
            optimizer.zeroGradients()
            let f = model.imageEncoder(images, dropoutUsing: &generator).fused
            let g = model.textEncoder(texts, dropoutUsing: &generator).fused
            TripletLoss()(scores: Tensor.matmul(f, g, transposeB: true), imageIDs: imageIDs).backward()
            clipGradientNorm(model.parameters, maximumNorm: 2)
            optimizer.step(learningRate: 1e-4)
        }
        for _ in 0..<3 { step() }
        var times: [Double] = [], shares: [Double] = []
        for _ in 0..<steps {
            BLASProfile.reset()
            BLASProfile.isEnabled = true
            let start = Date()
            step()
            let elapsed = Date().timeIntervalSince(start)
            BLASProfile.isEnabled = false
            times.append(elapsed)
            shares.append(BLASProfile.seconds / elapsed)
        }
        let median = times.sorted()[times.count / 2]
        print(String(format: "matching model, D = %d, batch %d, triplet loss: step %.1f ms (median of %d), %.0f pairs/s, %.0f%% in BLAS",
                     dimension, B, median * 1000, steps, Double(B) / median, 100 * shares.sorted()[shares.count / 2]))
        return median
    }

    /// The trainer's own step with every loss on (queues of 2,048, prototypes, graph), timed
    /// through its step hook on synthetic data of the shared sets' shapes. Median seconds.
    func fullModel(gare: GapAwareScorer.Configuration? = nil) throws -> Double {
        var generator = RandomGenerator(seed: 2)
        let imageCount = 200, textCount = 1000
        let counts = (0..<textCount).map { 10 + $0 % 9 }
        var offsets = [0]
        for c in counts { offsets.append(offsets.last! + c) }
        let data = RetrievalData(imageGlobal: Tensor.randomNormal([imageCount, 1280], using: &generator),
                                 imageLocal: Tensor.randomNormal([imageCount, 49, 1280], using: &generator),
                                 textGlobal: Tensor.randomNormal([textCount, 384], using: &generator),
                                 textTokens: Tensor.randomNormal([offsets.last!, 384], using: &generator),
                                 tokenOffsets: offsets, imageOfText: (0..<textCount).map { $0 / 5 }, captions: [])
        let train = data.subset(images: 0..<190), dev = data.subset(images: 190..<200)
        var configuration = MatchingTrainer.Configuration()
        configuration.encoder.jointDimension = dimension
        configuration.optimization.batchSize = batchSize
        configuration.optimization.steps = 3 + steps
        configuration.optimization.evaluateEvery = 1000
        configuration.memoryWeight = 0.5
        configuration.prototypeWeight = 0.2
        configuration.prototypeWarmupSteps = 0
        configuration.graphWeight = 0.5
        configuration.alphaGrid = [1]
        if let gare {
            configuration.gare = gare
            configuration.gareWeight = 0.5
        }
        var times: [Double] = [], shares: [Double] = []
        var blasBefore = 0.0
        BLASProfile.reset()
        BLASProfile.isEnabled = true
        defer { BLASProfile.isEnabled = false }
        _ = try MatchingTrainer(configuration: configuration, train: train).run(train: train, dev: dev, stepTimer: { step, seconds in
            let blas = BLASProfile.seconds - blasBefore
            blasBefore = BLASProfile.seconds
            if step >= 3 {
                times.append(seconds)
                shares.append(blas / seconds)
            }
        })
        let median = times.sorted()[times.count / 2]
        print(String(format: "matching model, D = %d, batch %d, full model (triplet + memory bank + prototypes + graph%@): step %.1f ms (median of %d), %.0f pairs/s, %.0f%% in BLAS",
                     dimension, batchSize, gare.map { " + GARE, width \($0.width)" } ?? "", median * 1000, times.count, Double(batchSize) / median, 100 * shares.sorted()[shares.count / 2]))
        return median
    }
}
