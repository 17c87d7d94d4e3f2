@testable import AmberModel
import AmberTensor
import AmberTestSupport
import Testing

/// Plain full-matrix reference: rank by sorting each row / column.
func referenceMetrics(images: Tensor, texts: Tensor, imageOfText: [Int]) -> (i2t: [Int], t2i: [Int]) {
    let I = images.shape[0], T = texts.shape[0], D = images.shape[1]
    let a = images.scalars, b = texts.scalars
    var s = [[Double]](repeating: [Double](repeating: 0, count: T), count: I)
    for i in 0..<I { for t in 0..<T { s[i][t] = (0..<D).reduce(0.0) { $0 + Double(a[i * D + $1]) * Double(b[t * D + $1]) } } }
    let i2t = (0..<I).map { i -> Int in
        let order = (0..<T).sorted { s[i][$0] > s[i][$1] }
        return order.firstIndex { imageOfText[$0] == i }! + 1
    }
    let t2i = (0..<T).map { t -> Int in
        let order = (0..<I).sorted { s[$0][t] > s[$1][t] }
        return order.firstIndex(of: imageOfText[t])! + 1
    }
    return (i2t, t2i)
}

@Suite("Retrieval metrics")
struct RetrievalMetricsTests {
    @Test("chunked ranks equal a full-matrix reference", arguments: [1, 7, 64])
    func chunkedEqualsReference(chunkSize: Int) {
        var generator = RandomGenerator(seed: 5)
        let images = Tensor.randomNormal([40, 16], using: &generator).l2Normalized()
        let imageOfText = (0..<200).map { $0 / 5 }
        // Texts near their image, with noise so ranks spread out.
        let texts = (images.indexSelect(imageOfText) + Tensor.randomNormal([200, 16], standardDeviation: 0.6, using: &generator)).l2Normalized()
        let metrics = RetrievalMetrics.evaluate(images: images, texts: texts, imageOfText: imageOfText, chunkSize: chunkSize)
        let reference = referenceMetrics(images: images, texts: texts, imageOfText: imageOfText)
        let expectedI2T = RankSummary(ranks: reference.i2t), expectedT2I = RankSummary(ranks: reference.t2i)
        #expect(metrics.imageToText == expectedI2T)
        #expect(metrics.textToImage == expectedT2I)
        #expect(metrics.rsum > 0 && metrics.rsum < 600)
        #expect(metrics.textToImage.recallAt1 < 100, "the noise must make the task non-trivial")
    }

    @Test func perfectAndReversedEmbeddingsGiveTheExtremes() {
        let images = Tensor(shape: [3, 3], scalars: [1, 0, 0, 0, 1, 0, 0, 0, 1])
        let perfect = RetrievalMetrics.evaluate(images: images, texts: images.indexSelect([0, 0, 1, 1, 2, 2]), imageOfText: [0, 0, 1, 1, 2, 2])
        #expect(perfect.rsum == 600)
        #expect(perfect.imageToText.medianRank == 1)
        let wrong = RetrievalMetrics.evaluate(images: images, texts: images.indexSelect([1, 1, 2, 2, 0, 0]), imageOfText: [0, 0, 1, 1, 2, 2])
        #expect(wrong.textToImage.recallAt1 == 0)
        #expect(wrong.imageToText.recallAt1 == 0)
    }

    @Test func rankSummaryArithmetic() {
        let summary = RankSummary(ranks: [1, 2, 6, 11])
        #expect(summary.recallAt1 == 25 && summary.recallAt5 == 50 && summary.recallAt10 == 75)
        #expect(summary.medianRank == 4 && summary.meanRank == 5)
    }
}

@Suite("Linear CCA baseline")
struct LinearCCATests {
    @Test func recoversASharedLatentAndRetrievesWithIt() throws {
        // x = A z + noise, y = B z + noise with a 4-d shared latent z.
        var generator = RandomGenerator(seed: 9)
        let n = 400
        let z = Tensor.randomNormal([n, 4], using: &generator)
        let a = Tensor.randomNormal([4, 12], using: &generator), b = Tensor.randomNormal([4, 10], using: &generator)
        let x = Tensor.matmul(z, a) + Tensor.randomNormal([n, 12], standardDeviation: 0.3, using: &generator)
        let y = Tensor.matmul(z, b) + Tensor.randomNormal([n, 10], standardDeviation: 0.3, using: &generator)
        let cca = try LinearCCA.fit(x: x, y: y, configuration: .init(regularization: 1e-4, components: 4, power: 0))
        #expect(cca.correlations.count == 4)
        #expect(cca.correlations.allSatisfy { $0 > 0.9 && $0 <= 1.0001 }, "\(cca.correlations)")
        let noise = try LinearCCA.fit(x: Tensor.randomNormal([n, 12], using: &generator), y: Tensor.randomNormal([n, 10], using: &generator),
                                      configuration: .init(regularization: 1e-4, components: 4, power: 0))
        #expect(noise.correlations[0] < 0.4, "independent views must not correlate: \(noise.correlations)")
        let metrics = RetrievalMetrics.evaluate(images: cca.embedX(x), texts: cca.embedY(y), imageOfText: Array(0..<n))
        #expect(metrics.imageToText.recallAt10 > 50)
    }
}

@Suite("Retrieval data")
struct RetrievalDataTests {
    @Test func subsetReindexesImagesTextsAndTokens() {
        let data = RetrievalData(
            imageGlobal: Tensor(shape: [3, 1], scalars: [0, 1, 2]), imageLocal: Tensor(shape: [3, 1, 1], scalars: [0, 1, 2]),
            textGlobal: Tensor(shape: [6, 1], scalars: [0, 1, 2, 3, 4, 5]),
            textTokens: Tensor(shape: [12, 1]) { Float($0) }, tokenOffsets: [0, 2, 4, 6, 8, 10, 12],
            imageOfText: [0, 0, 1, 1, 2, 2], captions: ["a", "b", "c", "d", "e", "f"])
        let tail = data.subset(images: 1..<3)
        #expect(tail.imageCount == 2 && tail.textCount == 4)
        #expect(tail.imageOfText == [0, 0, 1, 1])
        #expect(tail.tokenOffsets == [0, 2, 4, 6, 8])
        #expect(tail.textTokens.scalars.first == 4)
        #expect(tail.captions == ["c", "d", "e", "f"])
    }
}
