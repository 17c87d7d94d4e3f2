import AmberTensor
#if canImport(Glibc)
import Glibc
#endif

// Shape legend: `T` texts, `I` images, `n` fragments per image (padded), `D` joint dimension,
// `d` the increment network's width.

/// GARE's pair-specific score (Xiao et al., NeurIPS 2025, "Contrastive Alignment with Semantic
/// Gap-Aware Corrections"), on Amber's fused text embeddings and projected image fragments (the
/// grid cells play GARE's frames):
/// ```
/// g_ij  = mean_f(F_jf) − t_i                                   the gap (real fragments only)
/// q_ij  = LN₁(g_ij) W_q,   K_j = LN₁(F_j) W_k,   V_j = LN₁(F_j) W_v        one head, shared LN₁
/// o_ij  = softmax_f(q_ij · K_jf / √d) V_j W_o
/// x_ij  = LN₂(o_ij),   z_ij = LN₃(x_ij + dropout(x_ij W₁ + b₁))
/// Δ_ij  = z_ij W_Δ + b_Δ                                        the increment (W_Δ, b_Δ start at 0)
/// v̄_ij  = Σ_f softmax_f(t_i · F̂_jf / τ) F̂_jf                    text-conditioned pooling, F̂ unit rows
/// s_ij  = cos(t_i + Δ_ij, v̄_ij)
/// ```
/// Differences from the released code, each deliberate: the gap's mean and the pooling skip
/// padding fragments (the code averages padded frames in); the pooling uses cosines with τ = 0.1
/// (the code's raw CLIP dot products with τ = 3 are on another scale); the increment head starts
/// at zero, so an untrained scorer is the text-conditioned pooling alone (the code's
/// initialisation gives ‖Δ‖ of the order of ‖t‖ at the first step); the network runs at width
/// `d` (default 256) between D-wide input and output, which keeps the `T·I` pairs affordable at
/// D = 1024. Because Δ and v̄ depend on the pair, the score cannot be indexed: it re-ranks a
/// shortlist (stage 2) and is trained over the batch's `B × B` pairs.
public struct GapAwareScorer: Sendable {
    public struct Configuration: Sendable, Codable, Equatable {
        /// `d`, the increment network's width.
        public var width = 256
        /// `τ` of the text-conditioned pooling (on cosines).
        public var poolingTemperature: Float = 0.1
        /// Dropout on the increment network's residual branch in training (GARE: 0.3).
        public var dropout: Float = 0.3

        public init(width: Int = 256, poolingTemperature: Float = 0.1, dropout: Float = 0.3) {
            self.width = width
            self.poolingTemperature = poolingTemperature
            self.dropout = dropout
        }

        /// What is wrong with this configuration, or nil.
        public var problem: String? {
            if !(1...8192).contains(width) { return "the GARE width (--gare-width) must be 1…8192, got \(width)" }
            if !(poolingTemperature.isFinite && poolingTemperature > 0) { return "the GARE pooling temperature must be positive, got \(poolingTemperature)" }
            if !(dropout >= 0 && dropout < 1) { return "the GARE dropout must be in [0, 1), got \(dropout)" }
            return nil
        }
    }

    public let configuration: Configuration
    public let normGain: Parameter, normBias: Parameter
    public let query: Linear, key: Linear, value: Linear, output: Linear
    public let attentionNormGain: Parameter, attentionNormBias: Parameter
    public let residual: Linear
    public let outputNormGain: Parameter, outputNormBias: Parameter
    public let head: Linear

    public init(dimension D: Int, configuration: Configuration, name: String = "gare", generator: inout RandomGenerator) {
        self.configuration = configuration
        let d = configuration.width
        normGain = Parameter(Tensor.ones([D]), name: name + ".norm.gain")
        normBias = Parameter(Tensor.zeros([D]), name: name + ".norm.bias")
        query = Linear(inputs: D, outputs: d, name: name + ".query", generator: &generator)
        key = Linear(inputs: D, outputs: d, name: name + ".key", generator: &generator)
        value = Linear(inputs: D, outputs: d, name: name + ".value", generator: &generator)
        output = Linear(inputs: d, outputs: d, name: name + ".output", generator: &generator)
        attentionNormGain = Parameter(Tensor.ones([d]), name: name + ".attention_norm.gain")
        attentionNormBias = Parameter(Tensor.zeros([d]), name: name + ".attention_norm.bias")
        residual = Linear(inputs: d, outputs: d, name: name + ".residual", generator: &generator)
        outputNormGain = Parameter(Tensor.ones([d]), name: name + ".output_norm.gain")
        outputNormBias = Parameter(Tensor.zeros([d]), name: name + ".output_norm.bias")
        head = Linear(inputs: d, outputs: D, name: name + ".head", generator: &generator)
        head.weight.assign(Tensor.zeros([d, D]))
    }

