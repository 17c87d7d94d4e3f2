import AmberCatalog
import Foundation

/// PostgreSQL type OIDs Amber sends or reads in binary.
enum PostgresType {
    static let bool: UInt32 = 16
    static let bytea: UInt32 = 17
    static let name: UInt32 = 19
    static let int8: UInt32 = 20
    static let int2: UInt32 = 21
    static let int4: UInt32 = 23
    static let text: UInt32 = 25
    static let oid: UInt32 = 26
    static let json: UInt32 = 114
    static let float4: UInt32 = 700
    static let float8: UInt32 = 701
    static let unknown: UInt32 = 705
    static let int4Array: UInt32 = 1007
    static let textArray: UInt32 = 1009
    static let int8Array: UInt32 = 1016
    static let float4Array: UInt32 = 1021
    static let bpchar: UInt32 = 1042
    static let varchar: UInt32 = 1043
    static let timestamptz: UInt32 = 1184
    static let interval: UInt32 = 1186
    static let jsonb: UInt32 = 3802
}

/// A query parameter. Numbers, `bytea` and `real[]` travel in binary; text travels as text with
/// its type left for the server to infer, so it also fills enum, `jsonb` and date columns.
public enum PostgresValue: Sendable, Equatable {
    case null
    case bool(Bool)
    case int(Int64)
    case int32(Int32)
    case double(Double)
    case float(Float)
    case text(String)
    case bytes([UInt8])
    case floats([Float])
    case ints([Int64])
    case texts([String])
    /// A JSON document (sent as `jsonb`).
    case json(String)

    public init(_ value: Int) { self = .int(Int64(value)) }
    public init(_ value: String?) { self = value.map(PostgresValue.text) ?? .null }

    /// `(type OID, bytes, is binary)` as libpq's `PQexecParams` takes them; `nil` bytes is NULL.
    var wireFormat: (type: UInt32, bytes: [UInt8]?, binary: Bool) {
        switch self {
        case .null: return (0, nil, false)
        case .bool(let value): return (PostgresType.bool, [value ? 1 : 0], true)
        case .int(let value): return (PostgresType.int8, BigEndian.bytes(of: UInt64(bitPattern: value)), true)
        case .int32(let value): return (PostgresType.int4, BigEndian.bytes(of: UInt32(bitPattern: value)), true)
        case .double(let value): return (PostgresType.float8, BigEndian.bytes(of: value.bitPattern), true)
        case .float(let value): return (PostgresType.float4, BigEndian.bytes(of: value.bitPattern), true)
        case .text(let value): return (0, Array(value.utf8) + [0], false)
        case .bytes(let value): return (PostgresType.bytea, value, true)
        case .floats(let values):
            return (PostgresType.float4Array, BinaryArray.encodeFixedWidth(values.map(\.bitPattern), elementType: PostgresType.float4), true)
        case .ints(let values):
            return (PostgresType.int8Array, BinaryArray.encodeFixedWidth(values.map { UInt64(bitPattern: $0) }, elementType: PostgresType.int8), true)
        case .texts(let values):
            return (PostgresType.textArray, BinaryArray.encode(values.map { Array($0.utf8) }, elementType: PostgresType.text), true)
        case .json(let value): return (PostgresType.jsonb, [1] + Array(value.utf8), true)
        }
    }
}

enum BigEndian {
    static func bytes<T: FixedWidthInteger>(of value: T) -> [UInt8] {
        withUnsafeBytes(of: value.bigEndian) { Array($0) }
    }

    static func read<T: FixedWidthInteger>(_ type: T.Type, from bytes: UnsafeRawBufferPointer, at offset: Int) -> T {
        T(bigEndian: bytes.loadUnaligned(fromByteOffset: offset, as: T.self))
    }
}

