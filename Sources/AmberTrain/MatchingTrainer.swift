import AmberCatalog
import AmberModel
import AmberTensor
import Foundation

/// Offline training of the ``MatchingModel`` on a train split with selection on dev: the
/// triplet loss on fused embeddings, plus (each switchable by its weight) the memory-augmented
/// contrast with a momentum encoder and queues, the Sinkhorn prototype loss, and the in-batch
/// relation graph's triplet losses. After training, the stage-2 weight α is chosen on dev for
/// the best-on-dev model.
///
/// A trainer is one run: ``run(train:dev:checkpoints:progress:)`` continues from wherever the
/// trainer stands, so a trainer restored from a checkpoint finishes the run exactly as an
/// uninterrupted one would (same parameters, same history).
public final class MatchingTrainer {
    public struct Configuration: Sendable, Codable, Equatable {
        public var encoder = ModalityEncoder.Configuration()
        public var optimization = OptimizationConfiguration()
        /// Start the global (and fragment) projections from the CCA solution on the training pairs.
        public var warmStartFromCCA = false
        /// Model parameters kept where they start: those whose name contains one of these
        /// (`"fragment"`: both fragment projections; `"gate.weight"`: the gates' input weights,
        /// leaving a learned per-dimension gate bias).
        public var frozen: [String] = []
        /// λ of an elastic pull of the model's parameters towards their start (L2-SP; 0: off).
        /// With the CCA warm start it keeps the model near the closed-form solution.
        public var anchorStrength: Float = 0
        /// λ of the memory-augmented contrastive loss (0: off).
        public var memoryWeight: Float = 0
        /// Keys per modality queue.
        public var queueSize = 2048
        /// EMA momentum of the key encoder.
        public var momentum: Float = 0.999
        public var memoryTemperature: Float = 0.07
        /// λ of the prototype loss (0: off); on after `prototypeWarmupSteps`.
        public var prototypeWeight: Float = 0
        public var prototypeCount = 64
        public var prototypeWarmupSteps = 200
        /// The prototypes follow the embeddings coded to them with this EMA momentum
        /// (``PrototypeLoss/follow(_:assignments:momentum:)``) instead of being learned by
        /// gradient; nil learns them by gradient, as runs written before this option did.
        public var prototypeMomentum: Float? = 0.99
        /// λ of the relation-graph triplet losses (0: off).
        public var graphWeight: Float = 0
        /// CE-CLIP: λ of the image→text contrast with each caption's typed negatives
        /// (``HardNegativeCaptionLoss/contrastive(images:texts:negatives:valid:)``); nil or 0: off.
        /// The negatives come from ``MatchingTrainer/captionNegatives``.
        public var captionNegativeWeight: Float?
        /// CE-CLIP: λ of the cross-modal rank loss with adaptive per-type margins; nil or 0: off.
        public var rankWeight: Float?
        /// CE-CLIP: λ of the intra-modal contrast of a caption with its negatives; nil or 0: off.
        public var intraWeight: Float?

        /// GARE: the pair scorer's configuration (nil: the model has none).
        public var gare: GapAwareScorer.Configuration?
        /// GARE: λ of its objective (nil or 0: the scorer is not trained).
        public var gareWeight: Float?
        /// GARE: the objective's temperature and regulariser weights (nil: ``GapAwareLoss``'s defaults).
        public var gareLoss: GapAwareLoss?
        /// GARE: train the scorer on detached embeddings, as a re-ranker that leaves stage 1 alone.
        public var gareDetached: Bool?
        /// The stage-2 scorer (nil: SCAN-style alignment).
        public var stageTwo: StageTwoKind?

        /// Whether a CE-CLIP term is on.
        public var usesCaptionNegatives: Bool { [captionNegativeWeight, rankWeight, intraWeight].contains { ($0 ?? 0) > 0 } }
        /// Stage 2: the local alignment and the candidates it re-scores per query.
        public var alignment = LocalAlignment()
        public var rerankDepth = 32
        /// Stage-2 weights α tried on dev after training (1 keeps stage 2 off).
        public var alphaGrid: [Float] = [1, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0]
        /// Querybank normalisation of stage 1: the inverse temperatures β tried on dev after
        /// training (0 keeps it off), and the training embeddings kept per modality as its querybank.
        public var querybankBetas: [Float] = [0, 5, 10, 15, 20, 30, 50]
        public var querybankSize = 4096