    public var parameters: [Parameter] {
        [normGain, normBias] + query.parameters + key.parameters + value.parameters + output.parameters
            + [attentionNormGain, attentionNormBias] + residual.parameters + [outputNormGain, outputNormBias] + head.parameters
    }

    /// What a forward pass gives: the scores and the increments in factored form,
    /// `Δ_ij = z_ij W_Δ + b_Δ` (the `T·I` increments are never formed: the score and the
    /// regularisers need only their products, see ``callAsFunction(texts:fragments:counts:)``).
    public struct Output {
        /// `s` `[T, I]`.
        public var scores: Tensor
        /// `z` `[T, I, d]`.
        public var latent: Tensor
        /// `W_Δ` `[d, D]` and `b_Δ` `[D]`, as used (graph leaves in training).
        public var headWeight: Tensor, headBias: Tensor
        /// `‖Δ_ij‖²` `[T, I]`.
        public var squaredNorms: Tensor

        /// `Δ` `[T, I, D]`, formed (tests, small inputs).
        public var increments: Tensor { Tensor.matmul(latent, headWeight) + headBias }
    }

    /// Scores of every text against every image and the increments (no dropout: inference,
    /// gradient checks).
    /// - Parameters:
    ///   - texts: `[T, D]` fused text embeddings.
    ///   - fragments: `[I, n, D]` projected image fragments; `counts[j]` real rows each (≥ 1).
    public func callAsFunction(texts: Tensor, fragments: Tensor, counts: [Int]) -> Output {
        forward(texts: texts, fragments: fragments, counts: counts) { $0 }
    }

    /// As ``callAsFunction(texts:fragments:counts:)``, with the residual branch's dropout drawn from `generator` (training).
    public func callAsFunction(texts: Tensor, fragments: Tensor, counts: [Int], dropoutUsing generator: inout RandomGenerator) -> Output {
        guard configuration.dropout > 0 else { return self(texts: texts, fragments: fragments, counts: counts) }
        var draw = generator
        let result = forward(texts: texts, fragments: fragments, counts: counts) { $0.dropout(rate: configuration.dropout, using: &draw) }
        generator = draw
        return result
    }

