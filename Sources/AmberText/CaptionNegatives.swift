// Typed hard-negative captions, after CE-CLIP (Zhang, Awal, Agrawal, CVPR 2024): a caption changed
// in one relation, attribute, object or action, so that a model reading captions as bags of words
// cannot tell it from the original. Made from a small lexicon of word categories kept here (no
// tagger model), deterministically: the same caption, type and seed give the same negative.

/// The four kinds of change.
public enum NegativeType: String, CaseIterable, Sendable, Codable {
    /// Two nouns (of the same number) swap places: "a dog chases a cat" → "a cat chases a dog".
    case relation
    /// An attribute replaced by another of its category: colour, size, age, number, material.
    case attribute
    /// A noun replaced by another of its kind (an animal by an animal, a place by a place).
    case object
    /// An action (a verb in -ing) replaced by another.
    case action
}

/// Word categories of the generator. A category holds classes of words that mean the same
/// ("big", "large"); a replacement takes a word of another class of the same category, so the
/// negative says something else ("small"), never a synonym or a broader word of the same thing
/// ("boy" → "child" would still be true of the photo, so "child" is in no class). Singular and
/// plural nouns are separate categories so that a replacement keeps the sentence's number.
public struct NegativeLexicon: Sendable {
    public typealias Category = [[String]]
    /// Attribute categories: colour, size, age, number, material…
    public var attributes: [Category]
    /// Noun kinds (animals, people, vehicles, places…), singular and plural separately.
    public var nouns: [Category]
    /// Which of `nouns` hold plurals (a relation swaps two nouns of the same number).
    public var pluralNouns: Set<Int>
    /// Actions.
    public var actions: [Category]

    public init(attributes: [Category], nouns: [Category], pluralNouns: Set<Int>, actions: [Category]) {
        self.attributes = attributes
        self.nouns = nouns
        self.pluralNouns = pluralNouns
        self.actions = actions
    }

    /// Words of everyday photo captions (Flickr8k, COCO).
    public static let standard = NegativeLexicon(
        attributes: [
            [["red"], ["blue"], ["green"], ["yellow"], ["black"], ["white"], ["brown"], ["orange"], ["pink"], ["purple"], ["gray", "grey"]],
            [["big", "large", "huge"], ["small", "little", "tiny"]],
            [["young"], ["old", "elderly"]],
            [["two"], ["three"], ["four"], ["five"], ["six"]],
            [["wooden"], ["metal"], ["plastic"], ["stone"], ["brick"], ["glass"]],
            [["wet"], ["dry"]],
            [["empty"], ["crowded"]],
        ],
        nouns: [
            [["dog", "puppy"], ["cat"], ["horse"], ["bird"], ["cow", "bull"], ["sheep"], ["duck"], ["goat"]],
            [["dogs", "puppies"], ["cats"], ["horses"], ["birds"], ["cows", "bulls"], ["ducks"], ["goats"]],
            [["man", "guy"], ["woman", "lady"], ["boy"], ["girl"], ["baby", "toddler"]],
            [["men", "guys"], ["women", "ladies"], ["boys"], ["girls"], ["babies", "toddlers"]],
            [["car"], ["bike", "bicycle"], ["truck"], ["bus"], ["boat"], ["motorcycle"], ["train"]],
            [["beach"], ["street", "road"], ["field"], ["park"], ["pool"], ["lake"], ["river"], ["mountain", "hill"], ["forest"],
             ["sidewalk"], ["stage"], ["ocean"]],
            [["grass"], ["snow"], ["sand"], ["dirt", "mud"]],
            [["ball"], ["frisbee"], ["rope"], ["stick"], ["toy"], ["umbrella"], ["camera"], ["bench"], ["fence"], ["wall"], ["rock"],
             ["tree"], ["chair"], ["table"]],
            [["shirt"], ["jacket", "coat"], ["dress"], ["helmet"], ["hat"], ["sweater"], ["uniform"]],
        ],
        pluralNouns: [1, 3],
        actions: [
            [["running"], ["walking"], ["jumping"], ["swimming"], ["sitting"], ["standing"], ["climbing"], ["riding"], ["eating"],
             ["sleeping"], ["throwing"], ["catching"], ["lying", "laying"], ["dancing"], ["smiling"], ["reading"], ["skiing"],
             ["surfing"], ["digging"]],
        ])
}

/// Makes the typed negatives of captions.
public struct CaptionNegatives: Sendable {
    public let lexicon: NegativeLexicon
    public let seed: UInt64
    /// Word → its family (attribute, noun, action), its category in that family and its class.
    private let category: [String: (kind: Int, index: Int, synonyms: Int)]

    private enum Family: Int { case attribute, noun, action }

    public init(lexicon: NegativeLexicon = .standard, seed: UInt64 = 0) {
        self.lexicon = lexicon
        self.seed = seed
        var category: [String: (Int, Int, Int)] = [:]
        for (family, categories) in [(Family.attribute, lexicon.attributes), (.noun, lexicon.nouns), (.action, lexicon.actions)] {
            for (index, classes) in categories.enumerated() {
                for (synonyms, words) in classes.enumerated() {
                    for word in words where category[word] == nil { category[word] = (family.rawValue, index, synonyms) }
                }
            }
        }
        self.category = category
    }

