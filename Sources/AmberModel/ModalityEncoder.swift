import AmberCatalog
import AmberTensor

// Shape legend: `B` items, `n` fragments (padded to the longest in the batch), `Dg` global
// input dimension, `Dl` fragment input dimension, `D` joint dimension.

/// A batch of items of one modality: global vectors and padded fragments.
public struct EncoderInput: Sendable {
    /// `[B, Dg]`.
    public var global: Tensor
    /// `[B, n, Dl]`; rows past an item's `fragmentCounts` are padding.
    public var fragments: Tensor
    /// Real fragments per item (each ≥ 2 for max-2 pooling).
    public var fragmentCounts: [Int]

    public init(global: Tensor, fragments: Tensor, fragmentCounts: [Int]) {
        precondition(global.rank == 2 && fragments.rank == 3 && global.shape[0] == fragments.shape[0]
                     && fragmentCounts.count == global.shape[0], "EncoderInput: global \(global.shape), fragments \(fragments.shape), \(fragmentCounts.count) counts")
        precondition(fragmentCounts.allSatisfy { $0 >= 2 && $0 <= fragments.shape[1] },
                     "EncoderInput: every item needs 2…\(fragments.shape[1]) fragments, got \(fragmentCounts)")
        self.global = global
        self.fragments = fragments
        self.fragmentCounts = fragmentCounts
    }

    public var count: Int { global.shape[0] }

    /// The input of a batch of items given by their features (fragments zero-padded to the longest).
    public init(_ features: [ItemFeatures]) {
        let Dg = features.first?.global.count ?? 0, Dl = features.first?.localDimension ?? 0
        let fragments = Tensor.padded(counts: features.map(\.localCount), rowWidth: Dl, minimumLength: 1) { item, row in
            for (j, value) in features[item].local.enumerated() { row[j] = value }
        }
        self.init(global: Tensor(shape: [features.count, Dg], scalars: features.flatMap(\.global)),
                  fragments: fragments, fragmentCounts: features.map(\.localCount))
    }
}

/// What an encoder produces for a batch: the pooled local vector `l`, the projected global
/// vector `h`, the projected fragments, and the fused embedding `f`.
public struct EncodedBatch {
    /// `[B, D]`.
    public var local: Tensor
    /// `[B, D]`.
    public var global: Tensor
    /// `[B, n, D]` projected fragments (padding rows included).
    public var fragments: Tensor
    /// `[B, D]`, unit length: the vector used for scoring.
    public var fused: Tensor
}

/// One modality's encoder of the matching model (after AAHR, Chen et al. 2025):
/// ```
/// F = L W_l + b_l                                   fragments, dropout 0.2 on fragments in training
/// l = 0.8 · max2(F) + 0.2 · Σ_i softmax_i(τ · cos(F_i, h)) F_i
/// h = g W_g + b_g
/// z = σ([l; h] W_z + b_z),   f = norm(z ⊙ norm(l) + (1 − z) ⊙ norm(h))
/// ```
/// `max2` averages the two largest values of each dimension over the item's fragments.
public struct ModalityEncoder: Sendable {
    /// What the encoder uses; `.fused` is the model, the others are ablations.
    public enum Fusion: String, Sendable, Codable {
        case fused, localOnly, globalOnly
    }

    public struct Configuration: Sendable, Codable, Equatable {
        public var jointDimension = 1024
        /// Probability of dropping each fragment in training (at least two stay).
        public var fragmentDropout: Float = 0.2
        /// Weight of max-2 pooling against attention pooling.
        public var maxPoolWeight: Float = 0.8
        /// `τ`, scale of the cosines in the attention softmax.
        public var attentionTemperature: Float = 1
        public var fusion: Fusion = .fused
        /// Feed the gate `[norm(l); norm(h)]` instead of `[l; h]`: a scale-free gate.
        public var normalizedGateInput = false

        public init() {}

        /// Joint dimensions a model may have.
        public static let jointDimensions = 1...8192

