import AmberCatalog
import AmberIngest

/// Ingest's ``CatalogWriter`` port on PostgreSQL: ``Ingestor`` writes each dataset in one
/// transaction on `connection`.
public struct PostgresCatalogWriter: CatalogWriter {
    public let connection: PostgresConnection

    public init(connection: PostgresConnection) {
        self.connection = connection
    }

    public func ingest(_ dataset: IngestDataset) throws -> IngestReport {
        try Ingestor.ingest(dataset, into: connection)
    }

    public func storedCatalog() throws -> StoredCatalog {
        var stored = StoredCatalog()
        let items = try connection.execute("""
            SELECT i.modality::text AS modality, i.external_id, i.caption, i.source FROM amber.items i
            JOIN amber.features f ON f.item_id = i.item_id
            """)
        for row in 0..<items.rowCount {
            guard let modality = try items.decode(String.self, row: row, column: "modality").flatMap(Modality.init(rawValue:)),
                  let id = try items.decode(String.self, row: row, column: "external_id") else { continue }
            let source = try items.decode(String.self, row: row, column: "source") ?? ""
            if modality == .image {
                stored.images[id] = source
            } else {
                stored.texts[id] = (try items.decode(String.self, row: row, column: "caption") ?? "", source)
            }
        }
        let pairs = try connection.execute("""
            SELECT im.external_id AS image, tx.external_id AS text FROM amber.pairs p
            JOIN amber.items im ON im.item_id = p.image_id JOIN amber.items tx ON tx.item_id = p.text_id
            """)
        for row in 0..<pairs.rowCount {
            guard let image = try pairs.decode(String.self, row: row, column: "image"),
                  let text = try pairs.decode(String.self, row: row, column: "text") else { continue }
            stored.pairs.insert(StoredCatalog.pairKey(image, text))
        }
        return stored
    }
}
