import AmberTensor

/// The matching model: one ``ModalityEncoder`` per modality; the score of an
/// image and a text is the dot product of their fused embeddings, `s(i, t) = f_i · f_t`.
public struct MatchingModel: Sendable {
    public let imageEncoder: ModalityEncoder
    public let textEncoder: ModalityEncoder
    /// GARE's pair scorer (a training objective and a stage-2 re-ranker), when the model has one.
    public let gare: GapAwareScorer?

    /// The encoders are drawn from `generator` first, then the scorer, so a model with a scorer
    /// starts its encoders where the same seed without one does.
    public init(imageGlobal: Int, imageFragment: Int, textGlobal: Int, textFragment: Int,
                configuration: ModalityEncoder.Configuration, gare: GapAwareScorer.Configuration? = nil, generator: inout RandomGenerator) {
        imageEncoder = ModalityEncoder(name: "image", globalDimension: imageGlobal, fragmentDimension: imageFragment,
                                       configuration: configuration, generator: &generator)
        textEncoder = ModalityEncoder(name: "text", globalDimension: textGlobal, fragmentDimension: textFragment,
                                      configuration: configuration, generator: &generator)
        self.gare = gare.map { GapAwareScorer(dimension: configuration.jointDimension, configuration: $0, generator: &generator) }
    }

    public var parameters: [Parameter] { imageEncoder.parameters + textEncoder.parameters + (gare?.parameters ?? []) }

    /// Starts the global projections at a CCA solution, `h = (g − μ) A` (its first
    /// `jointDimension` directions), so training begins where the closed-form baseline ends;
    /// the fragment projections start at the same map when the dimensions agree, and the gates
    /// start closed-ish and uniform (`W_z = 0`, `z = σ(−2) ≈ 0.12`: mostly the global vector).
    public func warmStart(from cca: LinearCCA) {
        let D = imageEncoder.configuration.jointDimension
        precondition(cca.projectionX.shape[1] >= D && cca.projectionY.shape[1] >= D,
                     "warmStart: CCA has \(cca.projectionX.shape[1]) directions, the model needs \(D)")
        for (encoder, projection, mean) in [(imageEncoder, cca.projectionX, cca.meanX), (textEncoder, cca.projectionY, cca.meanY)] {
            let weight = projection.slice(axis: 1, 0..<D)
            // Scale so that projected vectors have unit-order norms, like the Xavier start.
            let scale = 1 / max(withoutGradients { Tensor.matmul(mean.reshaped([1, -1]), weight).abs().mean().scalar }, 1e-3)
            let bias = Tensor.matmul(mean.reshaped([1, -1]), weight).reshaped([D]) * (-scale)
            encoder.globalProjection.weight.assign(weight * scale)
            encoder.globalProjection.bias.assign(bias)
            // The fragments live in the same space as the global vector (image: the global is
            // the mean of the grid cells; text: the sentence vector is the mean of the tokens),
            // so the same projection starts the fragment path in the CCA space too.
            if encoder.fragmentProjection.weight.shape == weight.shape {
                encoder.fragmentProjection.weight.assign(weight * scale)
                encoder.fragmentProjection.bias.assign(bias)
            }
            encoder.gate.weight.assign(Tensor.zeros(encoder.gate.weight.shape))
            encoder.gate.bias.assign(Tensor(shape: [D], repeating: -2))
        }
    }

    /// Copies every parameter value from `other` (same configuration): starts a momentum encoder.
    public func copyParameters(from other: MatchingModel) {
        precondition(parameters.count == other.parameters.count, "copyParameters: models differ")
        for (target, source) in zip(parameters, other.parameters) { target.assign(source.value) }
    }

    /// Fused embeddings of every image and text of `data` (inference, in chunks).
    public func embed(_ data: RetrievalData, chunkSize: Int = 256) -> (images: Tensor, texts: Tensor) {
        withoutGradients {
            func chunks(_ count: Int, _ body: ([Int]) -> Tensor) -> Tensor {
                Tensor.concatenate(stride(from: 0, to: count, by: chunkSize).map { body(Array($0 ..< min($0 + chunkSize, count))) }, axis: 0)
            }
            return (chunks(data.imageCount) { imageEncoder(data.imageInput($0)).fused },
                    chunks(data.textCount) { textEncoder(data.textInput($0)).fused })
        }
    }

