import AmberTensor

/// Stage 2 of the ranking: a local, fragment-level alignment score in the style of
/// SCAN's text-to-image attention (Lee et al., 2018), over the *projected* fragments of the
/// matching model:
/// ```
/// c_jr = cos(t_j, v_r)                       token j of the text, fragment r of the image
/// a_j  = Σ_r softmax_r(λ · c_jr) · v_r      what the image says about token j
/// s    = (1/m) Σ_j cos(t_j, a_j)             mean over the text's m real tokens
/// ```
/// The score is defined text-to-image whichever side is the query, so an (image, text) pair
/// gets the same local score from both directions. Inference only: no gradients flow.
public struct LocalAlignment: Sendable, Codable, Equatable {
    /// `λ`, the inverse softmax temperature on the cosines (SCAN's 9).
    public var temperature: Float

    public init(temperature: Float = 9) {
        self.temperature = temperature
    }

    /// Local scores of every image against every text, `[I, T]`.
    /// - Parameters:
    ///   - images: projected image fragments `[I, n, D]`; `imageCounts[i]` real rows each.
    ///   - texts: projected text fragments `[T, m, D]`; `textCounts[t]` real rows each.
    public func scores(images: Tensor, imageCounts: [Int], texts: Tensor, textCounts: [Int]) -> Tensor {
        precondition(images.rank == 3 && texts.rank == 3 && images.shape[2] == texts.shape[2],
                     "LocalAlignment: image fragments \(images.shape), text fragments \(texts.shape)")
        precondition(imageCounts.count == images.shape[0] && textCounts.count == texts.shape[0],
                     "LocalAlignment: \(imageCounts.count) image counts for \(images.shape[0]) images, \(textCounts.count) text counts for \(texts.shape[0]) texts")
        precondition(imageCounts.allSatisfy { $0 >= 1 && $0 <= images.shape[1] } && textCounts.allSatisfy { $0 >= 1 && $0 <= texts.shape[1] },
                     "LocalAlignment: every item needs at least one real fragment")
        return withoutGradients {
            let I = images.shape[0], n = images.shape[1], D = images.shape[2], T = texts.shape[0], m = texts.shape[1]
            let regions = images.l2Normalized(axis: -1)                                   // [I, n, D]
            let tokens = texts.l2Normalized(axis: -1)                                     // [T, m, D]
            // One batched pass per item of the smaller side.
            if I <= T {
                // Per image: every text at once, tokens padded; padding tokens left out of the mean.
                var tokenWeight = [Float](repeating: 0, count: T * m)
                for t in 0..<T { for j in 0..<textCounts[t] { tokenWeight[t * m + j] = 1 / Float(textCounts[t]) } }
                let meanWeights = Tensor(shape: [T, m], scalars: tokenWeight)
                let flatTokens = tokens.reshaped([T * m, D])
                var rows: [Tensor] = []
                rows.reserveCapacity(I)
                for i in 0..<I {
                    let own = regions.slice(axis: 0, i ..< i + 1).reshaped([n, D]).slice(axis: 0, 0..<imageCounts[i])   // [r, D]
                    let cosines = Tensor.matmul(flatTokens, own, transposeB: true)                                     // [T·m, r]
                    let weights = (cosines * temperature).softmax(axis: 1)                                              // over regions
                    let attended = Tensor.matmul(weights, own).l2Normalized(axis: -1)                                   // [T·m, D]
                    let relevance = (attended * flatTokens).sum(axis: 1).reshaped([T, m])
                    rows.append((relevance * meanWeights).sum(axis: 1).reshaped([1, T]))
                }
                return Tensor.concatenate(rows, axis: 0)
            }
            // Per text: every image at once, padding regions at −∞ before the softmax.
            let regionBias = Tensor.paddingBias(counts: imageCounts, length: n).reshaped([I, n, 1])
            let flatRegions = regions.reshaped([I * n, D])
            var columns: [Tensor] = []
            columns.reserveCapacity(T)
            for t in 0..<T {
                let count = textCounts[t]
                let own = tokens.slice(axis: 0, t ..< t + 1).reshaped([m, D]).slice(axis: 0, 0..<count)   // [c, D]
                let cosines = Tensor.matmul(flatRegions, own, transposeB: true).reshaped([I, n, count])
                let weights = (cosines * temperature + regionBias).softmax(axis: 1)    // over regions
                let attended = Tensor.matmul(weights, regions, transposeA: true)       // [I, c, D]
                let relevance = (attended.l2Normalized(axis: -1) * own.reshaped([1, count, D])).sum(axis: 2)  // [I, c]
                columns.append(relevance.mean(axis: 1).reshaped([I, 1]))
            }
            return Tensor.concatenate(columns, axis: 1)
        }
    }
}