    /// The negative of `caption` of each type that can be made (a type whose words the caption
    /// lacks is absent).
    public func negatives(of caption: String) -> [NegativeType: String] {
        var result: [NegativeType: String] = [:]
        for type in NegativeType.allCases {
            if let negative = negative(of: caption, type: type) { result[type] = negative }
        }
        return result
    }

    /// The negative of `caption` of `type`, or nil when the caption has no words for it.
    public func negative(of caption: String, type: NegativeType) -> String? {
        var tokens = Self.tokens(caption)
        let words = tokens.map { $0.word.lowercased() }
        func positions(_ family: Family) -> [(position: Int, group: Int, synonyms: Int)] {
            words.enumerated().compactMap { position, word in
                guard let found = category[word], found.kind == family.rawValue else { return nil }
                return (position, found.index, found.synonyms)
            }
        }
        var pick = Pick(seed: seed, caption: caption, type: type)
        switch type {
        case .relation:
            // Pairs of nouns of one number (singular with singular) that differ.
            let nouns = positions(.noun)
            var pairs: [(Int, Int)] = []
            for a in nouns.indices {
                for b in (a + 1)..<nouns.count where (nouns[a].group, nouns[a].synonyms) != (nouns[b].group, nouns[b].synonyms)
                    && lexicon.pluralNouns.contains(nouns[a].group) == lexicon.pluralNouns.contains(nouns[b].group) {
                    // "a child and a woman" swapped means the same: only nouns with a relation between them.
                    let between = words[(nouns[a].position + 1) ..< nouns[b].position]
                    if between.allSatisfy({ Self.conjoining.contains($0) }) { continue }
                    pairs.append((nouns[a].position, nouns[b].position))
                }
            }
            guard !pairs.isEmpty else { return nil }
            let (a, b) = pairs[pick.below(pairs.count)]
            let first = tokens[a].word, second = tokens[b].word
            tokens[a].word = Self.matchingCase(second, like: first)
            tokens[b].word = Self.matchingCase(first, like: second)
            Self.fixArticle(before: a, in: &tokens)
            Self.fixArticle(before: b, in: &tokens)
        case .attribute, .object, .action:
            let family: Family = type == .attribute ? .attribute : (type == .object ? .noun : .action)
            let groups = family == .attribute ? lexicon.attributes : (family == .noun ? lexicon.nouns : lexicon.actions)
            let candidates = positions(family)
            guard !candidates.isEmpty else { return nil }
            let chosen = candidates[pick.below(candidates.count)]
            // Replacements: words of the category's other classes that the caption does not already use.
            let present = Set(words)
            let replacements = groups[chosen.group].enumerated().filter { $0.offset != chosen.synonyms }.flatMap(\.element)
                .filter { !present.contains($0) }
            guard !replacements.isEmpty else { return nil }
            let replacement = replacements[pick.below(replacements.count)]
            tokens[chosen.position].word = Self.matchingCase(replacement, like: tokens[chosen.position].word)
            Self.fixArticle(before: chosen.position, in: &tokens)
        }
        let negative = tokens.map { $0.leading + $0.word + $0.trailing }.joined(separator: " ")
        return negative == caption ? nil : negative
    }

    /// Words that join two nouns without relating them (a swap across only these changes nothing).
    private static let conjoining: Set<String> = ["and", "or", "a", "an", "the", "", "with"]

    /// A caption split on spaces, each token's word apart from punctuation around it.
    private static func tokens(_ caption: String) -> [(leading: String, word: String, trailing: String)] {
        caption.split(separator: " ", omittingEmptySubsequences: false).map { part in
            let text = String(part)
            let start = text.firstIndex { $0.isLetter || $0.isNumber } ?? text.endIndex
            let end = text.lastIndex { $0.isLetter || $0.isNumber }.map { text.index(after: $0) } ?? start
            guard start < end else { return ("", "", text) }
            return (String(text[..<start]), String(text[start..<end]), String(text[end...]))
        }
    }

    /// "a" or "an" before the word at `position`, as its first letter asks ("an old kid").
    private static func fixArticle(before position: Int, in tokens: inout [(leading: String, word: String, trailing: String)]) {
        guard position > 0, let first = tokens[position].word.lowercased().first else { return }
        let article = tokens[position - 1].word
        guard ["a", "an"].contains(article.lowercased()), tokens[position - 1].trailing.isEmpty else { return }
        let wanted = "aeiou".contains(first) ? "an" : "a"
        tokens[position - 1].word = matchingCase(wanted, like: article)
    }

    /// `word` with the capitalisation of `like` (first letter upper case or not): a word moved to
    /// the start of the caption takes its capital, the one moved away leaves it.
    private static func matchingCase(_ word: String, like: String) -> String {
        guard let first = like.first, first.isUppercase else { return word.prefix(1).lowercased() + word.dropFirst() }
        return word.prefix(1).uppercased() + word.dropFirst()
    }

    /// Seeded choices for one caption and type: FNV-1a of the seed, type and caption, then SplitMix.
    private struct Pick {
        var state: UInt64

        init(seed: UInt64, caption: String, type: NegativeType) {
            var hash: UInt64 = 0xcbf2_9ce4_8422_2325 ^ seed
            for byte in (type.rawValue + "\u{1F}" + caption).utf8 {
                hash ^= UInt64(byte)
                hash = hash &* 0x0000_0100_0000_01B3
            }
            state = hash
        }

        mutating func below(_ count: Int) -> Int {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            z ^= z >> 31
            return Int(z % UInt64(count))
        }
    }
}
