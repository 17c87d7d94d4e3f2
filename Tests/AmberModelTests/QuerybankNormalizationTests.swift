@testable import AmberModel
import AmberTensor
import AmberTestSupport
import Foundation
import Testing

@Suite("Querybank normalisation")
struct QuerybankNormalizationTests {
    /// Offsets in Double, straight from the formula: `o_g = (1/β) log((1/Q) Σ_q exp(β s(q, g)))`.
    static func referenceOffsets(gallery: Tensor, queries: Tensor, beta: Double) -> [Double] {
        let G = gallery.shape[0], Q = queries.shape[0], D = gallery.shape[1]
        let g = gallery.scalars, q = queries.scalars
        return (0..<G).map { i in
            let total = (0..<Q).reduce(0.0) { sum, j in
                let s = (0..<D).reduce(0.0) { $0 + Double(g[i * D + $1]) * Double(q[j * D + $1]) }
                return sum + exp(beta * s)
            }
            return log(total / Double(Q)) / beta
        }
    }

    @Test("offsets equal the formula in Double, across chunks", arguments: [1, 3, 2048])
    func offsetsMatchTheFormula(chunkSize: Int) {
        let gallery = randomTensor([7, 5], seed: 1).l2Normalized(axis: -1)
        let queries = randomTensor([11, 5], seed: 2).l2Normalized(axis: -1)
        for beta: Float in [0.5, 10, 50] {
            let normalization = QuerybankNormalization(beta: beta, imageQueries: queries, textQueries: queries)
            let offsets = normalization.offsets(gallery: gallery, queries: queries, chunkSize: chunkSize)
            let reference = Self.referenceOffsets(gallery: gallery, queries: queries, beta: Double(beta))
            #expect(offsets.count == 7)
            for (value, expected) in zip(offsets, reference) {
                #expect(abs(Double(value) - expected) < 1e-5 * max(1, abs(expected)), "β \(beta): \(value) vs \(expected)")
            }
        }
        // β = 0 is off: no offsets at all.
        let off = QuerybankNormalization(beta: 0, imageQueries: queries, textQueries: queries)
        #expect(off.offsets(gallery: gallery, queries: queries) == [Float](repeating: 0, count: 7))
    }

    @Test func aHubIsPushedDownAndTheRankingIsTheInvertedSoftmax() {
        // Gallery item 0 is a hub: close to every query of the bank. Item 1 is close to one.
        let queries = Tensor(shape: [4, 2], scalars: [1, 0, 0.9, 0.44, 0.9, -0.44, 0.6, 0.8]).l2Normalized(axis: -1)
        let gallery = Tensor(shape: [2, 2], scalars: [1, 0, 0, 1])
        let normalization = QuerybankNormalization(beta: 10, imageQueries: queries, textQueries: queries)
        let offsets = normalization.offsets(gallery: gallery, queries: queries)
        #expect(offsets[0] > offsets[1] + 0.1, "the hub must get the larger offset: \(offsets)")
        // s − o orders a new query's candidates exactly as exp(β s) / Σ_bank exp(β s) does.
        let query = Tensor(shape: [1, 2], scalars: [0.75, 0.66]).l2Normalized(axis: -1)
        let scores = Tensor.matmul(query, gallery, transposeB: true).scalars
        let corrected = zip(scores, offsets).map { $0 - $1 }
        let bankScores = Tensor.matmul(queries, gallery, transposeB: true).scalars      // [4, 2]
        let inverted = (0..<2).map { g -> Double in
            var denominator = 0.0
            for j in 0..<4 { denominator += exp(10 * Double(bankScores[j * 2 + g])) }
            return exp(10 * Double(scores[g])) / denominator
        }
        #expect(scores[0] > scores[1], "plain scores prefer the hub")
        #expect((corrected[0] > corrected[1]) == (inverted[0] > inverted[1]))
        #expect(corrected[1] > corrected[0], "the correction turns the ranking round here")
    }

    @Test func theQuerybankIsASeededSampleInOrder() {
        let images = Tensor(shape: [10, 1]) { Float($0) }, texts = Tensor(shape: [30, 1]) { Float($0) }
        let bank = QuerybankNormalization(beta: 5, images: images, texts: texts, limit: 8, seed: 3)
        #expect(bank.imageQueries.shape == [8, 1] && bank.textQueries.shape == [8, 1])
        #expect(bank.imageQueries.scalars == bank.imageQueries.scalars.sorted(), "kept in their original order")
        #expect(Set(bank.textQueries.scalars).count == 8, "drawn without replacement")
        let again = QuerybankNormalization(beta: 5, images: images, texts: texts, limit: 8, seed: 3)
        #expect(again.textQueries.scalars == bank.textQueries.scalars)
        let other = QuerybankNormalization(beta: 5, images: images, texts: texts, limit: 8, seed: 4)
        #expect(other.textQueries.scalars != bank.textQueries.scalars)
        let small = QuerybankNormalization(beta: 5, images: images, texts: texts, limit: 100, seed: 3)
        #expect(small.imageQueries.scalars == images.scalars && small.textQueries.scalars == texts.scalars)
    }

