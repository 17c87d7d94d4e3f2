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
    @Flag(help: "Gate on [norm(l); norm(h)] instead of [l; h] (scale-free gate).") var normalizedGate = false
    @Option(help: "λ of the memory-augmented contrastive loss (0: off).") var memoryWeight: Float = 0
    @Option(help: "Keys per modality queue.") var queueSize: Int = 2048
    @Option(help: "λ of the Sinkhorn prototype loss (0: off).") var prototypeWeight: Float = 0
    @Option(help: "Number of prototypes K.") var prototypes: Int = 64
    @Option(help: "λ of the relation-graph triplet losses (0: off).") var graphWeight: Float = 0
    @Flag(help: "Start the global projections from the CCA solution (needs D ≤ the smaller global dimension).") var warmStart = false
    @Option(parsing: .upToNextOption, help: "Keep parameters whose name contains one of these at their start (e.g. fragment gate.weight).")
    var freeze: [String] = []
    @Option(help: "λ of an elastic pull of the parameters towards their start (L2-SP; 0: off).") var anchorStrength: Float = 0
    @Option(help: "Stage 2: candidates re-ranked per query.") var rerankDepth: Int = 32
    @Option(help: "Directory for checkpoints: training.safetensors (resume), best.safetensors (best-on-dev model), report.svg.")
    var output: String = ".amber/train"
    @Flag(help: "Continue the run saved in --output (same options; --steps may be raised).") var resume = false

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
        configuration.encoder.normalizedGateInput = normalizedGate
        optimization.apply(to: &configuration.optimization)
        configuration.warmStartFromCCA = warmStart
        configuration.memoryWeight = memoryWeight
        configuration.queueSize = queueSize
        configuration.prototypeWeight = prototypeWeight
        configuration.prototypeCount = prototypes
        configuration.graphWeight = graphWeight
        configuration.frozen = freeze
        configuration.anchorStrength = anchorStrength
        configuration.rerankDepth = rerankDepth
        let statePath = output + "/training.safetensors"
        let trainer: MatchingTrainer
        if resume {
            guard FileManager.default.fileExists(atPath: statePath) else {
                throw ValidationError("--resume: \(statePath) does not exist; train without --resume first")
            }
            trainer = try MatchingTrainer(resumingFrom: statePath, configuration: configuration, train: train)
            print("resuming \(statePath) at step \(trainer.step)")
        } else {
            guard !FileManager.default.fileExists(atPath: statePath) else {
                throw ValidationError("\(statePath) exists: pass --resume to continue that run, or choose another --output")
            }
            trainer = try MatchingTrainer(configuration: configuration, train: train)
        }
        print("train on \(dataOptions.data): \(train.textCount) pairs, dev \(dev.textCount) captions; D=\(dimension), fusion \(fusion), \(OptimizationOptions.describe(configuration.optimization))")
        let result = try trainer.run(train: train, dev: dev, checkpoints: output, progress: { print($0) })
        printBest(result.history)
        print("stage 1 with querybank normalisation (\(result.model.querybank?.imageQueries.shape[0] ?? 0) image and "
              + "\(result.model.querybank?.textQueries.shape[0] ?? 0) text training queries) on dev, by β:")
        for entry in result.betaSweep {
            print(String(format: "  β %4.1f  rsum %.1f", entry.beta, entry.metrics.rsum))
        }
        let beta = result.model.querybank?.beta ?? 0
        print(beta == 0 ? "querybank normalisation does not help on dev: kept off (β = 0)"
                        : String(format: "chosen β %.1f: %@", beta, result.betaSweep.first { $0.beta == beta }?.metrics.description ?? ""))
        print("stage 2 (local re-rank of the top \(rerankDepth), λ = \(configuration.alignment.temperature)) on dev, by α:")
        for entry in result.alphaSweep {
            print(String(format: "  α %.1f  rsum %.1f", entry.alpha, entry.metrics.rsum))
        }
        let chosen = result.model.ranking.alpha
        print(chosen == 1 ? "stage 2 does not help on dev: kept off (α = 1)"
                          : String(format: "chosen α %.1f: %@", chosen, result.model.stageTwoMetrics?.description ?? ""))
        if let served = result.model.stageTwoMetrics { print("served ranking on dev (β \(beta), α \(chosen)): \(served)") }
        print("wrote \(output)/best.safetensors (step \(result.model.step)), \(output)/training.safetensors, \(output)/report.svg")
    }
}