/// PostgreSQL's binary array format: dimensions, flags, element type, then each element as a
/// 4-byte length and its bytes (length −1 for NULL).
enum BinaryArray {
    static func encode(_ elements: [[UInt8]], elementType: UInt32) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(20 + elements.reduce(0) { $0 + 4 + $1.count })
        out += BigEndian.bytes(of: Int32(1))           // dimensions
        out += BigEndian.bytes(of: Int32(0))           // no NULLs
        out += BigEndian.bytes(of: elementType)
        out += BigEndian.bytes(of: Int32(elements.count))
        out += BigEndian.bytes(of: Int32(1))           // lower bound
        for element in elements {
            out += BigEndian.bytes(of: Int32(element.count))
            out += element
        }
        return out
    }

    /// A one-dimensional array of fixed-width values (float4, int8), written in one pass.
    static func encodeFixedWidth<T: FixedWidthInteger>(_ elements: [T], elementType: UInt32) -> [UInt8] {
        let width = MemoryLayout<T>.size
        var out = [UInt8](repeating: 0, count: 20 + elements.count * (4 + width))
        out.withUnsafeMutableBytes { raw in
            raw.storeBytes(of: Int32(1).bigEndian, toByteOffset: 0, as: Int32.self)
            raw.storeBytes(of: Int32(0).bigEndian, toByteOffset: 4, as: Int32.self)
            raw.storeBytes(of: elementType.bigEndian, toByteOffset: 8, as: UInt32.self)
            raw.storeBytes(of: Int32(elements.count).bigEndian, toByteOffset: 12, as: Int32.self)
            raw.storeBytes(of: Int32(1).bigEndian, toByteOffset: 16, as: Int32.self)
            var offset = 20
            let length = Int32(width).bigEndian
            for element in elements {
                raw.storeBytes(of: length, toByteOffset: offset, as: Int32.self)
                raw.storeBytes(of: element.bigEndian, toByteOffset: offset + 4, as: T.self)
                offset += 4 + width
            }
        }
        return out
    }

    /// Elements of a one-dimensional (or empty) array; `nil` entries are NULL.
    static func decode(_ bytes: UnsafeRawBufferPointer) throws -> [UnsafeRawBufferPointer?] {
        guard bytes.count >= 12 else { throw PostgresError(code: "", message: "malformed binary array", kind: .invalidData) }
        let dimensions = BigEndian.read(Int32.self, from: bytes, at: 0)
        if dimensions == 0 { return [] }
        guard dimensions == 1, bytes.count >= 20 else {
            throw PostgresError(code: "", message: "expected a one-dimensional array, got \(dimensions) dimensions", kind: .invalidData)
        }
        let count = Int(BigEndian.read(Int32.self, from: bytes, at: 12))
        var offset = 20
        var elements: [UnsafeRawBufferPointer?] = []
        elements.reserveCapacity(count)
        for _ in 0..<count {
            guard offset + 4 <= bytes.count else { throw PostgresError(code: "", message: "truncated binary array", kind: .invalidData) }
            let length = Int(BigEndian.read(Int32.self, from: bytes, at: offset))
            offset += 4
            if length < 0 { elements.append(nil); continue }
            guard offset + length <= bytes.count else { throw PostgresError(code: "", message: "truncated binary array", kind: .invalidData) }
            elements.append(UnsafeRawBufferPointer(rebasing: bytes[offset ..< offset + length]))
            offset += length
        }
        return elements
    }
}

/// Writes rows in PostgreSQL's binary `COPY` format (`COPY … FROM STDIN (FORMAT binary)`).
public struct BinaryCopyWriter {
    /// Bytes written so far and not yet sent.
    var buffer: [UInt8] = []
    public private(set) var rowCount = 0
    let columnCount: Int
    private var fieldsInRow = 0

    init(columnCount: Int) {
        self.columnCount = columnCount
        // Signature, flags, header extension length.
        buffer += Array("PGCOPY\n".utf8) + [0xFF, 0x0D, 0x0A, 0x00]
        buffer += BigEndian.bytes(of: Int32(0))
        buffer += BigEndian.bytes(of: Int32(0))
    }

