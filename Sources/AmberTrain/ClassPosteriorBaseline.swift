import AmberCatalog
import AmberModel
import AmberTensor

// Shape legend: `N` items, `d` input features, `C` classes.

/// The plain supervised baseline of label-based cross-modal retrieval: per modality a linear
/// softmax classifier on standardised features (`p = softmax(((x − μ) ⊙ σ⁻¹) W + b)`), trained
/// full-batch by Adam on cross-entropy with an L2 penalty; items are matched by the cosine of
/// their class posteriors. Both modalities land in the same space (the classes) without ever
/// seeing a pair.
public struct ClassPosteriorBaseline: Sendable {
    public struct Configuration: Sendable, Equatable {
        public var epochs = 300
        public var learningRate: Float = 1e-2
        /// L2 penalty `λ ‖W‖²` added to the mean cross-entropy.
        public var penalty: Float = 1e-3
        public var seed: UInt64 = 1

        public init(epochs: Int = 300, learningRate: Float = 1e-2, penalty: Float = 1e-3, seed: UInt64 = 1) {
            self.epochs = epochs
            self.learningRate = learningRate
            self.penalty = penalty
            self.seed = seed
        }
    }

    public let mean: Tensor, scale: Tensor
    public let classifier: Linear

    /// Fits one modality's classifier on `items`.
    public static func fit(_ items: LabelledItems, classCount: Int, configuration: Configuration) -> ClassPosteriorBaseline {
        let (mean, scale) = LabelEncoder.standardization(of: items.features)
        var generator = RandomGenerator(seed: configuration.seed)
        let classifier = Linear(inputs: items.features.shape[1], outputs: classCount, name: "posterior", generator: &generator)
        let x = (items.features - mean) * scale, y = items.labelMatrix(classCount: classCount)
        let optimizer = AdamW(parameters: classifier.parameters, configuration: AdamW.Configuration(weightDecay: 0))
        for _ in 0..<configuration.epochs {
            optimizer.zeroGradients()
            let crossEntropy = -(classifier(x).logSoftmax(axis: 1) * y).sum(axis: 1).mean()
            let loss = crossEntropy + classifier.weight.tensor.squared().sum() * configuration.penalty
            loss.backward()
            optimizer.step(learningRate: configuration.learningRate)
        }
        return ClassPosteriorBaseline(mean: mean, scale: scale, classifier: classifier)
    }

    /// Class posteriors `[N, C]`, the embeddings matched by cosine.
    public func posteriors(_ features: Tensor) -> Tensor {
        withoutGradients { classifier((features - mean) * scale).softmax(axis: 1) }
    }
}
