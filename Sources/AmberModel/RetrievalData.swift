import AmberCatalog
import AmberTensor
import Foundation

/// Features of a paired dataset in memory, in the global/local layout of flickr8k-800:
/// images `[I, Dg]` + `[I, n, Dl]`, captions `[T, Dg']` + ragged tokens, caption `j` of image
/// `j / captionsPerImage`.
public struct RetrievalData: Sendable {
    public var imageGlobal: Tensor
    public var imageLocal: Tensor
    public var textGlobal: Tensor
    /// All token vectors, `[Σ n_t, Dl']`; text `t` owns rows `tokenOffsets[t] ..< tokenOffsets[t + 1]`.
    public var textTokens: Tensor
    public var tokenOffsets: [Int]
    public var imageOfText: [Int]
    public var captions: [String]
    /// Real fragments of each image when they differ (the rest of its `n` rows are padding);
    /// nil when every image has all `n`.
    public var imageFragmentCounts: [Int]?

    public init(imageGlobal: Tensor, imageLocal: Tensor, textGlobal: Tensor, textTokens: Tensor,
                tokenOffsets: [Int], imageOfText: [Int], captions: [String], imageFragmentCounts: [Int]? = nil) {
        precondition(imageLocal.shape[0] == imageGlobal.shape[0] && textGlobal.shape[0] == imageOfText.count
                     && tokenOffsets.count == imageOfText.count + 1 && tokenOffsets.last == textTokens.shape[0],
                     "RetrievalData: inconsistent shapes \(imageGlobal.shape), \(imageLocal.shape), \(textGlobal.shape), \(tokenOffsets.count) offsets, \(textTokens.shape)")
        self.imageGlobal = imageGlobal
        self.imageLocal = imageLocal
        self.textGlobal = textGlobal
        self.textTokens = textTokens
        self.tokenOffsets = tokenOffsets
        self.imageOfText = imageOfText
        self.captions = captions
        precondition(imageFragmentCounts.map { $0.count == imageGlobal.shape[0] && $0.allSatisfy { $0 >= 1 && $0 <= imageLocal.shape[1] } } ?? true,
                     "RetrievalData: image fragment counts must be one per image, each in 1...\(imageLocal.shape[1])")
        self.imageFragmentCounts = imageFragmentCounts
    }

    /// Real fragments of image `index`.
    public func fragmentCount(ofImage index: Int) -> Int { imageFragmentCounts?[index] ?? imageLocal.shape[1] }

    public var imageCount: Int { imageGlobal.shape[0] }
    public var textCount: Int { imageOfText.count }

