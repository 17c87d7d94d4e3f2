@testable import AmberModel
import AmberCatalog
import AmberSearch
@testable import AmberServer
@testable import AmberStore
import AmberTensor
import AmberTestSupport
import Foundation
import Hummingbird
import HummingbirdTesting
import HTTPTypes
import NIOConcurrencyHelpers
import NIOCore
import Testing

/// A store in memory for the routes that read models and the bank.
final class MemoryServingStore: ServingStore, @unchecked Sendable {
    let lock = NSLock()
    var model: (Int64, TrainedModel)?
    var versions: [ModelVersion] = []
    var images: [(GalleryItem, ItemFeatures)] = []
    var texts: [(GalleryItem, ItemFeatures)] = []
    var promoted: [Int64] = []

    func servingModel() async throws -> (version: Int64, model: ServedModel)? { lock.withLock { model.map { ($0.0, .matching($0.1)) } } }
    func galleryCatalog(_ modality: Modality) async throws -> [GalleryItem] { lock.withLock { (modality == .image ? images : texts).map(\.0) } }
    func galleryFeatures(_ modality: Modality, ids: [Int64]) async throws -> [(itemID: Int64, features: ItemFeatures)] {
        lock.withLock {
            featureRequests.append(ids.count)
            let wanted = Set(ids)
            return (modality == .image ? images : texts).filter { wanted.contains($0.0.itemID) }.map { ($0.0.itemID, $0.1) }
        }
    }
    /// How many items each features request asked for (what the service had to encode).
    var featureRequests: [Int] = []
    func modelVersions(limit: Int) async throws -> [ModelVersion] { lock.withLock { Array(versions.prefix(limit)) } }
    func promote(_ version: Int64) async throws {
        try lock.withLock {
            guard versions.contains(where: { $0.version == version }) else { throw RegistryError(description: "model version \(version) does not exist") }
            promoted.append(version)
            if let model { self.model = (version, model.1) }
        }
    }
    var items: [NewItem] = []
    var pairs: [NewPair] = []
    /// When set, stored items also join the galleries (as the PostgreSQL store's do).
    var galleryTakesItems = false
    func addItems(_ new: [NewItem]) async throws -> (added: Int, existing: Int) {
        lock.withLock {
            let fresh = new.filter { item in !items.contains { $0.modality == item.modality && $0.externalID == item.externalID } }
            items += fresh
            if galleryTakesItems {
                for item in fresh {
                    let id = 10_000 + Int64(items.count) + Int64(images.count + texts.count)
                    let entry = (GalleryItem(itemID: id, externalID: item.externalID, caption: item.caption),
                                 item.features)
                    if item.modality == .image { images.append(entry) } else { texts.append(entry) }
                }
            }
            return (fresh.count, new.count - fresh.count)
        }
    }
    func addPairs(_ new: [NewPair]) async throws -> (added: Int, existing: Int) {
        try lock.withLock {
            for (index, pair) in new.enumerated() where !items.contains(where: { $0.modality == .image && $0.externalID == pair.image }) {
                throw ItemWriteError(field: "pairs[\(index)].image", description: "pairs[\(index)].image: no image with external id '\(pair.image)'")
            }
            pairs += new
            return (new.count, 0)
        }
    }
    var pictures: [Int64: StoredImage] = [:]
    func itemImage(_ itemID: Int64) async throws -> StoredImage? { lock.withLock { pictures[itemID] } }
    func bankSummary() async throws -> [BankSummary] {
        [BankSummary(runID: 1, modality: "image", entries: 10, distinctItems: 9, stalenessSteps: 3, meanAmbiguity: 0.5)]
    }
}

/// A minimal HTTP/1.1 client over a real socket (Connection: close; the body is read to EOF).
func http(_ method: String, _ path: String, port: Int, body: String? = nil, headers: [String: String] = [:]) throws -> (status: Int, headers: [String: String], body: String) {
    // A connection that gets no response at all (refused or reset before a byte came back: seen
    // under a loaded CI machine just after a server starts) is tried again, up to three times;
    // any response, errors included, is returned as it is.
    var attempt = 0
    while true {
        attempt += 1
        let response = try exchange(method, path, port: port, body: body, headers: headers)
        if response.status != 0 || attempt == 3 { return response }
        usleep(200_000)
    }
}

