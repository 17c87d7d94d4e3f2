import Foundation

/// safetensors files (Hugging Face): an 8-byte little-endian header length `N`, a JSON header of
/// `N` bytes mapping each tensor name to `{"dtype", "shape", "data_offsets": [begin, end]}`
/// (offsets relative to the data that follows the header) plus an optional `"__metadata__"`
/// map of strings, then the data. Supported dtypes: F32, F16, BF16, I64.
///
/// Reading maps the file: tensors are decoded only when asked for, so loading a few tensors of
/// a large file touches only their pages.
public struct SafetensorsFile: @unchecked Sendable {
    public let path: String
    /// The `__metadata__` strings.
    public let metadata: [String: String]
    /// Every tensor, by name.
    public let arrays: [String: RawArray]

    /// Tensor names, sorted.
    public var names: [String] { arrays.keys.sorted() }

    /// Maps and parses the file at `path`.
    public init(path: String) throws {
        try self.init(file: MappedFile(path: path))
    }

    /// Parses safetensors bytes held in memory (e.g. read from a database); `name` stands for the
    /// file in errors.
    public init(bytes: [UInt8], name: String) throws {
        try self.init(file: MappedFile(copying: bytes, name: name))
    }

    private init(file: MappedFile) throws {
        let path = file.path
        self.path = path
        let bytes = file.bytes
        func fail(_ problem: String) -> TensorFileError { TensorFileError(path: path, problem: problem) }
        guard bytes.count >= 8 else { throw fail("truncated: \(bytes.count) bytes, a safetensors file starts with an 8-byte header length") }
        let headerLength = Int(UInt64(littleEndian: bytes.loadUnaligned(as: UInt64.self)))
        guard headerLength <= 100_000_000 else { throw fail("header length \(headerLength) is implausible; is this a safetensors file?") }
        guard 8 + headerLength <= bytes.count else {
            throw fail("truncated header: needs \(headerLength) bytes, file has \(bytes.count - 8)")
        }
        let headerData = Data(bytes: bytes.baseAddress! + 8, count: headerLength)
        let json: Any
        do {
            json = try JSONSerialization.jsonObject(with: headerData)
        } catch {
            throw fail("header is not valid JSON: \(error.localizedDescription)")
        }
        guard let header = json as? [String: Any] else { throw fail("header is not a JSON object") }
        let dataStart = 8 + headerLength
        let dataLength = bytes.count - dataStart
        var metadata: [String: String] = [:]
        var arrays: [String: RawArray] = [:]
        for (name, value) in header {
            if name == "__metadata__" {
                guard let strings = value as? [String: String] else { throw fail("__metadata__ must map strings to strings") }
                metadata = strings
                continue
            }
            guard let entry = value as? [String: Any],
                  let dtype = entry["dtype"] as? String,
                  let shapeValues = entry["shape"] as? [Any],
                  let offsetValues = entry["data_offsets"] as? [Any], offsetValues.count == 2 else {
                throw fail("tensor '\(name)': entry needs dtype, shape and data_offsets [begin, end]")
            }
            let elementType: ElementType
            switch dtype {
            case "F32": elementType = .float32
            case "F16": elementType = .float16
            case "BF16": elementType = .bfloat16
            case "I64": elementType = .int64
            default: throw fail("tensor '\(name)': dtype \(dtype) is not supported (F32, F16, BF16, I64)")
            }
            let shape = shapeValues.compactMap { ($0 as? NSNumber)?.intValue }
            guard shape.count == shapeValues.count, shape.allSatisfy({ $0 >= 0 }) else {
                throw fail("tensor '\(name)': shape \(shapeValues) is not a list of non-negative integers")
            }
            guard let begin = (offsetValues[0] as? NSNumber)?.intValue, let end = (offsetValues[1] as? NSNumber)?.intValue,
                  begin >= 0, begin <= end else {
                throw fail("tensor '\(name)': bad data_offsets \(offsetValues)")
            }
            guard end <= dataLength else {
                throw fail("truncated data: tensor '\(name)' ends at byte \(end) of the data, which has \(dataLength)")
            }
            let expected = Tensor.elementCount(shape) * elementType.byteCount
            guard end - begin == expected else {
                throw fail("tensor '\(name)': shape \(shape) of \(dtype) needs \(expected) bytes, data_offsets give \(end - begin)")
            }
            let data = UnsafeRawBufferPointer(rebasing: bytes[(dataStart + begin) ..< (dataStart + end)])
            arrays[name] = RawArray(shape: shape, elementType: elementType, bytes: data, path: path, owner: file)
        }
        self.metadata = metadata
        self.arrays = arrays
    }

    /// The float tensor called `name`.
    /// - Throws: ``TensorFileError`` when there is no such tensor or it holds integers.
    public func tensor(_ name: String) throws -> Tensor {
        guard let array = arrays[name] else {
            throw TensorFileError(path: path, problem: "no tensor named '\(name)' (the file has \(arrays.count) tensors)")
        }
        return try array.tensor()
    }

    /// One tensor to write: a float tensor stored as `elementType`, or integers.
    public enum Entry {
        case float(Tensor, ElementType)
        case int64([Int64], shape: [Int])
    }

    /// Writes `entries` (sorted by name) and `metadata` atomically.
    public static func write(_ entries: [String: Entry], metadata: [String: String] = [:], to path: String) throws {
        try AtomicFile.write(encode(entries, metadata: metadata), to: path)
    }

    /// The bytes of a file holding `entries` (sorted by name) and `metadata`, in chunks.
    public static func encode(_ entries: [String: Entry], metadata: [String: String] = [:]) throws -> [[UInt8]] {
        var header: [String: Any] = [:]
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var chunks: [[UInt8]] = []
        var offset = 0
        for name in entries.keys.sorted() {
            let bytes: [UInt8], dtype: String, shape: [Int]
            switch entries[name]! {
            case .float(let tensor, let type):
                precondition(type.isFloatingPoint, "SafetensorsFile.write: '\(name)' is a float tensor; store it as F32, F16 or BF16")
                bytes = ElementEncoding.encode(tensor, as: type)
                dtype = type == .float32 ? "F32" : (type == .float16 ? "F16" : "BF16")
                shape = tensor.shape
            case .int64(let values, let valueShape):
                precondition(Tensor.elementCount(valueShape) == values.count, "SafetensorsFile.write: '\(name)' has \(values.count) values for shape \(valueShape)")
                bytes = ElementEncoding.encode(values)
                dtype = "I64"
                shape = valueShape
            }
            header[name] = ["dtype": dtype, "shape": shape, "data_offsets": [offset, offset + bytes.count]] as [String: Any]
            offset += bytes.count
            chunks.append(bytes)
        }
        var headerBytes = Array(try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys]))
        // Pad the header with spaces so the data starts 8-byte aligned.
        headerBytes += [UInt8](repeating: 0x20, count: (8 - headerBytes.count % 8) % 8)
        var length = [UInt8](repeating: 0, count: 8)
        for i in 0..<8 { length[i] = UInt8(truncatingIfNeeded: UInt64(headerBytes.count) >> (8 * UInt64(i))) }
        return [length, headerBytes] + chunks
    }
}
