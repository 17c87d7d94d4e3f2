import Foundation

/// A problem with the text encoder's files: which file, what is wrong, how to fix it.
public struct TextEncoderFileError: Error, CustomStringConvertible {
    public let path: String
    public let problem: String
    public var description: String { "\(path): \(problem)" }
}

/// BERT's uncased WordPiece tokenizer, as all-MiniLM-L6-v2's `tokenizer.json` configures it
/// (`BertNormalizer` with clean-up, Chinese-character splitting, lower-casing and accent
/// stripping; `BertPreTokenizer`; WordPiece with `##` continuations and 100-character words).
///
/// Steps, in order (Devlin et al. 2019; Hugging Face `tokenizers`):
/// 1. clean-up: drop U+0000, U+FFFD and control/format/unassigned/private-use characters
///    (tab, newline and carriage return count as whitespace); every whitespace becomes a space;
/// 2. a space on each side of every CJK ideograph;
/// 3. accent stripping: NFD, then drop nonspacing marks; then lower-casing;
/// 4. split on whitespace, and every punctuation character becomes its own word;
/// 5. each word: longest-match-first WordPiece (`##` marks a continuation); a word with no
///    complete segmentation, or longer than 100 characters, becomes `[UNK]`;
/// 6. `[CLS]` … `[SEP]`, truncated to `maximumLength` tokens in all.
public struct WordPieceTokenizer: Sendable {
    public let vocabulary: [String: Int32]
    public let tokens: [String]
    public let maximumLength: Int
    public let maximumCharactersPerWord = 100
    public let classifierID: Int32
    public let separatorID: Int32
    public let unknownID: Int32
    public let paddingID: Int32

    /// Builds a tokenizer from `vocab.txt` content (one token per line; the line number is the id).
    public init(vocabulary text: String, maximumLength: Int = 256) throws {
        precondition(maximumLength >= 2, "WordPieceTokenizer: maximumLength must leave room for [CLS] and [SEP]")
        var tokens = text.split(separator: "\n", omittingEmptySubsequences: false).map { String($0.hasSuffix("\r") ? $0.dropLast() : $0) }
        if tokens.last == "" { tokens.removeLast() }
        var vocabulary: [String: Int32] = [:]
        for (index, token) in tokens.enumerated() where vocabulary[token] == nil { vocabulary[token] = Int32(index) }
        func id(_ token: String) throws -> Int32 {
            guard let id = vocabulary[token] else {
                throw TextEncoderFileError(path: "vocab.txt", problem: "has no \(token) token; is this a BERT vocabulary?")
            }
            return id
        }
        self.tokens = tokens
        self.vocabulary = vocabulary
        self.maximumLength = maximumLength
        classifierID = try id("[CLS]")
        separatorID = try id("[SEP]")
        unknownID = try id("[UNK]")
        paddingID = try id("[PAD]")
    }

