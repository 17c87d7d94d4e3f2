import AmberCatalog
import AmberModel
import AmberStore
import AmberTensor
import AmberTrain
import ArgumentParser
import Foundation

/// What a training run learns from.
enum Supervision: String, ExpressibleByArgument, CaseIterable {
    /// Image–caption pairs (the matching model).
    case pairs
    /// Class labels (DRCL).
    case labels
}

extension Modality: ExpressibleByArgument {}
extension StageTwoKind: ExpressibleByArgument {}

/// Where a labelled set is and how its validation part is carved out.
struct LabelSplitOptions: ParsableArguments {
    @Option(help: "Labels: share of each class held out for validation (model selection and every reported number).")
    var validationShare: Double = 0.2
    @Option(help: "Labels: seed of the validation split (fixed across training seeds, so seeds vary only the model).")
    var splitSeed: UInt64 = 0

    func split(_ data: LabelledData) throws -> (train: LabelledData, validation: LabelledData) {
        guard validationShare > 0 && validationShare < 1 else {
            throw ValidationError("--validation-share must be in (0, 1), got \(validationShare)")
        }
        let parts = data.split(validationShare: validationShare, seed: splitSeed)
        guard parts.train.items.values.allSatisfy({ $0.count >= 2 }), parts.validation.items.values.allSatisfy({ $0.count >= 1 }) else {
            throw ValidationError("--validation-share \(validationShare) leaves no training or no validation items")
        }
        return parts
    }
}

/// The labelled set named by `--data`, or the shared Wikipedia set when `--data` was left at the
/// paired default.
func loadLabelledData(_ data: String) throws -> (path: String, data: LabelledData) {
    let path = data == OfflineDataOptions.defaultData ? LabelDataOptions.defaultData : data
    guard FileManager.default.fileExists(atPath: path) else {
        throw ValidationError("\(path) does not exist: name a labelled set (image.npy, text.npy, labels.npy) with --data")
    }
    do { return (path, try LabelledData.load(path)) } catch { throw ValidationError("\(error)") }
}

struct LabelDataOptions: ParsableArguments {
    static let defaultData = "../shared/data/wikipedia"

    @Option(help: "Labelled set: image.npy, text.npy and labels.npy (or train_*.npy) in a directory.") var data: String = Self.defaultData
    @OptionGroup var split: LabelSplitOptions
}

/// The options of `amber train --supervision labels`.
struct LabelTrainingOptions: ParsableArguments {
    @Option(help: "Labels: train only this modality's network (image or text; repeat for both). Default: every modality of --data.")
    var modality: [Modality] = []
    @Option(help: "Labels: a model written by a label run; its prior is kept and so are its networks of the modalities not trained now.")
    var from: String?
    @Option(help: "Labels: epochs of the selective-prior stage (per modality).") var priorEpochs: Int = 200
    @Option(help: "Labels: epochs of the consistency stage (per modality).") var epochs: Int = 200
    @Option(parsing: .upToNextOption, help: "Labels: hidden widths of each modality's network.") var hidden: [Int] = [4096, 4096]
    @Option(help: "Labels: dimension of the shared space.") var outputDimension: Int = 2048
    @Option(help: "Labels: learning rate of the selective-prior stage.") var priorLearningRate: Float = 5e-4
    @Option(help: "Labels: consistency-stage learning rate of the image network (DRCL on Wikipedia: 6e-6).") var imageLearningRate: Float = 6e-6
    @Option(help: "Labels: consistency-stage learning rate of the text network (DRCL on Wikipedia: 5e-3).") var textLearningRate: Float = 5e-3
    @Option(help: "Labels: λ of the feature mixup (1: off).") var mixup: Float = 0.9
    @Flag(help: "Labels: feed the features as they are (default: standardised by the training statistics).") var rawFeatures = false
    @OptionGroup var split: LabelSplitOptions
    @Option(help: "Labels, continuous: train again after this many rounds at most (default: until stopped).") var rounds: Int?
    @Option(help: "Labels, continuous: seconds between looks for new labelled items.") var pollSeconds: Double = 30
    @Option(help: "Labels, continuous: promote a new version whose validation mAP@all is at most this far below the serving label model's (both on today's validation items).")
    var mapTolerance: Double = 0.005

