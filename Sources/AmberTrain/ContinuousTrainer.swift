import AmberCatalog
import AmberModel
import AmberTensor
import Foundation

/// Trains the matching model without end from pairs that keep arriving in a ``TrainingStore``,
/// keeping everything it learns durable there.
///
/// The loop: take in new pairs (oldest first, by pair id) → a batch of the oldest unseen train
/// pairs mixed with a replay of older ones (``ReplaySampler``) → one training step. Every
/// `checkpointEvery` steps, one transaction writes the state (parameters, momentum encoder,
/// optimiser, queues, generators), the data cursor and the sampler, the bank slots enqueued
/// since the previous checkpoint, the steps' losses and the run's progress. Every
/// `evaluateEvery` steps, the model is evaluated on the dev pairs, written as a candidate model
/// version (querybank β and stage-2 α chosen on dev), and promoted when it passes the gate.
///
/// **No acknowledged pair is skipped.** A pair is acknowledged once its ingest commits; pair ids
/// become visible in increasing order (the store serialises their allocation), so reading
/// `pair_id > cursor` never misses one. The checkpoint stores the cursor (the largest pair id
/// taken in) together with the sampler, whose unseen pairs are exactly those taken in but not yet
/// trained on. After a crash the trainer reloads the pairs up to the committed cursor in id
/// order (the same indices), restores the sampler (the same unseen pairs), and reads on from the
/// cursor: steps after the last checkpoint are lost, pairs are not.
public final class ContinuousTrainer {
    public struct Configuration: Sendable, Codable, Equatable {
        public var model = MatchingTrainer.Configuration()
        /// The run the trainer continues (created on first start).
        public var runName = "main"
        /// Share of each batch taken from pairs not yet trained on.
        public var newShare = 0.5
        public var checkpointEvery = 50
        /// Model versions (evaluation on dev, candidate, gate) every so many steps.
        public var evaluateEvery = 200
        /// The gate: a candidate is promoted when its dev rsum is at most this much below the
        /// serving model's on the same dev pairs, and every parameter is finite.
        public var promotionTolerance: Double = 1
        /// Checkpoints kept per run.
        public var keepCheckpoints = 3
        /// Pairs read from the store per call.
        public var pageSize = 2000
        /// Seconds to wait for new pairs when there is nothing to train on.
        public var idleWait: Double = 1
        /// Seconds between retries while the store is unreachable.
        public var retryDelay: Double = 2
        /// Stop after this many steps (nil: run until stopped).
        public var maximumSteps: Int?
        /// What features a pair's items must have to be trained on; a pair outside them is
        /// skipped with a log line (the same limits the query service applies).
        public var features = FeatureLimits()
        /// Results users rejected in search feedback become hard negatives of their query in the
        /// memory-augmented loss, with this weight in its denominator (1: as any negative, 0:
        /// feedback rejections are not read). Needs the memory bank (`model.memoryWeight > 0`).
        public var hardNegativeWeight: Float = 2
        /// At most this many rejected items per query and step (the most recent feedback first).
        public var hardNegativesPerQuery = 8

        /// What is wrong with this configuration (named by its `amber train` option), or nil.
        public var problem: String? {
            if !(hardNegativeWeight.isFinite && hardNegativeWeight >= 0 && hardNegativeWeight <= 100) {
                return "--hard-negative-weight must be in [0, 100], got \(hardNegativeWeight)"
            }
            if !(1...100).contains(hardNegativesPerQuery) {
                return "--hard-negatives-per-query must be 1…100, got \(hardNegativesPerQuery)"
            }
            return nil
        }

        public init() {}
    }

    /// What a run did, when it stops.
    public struct Summary: Sendable {
        public var step: Int
        public var committedStep: Int
        public var trainPairs: Int
        public var devPairs: Int
        public var cursor: Int64
        public var versionsWritten: [Int64]
        public var versionsPromoted: [Int64]
    }

