// Shape legend for this module: `B` batch, `n` fragments (rows of a set), `D` feature dimension,
// `m × k · k × n` for matrix products. Axes are counted from 0; negative axes count from the end.

/// A dense, row-major `Float` tensor with value semantics.
///
/// Storage is shared between copies and copied before the first write to a shared buffer
/// (copy-on-write). `reshape` and slices along the first axis are views: they share storage.
/// A tensor produced by an op on tensors that require gradients carries a node of the autodiff
/// graph; `backward()` on a scalar result sends gradients to every ``Parameter`` it came from.
public struct Tensor: @unchecked Sendable {
    /// Extent of each axis; `[]` is a scalar.
    public internal(set) var shape: [Int]
    var storage: TensorStorage
    /// Index of the first element in `storage`.
    var offset: Int
    /// The autodiff node that produced this tensor, or `nil` for a constant.
    var node: GraphNode?

    init(shape: [Int], storage: TensorStorage, offset: Int = 0, node: GraphNode? = nil) {
        self.shape = shape
        self.storage = storage
        self.offset = offset
        self.node = node
    }

    /// A tensor of `shape` with every element uninitialised (internal: ops fill it).
    init(uninitializedShape shape: [Int]) {
        let count = Tensor.elementCount(shape)
        self.init(shape: shape, storage: TensorStorage(uninitializedCount: count))
    }

    /// A tensor of `shape` with every element equal to `value`.
    public init(shape: [Int], repeating value: Float) {
        self.init(uninitializedShape: shape)
        storage.base.initialize(repeating: value, count: storage.count)
    }

    /// A tensor of `shape` holding `scalars` in row-major order.
    public init(shape: [Int], scalars: [Float]) {
        let count = Tensor.elementCount(shape)
        precondition(scalars.count == count,
                     "Tensor(shape: \(shape)) needs \(count) scalars, got \(scalars.count)")
        self.init(uninitializedShape: shape)
        scalars.withUnsafeBufferPointer { storage.base.update(from: $0.baseAddress!, count: count) }
    }

    /// A rank-0 tensor.
    public init(_ value: Float) {
        self.init(shape: [], repeating: value)
    }

    /// A tensor of `shape` whose elements are produced, in row-major order, by `body`.
    public init(shape: [Int], generator body: (Int) -> Float) {
        self.init(uninitializedShape: shape)
        for i in 0..<storage.count { storage.base[i] = body(i) }
    }

    public static func zeros(_ shape: [Int]) -> Tensor { Tensor(shape: shape, repeating: 0) }
    public static func ones(_ shape: [Int]) -> Tensor { Tensor(shape: shape, repeating: 1) }

    /// Number of axes.
    public var rank: Int { shape.count }
    /// Number of elements.
    public var count: Int { Tensor.elementCount(shape) }
    /// The elements in row-major order.
    public var scalars: [Float] {
        withUnsafeBufferPointer { Array($0) }
    }
    /// The value of a one-element tensor.
    public var scalar: Float {
        precondition(count == 1, "Tensor.scalar needs exactly one element, shape is \(shape)")
        return storage.base[offset]
    }

    /// Whether gradients flow back through this tensor.
    public var requiresGradient: Bool { node != nil }

    /// The same values, cut from the autodiff graph.
    public var detached: Tensor {
        Tensor(shape: shape, storage: storage, offset: offset, node: nil)
    }

    /// Element at a multi-index (slow; for tests and inspection).
    public subscript(_ index: Int...) -> Float {
        get { storage.base[offset + flatIndex(index)] }
        set {
            let i = flatIndex(index)
            withUnsafeMutableBufferPointer { $0[i] = newValue }
        }
    }

    func flatIndex(_ index: [Int]) -> Int {
        precondition(index.count == rank, "index \(index) does not match shape \(shape)")
        var flat = 0
        for (axis, i) in index.enumerated() {
            precondition(i >= 0 && i < shape[axis], "index \(index) out of range for shape \(shape)")
            flat = flat * shape[axis] + i
        }
        return flat
    }