        /// What is wrong with this configuration (named by its `amber train` option), or nil.
        public var problem: String? {
            if let problem = encoder.problem { return problem + " (--dimension, --fragment-dropout, --attention-temperature)" }
            if let problem = optimization.problem { return problem }
            for (name, weight) in [("--memory-weight", memoryWeight), ("--prototype-weight", prototypeWeight),
                                   ("--graph-weight", graphWeight), ("--anchor-strength", anchorStrength),
                                   ("--caption-negative-weight", captionNegativeWeight ?? 0), ("--rank-weight", rankWeight ?? 0),
                                   ("--intra-weight", intraWeight ?? 0)] where !(weight.isFinite && weight >= 0) {
                return "\(name) must be a finite number ≥ 0, got \(weight)"
            }
            if !(1...1_048_576).contains(queueSize) { return "the queue size (--queue-size) must be 1…1048576, got \(queueSize)" }
            if memoryWeight > 0 && queueSize < optimization.batchSize {
                return "the memory bank needs --queue-size (\(queueSize)) ≥ --batch-size (\(optimization.batchSize))"
            }
            if !(momentum >= 0 && momentum <= 1) { return "the momentum must be in [0, 1], got \(momentum)" }
            if !(memoryTemperature.isFinite && memoryTemperature > 0) { return "the memory temperature must be positive, got \(memoryTemperature)" }
            if !(1...65_536).contains(prototypeCount) { return "the number of prototypes (--prototypes) must be 1…65536, got \(prototypeCount)" }
            if prototypeWarmupSteps < 0 { return "--prototype-warmup must not be negative, got \(prototypeWarmupSteps)" }
            if let m = prototypeMomentum, !(m >= 0 && m < 1) { return "--prototype-momentum must be in [0, 1), got \(m)" }
            if !(1...10_000).contains(rerankDepth) { return "--rerank-depth must be 1…10000, got \(rerankDepth)" }
            if let problem = gare?.problem ?? gareLoss?.problem { return problem }
            if let w = gareWeight, !(w.isFinite && w >= 0) { return "--gare-weight must be a finite number ≥ 0, got \(w)" }
            if (gareWeight ?? 0) > 0 && gare == nil { return "--gare-weight needs the model to have a GARE scorer" }
            if stageTwo == .gare && (gareWeight ?? 0) <= 0 { return "--stage-two gare needs a trained GARE scorer: give --gare-weight" }
            if !(alignment.temperature.isFinite && alignment.temperature >= 0) { return "the alignment temperature must be finite and ≥ 0" }
            if alphaGrid.isEmpty || !alphaGrid.allSatisfy({ $0 >= 0 && $0 <= 1 }) { return "every α tried must be in [0, 1]" }
            if querybankBetas.isEmpty || !querybankBetas.allSatisfy({ $0 >= 0 && $0 <= 1000 }) { return "every querybank β tried must be in [0, 1000]" }
            if querybankSize < 1 { return "the querybank size must be at least 1" }
            return nil
        }

        public init() {}
    }

    /// What a run produced.
    public struct Result: Sendable {
        public var history: [TrainingEvaluation]
        /// The best-on-dev model, with α chosen on dev.
        public var model: TrainedModel
        /// Dev metrics of the best model's stage 1 for each querybank β tried (0: plain).
        public var betaSweep: [(beta: Float, metrics: RetrievalMetrics)]
        /// Dev metrics of the best model's two-stage ranking (with the chosen β) for each α tried.
        public var alphaSweep: [(alpha: Float, metrics: RetrievalMetrics)]
    }

    public let configuration: Configuration
    public let dimensions: TrainedModel.Dimensions
    public let model: MatchingModel
    private let keyModel: MatchingModel
    private let prototypes: PrototypeLoss
    private let graph: RelationGraph
    private let trainable: [Parameter]
    private var imageQueue: MemoryQueue
    private var textQueue: MemoryQueue
    private var dropout: RandomGenerator
    private let loop: TrainingLoop
    /// The best dev evaluation so far and the parameter values it was made with.
    public private(set) var best: (evaluation: TrainingEvaluation, values: [Tensor])?

    /// A configuration or data a trainer cannot start with, named by its `amber train` option.
    public struct ConfigurationError: Error, CustomStringConvertible {
        public let description: String
    }

