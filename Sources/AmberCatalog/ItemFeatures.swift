/// Frozen-encoder features of one item (an image or a text): a global vector and `localCount`
/// local vectors (grid cells or regions; tokens). What the trainer takes in and what a query is.
public struct ItemFeatures: Sendable, Equatable {
    public var global: [Float]
    /// `[localCount, localDimension]`, row-major.
    public var local: [Float]
    public var localCount: Int

    /// Features whose counts are known to agree (`localCount ≥ 1` divides `local.count`).
    public init(global: [Float], local: [Float], localCount: Int) {
        precondition(localCount >= 1 && local.count % localCount == 0, "ItemFeatures: \(local.count) local values for \(localCount) vectors")
        self.global = global
        self.local = local
        self.localCount = localCount
    }

    /// Features from values read back from a store or a file, or nil when the counts disagree.
    public init?(checking global: [Float], local: [Float], localCount: Int) {
        guard localCount >= 1, local.count % localCount == 0 else { return nil }
        self.init(global: global, local: local, localCount: localCount)
    }

    public var localDimension: Int { local.count / localCount }

    /// The first problem of these features under `limits` for an item of `modality`, or nil.
    public func problem(under limits: FeatureLimits, modality: Modality, field: String) -> FeatureProblem? {
        limits.problem(modality: modality, global: global, local: local, localCount: localCount, field: field)
    }
}
