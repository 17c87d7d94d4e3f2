import AmberCatalog
import AmberModel
import AmberTrain
import AmberTensor
import ArgumentParser
import Foundation

struct BaselineCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "baseline",
        abstract: "Baselines in the evaluation harness of the model.",
        subcommands: [CCABaselineCommand.self, VSEBaselineCommand.self, LabelBaselineCommand.self]
    )
}

/// Options shared by commands that train and evaluate offline on a global/local directory.
struct OfflineDataOptions: ParsableArguments {
    /// Where `ops/dev/flickr8k-features` (`amber encode ../shared/data/flickr8k`) puts the features.
    static let defaultData = ".amber/features/flickr8k"

    @Option(help: "Dataset directory (global/local layout; default: the shared Flickr8k photos' features, made by ops/dev/flickr8k-features).")
    var data: String = Self.defaultData

    @Option(help: "Images from this index on are dev (default: meta.json's dev_start, else the last eighth).")
    var devStart: Int?

    @Option(help: "Images from this index on are test and left out (default: meta.json's test_start, else none).")
    var testStart: Int?

    func load() throws -> (train: RetrievalData, dev: RetrievalData) {
        if data == Self.defaultData && !FileManager.default.fileExists(atPath: data + "/ims_global.npy") {
            throw ValidationError("\(data): no features yet; make them from ../shared/data/flickr8k with ops/dev/flickr8k-features (≈ 3 min), or name a layout with --data")
        }
        let all = try RetrievalData.load(data)
        let recorded: LayoutSplits
        do { recorded = try LayoutSplits.read(directory: data, imageCount: all.imageCount) } catch { throw ValidationError("\(error)") }
        let end = testStart ?? recorded.testStart ?? all.imageCount
        let devStart = self.devStart ?? recorded.devStart ?? (end - end / 8)
        guard end >= 2 && end <= all.imageCount else {
            throw ValidationError("--test-start must be 2…\(all.imageCount) for the \(all.imageCount) images of \(data), got \(end)")
        }
        guard devStart >= 1 && devStart < end else {
            throw ValidationError("--dev-start must leave images on both sides: 1…\(end - 1) for the \(end) train and dev images of \(data), got \(devStart)")
        }
        return (all.subset(images: 0..<devStart), all.subset(images: devStart..<end))
    }
}

/// Optimisation options shared by the trainers; unset options keep the model's defaults.
struct OptimizationOptions: ParsableArguments {
    @Option(help: "Training steps.") var steps: Int?
    @Option(help: "Batch size.") var batchSize: Int?
    @Option(help: "Peak learning rate.") var learningRate: Float?
    @Option(help: "AdamW weight decay.") var weightDecay: Float?
    @Option(help: "Steps with all negatives before the hardest-negative triplet.") var allNegativesSteps: Int?
    @Option(help: "Evaluate on dev every N steps.") var evaluateEvery: Int?
    @Option(help: "Random seed.") var seed: UInt64?
    @Option(help: "adamw or sgd (momentum 0.9).") var optimizer: OptimizerKind?

    func apply(to configuration: inout OptimizationConfiguration) {
        if let steps { configuration.steps = steps }
        if let batchSize { configuration.batchSize = batchSize }
        if let learningRate { configuration.learningRate = learningRate }
        if let weightDecay { configuration.weightDecay = weightDecay }
        if let allNegativesSteps { configuration.allNegativesSteps = allNegativesSteps }
        if let evaluateEvery { configuration.evaluateEvery = evaluateEvery }
        if let seed { configuration.seed = seed }
        if let optimizer { configuration.optimizer = optimizer }
    }

    static func describe(_ c: OptimizationConfiguration) -> String {
        "\(c.optimizer.rawValue), batch \(c.batchSize), \(c.steps) steps, lr \(c.learningRate), weight decay \(c.weightDecay), seed \(c.seed)"
    }
}

/// Prints the best dev evaluation of a run.
func printBest(_ history: [TrainingEvaluation]) {
    if let best = history.max(by: { $0.metrics.rsum < $1.metrics.rsum }) {
        print("best on dev at step \(best.step): \(best.metrics)")
    }
}

