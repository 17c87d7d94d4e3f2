import AmberCatalog
import AmberModel
import AmberTensor

/// The pairs of one split that a continuous trainer has taken in, as ``RetrievalData``: one
/// "caption" row per pair (its text's features) with the index of its image; an image that
/// several pairs share is held once. Pairs keep their arrival order, so indices never change as
/// the set grows. The store ids of every row are kept beside it for the memory bank.
public struct GrowingPairSet: Sendable {
    private var imageIndex: [Int64: Int] = [:]
    /// The caption rows of each text item (one per pair it is in).
    private var textIndex: [Int64: [Int]] = [:]
    public private(set) var imageItemIDs: [Int64] = []
    public private(set) var textItemIDs: [Int64] = []
    public private(set) var pairIDs: [Int64] = []
    private var imageOfText: [Int] = []
    /// Features in rows that grow at the end (``data()`` views them, copying nothing); image
    /// fragments padded to `paddedFragments`, re-padded once when a wider image arrives.
    private var imageGlobals: GrowingRows?
    private var imageLocals: GrowingRows?
    private var paddedFragments = 0
    private var imageCounts: [Int] = []
    private var textGlobals: GrowingRows?
    private var textTokens: GrowingRows?
    private var tokenOffsets: [Int] = [0]
    private var dimensions: TrainedModel.Dimensions?
    private var cached: RetrievalData?

    public init() {}

    public var pairCount: Int { pairIDs.count }
    /// The image row of a store item, if it is an image of this set.
    public func imageRow(ofItem itemID: Int64) -> Int? { imageIndex[itemID] }
    /// The caption rows of a store item (one per pair it is in; empty when it is no text of this set).
    public func textRows(ofItem itemID: Int64) -> [Int] { textIndex[itemID] ?? [] }
    public var imageCount: Int { imageItemIDs.count }

    /// Adds `pair` with its items' features from `features`; nothing changes when it throws.
    /// - Throws: ``PairSetError`` when an item has no features, features outside `limits`, or
    ///   features of other dimensions than the items before it.
    public mutating func add(_ pair: StoredPair, features: [Int64: ItemFeatures], limits: FeatureLimits = FeatureLimits()) throws {
        guard let text = features[pair.textID] else {
            throw PairSetError(description: "pair \(pair.pairID): text item \(pair.textID) has no features (ingest them, or encode the caption with amber encode-text)")
        }
        if let problem = text.problem(under: limits, modality: .text, field: "text item \(pair.textID)") {
            throw PairSetError(description: "pair \(pair.pairID): \(problem.message)")
        }
        if imageIndex[pair.imageID] == nil, let image = features[pair.imageID],
           let problem = image.problem(under: limits, modality: .image, field: "image item \(pair.imageID)") {
            throw PairSetError(description: "pair \(pair.pairID): \(problem.message)")
        }
        if let d = dimensions, text.global.count != d.textGlobal || text.localDimension != d.textFragment {
            throw PairSetError(description: "pair \(pair.pairID): text item \(pair.textID) has features \(text.global.count) + n×\(text.localDimension), earlier texts \(d.textGlobal) + n×\(d.textFragment)")
        }
        let imageRow: Int
        if let known = imageIndex[pair.imageID] {
            imageRow = known
        } else {
            guard let image = features[pair.imageID] else {
                throw PairSetError(description: "pair \(pair.pairID): image item \(pair.imageID) has no features")
            }
            try check(image: image, text: text, pair: pair)
            imageRow = imageItemIDs.count
            imageIndex[pair.imageID] = imageRow
            imageItemIDs.append(pair.imageID)
            appendImage(image)
            imageCounts.append(image.localCount)
        }
        textIndex[pair.textID, default: []].append(pairIDs.count)
        pairIDs.append(pair.pairID)
        textItemIDs.append(pair.textID)
        imageOfText.append(imageRow)
        if textGlobals == nil {
            textGlobals = GrowingRows(rowShape: [text.global.count], capacity: 1024)
            textTokens = GrowingRows(rowShape: [text.localDimension], capacity: 16_384)
        }
        textGlobals?.append(text.global)
        textTokens?.append(text.local)
        tokenOffsets.append(tokenOffsets[tokenOffsets.count - 1] + text.localCount)
        cached = nil
    }

    /// Appends an image's global vector and its fragments, padded to the widest image so far
    /// (a wider one re-pads the rows once).
    private mutating func appendImage(_ image: ItemFeatures) {
        let Dl = image.localDimension
        if imageGlobals == nil {
            imageGlobals = GrowingRows(rowShape: [image.global.count], capacity: 256)
            paddedFragments = image.localCount
            imageLocals = GrowingRows(rowShape: [paddedFragments, Dl], capacity: 256)
        }
        if image.localCount > paddedFragments, let old = imageLocals {
            var wider = GrowingRows(rowShape: [image.localCount, Dl], capacity: max(old.capacity, old.count + 1))
            let values = old.tensor
            var row = [Float](repeating: 0, count: image.localCount * Dl)
            values.withUnsafeBufferPointer { all in
                for r in 0..<old.count {
                    for i in 0..<(paddedFragments * Dl) { row[i] = all[r * paddedFragments * Dl + i] }
                    for i in (paddedFragments * Dl) ..< row.count { row[i] = 0 }
                    wider.append(row)
                }
            }
            imageLocals = wider
            paddedFragments = image.localCount
        }
        imageGlobals?.append(image.global)
        var padded = image.local
        padded.append(contentsOf: repeatElement(0, count: (paddedFragments - image.localCount) * Dl))
        imageLocals?.append(padded)
    }

    private mutating func check(image: ItemFeatures, text: ItemFeatures, pair: StoredPair) throws {
        let these = TrainedModel.Dimensions(imageGlobal: image.global.count, imageFragment: image.localDimension,
                                            textGlobal: text.global.count, textFragment: text.localDimension)
        guard let known = dimensions else {
            dimensions = these
            return
        }
        guard these.imageGlobal == known.imageGlobal && these.imageFragment == known.imageFragment else {
            throw PairSetError(description: "pair \(pair.pairID): image item \(pair.imageID) has features \(image.global.count) + n×\(image.localDimension), earlier images \(known.imageGlobal) + n×\(known.imageFragment)")
        }
    }

    /// Feature dimensions (nil until the first pair).
    public var featureDimensions: TrainedModel.Dimensions? { dimensions }

    /// The pairs as retrieval data (images padded to the largest fragment count); nil while
    /// empty. Its feature tensors view the rows taken in so far: nothing is copied, however
    /// large the set (a `RetrievalData` taken earlier keeps the rows it had).
    public mutating func data() -> RetrievalData? {
        if let cached { return cached }
        guard let imageGlobals, let imageLocals, let textGlobals, let textTokens, !pairIDs.isEmpty else { return nil }
        let n = paddedFragments
        let data = RetrievalData(
            imageGlobal: imageGlobals.tensor, imageLocal: imageLocals.tensor, textGlobal: textGlobals.tensor, textTokens: textTokens.tensor,
            tokenOffsets: tokenOffsets, imageOfText: imageOfText, captions: [],
            imageFragmentCounts: imageCounts.allSatisfy { $0 == n } ? nil : imageCounts)
        cached = data
        return data
    }
}

/// Pairs that cannot join a training set.
public struct PairSetError: Error, CustomStringConvertible {
    public let description: String
}