    /// What is wrong with the continuous options, or nil.
    var continuousProblem: String? {
        if let rounds, rounds < 1 { return "--rounds must be at least 1, got \(rounds)" }
        if !(pollSeconds.isFinite && pollSeconds >= 0.01 && pollSeconds <= 86_400) { return "--poll-seconds must be 0.01…86400, got \(pollSeconds)" }
        if !(mapTolerance.isFinite && mapTolerance >= 0 && mapTolerance <= 1) { return "--map-tolerance must be in [0, 1], got \(mapTolerance)" }
        if !(split.validationShare > 0 && split.validationShare < 1) { return "--validation-share must be in (0, 1), got \(split.validationShare)" }
        return nil
    }

    func configuration(_ optimization: OptimizationOptions) -> LabelTrainer.Configuration {
        var configuration = LabelTrainer.Configuration()
        configuration.network = LabelEncoder.Configuration(hidden: hidden, output: outputDimension)
        configuration.priorEpochs = priorEpochs
        configuration.epochs = epochs
        if let batchSize = optimization.batchSize { configuration.batchSize = batchSize }
        if let seed = optimization.seed { configuration.seed = seed }
        configuration.priorLearningRate = priorLearningRate
        configuration.imageLearningRate = imageLearningRate
        configuration.textLearningRate = textLearningRate
        configuration.mixup = mixup
        configuration.standardize = !rawFeatures
        return configuration
    }

    /// `amber train --supervision labels`: writes `model.safetensors` and `history.json` to `output`.
    func run(data: String, optimization: OptimizationOptions, output: String) throws {
        let configuration = configuration(optimization)
        if let problem = configuration.problem { throw ValidationError(problem) }
        let (path, all) = try loadLabelledData(data)
        let (train, validation) = try split.split(all)
        let modalities = modality.isEmpty ? Modality.allCases.filter { all.items[$0] != nil } : Array(Set(modality)).sorted { $0.rawValue < $1.rawValue }
        for m in modalities where all.items[m] == nil { throw ValidationError("--modality \(m.rawValue): \(path) has no \(m.rawValue) features") }
        guard all.classCount <= configuration.network.output else {
            throw ValidationError("\(path) has \(all.classCount) classes; the shared space (--output-dimension \(configuration.network.output)) needs at least as many dimensions")
        }
        var existing: LabelSupervisedModel?
        if let from {
            let model: LabelSupervisedModel
            do { model = try LabelSupervisedModel.read(from: from) } catch { throw ValidationError("\(error)") }
            guard model.configuration == configuration.network else {
                throw ValidationError("--from \(from) has networks \(model.configuration.hidden) → \(model.configuration.output); pass the same --hidden and --output-dimension")
            }
            guard model.classCount == all.classCount else {
                throw ValidationError("--from \(from) knows \(model.classCount) classes; \(path) has \(all.classCount)")
            }
            for (kept, encoder) in model.encoders {
                if let items = all.items[kept], items.features.shape[1] != encoder.inputDimension {
                    throw ValidationError("--from \(from) reads \(kept.rawValue) features of \(encoder.inputDimension) dimensions; \(path)'s \(kept.rawValue) features have \(items.features.shape[1])")
                }
            }
            existing = model
        }
        print("label-supervised (DRCL) on \(path): \(all.classCount) classes; "
              + modalities.map { "\($0.rawValue) \(train.items[$0]!.count) train / \(validation.items[$0]!.count) validation, d = \(all.items[$0]!.features.shape[1])" }.joined(separator: "; "))
        print("networks d → \(configuration.network.hidden.map(String.init).joined(separator: " → ")) → \(configuration.network.output); "
              + "\(configuration.priorEpochs) + \(configuration.epochs) epochs, batch \(configuration.batchSize), seed \(configuration.seed)"
              + (existing.map { " — prior and other networks from \(from ?? ""), prior of the \($0.priorModality.rawValue) side" } ?? ""))
        fflush(nil)
        let trainer = LabelTrainer(configuration: configuration, train: train, validation: validation) { print($0); fflush(nil) }
        let model = try trainer.run(modalities, existing: existing)
        try FileManager.default.createDirectory(atPath: output, withIntermediateDirectories: true)
        try model.write(to: output + "/model.safetensors")
        let history = try JSONEncoder().encode(trainer.history)
        try AtomicFile.write([Array(history)], to: output + "/history.json")
        if let metrics = model.metrics { print("validation: \(metrics)") }
        print("wrote \(output)/model.safetensors (\(model.encoders.keys.map(\.rawValue).sorted().joined(separator: " + ")) networks, prior of the \(model.priorModality.rawValue) side), \(output)/history.json")
    }
}

