import Synchronization

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
        let raw = BufferPool.shared.allocate(byteCount: max(count, 1) * MemoryLayout<Float>.stride)
        self.base = raw.bindMemory(to: Float.self, capacity: max(count, 1))
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
        if owner == nil {
            BufferPool.shared.release(UnsafeMutableRawPointer(base), byteCount: max(count, 1) * MemoryLayout<Float>.stride)
        }
    }

    /// A new storage with the same contents.
    func copy() -> TensorStorage {
        let result = TensorStorage(uninitializedCount: count)
        result.base.update(from: base, count: count)
        return result
    }
}

/// Keeps freed large buffers for reuse, so a training loop that allocates the same shapes every
/// step does not map fresh pages (and take a page fault per 4 KiB) each time.
///
/// Buffers of at least `minimumPooledBytes` are rounded up to whole 4 KiB pages and kept in a
/// list per size; the pool holds at most `capacityBytes` (default 1 GiB, or
/// `AMBER_TENSOR_POOL_MB`) and frees anything beyond. Smaller buffers go straight to malloc.
final class BufferPool: Sendable {
    static let shared = BufferPool(
        capacityBytes: (getenv("AMBER_TENSOR_POOL_MB").flatMap { Int(String(cString: $0)) } ?? 1024) << 20
    )

    static let minimumPooledBytes = 64 << 10
    let capacityBytes: Int
    /// Free buffers by size class (addresses as integers), and their total size.
    private let state = Mutex<(free: [Int: [Int]], heldBytes: Int)>(([:], 0))

    init(capacityBytes: Int) {
        self.capacityBytes = capacityBytes
    }

    /// Bytes a request of `byteCount` occupies.
    static func sizeClass(_ byteCount: Int) -> Int {
        byteCount < minimumPooledBytes ? byteCount : (byteCount + 4095) & ~4095
    }

    func allocate(byteCount: Int) -> UnsafeMutableRawPointer {
        let size = BufferPool.sizeClass(byteCount)
        if size >= BufferPool.minimumPooledBytes {
            let reused: Int? = state.withLock { state in
                guard let address = state.free[size]?.popLast() else { return nil }
                state.heldBytes -= size
                return address
            }
            if let reused, let pointer = UnsafeMutableRawPointer(bitPattern: reused) { return pointer }
        }
        var raw: UnsafeMutableRawPointer?
        let status = posix_memalign(&raw, 64, size)
        precondition(status == 0 && raw != nil, "TensorStorage: cannot allocate \(size) bytes")
        return raw!
    }

    func release(_ pointer: UnsafeMutableRawPointer, byteCount: Int) {
        let size = BufferPool.sizeClass(byteCount)
        if size >= BufferPool.minimumPooledBytes {
            let address = Int(bitPattern: pointer)
            let kept = state.withLock { state -> Bool in
                guard state.heldBytes + size <= capacityBytes else { return false }
                state.free[size, default: []].append(address)
                state.heldBytes += size
                return true
            }
            if kept { return }
        }
        free(pointer)
    }
}
