import AmberCatalog
import AmberModel
import AmberTensor
import Foundation

// Shape legend: `N` items, `B` batch, `D` shared dimension, `C` classes.

/// Label-supervised training after DRCL (Pu, Qin, Peng, Song, Zheng, IEEE TMM 2025): each
/// modality is learnt on its own from its items' classes, against one fixed classifier prior.
///
/// 1. **Selective prior**: each modality's network with its own classifier `W` `[D, C]` (the same
///    orthonormal start for all) learns by generalised cross-entropy; each keeps its best epoch
///    by the validation quality score (mean predicted probability of the true class), and the
///    modality with the best score gives its `W` as the prior `W*`.
/// 2. **Reversible consistency**: every modality's network learns afresh against `W*` fixed:
///    ``ReversibleConsistencyLoss`` on mixed-up features (`λ f_a + (1 − λ) f_b`, labels alike),
///    keeping the epoch whose validation features best retrieve by their class target (mAP of
///    the targets `L_c` as queries over the modality's validation items), a criterion of one
///    modality alone, so a modality trained later is selected the same way.
///
/// Every random choice is drawn from generators seeded by (seed, modality, stage), so a modality
/// is trained the same whether or not the others are trained in the same run.
public final class LabelTrainer {
    public struct Configuration: Sendable, Codable, Equatable {
        public var network = LabelEncoder.Configuration()
        /// Epochs of stage 1 (selective prior) and stage 2 (consistency); DRCL: 200 and 200 on Wikipedia.
        public var priorEpochs = 200
        public var epochs = 200
        public var batchSize = 1024
        public var priorLearningRate: Float = 5e-4
        /// Stage-2 learning rates by modality (DRCL on Wikipedia: 6e-6 image, 5e-3 text).
        public var imageLearningRate: Float = 6e-6
        public var textLearningRate: Float = 5e-3
        public var alpha: Float = 0.1, beta: Float = 0.1, eta: Float = 1
        /// `λ` of the feature mixup (1: off).
        public var mixup: Float = 0.9
        /// GCE's `q = min(1, qPerEpoch · epoch)`, epochs counted from 1.
        public var qPerEpoch: Float = 0.01
        /// Standardise each modality's inputs by its training statistics.
        public var standardize = true
        public var seed: UInt64 = 1

        public init() {}

        public func learningRate(_ modality: Modality) -> Float { modality == .image ? imageLearningRate : textLearningRate }

        /// What is wrong with these settings (named by their `amber train` option), or nil.
        public var problem: String? {
            if let problem = network.problem { return problem }
            if !(0...100_000).contains(priorEpochs) || !(0...100_000).contains(epochs) { return "--prior-epochs and --epochs must be 0…100000" }
            if !(2...65_536).contains(batchSize) { return "the batch size (--batch-size) must be 2…65536, got \(batchSize)" }
            for (name, rate) in [("--prior-learning-rate", priorLearningRate), ("--image-learning-rate", imageLearningRate), ("--text-learning-rate", textLearningRate)]
            where !(rate.isFinite && rate > 0 && rate <= 10) {
                return "\(name) must be a finite number in (0, 10], got \(rate)"
            }
            for (name, weight) in [("α", alpha), ("β", beta), ("η", eta)] where !(weight.isFinite && weight >= 0 && weight <= 1000) {
                return "the loss weight \(name) must be in [0, 1000], got \(weight)"
            }
            if !(mixup > 0 && mixup <= 1) { return "--mixup must be in (0, 1], got \(mixup)" }
            if !(qPerEpoch.isFinite && qPerEpoch >= 0 && qPerEpoch <= 1) { return "the GCE q rate must be in [0, 1], got \(qPerEpoch)" }
            return nil
        }
    }

    /// One epoch's record.
    public struct Epoch: Sendable, Codable, Equatable {
        public var stage: Int
        public var modality: Modality
        public var epoch: Int
        public var loss: Float
        /// Stage 1: validation quality score; stage 2: validation mAP against the class targets.
        public var score: Double
    }

    /// What stage 1 found.
    public struct PriorSelection: Sendable {
        /// Each trained modality's best validation score and its classifier.
        public var scores: [Modality: Double]
        public var classifiers: [Modality: Tensor]
        public var chosen: Modality
        public var prior: Tensor { classifiers[chosen]! }
    }

    public let configuration: Configuration
    public let train: LabelledData
    public let validation: LabelledData
    public private(set) var history: [Epoch] = []
    private let progress: (String) -> Void

    public init(configuration: Configuration, train: LabelledData, validation: LabelledData, progress: @escaping (String) -> Void = { _ in }) {
        precondition(configuration.problem == nil, "LabelTrainer: \(configuration.problem ?? "")")
        precondition(train.classCount == validation.classCount, "LabelTrainer: train and validation classes differ")
        precondition(train.classCount <= configuration.network.output, "LabelTrainer: \(train.classCount) classes need a shared space of at least as many dimensions")
        self.configuration = configuration
        self.train = train
        self.validation = validation
        self.progress = progress
    }