    /// The forward pass without any `[T, I, D]` tensor (at B = 128, D = 1024 each would be 64 MB,
    /// and dozens of passes over them cost more than the products):
    /// - `LN₁(g_ij) W_q = ((γ ⊙ m̃_j) W_q − (γ ⊙ t̃_i) W_q) / σ_ij + β W_q`, with `m̃`, `t̃` the
    ///   centred mean fragment and text and `σ_ij² = (‖m̃_j‖² + ‖t̃_i‖² − 2 m̃_j · t̃_i) / D + ε`,
    ///   since `g_ij − mean(g_ij) = m̃_j − t̃_i`;
    /// - `(t_i + Δ_ij) · v̄_ij = Σ_f w_ijf (t_i · F̂_jf + z_ij · (F̂_jf W_Δᵀ) + b_Δ · F̂_jf)`,
    ///   `‖v̄_ij‖² = w_ij G_j w_ijᵀ` with `G_j = F̂_j F̂_jᵀ`, and
    ///   `‖t_i + Δ_ij‖² = ‖t_i‖² + 2 (z_ij · t_i W_Δᵀ + b_Δ · t_i) + ‖Δ_ij‖²`,
    ///   `‖Δ_ij‖² = z_ij W_Δ W_Δᵀ z_ijᵀ + 2 z_ij · W_Δ b_Δ + ‖b_Δ‖²`.
    private func forward(texts: Tensor, fragments: Tensor, counts: [Int], branchDropout: (Tensor) -> Tensor) -> Output {
        precondition(texts.rank == 2 && fragments.rank == 3 && texts.shape[1] == fragments.shape[2] && counts.count == fragments.shape[0]
                     && counts.allSatisfy { $0 >= 1 && $0 <= fragments.shape[1] },
                     "GapAwareScorer: texts \(texts.shape), fragments \(fragments.shape), counts \(counts)")
        let T = texts.shape[0], I = fragments.shape[0], n = fragments.shape[1], D = texts.shape[1], d = configuration.width
        let mask = Tensor.paddingBias(counts: counts, length: n)                                  // [I, n]
        let real = Tensor(shape: [I, n, 1], scalars: mask.scalars.map { $0 == 0 ? 1 : 0 })
        let inverseCounts = Tensor(shape: [I, 1], scalars: counts.map { 1 / Float($0) })
        let means = (fragments * real).sum(axis: 1) * inverseCounts                               // [I, D]
        // ψ's query: the gap's layer norm and projection, pair by pair from per-item products.
        let gain = normGain.tensor, bias = normBias.tensor
        let centredMeans = means - means.mean(axis: 1, keepingDimension: true)                    // [I, D]
        let centredTexts = texts - texts.mean(axis: 1, keepingDimension: true)                    // [T, D]
        let cross = Tensor.matmul(centredTexts, centredMeans, transposeB: true)                   // [T, I]
        let variance = (centredMeans.squared().sum(axis: 1).reshaped([1, I]) + centredTexts.squared().sum(axis: 1).reshaped([T, 1])
                        - cross * 2) * (1 / Float(D)) + 1e-5
        let deviation = variance.clamped(lower: 1e-5).sqrt().reshaped([T, I, 1])
        let queryWeight = query.weight.tensor
        let imageSide = Tensor.matmul(centredMeans * gain, queryWeight)                           // [I, d]
        let textSide = Tensor.matmul(centredTexts * gain, queryWeight)                            // [T, d]
        let queryOffset = Tensor.matmul(bias.reshaped([1, D]), queryWeight).reshaped([d]) + query.bias.tensor
        let queries = (imageSide.reshaped([1, I, d]) - textSide.reshaped([T, 1, d])) / deviation + queryOffset   // [T, I, d]
        // Cross-attention over the image's fragments, then the residual block.
        let context = fragments.layerNormalized(gain: gain, bias: bias)                           // [I, n, D]
        let keys = key(context), values = value(context)                                          // [I, n, d]
        let logits = Tensor.matmul(queries.transposed(0, 1), keys, transposeB: true) * (1 / Float(d).squareRoot())
            + mask.reshaped([I, 1, n])                                                            // [I, T, n]
        let attended = output(Tensor.matmul(logits.softmax(axis: 2), values).transposed(0, 1))    // [T, I, d]
        let x = attended.layerNormalized(gain: attentionNormGain.tensor, bias: attentionNormBias.tensor)
        let z = (x + branchDropout(residual(x))).layerNormalized(gain: outputNormGain.tensor, bias: outputNormBias.tensor)   // [T, I, d]
        let W = head.weight.tensor, b = head.bias.tensor
        // Text-conditioned pooling weights.
        let unit = fragments.l2Normalized(axis: -1)                                               // [I, n, D]
        let cosines = Tensor.matmul(texts, unit.reshaped([I * n, D]), transposeB: true).reshaped([T, I, n])
        let weights = (cosines * (1 / configuration.poolingTemperature) + mask.reshaped([1, I, n])).softmax(axis: 2)   // [T, I, n]
        // (t + Δ) · v̄ through the fragments' images under the head.
        let projected = Tensor.matmul(unit, W, transposeB: true)                                  // [I, n, d]
        let latentDots = Tensor.matmul(z.transposed(0, 1), projected, transposeB: true).transposed(0, 1)   // [T, I, n]
        let biasDots = Tensor.matmul(unit.reshaped([I * n, D]), b.reshaped([D, 1])).reshaped([1, I, n])
        let numerator = (weights * (cosines + latentDots + biasDots)).sum(axis: 2)                // [T, I]
        // ‖v̄‖² from the fragments' Gram matrices.
        let gram = Tensor.matmul(unit, unit, transposeB: true)                                    // [I, n, n]
        let byImage = weights.transposed(0, 1)                                                    // [I, T, n]
        let pooledNorms = (Tensor.matmul(byImage, gram) * byImage).sum(axis: 2).transposed()      // [T, I]
        // ‖Δ‖² and ‖t + Δ‖².
        let headBias = Tensor.matmul(W, b.reshaped([D, 1])).reshaped([d])                         // W_Δ b_Δ
        let squaredNorms = ((Tensor.matmul(z, Tensor.matmul(W, W, transposeB: true)) + headBias * 2) * z).sum(axis: 2)
            + b.squared().sum()                                                                   // [T, I]
        let textDots = (z * Tensor.matmul(texts, W, transposeB: true).reshaped([T, 1, d])).sum(axis: 2)
            + Tensor.matmul(texts, b.reshaped([D, 1])).reshaped([T, 1])                           // t · Δ
        let correctedNorms = texts.squared().sum(axis: 1).reshaped([T, 1]) + textDots * 2 + squaredNorms
        let scores = numerator / (correctedNorms.clamped(lower: 1e-24).sqrt() * pooledNorms.clamped(lower: 1e-24).sqrt())
        return Output(scores: scores, latent: z, headWeight: W, headBias: b, squaredNorms: squaredNorms.clamped(lower: 0))
    }

