import AmberCatalog
import AmberModel
import AmberSearch
import AmberTensor

/// A small seeded gallery and a random model for search and server tests.
public enum SearchEngineFixture {
    /// 16 images with 3 fragments (12-d), 4 captions each with 2–4 tokens (8-d).
    public static func data() -> RetrievalData {
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

    /// With `gare`, the model has a GARE scorer (its increment head random, so Δ ≠ 0) as stage 2.
    public static func model(alpha: Float, beta: Float,
                             dimensions: TrainedModel.Dimensions = TrainedModel.Dimensions(imageGlobal: 12, imageFragment: 12, textGlobal: 8, textFragment: 8),
                             gare: Bool = false) -> TrainedModel {
        var encoder = ModalityEncoder.Configuration()
        encoder.jointDimension = 64
        var generator = RandomGenerator(seed: 3)
        let model = dimensions.makeModel(encoder, gare: gare ? GapAwareScorer.Configuration(width: 16) : nil, generator: &generator)
        if let scorer = model.gare {
            scorer.head.weight.assign(Tensor.randomNormal(scorer.head.weight.shape, standardDeviation: 0.05, using: &generator))
        }
        let bank = QuerybankNormalization(beta: beta, imageQueries: Tensor.randomNormal([30, 64], using: &generator).l2Normalized(axis: -1),
                                          textQueries: Tensor.randomNormal([40, 64], using: &generator).l2Normalized(axis: -1))
        return TrainedModel(encoder: encoder, dimensions: dimensions, model: model, step: 0, metrics: nil, stageTwoMetrics: nil,
                            ranking: TwoStageRanking(alpha: alpha, depth: 6), alignment: LocalAlignment(), querybank: bank, stageTwo: gare ? .gare : .scan)
    }

    public static func features(_ data: RetrievalData) -> (images: [(GalleryItem, ItemFeatures)], texts: [(GalleryItem, ItemFeatures)]) {
        let images = (0..<data.imageCount).map { i in
            (GalleryItem(itemID: Int64(100 + i), externalID: "img\(i)", caption: nil),
             ItemFeatures(global: data.imageGlobal.slice(axis: 0, i ..< i + 1).scalars, local: data.imageLocal.slice(axis: 0, i ..< i + 1).scalars, localCount: 3))
        }
        let texts = (0..<data.textCount).map { t in
            (GalleryItem(itemID: Int64(1000 + t), externalID: "txt\(t)", caption: data.captions[t]),
             ItemFeatures(global: data.textGlobal.slice(axis: 0, t ..< t + 1).scalars,
                           local: data.textTokens.slice(axis: 0, data.tokenOffsets[t] ..< data.tokenOffsets[t + 1]).scalars,
                           localCount: data.tokenOffsets[t + 1] - data.tokenOffsets[t]))
        }
        return (images, texts)
    }

}
