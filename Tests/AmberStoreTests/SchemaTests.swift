import AmberCatalog
@testable import AmberStore
import Foundation
import Testing

/// Little-endian float32 bytes.
func float32Bytes(_ values: [Float]) -> [UInt8] {
    values.flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian) { Array($0) } }
}

@Suite("Schema rules (real PostgreSQL)")
struct SchemaTests {
    /// Inserts an item and returns its id.
    @discardableResult
    static func item(_ connection: PostgresConnection, _ modality: String, _ externalID: String, caption: String? = nil) throws -> Int64 {
        try connection.execute("""
            INSERT INTO amber.items (modality, external_id, caption) VALUES ($1::amber.modality, $2, $3) RETURNING item_id
            """, [.text(modality), .text(externalID), PostgresValue(caption)]).value(Int64.self, column: "item_id")
    }

    static func features(_ connection: PostgresConnection, item: Int64, modality: String, global: Int, local: Int, count: Int = 2) throws {
        try connection.execute("""
            INSERT INTO amber.features (item_id, modality, global_dim, local_dim, local_count, global_type, local_type, global_vector, local_vectors)
            VALUES ($1, $2::amber.modality, $3, $4, $5, 'float32', 'float32', $6, $7)
            """, [.int(item), .text(modality), .int32(Int32(global)), .int32(Int32(local)), .int32(Int32(count)),
                  .bytes(float32Bytes([Float](repeating: 0.5, count: global))),
                  .bytes(float32Bytes([Float](repeating: 0.25, count: local * count)))])
    }

    @Test func itemsAndFeaturesKeepBadDataOut() throws {
        let connection = try PostgresConnection(url: try TestDatabase.fresh(migrated: true))
        let image = try Self.item(connection, "image", "a.jpg")
        expectPostgresError(.uniqueViolation) { try Self.item(connection, "image", "a.jpg") }
        try Self.item(connection, "text", "a.jpg", caption: "same external id, other modality: fine")
        expectPostgresError(.constraintViolation) { try Self.item(connection, "image", "b.jpg", caption: "images have no captions") }
        expectPostgresError(.invalidData) { try Self.item(connection, "audio", "c.wav") }

        // Dimensions per modality come from feature_dimensions.
        try connection.execute("INSERT INTO amber.feature_dimensions VALUES ('image', 4, 3)")
        try Self.features(connection, item: image, modality: "image", global: 4, local: 3)
        let other = try Self.item(connection, "image", "d.jpg")
        expectPostgresError(.foreignKeyViolation) { try Self.features(connection, item: other, modality: "image", global: 5, local: 3) }
        // Vector byte length must match the dimensions.
        expectPostgresError(.constraintViolation) {
            try connection.execute("""
                INSERT INTO amber.features VALUES ($1, 'image', 4, 3, 2, 'float32', 'float32', $2, $3)
                """, [.int(other), .bytes(float32Bytes([1, 2, 3])), .bytes(float32Bytes([Float](repeating: 0, count: 6)))])
        }
        // A feature row's modality must match its item's.
        expectPostgresError(.foreignKeyViolation) { try Self.features(connection, item: other, modality: "text", global: 4, local: 3) }
    }

    @Test func pairsLinkAnImageAndATextOnce() throws {
        let connection = try PostgresConnection(url: try TestDatabase.fresh(migrated: true))
        let image = try Self.item(connection, "image", "a.jpg")
        let text = try Self.item(connection, "text", "a.jpg#0", caption: "a dog")
        try connection.execute("INSERT INTO amber.pairs (image_id, text_id, split) VALUES ($1, $2, 'train')", [.int(image), .int(text)])
        expectPostgresError(.uniqueViolation) {
            try connection.execute("INSERT INTO amber.pairs (image_id, text_id, split) VALUES ($1, $2, 'dev')", [.int(image), .int(text)])
        }
        expectPostgresError(.foreignKeyViolation) {
            try connection.execute("INSERT INTO amber.pairs (image_id, text_id, split) VALUES ($1, $2, 'train')", [.int(text), .int(image)])
        }
        expectPostgresError(.invalidData) {
            try connection.execute("INSERT INTO amber.pairs (image_id, text_id, split) VALUES ($1, $2, 'holdout')", [.int(image), .int(text)])
        }
    }

    @Test func newPairsNotifyListenersAtCommit() async throws {
        let url = try TestDatabase.fresh(migrated: true)
        let listener = PostgresListener(url: url, channels: ["amber_new_pairs"], pollInterval: 0.05)
        try await listener.connect()
        let connection = try PostgresConnection(url: url)
        let image = try Self.item(connection, "image", "a.jpg")
        let text = try Self.item(connection, "text", "a.jpg#0", caption: "a dog")
        try connection.execute("INSERT INTO amber.pairs (image_id, text_id, split) VALUES ($1, $2, 'train')", [.int(image), .int(text)])
        #expect(try await listener.next(timeout: 5)?.channel == "amber_new_pairs")
    }

