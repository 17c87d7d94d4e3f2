import AmberModel
import AmberTrain
import AmberTensor
import ArgumentParser
import Foundation

struct BaselineCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "baseline",
        abstract: "Baselines in the evaluation harness of the model.",
        subcommands: [CCABaselineCommand.self, VSEBaselineCommand.self]
    )
}

/// Options shared by commands that train and evaluate offline on a global/local directory.
struct OfflineDataOptions: ParsableArguments {
    @Option(help: "Dataset directory (global/local layout).")
    var data: String = "../shared/data/flickr8k-800"

    @Option(help: "Images from this index on are dev (default: the last eighth).")
    var devStart: Int?

    func load() throws -> (train: RetrievalData, dev: RetrievalData) {
        let all = try RetrievalData.load(data)
        let devStart = self.devStart ?? (all.imageCount - all.imageCount / 8)
        return (all.subset(images: 0..<devStart), all.subset(images: devStart..<all.imageCount))
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
        if let best {
            print(String(format: "best on dev: r=%g k=%d p=%g → %@", best.1.regularization, best.1.components, best.1.power, best.2.description))
        }
    }
}

struct VSEBaselineCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vsepp",
        abstract: "VSE++ on the global vectors (linear projections, hardest-negative triplet): train, select on dev."
    )

    @OptionGroup var dataOptions: OfflineDataOptions

    @Option(help: "Training steps.") var steps: Int = 2000
    @Option(help: "Joint dimension.") var dimension: Int = 1024
    @Option(help: "Batch size.") var batchSize: Int = 128
    @Option(help: "Peak learning rate.") var learningRate: Float = 2e-4
    @Option(help: "AdamW weight decay.") var weightDecay: Float = 1e-4
    @Option(help: "Evaluate on dev every N steps.") var evaluateEvery: Int = 200
    @Option(help: "Random seed.") var seed: UInt64 = 1

    func run() throws {
        let (train, dev) = try dataOptions.load()
        var configuration = VSETrainer.Configuration()
        configuration.optimization.steps = steps
        configuration.jointDimension = dimension
        configuration.optimization.batchSize = batchSize
        configuration.optimization.learningRate = learningRate
        configuration.optimization.weightDecay = weightDecay
        configuration.optimization.evaluateEvery = evaluateEvery
        configuration.optimization.seed = seed
        print("VSE++ on \(dataOptions.data): train \(train.textCount) pairs, dev \(dev.textCount) captions; D=\(dimension), batch \(batchSize), \(steps) steps, seed \(seed)")
        let history = VSETrainer(configuration: configuration).train(train: train, dev: dev) { print($0) }
        if let best = history.max(by: { $0.metrics.rsum < $1.metrics.rsum }) {
            print("best on dev at step \(best.step): \(best.metrics)")
        }
    }
}