/// A socket connected to 127.0.0.1:`port` with bounded waits (a server that stops reading, e.g.
/// after refusing an oversize body, must not hang the test), or nil when the connection fails.
func connectLoopback(port: Int) -> Int32? {
    signal(SIGPIPE, SIG_IGN)          // a peer that closes early must not kill the test process
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return nil }
    var timeout = timeval(tv_sec: 10, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let connected = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
    guard connected == 0 else { close(fd); return nil }
    return fd
}

/// Sends `request` whole on `fd`, then reads until the server closes; the response as text.
func sendAndReadToEnd(_ fd: Int32, _ request: String) -> String {
    let bytes = Array(request.utf8)
    var sent = 0
    while sent < bytes.count {
        let n = bytes[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }   // no SIGPIPE when the server closes early (413)
        guard n > 0 else { break }
        sent += n
    }
    var response: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = recv(fd, &buffer, buffer.count, 0)
        if n <= 0 { break }
        response += buffer[0..<n]
    }
    return String(decoding: response, as: UTF8.self)
}

private func exchange(_ method: String, _ path: String, port: Int, body: String?, headers: [String: String]) throws -> (status: Int, headers: [String: String], body: String) {
    guard let fd = connectLoopback(port: port) else { return (0, [:], "") }
    defer { close(fd) }
    var request = "\(method) \(path) HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
    for (name, value) in headers { request += "\(name): \(value)\r\n" }
    if let body { request += "Content-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n" }
    request += "\r\n" + (body ?? "")
    let text = sendAndReadToEnd(fd, request)
    let parts = text.components(separatedBy: "\r\n\r\n")
    let head = parts[0].components(separatedBy: "\r\n")
    let statusLine = head[0].split(separator: " ")
    let status = statusLine.count > 1 ? Int(statusLine[1]) ?? 0 : 0
    var fields: [String: String] = [:]
    for line in head.dropFirst() {
        if let colon = line.firstIndex(of: ":") { fields[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces) }
    }
    var payload = parts.dropFirst().joined(separator: "\r\n\r\n")
    if fields["transfer-encoding"] == "chunked" {
        // De-chunk.
        var out = "", rest = Substring(payload)
        while let lineEnd = rest.range(of: "\r\n"), let size = Int(rest[..<lineEnd.lowerBound], radix: 16), size > 0 {
            let start = lineEnd.upperBound
            let utf8 = Array(rest[start...].utf8)
            out += String(decoding: utf8.prefix(size), as: UTF8.self)
            rest = Substring(String(decoding: utf8.dropFirst(size + 2), as: UTF8.self))
        }
        payload = out
    }
    return (status, fields, payload)
}

func json(_ text: String) -> [String: Any] {
    (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] ?? [:]
}

/// Runs the application on an ephemeral port for the duration of `body`.
func withServer(_ service: QueryService, keys: APIKeys = APIKeys(), _ body: @Sendable (Int) async throws -> Void) async throws {
    var configuration = ServerConfiguration()
    configuration.port = 0
    configuration.keys = keys
    let port = AsyncStream<Int>.makeStream()
    let app = buildApplication(service: service, configuration: configuration) { channel in
        port.continuation.yield(channel.localAddress?.port ?? 0)
    }
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await app.run() }
        var iterator = port.stream.makeAsyncIterator()
        let bound = await iterator.next() ?? 0
        do {
            try await body(bound)
        } catch {
            try? await Task.sleep(for: .milliseconds(300))
            group.cancelAll()
            throw error
        }
        // Let the server finish closing the last connection first: cancelling while a response
        // writer is still open traps in NIO ("Deinited NIOAsyncWriter without calling finish()").
        try? await Task.sleep(for: .milliseconds(300))
        group.cancelAll()
    }
}

/// How a test reaches the routes, through Hummingbird's own testing library: over a real socket
/// (`.live`: the application runs on an ephemeral port, requests go through a NIO client), or in
/// process (`.router`: the router's responder, no network). Tests of HTTP framing itself
/// (malformed requests, oversize bodies cut off mid-stream) use ``withServer`` and raw sockets.
enum Transport: String, CaseIterable, Sendable {
    case socket, inProcess
}

typealias Send = @Sendable (_ method: String, _ path: String, _ body: String?, _ headers: [String: String]) async throws
    -> (status: Int, headers: [String: String], body: String)

