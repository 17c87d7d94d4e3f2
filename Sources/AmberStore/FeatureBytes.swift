/// The bytes of `amber.features` vectors: little-endian float16 or float32.
public enum FeatureBytes {
    /// `bytes` of element type `type` (`float16` or `float32`) as floats.
    /// - Throws: ``PostgresError`` (`invalidData`) for another type, naming the item.
    public static func floats(_ bytes: [UInt8], type: String, item: Int64) throws -> [Float] {
        switch type {
        case "float32":
            return bytes.withUnsafeBytes { raw in
                (0..<(bytes.count / 4)).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self))) }
            }
        case "float16":
            return bytes.withUnsafeBytes { raw in
                (0..<(bytes.count / 2)).map { Float(Float16(bitPattern: UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 2, as: UInt16.self)))) }
            }
        default:
            throw PostgresError(code: "", message: "item \(item) has features of type \(type)", kind: .invalidData)
        }
    }
}