    public let configuration: Configuration
    private let store: any TrainingStore
    private let progress: (String) -> Void
    private var train = GrowingPairSet()
    private var dev = GrowingPairSet()
    private var sampler: ReplaySampler
    private var cursor: Int64 = 0
    private var trainer: MatchingTrainer?
    private var runID: Int64 = 0
    private var committedStep = 0
    private var latestVersion: Int64?
    private var pendingSteps: [StepRecord] = []
    private var versionsWritten: [Int64] = []
    private var versionsPromoted: [Int64] = []
    /// Pairs taken in that could not be trained on (logged each).
    public private(set) var skippedPairs = 0
    /// The feedback read so far (its largest id), and what users rejected for each query item
    /// (store ids, newest last, each once). Not checkpointed: a resumed trainer reads it again.
    private var feedbackCursor: Int64 = 0
    private var rejectedForQuery: [Int64: [(feedbackID: Int64, items: [Int64])]] = [:]
    /// Rejections read from the store's feedback.
    public private(set) var rejectionsRead = 0
    /// Hard negatives the steps used (see ``MatchingTrainer/hardNegativesUsed``).
    public var hardNegativesUsed: Int { trainer?.hardNegativesUsed ?? 0 }

    public init(configuration: Configuration, store: any TrainingStore, progress: @escaping (String) -> Void = { _ in }) {
        precondition(configuration.checkpointEvery >= 1 && configuration.evaluateEvery >= 1 && configuration.keepCheckpoints >= 1
                     && configuration.pageSize >= 1 && configuration.problem == nil,
                     "ContinuousTrainer: intervals, keep and page size must be positive; \(configuration.problem ?? "")")
        self.configuration = configuration
        self.store = store
        self.progress = progress
        sampler = ReplaySampler(newShare: configuration.newShare, seed: configuration.model.optimization.seed &+ 5)
    }

    /// Steps taken (0 before the model exists).
    public var step: Int { trainer?.step ?? 0 }

    /// Trains until `shouldStop` returns true (checked between steps and while waiting) or
    /// `maximumSteps` is reached; then commits a last checkpoint and marks the run stopped.
    public func run(shouldStop: () -> Bool = { false }) throws -> Summary {
        let c = configuration
        let configurationJSON = try MetadataJSON.encode(c.model)
        let opened = try retrying("opening run \(c.runName)", shouldStop) {
            try store.openRun(name: c.runName, seed: c.model.optimization.seed, configuration: configurationJSON)
        }
        runID = opened.runID
        if let checkpoint = opened.checkpoint { try resume(from: checkpoint, shouldStop) }
        var lastLine = Date(), stepsSinceLine = 0
        while !shouldStop() {
            if let maximum = c.maximumSteps, step >= maximum { break }
            try takeIn(shouldStop)
            if trainer == nil, let data = train.data(), data.textCount >= c.model.optimization.batchSize {
                trainer = try MatchingTrainer(configuration: c.model, train: data, ownBatches: false)
                progress("model started on \(data.textCount) train pairs (\(TrainedModel.Dimensions(of: data)))")
            }
            guard let trainer, let data = train.data(), let batch = sampler.next(size: c.model.optimization.batchSize) else {
                if !pendingSteps.isEmpty { try checkpoint(shouldStop: shouldStop) }
                _ = try retrying("waiting for pairs", shouldStop) { try store.waitForPairs(timeout: c.idleWait) }
                continue
            }
            let started = Date()
            let loss = trainer.train(batch: batch, data: data, hardNegatives: hardNegatives(for: batch, data: data))
            if loss.skipped { progress("step \(trainer.step): the loss or its gradient was not finite; the update was skipped (parameters unchanged)") }
            let seconds = Date().timeIntervalSince(started)
            pendingSteps.append(StepRecord(step: trainer.step, loss: loss.total, terms: loss.terms, learningRate: loss.learningRate,
                                           pairsPerSecond: Double(batch.count) / max(seconds, 1e-9)))
            stepsSinceLine += 1
            // A model version is due: evaluate, gate, and write it with this step's checkpoint.
            let version = trainer.step % c.evaluateEvery == 0 ? try prepareModelVersion(shouldStop) : nil
            if version != nil || trainer.step % c.checkpointEvery == 0 { try checkpoint(shouldStop: shouldStop, version: version) }
            if Date().timeIntervalSince(lastLine) >= 5 || trainer.step % c.checkpointEvery == 0 {
                let rate = Double(stepsSinceLine * c.model.optimization.batchSize) / max(Date().timeIntervalSince(lastLine), 1e-9)
                let terms = loss.terms.sorted { $0.key < $1.key }.map { String(format: "%@ %.3f", $0.key, $0.value) }.joined(separator: ", ")
                let eta = c.maximumSteps.map { String(format: "  ETA %.0fs", Double(max($0 - trainer.step, 0) * c.model.optimization.batchSize) / max(rate, 1e-9)) } ?? ""
                progress(String(format: "step %6d  loss %.4f (%@)  lr %.2e  %.0f pairs/s%@  train %d pairs (%d unseen), dev %d  cursor %lld  committed %d",
                                trainer.step, loss.total, terms, loss.learningRate, rate, eta, train.pairCount, sampler.unseen.count,
                                dev.pairCount, cursor, committedStep)
                         + (rejectionsRead > 0 ? "  feedback: \(rejectionsRead) rejections, \(hardNegativesUsed) hard negatives used" : ""))
                lastLine = Date()
                stepsSinceLine = 0
            }
        }
        // A last checkpoint; if the store is down now, stopping wins (only uncommitted steps are lost).
        if !pendingSteps.isEmpty { try checkpoint(shouldStop: shouldStop) }
        try retrying("closing the run", shouldStop) { try store.closeRun(runID, status: "stopped") }
        return Summary(step: step, committedStep: committedStep, trainPairs: train.pairCount, devPairs: dev.pairCount, cursor: cursor,
                       versionsWritten: versionsWritten, versionsPromoted: versionsPromoted)
    }

