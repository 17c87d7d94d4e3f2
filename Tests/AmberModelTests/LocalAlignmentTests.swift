import AmberModel
import AmberTensor
import AmberTestSupport
import Foundation
import Testing

@Suite("Stage 2: local alignment and two-stage ranking")
struct LocalAlignmentTests {
    /// The SCAN text-to-image score written out with loops in Double.
    static func naiveScore(image: [[Float]], text: [[Float]], temperature: Double) -> Double {
        func unit(_ v: [Double]) -> [Double] { let n = v.reduce(0) { $0 + $1 * $1 }.squareRoot(); return v.map { $0 / n } }
        let regions = image.map { unit($0.map(Double.init)) }, tokens = text.map { unit($0.map(Double.init)) }
        var total = 0.0
        for token in tokens {
            let cosines = regions.map { r in zip(r, token).reduce(0) { $0 + $1.0 * $1.1 } }
            let top = cosines.max()!
            let weights = cosines.map { Foundation.exp(temperature * ($0 - top)) }
            let sum = weights.reduce(0, +)
            var attended = [Double](repeating: 0, count: token.count)
            for (w, r) in zip(weights, regions) { for d in attended.indices { attended[d] += w / sum * r[d] } }
            total += zip(unit(attended), token).reduce(0) { $0 + $1.0 * $1.1 }
        }
        return total / Double(tokens.count)
    }

    static func rows(_ tensor: Tensor, item: Int, count: Int) -> [[Float]] {
        let n = tensor.shape[1], D = tensor.shape[2], s = tensor.scalars
        return (0..<count).map { r in Array(s[((item * n + r) * D)..<((item * n + r + 1) * D)]) }
    }

    @Test func scoresMatchANaiveReferenceWithPaddingOnBothSides() {
        let images = randomTensor([3, 5, 6], seed: 1), texts = randomTensor([4, 7, 6], seed: 2)
        let imageCounts = [5, 2, 4], textCounts = [7, 1, 3, 5]
        let alignment = LocalAlignment(temperature: 9)
        let scores = alignment.scores(images: images, imageCounts: imageCounts, texts: texts, textCounts: textCounts)
        var expected: [Float] = []
        for i in 0..<3 {
            for t in 0..<4 {
                expected.append(Float(Self.naiveScore(image: Self.rows(images, item: i, count: imageCounts[i]),
                                                      text: Self.rows(texts, item: t, count: textCounts[t]), temperature: 9)))
            }
        }
        expectClose(scores, expected, shape: [3, 4], tolerance: 1e-5)
        // The other batching (more images than texts) gives the same scores.
        let transposedPath = alignment.scores(images: Tensor.concatenate([images, images], axis: 0), imageCounts: imageCounts + imageCounts,
                                              texts: texts.slice(axis: 0, 0..<2), textCounts: Array(textCounts.prefix(2)))
        let expectedTwo = (0..<6).flatMap { i in (0..<2).map { expected[(i % 3) * 4 + $0] } }
        expectClose(transposedPath, expectedTwo, shape: [6, 2], tolerance: 1e-5)
        // Padding rows do not matter: garbage in them changes nothing (on both paths).
        let noisy = images + Tensor(shape: [3, 5, 1], scalars: (0..<15).map { $0 % 5 >= imageCounts[$0 / 5] ? 50 : 0 })
        let noisyTexts = texts + Tensor(shape: [4, 7, 1], scalars: (0..<28).map { $0 % 7 >= textCounts[$0 / 7] ? 50 : 0 })
        expectClose(alignment.scores(images: noisy, imageCounts: imageCounts, texts: noisyTexts, textCounts: textCounts), expected, tolerance: 1e-5)
        let fewTexts = alignment.scores(images: noisy, imageCounts: imageCounts, texts: noisyTexts.slice(axis: 0, 0..<2), textCounts: Array(textCounts.prefix(2)))
        expectClose(fewTexts, (0..<3).flatMap { i in (0..<2).map { expected[i * 4 + $0] } }, tolerance: 1e-5)
    }

    @Test func aTextMadeOfAnImagesFragmentsScoresThatImageHighest() {
        let images = randomTensor([4, 6, 16], seed: 3)
        // Text 0 is three of image 2's fragments.
        let text = images.slice(axis: 0, 2..<3).slice(axis: 1, 1..<4)
        let scores = LocalAlignment(temperature: 20).scores(images: images, imageCounts: [6, 6, 6, 6], texts: text, textCounts: [3]).scalars
        #expect(scores.indices.max { scores[$0] < scores[$1] } == 2, "\(scores)")
        #expect(scores[2] > 0.99)
    }