extension Tensor {
    /// `[B, n]` additive mask of padded rows: 0 on item `b`'s first `counts[b]` rows, −1e9 after
    /// them (added to logits before a softmax over the rows).
    static func paddingBias(counts: [Int], length n: Int) -> Tensor {
        var bias = [Float](repeating: 0, count: counts.count * n)
        for (b, count) in counts.enumerated() { for r in count..<n { bias[b * n + r] = -1e9 } }
        return Tensor(shape: [counts.count, n], scalars: bias)
    }
}

/// Which stage-2 scorer a model uses.
public enum StageTwoKind: String, Sendable, Codable, CaseIterable {
    /// SCAN-style text-to-image attention over the fragments (``LocalAlignment``).
    case scan
    /// GARE's gap-aware pair score (``GapAwareScorer``).
    case gare
}

/// Stage 2's scorer of (image, text) pairs.
public enum PairScorer: Sendable {
    case scan(LocalAlignment)
    case gare(GapAwareScorer)

    public var kind: StageTwoKind {
        switch self {
        case .scan: .scan
        case .gare: .gare
        }
    }

    /// Scores `[I, T]` of images (projected fragments) against texts (projected fragments, and
    /// fused embeddings `[T, D]`, which GARE reads); each scorer reads what it needs. Inference only.
    public func scores(imageFragments: Tensor, imageCounts: [Int], textFragments: Tensor, textCounts: [Int], textFused: Tensor) -> Tensor {
        switch self {
        case .scan(let alignment):
            return alignment.scores(images: imageFragments, imageCounts: imageCounts, texts: textFragments, textCounts: textCounts)
        case .gare(let scorer):
            return scorer.scores(texts: textFused, fragments: imageFragments, counts: imageCounts).transposed()
        }
    }
}

/// Two-stage ranking: stage 1 orders the gallery by the global (fused-embedding) score; stage 2
/// re-scores the top `depth` candidates of each query with `α · global + (1 − α) · local` and
/// puts them, in that order, above the rest (which keep their stage-1 order).
public struct TwoStageRanking: Sendable, Codable, Equatable {
    /// Weight of the stage-1 score in the fused stage-2 score (1: stage 2 off).
    public var alpha: Float
    /// Candidates re-scored per query.
    public var depth: Int

    public init(alpha: Float = 1, depth: Int = 32) {
        precondition(alpha >= 0 && alpha <= 1 && depth >= 1, "TwoStageRanking: alpha \(alpha) must be in [0, 1], depth \(depth) ≥ 1")
        self.alpha = alpha
        self.depth = depth
    }

    /// The fusion of the two stages, in one place for evaluation and serving: each candidate's
    /// score `α · global + (1 − α) · local`, best first, ties to the lower candidate (gallery
    /// index). Returns each fused candidate's slot in `candidates` and its fused score.
    /// - Parameters: `candidates` gallery indices; `global`, `local` their scores, slot by slot.
    public static func fuse(candidates: [Int], global: [Float], local: [Float], alpha: Float) -> [(slot: Int, score: Float)] {
        precondition(global.count == candidates.count && local.count == candidates.count,
                     "TwoStageRanking.fuse: \(global.count) global and \(local.count) local scores for \(candidates.count) candidates")
        return candidates.indices.map { (slot: $0, score: alpha * global[$0] + (1 - alpha) * local[$0]) }
            .sorted { $0.score > $1.score || ($0.score == $1.score && candidates[$0.slot] < candidates[$1.slot]) }
    }

    /// Re-ranks the candidates `global` orders first, given the local score of each candidate.
    /// Returns candidate indices and fused scores, best first: the re-scored top `depth`, then
    /// the rest by their global score.
    public func rank(global: [Float], local: (_ candidates: [Int]) -> [Float]) -> [(index: Int, score: Float)] {
        let order = global.indices.sorted { global[$0] > global[$1] || (global[$0] == global[$1] && $0 < $1) }
        let top = Array(order.prefix(depth))
        guard alpha < 1, !top.isEmpty else { return order.map { ($0, global[$0]) } }
        let localScores = local(top)
        precondition(localScores.count == top.count, "TwoStageRanking: \(localScores.count) local scores for \(top.count) candidates")
        let fused = Self.fuse(candidates: top, global: top.map { global[$0] }, local: localScores, alpha: alpha)
            .map { (index: top[$0.slot], score: $0.score) }
        return fused + order.dropFirst(top.count).map { ($0, global[$0]) }
    }

    /// Metrics of the two-stage ranking over `gallery` for each weight in `alphas` (the depth
    /// is this ranking's): images rank all texts, texts rank all images. Local scores are
    /// computed once per query for its top `depth` candidates only, and stage-1 scores in
    /// chunks of `chunkSize` queries, so a 5K × 25K evaluation never holds the full matrix.
    /// With `offsets` (querybank normalisation), the global score of a candidate is its
    /// corrected score `s − o` in both stages.
    public func sweep(alphas: [Float], gallery: EncodedGallery, alignment: LocalAlignment, imageOfText: [Int],
                      offsets: ScoreOffsets? = nil, chunkSize: Int = 512) -> [(alpha: Float, metrics: RetrievalMetrics)] {
        sweep(alphas: alphas, gallery: gallery, scorer: .scan(alignment), imageOfText: imageOfText, offsets: offsets, chunkSize: chunkSize)
    }