    // MARK: - Data

    /// Reads one page of new pairs into the train and dev sets, then the feedback that came
    /// with them (or after).
    private func takeIn(_ shouldStop: () -> Bool) throws {
        let page = try retrying("reading new pairs", shouldStop) { try store.pairs(after: cursor, limit: configuration.pageSize) }
        try add(page)
        try readRejections(shouldStop)
    }

    /// Reads the feedback rows written since the last call: each rejected result joins its
    /// query's hard negatives. Nothing is read when they would not be used.
    /// A resume reads up to the checkpoint's feedback cursor only (`limit`), as it reads pairs up
    /// to its pair cursor, so that it trains on with the hard negatives the checkpoint knew.
    private func readRejections(_ shouldStop: () -> Bool, upTo limit: Int64 = .max) throws {
        guard configuration.hardNegativeWeight > 0, configuration.model.memoryWeight > 0 else { return }
        while feedbackCursor < limit {
            var page = try retrying("reading feedback", shouldStop) { try store.rejections(after: feedbackCursor, limit: configuration.pageSize) }
            if page.cursor > limit {
                page.rejections.removeAll { $0.feedbackID > limit }
                page.cursor = limit
            }
            for rejection in page.rejections {
                var lists = rejectedForQuery[rejection.queryItemID, default: []]
                if lists.last?.feedbackID == rejection.feedbackID {
                    lists[lists.count - 1].items.append(rejection.rejectedItemID)
                } else {
                    lists.append((rejection.feedbackID, [rejection.rejectedItemID]))
                }
                rejectedForQuery[rejection.queryItemID] = lists
            }
            rejectionsRead += page.rejections.count
            feedbackCursor = max(feedbackCursor, page.cursor)
            if page.rowsRead < configuration.pageSize { return }
        }
    }

    /// What users rejected for the query `itemID`: the newest feedback first, each in the user's
    /// order (the result ranked first, the worst confusion, first), each item once.
    private func rejected(for itemID: Int64) -> [Int64] {
        var seen = Set<Int64>(), items: [Int64] = []
        for feedback in (rejectedForQuery[itemID] ?? []).reversed() {
            for item in feedback.items where seen.insert(item).inserted { items.append(item) }
        }
        return items
    }

    /// The hard negatives of `batch`: for each caption, the images rejected for its text item;
    /// for its image, the texts rejected for that image item — the first `hardNegativesPerQuery`
    /// of each (``rejected(for:)``) that are in the train set and are not a positive of the
    /// query (a text paired with the image in any pair). Nil when there are none.
    private func hardNegatives(for batch: [Int], data: RetrievalData) -> MatchingTrainer.HardNegatives? {
        let c = configuration
        guard c.hardNegativeWeight > 0, c.model.memoryWeight > 0, !rejectedForQuery.isEmpty else { return nil }
        var images: [[[Int]]] = [], texts: [[[Int]]] = []
        for row in batch {
            let imageRow = data.imageOfText[row], textItem = train.textItemIDs[row]
            // A text in several pairs has several images that are no negatives of it.
            let pairedImages = Set(train.textRows(ofItem: textItem).map { data.imageOfText[$0] })
            images.append(Array(rejected(for: textItem).compactMap { train.imageRow(ofItem: $0) }
                .filter { !pairedImages.contains($0) }.prefix(c.hardNegativesPerQuery).map { [$0] }))
            texts.append(Array(rejected(for: train.imageItemIDs[imageRow]).map { train.textRows(ofItem: $0) }
                .filter { rows in !rows.isEmpty && !rows.contains { data.imageOfText[$0] == imageRow } }.prefix(c.hardNegativesPerQuery)))
        }
        let hard = MatchingTrainer.HardNegatives(imagesOfText: images, textsOfImage: texts, weight: c.hardNegativeWeight)
        return hard.isEmpty ? nil : hard
    }

