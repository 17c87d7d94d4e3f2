#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A problem with a tensor file: which file, and what is wrong with it.
public struct TensorFileError: Error, CustomStringConvertible, Equatable {
    /// Path of the file.
    public let path: String
    /// What is wrong, in words that say what to do.
    public let problem: String

    public init(path: String, problem: String) {
        self.path = path
        self.problem = problem
    }

    public var description: String { "\(path): \(problem)" }
}

/// A whole file mapped read-only into memory. The mapping lives as long as this object (and any
/// tensor storage that borrows from it).
public final class MappedFile: @unchecked Sendable {
    public let path: String
    public let bytes: UnsafeRawBufferPointer

    /// Maps the file at `path`.
    /// - Throws: ``TensorFileError`` when the file cannot be opened or mapped.
    public init(path: String) throws {
        self.path = path
        let descriptor = open(path, O_RDONLY)
        guard descriptor >= 0 else {
            throw TensorFileError(path: path, problem: "cannot open: \(String(cString: strerror(errno)))")
        }
        defer { close(descriptor) }
        var status = stat()
        guard fstat(descriptor, &status) == 0 else {
            throw TensorFileError(path: path, problem: "cannot stat: \(String(cString: strerror(errno)))")
        }
        let size = Int(status.st_size)
        if size == 0 {
            bytes = UnsafeRawBufferPointer(start: nil, count: 0)
            return
        }
        guard let base = mmap(nil, size, PROT_READ, MAP_PRIVATE, descriptor, 0), base != MAP_FAILED else {
            throw TensorFileError(path: path, problem: "cannot map: \(String(cString: strerror(errno)))")
        }
        bytes = UnsafeRawBufferPointer(start: base, count: size)
        isMapped = true
    }

    /// A copy of `contents` in memory (16-byte aligned), read like a mapped file called `name`:
    /// for files that arrive as bytes (from a database) rather than from disk.
    public init(copying contents: [UInt8], name: String) {
        path = name
        isMapped = false
        guard !contents.isEmpty else {
            bytes = UnsafeRawBufferPointer(start: nil, count: 0)
            return
        }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: contents.count, alignment: 16)
        contents.withUnsafeBytes { buffer.copyMemory(from: $0) }
        bytes = UnsafeRawBufferPointer(buffer)
    }

    private var isMapped = false

    deinit {
        guard let base = bytes.baseAddress else { return }
        if isMapped {
            munmap(UnsafeMutableRawPointer(mutating: base), bytes.count)
        } else {
            UnsafeMutableRawPointer(mutating: base).deallocate()
        }
    }
}

/// Writes files so that readers see either the old contents or the new, never a mix:
/// the bytes go to a temporary file beside the target, which is flushed (`fsync`) and renamed
/// over the target; the directory is flushed too, so the rename survives a crash.
public enum AtomicFile {
    /// Writes `chunks` in order to `path` atomically.
    public static func write(_ chunks: [[UInt8]], to path: String) throws {
        let temporary = path + ".tmp-\(getpid())"
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard descriptor >= 0 else {
            throw TensorFileError(path: path, problem: "cannot create \(temporary): \(String(cString: strerror(errno)))")
        }
        var failure: String?
        outer: for chunk in chunks {
            var written = 0
            while written < chunk.count {
                let result = chunk.withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress! + written, chunk.count - written) }
                if result < 0 {
                    if errno == EINTR { continue }
                    failure = "write failed: \(String(cString: strerror(errno)))"
                    break outer
                }
                written += result
            }
        }
        if failure == nil && fsync(descriptor) != 0 { failure = "fsync failed: \(String(cString: strerror(errno)))" }
        close(descriptor)
        if let failure {
            unlink(temporary)
            throw TensorFileError(path: path, problem: failure)
        }
        guard rename(temporary, path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temporary)
            throw TensorFileError(path: path, problem: "cannot rename into place: \(reason)")
        }
        let directory = path.contains("/") ? String(path[..<path.lastIndex(of: "/")!]) : "."
        let directoryDescriptor = open(directory.isEmpty ? "/" : directory, O_RDONLY)
        if directoryDescriptor >= 0 {
            fsync(directoryDescriptor)
            close(directoryDescriptor)
        }
    }
}