    /// Appends one row; `values` must match the COPY's column list in order and type.
    public mutating func append(_ values: [PostgresValue]) {
        precondition(values.count == columnCount, "COPY row has \(values.count) values for \(columnCount) columns")
        buffer += BigEndian.bytes(of: Int16(columnCount))
        for value in values {
            let wire = value.wireFormat
            guard var bytes = wire.bytes else {
                buffer += BigEndian.bytes(of: Int32(-1))
                continue
            }
            if !wire.binary { bytes.removeLast() }   // text sent as binary text: no terminator
            buffer += BigEndian.bytes(of: Int32(bytes.count))
            buffer += bytes
        }
        rowCount += 1
    }

    /// The trailer that ends the data.
    static let trailer = BigEndian.bytes(of: Int16(-1))
}

/// Decodes a binary result value of a given column type.
public protocol PostgresDecodable {
    static func decode(type: UInt32, bytes: UnsafeRawBufferPointer) throws -> Self
}

func typeMismatch(_ target: Any.Type, _ type: UInt32) -> PostgresError {
    PostgresError(code: "", message: "cannot read a value of type OID \(type) as \(target)", kind: .invalidData)
}

extension Int64: PostgresDecodable {
    public static func decode(type: UInt32, bytes: UnsafeRawBufferPointer) throws -> Int64 {
        switch type {
        case PostgresType.int8: return BigEndian.read(Int64.self, from: bytes, at: 0)
        case PostgresType.int4: return Int64(BigEndian.read(Int32.self, from: bytes, at: 0))
        case PostgresType.int2: return Int64(BigEndian.read(Int16.self, from: bytes, at: 0))
        case PostgresType.oid: return Int64(BigEndian.read(UInt32.self, from: bytes, at: 0))
        default: throw typeMismatch(Int64.self, type)
        }
    }
}

extension Int: PostgresDecodable {
    public static func decode(type: UInt32, bytes: UnsafeRawBufferPointer) throws -> Int {
        Int(try Int64.decode(type: type, bytes: bytes))
    }
}

extension Double: PostgresDecodable {
    public static func decode(type: UInt32, bytes: UnsafeRawBufferPointer) throws -> Double {
        switch type {
        case PostgresType.float8: return Double(bitPattern: BigEndian.read(UInt64.self, from: bytes, at: 0))
        case PostgresType.float4: return Double(Float(bitPattern: BigEndian.read(UInt32.self, from: bytes, at: 0)))
        case PostgresType.int8, PostgresType.int4, PostgresType.int2: return Double(try Int64.decode(type: type, bytes: bytes))
        case PostgresType.interval:
            // microseconds, days, months → seconds (a month counted as 30 days).
            let micros = BigEndian.read(Int64.self, from: bytes, at: 0)
            let days = BigEndian.read(Int32.self, from: bytes, at: 8)
            let months = BigEndian.read(Int32.self, from: bytes, at: 12)
            return Double(micros) / 1e6 + Double(days) * 86_400 + Double(months) * 30 * 86_400
        default: throw typeMismatch(Double.self, type)
        }
    }
}

extension Float: PostgresDecodable {
    public static func decode(type: UInt32, bytes: UnsafeRawBufferPointer) throws -> Float {
        if type == PostgresType.float4 { return Float(bitPattern: BigEndian.read(UInt32.self, from: bytes, at: 0)) }
        return Float(try Double.decode(type: type, bytes: bytes))
    }
}

extension Bool: PostgresDecodable {
    public static func decode(type: UInt32, bytes: UnsafeRawBufferPointer) throws -> Bool {
        guard type == PostgresType.bool, bytes.count == 1 else { throw typeMismatch(Bool.self, type) }
        return bytes[0] != 0
    }
}

