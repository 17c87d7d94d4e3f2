#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A contiguous, 64-byte aligned block of `Float`s that one or more tensors share.
///
/// Tensors hold their storage by reference and copy it before a write when it is shared
/// (copy-on-write), so `Tensor` has value semantics. A storage can also wrap memory it does not
/// own (a memory-mapped file): such storage is read-only and is always copied before a write.
public final class TensorStorage: @unchecked Sendable {
    /// First element.
    public let base: UnsafeMutablePointer<Float>
    /// Number of `Float`s.
    public let count: Int
    /// Memory that must stay alive while `base` is used (a mapped file), if not owned here.
    private let owner: AnyObject?

    /// Whether writes must go to a copy even when this storage is uniquely referenced.
    var isReadOnly: Bool { owner != nil }

    /// Allocates `count` uninitialised floats.
    init(uninitializedCount count: Int) {
        precondition(count >= 0, "TensorStorage: negative element count \(count)")
        let bytes = max(count, 1) * MemoryLayout<Float>.stride
        var raw: UnsafeMutableRawPointer?
        let status = posix_memalign(&raw, 64, bytes)
        precondition(status == 0 && raw != nil, "TensorStorage: cannot allocate \(bytes) bytes")
        self.base = raw!.bindMemory(to: Float.self, capacity: max(count, 1))
        self.count = count
        self.owner = nil
    }

    /// Wraps memory owned by `owner` (kept alive as long as this storage).
    init(borrowing base: UnsafeMutablePointer<Float>, count: Int, owner: AnyObject) {
        self.base = base
        self.count = count
        self.owner = owner
    }

    deinit {
        if owner == nil { free(base) }
    }

    /// A new storage with the same contents.
    func copy() -> TensorStorage {
        let result = TensorStorage(uninitializedCount: count)
        result.base.update(from: base, count: count)
        return result
    }
}
