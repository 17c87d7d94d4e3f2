@testable import AmberText
import AmberTensor
import Foundation
import Testing

/// Expected ids and vectors of all-MiniLM-L6-v2 for tricky texts (ops/dev/make_text_fixture.py:
/// ids from Hugging Face `tokenizers`, vectors from a NumPy BERT checked against the real
/// model's outputs).
struct MiniLMFixture: Decodable {
    struct Case: Decodable {
        let text: String
        let ids: [Int32]
        let tokens: [String]
        let sentence: [Float]
        let token_vectors: [[Float]]?
        let token_norms: [Float]
    }
    let cases: [Case]

    static func load() throws -> MiniLMFixture {
        let url = Bundle.module.url(forResource: "minilm_fixture", withExtension: "json", subdirectory: "Fixtures")!
        return try JSONDecoder().decode(MiniLMFixture.self, from: Data(contentsOf: url))
    }
}

/// The model directory: `AMBER_TEXT_MODEL`, else the checkout's `.amber/models/all-minilm-l6-v2`
/// (ops/setup and ops/test fetch it).
var modelDirectory: String {
    if let path = ProcessInfo.processInfo.environment["AMBER_TEXT_MODEL"], !path.isEmpty { return path }
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    return root.appendingPathComponent(".amber/models/all-minilm-l6-v2").path
}

func cosine(_ a: [Float], _ b: [Float]) -> Float {
    let dot = zip(a, b).map { Double($0) * Double($1) }.reduce(0, +)
    let na = a.map { Double($0) * Double($0) }.reduce(0, +).squareRoot(), nb = b.map { Double($0) * Double($0) }.reduce(0, +).squareRoot()
    return Float(dot / (na * nb))
}

@Suite("MiniLM encoder against the reference fixture")
struct MiniLMFixtureTests {
    static let encoder: Result<MiniLMEncoder, Error> = Result { try MiniLMEncoder(directory: modelDirectory, batchSize: 4) }

    func encoder() throws -> MiniLMEncoder {
        do { return try Self.encoder.get() } catch {
            Issue.record("the text-encoder tests need the model files: run ops/test (or ops/setup), which fetches them into .amber/models, or set AMBER_TEXT_MODEL. \(error)")
            throw error
        }
    }

    @Test func tokenIdsMatchHuggingFaceTokenizers() throws {
        let encoder = try encoder()
        for item in try MiniLMFixture.load().cases {
            let ids = encoder.tokenizer.encode(item.text)
            #expect(ids == item.ids, "\(item.text): \(encoder.tokenizer.tokens(ids)) vs \(item.tokens)")
        }
    }

    @Test func vectorsMatchTheReference() throws {
        let encoder = try encoder()
        let fixture = try MiniLMFixture.load()
        // Batched together (padding and masking exercised) and one by one: the same answers.
        let batched = encoder.encode(fixture.cases.map(\.text))
        for (item, encoding) in zip(fixture.cases, batched) {
            #expect(cosine(encoding.sentenceVector.scalars, item.sentence) >= 0.99999, "\(item.text)")
            #expect(encoding.sentenceVector.maxAbsoluteDifference(to: Tensor(shape: [384], scalars: item.sentence)) < 1e-4)
            let norms = encoding.tokenVectors.squared().sum(axis: -1).sqrt().scalars
            for (mine, theirs) in zip(norms, item.token_norms) { #expect(abs(mine - theirs) < 1e-3 * theirs) }
            if let vectors = item.token_vectors {
                for (t, reference) in vectors.enumerated() {
                    let mine = encoding.tokenVectors.slice(axis: 0, t..<t + 1).scalars
                    #expect(cosine(mine, reference) >= 0.9999, "\(item.text) token \(t)")
                }
            }
            let alone = encoder.encode(item.text)
            #expect(alone.tokenVectors.maxAbsoluteDifference(to: encoding.tokenVectors) < 1e-4, "padding changed \(item.text)")
        }
    }

    @Test func arithmeticCountsThePaddedBatchesEncodeForms() throws {
        let encoder = try encoder()       // batches of 4
        let texts = ["a dog", "a dog runs", "two dogs run on the beach", "a cat", "the cat sleeps on a warm chair today"]
        let lengths = texts.map { encoder.tokenizer.encode($0).count }.sorted()
        // Counted by hand: sorted lengths form batches [0..<4] and [4..<5], each padded to its longest.
        var expected = 0.0
        for batch in [Array(lengths[0..<4]), Array(lengths[4..<5])] {
            let B = Double(batch.count), n = Double(batch.max()!)
            var perLayer = 0.0
            for (rows, inner, columns) in [(B * n, 384.0, 384.0), (B * n, 384, 384), (B * n, 384, 384), (B * n, 384, 384),
                                           (B * n, 384, 1536), (B * n, 1536, 384)] {
                perLayer += 2 * rows * inner * columns
            }
            perLayer += B * 12 * (2 * n * 32 * n + 2 * n * n * 32)    // per head: Q·Kᵀ and P·V
            expected += 6 * perLayer
        }
        #expect(abs(encoder.arithmetic(ofEncoding: texts) - expected) <= 1e-9 * expected)
        #expect(encoder.arithmetic(ofEncoding: []) == 0)
    }

    @Test func missingOrCorruptModelFilesSayHowToFetchThem() throws {
        let directory = NSTemporaryDirectory() + "amber-model-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        do {
            _ = try MiniLMEncoder(directory: directory)
            Issue.record("a missing model must be an error")
        } catch let error as TextEncoderFileError {
            #expect(error.description.contains("model.safetensors: missing; run ops/setup"))
        }
        FileManager.default.createFile(atPath: directory + "/model.safetensors", contents: Data([1, 2, 3]))
        do {
            _ = try MiniLMEncoder(directory: directory)
            Issue.record("a corrupt model must be an error")
        } catch let error as TextEncoderFileError {
            #expect(error.description.contains("fetch it again with ops/setup"))
        }
    }
}
