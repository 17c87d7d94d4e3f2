/// Element types that tensor files may hold.
public enum ElementType: String, Sendable, CaseIterable {
    case float16
    case bfloat16
    case float32
    case int64

    /// Bytes per element.
    public var byteCount: Int {
        switch self {
        case .float16, .bfloat16: 2
        case .float32: 4
        case .int64: 8
        }
    }

    public var isFloatingPoint: Bool { self != .int64 }

    /// Element `index` of little-endian `bytes` of this type as a `Float` (int64 converted).
    /// The one place Amber turns stored or received bytes into floats: files, feature rows,
    /// base64 request bodies.
    @inline(__always)
    public func float(in bytes: UnsafeRawPointer, at index: Int) -> Float {
        switch self {
        case .float32: Float(bitPattern: UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: index * 4, as: UInt32.self)))
        case .float16: Float(Float16(bitPattern: UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: index * 2, as: UInt16.self))))
        case .bfloat16: Float(bitPattern: UInt32(UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: index * 2, as: UInt16.self))) << 16)
        case .int64: Float(Int64(littleEndian: bytes.loadUnaligned(fromByteOffset: index * 8, as: Int64.self)))
        }
    }

    /// Every whole element of little-endian `bytes` as floats (a trailing partial element is ignored).
    public func floats(_ bytes: UnsafeRawBufferPointer) -> [Float] {
        guard let base = bytes.baseAddress else { return [] }
        return (0..<(bytes.count / byteCount)).map { float(in: base, at: $0) }
    }

    /// `values` as little-endian bytes of this type.
    public func bytes(_ values: some Collection<Float>) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: values.count * byteCount)
        bytes.withUnsafeMutableBytes { out in
            guard let base = out.baseAddress else { return }
            for (i, v) in values.enumerated() { store(v, into: base, at: i) }
        }
        return bytes
    }

    /// Writes `value` as element `index` of little-endian `bytes` of this type.
    @inline(__always)
    public func store(_ value: Float, into bytes: UnsafeMutableRawPointer, at index: Int) {
        switch self {
        case .float32: bytes.storeBytes(of: value.bitPattern.littleEndian, toByteOffset: index * 4, as: UInt32.self)
        case .float16: bytes.storeBytes(of: Float16(value).bitPattern.littleEndian, toByteOffset: index * 2, as: UInt16.self)
        case .bfloat16: bytes.storeBytes(of: ElementEncoding.bfloat16Bits(value).littleEndian, toByteOffset: index * 2, as: UInt16.self)
        case .int64: bytes.storeBytes(of: Int64(value).littleEndian, toByteOffset: index * 8, as: Int64.self)
        }
    }
}

/// An array of elements read from a file: shape, element type and the raw little-endian bytes
/// (usually inside a ``MappedFile``, which `owner` keeps alive).
public struct RawArray: @unchecked Sendable {
    public let shape: [Int]
    public let elementType: ElementType
    /// Little-endian element bytes, row-major.
    public let bytes: UnsafeRawBufferPointer
    /// File the bytes come from (for error messages).
    public let path: String
    let owner: AnyObject?

    public var count: Int { Tensor.elementCount(shape) }

    /// An array over `bytes`, which `owner` (if any) keeps alive.
    public init(shape: [Int], elementType: ElementType, bytes: UnsafeRawBufferPointer, path: String, owner: AnyObject?) {
        precondition(bytes.count == Tensor.elementCount(shape) * elementType.byteCount,
                     "RawArray: \(bytes.count) bytes for shape \(shape) of \(elementType)")
        self.shape = shape
        self.elementType = elementType
        self.bytes = bytes
        self.path = path
        self.owner = owner
    }

    /// The elements as a `Float` tensor (float16/bfloat16 widened). Float32 data that is
    /// aligned in a mapped file is used in place, without a copy.
    /// - Throws: ``TensorFileError`` for integer arrays.
    public func tensor() throws -> Tensor {
        try tensor(rows: 0 ..< (shape.first ?? 1))
    }

    /// Rows `rows` of the first axis as a `Float` tensor.
    public func tensor(rows: Range<Int>) throws -> Tensor {
        guard elementType.isFloatingPoint else {
            throw TensorFileError(path: path, problem: "holds \(elementType.rawValue) values; a float tensor was expected")
        }
        let rowShape = shape.isEmpty ? [] : Array(shape.dropFirst())
        let rowCount = Tensor.elementCount(rowShape)
        let extent = shape.first ?? 1
        guard rows.lowerBound >= 0 && rows.upperBound <= extent else {
            throw TensorFileError(path: path, problem: "rows \(rows) out of range 0..<\(extent)")
        }
        let outShape = shape.isEmpty ? [] : [rows.count] + rowShape
        let start = rows.lowerBound * rowCount, total = rows.count * rowCount
        let source = bytes.baseAddress.map { $0 + start * elementType.byteCount }
        if elementType == .float32, let owner, let source, Int(bitPattern: source) % 4 == 0 {
            let pointer = UnsafeMutablePointer(mutating: source.assumingMemoryBound(to: Float.self))
            return Tensor(shape: outShape, storage: TensorStorage(borrowing: pointer, count: total, owner: owner))
        }
        let result = Tensor(uninitializedShape: outShape)
        guard let source, total > 0 else { return result }
        let out = result.pointer
        if elementType.isFloatingPoint {
            for i in 0..<total { out[i] = elementType.float(in: source, at: i) }
        }
        return result
    }

    /// The elements as integers.
    /// - Throws: ``TensorFileError`` for floating-point arrays.
    public func int64Values() throws -> [Int64] {
        guard elementType == .int64 else {
            throw TensorFileError(path: path, problem: "holds \(elementType.rawValue) values; int64 was expected")
        }
        guard let source = bytes.baseAddress else { return [] }
        return (0..<count).map { Int64(littleEndian: source.loadUnaligned(fromByteOffset: $0 * 8, as: Int64.self)) }
    }
}

/// Little-endian encodings of tensors.
public enum ElementEncoding {
    public static func encode(_ tensor: Tensor, as type: ElementType) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: tensor.count * type.byteCount)
        tensor.withUnsafeBufferPointer { values in
            bytes.withUnsafeMutableBytes { out in
                guard let base = out.baseAddress else { return }
                for (i, v) in values.enumerated() { type.store(v, into: base, at: i) }
            }
        }
        return bytes
    }

    public static func encode(_ values: [Int64]) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: values.count * 8)
        bytes.withUnsafeMutableBytes { out in
            for (i, v) in values.enumerated() { out.storeBytes(of: v.littleEndian, toByteOffset: i * 8, as: Int64.self) }
        }
        return bytes
    }

    /// Float32 → bfloat16 with round-to-nearest-even (NaN stays NaN).
    static func bfloat16Bits(_ value: Float) -> UInt16 {
        if value.isNaN { return 0x7FC0 }
        let bits = value.bitPattern
        let rounding = 0x7FFF + ((bits >> 16) & 1)
        return UInt16(truncatingIfNeeded: (bits &+ rounding) >> 16)
    }
}