    /// A fresh run on `train` (dimensions come from the data; the CCA warm start is fitted here).
    /// With `ownBatches` false, batches come from the caller through ``train(batch:data:)`` (a
    /// continuous trainer whose data grows) and ``run(train:dev:checkpoints:stepTimer:progress:)``
    /// is not available.
    public init(configuration: Configuration, train: RetrievalData, ownBatches: Bool = true) throws {
        let c = configuration
        let o = c.optimization
        if let problem = c.problem { throw ConfigurationError(description: problem) }
        guard train.textCount >= o.batchSize else {
            throw ConfigurationError(description: "\(train.textCount) train pairs cannot fill a batch of \(o.batchSize) (--batch-size)")
        }
        if let problem = TrainedModel.Dimensions(of: train).problem { throw ConfigurationError(description: problem) }
        if c.warmStartFromCCA, c.encoder.jointDimension > min(train.imageGlobal.shape[1], train.textGlobal.shape[1]) {
            throw ConfigurationError(description: "--warm-start needs the joint dimension (\(c.encoder.jointDimension)) ≤ the smaller global dimension (\(min(train.imageGlobal.shape[1], train.textGlobal.shape[1])))")
        }
        self.configuration = c
        dimensions = TrainedModel.Dimensions(of: train)
        var generator = RandomGenerator(seed: o.seed)
        model = dimensions.makeModel(c.encoder, gare: c.gare, generator: &generator)
        if c.warmStartFromCCA {
            let cca = try LinearCCA.fit(x: train.imageGlobal.indexSelect(train.imageOfText), y: train.textGlobal,
                                        configuration: .init(regularization: 2, components: c.encoder.jointDimension, power: 1))
            model.warmStart(from: cca)
        }
        // Momentum (key) encoder and queues for the memory-augmented loss.
        var keyGenerator = RandomGenerator(seed: o.seed)
        keyModel = dimensions.makeModel(c.encoder, gare: c.gare, generator: &keyGenerator)
        keyModel.copyParameters(from: model)
        imageQueue = MemoryQueue(capacity: c.queueSize, dimension: c.encoder.jointDimension)
        textQueue = MemoryQueue(capacity: c.queueSize, dimension: c.encoder.jointDimension)
        prototypes = PrototypeLoss(count: c.prototypeCount, dimension: c.encoder.jointDimension, generator: &generator)
        graph = RelationGraph(dimension: c.encoder.jointDimension, generator: &generator)
        trainable = model.parameters.filter { parameter in !c.frozen.contains { parameter.name.contains($0) } }
            + (c.prototypeWeight > 0 && c.prototypeMomentum == nil ? [prototypes.prototypes] : []) + (c.graphWeight > 0 ? graph.parameters : [])
        dropout = RandomGenerator(seed: o.seed &+ 2)
        loop = TrainingLoop(configuration: o, parameters: trainable, pairCount: ownBatches ? train.textCount : nil)
        if c.anchorStrength > 0 {
            loop.anchors = model.parameters.filter { p in trainable.contains { $0 === p } }.map { ($0, $0.value) }
            loop.anchorStrength = c.anchorStrength
        }
    }

    /// Empties both memory-bank queues (their slots index the training pairs, which a caller
    /// that rebuilt its pair set can no longer vouch for); they refill as training goes on.
    public func clearQueues() {
        imageQueue = MemoryQueue(capacity: configuration.queueSize, dimension: configuration.encoder.jointDimension)
        textQueue = MemoryQueue(capacity: configuration.queueSize, dimension: configuration.encoder.jointDimension)
    }

    /// Steps taken so far.
    public var step: Int { loop.step }
    /// The typed negative captions of the training texts (CE-CLIP), by the training data's text
    /// index; the CE-CLIP terms are computed only when this is set.
    public var captionNegatives: CaptionNegativeSet?
    /// The cross-modal rank loss's margins θ_k, one per negative type: each step uses the ones the
    /// step before measured (its batch's mean gap, clamped to [0, 10]); 0 before the first.
    public private(set) var rankThresholds: [Float] = []
    /// What a checkpoint keeps of the parameters: the model, everything the optimiser trains,
    /// and prototypes that follow the data (not trained, but state all the same).
    private var persistentParameters: [Parameter] {
        let following = configuration.prototypeWeight > 0 && configuration.prototypeMomentum != nil
        return trainable + model.parameters + (following ? [prototypes.prototypes] : [])
    }
    /// The memory-bank queues of the momentum encoder's keys (item ids are data indices).
    public var queues: (images: MemoryQueue, texts: MemoryQueue) { (imageQueue, textQueue) }
    /// The prototype centroids `[K, D]`.
    public var prototypeCentroids: Tensor { prototypes.prototypes.value }
    /// Whether every parameter (model, prototypes, graph) is finite.
    public var parametersAreFinite: Bool {
        (model.parameters + trainable).allSatisfy { $0.value.scalars.allSatisfy(\.isFinite) }
    }
    public var history: [TrainingEvaluation] { loop.history }

    /// What a step leaves for the momentum update and the queues: the batch's keys and ids, and
    /// prototype assignments.
    private struct PendingKeys {
        var images: Tensor
        var texts: Tensor
        var imageIDs: [Int]
        var textIDs: [Int]
        var prototypes: ([Int], [Int])?
    }

    /// What a step leaves for prototypes that follow the data: the batch's fused embeddings
    /// (images, then texts) and their codes' prototypes.
    private struct PrototypeMembers {
        var embeddings: Tensor
        var assignments: [Int]
    }

    /// Results users rejected for the queries of one batch (search feedback), as rows of the
    /// batch's ``RetrievalData``: hard negatives of the memory-augmented loss. A rejected item is
    /// given by its rows: an image by its one image row, a text by every caption row it has (one
    /// per pair it is in; the first is encoded, all are its ids in the text queue).
    public struct HardNegatives: Sendable, Equatable {
        /// Per batch position: images rejected for that position's caption (text → image).
        public var imagesOfText: [[[Int]]]
        /// Per batch position: texts rejected for that position's image (image → text).
        public var textsOfImage: [[[Int]]]
        /// Weight of a hard negative in the loss's denominator (1: as any negative).
        public var weight: Float

        public init(imagesOfText: [[[Int]]], textsOfImage: [[[Int]]], weight: Float) {
            self.imagesOfText = imagesOfText
            self.textsOfImage = textsOfImage
            self.weight = weight
        }

        /// Whether any position has a rejected item.
        public var isEmpty: Bool { imagesOfText.allSatisfy(\.isEmpty) && textsOfImage.allSatisfy(\.isEmpty) }
    }

