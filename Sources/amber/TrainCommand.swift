import AmberCatalog
import AmberModel
import AmberStore
import AmberTrain
import AmberText
import ArgumentParser
import Foundation

struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train the matching model offline on a dataset directory and select on dev."
    )

    @OptionGroup var dataOptions: OfflineDataOptions
    @Option(help: "What the model learns from: pairs (image–caption pairs: the matching model) or labels (class labels: DRCL, options marked 'Labels').")
    var supervision: Supervision = .pairs
    @OptionGroup var labelOptions: LabelTrainingOptions

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
    @Option(help: "Steps before the prototype loss starts (the embeddings settle first).") var prototypeWarmup: Int = 200
    @Option(help: "EMA momentum with which the prototypes follow the embeddings coded to them; 'gradient' learns them by gradient instead.")
    var prototypeMomentum: String = "0.99"
    @Option(help: "λ of the relation-graph triplet losses (0: off).") var graphWeight: Float = 0
    @Option(help: "CE-CLIP: λ of the image→text contrast with each caption's typed negatives (0: off; offline training).") var captionNegativeWeight: Float = 0
    @Option(help: "CE-CLIP: λ of the cross-modal rank loss with adaptive per-type margins (0: off).") var rankWeight: Float = 0
    @Option(help: "CE-CLIP: λ of the intra-modal contrast of a caption with its negatives (0: off).") var intraWeight: Float = 0
    @Option(help: "Seed of the typed negative captions (CaptionNegatives).") var negativeSeed: UInt64 = 0
    @Option(help: "GARE: λ of the gap-aware pair objective (0: off); the model then carries a GARE scorer.") var gareWeight: Float = 0
    @Option(help: "GARE: width of the increment network.") var gareWidth: Int = 256
    @Flag(help: "GARE: train the scorer on detached embeddings (a stage-2 re-ranker that leaves stage 1 as it is).") var gareDetached = false
    @Option(help: "Stage 2: scan (SCAN-style alignment) or gare (needs --gare-weight); α is chosen on dev either way.") var stageTwo: StageTwoKind = .scan
    @OptionGroup var textModel: TextModelOptions
    @Flag(help: "Start the global projections from the CCA solution (needs D ≤ the smaller global dimension).") var warmStart = false
    @Option(parsing: .upToNextOption, help: "Keep parameters whose name contains one of these at their start (e.g. fragment gate.weight).")
    var freeze: [String] = []
    @Option(help: "λ of an elastic pull of the parameters towards their start (L2-SP; 0: off).") var anchorStrength: Float = 0
    @Option(help: "Stage 2: candidates re-ranked per query.") var rerankDepth: Int = 32
    @Option(help: "Directory for checkpoints: training.safetensors (resume), best.safetensors (best-on-dev model), report.svg.")
    var output: String = ".amber/train"
    @Flag(help: "Continue the run saved in --output (same options; --steps may be raised).") var resume = false

    @Flag(help: "Train without end from the pairs in the database (the run resumes from its last checkpoint; SIGINT or SIGTERM stops it after a last checkpoint). --steps, if given, stops it after that many steps.")
    var continuous = false
    @Option(name: .customLong("run"), help: "Continuous: the run to continue (created the first time).") var runName: String = "main"
    @Option(help: "Continuous: steps between checkpoints (one transaction each).") var checkpointEvery: Int = 100
    @Option(help: "Continuous: steps between model versions (dev evaluation, candidate, promotion gate).") var versionEvery: Int = 500
    @Option(help: "Continuous: share of each batch taken from pairs not yet trained on.") var newShare: Double = 0.5
    @Option(help: "Continuous: promote a candidate whose dev rsum is at most this far below the serving model's.") var promotionTolerance: Double = 1
    @Option(help: "Continuous: checkpoints kept per run.") var keepCheckpoints: Int = 3
    @Option(help: "Continuous: weight of a result users rejected for a query (POST /v1/feedback) as a hard negative of that query in the memory-bank loss (1: as any negative, 0: feedback rejections not read; needs --memory-weight > 0).")
    var hardNegativeWeight: Float = 2
    @Option(help: "Continuous: rejected results used per query and step (most recent first).") var hardNegativesPerQuery: Int = 8
    @Flag(help: "Continuous: apply pending migrations first.") var migrate = false
    @OptionGroup var database: DatabaseOptions

    func validate() throws {
        if supervision == .labels {
            if let problem = labelOptions.configuration(optimization).problem ?? (continuous ? labelOptions.continuousProblem : nil) {
                throw ValidationError(problem)
            }
            return
        }
        if let problem = try configuration().problem { throw ValidationError(problem) }
        if continuous {
            guard checkpointEvery >= 1, versionEvery >= 1, keepCheckpoints >= 1 else {
                throw ValidationError("--checkpoint-every, --version-every and --keep-checkpoints must be at least 1")
            }
            var trainer = ContinuousTrainer.Configuration()
            trainer.hardNegativeWeight = hardNegativeWeight
            trainer.hardNegativesPerQuery = hardNegativesPerQuery
            if let problem = trainer.problem { throw ValidationError(problem) }
            guard newShare > 0 && newShare <= 1 else { throw ValidationError("--new-share must be in (0, 1], got \(newShare)") }
            guard promotionTolerance.isFinite && promotionTolerance >= 0 else {
                throw ValidationError("--promotion-tolerance must be a finite number ≥ 0, got \(promotionTolerance)")
            }
            guard (1...200).contains(runName.unicodeScalars.count), !runName.unicodeScalars.contains("\0") else {
                throw ValidationError("--run must be 1 to 200 characters, without NUL")
            }
        } else if (optimization.steps ?? 1) < 1 {
            throw ValidationError("--steps must be at least 1 for offline training")
        }
    }

    /// The model configuration the options describe.
    func configuration() throws -> MatchingTrainer.Configuration {
        guard let fusionMode = ModalityEncoder.Fusion(rawValue: fusion) else {
            throw ValidationError("--fusion must be fused, localOnly or globalOnly, not '\(fusion)'")
        }
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
        configuration.prototypeWarmupSteps = prototypeWarmup
        if prototypeMomentum == "gradient" {
            configuration.prototypeMomentum = nil
        } else if let momentum = Float(prototypeMomentum) {
            configuration.prototypeMomentum = momentum
        } else {
            throw ValidationError("--prototype-momentum must be a number in [0, 1) or 'gradient', got '\(prototypeMomentum)'")
        }
        configuration.graphWeight = graphWeight
        if captionNegativeWeight != 0 { configuration.captionNegativeWeight = captionNegativeWeight }
        if rankWeight != 0 { configuration.rankWeight = rankWeight }
        if intraWeight != 0 { configuration.intraWeight = intraWeight }
        if gareWeight != 0 {
            configuration.gare = GapAwareScorer.Configuration(width: gareWidth)
            configuration.gareWeight = gareWeight
            if gareDetached { configuration.gareDetached = true }
        }
        if stageTwo != .scan { configuration.stageTwo = stageTwo }
        configuration.frozen = freeze
        configuration.anchorStrength = anchorStrength
        configuration.rerankDepth = rerankDepth
        return configuration
    }

    func run() throws {
        if supervision == .labels {
            if continuous {
                try labelOptions.runContinuously(database: database, optimization: optimization, migrate: migrate)
            } else {
                try labelOptions.run(data: dataOptions.data, optimization: optimization, output: output)
            }
            return
        }
        let configuration = try configuration()
        if continuous {
            // Data comes from the database; --data is not read.
            try runContinuously(configuration)
            return
        }
        let (train, dev) = try dataOptions.load()
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
        if configuration.usesCaptionNegatives {
            trainer.captionNegatives = try captionNegatives(of: train)
        }
        print("train on \(dataOptions.data): \(train.textCount) pairs, dev \(dev.textCount) captions; D=\(dimension), fusion \(fusion), \(OptimizationOptions.describe(configuration.optimization))")
        // Flushed line by line, so that `amber train > log` shows each evaluation as it happens.
        fflush(nil)
        let result = try trainer.run(train: train, dev: dev, checkpoints: output, progress: { print($0); fflush(nil) })
        printBest(result.history)
        print("stage 1 with querybank normalisation (\(result.model.querybank?.imageQueries.shape[0] ?? 0) image and "
              + "\(result.model.querybank?.textQueries.shape[0] ?? 0) text training queries) on dev, by β:")
        for entry in result.betaSweep {
            print(String(format: "  β %4.1f  rsum %.1f", entry.beta, entry.metrics.rsum))
        }
        let beta = result.model.querybank?.beta ?? 0
        print(beta == 0 ? "querybank normalisation does not help on dev: kept off (β = 0)"
                        : String(format: "chosen β %.1f: %@", beta, result.betaSweep.first { $0.beta == beta }?.metrics.description ?? ""))
        print(result.model.stageTwo == .gare ? "stage 2 (GARE re-rank of the top \(rerankDepth)) on dev, by α:"
              : "stage 2 (SCAN-style re-rank of the top \(rerankDepth), λ = \(configuration.alignment.temperature)) on dev, by α:")
        for entry in result.alphaSweep {
            print(String(format: "  α %.1f  rsum %.1f", entry.alpha, entry.metrics.rsum))
        }
        let chosen = result.model.ranking.alpha
        print(chosen == 1 ? "stage 2 does not help on dev: kept off (α = 1)"
                          : String(format: "chosen α %.1f: %@", chosen, result.model.stageTwoMetrics?.description ?? ""))
        if let served = result.model.stageTwoMetrics { print("served ranking on dev (β \(beta), α \(chosen)): \(served)") }
        print("wrote \(output)/best.safetensors (step \(result.model.step)), \(output)/training.safetensors, \(output)/report.svg")
    }

    /// The typed negatives of every training caption (CE-CLIP), encoded by MiniLM as the
    /// features were (tokens rounded to float16).
    private func captionNegatives(of train: RetrievalData) throws -> CaptionNegativeSet {
        guard train.captions.count == train.textCount else {
            throw ValidationError("the CE-CLIP losses need the captions' text (caps.txt in \(dataOptions.data)) to make their negatives")
        }
        let generator = CaptionNegatives(seed: negativeSeed)
        var rows: [[Int]] = [], texts: [String] = []
        for caption in train.captions {
            let negatives = generator.negatives(of: caption)
            rows.append(NegativeType.allCases.map { type in
                guard let negative = negatives[type] else { return -1 }
                texts.append(negative)
                return texts.count - 1
            })
        }
        let encoder = try textModel.load()
        let started = Date()
        print("encoding \(texts.count) negative captions of \(train.textCount) training captions (MiniLM)…")
        fflush(nil)
        let features = encoder.encode(texts).map { encoding in
            ItemFeatures(global: encoding.sentenceVector.scalars,
                         local: encoding.tokenVectors.scalars.map { Float(Float16($0)) }, localCount: encoding.tokenVectors.shape[0])
        }
        print(String(format: "encoded in %.0f s", Date().timeIntervalSince(started)))
        guard let set = CaptionNegativeSet(rows: rows, features: features, types: NegativeType.allCases.count) else {
            throw ValidationError("internal: the negative captions do not index their features")
        }
        return set
    }

    /// `amber train --continuous`: the model configuration from the same options, data from the database.
    private func runContinuously(_ model: MatchingTrainer.Configuration) throws {
        var configuration = ContinuousTrainer.Configuration()
        configuration.model = model
        // No step decay while training without end: the learning rate stays at its peak after warm-up.
        configuration.model.optimization.decayEvery = Int.max / 4
        configuration.maximumSteps = optimization.steps
        configuration.model.optimization.steps = 0
        configuration.runName = runName
        configuration.checkpointEvery = checkpointEvery
        configuration.evaluateEvery = versionEvery
        configuration.newShare = newShare
        configuration.promotionTolerance = promotionTolerance
        configuration.keepCheckpoints = keepCheckpoints
        configuration.hardNegativeWeight = hardNegativeWeight
        configuration.hardNegativesPerQuery = hardNegativesPerQuery
        let stop = StopSignal(signals: [SIGINT, SIGTERM])
        try database.withDatabase { url in
            if migrate { try Migrator(directory: Migrator.defaultDirectory()).migrateUp(on: PostgresConnection(url: url)) }
            let clock = DateFormatter()
            clock.dateFormat = "HH:mm:ss"
            // Unbuffered, so that a log file shows each line as it happens.
            func log(_ line: String) { FileHandle.standardOutput.write(Data("[\(clock.string(from: Date()))] \(line)\n".utf8)) }
            let o = configuration.model.optimization
            log("continuous training, run \(runName): D=\(dimension), \(o.optimizer.rawValue), batch \(o.batchSize), lr \(o.learningRate), "
                + "weight decay \(o.weightDecay), seed \(o.seed), " + (configuration.maximumSteps.map { "up to step \($0)" } ?? "until stopped") + "; "
                + "checkpoint every \(checkpointEvery) steps, model version every \(versionEvery)")
            let trainer = ContinuousTrainer(configuration: configuration, store: PostgresTrainingStore(url: try database.serviceURL(ownerURL: url)),
                                            progress: log)
            let summary = try trainer.run(shouldStop: { stop.isSet })
            log("stopped at step \(summary.step) (committed \(summary.committedStep)): \(summary.trainPairs) train pairs, \(summary.devPairs) dev, "
                + "cursor \(summary.cursor); versions written \(summary.versionsWritten), promoted \(summary.versionsPromoted)")
        }
    }
}

/// Turns SIGINT/SIGTERM into a flag a long loop checks; a second signal exits at once.
final class StopSignal: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    private var sources: [DispatchSourceSignal] = []

    init(signals: [Int32]) {
        for number in signals {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { [weak self] in self?.received(number) }
            source.resume()
            sources.append(source)
        }
    }

    private func received(_ number: Int32) {
        lock.lock()
        count += 1
        let first = count == 1
        lock.unlock()
        if first {
            FileHandle.standardError.write(Data("amber: signal \(number): stopping after a last checkpoint (send it again to stop at once)\n".utf8))
        } else {
            _exit(128 + number)
        }
    }

    var isSet: Bool {
        lock.lock()
        defer { lock.unlock() }
        return count > 0
    }
}
