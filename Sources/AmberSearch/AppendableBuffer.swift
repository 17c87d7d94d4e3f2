import Foundation

/// Elements that only ever grow at the end, shared by immutable views of their first `count`
/// elements (a gallery's snapshots). Appending after the last element written copies nothing
/// while capacity lasts — the new elements go past every view's end, where no reader looks —
/// and when it runs out the buffer moves once to one of 1.5 × the size (amortised O(1) per
/// element). Appending to a view that is no longer the newest (another view was grown from it)
/// copies that view into a new buffer instead, so a view never changes.
///
/// Readers never lock: a view is handed to readers after its elements were written (publishing
/// it through a lock or another synchronising handoff), and elements below a view's count are
/// never written again. Appenders serialise on the buffer's lock.
final class AppendableBuffer<Element>: @unchecked Sendable {
    let base: UnsafeMutablePointer<Element>
    let capacity: Int
    /// Elements written (initialised).
    private var filled: Int
    private let lock = NSLock()

    /// A buffer holding `elements`, with room for `reserve` more.
    init<C: Collection>(_ elements: C, reserve: Int = 0) where C.Element == Element {
        capacity = max(elements.count + max(reserve, 0), 1)
        base = .allocate(capacity: capacity)
        filled = Self.write(elements, at: base)
    }

    /// Initialises memory at `target` with `elements` (one block copy for contiguous ones).
    private static func write<C: Collection>(_ elements: C, at target: UnsafeMutablePointer<Element>) -> Int where C.Element == Element {
        if let count = elements.withContiguousStorageIfAvailable({ source -> Int in
            if let start = source.baseAddress { target.initialize(from: start, count: source.count) }
            return source.count
        }) { return count }
        var written = 0
        for element in elements {
            (target + written).initialize(to: element)
            written += 1
        }
        return written
    }

    deinit {
        base.deinitialize(count: filled)
        base.deallocate()
    }

    subscript(position: Int) -> Element {
        @inline(__always) get { base[position] }
    }

    /// The buffer holding the view's first `count` elements followed by `elements`: this one
    /// when the view ends where the buffer's elements end and they fit (nothing is copied), else
    /// a new buffer (the view's elements copied once, with room to grow).
    func appending<C: Collection>(_ elements: C, toViewOf count: Int) -> AppendableBuffer<Element> where C.Element == Element {
        let extra = elements.count
        lock.lock()
        if count == filled && filled + extra <= capacity {
            filled += Self.write(elements, at: base + filled)
            lock.unlock()
            return self
        }
        lock.unlock()
        let grown = AppendableBuffer(capacity: max(count + extra, count + count / 2, 16))
        grown.base.initialize(from: base, count: count)
        grown.filled = count + Self.write(elements, at: grown.base + count)
        return grown
    }

    private init(capacity: Int) {
        self.capacity = capacity
        base = .allocate(capacity: capacity)
        filled = 0
    }

    /// The first `count` elements as an array (a copy).
    func array(_ count: Int) -> [Element] { Array(UnsafeBufferPointer(start: base, count: count)) }
}

/// Store item ids → positions in a gallery that only grows: shared by its views, each of which
/// sees the positions below its own count.
final class PositionTable: @unchecked Sendable {
    private var positions: [Int64: Int] = [:]
    private let lock = NSLock()

    init(_ itemIDs: some Sequence<Int64>) {
        for (position, id) in itemIDs.enumerated() where positions[id] == nil { positions[id] = position }
    }

    /// Adds `itemIDs` at positions from `start` on (an id already present keeps its first position).
    func add(_ itemIDs: some Sequence<Int64>, from start: Int) {
        lock.lock()
        defer { lock.unlock() }
        for (offset, id) in itemIDs.enumerated() where positions[id] == nil { positions[id] = start + offset }
    }

    /// The position of `itemID` if it is below `count`.
    func position(of itemID: Int64, below count: Int) -> Int? {
        lock.lock()
        defer { lock.unlock() }
        guard let position = positions[itemID], position < count else { return nil }
        return position
    }

    func copy(below count: Int) -> PositionTable {
        lock.lock()
        defer { lock.unlock() }
        let table = PositionTable([])
        table.positions = positions.filter { $0.value < count }
        return table
    }
}
