import AmberCatalog
import AmberTensor

// Shape legend: `B` pairs, `K` negative types (relation, attribute, object, action), `D` joint
// dimension. `images`, `texts` `[B, D]` and `negatives` `[B, K, D]` are unit embeddings; `valid`
// has `B × K` flags (a type that could not be made for a caption is not valid; its row of
// `negatives` is ignored, whatever it holds).

/// The three losses CE-CLIP (Zhang, Awal, Agrawal, CVPR 2024) trains with captions changed in one
/// relation, attribute, object or action (``CaptionNegatives``), written from the paper's
/// definitions:
/// ```
/// L_hn  = 1/B Σ_b −log [ e^{s(I_b,T_b)/τ} / (Σ_j e^{s(I_b,T_j)/τ} + Σ_k valid e^{s(I_b,T_b^k)/τ}) ]
/// L_cmr = 1/#valid Σ_{b,k valid} max(0, θ_k + s(I_b,T_b^k) − s(I_b,T_b))
/// L_imc = 1/B Σ_b −log [ e^{s(I_b,T_b)/τ} / (e^{s(I_b,T_b)/τ} + Σ_k valid e^{s(T_b,T_b^k)/τ}) ]
/// ```
/// `L_hn` is the image→text contrast with each caption's negatives added to its image's
/// denominator; `L_cmr` asks each image to prefer its caption to the caption's type-k negative by a
/// margin θ_k that adapts: the batch's mean gap `s(I,T) − s(I,T^k)` over valid pairs, clamped to
/// [0, 10] and held constant within the step (``thresholds(images:texts:negatives:valid:)``);
/// `L_imc` pushes a caption away from its own negatives in the text space, with the image–caption
/// pair as the positive (the released code's `get_imc_loss` puts the target at column 0 of the
/// full matrix, which is the first pair's positive for every row; this follows the paper).
public struct HardNegativeCaptionLoss: Sendable {
    /// τ of the two contrastive terms.
    public var temperature: Float = 0.07

    public init(temperature: Float = 0.07) {
        self.temperature = temperature
    }

    /// `s(I_b, T_b^k)` `[B, K]` (every row of `negatives`, valid or not).
    static func negativeScores(images: Tensor, negatives: Tensor) -> Tensor {
        let B = images.shape[0], D = images.shape[1]
        return Tensor.matmul(negatives, images.reshaped([B, D, 1])).reshaped([B, negatives.shape[1]])
    }

    static func check(images: Tensor, texts: Tensor, negatives: Tensor, valid: [Bool]) {
        precondition(images.rank == 2 && texts.shape == images.shape && negatives.rank == 3 && negatives.shape[0] == images.shape[0]
                     && negatives.shape[2] == images.shape[1] && valid.count == negatives.shape[0] * negatives.shape[1],
                     "HardNegativeCaptionLoss: images \(images.shape), texts \(texts.shape), negatives \(negatives.shape), \(valid.count) flags")
    }

    /// `L_hn`.
    public func contrastive(images: Tensor, texts: Tensor, negatives: Tensor, valid: [Bool]) -> Tensor {
        Self.check(images: images, texts: texts, negatives: negatives, valid: valid)
        let B = images.shape[0], K = negatives.shape[1]
        let logits = Tensor.concatenate([Tensor.matmul(images, texts, transposeB: true), Self.negativeScores(images: images, negatives: negatives)],
                                        axis: 1) * (1 / temperature)                                   // [B, B + K]
        var hidden = [Bool](repeating: false, count: B * (B + K)), target = [Float](repeating: 0, count: B * (B + K))
        for b in 0..<B {
            target[b * (B + K) + b] = 1
            for k in 0..<K where !valid[b * K + k] { hidden[b * (B + K) + B + k] = true }
        }
        let logProbabilities = logits.maskedFill(hidden, with: -1e9).logSoftmax(axis: 1)
        return (logProbabilities * Tensor(shape: [B, B + K], scalars: target)).sum() * (-1 / Float(B))
    }