    /// Takes in a page of pairs. A pair whose items cannot be trained on (no features, features
    /// outside the limits or of other dimensions) is skipped with a log line: one bad row must
    /// not stop the run, nor stop it again at every restart. The cursor passes it either way.
    private func add(_ page: PairPage) throws {
        var added = 0
        for pair in page.pairs {
            do {
                switch pair.split {
                case .train:
                    try train.add(pair, features: page.features, limits: configuration.features)
                    added += 1
                case .dev:
                    try dev.add(pair, features: page.features, limits: configuration.features)
                case .test:
                    break
                }
            } catch let error as PairSetError {
                skippedPairs += 1
                progress("pair skipped: \(error.description)")
            }
            cursor = max(cursor, pair.pairID)
        }
        sampler.grow(by: added)
    }

    /// Reloads the pairs up to the checkpoint's cursor (same order, same indices) and restores
    /// the trainer and the sampler.
    private func resume(from checkpoint: StoredCheckpoint, _ shouldStop: () -> Bool) throws {
        while cursor < checkpoint.cursor {
            var page = try retrying("reloading pairs", shouldStop) { try store.pairs(after: cursor, limit: configuration.pageSize) }
            page.pairs.removeAll { $0.pairID > checkpoint.cursor }
            guard !page.pairs.isEmpty else {
                throw ContinuousTrainerError(description: "run \(configuration.runName): the checkpoint at step \(checkpoint.step) read pairs up to id \(checkpoint.cursor), but the store has none after \(cursor); were pairs deleted?")
            }
            try add(page)
        }
        try readRejections(shouldStop, upTo: checkpoint.feedbackCursor)
        let restored: ReplaySampler
        do { restored = try MetadataJSON.decode(ReplaySampler.self, from: checkpoint.sampler) } catch {
            throw ContinuousTrainerError(description: "run \(configuration.runName): the sampler state of checkpoint \(checkpoint.step) does not decode: \(error)")
        }
        let samePairs = restored.count == train.pairCount
        if samePairs {
            sampler = restored
        } else {
            // The pairs up to the cursor are not those the checkpoint trained on (pairs deleted or
            // re-split, rows changed, or other feature limits): go on rather than stop at every
            // restart. Every pair taken in counts as not yet trained on; none is lost.
            progress("run \(configuration.runName): checkpoint \(checkpoint.step) knew \(restored.count) train pairs up to id \(checkpoint.cursor), the store now gives \(train.pairCount) (pairs deleted, re-split or skipped); the sampler starts over with all of them unseen")
            sampler = ReplaySampler(newShare: configuration.newShare, seed: configuration.model.optimization.seed &+ 5)
            sampler.grow(by: train.pairCount)
        }
        guard let data = train.data() else {
            throw ContinuousTrainerError(description: "run \(configuration.runName): checkpoint \(checkpoint.step) has no train pairs to resume with")
        }
        trainer = try MatchingTrainer(resumingFrom: checkpoint.state, name: "checkpoint \(checkpoint.step) of run \(configuration.runName)",
                                      configuration: configuration.model, train: data, ownBatches: false)
        // The queues' slots index the checkpoint's pair set: with another one they would point elsewhere.
        if !samePairs { trainer?.clearQueues() }
        committedStep = checkpoint.step
        latestVersion = checkpoint.modelVersion
        progress("resumed run \(configuration.runName) at step \(checkpoint.step): \(train.pairCount) train pairs (\(sampler.unseen.count) not yet trained on), \(dev.pairCount) dev, cursor \(cursor)")
    }

    // MARK: - Checkpoints and model versions

