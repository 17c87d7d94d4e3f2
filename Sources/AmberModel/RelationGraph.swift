import AmberTensor

#if canImport(Glibc)
import Glibc
#endif

// Shape legend: `B` pairs in the batch (B image nodes + B text nodes), `D` dimension,
// `k = ⌊B/2⌋` neighbours per node in each block.

/// The in-batch high-order relation graph (L_graph of the matching objective; after AAHR), training only.
///
/// Nodes are the batch's local vectors. Each node links to its `k` strongest neighbours in each
/// of the four blocks: within a modality with weight `exp(−‖x_a − x_b‖)`, across with the cosine
/// (negative cosines dropped). Rows are normalised. Then one residual GCN layer per modality and
/// one over the joint graph:
/// ```
/// H_m = X_m + ReLU(Â_mm X_m W_m)             m ∈ {image, text}
/// G   = H + ReLU(Â [H_i; H_t] W_joint)         Â the row-normalised 2B × 2B adjacency
/// ```
/// The adjacency is a constant of the step (no gradient through the graph's structure).
public struct RelationGraph: Sendable {
    public let imageLayer: Linear
    public let textLayer: Linear
    public let jointLayer: Linear

    public init(dimension: Int, generator: inout RandomGenerator) {
        imageLayer = Linear(inputs: dimension, outputs: dimension, name: "graph.image", generator: &generator)
        textLayer = Linear(inputs: dimension, outputs: dimension, name: "graph.text", generator: &generator)
        jointLayer = Linear(inputs: dimension, outputs: dimension, name: "graph.joint", generator: &generator)
    }

    /// The layers' weights (the layers have no bias).
    public var parameters: [Parameter] { [imageLayer.weight, textLayer.weight, jointLayer.weight] }

    /// The four blocks' weights before row normalisation, as a `[2B, 2B]` matrix
    /// (rows/columns `0..<B` images, `B..<2B` texts), keeping the top `k` per row and block.
    public static func adjacency(images: Tensor, texts: Tensor, neighbours k: Int) -> Tensor {
        let B = images.shape[0], D = images.shape[1], N = 2 * B
        let x = Tensor.concatenate([images.detached, texts.detached], axis: 0)
        let normalized = withoutGradients { x.l2Normalized(axis: -1) }
        // Every pair's weight once (both are symmetric): exp(−distance) within a modality, the
        // positive part of the cosine across.
        var value = [Float](repeating: 0, count: N * N)
        x.withUnsafeBufferPointer { xs in
            normalized.withUnsafeBufferPointer { us in
                guard let xp = xs.baseAddress, let up = us.baseAddress else { return }
                for a in 0..<N {
                    for b in (a + 1)..<max(N, a + 1) {
                        let sameModality = (a < B) == (b < B)
                        let v = sameModality
                            ? expf(-VectorMath.squaredDistance(xp + a * D, xp + b * D, count: D).squareRoot())
                            : max(VectorMath.dot(up + a * D, up + b * D, count: D), 0)
                        value[a * N + b] = v
                        value[b * N + a] = v
                    }
                }
            }
        }
        // The k strongest of each row in each block (ties: the lower index).
        var weights = [Float](repeating: 0, count: N * N)
        for a in 0..<N {
            for blockStart in [0, B] {
                var top = TopScores(k)
                for b in blockStart..<(blockStart + B) where b != a { top.offer(value[a * N + b], b) }
                for (v, b) in top.entries { weights[a * N + b] = v }
            }
        }
        return Tensor(shape: [N, N], scalars: weights)
    }

    /// The adjacency as first written (one scalar loop per pair): the reference the fast one is
    /// tested against.
    static func naiveAdjacency(images: Tensor, texts: Tensor, neighbours k: Int) -> Tensor {
        let B = images.shape[0], D = images.shape[1]
        let x = Tensor.concatenate([images.detached, texts.detached], axis: 0).scalars
        let normalized = withoutGradients { Tensor.concatenate([images, texts], axis: 0).l2Normalized(axis: -1).scalars }
        var weights = [Float](repeating: 0, count: 4 * B * B)
        for a in 0..<(2 * B) {
            for blockStart in [0, B] {
                var candidates: [(Float, Int)] = []
                for b in blockStart..<(blockStart + B) where b != a {
                    let sameModality = (a < B) == (b < B)
                    var value: Float
                    if sameModality {
                        var distance: Float = 0
                        for d in 0..<D { let diff = x[a * D + d] - x[b * D + d]; distance += diff * diff }
                        value = expf(-distance.squareRoot())
                    } else {
                        var dot: Float = 0
                        for d in 0..<D { dot += normalized[a * D + d] * normalized[b * D + d] }
                        value = max(dot, 0)
                    }
                    candidates.append((value, b))
                }
                candidates.sort { $0.0 > $1.0 || ($0.0 == $1.0 && $0.1 < $1.1) }
                for (value, b) in candidates.prefix(k) { weights[a * 2 * B + b] = value }
            }
        }
        return Tensor(shape: [2 * B, 2 * B], scalars: weights)
    }

    /// Row-normalises a non-negative matrix (rows of zeros stay zero).
    static func rowNormalized(_ a: Tensor) -> Tensor {
        a / (a.sum(axis: 1, keepingDimension: true) + 1e-12)
    }

    /// Graph-enhanced vectors of images and texts, `[B, D]` each.
    public func callAsFunction(images: Tensor, texts: Tensor) -> (images: Tensor, texts: Tensor) {
        let B = images.shape[0]
        return self(images: images, texts: texts, adjacency: Self.adjacency(images: images, texts: texts, neighbours: max(B / 2, 1)))
    }

    /// The layers over a given adjacency `[2B, 2B]` (see ``adjacency(images:texts:neighbours:)``).
    public func callAsFunction(images: Tensor, texts: Tensor, adjacency: Tensor) -> (images: Tensor, texts: Tensor) {
        let B = images.shape[0]
        precondition(adjacency.shape == [2 * B, 2 * B], "RelationGraph: adjacency \(adjacency.shape) for \(B) pairs")
        let imageBlock = Self.rowNormalized(adjacency.slice(axis: 0, 0..<B).slice(axis: 1, 0..<B))
        let textBlock = Self.rowNormalized(adjacency.slice(axis: 0, B..<(2 * B)).slice(axis: 1, B..<(2 * B)))
        let hi = images + Tensor.matmul(Tensor.matmul(imageBlock, images), imageLayer.weight.tensor).relu()
        let ht = texts + Tensor.matmul(Tensor.matmul(textBlock, texts), textLayer.weight.tensor).relu()
        let h = Tensor.concatenate([hi, ht], axis: 0)
        let g = h + Tensor.matmul(Tensor.matmul(Self.rowNormalized(adjacency), h), jointLayer.weight.tensor).relu()
        let parts = g.split([B, B], axis: 0)
        return (parts[0], parts[1])
    }
}
