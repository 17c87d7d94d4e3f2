import AmberCatalog
@testable import AmberModel
import AmberSearch
@testable import AmberServer
import AmberStore
import AmberTestSupport
import AmberTrain
import Foundation
import Testing

/// POST /v1/feedback against a real PostgreSQL, in process and over a socket: what becomes a
/// training pair, what never does (dev items, same-modality choices), what is refused (unknown
/// items, bad fields), the audit views, and the trainer's store reading the feedback pairs.
extension ServerTests {
    @Test("Feedback: a chosen result becomes a training pair the trainer reads; dev items never do; audit views count it", arguments: Transport.allCases)
    func feedbackBecomesPairs(transport: Transport) async throws {
        let (cluster, db) = try Self.database("feedback-\(transport.rawValue)")
        defer { Self.remove(cluster) }
        func itemID(_ modality: String, _ offset: Int) throws -> Int64 {
            try db.execute("SELECT item_id FROM amber.items WHERE modality = $1::amber.modality ORDER BY item_id OFFSET $2 LIMIT 1",
                           [.text(modality), .int(Int64(offset))]).value(Int64.self, column: "item_id")
        }
        let (image0, image1, image2) = (try itemID("image", 0), try itemID("image", 1), try itemID("image", 2))
        let (text0, text1) = (try itemID("text", 0), try itemID("text", 1))
        // Image 2 is held out: it has a dev pair.
        try db.execute("INSERT INTO amber.pairs (image_id, text_id, split) VALUES ($1, $2, 'dev')", [.int(image2), .int(text1)])
        let client = PostgresClient(url: cluster.url, maximumConnections: 2)
        let service = QueryService(store: PostgresServingStore(client: client), textEncoder: nil)
        let keys = try APIKeys(configuration: "read:read-key-0123456789")
        let reader = ["Authorization": "Bearer read-key-0123456789"]
        try await withTransport(transport, service, keys: keys) { send in
            // A text item as the query, an image chosen, one rejected: a train pair.
            let first = try await send("POST", "/v1/feedback", #"{"query": {"item_id": \#(text0)}, "chosen": \#(image1), "rejected": [\#(image0)], "rank": 2, "model_version": 3, "client": "web"}"#, reader)
            #expect(first.status == 200, "\(first.body)")
            #expect(first.body.contains(#""pair_added":true"#), "\(first.body)")
            // The same again: stored as feedback, the pair already exists.
            let again = try await send("POST", "/v1/feedback", #"{"query": {"item_id": \#(text0)}, "chosen": \#(image1)}"#, reader)
            #expect(again.status == 200 && again.body.contains(#""pair_added":false"#), "\(again.body)")
            // A held-out image: kept, never paired.
            let dev = try await send("POST", "/v1/feedback", #"{"query": {"item_id": \#(text0)}, "chosen": \#(image2)}"#, reader)
            #expect(dev.status == 200 && dev.body.contains("dev or test split"), "\(dev.body)")
            // Image for image: no cross-modal pair.
            let same = try await send("POST", "/v1/feedback", #"{"query": {"item_id": \#(image0)}, "chosen": \#(image1)}"#, reader)
            #expect(same.status == 200 && same.body.contains("both images"), "\(same.body)")
            // Free text without a text encoder on this server: kept without a pair.
            let text = try await send("POST", "/v1/feedback", #"{"query": {"text": "a dog on the beach"}, "chosen": \#(image0)}"#, reader)
            #expect(text.status == 200 && text.body.contains("no text encoder"), "\(text.body)")
            // Refused, each naming its field; nothing written.
            for (body, status, field) in [
                (#"{"query": {"item_id": \#(text0)}, "chosen": 999999}"#, 404, "chosen"),
                (#"{"query": {"item_id": 999999}, "chosen": \#(image0)}"#, 404, "query.item_id"),
                (#"{"query": {"item_id": \#(text0)}, "chosen": \#(image0), "rejected": [\#(image1), 999999]}"#, 404, "rejected[1]"),
                (#"{"query": {}, "chosen": \#(image0)}"#, 400, "query"),
                (#"{"query": {"text": "x", "item_id": \#(text0)}, "chosen": \#(image0)}"#, 400, "query"),
                (#"{"query": {"item_id": \#(text0)}, "chosen": \#(image0), "rejected": [\#(image0)]}"#, 400, "rejected[0]"),
                (#"{"query": {"item_id": \#(text0)}, "chosen": \#(image0), "rank": 0}"#, 400, "rank"),
                (#"{"query": {"item_id": \#(text0)}, "chosen": -4}"#, 400, "chosen"),
                (#"{"query": {"text": ""}, "chosen": \#(image0)}"#, 400, "query.text"),
                (#"{"query": {"item_id": \#(text0)}, "chosen": \#(image0), "client": "a\u0000b"}"#, 400, "client"),
                (#"{"query": {"item_id": \#(text0)}, "chosen": 1.5}"#, 400, "chosen"),
            ] {
                let response = try await send("POST", "/v1/feedback", body, reader)
                #expect(response.status == status && response.body.contains("\"\(field)\""), "\(body): \(response.status) \(response.body)")
            }
            #expect(try await send("POST", "/v1/feedback", #"{"query": {"item_id": \#(text0)}, "chosen": \#(image1)}"#, [:]).status == 401)
        }
        #expect(try count(db, "amber.feedback") == 5)
        // The trainer's store reads the feedback pair like any other train pair, with features.
        let pairID = try db.execute("SELECT pair_id FROM amber.feedback WHERE pair_id IS NOT NULL LIMIT 1").value(Int64.self, column: "pair_id")
        let page = try PostgresTrainingStore(url: cluster.url).pairs(after: pairID - 1, limit: 10)
        let pair = try #require(page.pairs.first { $0.pairID == pairID })
        #expect(pair.imageID == image1 && pair.textID == text0 && pair.split == .train)
        #expect(page.features[image1] != nil && page.features[text0] != nil)
        // The audit views.
        let overview = try db.execute("SELECT feedback::int AS n, pairs_added::int AS p, rejected::int AS r, mean_chosen_rank::float8 AS rank FROM amber.feedback_overview")
        #expect(try overview.value(Int.self, column: "n") == 5 && overview.value(Int.self, column: "p") == 2 && overview.value(Int.self, column: "r") == 1)
        #expect(try overview.value(Double.self, column: "rank") == 2)
        let rejections = try db.execute("SELECT rejected_item_id, chosen_item_id FROM amber.feedback_rejections")
        #expect(try rejections.rowCount == 1 && rejections.value(Int64.self, column: "rejected_item_id") == image0)
        #expect(try db.execute("SELECT count(*)::int AS n FROM amber.feedback_by_model WHERE model_version = 3").value(Int.self, column: "n") == 1)
    }

    @Test("Feedback: the trainer's store gives a train pair's rejected results as hard negatives of its query; never dev items, the other modality or unpaired feedback")
    func feedbackRejectionsReachTheTrainer() throws {
        let (cluster, db) = try Self.database("feedback-rejections")
        defer { Self.remove(cluster) }
        func itemID(_ modality: String, _ offset: Int) throws -> Int64 {
            try db.execute("SELECT item_id FROM amber.items WHERE modality = $1::amber.modality ORDER BY item_id OFFSET $2 LIMIT 1",
                           [.text(modality), .int(Int64(offset))]).value(Int64.self, column: "item_id")
        }
        let (image0, image1, image2, image3) = (try itemID("image", 0), try itemID("image", 1), try itemID("image", 2), try itemID("image", 3))
        let (text0, text1, text2) = (try itemID("text", 0), try itemID("text", 1), try itemID("text", 2))
        try db.execute("INSERT INTO amber.pairs (image_id, text_id, split) VALUES ($1, $2, 'dev')", [.int(image3), .int(text2)])
        // Text → image: image0 and image2 rejected (kept), image3 (dev) and text1 (a text) dropped.
        let first = try FeedbackWriter.write(NewFeedback(query: .item(text0), chosen: image1, rejected: [image0, image3, text1, image2]), on: db)
        // Image → text: text1 rejected for image0.
        let second = try FeedbackWriter.write(NewFeedback(query: .item(image0), chosen: text0, rejected: [text1]), on: db)
        // No pair (image for image): its rejections are nobody's hard negatives.
        let third = try FeedbackWriter.write(NewFeedback(query: .item(image0), chosen: image1, rejected: [image2]), on: db)
        #expect(first.pairID != nil && second.pairID != nil && third.pairID == nil)
        let store = PostgresTrainingStore(url: cluster.url)
        let all = try store.rejections(after: 0, limit: 100)
        // In the user's order (image2 was named after image0, with the dropped ones between).
        #expect(all.rejections == [StoredRejection(feedbackID: first.feedbackID, queryItemID: text0, rejectedItemID: image0),
                                   StoredRejection(feedbackID: first.feedbackID, queryItemID: text0, rejectedItemID: image2),
                                   StoredRejection(feedbackID: second.feedbackID, queryItemID: image0, rejectedItemID: text1)])
        #expect(all.cursor == second.feedbackID && all.rowsRead == 2, "feedback without a pair is not read")
        // Paging: the cursor passes every row read, with or without rejections.
        let firstPage = try store.rejections(after: 0, limit: 1)
        #expect(firstPage.cursor == first.feedbackID && firstPage.rejections.count == 2)
        let rest = try store.rejections(after: firstPage.cursor, limit: 1)
        #expect(rest.rejections == [StoredRejection(feedbackID: second.feedbackID, queryItemID: image0, rejectedItemID: text1)]
                && rest.cursor == second.feedbackID)
        // Feedback on a pair that already existed is read too (it rejects nothing here).
        let again = try FeedbackWriter.write(NewFeedback(query: .item(text0), chosen: image1), on: db)
        #expect(!again.pairAdded && again.pairID == first.pairID)
        let last = try store.rejections(after: rest.cursor, limit: 10)
        #expect(last.rejections.isEmpty && last.cursor == again.feedbackID && last.rowsRead == 1)
        let none = try store.rejections(after: last.cursor, limit: 1)
        #expect(none.rejections.isEmpty && none.cursor == last.cursor && none.rowsRead == 0)
    }

    @Test("Feedback with free text: the query becomes one text item (source feedback) and a train pair, once")
    func feedbackTextQueriesBecomeItems() throws {
        let (cluster, db) = try Self.database("feedback-text")
        defer { Self.remove(cluster) }
        let image = try db.execute("SELECT min(item_id) AS i FROM amber.items WHERE modality = 'image'").value(Int64.self, column: "i")
        let textFeatures = try db.execute("SELECT f.local_count::int AS n, f.global_dim::int AS g, f.local_dim::int AS l FROM amber.features f JOIN amber.items i USING (item_id) WHERE i.modality = 'text' LIMIT 1")
        let (g, l) = (try textFeatures.value(Int.self, column: "g"), try textFeatures.value(Int.self, column: "l"))
        let features = NewItem(modality: .text, externalID: "", caption: nil, features: ItemFeatures(global: Array(repeating: 0.5, count: g),
                               local: Array(repeating: 0.25, count: 2 * l), localCount: 2))
        let feedback = NewFeedback(query: .text("a red kite over the sea", features: features), chosen: image, chosenRank: 4)
        let first = try FeedbackWriter.write(feedback, on: db)
        #expect(first.pairAdded && first.notPairedBecause == nil)
        let second = try FeedbackWriter.write(feedback, on: db)
        #expect(!second.pairAdded && second.pairID == first.pairID && second.feedbackID > first.feedbackID)
        let item = try db.execute("SELECT external_id, caption, source FROM amber.items WHERE source = 'feedback'")
        #expect(item.rowCount == 1)
        #expect(try item.value(String.self, column: "caption") == "a red kite over the sea")
        #expect(try item.value(String.self, column: "external_id") == FeedbackWriter.externalID(ofQuery: "a red kite over the sea"))
        #expect(FeedbackWriter.externalID(ofQuery: "a") != FeedbackWriter.externalID(ofQuery: "b") && FeedbackWriter.externalID(ofQuery: "a").count == 25)
        // A text of the wrong dimension is refused as the items route refuses it, and nothing is written.
        var wrong = features
        wrong.features.global = [1, 2]
        #expect(throws: ItemWriteError.self) { try FeedbackWriter.write(NewFeedback(query: .text("another", features: wrong), chosen: image), on: db) }
        #expect(try count(db, "amber.feedback") == 2)
        // The service role may add feedback but not rewrite it.
        try db.execute("SET ROLE amber_app")
        #expect(throws: PostgresError.self) { try db.execute("UPDATE amber.feedback SET chosen_rank = 1") }
        #expect(throws: PostgresError.self) { try db.execute("DELETE FROM amber.feedback") }
        try db.execute("RESET ROLE")
    }
}

private func count(_ db: PostgresConnection, _ table: String) throws -> Int {
    try db.execute("SELECT count(*)::int AS n FROM \(table)").value(Int.self, column: "n")
}
