import AmberModel
import AmberTensor
import AmberTrain
import ArgumentParser
import Foundation

struct TrainBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Training step of the matching model (triplet only, and the full model with memory bank, prototypes and graph): pairs/s, median of N steps after warm-up, and the share in BLAS."
    )

    @Option(help: "Batch size.") var batchSize: Int = 128
    @Option(help: "Joint dimension D.") var dimension: Int = 1024
    @Option(help: "Timed steps (after 3 warm-up steps).") var steps: Int = 20

    func run() throws {
        // Shapes of flickr8k-800: images 1280 + 49 × 1280, texts 384 + ~15 × 384 (random values).
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
        print("amber bench train")
        print("machine: \(MachineDescription.current); OpenBLAS threads \(BLASThreads.count)")
        print(String(format: "matching model, D = %d, batch %d, triplet loss: step %.1f ms (median of %d), %.0f pairs/s, %.0f%% in BLAS",
                     dimension, B, median * 1000, steps, Double(B) / median, 100 * shares.sorted()[shares.count / 2]))
        try fullModel()
    }

    /// The trainer's own step with every loss on (queues of 2,048, prototypes, graph), timed
    /// through its step hook on synthetic data of flickr8k-800's shapes.
    func fullModel() throws {
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
        print(String(format: "matching model, D = %d, batch %d, full model (triplet + memory bank + prototypes + graph): step %.1f ms (median of %d), %.0f pairs/s, %.0f%% in BLAS",
                     dimension, batchSize, median * 1000, times.count, Double(batchSize) / median, 100 * shares.sorted()[shares.count / 2]))
    }
}