func withTransport(_ transport: Transport, _ service: QueryService, keys: APIKeys = APIKeys(), _ body: @Sendable (Send) async throws -> Void) async throws {
    var configuration = ServerConfiguration()
    configuration.port = 0
    configuration.keys = keys
    let app = buildApplication(service: service, configuration: configuration)
    try await app.test(transport == .socket ? .live : .router) { client in
        try await body { method, path, payload, headers in
            var fields = HTTPFields()
            for (name, value) in headers {
                guard let field = HTTPField.Name(name) else { throw HTTPError(.badRequest, message: "test: bad header name \(name)") }
                fields[field] = value
            }
            if payload != nil { fields[.contentType] = "application/json" }
            let response = try await client.execute(uri: path, method: HTTPRequest.Method(method) ?? .get, headers: fields,
                                                    body: payload.map { ByteBuffer(string: $0) })
            var out: [String: String] = [:]
            for field in response.headers { out[field.name.canonicalName] = field.value }
            return (Int(response.status.code), out, String(buffer: response.body))
        }
    }
}

@Suite("HTTP API (real socket and in process)", .serialized)
struct ServerTests {
    static func service(keys: Bool = false) async throws -> (QueryService, MemoryServingStore) {
        let store = MemoryServingStore()
        let data = SearchEngineFixture.data()
        let (images, texts) = SearchEngineFixture.features(data)
        store.model = (3, SearchEngineFixture.model(alpha: 0.7, beta: 10))
        store.images = images
        // Texts carry categories (search results show them); images none.
        store.texts = texts.map { entry in
            var item = entry.0
            item.labels = ["group\(item.itemID % 2)", "text"]
            return (item, entry.1)
        }
        store.versions = [3, 4].map {
            ModelVersion(version: $0, parentVersion: nil, run: "main", step: Int($0) * 100, status: $0 == 3 ? "promoted" : "candidate",
                                  rsum: 400, gate: "promoted", createdAt: Date(timeIntervalSince1970: 1_800_000_000), promotedAt: nil)
        }
        let service = QueryService(store: store, textEncoder: nil)
        try await service.reload()
        return (service, store)
    }