    /// Reads a directory in the global/local layout (validated shapes; float16 widened).
    public static func load(_ directory: String, captionsPerImage: Int = 5) throws -> RetrievalData {
        func path(_ name: String) -> String { directory + "/" + name }
        let imageGlobal = try NumpyFile.read(path("ims_global.npy")).tensor()
        let imageLocal = try NumpyFile.read(path("ims_local.npy")).tensor()
        let textGlobal = try NumpyFile.read(path("caps_global.npy")).tensor()
        let textTokens = try NumpyFile.read(path("caps_tokens.npy")).tensor()
        let offsets = try NumpyFile.read(path("caps_tok_offsets.npy")).int64Values().map { Int($0) }
        let captions = (try? String(contentsOfFile: path("caps.txt"), encoding: .utf8))?
            .split(separator: "\n").map(String.init) ?? []
        let textCount = textGlobal.shape[0]
        guard imageLocal.shape[0] == imageGlobal.shape[0], textCount == captionsPerImage * imageGlobal.shape[0],
              offsets.count == textCount + 1, offsets.last == textTokens.shape[0] else {
            throw TensorFileError(path: directory, problem: "inconsistent dataset: \(imageGlobal.shape) images, \(imageLocal.shape) locals, \(textGlobal.shape) captions, \(offsets.count) offsets, \(textTokens.shape) tokens")
        }
        // What the encoders assume, as the ingest checks it (FeatureLimits).
        let limits = FeatureLimits()
        guard imageGlobal.rank == 2, imageLocal.rank == 3, textGlobal.rank == 2, textTokens.rank == 2, imageGlobal.shape[0] > 0 else {
            throw TensorFileError(path: directory, problem: "ims_global, ims_local, caps_global, caps_tokens must have 2, 3, 2 and 2 axes and at least one image")
        }
        guard (limits.minimumFragments...limits.maximumImageFragments).contains(imageLocal.shape[1]) else {
            throw TensorFileError(path: path("ims_local.npy"), problem: "has \(imageLocal.shape[1]) local vectors per image; allowed \(limits.minimumFragments)…\(limits.maximumImageFragments)")
        }
        for j in 0..<textCount where !(limits.minimumFragments...limits.maximumTextFragments).contains(offsets[j + 1] - offsets[j]) {
            throw TensorFileError(path: path("caps_tok_offsets.npy"), problem: "caption \(j) has \(offsets[j + 1] - offsets[j]) tokens; each needs \(limits.minimumFragments)…\(limits.maximumTextFragments)")
        }
        for (name, tensor) in [("ims_global.npy", imageGlobal), ("ims_local.npy", imageLocal), ("caps_global.npy", textGlobal), ("caps_tokens.npy", textTokens)] {
            if let index = limits.firstOutOfRange(tensor.scalars) {
                throw TensorFileError(path: path(name), problem: "value \(index) is \(tensor.scalars[index]); features must be finite with |x| ≤ \(limits.maximumMagnitude)")
            }
        }
        return RetrievalData(imageGlobal: imageGlobal, imageLocal: imageLocal, textGlobal: textGlobal, textTokens: textTokens,
                             tokenOffsets: offsets, imageOfText: (0..<textCount).map { $0 / captionsPerImage }, captions: captions)
    }

    /// The images in `range` and their captions (re-indexed from 0).
    public func subset(images range: Range<Int>) -> RetrievalData {
        let texts = imageOfText.indices.filter { range.contains(imageOfText[$0]) }
        let first = texts.first ?? 0, last = (texts.last ?? -1) + 1
        let tokenRange = tokenOffsets[first] ..< tokenOffsets[last]
        return RetrievalData(
            imageGlobal: imageGlobal.slice(axis: 0, range), imageLocal: imageLocal.slice(axis: 0, range),
            textGlobal: textGlobal.slice(axis: 0, first..<last), textTokens: textTokens.slice(axis: 0, tokenRange),
            tokenOffsets: tokenOffsets[first...last].map { $0 - tokenOffsets[first] },
            imageOfText: texts.map { imageOfText[$0] - range.lowerBound },
            captions: captions.count >= last ? Array(captions[first..<last]) : [],
            imageFragmentCounts: imageFragmentCounts.map { Array($0[range]) })
    }
}

extension RetrievalData {
    /// Encoder input for images `indices`: global `[B, Dg]`, all fragments `[B, n, Dl]`.
    public func imageInput(_ indices: [Int]) -> EncoderInput {
        EncoderInput(global: imageGlobal.indexSelect(indices), fragments: imageLocal.indexSelect(indices),
                     fragmentCounts: indices.map(fragmentCount(ofImage:)))
    }

    /// Encoder input for texts `indices`: global `[B, Dg]`, tokens padded to the longest `[B, n, Dl]`.
    public func textInput(_ indices: [Int]) -> EncoderInput {
        let counts = indices.map { tokenOffsets[$0 + 1] - tokenOffsets[$0] }
        let width = textTokens.shape[1]
        let fragments = textTokens.withUnsafeBufferPointer { all in
            Tensor.padded(counts: counts, rowWidth: width) { item, row in
                guard let base = all.baseAddress else { return }
                row.update(from: base + tokenOffsets[indices[item]] * width, count: counts[item] * width)
            }
        }
        return EncoderInput(global: textGlobal.indexSelect(indices), fragments: fragments, fragmentCounts: counts)
    }
}
