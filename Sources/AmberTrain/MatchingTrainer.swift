import AmberModel
import AmberTensor
import Foundation

/// Offline training of the ``MatchingModel`` on a train split with selection on dev.
/// Batches are captions with their images (seeded shuffles); AdamW with warm-up and step decay,
/// global-norm clipping; dev evaluation every `evaluateEvery` steps.
public struct MatchingTrainer: Sendable {
    public struct Configuration: Sendable, Codable, Equatable {
        public var encoder = ModalityEncoder.Configuration()
        public var batchSize = 128
        public var steps = 1500
        public var learningRate: Float = 5e-4
        public var warmupSteps = 100
        public var decayEvery = 1000
        public var weightDecay: Float = 1e-4
        public var margin: Float = 0.2
        public var allNegativesSteps = 200
        public var gradientClip: Float = 2
        public var evaluateEvery = 100
        public var seed: UInt64 = 1
        /// Start the global projections from the CCA solution on the training pairs.
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

    public struct Evaluation: Sendable, Codable {
        public let step: Int
        public let loss: Float
        public let pairsPerSecond: Double
        public let metrics: RetrievalMetrics
    }

    public let configuration: Configuration

    public init(configuration: Configuration) {
        self.configuration = configuration
    }

    public func train(train: RetrievalData, dev: RetrievalData, progress: (String) -> Void = { _ in }) -> [Evaluation] {
        let c = configuration
        var generator = RandomGenerator(seed: c.seed)
        let model = MatchingModel(imageGlobal: train.imageGlobal.shape[1], imageFragment: train.imageLocal.shape[2],
                                  textGlobal: train.textGlobal.shape[1], textFragment: train.textTokens.shape[1],
                                  configuration: c.encoder, generator: &generator)
        if c.warmStartFromCCA {
            let cca = try! LinearCCA.fit(x: train.imageGlobal.indexSelect(train.imageOfText), y: train.textGlobal,
                                         configuration: .init(regularization: 2, components: c.encoder.jointDimension, power: 1))
            model.warmStart(from: cca)
        }
        // Momentum (key) encoder and queues for the memory-augmented loss.
        var keyGenerator = RandomGenerator(seed: c.seed)
        let keyModel = MatchingModel(imageGlobal: train.imageGlobal.shape[1], imageFragment: train.imageLocal.shape[2],
                                     textGlobal: train.textGlobal.shape[1], textFragment: train.textTokens.shape[1],
                                     configuration: c.encoder, generator: &keyGenerator)
        keyModel.copyParameters(from: model)
        var imageQueue = MemoryQueue(capacity: c.queueSize, dimension: c.encoder.jointDimension)
        var textQueue = MemoryQueue(capacity: c.queueSize, dimension: c.encoder.jointDimension)
        let memoryLoss = MemoryContrastiveLoss(temperature: c.memoryTemperature)
        let average = ExponentialMovingAverage(momentum: c.momentum)
        let prototypes = PrototypeLoss(count: c.prototypeCount, dimension: c.encoder.jointDimension, generator: &generator)
        let graph = RelationGraph(dimension: c.encoder.jointDimension, generator: &generator)
        let trainable = model.parameters + (c.prototypeWeight > 0 ? [prototypes.prototypes] : []) + (c.graphWeight > 0 ? graph.parameters : [])
        let optimizer = AdamW(parameters: trainable, configuration: .init(weightDecay: c.weightDecay))
        let schedule = WarmupStepDecay(base: c.learningRate, warmupSteps: c.warmupSteps, decayEvery: c.decayEvery, factor: 0.1)
        var batcher = PairBatcher(count: train.textCount, batchSize: c.batchSize, seed: c.seed &+ 1)
        var dropout = RandomGenerator(seed: c.seed &+ 2)
        var history: [Evaluation] = []
        var started = Date()
        var lossSum: Float = 0, lossCount = 0
        for step in 0..<c.steps {
            let batch = batcher.next()
            let imageIDs = batch.map { train.imageOfText[$0] }
            optimizer.zeroGradients()
            let imageInput = train.imageInput(imageIDs), textInput = train.textInput(batch)
            let imageBatch = model.imageEncoder(imageInput, dropoutUsing: &dropout)
            let textBatch = model.textEncoder(textInput, dropoutUsing: &dropout)
            let scores = Tensor.matmul(imageBatch.fused, textBatch.fused, transposeB: true)
            var loss = TripletLoss(margin: c.margin, negatives: step < c.allNegativesSteps ? .all : .hardest)(scores: scores, imageIDs: imageIDs)
            if c.graphWeight > 0 {
                // Triplet losses on the graph-enhanced local vectors and on their mixes with
                // the plain ones (training only).
                let enhanced = graph(images: imageBatch.local, texts: textBatch.local)
                let gi = enhanced.images.l2Normalized(axis: -1), gt = enhanced.texts.l2Normalized(axis: -1)
                let li = imageBatch.local.l2Normalized(axis: -1), lt = textBatch.local.l2Normalized(axis: -1)
                let triplet = TripletLoss(margin: c.margin, negatives: step < c.allNegativesSteps ? .all : .hardest)
                let graphLoss = triplet(scores: Tensor.matmul(gi, gt, transposeB: true), imageIDs: imageIDs)
                    + (triplet(scores: Tensor.matmul(gi, lt, transposeB: true), imageIDs: imageIDs)
                       + triplet(scores: Tensor.matmul(li, gt, transposeB: true), imageIDs: imageIDs)) * 0.5
                loss = loss + graphLoss * c.graphWeight
            }
            var keys: (images: Tensor, texts: Tensor)?
            // Prototype assignments: the loss's codes once it is on; they mark soft positives.
            var assignments: (images: [Int], texts: [Int])?
            if c.prototypeWeight > 0 && step >= c.prototypeWarmupSteps {
                let result = prototypes(images: imageBatch.fused, texts: textBatch.fused)
                loss = loss + result.loss * c.prototypeWeight
                assignments = (result.imagePrototypes, result.textPrototypes)
            }
            if c.memoryWeight > 0 {
                let imageKeys = withoutGradients { keyModel.imageEncoder(imageInput).local.l2Normalized(axis: -1) }
                let textKeys = withoutGradients { keyModel.textEncoder(textInput).local.l2Normalized(axis: -1) }
                keys = (imageKeys, textKeys)
                if textQueue.count > 0 && imageQueue.count > 0 {
                    let noItems = [Int](repeating: -1, count: batch.count)
                    let toTexts = MemoryContrastiveLoss.masks(queryItems: noItems, queryImages: imageIDs, queryPrototypes: assignments?.images, queue: textQueue)
                    let toImages = MemoryContrastiveLoss.masks(queryItems: noItems, queryImages: imageIDs, queryPrototypes: assignments?.texts, queue: imageQueue)
                    let imageToText = memoryLoss(queries: imageBatch.local.l2Normalized(axis: -1), positiveKeys: textKeys,
                                                 queue: textQueue.filledKeys, excluded: toTexts.excluded, softPositive: toTexts.softPositive)
                    let textToImage = memoryLoss(queries: textBatch.local.l2Normalized(axis: -1), positiveKeys: imageKeys,
                                                 queue: imageQueue.filledKeys, excluded: toImages.excluded, softPositive: toImages.softPositive)
                    loss = loss + (imageToText + textToImage) * (c.memoryWeight / 2)
                }
            }
            loss.backward()
            clipGradientNorm(trainable, maximumNorm: c.gradientClip)
            optimizer.step(learningRate: schedule.learningRate(atStep: step))
            if let keys {
                average.update(targets: keyModel.parameters, sources: model.parameters)
                let keyPrototypes = assignments == nil ? nil : (prototypes.assign(keys.images), prototypes.assign(keys.texts))
                imageQueue.enqueue(keys.images, itemIDs: imageIDs, imageIDs: imageIDs, prototypes: keyPrototypes?.0, step: step)
                textQueue.enqueue(keys.texts, itemIDs: batch, imageIDs: imageIDs, prototypes: keyPrototypes?.1, step: step)
            }
            lossSum += loss.scalar
            lossCount += 1
            if (step + 1) % c.evaluateEvery == 0 || step + 1 == c.steps {
                let elapsed = Date().timeIntervalSince(started)
                let rate = Double(lossCount * c.batchSize) / elapsed
                let (devImages, devTexts) = model.embed(dev)
                let metrics = RetrievalMetrics.evaluate(images: devImages, texts: devTexts, imageOfText: dev.imageOfText)
                history.append(Evaluation(step: step + 1, loss: lossSum / Float(lossCount), pairsPerSecond: rate, metrics: metrics))
                let eta = Double(c.steps - step - 1) * Double(c.batchSize) / rate
                progress(String(format: "step %5d/%d  loss %.4f  lr %.2e  %.0f pairs/s  ETA %.0fs  dev %@",
                                step + 1, c.steps, lossSum / Float(lossCount), schedule.learningRate(atStep: step), rate, eta, metrics.description))
                lossSum = 0
                lossCount = 0
                started = Date()
            }
        }
        return history
    }
}
