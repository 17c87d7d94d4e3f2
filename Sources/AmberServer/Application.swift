import AmberCatalog
import AmberModel
import AmberTensor
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Prometheus
import Synchronization

/// How `amber serve` listens and whom it lets in.
public struct ServerConfiguration: Sendable {
    public var host = "127.0.0.1"
    public var port = 8080
    public var keys = APIKeys()
    /// A connection that sends nothing for this long (no request head, no body part) while no
    /// response is being written is closed: slow or stalled clients cannot hold connections.
    public var idleTimeout: Duration = .seconds(30)
    /// Requests doing CPU work (searches, ingests) admitted at once, running or waiting for a
    /// worker thread; past it a request gets 503 with `Retry-After` at once instead of queueing.
    public var maximumPendingWork = 64

    public init() {}
}

/// Runs the CPU-heavy part of a request (decoding a body, encoding captions, a search) on
/// worker threads of its own (one per core, at a lower scheduling priority: nice 10), never on
/// Swift's cooperative pool or NIO's event loops, so `/healthz` and request I/O never queue
/// behind searches. When more than one request is in work, each runs on its worker alone (no
/// fan-out over the cores: the concurrent requests already use them). Admission is bounded:
/// past `capacity` requests in work, a new one gets 503 with `Retry-After` at once.
public final class RequestWork: Sendable {
    public let capacity: Int
    private let admitted = Atomic<Int>(0)
    private let pool: NIOThreadPool

    /// One pool for every application in the process.
    static let workers: NIOThreadPool = {
        let pool = NIOThreadPool(numberOfThreads: max(ProcessInfo.processInfo.activeProcessorCount, 1))
        pool.start()
        return pool
    }()

    public init(capacity: Int) {
        self.capacity = capacity
        self.pool = Self.workers
    }

    /// Requests in work now (running or waiting for a thread).
    public var pending: Int { admitted.load(ordering: .relaxed) }

    public func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        let count = admitted.wrappingAdd(1, ordering: .relaxed).newValue
        defer { admitted.wrappingSubtract(1, ordering: .relaxed) }
        guard count <= capacity else {
            throw APIError(503, "the server is busy (\(capacity) requests in work); retry shortly", retryAfter: 1)
        }
        return try await pool.runIfActive { [self] in
            Self.lowerPriority()
            return pending > 1 ? try Parallel.serially(body) : try body()
        }
    }

    /// Nice 10 for the calling worker thread (Linux: per thread); health checks and I/O preempt it.
    private static func lowerPriority() {
        #if os(Linux)
        _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, 10)      // who = 0: this thread on Linux (nice is per thread)
        #endif
    }
}

/// The request context: who is asking (from the API key), checked by the routes.
public struct AmberRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public var role: APIRole?
    /// Bodies above the configured cap are refused before they are read whole.
    public var maxUploadSize: Int { 4 << 20 }

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        role = nil
    }
}

/// Request counts and latencies in Prometheus's text format (`GET /metrics`).
public final class ServerMetrics: Sendable {
    public let registry = PrometheusCollectorRegistry()
    static var requests: MetricNameDescriptor { MetricNameDescriptor(namespace: "amber", metricName: "http_requests", unitName: "total",
                                               helpText: "HTTP requests by route, method and status") }
    static var latency: MetricNameDescriptor { MetricNameDescriptor(namespace: "amber", metricName: "http_request_duration", unitName: "seconds",
                                              helpText: "HTTP request latency by route") }
    static var version: MetricNameDescriptor { MetricNameDescriptor(namespace: "amber", metricName: "serving_model", unitName: "version",
                                              helpText: "The model version being served (0 for none)") }
    static var gallery: MetricNameDescriptor { MetricNameDescriptor(namespace: "amber", metricName: "gallery", unitName: "items",
                                              helpText: "Items in the search gallery, by modality") }

    public init() {}

    func record(route: String, method: String, status: Int, seconds: Double) {
        let labels = [("route", route), ("method", method), ("status", String(status))]
        registry.makeCounter(descriptor: Self.requests, labels: labels).increment()
        registry.makeDurationHistogram(descriptor: Self.latency, labels: [("route", route)],
                                       buckets: [.milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
                                                 .milliseconds(100), .milliseconds(250), .seconds(1), .seconds(5)])
            .record(.nanoseconds(Int64(seconds * 1e9)))
    }

    func setGallery(version: Int64?, images: Int, texts: Int) {
        registry.makeGauge(descriptor: Self.version).set(Double(version ?? 0))
        registry.makeGauge(descriptor: Self.gallery, labels: [("modality", "image")]).set(Double(images))
        registry.makeGauge(descriptor: Self.gallery, labels: [("modality", "text")]).set(Double(texts))
    }

