import AmberTensor

// Shape legend: `I` images, `T` texts (captions), `D` embedding dimension, `c` images per chunk.

/// Recall at 1, 5 and 10 (percent), and median and mean rank (1-based).
public struct RankSummary: Sendable, Codable, Equatable {
    public var recallAt1: Double
    public var recallAt5: Double
    public var recallAt10: Double
    public var medianRank: Double
    public var meanRank: Double

    init(ranks: [Int]) {
        let n = Double(max(ranks.count, 1))
        func recall(_ k: Int) -> Double { 100 * Double(ranks.filter { $0 <= k }.count) / n }
        recallAt1 = recall(1)
        recallAt5 = recall(5)
        recallAt10 = recall(10)
        let sorted = ranks.sorted()
        medianRank = sorted.isEmpty ? 0 : (sorted.count % 2 == 1 ? Double(sorted[sorted.count / 2])
                                           : Double(sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2)
        meanRank = Double(ranks.reduce(0, +)) / n
    }

    var sum: Double { recallAt1 + recallAt5 + recallAt10 }
}

/// Cross-modal retrieval metrics as VSE++/SCAN report them.
///
/// Image→text: an image's rank is that of its best-ranked caption among all texts.
/// Text→image: a caption's rank is that of its image among all images.
/// `rsum` is the sum of the six recalls.
public struct RetrievalMetrics: Sendable, Codable, Equatable {
    public var imageToText: RankSummary
    public var textToImage: RankSummary
    public var rsum: Double { imageToText.sum + textToImage.sum }

    public init(imageToText: RankSummary, textToImage: RankSummary) {
        self.imageToText = imageToText
        self.textToImage = textToImage
    }

    /// Ranks from similarity scores computed chunk by chunk, so `I × T` never needs to fit in
    /// memory at once.
    /// - Parameters:
    ///   - imageOfText: for each text, the index of its image.
    ///   - scores: scores of images `range` against every text, `[range.count, T]`.
    ///   - positiveScore: the score of text `t` with its own image.
    /// Ties count in the query's favour (a rank counts only strictly higher scores).
    public static func evaluate(
        imageCount: Int, imageOfText: [Int], chunkSize: Int = 1024,
        scores: (Range<Int>) -> Tensor, positiveScore: (Int) -> Float
    ) -> RetrievalMetrics {
        let textCount = imageOfText.count
        precondition(imageCount > 0 && textCount > 0, "RetrievalMetrics: needs images and texts (\(imageCount), \(textCount))")
        var captionsOfImage = [[Int]](repeating: [], count: imageCount)
        for (t, i) in imageOfText.enumerated() {
            precondition(i >= 0 && i < imageCount, "RetrievalMetrics: text \(t) points to image \(i) of \(imageCount)")
            captionsOfImage[i].append(t)
        }
        let positives = (0..<textCount).map(positiveScore)
        var imageRanks = [Int](repeating: 0, count: imageCount)
        var textHigher = [Int](repeating: 0, count: textCount)
        var start = 0
        while start < imageCount {
            let range = start ..< min(start + chunkSize, imageCount)
            let block = scores(range)
            precondition(block.shape == [range.count, textCount], "RetrievalMetrics: scores for \(range) have shape \(block.shape)")
            block.withUnsafeBufferPointer { s in
                for (row, image) in range.enumerated() {
                    let line = s.baseAddress! + row * textCount
                    // Image → text: best caption of this image, then count texts scoring higher.
                    var best = -Float.infinity
                    for t in captionsOfImage[image] { best = max(best, line[t]) }
                    var higher = 0
                    for t in 0..<textCount where line[t] > best { higher += 1 }
                    imageRanks[image] = higher + 1
                    // Text → image: this image beats each text's own image?
                    for t in 0..<textCount where imageOfText[t] != image && line[t] > positives[t] { textHigher[t] += 1 }
                }
            }
            start = range.upperBound
        }
        return RetrievalMetrics(imageToText: RankSummary(ranks: imageRanks), textToImage: RankSummary(ranks: textHigher.map { $0 + 1 }))
    }

    /// Ranks by dot products of embeddings (`[I, D]`, `[T, D]`; normalise first for cosine).
    /// With `offsets` (querybank normalisation), image queries rank texts by `s(i, t) − texts[t]`
    /// and text queries rank images by `s(i, t) − images[i]`.
    public static func evaluate(images: Tensor, texts: Tensor, imageOfText: [Int], offsets: ScoreOffsets? = nil,
                                chunkSize: Int = 1024) -> RetrievalMetrics {
        precondition(images.rank == 2 && texts.rank == 2 && images.shape[1] == texts.shape[1],
                     "RetrievalMetrics: embeddings \(images.shape) and \(texts.shape)")
        precondition(texts.shape[0] == imageOfText.count, "RetrievalMetrics: \(texts.shape[0]) texts, \(imageOfText.count) image indices")
        precondition(offsets.map { $0.images.count == images.shape[0] && $0.texts.count == texts.shape[0] } ?? true,
                     "RetrievalMetrics: offsets for \(offsets?.images.count ?? 0) images and \(offsets?.texts.count ?? 0) texts")
        return withoutGradients {
            let positives = (texts * images.indexSelect(imageOfText)).sum(axis: 1).scalars
            func scores(_ range: Range<Int>) -> Tensor { Tensor.matmul(images.slice(axis: 0, range), texts, transposeB: true) }
            guard let offsets else {
                return evaluate(imageCount: images.shape[0], imageOfText: imageOfText, chunkSize: chunkSize,
                                scores: scores, positiveScore: { positives[$0] })
            }
            // Each direction ranks under its own offsets: one pass for each.
            let textOffsets = Tensor(shape: [1, texts.shape[0]], scalars: offsets.texts)
            let imageToText = evaluate(imageCount: images.shape[0], imageOfText: imageOfText, chunkSize: chunkSize,
                                       scores: { scores($0) - textOffsets }, positiveScore: { positives[$0] - offsets.texts[$0] })
            let textToImage = evaluate(imageCount: images.shape[0], imageOfText: imageOfText, chunkSize: chunkSize,
                                       scores: { range in
                                           scores(range) - Tensor(shape: [range.count, 1], scalars: Array(offsets.images[range]))
                                       },
                                       positiveScore: { positives[$0] - offsets.images[imageOfText[$0]] })
            return RetrievalMetrics(imageToText: imageToText.imageToText, textToImage: textToImage.textToImage)
        }
    }
}

extension RetrievalMetrics: CustomStringConvertible {
    public var description: String {
        func f(_ v: Double) -> String { String(Double(Int((v * 10).rounded())) / 10) }
        return "i2t R@1/5/10 \(f(imageToText.recallAt1))/\(f(imageToText.recallAt5))/\(f(imageToText.recallAt10)) medr \(f(imageToText.medianRank)); "
            + "t2i R@1/5/10 \(f(textToImage.recallAt1))/\(f(textToImage.recallAt5))/\(f(textToImage.recallAt10)) medr \(f(textToImage.medianRank)); rsum \(f(rsum))"
    }
}
