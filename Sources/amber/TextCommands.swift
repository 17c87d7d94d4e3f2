import AmberCatalog
import AmberTensor
import AmberText
import ArgumentParser
import Foundation

/// Where the text encoder's files are; shared by the text commands.
struct TextModelOptions: ParsableArguments {
    @Option(help: "Directory with model.safetensors and vocab.txt (default: $AMBER_TEXT_MODEL or $AMBER_HOME/models/all-minilm-l6-v2).")
    var model: String?

    func load(batchSize: Int = 32) throws -> MiniLMEncoder {
        try MiniLMEncoder(directory: model ?? MiniLMEncoder.defaultDirectory, batchSize: batchSize)
    }
}

struct EncodeTextCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "encode-text",
        abstract: "Encode text with the native all-MiniLM-L6-v2: print the tokens and the sentence vector's first values."
    )

    @Argument(help: "The text to encode.")
    var text: String

    @OptionGroup var textModel: TextModelOptions

    @Option(help: "How many values of the sentence vector to print.")
    var values: Int = 8

    func run() throws {
        let encoder = try textModel.load()
        let encoding = encoder.encode(text)
        print("tokens (\(encoding.ids.count)): \(encoder.tokenizer.tokens(encoding.ids).joined(separator: " "))")
        print("ids: \(encoding.ids.map(String.init).joined(separator: " "))")
        let shown = encoding.sentenceVector.scalars.prefix(values).map { String(format: "%.5f", $0) }
        print("sentence vector [\(encoding.sentenceVector.count)]: \(shown.joined(separator: " ")) …")
        print("token vectors: [\(encoding.tokenVectors.shape.map(String.init).joined(separator: ", "))]")
    }
}

struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Evaluations: a trained model's retrieval (default), the text encoder's parity.",
        subcommands: [RetrievalEvalCommand.self, TextParityCommand.self, ImageParityCommand.self, FeedbackExperimentCommand.self, CompositionalEvalCommand.self, LabelEvalCommand.self],
        defaultSubcommand: RetrievalEvalCommand.self
    )
}

/// Compares the native encoder with the reference features of a dataset.
struct TextParityCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "text-parity",
        abstract: "Check the native text encoder against caps_tokens.npy / caps_global.npy of a dataset and print the worst cases."
    )

    @Option(help: "Dataset directory with caps.txt, caps_tokens.npy, caps_tok_offsets.npy, caps_global.npy.")
    var data: String = "../shared/data/flickr8k/reference-dev100"

    @OptionGroup var textModel: TextModelOptions

    @Option(help: "Worst cases to print.")
    var worst: Int = 5

    func run() throws {
        let encoder = try textModel.load()
        let captions = try String(contentsOfFile: data + "/caps.txt", encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false)
            .map(String.init).filter { !$0.isEmpty }
        let offsets = try NumpyFile.read(data + "/caps_tok_offsets.npy").int64Values()
        let tokens = try NumpyFile.read(data + "/caps_tokens.npy")
        let sentences = try NumpyFile.read(data + "/caps_global.npy").tensor()
        let started = Date()
        let encodings = encoder.encode(captions)
        let seconds = Date().timeIntervalSince(started)
        var countMismatches: [(Int, Int, Int)] = []
        var tokenWorst: [(Float, Int, Int)] = []
        var sentenceWorst: [(Float, Int)] = []
        var minimumToken: Float = 1, minimumSentence: Float = 1
        for (j, encoding) in encodings.enumerated() {
            let expectedCount = Int(offsets[j + 1] - offsets[j])
            if encoding.ids.count != expectedCount {
                countMismatches.append((j, encoding.ids.count, expectedCount))
                continue
            }
            let reference = try tokens.tensor(rows: Int(offsets[j]) ..< Int(offsets[j + 1]))
            let mine = encoding.tokenVectors.l2Normalized(axis: -1), theirs = reference.l2Normalized(axis: -1)
            let cosines = (mine * theirs).sum(axis: -1).scalars
            for (t, c) in cosines.enumerated() {
                minimumToken = min(minimumToken, c)
                tokenWorst.append((c, j, t))
            }
            let s = (encoding.sentenceVector * sentences.slice(axis: 0, j..<j + 1).reshaped([-1]).l2Normalized()).sum().scalar
            minimumSentence = min(minimumSentence, s)
            sentenceWorst.append((s, j))
        }
        tokenWorst.sort { $0.0 < $1.0 }
        sentenceWorst.sort { $0.0 < $1.0 }
        let tokenCount = tokenWorst.count
        print("text parity on \(captions.count) captions of \(data) (\(String(format: "%.1f", seconds)) s, \(String(format: "%.0f", Double(captions.count) / seconds)) captions/s)")
        print("token counts equal to caps_tok_offsets: \(captions.count - countMismatches.count)/\(captions.count)")
        for (j, got, expected) in countMismatches.prefix(worst) {
            print("  caption \(j): \(got) tokens, expected \(expected): \(captions[j])")
            print("    \(encoder.tokenizer.tokens(encodings[j].ids).joined(separator: " "))")
        }
        print(String(format: "token vectors: %d compared, minimum cosine %.6f (goal ≥ 0.999), below 0.999: %d",
                     tokenCount, minimumToken, tokenWorst.filter { $0.0 < 0.999 }.count))
        for (c, j, t) in tokenWorst.prefix(worst) {
            print(String(format: "  %.6f caption %d token %d '%@': %@", c, j, t, encoder.tokenizer.tokens([encodings[j].ids[t]])[0], captions[j]))
        }
        print(String(format: "sentence vectors: minimum cosine %.7f (goal ≥ 0.9999), below 0.9999: %d",
                     minimumSentence, sentenceWorst.filter { $0.0 < 0.9999 }.count))
        for (c, j) in sentenceWorst.prefix(worst) { print(String(format: "  %.7f caption %d: %@", c, j, captions[j])) }
        let passed = countMismatches.isEmpty && minimumToken >= 0.999 && minimumSentence >= 0.9999
        print(passed ? "PARITY: pass" : "PARITY: FAIL")
        if !passed { throw ExitCode.failure }
    }
}
