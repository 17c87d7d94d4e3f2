import AmberTensor
import Foundation

// Shape legend: `G` gallery items, `Q` querybank entries, `D` embedding dimension, `c` gallery
// items per chunk.

/// Hubness correction of stage-1 scores by querybank normalisation: the inverted softmax of
/// Smith et al. (ICLR 2017) with a querybank of training queries, as in QB-Norm (Bogolin et al.,
/// CVPR 2022).
///
/// In a shared embedding space a few gallery items ("hubs") score high against many queries and
/// crowd the top of unrelated rankings. Each gallery item `g` gets an offset from how strongly
/// the querybank `q_1 … q_Q` (embeddings of training queries of the query modality) prefers it:
/// ```
/// o_g  = (1/β) · log( (1/Q) Σ_q exp(β · s(q_q, g)) )
/// s'(q, g) = s(q, g) − o_g
/// ```
/// `s'` ranks the gallery for a query exactly as the inverted softmax `exp(β s) / Σ_q exp(β s)`
/// does, stays in the units of `s` (so stage 2 can fuse it with the local score), and costs one
/// subtraction per gallery item at query time. `β = 0` is off (`o_g = 0`).
///
/// The querybank comes from the training data, never from the evaluation queries: images
/// correct the text gallery (image→text), texts correct the image gallery (text→image).
public struct QuerybankNormalization: Sendable {
    /// `β`, the inverse temperature of the inverted softmax (0: off).
    public var beta: Float
    /// `[Qi, D]` image embeddings: the querybank of image→text queries.
    public var imageQueries: Tensor
    /// `[Qt, D]` text embeddings: the querybank of text→image queries.
    public var textQueries: Tensor

    public init(beta: Float, imageQueries: Tensor, textQueries: Tensor) {
        precondition(beta >= 0 && beta.isFinite, "QuerybankNormalization: β \(beta) must be finite and ≥ 0")
        precondition(imageQueries.rank == 2 && textQueries.rank == 2 && imageQueries.shape[1] == textQueries.shape[1]
                     && imageQueries.shape[0] > 0 && textQueries.shape[0] > 0,
                     "QuerybankNormalization: querybanks \(imageQueries.shape) and \(textQueries.shape)")
        self.beta = beta
        self.imageQueries = imageQueries
        self.textQueries = textQueries
    }

    /// A querybank of at most `limit` embeddings per modality, drawn without replacement by a
    /// generator seeded with `seed` (all of them when there are no more than `limit`), kept in
    /// their original order.
    public init(beta: Float, images: Tensor, texts: Tensor, limit: Int, seed: UInt64) {
        precondition(limit > 0, "QuerybankNormalization: limit \(limit) must be positive")
        var generator = RandomGenerator(seed: seed)
        func sample(_ embeddings: Tensor) -> Tensor {
            let count = embeddings.shape[0]
            guard count > limit else { return embeddings }
            return embeddings.indexSelect(generator.permutation(count).prefix(limit).sorted())
        }
        self.init(beta: beta, imageQueries: sample(images), textQueries: sample(texts))
    }

    /// The same querybank with another `β`.
    public func with(beta: Float) -> QuerybankNormalization {
        QuerybankNormalization(beta: beta, imageQueries: imageQueries, textQueries: textQueries)
    }

    /// Offsets `o_g` of each row of `gallery` `[G, D]` against `queries` `[Q, D]`, chunked so
    /// that only `[c, Q]` scores exist at a time.
    public func offsets(gallery: Tensor, queries: Tensor, chunkSize: Int = 2048) -> [Float] {
        precondition(gallery.rank == 2 && gallery.shape[1] == queries.shape[1],
                     "QuerybankNormalization: gallery \(gallery.shape) against querybank \(queries.shape)")
        let count = gallery.shape[0]
        guard beta > 0 else { return [Float](repeating: 0, count: count) }
        let logCount = Float(log(Double(queries.shape[0])))
        return withoutGradients {
            var offsets: [Float] = []
            offsets.reserveCapacity(count)
            for start in stride(from: 0, to: count, by: chunkSize) {
                let chunk = gallery.slice(axis: 0, start ..< min(start + chunkSize, count))
                let scores = Tensor.matmul(chunk, queries, transposeB: true)                // [c, Q]
                offsets += (scores * beta).logSumExp(axis: 1).scalars.map { ($0 - logCount) / beta }
            }
            return offsets
        }
    }

    /// Offsets for a gallery of images `[I, D]` (ranked by text queries) and texts `[T, D]`
    /// (ranked by image queries).
    public func offsets(images: Tensor, texts: Tensor) -> ScoreOffsets {
        ScoreOffsets(images: offsets(gallery: images, queries: textQueries), texts: offsets(gallery: texts, queries: imageQueries))
    }
}

/// Per-item offsets subtracted from stage-1 scores: `images[i]` from every text query's score of
/// image `i`, `texts[t]` from every image query's score of text `t`.
public struct ScoreOffsets: Sendable, Equatable {
    public var images: [Float]
    public var texts: [Float]

    public init(images: [Float], texts: [Float]) {
        self.images = images
        self.texts = texts
    }
}
