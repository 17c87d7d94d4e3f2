@testable import AmberText
import Testing

/// A toy vocabulary: ids are line numbers.
let toyVocabulary = """
[PAD]
[UNK]
[CLS]
[SEP]
un
##aff
##able
aff
able
a
dog
,
.
!
'
t
don
cafe
hello
world
中
文
##s
$
5
"""

@Suite("WordPiece tokenizer rules")
struct TokenizerTests {
    let tokenizer = try! WordPieceTokenizer(vocabulary: toyVocabulary, maximumLength: 8)

    func tokens(_ text: String) -> [String] { tokenizer.tokens(tokenizer.encode(text)) }

    @Test func wrapsInClassifierAndSeparator() {
        #expect(tokens("") == ["[CLS]", "[SEP]"])
        #expect(tokenizer.encode("dog") == [2, 10, 3])
    }

    @Test func greedyLongestMatchFirstWithContinuations() {
        // "unaffable" → un ##aff ##able (the classic BERT example), not "un" + [UNK].
        #expect(tokens("unaffable") == ["[CLS]", "un", "##aff", "##able", "[SEP]"])
        #expect(tokens("dogs") == ["[CLS]", "dog", "##s", "[SEP]"])
        // No complete segmentation: the whole word is [UNK], not a partial match.
        #expect(tokens("unaffablex") == ["[CLS]", "[UNK]", "[SEP]"])
    }

    @Test func lowerCasesAndStripsAccents() {
        #expect(tokens("DOG") == ["[CLS]", "dog", "[SEP]"])
        #expect(tokens("Café") == ["[CLS]", "cafe", "[SEP]"])
        #expect(tokens("HÉLLO") == ["[CLS]", "hello", "[SEP]"])
        // Decomposed input (e + combining acute) gives the same.
        #expect(tokens("cafe\u{0301}") == ["[CLS]", "cafe", "[SEP]"])
    }

    @Test func splitsPunctuationIntoWords() {
        #expect(tokens("hello,world!") == ["[CLS]", "hello", ",", "world", "!", "[SEP]"])
        #expect(tokens("don't") == ["[CLS]", "don", "'", "t", "[SEP]"])
        // ASCII symbols count as punctuation too ($ is Unicode Sc), as in BERT.
        #expect(tokens("$5") == ["[CLS]", "$", "5", "[SEP]"])
        #expect(WordPieceTokenizer.isPunctuation("—") && WordPieceTokenizer.isPunctuation("`") && !WordPieceTokenizer.isPunctuation("a"))
    }

    @Test func cleansControlCharactersAndNormalisesWhitespace() {
        #expect(tokens("dog\u{0007}s") == ["[CLS]", "dog", "##s", "[SEP]"])           // BEL removed, word joined
        #expect(tokens("a\u{200B}dog") == ["[CLS]", "[UNK]", "[SEP]"])                  // zero-width space (Cf) removed: "adog"
        #expect(tokens("a\tdog\r\nhello\u{00A0}world") == ["[CLS]", "a", "dog", "hello", "world", "[SEP]"])
        #expect(tokens("dog\u{0000}\u{FFFD}") == ["[CLS]", "dog", "[SEP]"])
    }

    @Test func splitsChineseCharacters() {
        #expect(tokens("中文") == ["[CLS]", "中", "文", "[SEP]"])
        #expect(tokens("dog中") == ["[CLS]", "dog", "中", "[SEP]"])
        #expect(WordPieceTokenizer.isChineseCharacter("\u{4E2D}") && !WordPieceTokenizer.isChineseCharacter("あ"))
    }

    @Test func overLongWordsBecomeUnknown() {
        let long = String(repeating: "a", count: 101)
        #expect(tokens(long) == ["[CLS]", "[UNK]", "[SEP]"])
        // 100 characters is still segmented (here: no segmentation exists → [UNK] too), so test
        // the limit on a word the vocabulary could split: 100 × "a" has no "##a", hence [UNK];
        // the rule itself is checked directly:
        #expect(tokenizer.wordPieces(String(repeating: "a", count: 100)) == [tokenizer.unknownID])
        #expect(tokenizer.maximumCharactersPerWord == 100)
    }

    @Test func truncatesToTheMaximumLengthKeepingSeparator() {
        let ids = tokenizer.encode("a dog a dog a dog a dog a dog")
        #expect(ids.count == 8)
        #expect(ids.first == tokenizer.classifierID && ids.last == tokenizer.separatorID)
        #expect(tokenizer.tokens(ids) == ["[CLS]", "a", "dog", "a", "dog", "a", "dog", "[SEP]"])
    }

    @Test func aVocabularyWithoutSpecialTokensIsRejected() {
        #expect(throws: TextEncoderFileError.self) { try WordPieceTokenizer(vocabulary: "a\nb\n") }
        #expect(throws: TextEncoderFileError.self) { try WordPieceTokenizer(vocabularyFile: "/nonexistent/vocab.txt") }
    }
}
