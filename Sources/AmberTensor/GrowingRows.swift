// Shape legend: `r` rows, each of shape `rowShape` (`e` elements).

/// Rows of one shape that only grow at the end, read as a tensor of the rows so far that shares
/// their storage: a data set that grows by a few rows costs those rows, not a copy of all of
/// them. Storage grows by 1.5× when full (amortised O(1) per element). A tensor handed out
/// earlier keeps showing the rows it had (rows are never written twice; writes to such a
/// tensor go to a copy, as for any shared storage). A value semantics type: of two copies that
/// both append, the second to do so moves to storage of its own.
public struct GrowingRows: @unchecked Sendable {
    /// The storage and how many rows of it some copy has written.
    private final class Block {
        let storage: TensorStorage
        var filled = 0
        init(_ storage: TensorStorage) { self.storage = storage }
    }

    /// The shape of one row.
    public let rowShape: [Int]
    /// Elements per row.
    public let rowElements: Int
    private var block: Block
    private var storage: TensorStorage { block.storage }
    /// Rows written.
    public private(set) var count = 0

    /// No rows yet, with room for `capacity`.
    public init(rowShape: [Int], capacity: Int = 16) {
        precondition(rowShape.allSatisfy { $0 >= 0 }, "GrowingRows: row shape \(rowShape)")
        self.rowShape = rowShape
        rowElements = Tensor.elementCount(rowShape)
        block = Block(TensorStorage(uninitializedCount: max(capacity, 1) * max(rowElements, 1)))
    }

    /// Rows the storage holds before it has to move.
    public var capacity: Int { storage.count / max(rowElements, 1) }

    /// Appends rows given as `values` (row-major, a whole number of rows).
    public mutating func append(_ values: [Float]) {
        values.withUnsafeBufferPointer { append($0) }
    }

    /// Appends rows given as `values` (row-major, a whole number of rows).
    public mutating func append(_ values: UnsafeBufferPointer<Float>) {
        precondition(rowElements == 0 ? values.isEmpty : values.count % rowElements == 0,
                     "GrowingRows.append: \(values.count) values are not whole rows of \(rowShape)")
        let rows = rowElements == 0 ? 0 : values.count / rowElements
        if block.filled != count { move(toCapacity: max(count + rows, capacity)) }   // another copy wrote past our rows
        reserve(count + rows)
        if let source = values.baseAddress { (storage.base + count * rowElements).initialize(from: source, count: values.count) }
        count += rows
        block.filled = count
    }

    /// Makes room for `rows` rows in all (moving the storage once, to 1.5× when it must grow).
    public mutating func reserve(_ rows: Int) {
        guard rows > capacity else { return }
        move(toCapacity: max(rows, capacity + capacity / 2, 16))
    }

    /// Copies this value's rows into new storage of `rows` rows.
    private mutating func move(toCapacity rows: Int) {
        let grown = Block(TensorStorage(uninitializedCount: max(rows, 1) * max(rowElements, 1)))
        grown.storage.base.initialize(from: storage.base, count: count * rowElements)
        grown.filled = count
        block = grown
    }

    /// The rows written so far, `[count] + rowShape`, sharing this storage.
    public var tensor: Tensor { Tensor(shape: [count] + rowShape, storage: storage) }
}
