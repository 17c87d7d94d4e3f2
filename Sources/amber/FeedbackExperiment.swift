import AmberCatalog
import AmberModel
import AmberTensor
import AmberTrain
import ArgumentParser
import Foundation

/// Does learning from users' feedback help? Some training images are held out of
/// training as the images users look for; the continuous trainer learns on the rest; the model it
/// serves then answers every caption of a held-out image by its stage 1 with the model's querybank
/// normalisation (the local re-rank is left out here), and a simulated user chooses the right
/// image when it is in the top `patience` and rejects the results ranked above it. From that same
/// checkpoint the run goes on for the same number of steps in each arm:
/// - `none`: no feedback;
/// - `pairs`: the chosen results as new train pairs (what `POST /v1/feedback` stores);
/// - `rejections`: those pairs and the rejected results as hard negatives of their query;
/// - `oracle`: every pair of the held-out images (as if all were labelled: the upper bound).
/// Dev images are never shown to the simulated user. Everything runs through the continuous
/// trainer over an in-memory store, as `amber train --continuous` runs over PostgreSQL.
struct FeedbackExperimentCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "feedback",
        abstract: "Simulated users' feedback: dev rsum after the same steps with no feedback, its pairs, its pairs and rejections, or every pair."
    )

    enum Arm: String, CaseIterable, ExpressibleByArgument {
        case none, pairs, rejections, oracle
    }

    @OptionGroup var dataOptions: OfflineDataOptions
    @Option(help: "Training images held out as the images users look for.") var heldOut: Int = 1000
    @Option(help: "Steps before the users' feedback.") var steps: Int = 1000
    @Option(help: "Steps after it, in each arm.") var moreSteps: Int = 500
    @Option(help: "Steps between model versions (dev evaluations); divides --steps and --more-steps.") var versionEvery: Int = 250
    @Option(help: "Results the simulated user looks at.") var patience: Int = 10
    @Option(help: "Weight of a rejected result in the memory-bank loss (arm rejections).") var hardNegativeWeight: Float = 2
    @Option(parsing: .upToNextOption, help: "Arms to run: none, pairs, rejections, oracle.") var arms: [Arm] = Arm.allCases
    @Option(help: "Random seed (model, sampler and the held-out images).") var seed: UInt64 = 1
    @Option(help: "Joint dimension D.") var dimension: Int = 1024

    func validate() throws {
        guard heldOut >= 1 else { throw ValidationError("--held-out must be at least 1, got \(heldOut)") }
        guard versionEvery >= 1, steps >= versionEvery, moreSteps >= versionEvery,
              steps % versionEvery == 0, moreSteps % versionEvery == 0 else {
            throw ValidationError("--version-every (\(versionEvery)) must divide --steps (\(steps)) and --more-steps (\(moreSteps))")
        }
        guard (1...1000).contains(patience) else { throw ValidationError("--patience must be 1…1000, got \(patience)") }
        guard hardNegativeWeight.isFinite && hardNegativeWeight > 0 && hardNegativeWeight <= 100 else {
            throw ValidationError("--hard-negative-weight must be in (0, 100], got \(hardNegativeWeight)")
        }
        guard !arms.isEmpty else { throw ValidationError("--arms: name at least one of none, pairs, rejections, oracle") }
    }

    /// The full model as in docs/results.md, trained without end (no step decay).
    var trainerConfiguration: ContinuousTrainer.Configuration {
        var c = ContinuousTrainer.Configuration()
        c.model.encoder.jointDimension = dimension
        c.model.optimization.seed = seed
        c.model.optimization.decayEvery = Int.max / 4
        c.model.optimization.steps = 0
        c.model.memoryWeight = 0.5
        c.model.prototypeWeight = 0.2
        c.model.graphWeight = 0.5
        c.checkpointEvery = versionEvery
        c.evaluateEvery = versionEvery
        c.pageSize = 10_000
        c.idleWait = 0.01
        c.hardNegativeWeight = 0
        return c
    }

    /// The store every arm starts from: every item, the pairs of the images not held out (train)
    /// and the dev pairs. Item ids: train images, then train texts, then dev images and texts.
    struct Catalogue {
        var store: InMemoryTrainingStore
        var imageIDs: [Int64]
        var textIDs: [Int64]
    }

    func catalogue(train: RetrievalData, dev: RetrievalData, heldOut: Set<Int>) -> Catalogue {
        let store = InMemoryTrainingStore()
        func images(_ data: RetrievalData) -> [Int64] {
            (0..<data.imageCount).map { i in
                let n = data.fragmentCount(ofImage: i)
                return store.addItem(ItemFeatures(global: data.imageGlobal.slice(axis: 0, i ..< i + 1).scalars,
                                                  local: data.imageLocal.slice(axis: 0, i ..< i + 1).reshaped([data.imageLocal.shape[1], data.imageLocal.shape[2]])
                                                      .slice(axis: 0, 0..<n).scalars,
                                                  localCount: n))
            }
        }
        func texts(_ data: RetrievalData) -> [Int64] {
            (0..<data.textCount).map { t in
                let rows = data.tokenOffsets[t] ..< data.tokenOffsets[t + 1]
                return store.addItem(ItemFeatures(global: data.textGlobal.slice(axis: 0, t ..< t + 1).scalars,
                                                  local: data.textTokens.slice(axis: 0, rows).scalars, localCount: rows.count))
            }
        }
        let trainImages = images(train), trainTexts = texts(train)
        let devImages = images(dev), devTexts = texts(dev)
        store.addPairs((0..<train.textCount).filter { !heldOut.contains(train.imageOfText[$0]) }
            .map { (trainImages[train.imageOfText[$0]], trainTexts[$0], Split.train) })
        store.addPairs((0..<dev.textCount).map { (devImages[dev.imageOfText[$0]], devTexts[$0], Split.dev) })
        return Catalogue(store: store, imageIDs: trainImages, textIDs: trainTexts)
    }

    /// Dev metrics of the newest model version of a store's run, and its step.
    func newestVersion(_ store: InMemoryTrainingStore) throws -> (step: Int, metrics: VersionMetrics) {
        guard let newest = store.versions.keys.max(), let version = store.versions[newest] else {
            throw ValidationError("the run wrote no model version (are there dev pairs?)")
        }
        let metrics = try MetadataJSON.decode(VersionMetrics.self, from: version.record.metrics)
        return (metrics.step, metrics)
    }

    func run() throws {
        let (train, dev) = try dataOptions.load()
        guard heldOut < train.imageCount - 1 else {
            throw ValidationError("--held-out (\(heldOut)) must leave training images: \(dataOptions.data) has \(train.imageCount)")
        }
        var generator = RandomGenerator(seed: seed &+ 11)
        let held = Set(generator.permutation(train.imageCount).prefix(heldOut))
        let heldTexts = (0..<train.textCount).filter { held.contains(train.imageOfText[$0]) }
        // Unbuffered, so that a log file holds every line as it happens.
        func say(_ line: String) { FileHandle.standardOutput.write(Data((line + "\n").utf8)) }
        func log(_ line: String) { say("  " + line) }
        say("amber eval feedback: \(dataOptions.data), seed \(seed); \(train.imageCount - heldOut) training images trained on, "
            + "\(heldOut) held out as users' targets (\(heldTexts.count) captions as their queries), dev \(dev.imageCount) images")
        say("machine: \(MachineDescription.current)")
        let started = Date()

        // Phase 1: train without the held-out images (its store is let go before the arms: only
        // the checkpoint and the served model are kept).
        var c = trainerConfiguration
        c.maximumSteps = steps
        let (checkpoint, before, served): (CheckpointRecord, VersionMetrics, TrainedModel) = try {
            let first = catalogue(train: train, dev: dev, heldOut: held)
            _ = try ContinuousTrainer(configuration: c, store: first.store, progress: log).run()
            guard let checkpoint = first.store.runs[1]?.checkpoints.last, checkpoint.step == steps else {
                throw ValidationError("phase 1 did not end with a checkpoint at step \(steps)")
            }
            let (_, before) = try newestVersion(first.store)
            guard let modelVersion = first.store.versions.keys.max(), let record = first.store.versions[modelVersion] else {
                throw ValidationError("phase 1 wrote no model version")
            }
            return (checkpoint, before, try TrainedModel.read(bytes: record.record.model, name: "model version \(modelVersion)"))
        }()
        say(String(format: "phase 1 (%d steps, %.0f s): dev rsum stage 1 %.1f, served %.1f", steps, Date().timeIntervalSince(started),
                   before.stageOne.rsum, before.rsum))

        // The users: every caption of a held-out image, ranked over every training image by the served model.
        let user = SimulatedUser(patience: patience)
        let gallery = served.model.encodeGallery(train)
        let imageOffsets = served.offsets(for: gallery)?.images
        var feedback: [(text: Int, chosen: Int, rejected: [Int], rank: Int)] = []
        let chunk = 512
        for start in stride(from: 0, to: heldTexts.count, by: chunk) {
            let rows = Array(heldTexts[start ..< min(start + chunk, heldTexts.count)])
            var scores = withoutGradients { Tensor.matmul(gallery.texts.indexSelect(rows), gallery.images, transposeB: true) }   // [C, I]
            let I = train.imageCount
            scores.withUnsafeMutableBufferPointer { values in
                for (r, text) in rows.enumerated() {
                    if let imageOffsets { for i in 0..<I { values[r * I + i] -= imageOffsets[i] } }
                    let ranking = SimulatedUser.ranking(UnsafeBufferPointer(rebasing: values[r * I ..< (r + 1) * I]), count: patience)
                    if let answer = user.feedback(on: ranking, isRight: { $0 == train.imageOfText[text] }) {
                        feedback.append((text, answer.chosen, answer.rejected, answer.rank))
                    }
                }
            }
        }
        let rejectedCount = feedback.reduce(0) { $0 + $1.rejected.count }
        say(String(format: "simulated users: %d of %d queries found their image in the top %d (%.1f %%), mean rank %.2f; %d results rejected",
                     feedback.count, heldTexts.count, patience, 100 * Double(feedback.count) / Double(max(heldTexts.count, 1)),
                     Double(feedback.reduce(0) { $0 + $1.rank }) / Double(max(feedback.count, 1)), rejectedCount))

        // Phase 2: the same checkpoint, then each arm.
        var results: [(Arm, VersionMetrics, [VersionMetrics], Int)] = []
        for arm in arms {
            let armStarted = Date()
            let next = catalogue(train: train, dev: dev, heldOut: held)
            var c2 = trainerConfiguration
            c2.maximumSteps = steps + moreSteps
            c2.hardNegativeWeight = arm == .rejections ? hardNegativeWeight : 0
            _ = try next.store.openRun(name: c2.runName, seed: seed, configuration: try MetadataJSON.encode(c2.model))
            _ = try next.store.commit(checkpoint)
            switch arm {
            case .none: break
            case .pairs, .rejections:
                next.store.addPairs(feedback.map { (next.imageIDs[$0.chosen], next.textIDs[$0.text], Split.train) })
                if arm == .rejections {
                    for entry in feedback where !entry.rejected.isEmpty {
                        next.store.addRejections(query: next.textIDs[entry.text], rejected: entry.rejected.map { next.imageIDs[$0] })
                    }
                }
            case .oracle:
                next.store.addPairs(heldTexts.map { (next.imageIDs[train.imageOfText[$0]], next.textIDs[$0], Split.train) })
            }
            let trainer = ContinuousTrainer(configuration: c2, store: next.store, progress: log)
            _ = try trainer.run()
            let curve = try next.store.versions.sorted { $0.key < $1.key }.map { try MetadataJSON.decode(VersionMetrics.self, from: $0.value.record.metrics) }
            let (_, last) = try newestVersion(next.store)
            results.append((arm, last, curve, trainer.hardNegativesUsed))
            say(String(format: "arm %@ (%.0f s): dev rsum stage 1 %.1f, served %.1f at step %d; %d train pairs, %d hard negatives used",
                         arm.rawValue, Date().timeIntervalSince(armStarted), last.stageOne.rsum, last.rsum, last.step, last.trainPairs,
                         trainer.hardNegativesUsed))
        }

        say("\nseed \(seed): dev rsum after \(steps) + \(moreSteps) steps (phase 1 ended at stage 1 "
              + String(format: "%.1f, served %.1f)", before.stageOne.rsum, before.rsum))
        say("arm          stage 1   served   vs none (stage 1 / served)   train pairs   curve of stage 1 (every \(versionEvery) steps after \(steps))")
        let reference = results.first { $0.0 == .none }?.1
        for (arm, last, curve, _) in results {
            let delta = reference.map { String(format: "%+.1f / %+.1f", last.stageOne.rsum - $0.stageOne.rsum, last.rsum - $0.rsum) } ?? "—"
            let points = curve.filter { $0.step > steps }.map { String(format: "%.1f", $0.stageOne.rsum) }.joined(separator: " ")
            say(arm.rawValue.padding(toLength: 12, withPad: " ", startingAt: 0)
                  + String(format: " %7.1f  %7.1f   %-28@ %11d   %@", last.stageOne.rsum, last.rsum, delta, last.trainPairs, points))
        }
        say(String(format: "total %.0f s", Date().timeIntervalSince(started)))
    }
}