extension LabelTrainingOptions {
    /// `amber train --supervision labels --continuous`: whenever the catalogue's labelled items
    /// change, trains a label model on them (both stages, every modality that has labelled
    /// items), registers it as a model version and promotes it when no model is served, or when
    /// the serving model is a label model of the same classes that does no better on today's
    /// validation items (within `--map-tolerance`). A matching model in service is left to the
    /// operator. SIGINT or SIGTERM stops it between rounds.
    func runContinuously(database: DatabaseOptions, optimization: OptimizationOptions, migrate: Bool) throws {
        let configuration = configuration(optimization)
        if let problem = configuration.problem ?? continuousProblem { throw ValidationError(problem) }
        let stop = StopSignal(signals: [SIGINT, SIGTERM])
        try database.withDatabase { url in
            let owner = try PostgresConnection(url: url)
            if migrate { try Migrator(directory: Migrator.defaultDirectory()).migrateUp(on: owner) }
            let db = try PostgresConnection(url: try database.serviceURL(ownerURL: url))
            let clock = DateFormatter()
            clock.dateFormat = "HH:mm:ss"
            func log(_ line: String) { FileHandle.standardOutput.write(Data("[\(clock.string(from: Date()))] \(line)\n".utf8)) }
            log("continuous label training (DRCL): networks → \(configuration.network.hidden.map(String.init).joined(separator: " → ")) → \(configuration.network.output), "
                + "\(configuration.priorEpochs) + \(configuration.epochs) epochs, seed \(configuration.seed); looking for labelled items every \(pollSeconds) s")
            var seen: LabelledCatalog.Version?
            var round = 0
            while !stop.isSet, rounds.map({ round < $0 }) ?? true {
                let version = try LabelledCatalog.version(on: db)
                guard version != seen else {
                    let until = Date().addingTimeInterval(pollSeconds)
                    while !stop.isSet && Date() < until { Thread.sleep(forTimeInterval: min(0.2, pollSeconds)) }
                    continue
                }
                seen = version
                guard let (train, validation) = try LabelledCatalog.read(on: db, validationShare: split.validationShare, seed: split.splitSeed) else {
                    log("\(version.items) labelled items with features: fewer than two labels; waiting for more")
                    continue
                }
                let classes = train.classCount
                guard classes <= configuration.network.output else {
                    log("\(classes) labels, more than the shared space's \(configuration.network.output) dimensions (--output-dimension): waiting (a label model needs D ≥ the number of labels)")
                    continue
                }
                let modalities = Modality.allCases.filter { (train.items[$0]?.count ?? 0) >= 2 && (validation.items[$0]?.count ?? 0) >= 1 }
                guard modalities.count == 2 else {
                    log("labelled items (train / validation): " + Modality.allCases.map { "\($0.rawValue) \(train.items[$0]?.count ?? 0) / \(validation.items[$0]?.count ?? 0)" }.joined(separator: ", ")
                        + "; a search model needs both modalities with training and validation items; waiting for more")
                    continue
                }
                log("round \(round + 1): \(classes) labels; " + modalities.map { "\($0.rawValue) \(train.items[$0]!.count) train / \(validation.items[$0]!.count) validation" }.joined(separator: ", "))
                let trainer = LabelTrainer(configuration: configuration, train: train, validation: validation, progress: log)
                let model = try trainer.run(modalities)
                round += 1
                guard let metrics = model.metrics else { continue }
                let added = try ModelRegistry.add(model: try model.encoded(), step: round, configuration: MetadataJSON.encode(configuration.network),
                                                  metrics: MetadataJSON.encode(["map_all": metrics.mean, "map_50": metrics.meanAt50]), on: db)
                log("model version \(added): validation \(metrics)")
                // The gate: compare with the serving model on the same validation items (neither trained on them).
                var promote = true
                let serving = try ModelRegistry.servingModelFile(on: db)
                if let serving {
                    switch try? ServedModel.read(bytes: serving.bytes, name: "model version \(serving.version)") {
                    case .labels(let current) where current.classNames == train.classNames && current.encoders.allSatisfy({ validation.items[$0.key]?.features.shape[1] == $0.value.inputDimension }):
                        let now = current.evaluate(on: validation)?.mean ?? 0
                        promote = metrics.mean >= now - mapTolerance
                        log(String(format: "serving version %lld: validation mAP@all %.4f → %@", serving.version, now, promote ? "promoting" : "kept (the new version is worse)"))
                    case .labels:
                        log("serving version \(serving.version) is a label model of other classes or features; promoting the new one")
                    default:
                        promote = false
                        log("serving version \(serving.version) is not a label model: version \(added) stays a candidate (amber models promote \(added))")
                    }
                }
                if promote, try !ModelRegistry.promote(added, ifServing: serving?.version, on: db) {
                    log("another version was promoted meanwhile: version \(added) stays a candidate")
                }
            }
            log("stopped after \(round) rounds")
        }
    }
}