    /// One transaction: state, cursor, sampler, the bank slots enqueued since the last checkpoint,
    /// the steps since then, the run's progress, and a model version when one is due.
    private func checkpoint(shouldStop: () -> Bool, version: PendingVersion? = nil) throws {
        guard let trainer else { return }
        let record = CheckpointRecord(
            runID: runID, step: trainer.step, state: try trainer.stateBytes(), cursor: cursor,
            sampler: try MetadataJSON.encode(sampler), pendingPairs: sampler.unseen.map { train.pairIDs[$0] },
            bank: bankSlots(since: committedStep), steps: pendingSteps, modelVersion: latestVersion,
            newVersion: version?.record, promote: version?.promote ?? false, keep: configuration.keepCheckpoints,
            feedbackCursor: feedbackCursor)
        let written = try retrying("committing checkpoint \(trainer.step)", shouldStop) { try store.commit(record) }
        committedStep = trainer.step
        pendingSteps = []
        if let version, let written {
            latestVersion = written
            versionsWritten.append(written)
            if version.promote { versionsPromoted.append(written) }
            progress("step \(trainer.step): model version \(written), " + version.summary)
        }
    }

    /// A model version ready to be committed with a checkpoint.
    private struct PendingVersion {
        var record: ModelVersionRecord
        var promote: Bool
        var summary: String
    }

    /// The queue slots enqueued at or after `step`, in store ids, each with its nearest bank
    /// entry of another image (the ambiguity audit).
    func bankSlots(since step: Int) -> [BankSlot] {
        guard let trainer else { return [] }
        let (images, texts) = trainer.queues
        let all = Tensor.concatenate([images.filledKeys, texts.filledKeys], axis: 0)               // [Qi + Qt, D]
        let allImages = Array(images.imageIDs.prefix(images.count)) + Array(texts.imageIDs.prefix(texts.count))
        let allItems = images.itemIDs.prefix(images.count).map { train.imageItemIDs[$0] }
            + texts.itemIDs.prefix(texts.count).map { train.textItemIDs[$0] }
        var slots: [BankSlot] = []
        for (modality, queue) in [(Modality.image, images), (.text, texts)] {
            let changed = (0..<queue.count).filter { queue.enqueuedSteps[$0] >= step }
            guard !changed.isEmpty else { continue }
            let keys = queue.keys.indexSelect(changed)
            let similarities = withoutGradients { Tensor.matmul(keys, all, transposeB: true) }.scalars   // [changed, Qi + Qt]
            for (row, slot) in changed.enumerated() {
                var best: (Float, Int)?
                for column in 0..<allImages.count where allImages[column] != queue.imageIDs[slot] {
                    let value = similarities[row * allImages.count + column]
                    if best == nil || value > best!.0 { best = (value, column) }
                }
                let index = queue.itemIDs[slot]
                slots.append(BankSlot(
                    modality: modality, slot: slot,
                    itemID: modality == .image ? train.imageItemIDs[index] : train.textItemIDs[index],
                    pairID: modality == .image ? nil : train.pairIDs[index],
                    imageID: train.imageItemIDs[queue.imageIDs[slot]],
                    embedding: keys.slice(axis: 0, row ..< row + 1).scalars,
                    prototype: queue.prototypes[slot] >= 0 ? queue.prototypes[slot] : nil,
                    ambiguity: best.map { min(max($0.0, -1), 1) }, neighbourItemID: best.map { allItems[$0.1] },
                    enqueuedStep: queue.enqueuedSteps[slot]))
            }
        }
        return slots
    }