    /// The memory-contrastive term of one direction, with the rejected items of `rejected` (per
    /// batch position, each item as its rows in the queue's modality; an item one of whose rows
    /// is the query's own positive is ignored) encoded by the momentum encoder and added as hard
    /// negatives of their query.
    private func memoryTerm(_ loss: MemoryContrastiveLoss, queries: Tensor, positiveKeys: Tensor, queue: MemoryQueue,
                            masks: (excluded: [Bool], softPositive: [Bool]), rejected: [[[Int]]]?,
                            isPositive: (_ position: Int, _ row: Int) -> Bool, encode: ([Int]) -> Tensor) -> (Tensor, Int) {
        var rows: [Int] = [], itemRows: [Set<Int>] = [], owners: [Set<Int>] = [], column: [Int: Int] = [:]
        for (position, items) in (rejected ?? []).enumerated() {
            for item in items where !item.isEmpty && !item.contains(where: { isPositive(position, $0) }) {
                if let existing = column[item[0]] { owners[existing].insert(position); continue }
                column[item[0]] = rows.count
                rows.append(item[0])
                itemRows.append(Set(item))
                owners.append([position])
            }
        }
        guard !rows.isEmpty else {
            return (loss(queries: queries, positiveKeys: positiveKeys, queue: queue.filledKeys,
                         excluded: masks.excluded, softPositive: masks.softPositive), 0)
        }
        let extraKeys = withoutGradients { encode(rows) }
        let wide = MemoryContrastiveLoss.appendingHardNegatives(
            queue: queue.filledKeys, queueItems: Array(queue.itemIDs.prefix(queue.count)), excluded: masks.excluded,
            softPositive: masks.softPositive, extraKeys: extraKeys, extraItems: itemRows, owners: owners, batch: queries.shape[0])
        return (loss(queries: queries, positiveKeys: positiveKeys, queue: wide.queue, excluded: wide.excluded,
                     softPositive: wide.softPositive, hardNegative: wide.hardNegative), owners.reduce(0) { $0 + $1.count })
    }

    /// Hard negatives used by the steps so far (a rejected item counted once per query it is a
    /// negative of, per step).
    public private(set) var hardNegativesUsed = 0