/// `amber eval labels`: mAP@all and mAP@50 both ways of a label-supervised model.
struct LabelEvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "labels",
        abstract: "mAP@all and mAP@50, image→text and text→image, of a label-supervised model (relevant: same class)."
    )

    @Option(help: "A model written by amber train --supervision labels.") var model: String = ".amber/train/model.safetensors"
    @OptionGroup var dataOptions: LabelDataOptions
    @Option(help: "Which items: validation (default), train, or all.") var part: String = "validation"

    func run() throws {
        let trained: LabelSupervisedModel
        do { trained = try LabelSupervisedModel.read(from: model) } catch { throw ValidationError("\(error)") }
        let (path, all) = try loadLabelledData(dataOptions.data)
        let (train, validation) = try dataOptions.split.split(all)
        let data: LabelledData
        switch part {
        case "validation": data = validation
        case "train": data = train
        case "all": data = all
        default: throw ValidationError("--part must be validation, train or all, not '\(part)'")
        }
        for (modality, encoder) in trained.encoders {
            if let items = data.items[modality], items.features.shape[1] != encoder.inputDimension {
                throw ValidationError("\(model) encodes \(modality.rawValue) features of \(encoder.inputDimension) dimensions; \(path) has \(items.features.shape[1])")
            }
        }
        guard let metrics = trained.evaluate(on: data) else {
            throw ValidationError("\(model) and \(path) need both an image and a text side (model: \(trained.encoders.keys.map(\.rawValue).sorted()))")
        }
        print("\(part) of \(path) (\(data.items[.image]?.count ?? 0) images, \(data.items[.text]?.count ?? 0) texts): \(metrics)")
    }
}

