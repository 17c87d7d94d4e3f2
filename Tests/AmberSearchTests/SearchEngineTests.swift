@testable import AmberModel
@testable import AmberSearch
import AmberCatalog
import AmberTensor
import AmberTestSupport
import Testing

@Suite("Search engine (two-stage ranking)")
struct SearchEngineTests {
    @Test("recall computed through the engine equals the offline two-stage evaluation (SCAN-style and GARE stage 2)",
          arguments: [(Float(1), Float(0), false), (0.6, 0, false), (0.6, 10, false), (1, 10, false), (0.6, 10, true), (0, 0, true)])
    func theEngineRanksAsTheOfflineEvaluationDoes(alpha: Float, beta: Float, gare: Bool) {
        let data = SearchEngineFixture.data()
        let trained = SearchEngineFixture.model(alpha: alpha, beta: beta, gare: gare)
        let (images, texts) = SearchEngineFixture.features(data)
        let engine = SearchEngine(model: trained, version: 1, images: images, texts: texts)
        // Offline: the sweep over the encoded gallery, with the model's offsets.
        let gallery = trained.model.encodeGallery(data)
        let offline = trained.ranking.sweep(alphas: [alpha], gallery: gallery, scorer: trained.pairScorer, imageOfText: data.imageOfText,
                                            offsets: trained.offsets(for: gallery))[0].metrics
        if gare, alpha < 1 {
            // GARE re-ranks differently from the SCAN-style alignment.
            let scan = trained.ranking.sweep(alphas: [alpha], gallery: gallery, alignment: trained.alignment, imageOfText: data.imageOfText,
                                             offsets: trained.offsets(for: gallery))[0].metrics
            #expect(scan != offline)
        }
        // Online: every image and every caption as a query, full rankings.
        let options = SearchOptions(k: 1000, rerank: 6, alpha: alpha)
        let imageRanks = (0..<data.imageCount).map { i in
            engine.search(images[i].1, of: .image, options: options).firstIndex { data.imageOfText[Int($0.item.itemID - 1000)] == i }! + 1
        }
        let textRanks = (0..<data.textCount).map { t in
            engine.search(texts[t].1, of: .text, options: options).firstIndex { $0.item.itemID == Int64(100 + data.imageOfText[t]) }! + 1
        }
        let online = RetrievalMetrics(imageToText: RankSummary(ranks: imageRanks), textToImage: RankSummary(ranks: textRanks))
        #expect(online == offline, "α \(alpha), β \(beta), GARE \(gare)")
        #expect(online.rsum > 0 && online.rsum < 600)
    }

    @Test func hitsCarryTheirScoresAndStageTwoOnlyTouchesTheTopCandidates() {
        let data = SearchEngineFixture.data()
        let trained = SearchEngineFixture.model(alpha: 0.5, beta: 10)
        let (images, texts) = SearchEngineFixture.features(data)
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
        // An item as the query (its stored embedding and fragments) ranks as its features do.
        for (modality, entries) in [(Modality.image, images), (.text, texts)] {
            let byItem = engine.search(itemAt: 3, of: modality, options: SearchOptions(k: 8, rerank: 5))
            let byFeatures = engine.search(entries[3].1, of: modality, options: SearchOptions(k: 8, rerank: 5))
            #expect(byItem.map(\.item) == byFeatures.map(\.item), "\(modality)")
            #expect(zip(byItem, byFeatures).allSatisfy { abs($0.fused - $1.fused) < 1e-5 })
        }
    }
}