    /// Reads `vocab.txt`.
    public init(vocabularyFile path: String, maximumLength: Int = 256) throws {
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
            throw TextEncoderFileError(path: path, problem: "missing or not UTF-8; run ops/setup (it fetches the all-MiniLM-L6-v2 files) or set AMBER_TEXT_MODEL")
        }
        do {
            try self.init(vocabulary: text, maximumLength: maximumLength)
        } catch let error as TextEncoderFileError {
            throw TextEncoderFileError(path: path, problem: error.problem)
        }
    }

    /// Token ids of `text`: `[CLS]`, the word pieces, `[SEP]`, at most `maximumLength` in all.
    public func encode(_ text: String) -> [Int32] {
        var ids: [Int32] = [classifierID]
        let budget = maximumLength - 2
        outer: for word in words(text) {
            for piece in wordPieces(word) {
                if ids.count - 1 >= budget { break outer }
                ids.append(piece)
            }
        }
        ids.append(separatorID)
        return ids
    }

    /// The tokens of ids (for display).
    public func tokens(_ ids: [Int32]) -> [String] {
        ids.map { Int($0) < tokens.count && $0 >= 0 ? tokens[Int($0)] : "[?]" }
    }

    // MARK: Normalisation and pre-tokenisation

    /// Normalised words (steps 1–4).
    public func words(_ text: String) -> [String] {
        // 1–2: clean-up and CJK spacing, scalar by scalar.
        var cleaned = String.UnicodeScalarView()
        for scalar in text.unicodeScalars {
            if scalar.value == 0 || scalar.value == 0xFFFD || WordPieceTokenizer.isControl(scalar) { continue }
            if WordPieceTokenizer.isWhitespace(scalar) {
                cleaned.append(" ")
            } else if WordPieceTokenizer.isChineseCharacter(scalar) {
                cleaned.append(" ")
                cleaned.append(scalar)
                cleaned.append(" ")
            } else {
                cleaned.append(scalar)
            }
        }
        // 3: strip accents (NFD, drop nonspacing marks), then lower-case.
        let decomposed = String(cleaned).decomposedStringWithCanonicalMapping
        var stripped = String.UnicodeScalarView()
        for scalar in decomposed.unicodeScalars where scalar.properties.generalCategory != .nonspacingMark {
            stripped.append(scalar)
        }
        let lowered = String(stripped).lowercased()
        // 4: whitespace and punctuation split.
        var words: [String] = []
        var current = String.UnicodeScalarView()
        func flush() {
            if !current.isEmpty { words.append(String(current)); current = String.UnicodeScalarView() }
        }
        for scalar in lowered.unicodeScalars {
            if WordPieceTokenizer.isWhitespace(scalar) {
                flush()
            } else if WordPieceTokenizer.isPunctuation(scalar) {
                flush()
                words.append(String(scalar))
            } else {
                current.append(scalar)
            }
        }
        flush()
        return words
    }

    /// Word-piece ids of one normalised word (step 5).
    public func wordPieces(_ word: String) -> [Int32] {
        let scalars = Array(word.unicodeScalars)
        if scalars.count > maximumCharactersPerWord { return [unknownID] }
        var pieces: [Int32] = []
        var start = 0
        while start < scalars.count {
            var end = scalars.count
            var match: Int32?
            while start < end {
                var candidate = String(String.UnicodeScalarView(scalars[start..<end]))
                if start > 0 { candidate = "##" + candidate }
                if let id = vocabulary[candidate] {
                    match = id
                    break
                }
                end -= 1
            }
            guard let match else { return [unknownID] }
            pieces.append(match)
            start = end
        }
        return pieces
    }

    static func isWhitespace(_ scalar: Unicode.Scalar) -> Bool {
        scalar == " " || scalar == "\t" || scalar == "\n" || scalar == "\r" || scalar.properties.isWhitespace
    }

    static func isControl(_ scalar: Unicode.Scalar) -> Bool {
        if scalar == "\t" || scalar == "\n" || scalar == "\r" { return false }
        switch scalar.properties.generalCategory {
        case .control, .format, .surrogate, .privateUse, .unassigned: return true
        default: return false
        }
    }

    static func isPunctuation(_ scalar: Unicode.Scalar) -> Bool {
        let v = scalar.value
        if (33...47).contains(v) || (58...64).contains(v) || (91...96).contains(v) || (123...126).contains(v) { return true }
        switch scalar.properties.generalCategory {
        case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation,
             .initialPunctuation, .finalPunctuation, .otherPunctuation:
            return true
        default:
            return false
        }
    }

    static func isChineseCharacter(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x4E00...0x9FFF, 0x3400...0x4DBF, 0x20000...0x2A6DF, 0x2A700...0x2B73F,
             0x2B740...0x2B81F, 0x2B820...0x2CEAF, 0xF900...0xFAFF, 0x2F800...0x2FA1F:
            return true
        default:
            return false
        }
    }
}