    /// Evaluates on dev and prepares a candidate version, to be promoted when it passes the gate.
    private func prepareModelVersion(_ shouldStop: () -> Bool) throws -> PendingVersion? {
        guard let trainer, let trainData = train.data() else { return nil }
        guard let devData = dev.data() else {
            progress("step \(trainer.step): no dev pairs yet, so no model version (ingest pairs with split dev)")
            return nil
        }
        let stageOne = trainer.evaluate(on: devData)
        trainer.record(TrainingEvaluation(step: trainer.step, loss: pendingSteps.last?.loss ?? .nan, terms: pendingSteps.last?.terms ?? [:],
                                          pairsPerSecond: pendingSteps.last?.pairsPerSecond ?? 0, metrics: stageOne))
        let candidate = trainer.servingModel(train: trainData, dev: devData, metrics: stageOne).model
        let candidateRsum = candidate.stageTwoMetrics?.rsum ?? stageOne.rsum
        let finite = trainer.parametersAreFinite && candidateRsum.isFinite
        // The serving model on the same dev pairs (dev grows, so its old numbers do not compare).
        let serving = try retrying("reading the serving model", shouldStop) { try store.servingModel() }
        var servingRsum: Double?
        if let serving, let model = try? TrainedModel.read(bytes: serving.model, name: "model version \(serving.version)"),
           model.dimensions == candidate.dimensions {
            servingRsum = model.servedMetrics(on: devData).rsum
        }
        let passed = finite && (servingRsum.map { candidateRsum >= $0 - configuration.promotionTolerance } ?? true)
        let verdict = !finite ? "refused: non-finite parameters or metrics"
            : passed ? (servingRsum == nil ? "promoted: nothing served yet" : "promoted") : "refused: dev rsum below the serving model's"
        let metrics = VersionMetrics(rsum: candidateRsum, step: trainer.step, devPairs: devData.textCount, trainPairs: trainData.textCount,
                                     stageOne: stageOne, served: candidate.stageTwoMetrics,
                                     querybankBeta: candidate.querybank?.beta ?? 0, alpha: candidate.ranking.alpha,
                                     servingVersion: serving?.version, servingRsum: servingRsum, gate: verdict)
        let (images, texts) = trainer.queues
        let K = trainer.prototypeCentroids.shape[0]
        var imageCounts = [Int](repeating: 0, count: K), textCounts = [Int](repeating: 0, count: K)
        for p in images.prototypes.prefix(images.count) where p >= 0 && p < K { imageCounts[p] += 1 }
        for p in texts.prototypes.prefix(texts.count) where p >= 0 && p < K { textCounts[p] += 1 }
        let centroids = trainer.prototypeCentroids
        let D = centroids.shape[1]
        let rows = centroids.scalars
        let record = ModelVersionRecord(
            runID: runID, parentVersion: serving?.version, step: trainer.step, configuration: try MetadataJSON.encode(configuration.model),
            model: try candidate.encoded(), metrics: try MetadataJSON.encode(metrics),
            // Non-finite centroids are not written (the store refuses them); the version is, refused by the gate.
            prototypes: finite ? (0..<K).map { Array(rows[($0 * D) ..< (($0 + 1) * D)]) } : [],
            prototypeImageCounts: imageCounts, prototypeTextCounts: textCounts)
        let summary = String(format: "dev rsum %.1f (stage 1 %.1f, β %g, α %g) vs serving %@: %@",
                             candidateRsum, stageOne.rsum, Double(metrics.querybankBeta), Double(metrics.alpha),
                             servingRsum.map { String(format: "%.1f", $0) } ?? "none", verdict)
        return PendingVersion(record: record, promote: passed, summary: summary)
    }

    /// Retries `body` while the store reports a transient error, with a log line each time.
    private func retrying<T>(_ what: String, _ shouldStop: () -> Bool, _ body: () throws -> T) throws -> T {
        var attempt = 0
        while true {
            do {
                let value = try body()
                if attempt > 0 { progress("store reachable again: \(what) succeeded after \(attempt) retries") }
                return value
            } catch where store.isTransient(error) {
                attempt += 1
                if shouldStop() { throw error }
                let reason = "\(error)".split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.joined(separator: " ")
                progress(String(format: "store unavailable while %@ (attempt %d): %@; retrying in %.0f s", what, attempt, reason, configuration.retryDelay))
                Thread.sleep(forTimeInterval: configuration.retryDelay)
            }
        }
    }
}

/// What a model version's `metrics` JSON holds.
public struct VersionMetrics: Sendable, Codable, Equatable {
    /// Dev rsum of the ranking as served (what the gate compares).
    public var rsum: Double
    public var step: Int
    public var devPairs: Int
    public var trainPairs: Int
    /// Stage 1 (fused embeddings) on the dev pairs.
    public var stageOne: RetrievalMetrics
    /// The ranking as served (querybank β, stage-2 α), on the dev pairs.
    public var served: RetrievalMetrics?
    public var querybankBeta: Float
    public var alpha: Float
    /// The model served when this one was written, and its rsum on the same dev pairs.
    public var servingVersion: Int64?
    public var servingRsum: Double?
    /// The promotion gate's verdict.
    public var gate: String
}

public struct ContinuousTrainerError: Error, CustomStringConvertible {
    public let description: String
}