    /// The loss terms of `batch` (caption indices of `data`) at `step`, and the keys the step
    /// will enqueue. Builds the graph.
    private func lossTerms(step: Int, batch: [Int], data: RetrievalData, hardNegatives: HardNegatives? = nil)
        -> (terms: LossTerms, pending: PendingKeys?, members: PrototypeMembers?) {
        let c = configuration
        let imageIDs = batch.map { data.imageOfText[$0] }
        let imageInput = data.imageInput(imageIDs), textInput = data.textInput(batch)
        let imageBatch = model.imageEncoder(imageInput, dropoutUsing: &dropout)
        let textBatch = model.textEncoder(textInput, dropoutUsing: &dropout)
        let triplet = c.optimization.triplet(atStep: step)
        var terms = LossTerms()
        terms.add("triplet", triplet(scores: Tensor.matmul(imageBatch.fused, textBatch.fused, transposeB: true), imageIDs: imageIDs))
        if c.graphWeight > 0 {
            // Triplet losses on the graph-enhanced local vectors and on their mixes with
            // the plain ones (training only).
            let enhanced = graph(images: imageBatch.local, texts: textBatch.local)
            let gi = enhanced.images.l2Normalized(axis: -1), gt = enhanced.texts.l2Normalized(axis: -1)
            let li = imageBatch.local.l2Normalized(axis: -1), lt = textBatch.local.l2Normalized(axis: -1)
            let graphLoss = triplet(scores: Tensor.matmul(gi, gt, transposeB: true), imageIDs: imageIDs)
                + (triplet(scores: Tensor.matmul(gi, lt, transposeB: true), imageIDs: imageIDs)
                   + triplet(scores: Tensor.matmul(li, gt, transposeB: true), imageIDs: imageIDs)) * 0.5
            terms.add("graph", graphLoss * c.graphWeight)
        }
        if let scorer = model.gare, let weight = c.gareWeight, weight > 0 {
            // GARE over the batch's pairs: fused texts against the images' projected fragments.
            let detached = c.gareDetached ?? false
            let output = scorer(texts: detached ? textBatch.fused.detached : textBatch.fused,
                                fragments: detached ? imageBatch.fragments.detached : imageBatch.fragments,
                                counts: imageInput.fragmentCounts, dropoutUsing: &dropout)
            terms.add("gare", (c.gareLoss ?? GapAwareLoss())(output, imageIDs: imageIDs).total * weight)
        }
        if let negatives = captionNegatives, c.usesCaptionNegatives {
            captionNegativeTerms(negatives, batch: batch, images: imageBatch.fused, texts: textBatch.fused, into: &terms)
        }
        // Prototype assignments: the loss's codes once it is on; they mark soft positives.
        var assignments: ([Int], [Int])?
        var members: PrototypeMembers?
        if c.prototypeWeight > 0 && step >= c.prototypeWarmupSteps {
            if step == c.prototypeWarmupSteps {
                // The loss's first step: prototypes on this batch's embeddings (k-means++), from
                // a generator of their own, so the step is the same after a resume.
                var seeding = RandomGenerator(seed: c.optimization.seed &+ 3)
                prototypes.seed(from: Tensor.concatenate([imageBatch.fused.detached, textBatch.fused.detached], axis: 0),
                                generator: &seeding)
            }
            let result = prototypes(images: imageBatch.fused, texts: textBatch.fused)
            terms.add("prototype", result.loss * c.prototypeWeight)
            assignments = (result.imagePrototypes, result.textPrototypes)
            if c.prototypeMomentum != nil {
                members = PrototypeMembers(embeddings: Tensor.concatenate([imageBatch.fused.detached, textBatch.fused.detached], axis: 0),
                                           assignments: result.imagePrototypes + result.textPrototypes)
            }
        }
        guard c.memoryWeight > 0 else { return (terms, nil, members) }
        let imageKeys = withoutGradients { keyModel.imageEncoder(imageInput).local.l2Normalized(axis: -1) }
        let textKeys = withoutGradients { keyModel.textEncoder(textInput).local.l2Normalized(axis: -1) }
        if textQueue.count > 0 && imageQueue.count > 0 {
            let noItems = [Int](repeating: -1, count: batch.count)
            let toTexts = MemoryContrastiveLoss.masks(queryItems: noItems, queryImages: imageIDs, queryPrototypes: assignments?.0, queue: textQueue)
            let toImages = MemoryContrastiveLoss.masks(queryItems: noItems, queryImages: imageIDs, queryPrototypes: assignments?.1, queue: imageQueue)
            let memoryLoss = MemoryContrastiveLoss(temperature: c.memoryTemperature, hardNegativeWeight: hardNegatives?.weight ?? 1)
            let (imageToText, hardTexts) = memoryTerm(
                memoryLoss, queries: imageBatch.local.l2Normalized(axis: -1), positiveKeys: textKeys, queue: textQueue,
                masks: toTexts, rejected: hardNegatives?.textsOfImage,
                isPositive: { position, row in data.imageOfText[row] == imageIDs[position] },
                encode: { rows in self.keyModel.textEncoder(data.textInput(rows)).local.l2Normalized(axis: -1) })
            let (textToImage, hardImages) = memoryTerm(
                memoryLoss, queries: textBatch.local.l2Normalized(axis: -1), positiveKeys: imageKeys, queue: imageQueue,
                masks: toImages, rejected: hardNegatives?.imagesOfText,
                isPositive: { position, row in row == imageIDs[position] },
                encode: { rows in self.keyModel.imageEncoder(data.imageInput(rows)).local.l2Normalized(axis: -1) })
            hardNegativesUsed += hardTexts + hardImages
            terms.add("memory", (imageToText + textToImage) * (c.memoryWeight / 2))
        }
        return (terms, PendingKeys(images: imageKeys, texts: textKeys, imageIDs: imageIDs, textIDs: batch, prototypes: assignments), members)
    }

    /// The CE-CLIP terms of a batch: its captions' valid negatives go through the text encoder
    /// (with dropout, as any caption), the invalid ones are zero rows the losses ignore.
    private func captionNegativeTerms(_ negatives: CaptionNegativeSet, batch: [Int], images: Tensor, texts: Tensor, into terms: inout LossTerms) {
        let c = configuration, K = negatives.types, B = batch.count, D = images.shape[1]
        var valid: [Bool] = [], selected: [ItemFeatures] = [], indices: [Int] = []
        for text in batch {
            let row = text < negatives.rows.count ? negatives.rows[text] : [Int](repeating: -1, count: K)
            for index in row {
                valid.append(index >= 0)
                indices.append(index >= 0 ? selected.count : -1)
                if index >= 0 { selected.append(negatives.features[index]) }
            }
        }
        guard !selected.isEmpty else { return }
        let encoded = model.textEncoder(EncoderInput(selected), dropoutUsing: &dropout).fused                 // [M, D]
        let table = Tensor.concatenate([encoded, Tensor.zeros([1, D])], axis: 0)
        let rows = table.indexSelect(indices.map { $0 >= 0 ? $0 : selected.count }).reshaped([B, K, D])
        let loss = HardNegativeCaptionLoss()
        if let weight = c.captionNegativeWeight, weight > 0 {
            terms.add("caption negatives", loss.contrastive(images: images, texts: texts, negatives: rows, valid: valid) * weight)
        }
        if let weight = c.rankWeight, weight > 0 {
            if rankThresholds.count != K { rankThresholds = [Float](repeating: 0, count: K) }
            terms.add("rank", loss.rank(images: images, texts: texts, negatives: rows, valid: valid, thresholds: rankThresholds) * weight)
            rankThresholds = HardNegativeCaptionLoss.thresholds(images: images, texts: texts, negatives: rows, valid: valid)
        }
        if let weight = c.intraWeight, weight > 0 {
            terms.add("intra", loss.intraModal(images: images, texts: texts, negatives: rows, valid: valid) * weight)
        }
    }

