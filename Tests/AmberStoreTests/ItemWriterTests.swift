import AmberCatalog
@testable import AmberStore
import Foundation
import Testing

@Suite("Items and pairs from the API (real PostgreSQL)")
struct ItemWriterTests {
    static let image = NewItem(modality: .image, externalID: "a.jpg", caption: nil, features: ItemFeatures(global: [1, 2, 3], local: [1, 2, 3, 4, 5, 6], localCount: 2))
    static let text = NewItem(modality: .text, externalID: "a.jpg#0", caption: "a dog", features: ItemFeatures(global: [0.5, -1], local: [1, 2, 3, 4, 5, 6], localCount: 3))

    @Test func itemsAndPairsAreStoredOnceWithTheirFeaturesAndNotifyTheTrainer() throws {
        let url = try TestDatabase.fresh(migrated: true)
        let db = try PostgresConnection(url: url)
        let listener = try PostgresConnection(url: url)
        try listener.listen("amber_new_pairs")
        #expect(try ItemWriter.write([Self.image, Self.text], on: db) == (2, 0))
        #expect(try ItemWriter.write([Self.image, Self.text], on: db) == (0, 2), "idempotent by external id")
        let row = try db.execute("SELECT f.local_count, f.global_type::text AS t, f.global_vector, f.local_vectors, i.caption, i.source FROM amber.items i JOIN amber.features f USING (item_id) WHERE i.external_id = 'a.jpg#0'")
        #expect(try row.value(Int.self, column: "local_count") == 3 && row.value(String.self, column: "t") == "float32")
        #expect(try FeatureBytes.floats(row.value([UInt8].self, column: "global_vector"), type: "float32", item: 0) == [0.5, -1])
        #expect(try FeatureBytes.floats(row.value([UInt8].self, column: "local_vectors"), type: "float32", item: 0) == [1, 2, 3, 4, 5, 6])
        #expect(try row.value(String.self, column: "caption") == "a dog" && row.value(String.self, column: "source") == "http")
        #expect(try ItemWriter.write([NewPair(image: "a.jpg", text: "a.jpg#0", split: .dev)], on: db) == (1, 0))
        #expect(try ItemWriter.write([NewPair(image: "a.jpg", text: "a.jpg#0", split: .dev)], on: db) == (0, 1))
        #expect(try listener.waitForNotification(timeout: 2)?.channel == "amber_new_pairs")
        #expect(try db.execute("SELECT split::text AS s FROM amber.pairs").value(String.self, column: "s") == "dev")
    }

    @Test func aPictureIsKeptOnlyWithTheItemItCameWith() throws {
        let db = try PostgresConnection(url: try TestDatabase.fresh(migrated: true))
        let picture = StoredImage(width: 2, height: 1, bytes: [0xFF, 0xD8, 0xFF, 0xD9])
        try ItemWriter.write([Self.image], on: db)
        var again = Self.image
        again.thumbnail = picture
        // The same id again with a picture: the stored item keeps its features and gets no
        // picture (this one need not be the photo its features came from).
        #expect(try ItemWriter.write([again], on: db) == (0, 1))
        #expect(try count(db, "amber.item_images") == 0)
        var fresh = again
        fresh.externalID = "d.jpg"
        #expect(try ItemWriter.write([fresh], on: db) == (1, 0))
        let stored = try db.execute("SELECT i.external_id, m.width FROM amber.item_images m JOIN amber.items i USING (item_id)")
        #expect(try stored.rowCount == 1 && stored.value(String.self, column: "external_id") == "d.jpg")
    }

    @Test func aBadEntryNamesItselfAndNothingIsWritten() throws {
        let db = try PostgresConnection(url: try TestDatabase.fresh(migrated: true))
        try ItemWriter.write([Self.image], on: db)
        var wrong = Self.image
        wrong.externalID = "b.jpg"
        wrong.features.global = [1, 2]
        let fresh = NewItem(modality: .image, externalID: "c.jpg", caption: nil, features: ItemFeatures(global: [1, 2, 3], local: [1, 2, 3], localCount: 1))
        #expect(throws: ItemWriteError.self) { try ItemWriter.write([fresh, wrong], on: db) }
        do {
            try ItemWriter.write([fresh, wrong], on: db)
        } catch let error as ItemWriteError {
            #expect(error.field == "items[1].features.global" && error.description.contains("stored image features have 3"))
        }
        #expect(try count(db, "amber.items") == 1, "the valid item before the bad one was rolled back too")
        #expect { try ItemWriter.write([NewPair(image: "a.jpg", text: "nope", split: .train)], on: db) } throws: {
            ($0 as? ItemWriteError)?.field == "pairs[0].text"
        }
        #expect(try count(db, "amber.pairs") == 0)
    }
}