    @Test func rankReordersOnlyTheTopCandidates() {
        let ranking = TwoStageRanking(alpha: 0.5, depth: 3)
        let global: [Float] = [0.9, 0.1, 0.8, 0.7, 0.2, 0.6]
        var asked: [Int] = []
        let ranked = ranking.rank(global: global) { candidates in
            asked = candidates
            return candidates.map { $0 == 3 ? 1.0 : 0.0 }    // the local score favours candidate 3
        }
        #expect(asked == [0, 2, 3])
        #expect(ranked.map(\.index) == [3, 0, 2, 5, 4, 1])
        #expect(abs(ranked[0].score - 0.85) < 1e-6)
        // α = 1: stage 1 only, the local score is never asked for.
        let stageOne = TwoStageRanking(alpha: 1, depth: 3).rank(global: global) { _ in Issue.record("local scores asked for"); return [] }
        #expect(stageOne.map(\.index) == [0, 2, 3, 5, 4, 1])
    }

    /// Reference: full global and local matrices; each direction's top `depth` lifted above the
    /// rest in fused order, then the plain metrics.
    static func referenceMetrics(global: Tensor, local: Tensor, imageOfText: [Int], alpha: Float, depth: Int) -> RetrievalMetrics {
        let I = global.shape[0], T = global.shape[1], g = global.scalars, l = local.scalars
        func lifted(_ lines: Int, _ length: Int, _ at: (Int, Int) -> Int) -> [Float] {
            var out = g
            for q in 0..<lines {
                let line: [Float] = (0..<length).map { g[at(q, $0)] }
                let order: [Int] = (0..<length).sorted { a, b in line[a] > line[b] || (line[a] == line[b] && a < b) }
                var fused: [(c: Int, s: Float)] = []
                for c in order.prefix(depth) {
                    let mixed: Float = alpha * line[c] + (1 - alpha) * l[at(q, c)]
                    fused.append((c: c, s: mixed))
                }
                fused.sort { a, b in a.s > b.s || (a.s == b.s && a.c < b.c) }
                for (position, entry) in fused.enumerated() { out[at(q, entry.c)] = 10 + Float(depth - position) }
            }
            return out
        }
        func metrics(_ scores: [Float]) -> RetrievalMetrics {
            let matrix = Tensor(shape: [I, T], scalars: scores)
            return RetrievalMetrics.evaluate(imageCount: I, imageOfText: imageOfText, scores: { matrix.slice(axis: 0, $0) },
                                             positiveScore: { scores[imageOfText[$0] * T + $0] })
        }
        let rows = lifted(I, T) { $0 * T + $1 }, columns = lifted(T, I) { $1 * T + $0 }
        return RetrievalMetrics(imageToText: metrics(rows).imageToText, textToImage: metrics(columns).textToImage)
    }

    @Test(arguments: [1, 4, 40])
    func sweepMatchesTheFullMatrixReference(depth: Int) {
        let I = 12, T = 36, D = 8
        let images = randomTensor([I, D], seed: 5).l2Normalized(axis: -1)
        let imageOfText = (0..<T).map { $0 / 3 }
        let texts = (images.indexSelect(imageOfText) + randomTensor([T, D], seed: 6, lower: -0.9, upper: 0.9)).l2Normalized(axis: -1)
        let gallery = EncodedGallery(images: images, texts: texts,
                                     imageFragments: randomTensor([I, 4, D], seed: 7), imageCounts: (0..<I).map { 2 + $0 % 3 },
                                     textFragments: randomTensor([T, 5, D], seed: 8), textCounts: (0..<T).map { 1 + $0 % 5 })
        let alignment = LocalAlignment()
        let local = gallery.localScores(alignment, images: Array(0..<I), texts: Array(0..<T))
        let alphas: [Float] = [1, 0.7, 0.3, 0]
        // Chunks smaller than the gallery, to cross chunk boundaries.
        let sweep = TwoStageRanking(alpha: 1, depth: depth).sweep(alphas: alphas, gallery: gallery, alignment: alignment, imageOfText: imageOfText, chunkSize: 5)
        #expect(sweep.map { $0.alpha } == alphas)
        for (alpha, metrics) in sweep {
            let expected = Self.referenceMetrics(global: gallery.globalScores, local: local, imageOfText: imageOfText, alpha: alpha, depth: depth)
            #expect(metrics == expected, "α \(alpha), depth \(depth)")
        }
        // α = 1 is stage 1: the plain metrics of the embeddings.
        #expect(sweep[0].metrics == RetrievalMetrics.evaluate(images: images, texts: texts, imageOfText: imageOfText))
        // The local score changes the ranking here (else this test proves nothing).
        if depth > 1 { #expect(sweep[3].metrics != sweep[0].metrics) }
    }
}
