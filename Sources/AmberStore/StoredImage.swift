import AmberCatalog

extension StoredImage {
    /// Stores `image` for the image item `externalID` unless it has one; returns 1 when stored.
    @discardableResult
    public static func insert(_ image: StoredImage, forImage externalID: String, on db: PostgresConnection) throws -> Int {
        try db.execute("""
            INSERT INTO amber.item_images (item_id, media_type, width, height, bytes)
            SELECT item_id, $2, $3, $4, $5 FROM amber.items WHERE modality = 'image' AND external_id = $1
            ON CONFLICT (item_id) DO NOTHING
            """, [.text(externalID), .text(mediaType), .int32(Int32(clamping: image.width)), .int32(Int32(clamping: image.height)),
                  .bytes(image.bytes)]).affectedRows
    }

    /// The picture of item `itemID`, if it has one; a row that breaks the table's rules is
    /// treated as none.
    public static func fetch(itemID: Int64, on db: PostgresConnection) throws -> StoredImage? {
        let result = try db.execute("""
            SELECT width::bigint AS width, height::bigint AS height, bytes FROM amber.item_images WHERE item_id = $1
            """, [.int(itemID)])
        guard result.rowCount == 1, let width = try result.decode(Int64.self, row: 0, column: "width"),
              let height = try result.decode(Int64.self, row: 0, column: "height"),
              let bytes = try result.decode([UInt8].self, row: 0, column: "bytes"), !bytes.isEmpty else { return nil }
        return StoredImage(width: Int(width), height: Int(height), bytes: bytes)
    }
}