    private func generator(_ modality: Modality?, stage: UInt64) -> RandomGenerator {
        let tag: UInt64 = modality == .image ? 1 : (modality == .text ? 2 : 0)
        return RandomGenerator(seed: configuration.seed &* 0x9E37_79B9_7F4A_7C15 &+ tag &* 0x100 &+ stage)
    }

    private func newEncoder(_ modality: Modality, generator: inout RandomGenerator) -> LabelEncoder {
        let features = train.items[modality]!.features
        return LabelEncoder(modality: modality, inputDimension: features.shape[1], configuration: configuration.network,
                            standardization: configuration.standardize ? LabelEncoder.standardization(of: features) : nil,
                            generator: &generator)
    }

    /// The same orthonormal start of `W` for every modality (DRCL: `orthogonal_` columns).
    private func initialClassifier() -> Tensor {
        var generator = generator(nil, stage: 1)
        return DoubleMatrix.orthonormalColumns(rows: configuration.network.output, columns: train.classCount, using: &generator).tensor
    }

    private func q(atEpoch epoch: Int) -> Float { Swift.min(1, configuration.qPerEpoch * Float(epoch + 1)) }

    /// Near-equal batches covering every row of a shuffled order.
    private func batches(_ count: Int, generator: inout RandomGenerator) -> [[Int]] {
        let order = generator.permutation(count)
        let n = Swift.max(1, (count + configuration.batchSize - 1) / configuration.batchSize)
        return (0..<n).map { b in Array(order[(b * count / n) ..< ((b + 1) * count / n)]) }
    }

    /// One epoch over `count` items in shuffled near-equal batches (each: zero the gradients,
    /// `loss`, backward, a step); the mean loss. `loss` may draw from the generator too (mixup).
    private func epoch(_ count: Int, generator: inout RandomGenerator, optimizer: AdamW, learningRate: Float,
                       loss: (_ rows: [Int], _ generator: inout RandomGenerator) -> Tensor) -> Float {
        var total: Float = 0
        let groups = batches(count, generator: &generator)
        for rows in groups {
            optimizer.zeroGradients()
            let value = loss(rows, &generator)
            value.backward()
            optimizer.step(learningRate: learningRate)
            total += value.scalar
        }
        return total / Float(groups.count)
    }

    private func optimizer(_ parameters: [Parameter]) -> AdamW {
        AdamW(parameters: parameters, configuration: AdamW.Configuration(beta1: 0.5, beta2: 0.999, weightDecay: 0))
    }

    private func log(_ stage: Int, _ modality: Modality, _ epoch: Int, _ total: Int, _ loss: Float, _ score: Double, started: Date) {
        history.append(Epoch(stage: stage, modality: modality, epoch: epoch, loss: loss, score: score))
        let every = Swift.max(1, total / 10)
        guard (epoch + 1) % every == 0 || epoch + 1 == total else { return }
        let elapsed = Date().timeIntervalSince(started)
        let rate = Double((epoch + 1) * train.items[modality]!.count) / Swift.max(elapsed, 1e-9)
        let eta = elapsed / Double(epoch + 1) * Double(total - epoch - 1)
        progress(String(format: "stage %d %@ epoch %d/%d: loss %.4f, validation %@ %.4f, %.0f items/s, ETA %.0f s",
                        stage, modality.rawValue, epoch + 1, total, loss, stage == 1 ? "score" : "target mAP", score, rate, eta))
    }

    /// Stage 1 on `modalities`: each one's classifier and best score; the best becomes the prior.
    public func learnPrior(_ modalities: [Modality]) -> PriorSelection {
        precondition(!modalities.isEmpty && modalities.allSatisfy { train.items[$0] != nil && validation.items[$0] != nil },
                     "learnPrior: every modality needs training and validation items")
        let C = train.classCount
        var scores: [Modality: Double] = [:], classifiers: [Modality: Tensor] = [:]
        for modality in modalities {
            var generator = generator(modality, stage: 1)
            let encoder = newEncoder(modality, generator: &generator)
            let classifier = Parameter(initialClassifier(), name: "\(modality.rawValue).classifier")
            let optimizer = optimizer(encoder.parameters + [classifier])
            let items = train.items[modality]!, labels = items.labelMatrix(classCount: C)
            let held = validation.items[modality]!, heldLabels = held.labelMatrix(classCount: C)
            var best = (score: -Double.infinity, classifier: classifier.value)
            let started = Date()
            for epoch in 0..<configuration.priorEpochs {
                let meanLoss = self.epoch(items.count, generator: &generator, optimizer: optimizer, learningRate: configuration.priorLearningRate) { rows, _ in
                    LabelSupervisedLosses.generalizedCrossEntropy(logits: Tensor.matmul(encoder(items.features.indexSelect(rows)), classifier.tensor),
                                                                  targets: labels.indexSelect(rows), q: q(atEpoch: epoch))
                }
                let score = withoutGradients {
                    Double((Tensor.matmul(encoder.embed(held.features), classifier.value).softmax(axis: 1) * heldLabels).sum(axis: 1).mean().scalar)
                }
                if score > best.score { best = (score, classifier.value) }
                log(1, modality, epoch, configuration.priorEpochs, meanLoss, score, started: started)
            }
            if configuration.priorEpochs == 0 { best = (0, classifier.value) }
            scores[modality] = best.score
            classifiers[modality] = best.classifier
        }
        let chosen = modalities.max { (scores[$0] ?? 0) < (scores[$1] ?? 0) }!
        progress("prior: " + modalities.map { String(format: "%@ %.4f", $0.rawValue, scores[$0]!) }.joined(separator: ", ")
                 + " → the \(chosen.rawValue) classifier")
        return PriorSelection(scores: scores, classifiers: classifiers, chosen: chosen)
    }

