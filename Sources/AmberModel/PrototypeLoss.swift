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

    /// Places the prototypes on `min(K, N)` distinct rows of `candidates` `[N, D]` (unit
    /// embeddings) by k-means++ seeding (Arthur & Vassilvitskii 2007): the first uniformly, each
    /// next with probability proportional to its squared distance to the nearest one chosen.
    /// Prototypes beyond `N` keep their values.
    ///
    /// Why: random unit prototypes in a wide joint space (D = 1024) are nearly orthogonal to
    /// every embedding, so all scores sit near 0, the Sinkhorn codes and the predictions are
    /// uniform, the loss is ln K and its gradient vanishes — the loss never starts. Prototypes
    /// on the data start it with sharp codes (SwAV works in 128 dimensions, where this matters less).
    public func seed(from candidates: Tensor, generator: inout RandomGenerator) {
        precondition(candidates.rank == 2 && candidates.shape[1] == prototypes.shape[1],
                     "PrototypeLoss.seed: candidates must be [N, \(prototypes.shape[1])], got \(candidates.shape)")
        let N = candidates.shape[0], D = candidates.shape[1], K = prototypes.shape[0]
        guard N > 0 else { return }
        let x = candidates.l2Normalized(axis: -1).scalars
        var nearest = [Double](repeating: .infinity, count: N)
        var chosen: [Int] = []
        var next = generator.nextInt(below: N)
        while chosen.count < min(K, N) {
            chosen.append(next)
            var total = 0.0
            for i in 0..<N {
                var dot = 0.0
                for j in 0..<D { dot += Double(x[i * D + j]) * Double(x[next * D + j]) }
                nearest[i] = min(nearest[i], max(0, 2 - 2 * dot))        // ‖a − b‖² of unit vectors
                total += nearest[i]
            }
            guard chosen.count < min(K, N) else { break }
            if total <= 0 {
                // Every candidate coincides with a chosen one: take the first not chosen yet.
                next = (0..<N).first { !chosen.contains($0) } ?? 0
                continue
            }
            var target = Double(generator.nextUniform()) * total
            next = (0..<N).last { !chosen.contains($0) && nearest[$0] > 0 } ?? 0
            for i in 0..<N where nearest[i] > 0 && !chosen.contains(i) {
                target -= nearest[i]
                if target <= 0 { next = i; break }
            }
        }
        var values = prototypes.value.scalars
        for (k, row) in chosen.enumerated() {
            for j in 0..<D { values[k * D + j] = x[row * D + j] }
        }
        prototypes.assign(Tensor(shape: [K, D], scalars: values))
    }

    /// Moves each prototype that has members towards them: `c_k ← normalise(m · ĉ_k + (1 − m) · mean of
    /// the unit embeddings assigned to k)`, with ĉ_k the unit prototype; prototypes without members stay.
    /// The alternative to learning them by gradient: under Adam every prototype coordinate moves by
    /// about the learning rate each step whatever the size of its gradient, and the prototype loss's
    /// gradients are small and noisy, so learned prototypes drift off the data and the codes go
    /// back to uniform (measured on Flickr8k: the loss returned to ln K within 300 steps of seeding).
    /// - Parameters: `embeddings` `[N, D]`, `assignments` one prototype per row (out-of-range ones are ignored).
    public func follow(_ embeddings: Tensor, assignments: [Int], momentum: Float) {
        let K = prototypes.shape[0], D = prototypes.shape[1]
        precondition(embeddings.rank == 2 && embeddings.shape[1] == D && assignments.count == embeddings.shape[0],
                     "PrototypeLoss.follow: embeddings \(embeddings.shape) and \(assignments.count) assignments for [\(K), \(D)] prototypes")
        let x = embeddings.l2Normalized(axis: -1).scalars
        var sums = [Double](repeating: 0, count: K * D), counts = [Int](repeating: 0, count: K)
        for (row, k) in assignments.enumerated() where (0..<K).contains(k) {
            counts[k] += 1
            for j in 0..<D { sums[k * D + j] += Double(x[row * D + j]) }
        }
        var values = prototypes.value.l2Normalized(axis: -1).scalars
        for k in 0..<K where counts[k] > 0 {
            var norm = 0.0
            for j in 0..<D {
                let moved = Double(momentum) * Double(values[k * D + j]) + Double(1 - momentum) * sums[k * D + j] / Double(counts[k])
                sums[k * D + j] = moved
                norm += moved * moved
            }
            norm = norm.squareRoot()
            guard norm > 0 else { continue }
            for j in 0..<D { values[k * D + j] = Float(sums[k * D + j] / norm) }
        }
        prototypes.assign(Tensor(shape: [K, D], scalars: values))
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
