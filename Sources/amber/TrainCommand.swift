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

    @Option(help: "Joint dimension D.") var dimension: Int = 1024
    @OptionGroup var optimization: OptimizationOptions
    @Option(help: "Fragment dropout probability.") var fragmentDropout: Float = 0.2
    @Option(help: "Attention temperature on cosines.") var attentionTemperature: Float = 1
    @Option(help: "fused, localOnly or globalOnly.") var fusion: String = "fused"
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
        configuration.encoder.jointDimension = dimension
        configuration.encoder.fragmentDropout = fragmentDropout
        configuration.encoder.attentionTemperature = attentionTemperature
        configuration.encoder.fusion = fusionMode
        optimization.apply(to: &configuration.optimization)
        configuration.warmStartFromCCA = warmStart
        configuration.memoryWeight = memoryWeight
        configuration.queueSize = queueSize
        configuration.prototypeWeight = prototypeWeight
        configuration.prototypeCount = prototypes
        configuration.graphWeight = graphWeight
        print("train on \(dataOptions.data): \(train.textCount) pairs, dev \(dev.textCount) captions; D=\(dimension), fusion \(fusion), \(OptimizationOptions.describe(configuration.optimization))")
        printBest(MatchingTrainer(configuration: configuration).train(train: train, dev: dev) { print($0) })
    }
}