    var text: String {
        var buffer: [UInt8] = []
        registry.emit(into: &buffer)
        return String(decoding: buffer, as: UTF8.self)
    }
}

/// Reads the API key (`Authorization: Bearer KEY` or `X-API-Key: KEY`), turns every error into
/// JSON (`{"error": {"message", "field"}}`; database errors never reach the client), and records
/// metrics.
struct AmberMiddleware: RouterMiddleware {
    typealias Context = AmberRequestContext
    let keys: APIKeys
    let metrics: ServerMetrics
    let logger: Logger

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let started = Date()
        var context = context
        let presented = Self.presentedKey(request.headers)
        if let presented { context.role = keys.role(of: presented) }
        let response: Response
        // Health and metrics answer whatever key comes with them (a probe's stale key is no reason to fail it).
        let checksKey = !["/healthz", "/readyz", "/metrics"].contains(request.uri.path)
        do {
            if checksKey && presented != nil && context.role == nil { throw APIError(401, "the API key is not valid", field: "authorization") }
            response = try await next(request, context)
        } catch let error as APIError {
            response = Self.json(error)
        } catch let error as HTTPParserError {
            // A malformed body (e.g. a bad chunk size) from the client: the connection cannot go on.
            var refused = Self.json(APIError(400, "the request is not valid HTTP (\(error))", field: "body"))
            refused.headers[.connection] = "close"
            response = refused
        } catch let error as HTTPError {
            response = Self.json(APIError(Int(error.status.code), error.body ?? error.status.reasonPhrase))
        } catch let error as DecodingError {
            response = Self.json(Self.describe(error))
        } catch let error as any StoreError {
            logger.error("database error", metadata: ["error": "\(error)"])
            response = Self.json(error.isTransient ? APIError(503, "the database is unavailable or busy; retry shortly", retryAfter: 5)
                                                   : APIError(500, "internal error (the server log has the details)"))
        } catch {
            logger.error("request failed", metadata: ["error": "\(error)"])
            response = Self.json(APIError(500, "internal error (the server log has the details)"))
        }
        metrics.record(route: context.endpointPath ?? "unmatched", method: request.method.rawValue, status: Int(response.status.code),
                       seconds: Date().timeIntervalSince(started))
        return response
    }

    /// The key of `Authorization: Bearer KEY` (the scheme in any case, RFC 7235) or `X-API-Key: KEY`.
    static func presentedKey(_ headers: HTTPFields) -> String? {
        if let value = headers[.authorization] {
            let parts = value.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
            if parts.count == 2, parts[0].lowercased() == "bearer" { return String(parts[1].trimmingCharacters(in: .whitespaces)) }
        }
        return headers[HTTPField.Name("X-API-Key")!]
    }

    static func json(_ error: APIError) -> Response {
        var body: [String: Any] = ["message": error.message]
        if let field = error.field { body["field"] = field }
        let data = (try? JSONSerialization.data(withJSONObject: ["error": body], options: [.sortedKeys])) ?? Data()
        var headers: HTTPFields = [.contentType: "application/json; charset=utf-8"]
        if let retry = error.retryAfter { headers[.retryAfter] = String(retry) }
        return Response(status: HTTPResponse.Status(code: error.status), headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    /// A decoding error as a 400 naming the field (the JSON path).
    static func describe(_ error: DecodingError) -> APIError {
        let path = jsonPath
        switch error {
        case .keyNotFound(let key, let context):
            return .badRequest(path(context.codingPath + [key]), "\(path(context.codingPath + [key])) is missing")
        case .typeMismatch(_, let context), .valueNotFound(_, let context):
            let field = path(context.codingPath)
            return .badRequest(field.isEmpty ? "body" : field, "\(field.isEmpty ? "the body" : field) has the wrong type: \(context.debugDescription)")
        case .dataCorrupted(let context):
            let field = path(context.codingPath)
            return .badRequest(field.isEmpty ? "body" : field, field.isEmpty ? "the body is not valid JSON" : "\(field): \(context.debugDescription)")
        @unknown default:
            return .badRequest("body", "the body does not decode")
        }
    }
}

/// JSON bodies for Hummingbird.
struct JSONBody<Value: Encodable & Sendable>: ResponseGenerator {
    let value: Value
    var status: HTTPResponse.Status = .ok

    func response(from request: Request, context: some RequestContext) throws -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        encoder.dateEncodingStrategy = .iso8601
        let data = try encoder.encode(value)
        return Response(status: status, headers: [.contentType: "application/json; charset=utf-8"],
                        body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}

/// A model version as `GET /v1/models` lists it.
struct ModelVersionBody: Encodable, Sendable {
    var version: Int64
    var parentVersion: Int64?
    var run: String?
    var step: Int
    var status: String
    var rsum: Double?
    var gate: String?
    var createdAt: Date
    var promotedAt: Date?

    enum CodingKeys: String, CodingKey {
        case version, run, step, status, rsum, gate
        case parentVersion = "parent_version"
        case createdAt = "created_at"
        case promotedAt = "promoted_at"
    }
}

/// The HTTP API (search, items, pairs, feedback, models, bank summary, health, metrics; every route,
/// body and error is described in openapi.yaml) on `service`.
/// `main` and the tests build the application the same way; `onServerRunning` hears the bound
/// channel (its port, when listening on port 0).
public func buildApplication(service: QueryService, configuration: ServerConfiguration, metrics: ServerMetrics = ServerMetrics(),
                             logger: Logger = Logger(label: "amber.serve"),
                             onServerRunning: @escaping @Sendable (any Channel) async -> Void = { _ in }) -> Application<RouterResponder<AmberRequestContext>> {
    let router = Router(context: AmberRequestContext.self)
    router.add(middleware: AmberMiddleware(keys: configuration.keys, metrics: metrics, logger: logger))
    let limits = service.limits
    let openReads = configuration.keys.isEmpty
    let work = RequestWork(capacity: configuration.maximumPendingWork)

    /// The body, at most `limits.maximumBodyBytes` (413 past it).
    @Sendable func collect(_ request: Request) async throws -> ByteBuffer {
        do {
            return try await request.body.collect(upTo: limits.maximumBodyBytes)
        } catch is NIOTooManyBytesError {
            throw APIError(413, "the body is larger than \(limits.maximumBodyBytes) bytes", field: "body")
        }
    }
    /// A JSON body as `T`, after the checks the decoder does not make (``JSONBodyCheck``). Run on a worker.
    @Sendable func decode<T: Decodable>(_ type: T.Type, _ body: ByteBuffer) throws -> T {
        try body.withUnsafeReadableBytes { try JSONBodyCheck.check($0) }
        return try JSONDecoder().decode(type, from: Data(buffer: body))
    }

    @Sendable func requireRole(_ role: APIRole, _ context: AmberRequestContext) throws {
        if role == .read && openReads { return }
        guard let held = context.role else {
            throw APIError(401, role == .admin && openReads ? "no admin keys are configured (--api-keys admin:…); this route is off"
                                                            : "an API key is required (Authorization: Bearer KEY)", field: "authorization")
        }
        guard held >= role else { throw APIError(403, "this route needs an \(role.rawValue) key", field: "authorization") }
    }

    router.get("healthz") { _, _ in JSONBody(value: ["status": "ok"]) }
    router.get("readyz") { _, _ -> JSONBody<[String: String]> in
        guard let engine = service.engine else { throw APIError(503, "no model is loaded yet", retryAfter: 5) }
        return JSONBody(value: ["status": "ready", "model_version": String(engine.version),
                                "images": String(engine.images.count), "texts": String(engine.texts.count)])
    }
    router.get("metrics") { _, _ -> Response in
        if let engine = service.engine { metrics.setGallery(version: engine.version, images: engine.images.count, texts: engine.texts.count) }
        return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                        body: .init(byteBuffer: ByteBuffer(string: metrics.text)))
    }
    router.post("v1/search") { request, context -> JSONBody<SearchResponse> in
        try requireRole(.read, context)
        let body = try await collect(request)
        return JSONBody(value: try await work.run { try service.search(try decode(SearchRequest.self, body)) })
    }
    router.get("v1/models") { request, context -> JSONBody<[String: [ModelVersionBody]]> in
        try requireRole(.read, context)
        guard let store = service.store else { throw APIError(503, "no database is configured") }
        var limit = 50
        if let given = request.uri.queryParameters.get("limit") {
            guard let value = Int(given), (1...1000).contains(value) else {
                throw APIError.badRequest("limit", "limit must be a whole number from 1 to 1000, got '\(given)'")
            }
            limit = value
        }
        let versions = try await store.modelVersions(limit: limit).map {
            ModelVersionBody(version: $0.version, parentVersion: $0.parentVersion, run: $0.run, step: $0.step, status: $0.status,
                             rsum: $0.rsum, gate: $0.gate, createdAt: $0.createdAt, promotedAt: $0.promotedAt)
        }
        return JSONBody(value: ["models": versions])
    }
    router.post("v1/models/:version/promote") { _, context -> JSONBody<[String: Int64]> in
        try requireRole(.admin, context)
        guard let text = context.parameters.get("version"), let version = Int64(text), version > 0 else {
            throw APIError.badRequest("version", "version must be a positive integer")
        }
        guard let store = service.store else { throw APIError(503, "no database is configured") }
        do {
            try await store.promote(version)
        } catch let error as RegistryError {
            throw APIError(404, error.description, field: "version")
        } catch let error as UnservableModelError {
            throw APIError(409, error.description + "; nothing was promoted", field: "version")
        }
        let serving = try await service.reload()
        return JSONBody(value: ["promoted": version, "serving": serving ?? version])
    }
    router.post("v1/items") { request, context -> JSONBody<WriteResponse> in
        try requireRole(.admin, context)
        guard let store = service.store else { throw APIError(503, "no database is configured") }
        let body = try await collect(request)
        let items = try await work.run {
            try decode(ItemsRequest.self, body).validated(limits: limits, encode: service.textEncoder.map { encoder in
                { caption in service.features(of: caption, encoder: encoder) }
            }, encodeImage: service.imageEncoder == nil ? nil : { image, field in
                (try service.imageFeatures(image, field: field), StoredImage.thumbnail(of: image))
            })
        }
        do {
            let (added, existing) = try await store.addItems(items)
            // Searchable at once on this replica (the others grow on amber_new_items); only the
            // new items are encoded. Without a model yet there is nothing to grow.
            if added > 0, service.engine != nil { _ = try? await service.reload() }
            return JSONBody(value: WriteResponse(added: added, existing: existing))
        } catch let error as ItemWriteError {
            throw APIError.badRequest(error.field, error.description)
        }
    }
    router.get("v1/items/:id/image") { _, context -> Response in
        try requireRole(.read, context)
        guard let text = context.parameters.get("id"), let itemID = Int64(text), itemID > 0 else {
            throw APIError.badRequest("id", "id must be a positive integer (an item_id)")
        }
        guard let store = service.store else { throw APIError(503, "no database is configured") }
        guard let image = try await store.itemImage(itemID) else {
            throw APIError(404, "item \(itemID) has no stored picture (only images ingested from photos or uploaded with one have)", field: "id")
        }
        return Response(status: .ok, headers: [.contentType: StoredImage.mediaType, .cacheControl: "private, max-age=86400"],
                        body: .init(byteBuffer: ByteBuffer(bytes: image.bytes)))
    }
    router.post("v1/pairs") { request, context -> JSONBody<WriteResponse> in
        try requireRole(.admin, context)
        guard let store = service.store else { throw APIError(503, "no database is configured") }
        let body = try await collect(request)
        let pairs = try await work.run { try decode(PairsRequest.self, body).validated(limits: limits) }
        do {
            let (added, existing) = try await store.addPairs(pairs)
            return JSONBody(value: WriteResponse(added: added, existing: existing))
        } catch let error as ItemWriteError {
            throw APIError(404, error.description, field: error.field)
        }
    }
    // Feedback comes from the applications that search (a read key is enough): one result list's
    // choice, stored with provenance; a chosen result of the other modality becomes a pair.
    router.post("v1/feedback") { request, context -> JSONBody<FeedbackResponse> in
        try requireRole(.read, context)
        guard let store = service.store else { throw APIError(503, "no database is configured") }
        let body = try await collect(request)
        let feedback = try await work.run {
            try decode(FeedbackRequest.self, body).validated(encode: service.textEncoder.map { encoder in
                { text in service.features(of: text, encoder: encoder) }
            })
        }
        do {
            let result = try await store.addFeedback(feedback)
            return JSONBody(value: FeedbackResponse(feedbackID: result.feedbackID, pairID: result.pairID, pairAdded: result.pairAdded,
                                                    notPairedBecause: result.notPairedBecause))
        } catch let error as ItemWriteError {
            throw APIError(404, error.description, field: error.field)
        }
    }
    router.get("v1/bank/summary") { _, context -> JSONBody<[String: [BankSummary]]> in
        try requireRole(.read, context)
        guard let store = service.store else { throw APIError(503, "no database is configured") }
        return JSONBody(value: ["bank": try await store.bankSummary()])
    }
    return Application(router: router,
                       server: .http1(configuration: .init(idleTimeout: TimeAmount(configuration.idleTimeout))),
                       configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "amber"),
                       onServerRunning: onServerRunning, logger: logger)
}
