/// Frozen-encoder features of one item (an image or a text): a global vector and `localCount`
/// local vectors (grid cells or regions; tokens). What the trainer takes in and what a query is.
public struct ItemFeatures: Sendable, Equatable {
    public var global: [Float]
    /// `[localCount, localDimension]`, row-major.
    public var local: [Float]
    public var localCount: Int

    public init(global: [Float], local: [Float], localCount: Int) {
        precondition(localCount >= 1 && local.count % localCount == 0, "ItemFeatures: \(local.count) local values for \(localCount) vectors")
        self.global = global
        self.local = local
        self.localCount = localCount
    }

    public var localDimension: Int { local.count / localCount }
}