    /// Synthetic gallery with a few hub images that every text scores high.
    static func hubbyGallery() -> (images: Tensor, texts: Tensor, imageOfText: [Int], bank: QuerybankNormalization) {
        var generator = RandomGenerator(seed: 8)
        let D = 12
        let hub = Tensor.randomNormal([1, D], using: &generator)
        func make(_ images: Int) -> (Tensor, Tensor, [Int]) {
            let own = Tensor.randomNormal([images, D], using: &generator)
            let isHub = Tensor(shape: [images, 1]) { $0 % 6 == 0 ? 1 : 0 }
            let imageVectors = (own + isHub * hub * 2).l2Normalized(axis: -1)
            let imageOfText = (0..<(images * 3)).map { $0 / 3 }
            let texts = (own.indexSelect(imageOfText) + hub * 0.8 + Tensor.randomNormal([images * 3, D], standardDeviation: 0.9, using: &generator))
                .l2Normalized(axis: -1)
            return (imageVectors, texts, imageOfText)
        }
        let (bankImages, bankTexts, _) = make(60)
        let (images, texts, imageOfText) = make(24)
        return (images, texts, imageOfText, QuerybankNormalization(beta: 0, imageQueries: bankImages, textQueries: bankTexts))
    }

    @Test func metricsWithOffsetsEqualAFullMatrixReferenceOfTheCorrectedScores() {
        let (images, texts, imageOfText, bank) = Self.hubbyGallery()
        let I = images.shape[0], T = texts.shape[0]
        for beta: Float in [0, 5, 20] {
            let offsets = bank.with(beta: beta).offsets(images: images, texts: texts)
            let metrics = RetrievalMetrics.evaluate(images: images, texts: texts, imageOfText: imageOfText, offsets: offsets, chunkSize: 5)
            // Reference: rank each row by s − o_text and each column by s − o_image, in Double.
            let s = Tensor.matmul(images, texts, transposeB: true).scalars.map(Double.init)
            let i2t = (0..<I).map { i -> Int in
                let order = (0..<T).sorted { s[i * T + $0] - Double(offsets.texts[$0]) > s[i * T + $1] - Double(offsets.texts[$1]) }
                return order.firstIndex { imageOfText[$0] == i }! + 1
            }
            let t2i = (0..<T).map { t -> Int in
                let order = (0..<I).sorted { s[$0 * T + t] - Double(offsets.images[$0]) > s[$1 * T + t] - Double(offsets.images[$1]) }
                return order.firstIndex(of: imageOfText[t])! + 1
            }
            #expect(metrics.imageToText == RankSummary(ranks: i2t), "β \(beta)")
            #expect(metrics.textToImage == RankSummary(ranks: t2i), "β \(beta)")
            if beta == 0 {
                #expect(metrics == RetrievalMetrics.evaluate(images: images, texts: texts, imageOfText: imageOfText))
            }
        }
        // Hubs hurt here and the correction must help (else this data proves nothing).
        let plain = RetrievalMetrics.evaluate(images: images, texts: texts, imageOfText: imageOfText)
        let corrected = RetrievalMetrics.evaluate(images: images, texts: texts, imageOfText: imageOfText,
                                                  offsets: bank.with(beta: 10).offsets(images: images, texts: texts))
        #expect(corrected.textToImage.recallAt1 > plain.textToImage.recallAt1, "\(plain) → \(corrected)")
    }

    @Test(arguments: [1, 4, 30])
    func twoStageSweepWithOffsetsMatchesTheReference(depth: Int) {
        let (images, texts, imageOfText, bank) = Self.hubbyGallery()
        let I = images.shape[0], T = texts.shape[0], D = images.shape[1]
        let gallery = EncodedGallery(images: images, texts: texts,
                                     imageFragments: randomTensor([I, 3, D], seed: 7), imageCounts: (0..<I).map { 1 + $0 % 3 },
                                     textFragments: randomTensor([T, 4, D], seed: 8), textCounts: (0..<T).map { 1 + $0 % 4 })
        let offsets = bank.with(beta: 10).offsets(images: images, texts: texts)
        let alignment = LocalAlignment()
        let local = gallery.localScores(alignment, images: Array(0..<I), texts: Array(0..<T))
        let sweep = TwoStageRanking(alpha: 1, depth: depth)
            .sweep(alphas: [1, 0.5, 0], gallery: gallery, alignment: alignment, imageOfText: imageOfText, offsets: offsets, chunkSize: 7)
        // Reference: the plain two-stage reference on corrected score matrices, one per direction.
        let s = gallery.globalScores.scalars
        let rows = Tensor(shape: [I, T]) { s[$0] - offsets.texts[$0 % T] }
        let columns = Tensor(shape: [I, T]) { s[$0] - offsets.images[$0 / T] }
        for (alpha, metrics) in sweep {
            let i2t = LocalAlignmentTests.referenceMetrics(global: rows, local: local, imageOfText: imageOfText, alpha: alpha, depth: depth)
            let t2i = LocalAlignmentTests.referenceMetrics(global: columns, local: local, imageOfText: imageOfText, alpha: alpha, depth: depth)
            #expect(metrics.imageToText == i2t.imageToText, "α \(alpha), depth \(depth)")
            #expect(metrics.textToImage == t2i.textToImage, "α \(alpha), depth \(depth)")
        }
        #expect(sweep[0].metrics == RetrievalMetrics.evaluate(images: images, texts: texts, imageOfText: imageOfText, offsets: offsets))
    }
}