extension String: PostgresDecodable {
    /// Text-like types, `jsonb` (its text), and any type whose binary form is its text (enums).
    public static func decode(type: UInt32, bytes: UnsafeRawBufferPointer) throws -> String {
        switch type {
        case PostgresType.jsonb:
            guard bytes.first == 1 else { throw typeMismatch(String.self, type) }
            return String(decoding: UnsafeRawBufferPointer(rebasing: bytes.dropFirst()), as: UTF8.self)
        case PostgresType.int8, PostgresType.int4, PostgresType.int2:
            return String(try Int64.decode(type: type, bytes: bytes))
        case PostgresType.float4, PostgresType.float8:
            return String(try Double.decode(type: type, bytes: bytes))
        case PostgresType.bool:
            return try Bool.decode(type: type, bytes: bytes) ? "true" : "false"
        case PostgresType.bytea, PostgresType.float4Array, PostgresType.int8Array, PostgresType.textArray,
             PostgresType.int4Array, PostgresType.timestamptz, PostgresType.interval:
            throw typeMismatch(String.self, type)
        default:
            return String(decoding: bytes, as: UTF8.self)
        }
    }
}

extension Array: PostgresDecodable where Element: PostgresArrayElement {
    public static func decode(type: UInt32, bytes: UnsafeRawBufferPointer) throws -> [Element] {
        if Element.self == UInt8.self, type == PostgresType.bytea {
            return [UInt8](bytes) as! [Element]
        }
        guard Element.arrayTypes.contains(type) else { throw typeMismatch([Element].self, type) }
        return try BinaryArray.decode(bytes).map { element in
            guard let element else {
                throw PostgresError(code: "", message: "array holds NULL, \([Element].self) cannot", kind: .invalidData)
            }
            return try Element.decodeElement(element)
        }
    }
}

/// Element types of arrays Amber reads (`real[]`, `bigint[]`, `text[]`; `bytea` as `[UInt8]`).
public protocol PostgresArrayElement {
    /// Array type OIDs this element type is read from.
    static var arrayTypes: [UInt32] { get }
    static func decodeElement(_ bytes: UnsafeRawBufferPointer) throws -> Self
}

extension Float: PostgresArrayElement {
    public static var arrayTypes: [UInt32] { [PostgresType.float4Array] }
    public static func decodeElement(_ bytes: UnsafeRawBufferPointer) throws -> Float {
        Float(bitPattern: BigEndian.read(UInt32.self, from: bytes, at: 0))
    }
}

extension Int64: PostgresArrayElement {
    public static var arrayTypes: [UInt32] { [PostgresType.int8Array, PostgresType.int4Array] }
    public static func decodeElement(_ bytes: UnsafeRawBufferPointer) throws -> Int64 {
        bytes.count == 4 ? Int64(BigEndian.read(Int32.self, from: bytes, at: 0)) : BigEndian.read(Int64.self, from: bytes, at: 0)
    }
}

extension String: PostgresArrayElement {
    public static var arrayTypes: [UInt32] { [PostgresType.textArray] }
    public static func decodeElement(_ bytes: UnsafeRawBufferPointer) throws -> String {
        String(decoding: bytes, as: UTF8.self)
    }
}

extension UInt8: PostgresArrayElement {
    public static var arrayTypes: [UInt32] { [PostgresType.bytea] }
    public static func decodeElement(_ bytes: UnsafeRawBufferPointer) throws -> UInt8 { bytes[0] }
}

extension Date: PostgresDecodable {
    /// `timestamptz`: microseconds since 2000-01-01 UTC.
    public static func decode(type: UInt32, bytes: UnsafeRawBufferPointer) throws -> Date {
        guard type == PostgresType.timestamptz else { throw typeMismatch(Date.self, type) }
        let micros = BigEndian.read(Int64.self, from: bytes, at: 0)
        return Date(timeIntervalSince1970: 946_684_800 + Double(micros) / 1e6)
    }
}
