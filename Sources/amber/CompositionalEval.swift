import AmberCatalog
import AmberModel
import AmberTensor
import AmberText
import ArgumentParser
import Foundation

/// Does a trained model tell a caption from the same caption changed in one relation, attribute,
/// object or action? For each dev image and each of its captions with a negative of type k
/// (`CaptionNegatives`), the model is right when it scores the image higher with the caption
/// than with the negative. Chance is 50 %.
struct CompositionalEvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compositional",
        abstract: "Accuracy of a trained model on typed hard-negative captions of the dev split (relation, attribute, object, action)."
    )

    @Option(help: "A model written by amber train (best.safetensors).") var model: String = ".amber/train/best.safetensors"
    @OptionGroup var dataOptions: OfflineDataOptions
    @OptionGroup var textModel: TextModelOptions
    @Option(help: "Seed of the negative generator.") var seed: UInt64 = 0
    @Option(help: "Dev captions used (the first N; default all).") var limit: Int?
    @Option(help: "Print this many examples of each type (caption → negative).") var examples: Int = 0
    @Option(help: "Hand-checked dev caption/negative pairs (type, caption, negative; TSV with a header) scored beside the generated ones; 'none' to skip.")
    var checked: String = "data/compositional/flickr8k-dev-checked.tsv"

    func run() throws {
        let trained = try TrainedModel.read(from: model)
        let (_, dev) = try dataOptions.load()
        guard TrainedModel.Dimensions(of: dev) == trained.dimensions else {
            throw ValidationError("\(model) was trained on features \(trained.dimensions); \(dataOptions.data) has \(TrainedModel.Dimensions(of: dev))")
        }
        guard dev.captions.count == dev.textCount else {
            throw ValidationError("\(dataOptions.data) has no caption texts for its dev split (caps.txt); the negatives are made from them")
        }
        if let limit, limit < 1 { throw ValidationError("--limit must be at least 1, got \(limit)") }
        if examples < 0 { throw ValidationError("--examples must not be negative, got \(examples)") }
        let encoder = try textModel.load()
        let generator = CaptionNegatives(seed: seed)
        let count = min(limit ?? dev.textCount, dev.textCount)

        // The captions and their negatives, encoded by MiniLM as the features were (tokens as float16).
        var texts: [String] = [], cases: [(text: Int, type: NegativeType, original: Int, negative: Int)] = []
        var shown: [NegativeType: Int] = [:]
        for j in 0..<count {
            let negatives = generator.negatives(of: dev.captions[j])
            guard !negatives.isEmpty else { continue }
            let original = texts.count
            texts.append(dev.captions[j])
            for type in NegativeType.allCases {
                guard let negative = negatives[type] else { continue }
                cases.append((j, type, original, texts.count))
                texts.append(negative)
                if shown[type, default: 0] < examples {
                    shown[type, default: 0] += 1
                    print("\(type.rawValue): \(dev.captions[j]) → \(negative)")
                }
            }
        }
        if examples > 0 { print("") }
        // The hand-checked pairs: found among the dev captions by their text.
        var checkedCases: [(text: Int, type: NegativeType, original: Int, negative: Int)] = []
        if checked != "none" {
            guard let table = try? String(contentsOfFile: checked, encoding: .utf8) else {
                throw ValidationError("\(checked): cannot read the hand-checked negatives (pass --checked none to skip them)")
            }
            var captionIndex: [String: Int] = [:]
            for (j, caption) in dev.captions.enumerated() where captionIndex[caption] == nil { captionIndex[caption] = j }
            var missing = 0
            for (number, line) in table.split(separator: "\n", omittingEmptySubsequences: true).enumerated().dropFirst() {
                let fields = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
                guard fields.count == 3, let type = NegativeType(rawValue: fields[0]), !fields[2].isEmpty else {
                    throw ValidationError("\(checked):\(number + 1): expected type, caption and negative separated by tabs, type one of \(NegativeType.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                guard let j = captionIndex[fields[1]] else { missing += 1; continue }
                checkedCases.append((j, type, texts.count, texts.count + 1))
                texts += [fields[1], fields[2]]
            }
            if missing > 0 { print("\(checked): \(missing) captions are not among these dev captions and were left out") }
        }
        print("\(model): step \(trained.step); dev captions \(count), with a negative \(Set(cases.map(\.text)).count); negatives: "
              + NegativeType.allCases.map { type in "\(type.rawValue) \(cases.filter { $0.type == type }.count)" }.joined(separator: ", "))
        let started = Date()
        let encodings = encoder.encode(texts)
        let features = encodings.map { encoding in
            ItemFeatures(global: encoding.sentenceVector.scalars,
                         local: encoding.tokenVectors.scalars.map { Float(Float16($0)) }, localCount: encoding.tokenVectors.shape[0])
        }
        // The matching model's embeddings of those texts and of the dev images.
        let (textFused, textFragments) = withoutGradients { () -> (Tensor, [Tensor]) in
            var fused: [Tensor] = [], fragments: [Tensor] = []
            for start in stride(from: 0, to: features.count, by: 256) {
                let batch = Array(features[start ..< min(start + 256, features.count)])
                let encoded = trained.model.textEncoder(EncoderInput(batch))
                fused.append(encoded.fused)
                for (row, item) in batch.enumerated() {
                    fragments.append(encoded.fragments.slice(axis: 0, row ..< row + 1).slice(axis: 1, 0 ..< item.localCount))
                }
            }
            return (Tensor.concatenate(fused, axis: 0), fragments)
        }
        let images = Array(Set((cases + checkedCases).map { dev.imageOfText[$0.text] })).sorted()
        let imageRow = Dictionary(uniqueKeysWithValues: images.enumerated().map { ($1, $0) })
        let (imageFused, imageFragments) = withoutGradients { () -> (Tensor, [Tensor]) in
            var fused: [Tensor] = [], fragments: [Tensor] = []
            for start in stride(from: 0, to: images.count, by: 256) {
                let batch = Array(images[start ..< min(start + 256, images.count)])
                let encoded = trained.model.imageEncoder(dev.imageInput(batch))
                fused.append(encoded.fused)
                for (row, image) in batch.enumerated() {
                    fragments.append(encoded.fragments.slice(axis: 0, row ..< row + 1).slice(axis: 1, 0 ..< dev.fragmentCount(ofImage: image)))
                }
            }
            return (Tensor.concatenate(fused, axis: 0), fragments)
        }
        let alpha = trained.ranking.alpha
        // Right answers per type: stage 1 (cosine of the fused embeddings), the served two-stage
        // score at the model's α, and the local alignment alone (α = 0).
        func score(_ list: [(text: Int, type: NegativeType, original: Int, negative: Int)]) -> [NegativeType: (stage1: Int, served: Int, local: Int, total: Int)] {
            var right = [NegativeType: (stage1: Int, served: Int, local: Int, total: Int)]()
            withoutGradients {
                for c in list {
                    guard let i = imageRow[dev.imageOfText[c.text]] else { continue }
                    let image = imageFused.slice(axis: 0, i ..< i + 1)
                    let global = Tensor.matmul(image, Tensor.concatenate([textFused.slice(axis: 0, c.original ..< c.original + 1),
                                                                           textFused.slice(axis: 0, c.negative ..< c.negative + 1)], axis: 0),
                                               transposeB: true).scalars
                    let pair = [textFragments[c.original], textFragments[c.negative]]
                    let padded = Tensor.padded(counts: pair.map { $0.shape[1] }, rowWidth: pair[0].shape[2]) { item, row in
                        pair[item].withUnsafeBufferPointer { values in for (k, v) in values.enumerated() { row[k] = v } }
                    }
                    let local = trained.alignment.scores(images: imageFragments[i], imageCounts: [imageFragments[i].shape[1]],
                                                         texts: padded, textCounts: pair.map { $0.shape[1] }).scalars
                    let served = zip(global, local).map { alpha * $0 + (1 - alpha) * $1 }
                    var tally = right[c.type] ?? (0, 0, 0, 0)
                    tally.total += 1
                    if global[0] > global[1] { tally.stage1 += 1 }
                    if served[0] > served[1] { tally.served += 1 }
                    if local[0] > local[1] { tally.local += 1 }
                    right[c.type] = tally
                }
            }
            return right
        }
        func report(_ title: String, _ right: [NegativeType: (stage1: Int, served: Int, local: Int, total: Int)]) {
            print(String(format: "%@ (chance 50 %%), stage 1 / served (α %.2f) / local alignment alone:", title, alpha))
            var all = (stage1: 0, served: 0, local: 0, total: 0)
            func line(_ name: String, _ t: (stage1: Int, served: Int, local: Int, total: Int)) {
                print(String(format: "  %@ %5d  %5.1f %%  %5.1f %%  %5.1f %%", name.padding(toLength: 9, withPad: " ", startingAt: 0), t.total,
                             100 * Double(t.stage1) / Double(t.total), 100 * Double(t.served) / Double(t.total), 100 * Double(t.local) / Double(t.total)))
            }
            for type in NegativeType.allCases {
                guard let t = right[type], t.total > 0 else { continue }
                line(type.rawValue, t)
                all = (all.stage1 + t.stage1, all.served + t.served, all.local + t.local, all.total + t.total)
            }
            if all.total > 0 { line("all", all) }
        }
        report("generated negatives, accuracy", score(cases))
        if !checkedCases.isEmpty { report("hand-checked negatives (\(checked)), accuracy", score(checkedCases)) }
        print(String(format: "(%.1f s)", Date().timeIntervalSince(started)))
    }
}
