import AmberCatalog
import AmberTensor

/// The bytes of `amber.features` vectors: little-endian float16 or float32.
public enum FeatureBytes {
    /// `bytes` of element type `type` (`float16` or `float32`) as floats.
    /// - Throws: ``PostgresError`` (`invalidData`) for another type, naming the item.
    public static func floats(_ bytes: [UInt8], type: String, item: Int64) throws -> [Float] {
        guard let elementType = ElementType(rawValue: type), elementType == .float32 || elementType == .float16 else {
            throw PostgresError(code: "", message: "item \(item) has features of type \(type)", kind: .invalidData)
        }
        return bytes.withUnsafeBytes { elementType.floats($0) }
    }

    /// Row `row` of a result with the columns `item_id`, `global_vector`, `global_type`,
    /// `local_vectors`, `local_type` and `local_count` (of `amber.features`) as an item's features.
    /// - Throws: ``PostgresError`` (`invalidData`) naming the item when the row does not decode or
    ///   its counts disagree; callers skip such a row and log it.
    public static func itemFeatures(_ rows: PostgresResult, row: Int) throws -> (itemID: Int64, features: ItemFeatures) {
        let id = try rows.value(Int64.self, row: row, column: "item_id")
        let global = try floats(rows.value([UInt8].self, row: row, column: "global_vector"),
                                type: rows.value(String.self, row: row, column: "global_type"), item: id)
        let local = try floats(rows.value([UInt8].self, row: row, column: "local_vectors"),
                               type: rows.value(String.self, row: row, column: "local_type"), item: id)
        let count = try rows.value(Int.self, row: row, column: "local_count")
        guard let features = ItemFeatures(checking: global, local: local, localCount: count) else {
            throw PostgresError(code: "", message: "item \(id): \(local.count) local values for local_count \(count)", kind: .invalidData)
        }
        return (id, features)
    }
}
