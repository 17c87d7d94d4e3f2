@testable import AmberModel
@testable import AmberSearch
import AmberTensor
import AmberTestSupport
import Testing

@Suite("Search engine (two-stage ranking)")
struct SearchEngineTests {
    /// 16 images with 3 fragments (12-d), 4 captions each with 2–4 tokens (8-d).
    static func data() -> RetrievalData {
        var generator = RandomGenerator(seed: 21)
        let I = 16, T = 64
        let imageLocal = Tensor.randomNormal([I, 3, 12], using: &generator)
        let counts = (0..<T).map { 2 + $0 % 3 }
        var offsets = [0]
        for c in counts { offsets.append(offsets.last! + c) }
        let map = Tensor.randomNormal([12, 8], using: &generator)
        let imageOfText = (0..<T).map { $0 / 4 }
        var tokens: [Tensor] = []
        for t in 0..<T {
            let base = Tensor.matmul(imageLocal.slice(axis: 0, imageOfText[t] ..< imageOfText[t] + 1).reshaped([3, 12]), map)
            tokens.append(base.slice(axis: 0, 0..<min(3, counts[t])))
            if counts[t] > 3 { tokens.append(Tensor.randomNormal([counts[t] - 3, 8], using: &generator)) }
        }
        let textTokens = Tensor.concatenate(tokens, axis: 0) + Tensor.randomNormal([offsets.last!, 8], standardDeviation: 0.8, using: &generator)
        let textGlobal = Tensor.concatenate((0..<T).map { textTokens.slice(axis: 0, offsets[$0] ..< offsets[$0 + 1]).mean(axis: 0).reshaped([1, 8]) }, axis: 0)
        return RetrievalData(imageGlobal: imageLocal.mean(axis: 1), imageLocal: imageLocal, textGlobal: textGlobal, textTokens: textTokens,
                             tokenOffsets: offsets, imageOfText: imageOfText, captions: (0..<T).map { "caption \($0)" })
    }

    static func model(alpha: Float, beta: Float) -> TrainedModel {
        var encoder = ModalityEncoder.Configuration()
        encoder.jointDimension = 64
        var generator = RandomGenerator(seed: 3)
        let dimensions = TrainedModel.Dimensions(imageGlobal: 12, imageFragment: 12, textGlobal: 8, textFragment: 8)
        let model = dimensions.makeModel(encoder, generator: &generator)
        let bank = QuerybankNormalization(beta: beta, imageQueries: Tensor.randomNormal([30, 64], using: &generator).l2Normalized(axis: -1),
                                          textQueries: Tensor.randomNormal([40, 64], using: &generator).l2Normalized(axis: -1))
        return TrainedModel(encoder: encoder, dimensions: dimensions, model: model, step: 0, metrics: nil, stageTwoMetrics: nil,
                            ranking: TwoStageRanking(alpha: alpha, depth: 6), alignment: LocalAlignment(), querybank: bank)
    }

    static func features(_ data: RetrievalData) -> (images: [(GalleryItem, QueryFeatures)], texts: [(GalleryItem, QueryFeatures)]) {
        let images = (0..<data.imageCount).map { i in
            (GalleryItem(itemID: Int64(100 + i), externalID: "img\(i)", caption: nil),
             QueryFeatures(global: data.imageGlobal.slice(axis: 0, i ..< i + 1).scalars, local: data.imageLocal.slice(axis: 0, i ..< i + 1).scalars, localCount: 3))
        }
        let texts = (0..<data.textCount).map { t in
            (GalleryItem(itemID: Int64(1000 + t), externalID: "txt\(t)", caption: data.captions[t]),
             QueryFeatures(global: data.textGlobal.slice(axis: 0, t ..< t + 1).scalars,
                           local: data.textTokens.slice(axis: 0, data.tokenOffsets[t] ..< data.tokenOffsets[t + 1]).scalars,
                           localCount: data.tokenOffsets[t + 1] - data.tokenOffsets[t]))
        }
        return (images, texts)
    }

    @Test("recall computed through the engine equals the offline two-stage evaluation",
          arguments: [(Float(1), Float(0)), (0.6, 0), (0.6, 10), (1, 10)])
    func theEngineRanksAsTheOfflineEvaluationDoes(alpha: Float, beta: Float) {
        let data = Self.data()
        let trained = Self.model(alpha: alpha, beta: beta)
        let (images, texts) = Self.features(data)
        let engine = SearchEngine(model: trained, version: 1, images: images, texts: texts)
        // Offline: the sweep over the encoded gallery, with the model's offsets.
        let gallery = trained.model.encodeGallery(data)
        let offline = trained.ranking.sweep(alphas: [alpha], gallery: gallery, alignment: trained.alignment, imageOfText: data.imageOfText,
                                            offsets: trained.offsets(for: gallery))[0].metrics
        // Online: every image and every caption as a query, full rankings.
        let options = SearchOptions(k: 1000, rerank: 6, alpha: alpha)
        let imageRanks = (0..<data.imageCount).map { i in
            engine.search(images[i].1, of: .image, options: options).firstIndex { data.imageOfText[Int($0.item.itemID - 1000)] == i }! + 1
        }
        let textRanks = (0..<data.textCount).map { t in
            engine.search(texts[t].1, of: .text, options: options).firstIndex { $0.item.itemID == Int64(100 + data.imageOfText[t]) }! + 1
        }
        let online = RetrievalMetrics(imageToText: RankSummary(ranks: imageRanks), textToImage: RankSummary(ranks: textRanks))
        #expect(online == offline, "α \(alpha), β \(beta)")
        #expect(online.rsum > 0 && online.rsum < 600)
    }

    @Test func hitsCarryTheirScoresAndStageTwoOnlyTouchesTheTopCandidates() {
        let data = Self.data()
        let trained = Self.model(alpha: 0.5, beta: 10)
        let (images, texts) = Self.features(data)
        let engine = SearchEngine(model: trained, version: 4, images: images, texts: texts)
        let hits = engine.search(texts[5].1, of: .text, options: SearchOptions(k: 10, rerank: 4))
        #expect(hits.count == 10)
        #expect(hits.prefix(4).allSatisfy { $0.local != nil && abs($0.fused - (0.5 * $0.global + 0.5 * $0.local!)) < 1e-6 })
        #expect(hits.dropFirst(4).allSatisfy { $0.local == nil && $0.fused == $0.global })
        #expect(zip(hits.prefix(4), hits.prefix(4).dropFirst()).allSatisfy { $0.fused >= $1.fused })
        // Stage 2 off: the stage-1 order, global = fused.
        let plain = engine.search(texts[5].1, of: .text, options: SearchOptions(k: 10, rerank: 0))
        #expect(plain.allSatisfy { $0.local == nil } && zip(plain, plain.dropFirst()).allSatisfy { $0.global >= $1.global })
        // Text results carry their captions; image results their external ids.
        let toTexts = engine.search(images[2].1, of: .image, options: SearchOptions(k: 3, rerank: 0))
        #expect(toTexts.allSatisfy { $0.item.caption?.hasPrefix("caption ") == true })
        #expect(engine.images.position(of: 102) == 2 && engine.images.position(of: 5) == nil)
    }
}