    /// After the optimiser step: the momentum encoder follows the model, the batch's keys join the queues.
    private func updateMomentumAndQueues(step: Int, _ keys: PendingKeys?) {
        guard let keys else { return }
        ExponentialMovingAverage(momentum: configuration.momentum).update(targets: keyModel.parameters, sources: model.parameters)
        let keyPrototypes = keys.prototypes == nil ? nil : (prototypes.assign(keys.images), prototypes.assign(keys.texts))
        imageQueue.enqueue(keys.images, itemIDs: keys.imageIDs, imageIDs: keys.imageIDs, prototypes: keyPrototypes?.0, step: step)
        textQueue.enqueue(keys.texts, itemIDs: keys.textIDs, imageIDs: keys.imageIDs, prototypes: keyPrototypes?.1, step: step)
    }

    /// The losses of one step, as numbers.
    public struct StepLoss: Sendable {
        public var total: Float
        public var terms: [String: Float]
        public var learningRate: Float
        /// The loss or the gradient was not finite: no parameter changed.
        public var skipped = false
    }

    /// One training step on `batch` (caption indices of `data`, each with its image): loss,
    /// backward, clipping, optimiser, momentum encoder and queues. For trainers that choose
    /// their own batches (continuous training); ``run(train:dev:checkpoints:stepTimer:progress:)``
    /// draws its own.
    /// `hardNegatives`: results users rejected for the batch's queries (used when the memory
    /// bank is on).
    public func train(batch: [Int], data: RetrievalData, hardNegatives: HardNegatives? = nil) -> StepLoss {
        loop.optimizer.zeroGradients()
        let step = loop.step
        let (terms, pending, members) = lossTerms(step: step, batch: batch, data: data, hardNegatives: hardNegatives)
        let skippedBefore = loop.skippedSteps
        let learningRate = loop.optimize(terms)
        if let members, let momentum = configuration.prototypeMomentum, loop.skippedSteps == skippedBefore {
            prototypes.follow(members.embeddings, assignments: members.assignments, momentum: momentum)
        }
        updateMomentumAndQueues(step: step, pending)
        var values: [String: Float] = [:]
        for term in terms.terms { values[term.name, default: 0] += term.value.scalar }
        return StepLoss(total: terms.total.scalar, terms: values, learningRate: learningRate, skipped: loop.skippedSteps > skippedBefore)
    }

    /// Dev metrics of the model as it stands (stage 1).
    public func evaluate(on dev: RetrievalData) -> RetrievalMetrics {
        let (images, texts) = model.embed(dev)
        return RetrievalMetrics.evaluate(images: images, texts: texts, imageOfText: dev.imageOfText)
    }

    /// Records an evaluation made outside ``run(train:dev:checkpoints:stepTimer:progress:)`` in
    /// the history (and so in the state). No best-model copy is kept: a continuous trainer keeps
    /// its models as versions in its store.
    public func record(_ evaluation: TrainingEvaluation) {
        loop.history.append(evaluation)
    }

    /// The model as it stands, made ready to serve: the querybank normalisation's β and then
    /// the stage-2 α chosen on `dev` (β's querybank from `train`'s embeddings).
    public func servingModel(train: RetrievalData, dev: RetrievalData, metrics: RetrievalMetrics?)
        -> (model: TrainedModel, betaSweep: [(beta: Float, metrics: RetrievalMetrics)], alphaSweep: [(alpha: Float, metrics: RetrievalMetrics)]) {
        let c = configuration
        let gallery = model.encodeGallery(dev)
        // Querybank normalisation: β on dev for stage 1 (ties go to the smaller β, less correction).
        let trainEmbeddings = model.embed(train)
        let querybank = QuerybankNormalization(beta: 0, images: trainEmbeddings.images, texts: trainEmbeddings.texts,
                                               limit: c.querybankSize, seed: c.optimization.seed &+ 3)
        let betaSweep = c.querybankBetas.map { beta in
            (beta: beta, metrics: RetrievalMetrics.evaluate(images: gallery.images, texts: gallery.texts, imageOfText: dev.imageOfText,
                                                             offsets: querybank.with(beta: beta).offsets(images: gallery.images, texts: gallery.texts)))
        }
        let beta = betaSweep.max { $0.metrics.rsum < $1.metrics.rsum || ($0.metrics.rsum == $1.metrics.rsum && $0.beta > $1.beta) }?.beta ?? 0
        let normalization = querybank.with(beta: beta)
        let offsets = beta > 0 ? normalization.offsets(images: gallery.images, texts: gallery.texts) : nil
        // Stage 2 on top of it: α on dev (ties go to the larger α, less stage 2).
        let scorer: PairScorer = c.stageTwo == .gare && model.gare != nil ? .gare(model.gare!) : .scan(c.alignment)
        let sweep = TwoStageRanking(alpha: 1, depth: c.rerankDepth)
            .sweep(alphas: c.alphaGrid, gallery: gallery, scorer: scorer, imageOfText: dev.imageOfText, offsets: offsets)
        let chosen = sweep.max { $0.metrics.rsum < $1.metrics.rsum || ($0.metrics.rsum == $1.metrics.rsum && $0.alpha < $1.alpha) }
        let served = TrainedModel(encoder: c.encoder, dimensions: dimensions, model: model, step: loop.step, metrics: metrics,
                                  stageTwoMetrics: chosen?.metrics, ranking: TwoStageRanking(alpha: chosen?.alpha ?? 1, depth: c.rerankDepth),
                                  alignment: c.alignment, querybank: normalization, stageTwo: scorer.kind)
        return (served, betaSweep, sweep)
    }

