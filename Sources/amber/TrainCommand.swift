import AmberModel
import AmberTrain
import ArgumentParser
import Foundation

struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train the matching model offline on a dataset directory and select on dev."
    )

    @OptionGroup var dataOptions: OfflineDataOptions

    @Option(help: "Training steps.") var steps: Int = 1500
    @Option(help: "Joint dimension D.") var dimension: Int = 1024
    @Option(help: "Batch size.") var batchSize: Int = 128
    @Option(help: "Peak learning rate.") var learningRate: Float = 5e-4
    @Option(help: "AdamW weight decay.") var weightDecay: Float = 1e-4
    @Option(help: "Fragment dropout probability.") var fragmentDropout: Float = 0.2
    @Option(help: "Attention temperature on cosines.") var attentionTemperature: Float = 1
    @Option(help: "fused, localOnly or globalOnly.") var fusion: String = "fused"
    @Option(help: "Evaluate on dev every N steps.") var evaluateEvery: Int = 100
    @Option(help: "Random seed.") var seed: UInt64 = 1
    @Option(help: "Steps with all negatives before the hardest-negative triplet.") var allNegativesSteps: Int = 200
    @Option(help: "λ of the memory-augmented contrastive loss (0: off).") var memoryWeight: Float = 0
    @Option(help: "Keys per modality queue.") var queueSize: Int = 2048
    @Option(help: "λ of the Sinkhorn prototype loss (0: off).") var prototypeWeight: Float = 0
    @Option(help: "Number of prototypes K.") var prototypes: Int = 64
    @Option(help: "λ of the relation-graph triplet losses (0: off).") var graphWeight: Float = 0
    @Flag(help: "Start the global projections from the CCA solution (needs D ≤ the smaller global dimension).") var warmStart = false

    func run() throws {
        guard let fusionMode = ModalityEncoder.Fusion(rawValue: fusion) else {
            throw ValidationError("--fusion must be fused, localOnly or globalOnly, not '\(fusion)'")
        }
        let (train, dev) = try dataOptions.load()
        var configuration = MatchingTrainer.Configuration()
        configuration.optimization.steps = steps
        configuration.encoder.jointDimension = dimension
        configuration.encoder.fragmentDropout = fragmentDropout
        configuration.encoder.attentionTemperature = attentionTemperature
        configuration.encoder.fusion = fusionMode
        configuration.optimization.batchSize = batchSize
        configuration.optimization.learningRate = learningRate
        configuration.optimization.weightDecay = weightDecay
        configuration.optimization.evaluateEvery = evaluateEvery
        configuration.optimization.seed = seed
        configuration.warmStartFromCCA = warmStart
        configuration.optimization.allNegativesSteps = allNegativesSteps
        configuration.memoryWeight = memoryWeight
        configuration.queueSize = queueSize
        configuration.prototypeWeight = prototypeWeight
        configuration.prototypeCount = prototypes
        configuration.graphWeight = graphWeight
        print("train on \(dataOptions.data): \(train.textCount) pairs, dev \(dev.textCount) captions; D=\(dimension), batch \(batchSize), \(steps) steps, seed \(seed), fusion \(fusion)")
        let history = MatchingTrainer(configuration: configuration).train(train: train, dev: dev) { print($0) }
        if let best = history.max(by: { $0.metrics.rsum < $1.metrics.rsum }) {
            print("best on dev at step \(best.step): \(best.metrics)")
        }
    }
}