    /// Stage 2: `modality`'s network trained against the fixed `prior`; the best validation epoch.
    public func trainEncoder(_ modality: Modality, prior: Tensor) throws -> LabelEncoder {
        precondition(train.items[modality] != nil && validation.items[modality] != nil, "trainEncoder: no \(modality) items")
        precondition(prior.shape == [configuration.network.output, train.classCount], "trainEncoder: prior \(prior.shape)")
        let C = train.classCount
        let inverse = try DoubleMatrix(prior).pseudoInverse().tensor                             // [C, D]
        var generator = generator(modality, stage: 2)
        let encoder = newEncoder(modality, generator: &generator)
        let bestEncoder = newEncoder(modality, generator: &generator)
        bestEncoder.copyParameters(from: encoder)
        let optimizer = optimizer(encoder.parameters)
        let loss = ReversibleConsistencyLoss(alpha: configuration.alpha, beta: configuration.beta, eta: configuration.eta)
        let items = train.items[modality]!, labels = items.labelMatrix(classCount: C)
        let held = validation.items[modality]!
        var bestScore = targetMeanAveragePrecision(encoder, held, inverse: inverse)
        let λ = configuration.mixup
        let started = Date()
        for epoch in 0..<configuration.epochs {
            let meanLoss = self.epoch(items.count, generator: &generator, optimizer: optimizer, learningRate: configuration.learningRate(modality)) { rows, generator in
                var features = encoder(items.features.indexSelect(rows))
                var y = labels.indexSelect(rows)
                if λ < 1 {
                    let partner = generator.permutation(rows.count)
                    features = features * λ + features.indexSelect(partner) * (1 - λ)
                    y = y * λ + y.indexSelect(partner) * (1 - λ)
                }
                return loss(features: features, labels: y, prior: prior, inverse: inverse, q: q(atEpoch: epoch)).total
            }
            let score = targetMeanAveragePrecision(encoder, held, inverse: inverse)
            if score > bestScore {
                bestScore = score
                bestEncoder.copyParameters(from: encoder)
            }
            log(2, modality, epoch, configuration.epochs, meanLoss, score, started: started)
        }
        return bestEncoder
    }

    /// mAP of the class targets `L_c` as queries over `items`' embeddings (relevant: has class c).
    private func targetMeanAveragePrecision(_ encoder: LabelEncoder, _ items: LabelledItems, inverse: Tensor) -> Double {
        let present = Array(Set(items.labels.joined())).sorted()
        return LabelRetrievalMetrics.meanAveragePrecision(queries: inverse.indexSelect(present), queryLabels: present.map { [$0] },
                                                          gallery: encoder.embed(items.features), galleryLabels: items.labels, depth: nil)
    }

    /// Trains `modalities`: with `existing`, against its prior, keeping its other networks as they
    /// are; without, stage 1 on the same modalities chooses the prior first.
    public func run(_ modalities: [Modality], existing: LabelSupervisedModel? = nil) throws -> LabelSupervisedModel {
        let prior: Tensor, priorModality: Modality
        var encoders: [Modality: LabelEncoder] = [:]
        if let existing {
            precondition(existing.configuration == configuration.network && existing.classCount == train.classCount,
                         "LabelTrainer.run: the existing model's network or classes differ")
            prior = existing.prior
            priorModality = existing.priorModality
            encoders = existing.encoders
        } else {
            let selection = learnPrior(modalities)
            prior = selection.prior
            priorModality = selection.chosen
        }
        for modality in modalities { encoders[modality] = try trainEncoder(modality, prior: prior) }
        var model = LabelSupervisedModel(configuration: configuration.network, classCount: train.classCount, prior: prior,
                                         priorModality: priorModality, encoders: encoders, classNames: train.classNames)
        model.metrics = model.evaluate(on: validation)
        return model
    }
}