    /// Trains to `configuration.optimization.steps`. With `checkpoints`, writes there at every
    /// evaluation (each file atomically): `training.safetensors` (everything a resume needs),
    /// `best.safetensors` (the best-on-dev model, when it improves) and `report.svg`.
    /// `stepTimer` receives each step's wall time (forward, backward, optimiser, queues).
    public func run(train: RetrievalData, dev: RetrievalData, checkpoints: String? = nil,
                    stepTimer: ((_ step: Int, _ seconds: Double) -> Void)? = nil,
                    progress: (String) -> Void = { _ in }) throws -> Result {
        let c = configuration
        var pending: PendingKeys?
        var members: PrototypeMembers?
        var skippedBefore = 0
        _ = try loop.run(
            loss: { step, batch in
                let (terms, keys, batchMembers) = lossTerms(step: step, batch: batch, data: train)
                pending = keys
                members = batchMembers
                skippedBefore = loop.skippedSteps
                return terms
            },
            afterStep: { step in
                if let members, let momentum = c.prototypeMomentum, loop.skippedSteps == skippedBefore {
                    prototypes.follow(members.embeddings, assignments: members.assignments, momentum: momentum)
                }
                updateMomentumAndQueues(step: step, pending)
            },
            evaluate: { evaluate(on: dev) },
            afterEvaluation: { evaluation in
                let improved = best.map { evaluation.metrics.rsum > $0.evaluation.metrics.rsum } ?? true
                if improved { best = (evaluation, model.parameters.map(\.value)) }
                if let directory = checkpoints {
                    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
                    if improved {
                        try trainedModel(ranking: TwoStageRanking(alpha: 1, depth: c.rerankDepth)).write(to: directory + "/best.safetensors")
                    }
                    try saveState(to: directory + "/training.safetensors")
                    try AtomicFile.write([Array(TrainingReport.svg(history: loop.history, title: "amber train").utf8)], to: directory + "/report.svg")
                }
            },
            stepTimer: stepTimer,
            progress: progress)

        // The best model, made ready to serve: β and α chosen on dev.
        if let best {
            for (parameter, value) in zip(model.parameters, best.values) { parameter.assign(value) }
        }
        var (result, betaSweep, alphaSweep) = servingModel(train: train, dev: dev, metrics: best?.evaluation.metrics)
        result.step = best?.evaluation.step ?? loop.step
        if let directory = checkpoints { try result.write(to: directory + "/best.safetensors") }
        return Result(history: loop.history, model: result, betaSweep: betaSweep, alphaSweep: alphaSweep)
    }

    private func trainedModel(ranking: TwoStageRanking, stageTwoMetrics: RetrievalMetrics? = nil,
                              querybank: QuerybankNormalization? = nil) -> TrainedModel {
        TrainedModel(encoder: configuration.encoder, dimensions: dimensions, model: model, step: best?.evaluation.step ?? loop.step,
                     metrics: best?.evaluation.metrics, stageTwoMetrics: stageTwoMetrics, ranking: ranking, alignment: configuration.alignment,
                     querybank: querybank, stageTwo: configuration.stageTwo == .gare && model.gare != nil ? .gare : .scan)
    }
}

// MARK: - Checkpoints

extension MatchingTrainer {
    static let stateFormat = "amber-training-state/1"

    /// Writes everything a resume needs, atomically: parameters (model, prototypes, graph), the
    /// momentum encoder, the optimiser's state, both queues, the batcher and dropout generators, the
    /// history, and the best model so far.
    public func saveState(to path: String) throws {
        try AtomicFile.write(stateChunks(), to: path)
    }

    /// The bytes ``saveState(to:)`` writes (e.g. for a database row).
    public func stateBytes() throws -> [UInt8] {
        try stateChunks().flatMap { $0 }
    }

    private func stateChunks() throws -> [[UInt8]] {
        var entries: [String: SafetensorsFile.Entry] = [:]
        for parameter in persistentParameters { entries["param." + parameter.name] = .float(parameter.value, .float32) }
        for parameter in keyModel.parameters { entries["key." + parameter.name] = .float(parameter.value, .float32) }
        for (name, tensor) in loop.optimizer.stateTensors() { entries["optimizer." + name] = .float(tensor, .float32) }
        if let best {
            for (parameter, value) in zip(model.parameters, best.values) { entries["best." + parameter.name] = .float(value, .float32) }
        }
        var queues: [String: QueueState] = [:]
        for (name, queue) in [("image", imageQueue), ("text", textQueue)] {
            entries["queue.\(name).keys"] = .float(queue.keys, .float32)
            entries["queue.\(name).slots"] = .int64((queue.itemIDs + queue.imageIDs + queue.prototypes + queue.enqueuedSteps).map(Int64.init),
                                                    shape: [4, queue.capacity])
            queues[name] = QueueState(count: queue.count, head: queue.head)
        }
        let metadata: [String: String] = try [
            "format": Self.stateFormat,
            "configuration": MetadataJSON.encode(configuration),
            "dimensions": MetadataJSON.encode(dimensions),
            "position": MetadataJSON.encode(loop.position),
            "dropout": MetadataJSON.encode(dropout),
            "queues": MetadataJSON.encode(queues),
            "best": MetadataJSON.encode(best?.evaluation),
            "rankThresholds": MetadataJSON.encode(rankThresholds),
        ]
        return try SafetensorsFile.encode(entries, metadata: metadata)
    }

