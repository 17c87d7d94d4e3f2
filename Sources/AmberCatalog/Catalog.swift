// The catalogue's vocabulary shared by every boundary that takes items in (HTTP, ingested
// files, rows read back from PostgreSQL): what a modality is, and what features and texts an
// item may have. The checks live here once, so each boundary rejects the same inputs with the
// same words, and the model and search code behind them can rely on their invariants.

/// The two modalities an item, a gallery or a query can be.
public enum Modality: String, Sendable, Codable, CaseIterable {
    case image, text

    public var other: Modality { self == .image ? .text : .image }
}

/// What a feature vector set (a global vector and `n` local vectors) must satisfy before it
/// reaches an encoder: the bounds the model's code assumes, checked at every boundary.
///
/// - Fragment counts in `[minimumFragments, maximumFragments(of:)]`: max-2 pooling needs two
///   fragments; the maximum bounds a request's and a gallery item's memory.
/// - Every value finite with `|x| ≤ maximumMagnitude` (frozen encoders give values of order 1–10;
///   a value of 3e38 is finite but overflows the first product and turns a training run into NaN).
/// - Dimensions in `1...maximumDimension`.
public struct FeatureLimits: Sendable, Equatable, Codable {
    /// Fewest local vectors per item (max-2 pooling averages the two largest per dimension).
    public var minimumFragments = 2
    /// Most local vectors per image: an EfficientNet 7×7 grid is 49, bottom-up regions 36–100,
    /// a 14×14 grid 196.
    public var maximumImageFragments = 256
    /// Most local vectors per text: the text encoder truncates to 256 tokens with `[CLS]` and `[SEP]`.
    public var maximumTextFragments = 256
    /// Largest absolute value of any feature.
    public var maximumMagnitude: Float = 1e4
    /// Largest global or local vector dimension.
    public var maximumDimension = 8192

    public init() {}

    public func maximumFragments(of modality: Modality) -> Int {
        modality == .image ? maximumImageFragments : maximumTextFragments
    }

    /// The first problem of a feature set, or nil when it is fine. `field` names it in the
    /// message (e.g. `items[3].features`); the problem's `field` extends it with `.global` or
    /// `.local` (or `.local[r]`).
    public func problem(modality: Modality, global: [Float], local: [Float], localCount: Int, field: String) -> FeatureProblem? {
        if let problem = shapeProblem(modality: modality, globalDimension: global.count, localCount: localCount,
                                      localValues: local.count, field: field) {
            return problem
        }
        if let index = firstOutOfRange(global) {
            return FeatureProblem(field: field + ".global", message: "\(field).global[\(index)] is \(global[index]); features must be finite with |x| ≤ \(maximumMagnitude)")
        }
        if let index = firstOutOfRange(local) {
            let dimension = local.count / localCount
            return FeatureProblem(field: field + ".local[\(index / dimension)]",
                                  message: "\(field).local[\(index / dimension)][\(index % dimension)] is \(local[index]); features must be finite with |x| ≤ \(maximumMagnitude)")
        }
        return nil
    }

    /// The first problem with the counts alone: `localValues` values in `localCount` vectors.
    public func shapeProblem(modality: Modality, globalDimension: Int, localCount: Int, localValues: Int, field: String) -> FeatureProblem? {
        guard (1...maximumDimension).contains(globalDimension) else {
            return FeatureProblem(field: field + ".global", message: "\(field).global has \(globalDimension) values; allowed 1…\(maximumDimension)")
        }
        let most = maximumFragments(of: modality)
        guard localCount >= minimumFragments && localCount <= most else {
            return FeatureProblem(field: field + ".local",
                                  message: "\(field).local has \(localCount) vectors; a \(modality.rawValue) needs \(minimumFragments)…\(most)")
        }
        guard localValues % localCount == 0, (1...maximumDimension).contains(localValues / localCount) else {
            return FeatureProblem(field: field + ".local", message: "\(field).local holds \(localValues) values, not \(localCount) vectors of 1…\(maximumDimension)")
        }
        return nil
    }

    /// The index of the first value that is not finite or exceeds ``maximumMagnitude``.
    public func firstOutOfRange(_ values: [Float]) -> Int? {
        values.withUnsafeBufferPointer { firstOutOfRange($0) }
    }

    /// The index of the first value that is not finite or exceeds ``maximumMagnitude``: one pass
    /// over the bit patterns (for non-negative floats, bit-pattern order is value order, and NaN
    /// and ±∞ sort above every finite value).
    public func firstOutOfRange(_ values: UnsafeBufferPointer<Float>) -> Int? {
        let bound = maximumMagnitude.magnitude.bitPattern
        // The largest magnitude per block, branch-free (vectorises); then the first bad index.
        let block = 1024
        var start = 0
        while start < values.count {
            let end = min(start + block, values.count)
            var largest: UInt32 = 0
            for i in start..<end { largest = max(largest, values[i].bitPattern & 0x7FFF_FFFF) }
            if largest > bound {
                return (start..<end).first { (values[$0].bitPattern & 0x7FFF_FFFF) > bound }
            }
            start = end
        }
        return nil
    }
}

/// Why a set of features or a text was refused: the field (a JSON path, a file and row) and a
/// sentence saying what is wrong.
public struct FeatureProblem: Error, Sendable, Equatable, CustomStringConvertible {
    public var field: String
    public var message: String

    public init(field: String, message: String) {
        self.field = field
        self.message = message
    }

    public var description: String { message }
}

/// What a text stored in the catalogue (an external id, a caption, a query) must satisfy:
/// no NUL (PostgreSQL text cannot hold it, and libpq would cut the value there) and a length
/// counted as PostgreSQL's `length()` counts it, in Unicode code points (Swift's `count` counts
/// grapheme clusters: `"\r\n"` is one character but two code points).
public enum CatalogText {
    /// The problem with `text`, or nil. `field` names it; `range` bounds its code points.
    public static func problem(_ text: String, field: String, codePoints range: ClosedRange<Int>) -> FeatureProblem? {
        var count = 0
        for scalar in text.unicodeScalars {
            if scalar.value == 0 {
                return FeatureProblem(field: field, message: "\(field) holds a NUL character (U+0000), which cannot be stored")
            }
            count += 1
        }
        guard range.contains(count) else {
            return FeatureProblem(field: field, message: "\(field) has \(count) code points; allowed \(range.lowerBound)…\(range.upperBound)")
        }
        return nil
    }

    /// Most code points of an external id (the `items.external_id` constraint).
    public static let maximumExternalID = 512
    /// Most code points of a caption (the `items.caption` constraint).
    public static let maximumCaption = 10_000
    /// Most code points of a label (the `item_labels.label` constraint).
    public static let maximumLabel = 200
    /// Most labels one item may be given at once.
    public static let maximumLabelsPerItem = 64

    /// The problem with an item's `labels`, or nil: at most ``maximumLabelsPerItem``, each 1 to
    /// ``maximumLabel`` code points without NUL. `field` names the list (`items[3].labels`).
    public static func labelProblem(_ labels: [String], field: String) -> FeatureProblem? {
        guard labels.count <= maximumLabelsPerItem else {
            return FeatureProblem(field: field, message: "\(field) has \(labels.count) labels; at most \(maximumLabelsPerItem) per item")
        }
        for (index, label) in labels.enumerated() {
            if let problem = problem(label, field: "\(field)[\(index)]", codePoints: 1...maximumLabel) { return problem }
        }
        return nil
    }
}
