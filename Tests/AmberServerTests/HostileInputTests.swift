@testable import AmberModel
import AmberCatalog
import AmberSearch
@testable import AmberServer
@testable import AmberStore
import AmberTensor
import AmberTestSupport
import Foundation
import Testing

/// The inputs that took the server down or answered 500 before (issue 14), each as a
/// regression case: a 4xx naming the field, and a server that keeps answering.
// Nested in ServerTests: its suite is serialized (test servers run one at a time).
extension ServerTests {
    @Suite("Hostile input: every case a 4xx, the server alive")
    struct HostileInputTests {
        static let admin = ["Authorization": "Bearer admin-key-0123456789"]
        static func keys() throws -> APIKeys { try APIKeys(configuration: "read:reader-key-0123456789, admin:admin-key-0123456789") }

        /// A valid image query's features (3 fragments of 12), with the local part replaced.
        static func featuresQuery(local: String, global: String? = nil) -> String {
            let image = SearchEngineFixture.features(SearchEngineFixture.data()).images[2].1
            return "{\"features\": {\"global\": \(global ?? "\(image.global)"), \"local\": \(local)}, \"target\": \"text\", \"k\": 4}"
        }

        @Test(arguments: Transport.allCases)
        func oneLocalVectorIsRefusedInEveryEncoding(transport: Transport) async throws {
            let (service, _) = try await ServerTests.service()
            let one = Array(repeating: "0.5", count: 12).joined(separator: ",")
            let oneVector = (0..<12).map { _ in Float(0.5) }
            try await withTransport(transport, service, keys: try Self.keys()) { send in
                for body in [Self.featuresQuery(local: "[[\(one)]]"),                                        // an array of one vector
                             Self.featuresQuery(local: "\"\(ServerTests.base64(oneVector))\""),             // base64 of one vector
                             Self.featuresQuery(local: "[\"\(ServerTests.base64(oneVector))\"]")] {         // one base64 row
                    let response = try await send("POST", "/v1/search", body, Self.admin)
                    #expect(response.status == 400, "\(response.body)")
                    #expect((json(response.body)["error"] as? [String: Any])?["field"] as? String == "features.local", "\(response.body)")
                }
                #expect(try await send("GET", "/healthz", nil, [:]).status == 200)
                let items = #"{"items": [{"modality": "image", "external_id": "one.jpg", "features": {"global": [1, 2], "local": [[1, 2]]}}]}"#
                let stored = try await send("POST", "/v1/items", items, Self.admin)
                #expect(stored.status == 400 && (json(stored.body)["error"] as? [String: Any])?["field"] as? String == "items[0].features.local")
            }
        }

        @Test(arguments: Transport.allCases)
        func hugeAndNonFiniteValuesAreRefused(transport: Transport) async throws {
            let (service, _) = try await ServerTests.service()
            let row = Array(repeating: "0.1", count: 12).joined(separator: ",")
            try await withTransport(transport, service, keys: try Self.keys()) { send in
                let huge = Self.featuresQuery(local: "[[\(row)], [\(row)], [3e38, \(Array(repeating: "0", count: 11).joined(separator: ","))]]")
                let response = try await send("POST", "/v1/search", huge, Self.admin)
                #expect(response.status == 400 && (json(response.body)["error"] as? [String: Any])?["field"] as? String == "features.local[2]", "\(response.body)")
                let items = #"{"items": [{"modality": "image", "external_id": "big.jpg", "features": {"global": [3e38, 1], "local": [[1, 2], [3, 4]]}}]}"#
                let stored = try await send("POST", "/v1/items", items, Self.admin)
                #expect(stored.status == 400 && (json(stored.body)["error"] as? [String: Any])?["field"] as? String == "items[0].features.global", "\(stored.body)")
            }
        }