    @Test(arguments: Transport.allCases)
    func healthReadinessSearchModelsBankAndMetrics(transport: Transport) async throws {
        let (service, _) = try await Self.service()
        try await withTransport(transport, service) { send in
            #expect(try await send("GET", "/healthz", nil, [:]).status == 200)
            let ready = try await send("GET", "/readyz", nil, [:])
            #expect(ready.status == 200 && json(ready.body)["model_version"] as? String == "3")
            // Search by item: image 100 searches the captions.
            let search = try await send("POST", "/v1/search", #"{"item_id": 100, "k": 5, "rerank": 3}"#, [:])
            #expect(search.status == 200, "\(search.body)")
            let body = json(search.body)
            #expect(body["model_version"] as? Int == 3 && body["target"] as? String == "text")
            #expect(body["stage_two"] as? String == "scan", "the response names the stage-2 scorer that ran")
            let results = body["results"] as? [[String: Any]] ?? []
            #expect(results.count == 5 && results.allSatisfy { ($0["caption"] as? String)?.hasPrefix("caption ") == true })
            #expect(results.allSatisfy { $0["labels"] as? [String] == ["group\(($0["item_id"] as? Int ?? 0) % 2)", "text"] }, "each result carries its item's labels")
            #expect(results.prefix(3).allSatisfy { $0["local"] != nil } && results.dropFirst(3).allSatisfy { $0["local"] == nil })
            // The same query in-process gives the same ranking.
            let direct = try service.search(SearchRequest(itemID: 100, k: 5, rerank: 3))
            #expect(results.map { $0["item_id"] as? Int } == direct.results.map { Int($0.itemID) })
            // Features (JSON numbers and base64 float32) search the other gallery.
            let image = SearchEngineFixture.features(SearchEngineFixture.data()).images[2].1
            let numbers = "{\"features\": {\"global\": \(image.global), \"local\": \(Array(0..<3).map { Array(image.local[($0 * 12) ..< (($0 + 1) * 12)]) })}, \"target\": \"text\", \"k\": 4}"
            let base64 = "{\"features\": {\"global\": \"\(Self.base64(image.global))\", \"local\": \"\(Self.base64(image.local))\"}, \"target\": \"text\", \"k\": 4}"
            let a = try await send("POST", "/v1/search", numbers, [:]), b = try await send("POST", "/v1/search", base64, [:])
            let imageResults = try await send("POST", "/v1/search", #"{"item_id": 1000, "k": 2, "rerank": 0}"#, [:])
            #expect(json(imageResults.body)["stage_two"] as? String == "none")
            #expect((json(imageResults.body)["results"] as? [[String: Any]])?.allSatisfy { ($0["labels"] as? [String]) == [] } == true, "\(imageResults.body)")
            #expect(a.status == 200 && b.status == 200, "\(a.body) \(b.body)")
            #expect((json(a.body)["results"] as? [[String: Any]])?.map { $0["item_id"] as? Int } == (json(b.body)["results"] as? [[String: Any]])?.map { $0["item_id"] as? Int })
            let models = try await send("GET", "/v1/models", nil, [:])
            #expect(models.status == 200 && (json(models.body)["models"] as? [[String: Any]])?.count == 2)
            let bank = try await send("GET", "/v1/bank/summary", nil, [:])
            #expect(bank.status == 200 && (json(bank.body)["bank"] as? [[String: Any]])?.first?["entries"] as? Int == 10)
            let metrics = try await send("GET", "/metrics", nil, [:])
            #expect(metrics.status == 200 && metrics.body.contains("amber_http_requests_total{route=\"/v1/search\",method=\"POST\",status=\"200\"}"))
            #expect(metrics.body.contains("amber_serving_model_version 3"))
        }
    }

    static func base64(_ values: [Float]) -> String {
        var bytes: [UInt8] = []
        for value in values { withUnsafeBytes(of: value.bitPattern.littleEndian) { bytes += $0 } }
        return Data(bytes).base64EncodedString()
    }

    @Test(arguments: Transport.allCases)
    func everyBadInputGetsA4xxNamingTheField(transport: Transport) async throws {
        let (service, _) = try await Self.service()
        try await withTransport(transport, service) { send in
            let cases: [(body: String, status: Int, field: String)] = [
                ("{", 400, "body"),
                (#"{"k": 3}"#, 400, "text"),
                (#"{"text": "a", "item_id": 100}"#, 400, "text"),
                (#"{"text": "   "}"#, 400, "text"),
                (#"{"text": "a", "k": 0}"#, 400, "k"),
                (#"{"text": "a", "k": 1000}"#, 400, "k"),
                (#"{"text": "a", "k": "ten"}"#, 400, "k"),
                (#"{"text": "a", "rerank": -1}"#, 400, "rerank"),
                (#"{"text": "a", "alpha": 1.5}"#, 400, "alpha"),
                (#"{"text": "a", "target": "video"}"#, 400, "target"),
                (#"{"item_id": 100, "prefilter": 2, "k": 5}"#, 400, "prefilter"),
                (#"{"item_id": 999999}"#, 404, "item_id"),
                (#"{"item_id": 100, "target": "image"}"#, 400, "target"),
                (#"{"features": {"global": [1, 2], "local": [[1]]}, "target": "text"}"#, 400, "features.global"),
                (#"{"features": {"global": [0,0,0,0,0,0,0,0,0,0,0,0], "local": []}, "target": "text"}"#, 400, "features.local"),
                (#"{"features": {"global": [0,0,0,0,0,0,0,0,0,0,0,0], "local": [[1, 2]]}, "target": "text"}"#, 400, "features.local[0]"),
                (#"{"features": {"global": "!!notbase64", "local": [[1]]}, "target": "text"}"#, 400, "features.global"),
                (#"{"features": {"global": [0,0,0,0,0,0,0,0,0,0,0,0], "local": [[0,0,0,0,0,0,0,0,0,0,0,0]]}}"#, 400, "target"),
                ("{\"features\": {\"global\": [\(Array(repeating: "0", count: 11).joined(separator: ",")), 1e39], \"local\": [[0,0,0,0,0,0,0,0,0,0,0,0], [0,0,0,0,0,0,0,0,0,0,0,0]]}, \"target\": \"text\"}", 400, "features.global"),
                (#"{"text": "a dog"}"#, 503, "text"),
            ]
            for (body, status, field) in cases {
                let response = try await send("POST", "/v1/search", body, [:])
                let error = json(response.body)["error"] as? [String: Any]
                #expect(response.status == status, "\(body) → \(response.status) \(response.body)")
                #expect(error?["field"] as? String == field, "\(body) → \(response.body)")
                #expect((error?["message"] as? String)?.isEmpty == false)
            }
            // Oversize bodies are refused.
            let huge = "{\"text\": \"" + String(repeating: "a", count: 5 << 20) + "\"}"
            let oversize = try await send("POST", "/v1/search", huge, [:])
            #expect(oversize.status == 413, "\(oversize.status) \(oversize.body.prefix(200))")
            #expect(try await send("GET", "/v1/nothing", nil, [:]).status == 404)
        }
    }

    @Test(arguments: Transport.allCases)
    func keysSeparateReadersFromAdmins(transport: Transport) async throws {
        let (service, store) = try await Self.service()
        let keys = try APIKeys(configuration: "read:reader-key-0123456789, admin:\(APIKeys.digestEntry(of: "admin-key-0123456789"))")
        try await withTransport(transport, service, keys: keys) { send in
            let body = #"{"item_id": 100, "k": 2}"#
            #expect(try await send("POST", "/v1/search", body, [:]).status == 401)
            #expect(try await send("POST", "/v1/search", body, ["Authorization": "Bearer nope"]).status == 401)
            #expect(try await send("POST", "/v1/search", body, ["Authorization": "Bearer reader-key-0123456789"]).status == 200)
            #expect(try await send("POST", "/v1/search", body, ["X-API-Key": "admin-key-0123456789"]).status == 200)
            let denied = try await send("POST", "/v1/models/4/promote", nil, ["Authorization": "Bearer reader-key-0123456789"])
            #expect(denied.status == 403 && (json(denied.body)["error"] as? [String: Any])?["field"] as? String == "authorization")
            let missing = try await send("POST", "/v1/models/99/promote", nil, ["Authorization": "Bearer admin-key-0123456789"])
            #expect(missing.status == 404, "\(missing.body)")
            let promoted = try await send("POST", "/v1/models/4/promote", nil, ["Authorization": "Bearer admin-key-0123456789"])
            #expect(promoted.status == 200 && json(promoted.body)["serving"] as? Int == 4, "\(promoted.body)")
            #expect(store.promoted == [4] && service.engine?.version == 4, "the promotion swaps the engine")
        }
    }

    @Test(arguments: Transport.allCases)
    func itemsAndPairsAreValidatedAndStoredWithAnAdminKey(transport: Transport) async throws {
        let (service, store) = try await Self.service()
        let keys = try APIKeys(configuration: "read:reader-key-0123456789, admin:admin-key-0123456789")
        let admin = ["Authorization": "Bearer admin-key-0123456789"]
        try await withTransport(transport, service, keys: keys) { send in
            let items = #"{"items": [{"modality": "image", "external_id": "new.jpg", "features": {"global": [1, 2], "local": [[1, 2], [3, 4]]}, "labels": ["dog", "pet"]},"#
                + #" {"modality": "text", "external_id": "new.jpg#0", "caption": "a dog", "features": {"global": [1], "local": ["AACAPw==", "AAAAQA=="]}}]}"#
            #expect(try await send("POST", "/v1/items", items, ["Authorization": "Bearer reader-key-0123456789"]).status == 403)
            let stored = try await send("POST", "/v1/items", items, admin)
            #expect(stored.status == 200 && json(stored.body)["added"] as? Int == 2, "\(stored.body)")
            #expect(store.items.last?.features.local == [1, 2], "base64 float32 decoded")
            #expect(store.items.first?.labels == ["dog", "pet"] && store.items.last?.labels == [])
            let again = try await send("POST", "/v1/items", items, admin)
            #expect(json(again.body)["added"] as? Int == 0 && json(again.body)["existing"] as? Int == 2, "re-sending adds nothing")
            let pairs = try await send("POST", "/v1/pairs", #"{"pairs": [{"image": "new.jpg", "text": "new.jpg#0", "split": "dev"}]}"#, admin)
            #expect(pairs.status == 200 && json(pairs.body)["added"] as? Int == 1 && store.pairs.first?.split == .dev)
            let labels65 = (0..<65).map { "\"l\($0)\"" }.joined(separator: ", ")
            let tooManyLabels = #"{"items": [{"modality": "image", "external_id": "x", "features": {"global": [1], "local": [[1], [1]]}, "labels": ["#
                + labels65 + "]}]}"
            let cases: [(path: String, body: String, status: Int, field: String)] = [
                ("/v1/items", #"{"items": []}"#, 400, "items"),
                ("/v1/items", #"{"items": [{"modality": "video", "external_id": "x"}]}"#, 400, "items[0].modality"),
                ("/v1/items", #"{"items": [{"modality": "image", "external_id": ""}]}"#, 400, "items[0].external_id"),
                ("/v1/items", #"{"items": [{"modality": "image", "external_id": "x", "caption": "no"}]}"#, 400, "items[0].caption"),
                ("/v1/items", #"{"items": [{"modality": "image", "external_id": "x"}]}"#, 400, "items[0].features"),
                ("/v1/items", #"{"items": [{"modality": "text", "external_id": "x", "caption": "a cat"}]}"#, 503, "items[0].features"),
                ("/v1/items", #"{"items": [{"modality": "image", "external_id": "x", "features": {"global": [1], "local": [[1, 2], [3]]}}]}"#, 400, "items[0].features.local[1]"),
                ("/v1/items", #"{"items": [{"modality": "image", "external_id": "x", "features": {"global": [1e39], "local": [[1], [1]]}}]}"#, 400, "items[0].features.global"),
                ("/v1/items", #"{"items": [{"modality": "image", "features": {"global": [1], "local": [[1]]}}]}"#, 400, "items[0].external_id"),
                ("/v1/items", #"{"items": [{"modality": "image", "external_id": "x", "features": {"global": [1], "local": [[1], [1]]}, "labels": ["ok", ""]}]}"#, 400, "items[0].labels[1]"),
                ("/v1/items", #"{"items": [{"modality": "image", "external_id": "x", "features": {"global": [1], "local": [[1], [1]]}, "labels": "dog"}]}"#, 400, "items[0].labels"),
                ("/v1/items", tooManyLabels, 400, "items[0].labels"),
                ("/v1/pairs", #"{"pairs": [{"image": "nope.jpg", "text": "new.jpg#0"}]}"#, 404, "pairs[0].image"),
                ("/v1/pairs", #"{"pairs": [{"image": "new.jpg", "text": "new.jpg#0", "split": "holdout"}]}"#, 400, "pairs[0].split"),
                ("/v1/pairs", #"{"pairs": []}"#, 400, "pairs"),
            ]
            for (path, body, status, field) in cases {
                let response = try await send("POST", path, body, admin)
                #expect(response.status == status, "\(body) → \(response.status) \(response.body)")
                #expect((json(response.body)["error"] as? [String: Any])?["field"] as? String == field, "\(body) → \(response.body)")
            }
        }
    }

    @Test(arguments: Transport.allCases)
    func withoutAModelSearchesWaitAndReadinessSaysSo(transport: Transport) async throws {
        let service = QueryService(store: MemoryServingStore(), textEncoder: nil)
        try await withTransport(transport, service) { send in
            let ready = try await send("GET", "/readyz", nil, [:])
            #expect(ready.status == 503 && ready.headers["retry-after"] == "5")
            let search = try await send("POST", "/v1/search", #"{"item_id": 1}"#, [:])
            #expect(search.status == 503 && search.headers["retry-after"] == "5")
        }
    }

    @Test func keysAreHashedAndParsed() throws {
        #expect(SHA256.hash(Array("abc".utf8)).map { String(format: "%02x", $0) }.joined()
                == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(SHA256.hash([]).map { String(format: "%02x", $0) }.joined()
                == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        let long = Array(String(repeating: "a", count: 1000).utf8)
        #expect(SHA256.hash(long).map { String(format: "%02x", $0) }.joined()
                == "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3")
        let keys = try APIKeys(configuration: "read:aaaaaaaaaaaaaaaa\nadmin:bbbbbbbbbbbbbbbb")
        #expect(keys.role(of: "aaaaaaaaaaaaaaaa") == .read && keys.role(of: "bbbbbbbbbbbbbbbb") == .admin && keys.role(of: "c") == nil)
        #expect { try APIKeys(configuration: "writer:aaaaaaaaaaaaaaaa") } throws: { "\($0)".contains("writer:…") && !"\($0)".contains("aaaa") }
        #expect { try APIKeys(configuration: "read:short") } throws: { "\($0)".contains("at least 16") }
        #expect { try APIKeys(configuration: "read:sha256:abc") } throws: { "\($0)".contains("64 hex digits") }
    }
}
