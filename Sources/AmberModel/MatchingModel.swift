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