struct CCABaselineCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cca",
        abstract: "Regularised linear CCA on the global vectors: fit on train, grid-search on dev, print R@K and rsum."
    )

    @OptionGroup var dataOptions: OfflineDataOptions

    @Option(parsing: .upToNextOption, help: "Ridge values to try (relative to the mean variance).")
    var regularization: [Double] = [0.1, 0.3, 1, 2, 4]

    @Option(parsing: .upToNextOption, help: "Numbers of directions to try.")
    var components: [Int] = [128, 256]

    @Option(parsing: .upToNextOption, help: "Exponents of the correlation weights to try.")
    var power: [Double] = [0, 1, 2]

    @Option(parsing: .upToNextOption, help: "Querybank normalisation β values tried on the best configuration (0: off).")
    var querybankBeta: [Float] = [0, 5, 10, 15, 20, 30, 50]

    func run() throws {
        let (train, dev) = try dataOptions.load()
        print("CCA on \(dataOptions.data): train \(train.imageCount) images / \(train.textCount) captions, dev \(dev.imageCount) / \(dev.textCount)")
        let x = train.imageGlobal.indexSelect(train.imageOfText), y = train.textGlobal
        var best: (Double, LinearCCA.Configuration, RetrievalMetrics)?
        for r in regularization {
            for k in components {
                for p in power {
                    let configuration = LinearCCA.Configuration(regularization: r, components: k, power: p)
                    let cca = try LinearCCA.fit(x: x, y: y, configuration: configuration)
                    let metrics = RetrievalMetrics.evaluate(images: cca.embedX(dev.imageGlobal), texts: cca.embedY(dev.textGlobal), imageOfText: dev.imageOfText)
                    print(String(format: "  r=%-5g k=%-4d p=%-3g dev rsum %6.1f  %@", r, k, p, metrics.rsum, metrics.description))
                    if best == nil || metrics.rsum > best!.0 { best = (metrics.rsum, configuration, metrics) }
                }
            }
        }
        guard let best else { return }
        print(String(format: "best on dev: r=%g k=%d p=%g → %@", best.1.regularization, best.1.components, best.1.power, best.2.description))
        // The same hubness correction the matching model gets: a querybank of the training embeddings.
        let cca = try LinearCCA.fit(x: x, y: y, configuration: best.1)
        let images = cca.embedX(dev.imageGlobal), texts = cca.embedY(dev.textGlobal)
        let querybank = QuerybankNormalization(beta: 0, images: cca.embedX(train.imageGlobal), texts: cca.embedY(train.textGlobal),
                                               limit: 4096, seed: 1)
        var bestBeta: (Float, RetrievalMetrics)?
        for beta in querybankBeta {
            let metrics = RetrievalMetrics.evaluate(images: images, texts: texts, imageOfText: dev.imageOfText,
                                                    offsets: querybank.with(beta: beta).offsets(images: images, texts: texts))
            print(String(format: "  querybank β %-4g dev rsum %6.1f  %@", beta, metrics.rsum, metrics.description))
            if bestBeta == nil || metrics.rsum > bestBeta!.1.rsum { bestBeta = (beta, metrics) }
        }
        if let bestBeta {
            print(String(format: "best with querybank normalisation: β %g → %@", bestBeta.0, bestBeta.1.description))
        }
    }
}

struct VSEBaselineCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vsepp",
        abstract: "VSE++ on the global vectors (linear projections, hardest-negative triplet): train, select on dev."
    )

    @OptionGroup var dataOptions: OfflineDataOptions

    @Option(help: "Joint dimension.") var dimension: Int = 1024
    @OptionGroup var optimization: OptimizationOptions

    func run() throws {
        let (train, dev) = try dataOptions.load()
        var configuration = VSETrainer.Configuration()
        configuration.jointDimension = dimension
        optimization.apply(to: &configuration.optimization)
        print("VSE++ on \(dataOptions.data): train \(train.textCount) pairs, dev \(dev.textCount) captions; D=\(dimension), \(OptimizationOptions.describe(configuration.optimization))")
        printBest(VSETrainer(configuration: configuration).train(train: train, dev: dev) { print($0) })
    }
}

extension OptimizerKind: ExpressibleByArgument {}
