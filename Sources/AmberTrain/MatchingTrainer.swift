import AmberModel
import AmberTensor

/// Offline training of the ``MatchingModel`` on a train split with selection on dev: the
/// triplet loss on fused embeddings, plus (each switchable by its weight) the memory-augmented
/// contrast with a momentum encoder and queues, the Sinkhorn prototype loss, and the in-batch
/// relation graph's triplet losses.
public struct MatchingTrainer: Sendable {
    public struct Configuration: Sendable, Codable, Equatable {
        public var encoder = ModalityEncoder.Configuration()
        public var optimization = OptimizationConfiguration()
        /// Start the global (and fragment) projections from the CCA solution on the training pairs.
        public var warmStartFromCCA = false
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
        /// λ of the relation-graph triplet losses (0: off).
        public var graphWeight: Float = 0

        public init() {}
    }

    public let configuration: Configuration

    public init(configuration: Configuration) {
        self.configuration = configuration
    }

    public func train(train: RetrievalData, dev: RetrievalData, progress: (String) -> Void = { _ in }) -> [TrainingEvaluation] {
        let c = configuration
        let o = c.optimization
        func makeModel(_ generator: inout RandomGenerator) -> MatchingModel {
            MatchingModel(imageGlobal: train.imageGlobal.shape[1], imageFragment: train.imageLocal.shape[2],
                          textGlobal: train.textGlobal.shape[1], textFragment: train.textTokens.shape[1],
                          configuration: c.encoder, generator: &generator)
        }
        var generator = RandomGenerator(seed: o.seed)
        let model = makeModel(&generator)
        if c.warmStartFromCCA {
            let cca = try! LinearCCA.fit(x: train.imageGlobal.indexSelect(train.imageOfText), y: train.textGlobal,
                                         configuration: .init(regularization: 2, components: c.encoder.jointDimension, power: 1))
            model.warmStart(from: cca)
        }
        // Momentum (key) encoder and queues for the memory-augmented loss.
        var keyGenerator = RandomGenerator(seed: o.seed)
        let keyModel = makeModel(&keyGenerator)
        keyModel.copyParameters(from: model)
        var imageQueue = MemoryQueue(capacity: c.queueSize, dimension: c.encoder.jointDimension)
        var textQueue = MemoryQueue(capacity: c.queueSize, dimension: c.encoder.jointDimension)
        let memoryLoss = MemoryContrastiveLoss(temperature: c.memoryTemperature)
        let average = ExponentialMovingAverage(momentum: c.momentum)
        let prototypes = PrototypeLoss(count: c.prototypeCount, dimension: c.encoder.jointDimension, generator: &generator)
        let graph = RelationGraph(dimension: c.encoder.jointDimension, generator: &generator)
        let trainable = model.parameters + (c.prototypeWeight > 0 ? [prototypes.prototypes] : []) + (c.graphWeight > 0 ? graph.parameters : [])
        var dropout = RandomGenerator(seed: o.seed &+ 2)
        // What the step leaves for `afterStep`: the batch's keys and ids, and prototype assignments.
        var pending: (images: Tensor, texts: Tensor, imageIDs: [Int], batch: [Int], prototypes: ([Int], [Int])?)?

        return TrainingLoop(configuration: o, parameters: trainable).run(
            pairCount: train.textCount,
            loss: { step, batch in
                let imageIDs = batch.map { train.imageOfText[$0] }
                let imageInput = train.imageInput(imageIDs), textInput = train.textInput(batch)
                let imageBatch = model.imageEncoder(imageInput, dropoutUsing: &dropout)
                let textBatch = model.textEncoder(textInput, dropoutUsing: &dropout)
                let triplet = o.triplet(atStep: step)
                var loss = triplet(scores: Tensor.matmul(imageBatch.fused, textBatch.fused, transposeB: true), imageIDs: imageIDs)
                if c.graphWeight > 0 {
                    // Triplet losses on the graph-enhanced local vectors and on their mixes with
                    // the plain ones (training only).
                    let enhanced = graph(images: imageBatch.local, texts: textBatch.local)
                    let gi = enhanced.images.l2Normalized(axis: -1), gt = enhanced.texts.l2Normalized(axis: -1)
                    let li = imageBatch.local.l2Normalized(axis: -1), lt = textBatch.local.l2Normalized(axis: -1)
                    let graphLoss = triplet(scores: Tensor.matmul(gi, gt, transposeB: true), imageIDs: imageIDs)
                        + (triplet(scores: Tensor.matmul(gi, lt, transposeB: true), imageIDs: imageIDs)
                           + triplet(scores: Tensor.matmul(li, gt, transposeB: true), imageIDs: imageIDs)) * 0.5
                    loss = loss + graphLoss * c.graphWeight
                }
                // Prototype assignments: the loss's codes once it is on; they mark soft positives.
                var assignments: ([Int], [Int])?
                if c.prototypeWeight > 0 && step >= c.prototypeWarmupSteps {
                    let result = prototypes(images: imageBatch.fused, texts: textBatch.fused)
                    loss = loss + result.loss * c.prototypeWeight
                    assignments = (result.imagePrototypes, result.textPrototypes)
                }
                pending = nil
                if c.memoryWeight > 0 {
                    let imageKeys = withoutGradients { keyModel.imageEncoder(imageInput).local.l2Normalized(axis: -1) }
                    let textKeys = withoutGradients { keyModel.textEncoder(textInput).local.l2Normalized(axis: -1) }
                    pending = (imageKeys, textKeys, imageIDs, batch, assignments)
                    if textQueue.count > 0 && imageQueue.count > 0 {
                        let noItems = [Int](repeating: -1, count: batch.count)
                        let toTexts = MemoryContrastiveLoss.masks(queryItems: noItems, queryImages: imageIDs, queryPrototypes: assignments?.0, queue: textQueue)
                        let toImages = MemoryContrastiveLoss.masks(queryItems: noItems, queryImages: imageIDs, queryPrototypes: assignments?.1, queue: imageQueue)
                        let imageToText = memoryLoss(queries: imageBatch.local.l2Normalized(axis: -1), positiveKeys: textKeys,
                                                     queue: textQueue.filledKeys, excluded: toTexts.excluded, softPositive: toTexts.softPositive)
                        let textToImage = memoryLoss(queries: textBatch.local.l2Normalized(axis: -1), positiveKeys: imageKeys,
                                                     queue: imageQueue.filledKeys, excluded: toImages.excluded, softPositive: toImages.softPositive)
                        loss = loss + (imageToText + textToImage) * (c.memoryWeight / 2)
                    }
                }
                return loss
            },
            afterStep: { step in
                guard let keys = pending else { return }
                average.update(targets: keyModel.parameters, sources: model.parameters)
                let keyPrototypes = keys.prototypes == nil ? nil : (prototypes.assign(keys.images), prototypes.assign(keys.texts))
                imageQueue.enqueue(keys.images, itemIDs: keys.imageIDs, imageIDs: keys.imageIDs, prototypes: keyPrototypes?.0, step: step)
                textQueue.enqueue(keys.texts, itemIDs: keys.batch, imageIDs: keys.imageIDs, prototypes: keyPrototypes?.1, step: step)
            },
            evaluate: {
                let (images, texts) = model.embed(dev)
                return RetrievalMetrics.evaluate(images: images, texts: texts, imageOfText: dev.imageOfText)
            },
            progress: progress)
    }
}
