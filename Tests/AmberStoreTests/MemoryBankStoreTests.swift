import AmberCatalog
@testable import AmberStore
import Testing

@Suite("Memory bank writes (real PostgreSQL)")
struct MemoryBankStoreTests {
    @Test func replacingSlotsOverwritesThemAndKeepsTheRest() throws {
        let connection = try PostgresConnection(url: try TestDatabase.fresh(migrated: true))
        let items = try (0..<4).map { try SchemaTests.item(connection, "image", "i\($0).jpg") }
        let run = try connection.execute("INSERT INTO amber.training_runs (seed) VALUES (3) RETURNING run_id").value(Int64.self, column: "run_id")
        let first = (0..<4).map { slot -> BankSlot in
            BankSlot(modality: .image, slot: slot, itemID: items[slot], imageID: items[slot], embedding: [Float(slot), 1, 0],
                     prototype: slot % 2, ambiguity: 0.25, neighbourItemID: items[(slot + 1) % 4], enqueuedStep: 10)
        }
        #expect(try connection.transaction { try MemoryBankStore.replace(first, run: run, on: connection) } == 4)
        let second = [BankSlot(modality: .image, slot: 1, itemID: items[3], imageID: items[3], embedding: [9, 9, 9], enqueuedStep: 20)]
        try connection.transaction { try MemoryBankStore.replace(second, run: run, on: connection) }
        let rows = try connection.execute("""
            SELECT slot, item_id, embedding, enqueued_step, prototype, ambiguity FROM amber.memory_bank WHERE run_id = $1 ORDER BY slot
            """, [.int(run)])
        #expect(rows.rowCount == 4)
        #expect(try rows.value([Float].self, row: 1, column: "embedding") == [9, 9, 9])
        #expect(try rows.value(Int64.self, row: 1, column: "item_id") == items[3])
        #expect(try rows.decode(Int.self, row: 1, column: "prototype") == nil)
        #expect(try rows.value([Float].self, row: 2, column: "embedding") == [2, 1, 0])
        #expect(try rows.value(Float.self, row: 2, column: "ambiguity") == 0.25)
        // A non-finite embedding fails the whole write.
        let bad = [BankSlot(modality: .image, slot: 0, itemID: items[0], imageID: items[0], embedding: [.nan, 0, 0], enqueuedStep: 30)]
        #expect(throws: BankEntryError.self) {
            try connection.transaction { try MemoryBankStore.replace(bad, run: run, on: connection) }
        }
        let mixed = [BankSlot(modality: .image, slot: 0, itemID: items[0], imageID: items[0], embedding: [1, 0, 0], enqueuedStep: 30),
                     BankSlot(modality: .image, slot: 2, itemID: items[0], imageID: items[0], embedding: [1, 0], enqueuedStep: 30)]
        #expect(throws: BankEntryError.self) {
            try connection.transaction { try MemoryBankStore.replace(mixed, run: run, on: connection) }
        }
        #expect(try rows.rowCount == connection.execute("SELECT * FROM amber.memory_bank").rowCount)
        #expect(try connection.execute("SELECT embedding FROM amber.memory_bank WHERE slot = 0").value([Float].self, column: "embedding") == [0, 1, 0])
    }
}
