import AmberTensor

/// The matching model of DESIGN §3: one ``ModalityEncoder`` per modality; the score of an
/// image and a text is the dot product of their fused embeddings, `s(i, t) = f_i · f_t`.
public struct MatchingModel: Sendable {
    public let imageEncoder: ModalityEncoder
    public let textEncoder: ModalityEncoder

    public init(imageGlobal: Int, imageFragment: Int, textGlobal: Int, textFragment: Int,
                configuration: ModalityEncoder.Configuration, generator: inout RandomGenerator) {
        imageEncoder = ModalityEncoder(name: "image", globalDimension: imageGlobal, fragmentDimension: imageFragment,
                                       configuration: configuration, generator: &generator)
        textEncoder = ModalityEncoder(name: "text", globalDimension: textGlobal, fragmentDimension: textFragment,
                                      configuration: configuration, generator: &generator)
    }

    public var parameters: [Parameter] { imageEncoder.parameters + textEncoder.parameters }

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
}