    /// The adaptive margins θ_k of this step: the mean over valid pairs of `s(I,T) − s(I,T^k)`,
    /// clamped to [0, 10]; 0 for a type without a valid pair. Constants (no gradient).
    public static func thresholds(images: Tensor, texts: Tensor, negatives: Tensor, valid: [Bool]) -> [Float] {
        check(images: images, texts: texts, negatives: negatives, valid: valid)
        let B = images.shape[0], K = negatives.shape[1]
        let (positive, negative) = withoutGradients { ((images * texts).sum(axis: 1).scalars, negativeScores(images: images, negatives: negatives).scalars) }
        return (0..<K).map { k in
            var total = 0.0, count = 0
            for b in 0..<B where valid[b * K + k] {
                total += Double(positive[b] - negative[b * K + k])
                count += 1
            }
            return count == 0 ? 0 : Float(min(max(total / Double(count), 0), 10))
        }
    }

    /// `L_cmr` with margins `thresholds` (one per type; see ``thresholds(images:texts:negatives:valid:)``).
    /// Zero when no negative is valid.
    public func rank(images: Tensor, texts: Tensor, negatives: Tensor, valid: [Bool], thresholds: [Float]) -> Tensor {
        Self.check(images: images, texts: texts, negatives: negatives, valid: valid)
        let B = images.shape[0], K = negatives.shape[1]
        precondition(thresholds.count == K, "HardNegativeCaptionLoss.rank: \(thresholds.count) thresholds for \(K) types")
        let count = valid.filter { $0 }.count
        guard count > 0 else { return (images * 0).sum() }
        let positive = (images * texts).sum(axis: 1).reshaped([B, 1])                                  // [B, 1]
        let margins = Tensor(shape: [1, K], scalars: thresholds)
        let violations = (margins + Self.negativeScores(images: images, negatives: negatives) - positive).relu()   // [B, K]
        return (violations * Tensor(shape: [B, K], scalars: valid.map { $0 ? 1 : 0 })).sum() * (1 / Float(count))
    }

    /// `L_imc`.
    public func intraModal(images: Tensor, texts: Tensor, negatives: Tensor, valid: [Bool]) -> Tensor {
        Self.check(images: images, texts: texts, negatives: negatives, valid: valid)
        let B = images.shape[0], D = images.shape[1], K = negatives.shape[1]
        let positive = (images * texts).sum(axis: 1).reshaped([B, 1])                                  // [B, 1]
        let textToNegatives = Tensor.matmul(negatives, texts.reshaped([B, D, 1])).reshaped([B, K])    // s(T_b, T_b^k)
        let logits = Tensor.concatenate([positive, textToNegatives], axis: 1) * (1 / temperature)      // [B, 1 + K]
        var hidden = [Bool](repeating: false, count: B * (1 + K)), target = [Float](repeating: 0, count: B * (1 + K))
        for b in 0..<B {
            target[b * (1 + K)] = 1
            for k in 0..<K where !valid[b * K + k] { hidden[b * (1 + K) + 1 + k] = true }
        }
        let logProbabilities = logits.maskedFill(hidden, with: -1e9).logSoftmax(axis: 1)
        return (logProbabilities * Tensor(shape: [B, 1 + K], scalars: target)).sum() * (-1 / Float(B))
    }
}

/// Typed negative captions of a training set's texts, as features: for each text, one row per
/// type (``NegativeType``'s order in the caller) giving the index of its negative in `features`,
/// or −1 when that type could not be made for the text.
public struct CaptionNegativeSet: Sendable {
    /// Types per text (the width of each row).
    public let types: Int
    /// `[textCount][types]` indices into `features`, −1 for none.
    public let rows: [[Int]]
    public let features: [ItemFeatures]

    /// Nil when a row has another width or an index is out of range.
    public init?(rows: [[Int]], features: [ItemFeatures], types: Int) {
        guard types >= 1, rows.allSatisfy({ $0.count == types && $0.allSatisfy { $0 >= -1 && $0 < features.count } }) else { return nil }
        self.types = types
        self.rows = rows
        self.features = features
    }
}
