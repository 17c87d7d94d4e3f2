import AmberTensor

#if canImport(Glibc)
import Glibc
#endif

// Shape legend: `B` pairs, `K` prototypes, `D` embedding dimension.

/// Sinkhorn–Knopp equipartition (Cuturi 2013; as SwAV, Caron et al. 2020): turns scores
/// `[B, K]` into soft codes whose rows sum to 1 and whose columns each hold `B / K` in total,
/// so no prototype takes every item. Computed in Double, without gradient.
public enum SinkhornKnopp {
    public static func codes(_ scores: Tensor, epsilon: Double = 0.1, iterations: Int = 3) -> Tensor {
        precondition(scores.rank == 2, "SinkhornKnopp: scores must be [B, K], got \(scores.shape)")
        let B = scores.shape[0], K = scores.shape[1]
        let values = scores.scalars.map(Double.init)
        let peak = values.max() ?? 0
        var q = values.map { exp(($0 - peak) / epsilon) }               // [B, K]
        let total = q.reduce(0, +)
        for i in 0..<q.count { q[i] /= total }
        for _ in 0..<iterations {
            // Each prototype (column) gets mass 1/K.
            for k in 0..<K {
                var column = 0.0
                for b in 0..<B { column += q[b * K + k] }
                if column > 0 { for b in 0..<B { q[b * K + k] /= column * Double(K) } }
            }
            // Each item (row) gets mass 1/B.
            for b in 0..<B {
                var row = 0.0
                for k in 0..<K { row += q[b * K + k] }
                if row > 0 { for k in 0..<K { q[b * K + k] /= row * Double(B) } }
            }
        }
        return Tensor(shape: [B, K], scalars: q.map { Float($0 * Double(B)) })
    }
}

/// Clustering-prototype loss (L_proto of the matching objective; after SwAV and AAHR): `K` learnable unit
/// prototypes `C`; each modality predicts the other's Sinkhorn codes:
/// ```
/// p_x = softmax(f_x Cᵀ / τ_p),   q_x = Sinkhorn(f_x Cᵀ)
/// L = −½ · 1/B Σ_b [ Σ_k q_t[b,k] log p_i[b,k] + Σ_k q_i[b,k] log p_t[b,k] ]
/// ```
public struct PrototypeLoss: Sendable {
    public let prototypes: Parameter
    /// `τ_p`. Default 0.1.
    public var temperature: Float = 0.1
    /// Sinkhorn `ε`. Default 0.1.
    public var epsilon: Double = 0.1
    public var iterations = 3

    public init(count: Int, dimension: Int, generator: inout RandomGenerator) {
        prototypes = Parameter(Tensor.randomNormal([count, dimension], using: &generator).l2Normalized(axis: -1), name: "prototypes")
    }

    /// The loss and each modality's hard assignments (argmax of its codes).
    /// - Parameters: `images`, `texts`: `[B, D]` unit embeddings of paired items.
    public func callAsFunction(images: Tensor, texts: Tensor) -> (loss: Tensor, imagePrototypes: [Int], textPrototypes: [Int]) {
        let c = prototypes.tensor.l2Normalized(axis: -1)
        let imageScores = Tensor.matmul(images, c, transposeB: true)          // [B, K]
        let textScores = Tensor.matmul(texts, c, transposeB: true)
        let imageCodes = SinkhornKnopp.codes(imageScores.detached, epsilon: epsilon, iterations: iterations)
        let textCodes = SinkhornKnopp.codes(textScores.detached, epsilon: epsilon, iterations: iterations)
        let imageLog = (imageScores * (1 / temperature)).logSoftmax(axis: 1)
        let textLog = (textScores * (1 / temperature)).logSoftmax(axis: 1)
        let B = Float(images.shape[0])
        let loss = ((textCodes * imageLog).sum() + (imageCodes * textLog).sum()) * (-0.5 / B)
        return (loss, imageCodes.argmax(axis: 1), textCodes.argmax(axis: 1))
    }

    /// Hard prototype of each unit embedding `[N, D]` (nearest prototype by cosine).
    public func assign(_ embeddings: Tensor) -> [Int] {
        withoutGradients { Tensor.matmul(embeddings, prototypes.value.l2Normalized(axis: -1), transposeB: true).argmax(axis: 1) }
    }
}