        @Test(arguments: Transport.allCases)
        func textsAreCountedAsPostgreSQLCountsThemAndNULIsRefused(transport: Transport) async throws {
            let (service, store) = try await ServerTests.service()
            try await withTransport(transport, service, keys: try Self.keys()) { send in
                func item(_ externalID: String, caption: String? = nil) -> String {
                    let id = String(data: try! JSONEncoder().encode(externalID), encoding: .utf8)!
                    let text = caption.map { ", \"caption\": " + String(data: try! JSONEncoder().encode($0), encoding: .utf8)! } ?? ""
                    return "{\"items\": [{\"modality\": \"text\", \"external_id\": \(id)\(text), \"features\": {\"global\": [1], \"local\": [[1], [2]]}}]}"
                }
                let cases: [(String, String)] = [
                    (item(String(repeating: "\r\n", count: 300)), "items[0].external_id"),            // 300 characters, 600 code points
                    (item(String(repeating: "🇫🇷", count: 300)), "items[0].external_id"),
                    (item(String(repeating: "e\u{301}", count: 400)), "items[0].external_id"),
                    (item("x", caption: String(repeating: "\r\n", count: 6000)), "items[0].caption"),
                    (item("\u{0}abc"), "items[0].external_id"),
                    (item("id\u{0}tail"), "items[0].external_id"),
                    (item("x", caption: "a\u{0}b"), "items[0].caption"),
                ]
                for (body, field) in cases {
                    let response = try await send("POST", "/v1/items", body, Self.admin)
                    #expect(response.status == 400, "\(response.body)")
                    #expect((json(response.body)["error"] as? [String: Any])?["field"] as? String == field, "\(response.body)")
                }
                #expect(store.items.isEmpty, "nothing was stored")
                let pair = try await send("POST", "/v1/pairs", #"{"pairs": [{"image": "id\u0000zzz", "text": "t"}]}"#, Self.admin)
                #expect(pair.status == 400 && (json(pair.body)["error"] as? [String: Any])?["field"] as? String == "pairs[0].image", "\(pair.body)")
                let text = try await send("POST", "/v1/search", #"{"text": "a\u0000dog"}"#, ["Authorization": "Bearer reader-key-0123456789"])
                #expect(text.status == 400 && (json(text.body)["error"] as? [String: Any])?["field"] as? String == "text", "\(text.body)")
            }
        }

        @Test(arguments: Transport.allCases)
        func numbersOfTheWrongKindDuplicateKeysAndDeepNestingNameTheField(transport: Transport) async throws {
            let (service, _) = try await ServerTests.service()
            try await withTransport(transport, service) { send in
                let cases: [(String, String)] = [
                    (#"{"item_id": 100, "k": 10.5}"#, "k"),
                    (#"{"item_id": 100, "k": 1e30}"#, "k"),
                    (#"{"item_id": 1e30}"#, "item_id"),
                    (#"{"item_id": 100, "rerank": true}"#, "rerank"),
                    (#"{"item_id": 100, "alpha": "x"}"#, "alpha"),
                    (#"{"item_id": 100, "alpha": 1e300}"#, "alpha"),
                    (#"{"item_id": 100, "k": 1, "k": 100}"#, "k"),
                    (#"{"item_id": 100, "\u006b": 1, "k": 2}"#, "k"),
                    (String(repeating: "[", count: 100_000), "body"),
                    ("{\"item_id\": 100, \"x\": " + String(repeating: "[", count: 40) + String(repeating: "]", count: 40) + "}", "body"),
                ]
                for (body, field) in cases {
                    let response = try await send("POST", "/v1/search", body, [:])
                    #expect(response.status == 400, "\(body.prefix(80)) → \(response.body)")
                    #expect((json(response.body)["error"] as? [String: Any])?["field"] as? String == field, "\(body.prefix(80)) → \(response.body)")
                }
                // 1e-50 is a valid number: it rounds to α = 0.
                #expect(try await send("POST", "/v1/search", #"{"item_id": 100, "alpha": 1e-50}"#, [:]).status == 200)
                let limit = try await send("GET", "/v1/models?limit=abc", nil, [:])
                #expect(limit.status == 400 && (json(limit.body)["error"] as? [String: Any])?["field"] as? String == "limit", "\(limit.body)")
                #expect(try await send("GET", "/v1/models?limit=7", nil, [:]).status == 200)
            }
        }

        @Test(arguments: Transport.allCases)
        func keysSchemesAndHealthAnswerAsRFCsSay(transport: Transport) async throws {
            let (service, _) = try await ServerTests.service()
            try await withTransport(transport, service, keys: try Self.keys()) { send in
                let body = #"{"item_id": 100, "k": 2}"#
                for scheme in ["Bearer", "bearer", "BEARER"] {
                    #expect(try await send("POST", "/v1/search", body, ["Authorization": "\(scheme) reader-key-0123456789"]).status == 200, "\(scheme)")
                }
                for path in ["/healthz", "/readyz", "/metrics"] {
                    #expect(try await send("GET", path, nil, ["Authorization": "Bearer stale-key"]).status == 200, "\(path)")
                }
                let text = try await send("POST", "/v1/search", #"{"text": "a dog"}"#, ["Authorization": "Bearer reader-key-0123456789"])
                #expect(text.status == 503 && text.headers["retry-after"] != nil, "\(text.headers)")
            }
        }

        @Test func anInvalidChunkSizeIsA400NotA500() async throws {
            let (service, _) = try await ServerTests.service()
            try await withServer(service) { port in
                let response = try rawExchange(port: port, "POST /v1/search HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\nZZZ\r\n{}\r\n0\r\n\r\n")
                #expect(response.hasPrefix("HTTP/1.1 400"), "\(response.prefix(200))")
                #expect(try http("GET", "/healthz", port: port).status == 200)
            }
        }

        @Test func aSilentConnectionIsClosedAfterTheIdleTimeout() async throws {
            let (service, _) = try await ServerTests.service()
            var configuration = ServerConfiguration()
            configuration.port = 0
            configuration.idleTimeout = .milliseconds(500)
            let port = AsyncStream<Int>.makeStream()
            let app = buildApplication(service: service, configuration: configuration) { channel in port.continuation.yield(channel.localAddress?.port ?? 0) }
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await app.run() }
                var iterator = port.stream.makeAsyncIterator()
                let bound = await iterator.next() ?? 0
                let fd = try #require(connectLoopback(port: bound))
                defer { close(fd) }
                // Half a request head, then silence (a slow-headers client).
                let partial = Array("POST /v1/search HTTP/1.1\r\nHost: local".utf8)
                _ = partial.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                let started = Date()
                var byte: UInt8 = 0
                let n = recv(fd, &byte, 1, 0)                 // 0: the server closed it
                #expect(n == 0, "recv returned \(n)")
                #expect(Date().timeIntervalSince(started) < 5, "closed after \(Date().timeIntervalSince(started)) s")
                #expect(try http("GET", "/healthz", port: bound).status == 200)
                try? await Task.sleep(for: .milliseconds(300))
                group.cancelAll()
            }
        }

        @Test func aBadRowOrABadModelInTheStoreIsLeftOutNotFatal() async throws {
            let store = MemoryServingStore()
            let (images, texts) = SearchEngineFixture.features(SearchEngineFixture.data())
            store.model = (3, SearchEngineFixture.model(alpha: 0.7, beta: 10))
            // Rows written before the checks (or by hand): one fragment, a huge value, wrong dimensions.
            let one = ItemFeatures(global: images[0].1.global, local: Array(images[0].1.local.prefix(12)), localCount: 1)
            var huge = images[1].1
            huge.local[5] = 3e38
            let narrow = ItemFeatures(global: [1, 2], local: [1, 2, 3, 4], localCount: 2)
            store.images = images + [(GalleryItem(itemID: 900, externalID: "one", caption: nil), one),
                                     (GalleryItem(itemID: 901, externalID: "huge", caption: nil), huge),
                                     (GalleryItem(itemID: 902, externalID: "narrow", caption: nil), narrow)]
            store.texts = texts
            let service = QueryService(store: store, textEncoder: nil)
            #expect(try await service.reload() == 3)
            let engine = try #require(service.engine)
            #expect(engine.images.count == images.count && [900, 901, 902].allSatisfy { engine.images.position(of: $0) == nil })
            // A reload does not ask for the refused rows again.
            let asked = store.featureRequests.count
            try await service.reload()
            #expect(store.featureRequests.count == asked)
            // An unservable promoted model keeps the engine in service.
            store.model = (4, SearchEngineFixture.model(alpha: 0.7, beta: 10))
            let unservable = UnservableModelStore(inner: store)
            let guarded = QueryService(store: unservable, textEncoder: nil)
            guarded.install(engine)
            #expect(try await guarded.reload() == 3)
            #expect(guarded.engine === engine)
        }

        @Test func aModelFileOutOfBoundsIsRefusedWhenRead() throws {
            var model = SearchEngineFixture.model(alpha: 0.7, beta: 10)
            model.model.parameters[0].assign(Tensor(shape: model.model.parameters[0].shape,
                                                    scalars: [Float](repeating: .nan, count: model.model.parameters[0].value.count)))
            #expect { try TrainedModel.read(bytes: try model.encoded(), name: "m") } throws: { "\($0)".contains("NaN") }
            var wide = SearchEngineFixture.model(alpha: 0.7, beta: 10)
            wide.encoder.jointDimension = 0
            #expect { try TrainedModel.read(bytes: try wide.encoded(), name: "m") } throws: { "\($0)".contains("joint dimension") }
        }
    }
}

/// A store whose serving model cannot be read.
struct UnservableModelStore: ServingStore {
    let inner: MemoryServingStore
    func servingModel() async throws -> (version: Int64, model: ServedModel)? { throw UnservableModelError(version: 4, problem: "test") }
    func galleryCatalog(_ modality: Modality) async throws -> [GalleryItem] { try await inner.galleryCatalog(modality) }
    func galleryFeatures(_ modality: Modality, ids: [Int64]) async throws -> [(itemID: Int64, features: ItemFeatures)] {
        try await inner.galleryFeatures(modality, ids: ids)
    }
    func modelVersions(limit: Int) async throws -> [ModelVersion] { [] }
    func promote(_ version: Int64) async throws {}
    func bankSummary() async throws -> [BankSummary] { [] }
    func addItems(_ items: [NewItem]) async throws -> (added: Int, existing: Int) { (0, 0) }
    func addPairs(_ pairs: [NewPair]) async throws -> (added: Int, existing: Int) { (0, 0) }
}

/// Sends raw bytes on a fresh connection and returns what comes back until the server closes.
func rawExchange(port: Int, _ request: String) throws -> String {
    guard let fd = connectLoopback(port: port) else { return "" }
    defer { close(fd) }
    return sendAndReadToEnd(fd, request)
}