    /// Fused embeddings and projected fragments of every image and text of `data`
    /// (inference, in chunks): what the two-stage ranking needs.
    public func encodeGallery(_ data: RetrievalData, chunkSize: Int = 256) -> EncodedGallery {
        withoutGradients {
            func encodeAll(_ count: Int, _ encode: ([Int]) -> EncodedBatch) -> (fused: Tensor, fragments: Tensor) {
                let batches = stride(from: 0, to: count, by: chunkSize).map { encode(Array($0 ..< min($0 + chunkSize, count))) }
                // Every item keeps its batch's width (its own fragments and that batch's padding).
                let owners = batches.enumerated().flatMap { b, batch in (0..<batch.fragments.shape[0]).map { (b, $0) } }
                let D = batches.first?.fragments.shape[2] ?? 0
                let padded = Tensor.padded(counts: owners.map { batches[$0.0].fragments.shape[1] }, rowWidth: D) { item, row in
                    let (b, position) = owners[item]
                    let n = batches[b].fragments.shape[1]
                    batches[b].fragments.withUnsafeBufferPointer { f in
                        for j in 0..<(n * D) { row[j] = f[position * n * D + j] }
                    }
                }
                return (Tensor.concatenate(batches.map(\.fused), axis: 0), padded)
            }
            let images = encodeAll(data.imageCount) { imageEncoder(data.imageInput($0)) }
            let texts = encodeAll(data.textCount) { textEncoder(data.textInput($0)) }
            return EncodedGallery(images: images.fused, texts: texts.fused,
                                  imageFragments: images.fragments, imageCounts: (0..<data.imageCount).map(data.fragmentCount(ofImage:)),
                                  textFragments: texts.fragments, textCounts: (0..<data.textCount).map { data.tokenOffsets[$0 + 1] - data.tokenOffsets[$0] })
        }
    }
}

/// Everything the two-stage ranking needs of a set of images and texts, encoded.
public struct EncodedGallery: Sendable {
    /// `[I, D]` and `[T, D]` fused, unit-length embeddings (stage 1).
    public var images: Tensor
    public var texts: Tensor
    /// `[I, n, D]` and `[T, m, D]` projected fragments (stage 2), padded; real rows per item in the counts.
    public var imageFragments: Tensor
    public var imageCounts: [Int]
    public var textFragments: Tensor
    public var textCounts: [Int]

    public init(images: Tensor, texts: Tensor, imageFragments: Tensor, imageCounts: [Int], textFragments: Tensor, textCounts: [Int]) {
        precondition(images.rank == 2 && texts.rank == 2 && imageFragments.rank == 3 && textFragments.rank == 3
                     && imageFragments.shape[0] == images.shape[0] && textFragments.shape[0] == texts.shape[0]
                     && imageCounts.count == images.shape[0] && textCounts.count == texts.shape[0],
                     "EncodedGallery: images \(images.shape), texts \(texts.shape), fragments \(imageFragments.shape), \(textFragments.shape)")
        self.images = images
        self.texts = texts
        self.imageFragments = imageFragments
        self.imageCounts = imageCounts
        self.textFragments = textFragments
        self.textCounts = textCounts
    }

    /// Stage-1 scores `[I, T]`.
    public var globalScores: Tensor { Tensor.matmul(images, texts, transposeB: true) }

    /// Stage-2 local scores of the given images against the given texts, `[images, texts]`.
    public func localScores(_ alignment: LocalAlignment, images: [Int], texts: [Int]) -> Tensor {
        localScores(.scan(alignment), images: images, texts: texts)
    }

    /// Stage-2 scores of `scorer` for the given images against the given texts, `[images, texts]`.
    public func localScores(_ scorer: PairScorer, images: [Int], texts: [Int]) -> Tensor {
        scorer.scores(imageFragments: imageFragments.indexSelect(images), imageCounts: images.map { imageCounts[$0] },
                      textFragments: textFragments.indexSelect(texts), textCounts: texts.map { textCounts[$0] },
                      textFused: self.texts.indexSelect(texts))
    }
}