    /// Inference scores `[T, I]` (no dropout, no gradients).
    public func scores(texts: Tensor, fragments: Tensor, counts: [Int]) -> Tensor {
        withoutGradients { self(texts: texts, fragments: fragments, counts: counts).scores }
    }
}

/// GARE's training objective on the batch's `B × B` scores: a symmetric InfoNCE (pairs of the
/// same image are not negatives of each other) and the regularisers on the increments.
/// ```
/// L = ½ [CE_rows(s/τ) + CE_cols(s/τ)]
///   + w_vib · mean_j,k [½(σ_jk² + μ_jk² − 1) − log σ_jk]      μ, σ of Δ_·jk over the batch's texts
///   + w_dir · mean_i log mean_j,j' exp(−2 (1 − u_ij · u_ij'))  u = Δ / ‖Δ‖
///   + w_norm · (−mean_i var_j ‖Δ_ij‖, 0 once below −bound)
/// ```
public struct GapAwareLoss: Sendable, Codable, Equatable {
    public var temperature: Float = 0.05
    public var informationWeight: Float = 1e-4
    public var directionWeight: Float = 0.01
    public var normWeight: Float = 0.01
    public var normBound: Float = 0.5

    public init(temperature: Float = 0.05, informationWeight: Float = 1e-4, directionWeight: Float = 0.01, normWeight: Float = 0.01, normBound: Float = 0.5) {
        self.temperature = temperature
        self.informationWeight = informationWeight
        self.directionWeight = directionWeight
        self.normWeight = normWeight
        self.normBound = normBound
    }

    /// What is wrong with these settings, or nil.
    public var problem: String? {
        if !(temperature.isFinite && temperature > 0) { return "the GARE temperature must be positive, got \(temperature)" }
        for (name, weight) in [("information", informationWeight), ("direction", directionWeight), ("norm", normWeight), ("norm bound", normBound)]
        where !(weight.isFinite && weight >= 0) {
            return "the GARE \(name) weight must be finite and ≥ 0, got \(weight)"
        }
        return nil
    }

    /// The symmetric InfoNCE of `scores` `[B, B]` (text `b` with image `b`), positives on the
    /// diagonal; off-diagonal pairs whose `imageIDs` agree are left out of both softmaxes.
    public func contrastive(scores: Tensor, imageIDs: [Int]) -> Tensor {
        let B = scores.shape[0]
        precondition(scores.shape == [B, B] && imageIDs.count == B, "GapAwareLoss: scores \(scores.shape), \(imageIDs.count) image ids")
        var bias = [Float](repeating: 0, count: B * B), diagonal = [Float](repeating: 0, count: B * B)
        for i in 0..<B {
            diagonal[i * B + i] = 1
            for j in 0..<B where j != i && imageIDs[i] == imageIDs[j] { bias[i * B + j] = -1e9 }
        }
        let logits = scores * (1 / temperature) + Tensor(shape: [B, B], scalars: bias)
        let eye = Tensor(shape: [B, B], scalars: diagonal)
        let rows = -(logits.logSoftmax(axis: 1) * eye).sum() / Float(B)
        let columns = -(logits.logSoftmax(axis: 0) * eye).sum() / Float(B)
        return (rows + columns) * 0.5
    }

    /// The relaxed information bottleneck: per image and dimension, a Gaussian fitted to the
    /// batch's increments for it, against N(0, 1). Needs at least two texts.
    public func information(_ increments: Tensor) -> Tensor {
        let T = increments.shape[0]
        precondition(increments.rank == 3 && T >= 2, "GapAwareLoss.information: increments \(increments.shape)")
        let mean = increments.mean(axis: 0)                                                       // [I, D]
        return information(mean: mean, variance: (increments - mean).squared().sum(axis: 0) * (1 / Float(T - 1)))
    }

