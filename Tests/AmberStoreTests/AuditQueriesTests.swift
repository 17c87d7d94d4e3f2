import AmberCatalog
@testable import AmberStore
import Foundation
import Testing

@Suite("Audit queries of docs/audit.md (real PostgreSQL)")
struct AuditQueriesTests {
    /// The ```sql blocks of docs/audit.md.
    static func documentedQueries() throws -> [String] {
        let text = try String(contentsOfFile: TestDatabase.repositoryRoot + "/docs/audit.md", encoding: .utf8)
        var queries: [String] = []
        var current: [String]?
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("```sql") { current = []; continue }
            if line.hasPrefix("```"), let block = current {
                queries.append(block.joined(separator: "\n"))
                current = nil
                continue
            }
            current?.append(String(line))
        }
        return queries
    }

    /// A small but complete bank: 6 images × 2 captions, a run, two model versions, bank entries
    /// with prototypes, ambiguity and neighbours, prototypes, steps, a cursor.
    static func writeBank(_ connection: PostgresConnection) throws {
        try connection.transaction {
            try connection.execute("INSERT INTO amber.feature_dimensions VALUES ('image', 2, 2), ('text', 2, 2)")
            var images: [Int64] = [], texts: [Int64] = [], pairs: [Int64] = []
            for i in 0..<6 {
                let image = try SchemaTests.item(connection, "image", "img\(i).jpg")
                try SchemaTests.features(connection, item: image, modality: "image", global: 2, local: 2)
                images.append(image)
                // Categories: every image is a "photo"; even ones are also "even".
                for label in i % 2 == 0 ? ["photo", "even"] : ["photo"] {
                    try connection.execute("INSERT INTO amber.item_labels (item_id, label) VALUES ($1, $2)", [.int(image), .text(label)])
                }
                for k in 0..<2 {
                    let text = try SchemaTests.item(connection, "text", "img\(i).jpg#\(k)", caption: "caption \(k) of image \(i)")
                    texts.append(text)
                    pairs.append(try connection.execute(
                        "INSERT INTO amber.pairs (image_id, text_id, split) VALUES ($1, $2, $3::amber.split) RETURNING pair_id",
                        [.int(image), .int(text), .text(i < 5 ? "train" : "dev")]).value(Int64.self, column: "pair_id"))
                }
            }
            let run = try connection.execute("INSERT INTO amber.training_runs (seed, last_step) VALUES (7, 120) RETURNING run_id")
                .value(Int64.self, column: "run_id")
            var versions: [Int64] = []
            for step in [50, 100] {
                versions.append(try connection.execute("""
                    INSERT INTO amber.models (run_id, step, config, parameters, metrics) VALUES ($1, $2, '{}', '\\x00', $3) RETURNING version
                    """, [.int(run), .int(Int64(step)), .json(#"{"rsum": \#(step + 100)}"#)]).value(Int64.self, column: "version"))
            }
            try connection.execute("SELECT amber.promote_model($1)", [.int(versions[1])])
            func angle(_ i: Int) -> [Float] { [cos(Float(i) * 0.3), sin(Float(i) * 0.3)] }
            for (slot, image) in images.enumerated() {
                try connection.execute("""
                    INSERT INTO amber.memory_bank (run_id, modality, slot, item_id, image_id, embedding, prototype, ambiguity,
                                                   neighbour_item_id, enqueued_step, model_version)
                    VALUES ($1, 'image', $2, $3, $3, $4, $5, $6, $7, $8, $9)
                    """, [.int(run), .int32(Int32(slot)), .int(image), .floats(angle(slot)), .int32(Int32(slot % 2)),
                          .float(0.9 - Float(slot) * 0.1), .int(images[(slot + 1) % 6]), .int(Int64(60 + slot * 10)),
                          .int(versions[slot < 3 ? 0 : 1])])
            }
            for (slot, text) in texts.enumerated() {
                try connection.execute("""
                    INSERT INTO amber.memory_bank (run_id, modality, slot, item_id, pair_id, image_id, embedding, prototype, ambiguity,
                                                   neighbour_item_id, enqueued_step, model_version)
                    VALUES ($1, 'text', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                    """, [.int(run), .int32(Int32(slot)), .int(text), .int(pairs[slot]), .int(images[slot / 2]),
                          .floats(angle(slot / 2 + (slot % 2 == 0 ? 0 : 1))), .int32(Int32((slot / 2 + slot % 2) % 2)),
                          .float(0.8 - Float(slot) * 0.05), .int(texts[(slot + 2) % texts.count]),
                          .int(Int64(55 + slot * 5)), .int(versions[1])])
            }
            for index in 0..<2 {
                try connection.execute("""
                    INSERT INTO amber.prototypes (model_version, index, centroid, image_count, text_count) VALUES ($1, $2, $3, $4, $5)
                    """, [.int(versions[1]), .int32(Int32(index)), .floats(angle(index * 5)), .int32(3), .int32(6)])
            }
            for step in 118...120 {
                try connection.execute("""
                    INSERT INTO amber.training_steps (run_id, step, total_loss, losses, learning_rate, pairs_per_second)
                    VALUES ($1, $2, 1.5, '{"triplet": 1.0, "memory": 0.5}', 0.0005, 900)
                    """, [.int(run), .int(Int64(step))])
            }
            // Feedback: a text query whose chosen image made a pair, with a rejected image; and an
            // image-for-image choice that made none.
            try connection.execute("""
                INSERT INTO amber.feedback (query_modality, query_item_id, chosen_item_id, chosen_rank, rejected_item_ids, model_version, pair_id)
                VALUES ('text', $1, $2, 2, $3::bigint[], $4, $5)
                """, [.int(texts[0]), .int(images[0]), .text("{\(images[1])}"), .int(versions[1]), .int(pairs[0])])
            try connection.execute("""
                INSERT INTO amber.feedback (query_modality, query_item_id, chosen_item_id, chosen_rank, not_paired_because)
                VALUES ('image', $1, $2, 1, 'the query and the chosen result are both images: no image–text pair')
                """, [.int(images[2]), .int(images[3])])
            try connection.execute("INSERT INTO amber.ingest_cursor (consumer, last_pair_id) VALUES ('trainer', $1)", [.int(pairs[8])])
            // The run's newest checkpoint: pairs up to pairs[8] taken in, the last two still untrained.
            try connection.execute("UPDATE amber.training_runs SET name = 'main' WHERE run_id = $1", [.int(run)])
            try connection.execute("""
                INSERT INTO amber.checkpoints (run_id, step, state, pair_cursor, sampler, pending_pairs, model_version, bank_slots)
                VALUES ($1, 120, '\\x00', $2, '{}', $3, $4, 18)
                """, [.int(run), .int(pairs[8]), .ints([pairs[7], pairs[8]]), .int(versions[1])])
        }
    }

    @Test func documentListsTheQuestions() throws {
        #expect(try Self.documentedQueries().count >= 12)
    }

    @Test func everyDocumentedQueryRunsAsTheAuditorAndAnswers() throws {
        let connection = try PostgresConnection(url: try TestDatabase.fresh(migrated: true))
        try Self.writeBank(connection)
        try connection.executeScript("SET ROLE amber_auditor")
        for query in try Self.documentedQueries() {
            do {
                let result = try connection.execute(query)
                #expect(result.rowCount > 0, "no rows from:\n\(query)")
            } catch {
                Issue.record("\(error)\nin:\n\(query)")
            }
        }
    }

    @Test func viewsComputeWhatTheySay() throws {
        let connection = try PostgresConnection(url: try TestDatabase.fresh(migrated: true))
        try Self.writeBank(connection)
        let overview = try connection.execute("SELECT * FROM amber.bank_overview WHERE modality = 'image'")
        #expect(try overview.value(Int.self, column: "entries") == 6)
        #expect(try overview.value(Int.self, column: "staleness_steps") == 120 - 60)
        #expect(try overview.value([Int64].self, column: "model_versions").count == 2)
        // Text entry k of image i has prototype (i + k) % 2, its image has prototype i % 2:
        // the first caption of each image agrees, the second does not → agreement 0.5.
        let agreement = try connection.execute("SELECT sum(paired_texts)::bigint AS n, avg(agreement)::float8 AS a FROM amber.prototype_overview")
        #expect(try agreement.value(Int.self, column: "n") == 12)
        #expect(abs(try agreement.value(Double.self, column: "a") - 0.5) < 1e-6)
        // An older bank entry of image 0 with the other prototype: its captions are still counted
        // once each and compared with the image's newest entry, so nothing changes.
        let run = try connection.execute("SELECT run_id FROM amber.training_runs").value(Int64.self, column: "run_id")
        let image0 = try connection.execute("SELECT item_id FROM amber.items WHERE external_id = 'img0.jpg'").value(Int64.self, column: "item_id")
        try connection.execute("""
            INSERT INTO amber.memory_bank (run_id, modality, slot, item_id, image_id, embedding, prototype, enqueued_step)
            VALUES ($1, 'image', 6, $2, $2, '{1, 0}', 1, 10)
            """, [.int(run), .int(image0)])
        let again = try connection.execute("SELECT sum(paired_texts)::bigint AS n, avg(agreement)::float8 AS a FROM amber.prototype_overview")
        #expect(try again.value(Int.self, column: "n") == 12)
        #expect(abs(try again.value(Double.self, column: "a") - 0.5) < 1e-6)
        let top = try connection.execute("SELECT external_id, ambiguity FROM amber.ambiguous_entries LIMIT 1")
        #expect(try top.value(String.self, column: "external_id") == "img0.jpg")
        // Labels: 6 labelled photos with features, 3 of them "even".
        let labels = try connection.execute("SELECT label, items, with_features FROM amber.label_overview WHERE modality = 'image' ORDER BY label")
        #expect(labels.rowCount == 2)
        #expect(try labels.value(String.self, row: 0, column: "label") == "even" && labels.value(Int.self, row: 0, column: "items") == 3)
        #expect(try labels.value(Int.self, row: 1, column: "items") == 6 && labels.value(Int.self, row: 1, column: "with_features") == 6)
        let backlog = try connection.execute("SELECT pending_pairs FROM amber.ingest_backlog")
        #expect(try backlog.value(Int.self, column: "pending_pairs") == 3)
        // Nearest neighbours of image 0 (angle 0): text entries at angle 0 first (same image).
        let neighbours = try connection.execute("""
            SELECT external_id, similarity, same_image FROM amber.bank_neighbours(
                (SELECT item_id FROM amber.items WHERE external_id = 'img0.jpg' AND modality = 'image'), 3)
            """)
        #expect(neighbours.rowCount == 3)
        #expect(try neighbours.value(String.self, row: 0, column: "external_id") == "img0.jpg#0")
        #expect(try neighbours.value(Bool.self, row: 0, column: "same_image"))
        #expect(abs(try neighbours.value(Double.self, row: 0, column: "similarity") - 1) < 1e-6)
    }
}