        /// What is wrong with this configuration, or nil: what a CLI option or a stored model's
        /// metadata must satisfy before a model is built from it.
        public var problem: String? {
            if !Self.jointDimensions.contains(jointDimension) {
                return "the joint dimension must be 1…8192, got \(jointDimension)"
            }
            if !(fragmentDropout >= 0 && fragmentDropout < 1) { return "fragment dropout must be in [0, 1), got \(fragmentDropout)" }
            if !(maxPoolWeight >= 0 && maxPoolWeight <= 1) { return "the max-pool weight must be in [0, 1], got \(maxPoolWeight)" }
            if !(attentionTemperature > 0 && attentionTemperature.isFinite) {
                return "the attention temperature must be positive and finite, got \(attentionTemperature)"
            }
            return nil
        }
    }

    public let configuration: Configuration
    public let fragmentProjection: Linear
    public let globalProjection: Linear
    public let gate: Linear

    public init(name: String, globalDimension: Int, fragmentDimension: Int, configuration: Configuration, generator: inout RandomGenerator) {
        self.configuration = configuration
        let D = configuration.jointDimension
        fragmentProjection = Linear(inputs: fragmentDimension, outputs: D, name: name + ".fragment", generator: &generator)
        globalProjection = Linear(inputs: globalDimension, outputs: D, name: name + ".global", generator: &generator)
        gate = Linear(inputs: 2 * D, outputs: D, name: name + ".gate", generator: &generator)
    }

    public var parameters: [Parameter] {
        fragmentProjection.parameters + globalProjection.parameters + gate.parameters
    }

    /// Encodes a batch for inference (no fragment dropout).
    public func callAsFunction(_ input: EncoderInput) -> EncodedBatch {
        encode(input, valid: validity(input, dropout: nil))
    }

    /// Encodes a batch for training: each fragment is dropped with probability
    /// `fragmentDropout` (drawn from `generator`), keeping at least two per item.
    public func callAsFunction(_ input: EncoderInput, dropoutUsing generator: inout RandomGenerator) -> EncodedBatch {
        var draw = generator
        let valid = validity(input, dropout: { draw.nextUniform() < configuration.fragmentDropout })
        generator = draw
        return encode(input, valid: valid)
    }

    /// Which fragments take part: real ones, minus dropped ones.
    private func validity(_ input: EncoderInput, dropout: (() -> Bool)?) -> [Bool] {
        let B = input.count, n = input.fragments.shape[1]
        var valid = [Bool](repeating: false, count: B * n)
        for b in 0..<B {
            var kept = input.fragmentCounts[b]
            for i in 0..<input.fragmentCounts[b] {
                if let dropout, kept > 2, dropout() {
                    kept -= 1
                } else {
                    valid[b * n + i] = true
                }
            }
        }
        return valid
    }

    private func encode(_ input: EncoderInput, valid: [Bool]) -> EncodedBatch {
        let B = input.count, n = input.fragments.shape[1]
        let maskBias = Tensor(shape: [B, n, 1], scalars: valid.map { $0 ? 0 : -1e9 })

        let fragments = fragmentProjection(input.fragments)                          // [B, n, D]
        let global = globalProjection(input.global)                                   // [B, D]
        let D = configuration.jointDimension
        // Max-2 pooling over valid fragments.
        let maxTwo = (fragments + maskBias).topK(2, axis: 1).values.mean(axis: 1)      // [B, D]
        // Attention pooling with the projected global vector as the query.
        let cosines = Tensor.matmul(fragments.l2Normalized(axis: -1), global.l2Normalized(axis: -1).reshaped([B, D, 1]))  // [B, n, 1]
        let weights = (cosines * configuration.attentionTemperature + maskBias).softmax(axis: 1)
        let attended = Tensor.matmul(weights, fragments, transposeA: true).reshaped([B, D])   // [B, D]
        let local = maxTwo * configuration.maxPoolWeight + attended * (1 - configuration.maxPoolWeight)

        let fused: Tensor
        switch configuration.fusion {
        case .fused:
            let unitLocal = local.l2Normalized(axis: -1), unitGlobal = global.l2Normalized(axis: -1)
            let gateInput = configuration.normalizedGateInput ? [unitLocal, unitGlobal] : [local, global]
            let z = gate(Tensor.concatenate(gateInput, axis: 1)).sigmoid()
            fused = (z * unitLocal + (1 - z) * unitGlobal).l2Normalized(axis: -1)
        case .localOnly:
            fused = local.l2Normalized(axis: -1)
        case .globalOnly:
            fused = global.l2Normalized(axis: -1)
        }
        return EncodedBatch(local: local, global: global, fragments: fragments, fused: fused)
    }
}