/// `amber baseline labels`: linear CCA and class-posterior matching on a labelled set, chosen on
/// its validation part, in the same split and metric as `amber train --supervision labels`.
struct LabelBaselineCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "labels",
        abstract: "Label-based retrieval baselines (mAP@all, mAP@50 both ways): linear CCA on the pairs and class-posterior matching, each chosen on validation."
    )

    @OptionGroup var dataOptions: LabelDataOptions
    @Option(parsing: .upToNextOption, help: "CCA ridge values to try (relative to the mean variance).") var regularization: [Double] = [0.01, 0.1, 0.3, 1, 3]
    @Option(parsing: .upToNextOption, help: "CCA directions to try (at most the smaller feature dimension).") var components: [Int] = [5, 10, 20, 64]
    @Option(parsing: .upToNextOption, help: "CCA exponents of the correlation weights to try.") var power: [Double] = [0, 1, 2]
    @Option(parsing: .upToNextOption, help: "Class posteriors: L2 penalties to try.") var penalty: [Float] = [0, 1e-3, 1e-2, 3e-2, 0.1, 0.3]
    @Option(parsing: .upToNextOption, help: "Class posteriors: seeds (mean ± std over them).") var seed: [UInt64] = [1, 2, 3]

    func validate() throws {
        guard !regularization.isEmpty, regularization.allSatisfy({ $0.isFinite && $0 >= 0 && $0 <= 1e6 }) else { throw ValidationError("--regularization values must be finite and in [0, 1e6]") }
        guard !components.isEmpty, components.allSatisfy({ (1...65_536).contains($0) }) else { throw ValidationError("--components must be 1…65536") }
        guard !power.isEmpty, power.allSatisfy({ $0.isFinite && abs($0) <= 100 }) else { throw ValidationError("--power values must be finite, |p| ≤ 100") }
        guard !penalty.isEmpty, penalty.allSatisfy({ $0.isFinite && $0 >= 0 && $0 <= 1e6 }) else { throw ValidationError("--penalty values must be finite and in [0, 1e6]") }
        guard !seed.isEmpty else { throw ValidationError("--seed needs at least one seed") }
    }

    func run() throws {
        let (path, all) = try loadLabelledData(dataOptions.data)
        let (train, validation) = try dataOptions.split.split(all)
        guard let trainImages = train.items[.image], let trainTexts = train.items[.text],
              let images = validation.items[.image], let texts = validation.items[.text] else {
            throw ValidationError("\(path) needs image and text features for the baselines")
        }
        print("baselines on \(path): \(train.classCount) classes, \(trainImages.count) train / \(images.count) validation items per modality")
        func metrics(_ x: Tensor, _ y: Tensor) -> LabelRetrievalMetrics {
            LabelRetrievalMetrics.evaluate(images: x, imageLabels: images.labels, texts: y, textLabels: texts.labels)
        }
        // CCA on the pairs (row k of each modality), standardised as DRCL's inputs are.
        let imageStatistics = LabelEncoder.standardization(of: trainImages.features), textStatistics = LabelEncoder.standardization(of: trainTexts.features)
        func standardized(_ x: Tensor, _ s: (mean: Tensor, scale: Tensor)) -> Tensor { (x - s.mean) * s.scale }
        let maxComponents = min(trainImages.features.shape[1], trainTexts.features.shape[1])
        var best: (LabelRetrievalMetrics, LinearCCA.Configuration)?
        for r in regularization {
            for k in Set(components.map { min($0, maxComponents) }).sorted() {
                for p in power {
                    let configuration = LinearCCA.Configuration(regularization: r, components: k, power: p)
                    let cca = try LinearCCA.fit(x: standardized(trainImages.features, imageStatistics), y: standardized(trainTexts.features, textStatistics),
                                                configuration: configuration)
                    let m = metrics(cca.embedX(standardized(images.features, imageStatistics)), cca.embedY(standardized(texts.features, textStatistics)))
                    print(String(format: "  CCA r=%-5g k=%-3d p=%-2g validation mAP@all mean %.4f", r, k, p, m.mean))
                    if best == nil || m.mean > best!.0.mean { best = (m, configuration) }
                }
            }
        }
        if let best {
            print(String(format: "CCA, best on validation (r=%g k=%d p=%g): %@", best.1.regularization, best.1.components, best.1.power, best.0.description))
        }
        // Class-posterior matching: the penalty chosen on validation (seed 1), then every seed.
        func posterior(_ penalty: Float, _ seed: UInt64) -> LabelRetrievalMetrics {
            let configuration = ClassPosteriorBaseline.Configuration(penalty: penalty, seed: seed)
            let image = ClassPosteriorBaseline.fit(trainImages, classCount: train.classCount, configuration: configuration)
            let text = ClassPosteriorBaseline.fit(trainTexts, classCount: train.classCount, configuration: configuration)
            return metrics(image.posteriors(images.features), text.posteriors(texts.features))
        }
        var chosen: (Float, LabelRetrievalMetrics)?
        for λ in penalty {
            let m = posterior(λ, seed.first ?? 1)
            print(String(format: "  class posteriors L2 %-6g validation mAP@all mean %.4f", λ, m.mean))
            if chosen == nil || m.mean > chosen!.1.mean { chosen = (λ, m) }
        }
        guard let chosen else { return }
        let runs = seed.map { posterior(chosen.0, $0) }
        func spread(_ values: [Double]) -> String {
            let mean = values.reduce(0, +) / Double(values.count)
            let std = values.count > 1 ? (values.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(values.count - 1)).squareRoot() : 0
            return String(format: "%.4f ± %.4f", mean, std)
        }
        print("class posteriors (L2 \(chosen.0)), seeds \(seed.map(String.init).joined(separator: ", ")): mAP@all i→t \(spread(runs.map(\.imageToText))), "
              + "t→i \(spread(runs.map(\.textToImage))), mean \(spread(runs.map(\.mean))); mAP@50 mean \(spread(runs.map(\.meanAt50)))")
    }
}