    /// ``sweep(alphas:gallery:alignment:imageOfText:offsets:chunkSize:)`` with any stage-2 scorer.
    public func sweep(alphas: [Float], gallery: EncodedGallery, scorer: PairScorer, imageOfText: [Int],
                      offsets: ScoreOffsets? = nil, chunkSize: Int = 512) -> [(alpha: Float, metrics: RetrievalMetrics)] {
        let I = gallery.images.shape[0], T = gallery.texts.shape[0]
        precondition(imageOfText.count == T && imageOfText.allSatisfy { $0 >= 0 && $0 < I },
                     "TwoStageRanking: \(imageOfText.count) image indices for \(T) texts of \(I) images")
        precondition(alphas.allSatisfy { $0 >= 0 && $0 <= 1 }, "TwoStageRanking: alphas \(alphas) must be in [0, 1]")
        precondition(offsets.map { $0.images.count == I && $0.texts.count == T } ?? true,
                     "TwoStageRanking: offsets for \(offsets?.images.count ?? 0) images and \(offsets?.texts.count ?? 0) texts of \(I) and \(T)")
        var captionsOfImage = [[Int]](repeating: [], count: I)
        for (t, i) in imageOfText.enumerated() { captionsOfImage[i].append(t) }
        return withoutGradients {
            var imageRanks = [[Int]](repeating: [Int](repeating: 0, count: I), count: alphas.count)
            var textRanks = [[Int]](repeating: [Int](repeating: 0, count: T), count: alphas.count)
            // One query: ranks of its positives under each α.
            func rankQuery(scores: UnsafeBufferPointer<Float>, positives: [Int], local: ([Int]) -> [Float]) -> [Int] {
                let count = scores.count
                let k = min(depth, count)
                // The top k by (score desc, index asc).
                let top = TopScores.indices(of: scores, k: k)
                let inTop = Set(top)
                let localScores = local(top)
                // Best stage-1 rank among positives outside the top (depth + 1 + higher non-top).
                var outside = Int.max
                for p in positives where !inTop.contains(p) {
                    var higher = 0
                    for j in 0..<count where scores[j] > scores[p] && !inTop.contains(j) { higher += 1 }
                    outside = min(outside, k + 1 + higher)
                }
                let topGlobal = top.map { scores[$0] }
                return alphas.map { alpha in
                    let order = Self.fuse(candidates: top, global: topGlobal, local: localScores, alpha: alpha)
                    if let position = order.firstIndex(where: { positives.contains(top[$0.slot]) }) { return position + 1 }
                    return outside
                }
            }
            // A query's stage-1 scores, less the gallery's offsets when there are any.
            func corrected(_ line: UnsafeBufferPointer<Float>, by offsets: [Float]?, _ body: (UnsafeBufferPointer<Float>) -> [Int]) -> [Int] {
                guard let offsets else { return body(line) }
                let adjusted = zip(line, offsets).map { $0 - $1 }
                return adjusted.withUnsafeBufferPointer(body)
            }
            for start in stride(from: 0, to: I, by: chunkSize) {
                let range = start ..< min(start + chunkSize, I)
                let block = Tensor.matmul(gallery.images.slice(axis: 0, range), gallery.texts, transposeB: true)
                block.withUnsafeBufferPointer { s in
                    for (row, image) in range.enumerated() {
                        let line = UnsafeBufferPointer(rebasing: s[(row * T)..<((row + 1) * T)])
                        let ranks = corrected(line, by: offsets?.texts) { line in
                            rankQuery(scores: line, positives: captionsOfImage[image]) { candidates in
                                gallery.localScores(scorer, images: [image], texts: candidates).scalars
                            }
                        }
                        for (a, rank) in ranks.enumerated() { imageRanks[a][image] = rank }
                    }
                }
            }
            for start in stride(from: 0, to: T, by: chunkSize) {
                let range = start ..< min(start + chunkSize, T)
                let block = Tensor.matmul(gallery.texts.slice(axis: 0, range), gallery.images, transposeB: true)
                block.withUnsafeBufferPointer { s in
                    for (row, text) in range.enumerated() {
                        let line = UnsafeBufferPointer(rebasing: s[(row * I)..<((row + 1) * I)])
                        let ranks = corrected(line, by: offsets?.images) { line in
                            rankQuery(scores: line, positives: [imageOfText[text]]) { candidates in
                                gallery.localScores(scorer, images: candidates, texts: [text]).scalars
                            }
                        }
                        for (a, rank) in ranks.enumerated() { textRanks[a][text] = rank }
                    }
                }
            }
            return alphas.indices.map { a in
                (alphas[a], RetrievalMetrics(imageToText: RankSummary(ranks: imageRanks[a]), textToImage: RankSummary(ranks: textRanks[a])))
            }
        }
    }
}