    /// ``information(_:)`` of factored increments: `μ_j = z̄_j W + b`, `σ_j² = var_i((z_ij − z̄_j) W)`.
    public func information(_ output: GapAwareScorer.Output) -> Tensor {
        let T = output.latent.shape[0]
        precondition(T >= 2, "GapAwareLoss.information: needs two texts or more")
        let meanLatent = output.latent.mean(axis: 0)                                              // [I, d]
        let centred = Tensor.matmul(output.latent - meanLatent, output.headWeight)                // [T, I, D]
        return information(mean: Tensor.matmul(meanLatent, output.headWeight) + output.headBias,
                           variance: centred.squared().sum(axis: 0) * (1 / Float(T - 1)))
    }

    private func information(mean: Tensor, variance: Tensor) -> Tensor {
        let deviation = (variance + 1e-12).sqrt() + 1e-6
        return ((deviation.squared() + mean.squared() - 1) * 0.5 - deviation.log()).mean()
    }

    /// Directional diversity: for each text, the log mean of `exp(−2 (1 − cos))` over pairs of
    /// its increments' directions (lower when they spread out).
    public func direction(_ increments: Tensor) -> Tensor {
        let unit = increments.l2Normalized(axis: -1, epsilon: 1e-8)
        return direction(cosines: Tensor.matmul(unit, unit, transposeB: true))                    // [T, I, I]
    }

    /// ``direction(_:)`` of factored increments: `Δ_ij · Δ_ij' = z_ij W Wᵀ z_ij'ᵀ + (z_ij + z_ij') · W b + ‖b‖²`.
    public func direction(_ output: GapAwareScorer.Output) -> Tensor {
        let (z, W, b) = (output.latent, output.headWeight, output.headBias)
        let T = z.shape[0], I = z.shape[1], D = W.shape[1]
        let along = (z * Tensor.matmul(W, b.reshaped([D, 1])).reshaped([W.shape[0]])).sum(axis: 2)   // [T, I]
        let dots = Tensor.matmul(Tensor.matmul(z, Tensor.matmul(W, W, transposeB: true)), z, transposeB: true)
            + along.reshaped([T, I, 1]) + along.reshaped([T, 1, I]) + b.squared().sum()          // [T, I, I]
        let norms = (output.squaredNorms + 1e-16).sqrt()
        return direction(cosines: dots / (norms.reshaped([T, I, 1]) * norms.reshaped([T, 1, I])))
    }

    private func direction(cosines: Tensor) -> Tensor {
        let T = cosines.shape[0], I = cosines.shape[1]
        return ((cosines - 1) * 2).exp().reshaped([T, I * I]).mean(axis: 1).log().mean()
    }

    /// Norm spread: minus the mean over texts of the (unbiased) variance of ‖Δ_ij‖ over images;
    /// zero (no gradient) once it is below −`normBound`. Needs at least two images.
    public func normSpread(_ increments: Tensor) -> Tensor {
        normSpread(squaredNorms: increments.squared().sum(axis: 2))
    }

    /// ``normSpread(_:)`` of factored increments.
    public func normSpread(_ output: GapAwareScorer.Output) -> Tensor {
        normSpread(squaredNorms: output.squaredNorms)
    }

    private func normSpread(squaredNorms: Tensor) -> Tensor {
        let I = squaredNorms.shape[1]
        precondition(squaredNorms.rank == 2 && I >= 2, "GapAwareLoss.normSpread: needs two images or more")
        let norms = (squaredNorms + 1e-12).sqrt()                                                 // [T, I]
        let variance = (norms - norms.mean(axis: 1, keepingDimension: true)).squared().sum(axis: 1) * (1 / Float(I - 1))
        let loss = -variance.mean()
        return loss.scalar < -normBound ? Tensor(0) : loss
    }

    /// Everything: the contrast and the weighted regularisers, with each term for the log.
    public func callAsFunction(_ output: GapAwareScorer.Output, imageIDs: [Int]) -> (total: Tensor, terms: [(String, Tensor)]) {
        var terms: [(String, Tensor)] = [("contrast", contrastive(scores: output.scores, imageIDs: imageIDs))]
        if informationWeight > 0 { terms.append(("information", information(output) * informationWeight)) }
        if directionWeight > 0 { terms.append(("direction", direction(output) * directionWeight)) }
        if normWeight > 0 { terms.append(("norm", normSpread(output) * normWeight)) }
        return (terms.dropFirst().reduce(terms[0].1) { $0 + $1.1 }, terms)
    }
}