    /// A trainer restored from `saveState`'s file. The configuration must be the saved one,
    /// except `steps`, which may be raised to train longer.
    public convenience init(resumingFrom path: String, configuration: Configuration, train: RetrievalData) throws {
        try self.init(resumingFrom: SafetensorsFile(path: path), configuration: configuration, train: train, ownBatches: true)
    }

    /// A trainer restored from a state's bytes (``stateBytes()``); `name` stands for them in errors.
    public convenience init(resumingFrom bytes: [UInt8], name: String, configuration: Configuration, train: RetrievalData,
                            ownBatches: Bool) throws {
        try self.init(resumingFrom: SafetensorsFile(bytes: bytes, name: name), configuration: configuration, train: train, ownBatches: ownBatches)
    }

    private convenience init(resumingFrom file: SafetensorsFile, configuration: Configuration, train: RetrievalData, ownBatches: Bool) throws {
        let path = file.path
        func fail(_ problem: String) -> TensorFileError { TensorFileError(path: path, problem: problem) }
        guard file.metadata["format"] == Self.stateFormat else {
            throw fail("not an Amber training state (format \(file.metadata["format"] ?? "missing"), expected \(Self.stateFormat))")
        }
        func field<T: Decodable>(_ name: String, as type: T.Type) throws -> T {
            guard let text = file.metadata[name] else { throw fail("metadata has no '\(name)'") }
            do { return try MetadataJSON.decode(type, from: text) } catch { throw fail("metadata '\(name)' does not decode: \(error)") }
        }
        var saved = try field("configuration", as: Configuration.self)
        saved.optimization.steps = configuration.optimization.steps
        guard saved == configuration else {
            throw fail("was written with a different configuration; resume with the same options (only --steps may change)")
        }
        try self.init(configuration: configuration, train: train, ownBatches: ownBatches)
        guard try field("dimensions", as: TrainedModel.Dimensions.self) == dimensions else {
            throw fail("was trained on features of other dimensions than \(dimensions)")
        }
        func load(_ parameters: [Parameter], prefix: String) throws {
            for parameter in parameters {
                let value = try file.tensor(prefix + parameter.name)
                guard value.shape == parameter.shape else { throw fail("'\(prefix + parameter.name)' has shape \(value.shape), the model \(parameter.shape)") }
                parameter.assign(value)
            }
        }
        try load(persistentParameters, prefix: "param.")
        try load(keyModel.parameters, prefix: "key.")
        var optimizerState: [String: Tensor] = [:]
        for name in file.names where name.hasPrefix("optimizer.") { optimizerState[String(name.dropFirst(10))] = try file.tensor(name) }
        do { try loop.restore(try field("position", as: TrainingLoop.Position.self), optimizerState: optimizerState) } catch let error as OptimizerStateError {
            throw fail(error.description)
        }
        dropout = try field("dropout", as: RandomGenerator.self)
        let queues = try field("queues", as: [String: QueueState].self)
        func queue(_ name: String) throws -> MemoryQueue {
            guard let state = queues[name] else { throw fail("metadata 'queues' has no \(name) queue") }
            let slots = try file.arrays["queue.\(name).slots"].map { try $0.int64Values().map(Int.init) } ?? []
            let capacity = slots.count / 4
            do {
                return try MemoryQueue(keys: file.tensor("queue.\(name).keys"), itemIDs: Array(slots[0..<capacity]),
                                       imageIDs: Array(slots[capacity..<(2 * capacity)]), prototypes: Array(slots[(2 * capacity)..<(3 * capacity)]),
                                       enqueuedSteps: Array(slots[(3 * capacity)...]), count: state.count, head: state.head)
            } catch let error as MemoryQueueError { throw fail(error.description) }
        }
        imageQueue = try queue("image")
        textQueue = try queue("text")
        // Written since the CE-CLIP losses; older states have none (all margins start at 0).
        if let text = file.metadata["rankThresholds"] {
            do { rankThresholds = try MetadataJSON.decode([Float].self, from: text) } catch { throw fail("metadata 'rankThresholds' does not decode: \(error)") }
        }
        if let evaluation = try field("best", as: TrainingEvaluation?.self) {
            best = (evaluation, try model.parameters.map { try file.tensor("best." + $0.name) })
        }
    }

    private struct QueueState: Codable {
        var count: Int
        var head: Int
    }
}
