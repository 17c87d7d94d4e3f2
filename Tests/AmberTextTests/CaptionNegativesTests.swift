@testable import AmberText
import Testing

@Suite("Typed hard-negative captions")
struct CaptionNegativesTests {
    let generator = CaptionNegatives(seed: 7)

    /// The words of `a` and `b` that differ, position by position (same length required).
    func differences(_ a: String, _ b: String) -> [(String, String)] {
        let x = a.split(separator: " ").map(String.init), y = b.split(separator: " ").map(String.init)
        #expect(x.count == y.count, "\(a) / \(b)")
        return zip(x, y).filter { $0 != $1 }
    }

    @Test func relationSwapsTwoNounsOfOneNumber() {
        #expect(generator.negative(of: "A dog chases a cat .", type: .relation) == "A cat chases a dog .")
        #expect(generator.negative(of: "Dog on a couch", type: .relation) == nil, "couch is not in the lexicon: one noun only")
        #expect(generator.negative(of: "A man rides a horse on the beach .", type: .relation).map { differences("A man rides a horse on the beach .", $0).count } == 2)
        // The capital moves with the position, not with the word.
        #expect(generator.negative(of: "Dog chases a cat", type: .relation) == "Cat chases a dog")
        // A plural and a singular noun are not swapped ("a dogs chase two cat" is not a caption).
        #expect(generator.negative(of: "Two dogs chase a cat .", type: .relation) == nil)
        #expect(generator.negative(of: "A dog and a dog .", type: .relation) == nil, "the same noun twice: nothing to swap")
        // Nouns only joined ("a child and a woman", "a man with a dog") mean the same swapped: not a negative.
        #expect(generator.negative(of: "A child and a woman .", type: .relation) == nil)
        #expect(generator.negative(of: "A man with a dog .", type: .relation) == nil)
        let swapped = generator.negative(of: "A child and a woman are at the beach .", type: .relation)
        #expect(swapped != nil && swapped != "A woman and a child are at the beach .", "\(swapped ?? "nil")")
    }

    @Test func replacementsStayInTheirCategoryAndNeverNameTheSameThing() {
        let lexicon = NegativeLexicon.standard
        /// (category, class) of a word in `categories`.
        func place(_ word: String, in categories: [NegativeLexicon.Category]) -> (Int, Int)? {
            for (c, classes) in categories.enumerated() {
                if let k = classes.firstIndex(where: { $0.contains(word.lowercased()) }) { return (c, k) }
            }
            return nil
        }
        let captions = ["A little girl in a pink dress is climbing the stairs .", "Two brown dogs are running through the snow .",
                        "A young man in a red shirt is riding a bike on the street , smiling .", "Black cat sleeping on a wooden chair .",
                        "A big dog is jumping over a small fence on the grass ."]
        for caption in captions {
            for (type, categories) in [(NegativeType.attribute, lexicon.attributes), (.object, lexicon.nouns), (.action, lexicon.actions)] {
                guard let negative = generator.negative(of: caption, type: type) else { Issue.record("\(type) of \(caption)"); continue }
                let changed = differences(caption, negative).filter { !["a", "an"].contains($0.0.lowercased()) }
                #expect(changed.count == 1, "\(type): \(caption) → \(negative)")
                if let (old, new) = changed.first, let from = place(old, in: categories), let to = place(new, in: categories) {
                    #expect(from.0 == to.0, "\(type): \(old) → \(new) leaves its category")
                    #expect(from.1 != to.1, "\(type): \(old) → \(new) is a synonym")
                    #expect(!caption.lowercased().split(separator: " ").contains(Substring(new.lowercased())), "\(new) was already in the caption")
                } else {
                    Issue.record("\(type): \(caption) → \(negative) changed a word outside the lexicon")
                }
            }
        }
        // Synonyms are never a negative: the only size word's replacement is of the other class.
        for seed in 0..<20 {
            let negative = CaptionNegatives(seed: UInt64(seed)).negative(of: "A big dog .", type: .attribute)
            #expect(["A small dog .", "A little dog .", "A tiny dog ."].contains(negative ?? ""), "\(negative ?? "nil")")
        }
        // Punctuation and capitals stay where they were; the article follows the new word.
        #expect(generator.negative(of: "Red car, parked .", type: .attribute).map { $0.hasSuffix(" car, parked .") && $0.first!.isUppercase } == true)
        let aged = CaptionNegatives(seed: 1).negative(of: "A young kid runs .", type: .attribute)
        #expect(aged == "An old kid runs ." || aged == "An elderly kid runs .", "\(aged ?? "nil")")
    }

    @Test func deterministicPerSeedAndAbsentWhenNothingFits() {
        let caption = "A brown dog is running on the green grass near a white fence ."
        #expect(CaptionNegatives(seed: 7).negatives(of: caption) == generator.negatives(of: caption))
        let seeds = (0..<20).map { CaptionNegatives(seed: UInt64($0)).negative(of: caption, type: .attribute) }
        #expect(Set(seeds).count > 3, "other seeds choose other words: \(Set(seeds))")
        #expect(generator.negatives(of: "Scenery at dusk .").isEmpty)
        #expect(generator.negatives(of: "").isEmpty)
        #expect(Set(generator.negatives(of: caption).keys) == Set(NegativeType.allCases))
    }
}