    @Test func bankAndPrototypesRejectBadVectorsAndPromotionFlipsThePointer() async throws {
        let url = try TestDatabase.fresh(migrated: true)
        let connection = try PostgresConnection(url: url)
        let image = try Self.item(connection, "image", "a.jpg")
        let run = try connection.execute("INSERT INTO amber.training_runs (seed) VALUES (1) RETURNING run_id").value(Int64.self, column: "run_id")
        try connection.execute("""
            INSERT INTO amber.memory_bank (run_id, modality, slot, item_id, image_id, embedding, enqueued_step)
            VALUES ($1, 'image', 0, $2, $2, $3, 0)
            """, [.int(run), .int(image), .floats([0.6, 0.8])])
        expectPostgresError(.constraintViolation) {
            try connection.execute("""
                INSERT INTO amber.memory_bank (run_id, modality, slot, item_id, embedding, enqueued_step)
                VALUES ($1, 'image', 1, $2, '{{1,2},{3,4}}', 0)
                """, [.int(run), .int(image)])
        }
        let version = try connection.execute("INSERT INTO amber.models (step, config, parameters) VALUES (0, '{}', '\\x00') RETURNING version")
            .value(Int64.self, column: "version")
        for bad: Float in [.nan, .infinity, -.infinity] {
            expectPostgresError(.constraintViolation) {
                try connection.execute("INSERT INTO amber.prototypes (model_version, index, centroid) VALUES ($1, 0, $2)",
                                       [.int(version), .floats([0.6, bad])])
            }
        }

        let listener = PostgresListener(url: url, channels: ["amber_model_promoted"], pollInterval: 0.05)
        try await listener.connect()
        func model() throws -> Int64 {
            try connection.execute("INSERT INTO amber.models (step, config, parameters) VALUES (1, '{}', '\\x00') RETURNING version")
                .value(Int64.self, column: "version")
        }
        let first = try model(), second = try model()
        try connection.execute("SELECT amber.promote_model($1)", [.int(first)])
        #expect(try await listener.next(timeout: 5)?.payload == "\(first)")
        try connection.execute("SELECT amber.promote_model($1)", [.int(second)])
        #expect(try await listener.next(timeout: 5)?.payload == "\(second)")
        let statuses = try connection.execute("SELECT status::text AS s FROM amber.models ORDER BY version").column(String.self)
        #expect(statuses == ["candidate", "retired", "promoted"])
        #expect(try connection.execute("SELECT version FROM amber.serving_model").value(Int64.self, column: "version") == second)
        expectPostgresError(.other) { try connection.execute("SELECT amber.promote_model(999)") }
        expectPostgresError(.uniqueViolation) {
            try connection.execute("UPDATE amber.models SET status = 'promoted' WHERE version = $1", [.int(first)])
        }
    }

    @Test func auditorReadsButCannotWriteAndAppCannotChangeTheSchema() throws {
        let connection = try PostgresConnection(url: try TestDatabase.fresh(migrated: true))
        try Self.item(connection, "image", "a.jpg")
        try connection.executeScript("SET ROLE amber_auditor")
        #expect(try connection.execute("SELECT count(*) AS n FROM amber.items").value(Int.self, column: "n") == 1)
        #expect(try connection.execute("SELECT * FROM amber.bank_overview").rowCount == 0)
        expectPostgresError(.insufficientPrivilege) { try Self.item(connection, "image", "b.jpg") }
        expectPostgresError(.insufficientPrivilege) { try connection.execute("DELETE FROM amber.items") }
        expectPostgresError(.insufficientPrivilege) { try connection.execute("UPDATE amber.items SET source = 'x'") }
        expectPostgresError(.insufficientPrivilege) { try connection.execute("SELECT amber.promote_model(1)") }
        expectPostgresError(.insufficientPrivilege) { try connection.executeScript("CREATE TABLE amber.mine (x int)") }
        try connection.executeScript("RESET ROLE; SET ROLE amber_app")
        try Self.item(connection, "image", "b.jpg")
        try connection.execute("UPDATE amber.items SET source = 'app' WHERE external_id = 'b.jpg'")
        expectPostgresError(.insufficientPrivilege) { try connection.executeScript("CREATE TABLE amber.mine (x int)") }
        expectPostgresError(.insufficientPrivilege) { try connection.executeScript("DROP TABLE amber.pairs") }
    }

    @Test func cosineMatchesAReference() throws {
        let connection = try PostgresConnection(url: try TestDatabase.fresh(migrated: true))
        let a: [Float] = [1, 2, 3], b: [Float] = [-1, 0.5, 2]
        let expected = Double(zip(a, b).map { $0 * $1 }.reduce(0, +)) /
            (Double(a.map { $0 * $0 }.reduce(0, +)).squareRoot() * Double(b.map { $0 * $0 }.reduce(0, +)).squareRoot())
        let value = try connection.execute("SELECT amber.cosine($1, $2) AS c", [.floats(a), .floats(b)]).value(Double.self, column: "c")
        #expect(abs(value - expected) < 1e-6)
        #expect(try connection.execute("SELECT amber.cosine($1, $2) AS c", [.floats([0, 0]), .floats([1, 1])]).decode(Double.self, row: 0, column: "c") == nil)
        expectPostgresError(.invalidData) { try connection.execute("SELECT amber.cosine($1, $2)", [.floats([1]), .floats([1, 2])]) }
    }
}