    /// Calls `body` with the elements in row-major order.
    public func withUnsafeBufferPointer<R>(_ body: (UnsafeBufferPointer<Float>) throws -> R) rethrows -> R {
        try body(UnsafeBufferPointer(start: storage.base + offset, count: count))
    }

    /// Calls `body` with writable elements, copying shared storage first.
    public mutating func withUnsafeMutableBufferPointer<R>(
        _ body: (UnsafeMutableBufferPointer<Float>) throws -> R
    ) rethrows -> R {
        makeUniqueStorage()
        return try body(UnsafeMutableBufferPointer(start: storage.base + offset, count: count))
    }

    /// Ensures this tensor is the only owner of its elements (copy-on-write).
    mutating func makeUniqueStorage() {
        if !isKnownUniquelyReferenced(&storage) || storage.isReadOnly || storage.count != count {
            let fresh = TensorStorage(uninitializedCount: count)
            fresh.base.update(from: storage.base + offset, count: count)
            storage = fresh
            offset = 0
        }
    }

    /// Pointer to the first element, for reading within an op.
    @inline(__always) var pointer: UnsafeMutablePointer<Float> { storage.base + offset }

    static func elementCount(_ shape: [Int]) -> Int {
        var count = 1
        for extent in shape {
            precondition(extent >= 0, "negative extent in shape \(shape)")
            count *= extent
        }
        return count
    }

    /// Resolves a possibly negative axis against this tensor's rank.
    func normalizedAxis(_ axis: Int, function: String = #function) -> Int {
        let resolved = axis < 0 ? axis + rank : axis
        precondition(resolved >= 0 && resolved < rank,
                     "\(function): axis \(axis) out of range for shape \(shape)")
        return resolved
    }

    /// `(outer, extent, inner)` sizes around `axis`: the tensor viewed as `[outer, extent, inner]`.
    func axisView(_ axis: Int) -> (outer: Int, extent: Int, inner: Int) {
        var outer = 1
        for a in 0..<axis { outer *= shape[a] }
        var inner = 1
        for a in (axis + 1)..<rank { inner *= shape[a] }
        return (outer, shape[axis], inner)
    }
}

extension Tensor: CustomStringConvertible {
    public var description: String {
        let values = scalars
        let shown = values.prefix(8).map { String(format: $0) }.joined(separator: ", ")
        let more = values.count > 8 ? ", … (\(values.count) elements)" : ""
        return "Tensor\(shape)[\(shown)\(more)]"
    }
}

private extension String {
    init(format value: Float) {
        self = "\(value)"
    }
}

extension Tensor {
    /// Whether two tensors have the same shape and elements within `tolerance`.
    public func isApproximatelyEqual(to other: Tensor, tolerance: Float = 1e-5) -> Bool {
        guard shape == other.shape else { return false }
        return withUnsafeBufferPointer { a in
            other.withUnsafeBufferPointer { b in
                for i in 0..<a.count where !(Swift.abs(a[i] - b[i]) <= tolerance) { return false }
                return true
            }
        }
    }

    /// Largest absolute element-wise difference (`.infinity` when a NaN is involved).
    public func maxAbsoluteDifference(to other: Tensor) -> Float {
        precondition(shape == other.shape, "maxAbsoluteDifference: shapes \(shape) and \(other.shape)")
        return withUnsafeBufferPointer { a in
            other.withUnsafeBufferPointer { b in
                var worst: Float = 0
                for i in 0..<a.count {
                    let d = Swift.abs(a[i] - b[i])
                    if d.isNaN { return .infinity }
                    worst = Swift.max(worst, d)
                }
                return worst
            }
        }
    }

    /// Whether every element is finite.
    public var isFinite: Bool {
        withUnsafeBufferPointer { $0.allSatisfy { $0.isFinite } }
    }
}
