import AmberImage
import AmberCatalog
import AmberSearch
import AmberServer
import AmberStore
import AmberTensor
import AmberText
import ArgumentParser
import Foundation
import Hummingbird
import Logging
import ServiceLifecycle

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Answer queries over HTTP: two-stage search with the promoted model, models, bank summary, health, metrics.",
        discussion: """
        The promoted model and the galleries (every item with features) load in the background; /readyz says when. \
        A promotion (amber models promote, the continuous trainer, or POST /v1/models/{version}/promote) is picked up at once. \
        API keys: --api-keys or $AMBER_API_KEYS, entries read:KEY / admin:KEY or their digests read:sha256:HEX \
        (amber serve --hash-key KEY prints one). Without keys, reads are open and admin routes are off.
        """
    )

    @Option(help: "Address to listen on.") var host: String = "127.0.0.1"
    @Option(help: "Port to listen on.") var port: Int = 8080
    @Option(help: "API keys (comma-separated entries; default: $AMBER_API_KEYS).") var apiKeys: String?
    @Option(help: "Print the digest entry of a key for the configuration, and exit.") var hashKey: String?
    @Option(help: "Largest k a search may ask for.") var maxK: Int = 100
    @Option(help: "Largest stage-2 depth a search may ask for.") var maxRerank: Int = 200
    @Option(help: "OpenBLAS threads per call. Queries are small products: one thread each, and concurrent queries use the cores (more threads spin in sched_yield and slow everything down).")
    var blasThreads: Int = 1
    @Option(help: "Directory of gallery encodings kept per model version (default: $AMBER_HOME/cache/gallery); a restart encodes only new items.")
    var galleryCache: String?
    @Flag(help: "Do not keep gallery encodings on disk.") var noGalleryCache = false
    @Option(help: "Galleries of at least this many items get the sign-bit prefilter (searches ask for it with \"prefilter\").")
    var prefilterFrom: Int = 100_000
    @Option(help: "Most local vectors an image may have (queries, ingest, and items read back from the database).")
    var maxImageFragments: Int = FeatureLimits().maximumImageFragments
    @Option(help: "Most local vectors (tokens) a text may have.")
    var maxTextFragments: Int = FeatureLimits().maximumTextFragments
    @Option(help: "Largest absolute feature value accepted.")
    var maxFeatureMagnitude: Float = FeatureLimits().maximumMagnitude
    @Option(help: "Seconds a connection may stay silent (no request, no body data) before it is closed.")
    var idleTimeout: Double = 30
    @OptionGroup var database: DatabaseOptions
    @OptionGroup var textModel: TextModelOptions

    @OptionGroup var imageModel: ImageModelOptions

    func validate() throws {
        guard (0...65535).contains(port) else { throw ValidationError("--port must be 0…65535, got \(port)") }
        guard (1...10_000).contains(maxK) else { throw ValidationError("--max-k must be 1…10000, got \(maxK)") }
        guard (0...10_000).contains(maxRerank) else { throw ValidationError("--max-rerank must be 0…10000, got \(maxRerank)") }
        guard (1...256).contains(blasThreads) else { throw ValidationError("--blas-threads must be 1…256, got \(blasThreads)") }
        guard prefilterFrom >= 1 else { throw ValidationError("--prefilter-from must be at least 1, got \(prefilterFrom)") }
        let minimum = FeatureLimits().minimumFragments
        guard (minimum...4096).contains(maxImageFragments) else { throw ValidationError("--max-image-fragments must be \(minimum)…4096, got \(maxImageFragments)") }
        guard (minimum...4096).contains(maxTextFragments) else { throw ValidationError("--max-text-fragments must be \(minimum)…4096, got \(maxTextFragments)") }
        guard maxFeatureMagnitude.isFinite, maxFeatureMagnitude > 0 else {
            throw ValidationError("--max-feature-magnitude must be a positive finite number, got \(maxFeatureMagnitude)")
        }
        guard idleTimeout.isFinite, idleTimeout >= 1, idleTimeout <= 3600 else { throw ValidationError("--idle-timeout must be 1…3600 seconds, got \(idleTimeout)") }
    }

    func run() async throws {
        if let hashKey {
            print(APIKeys.digestEntry(of: hashKey))
            return
        }
        var configuration = ServerConfiguration()
        configuration.host = host
        configuration.port = port
        configuration.idleTimeout = .milliseconds(Int64(idleTimeout * 1000))
        var limits = ServerLimits()
        limits.maximumK = maxK
        limits.maximumRerank = maxRerank
        limits.features.maximumImageFragments = maxImageFragments
        limits.features.maximumTextFragments = maxTextFragments
        limits.features.maximumMagnitude = maxFeatureMagnitude
        do {
            configuration.keys = try APIKeys(configuration: apiKeys ?? ProcessInfo.processInfo.environment["AMBER_API_KEYS"] ?? "")
        } catch let error as APIKeyError {
            throw ValidationError(error.description)
        }
        BLASThreads.count = blasThreads
        var logger = Logger(label: "amber.serve")
        logger.logLevel = .info
        let encoder: MiniLMEncoder?
        do {
            encoder = try textModel.load()
        } catch {
            logger.warning("text queries are off: \(error)")
            encoder = nil
        }
        let imageEncoder: EfficientNetLiteEncoder?
        do {
            imageEncoder = try imageModel.load()
        } catch {
            logger.warning("image queries and photo uploads are off: \(error)")
            imageEncoder = nil
        }
        let cluster = database.configuredURL == nil ? database.embedded : nil
        let startedCluster = try cluster?.start() ?? false
        defer { if startedCluster { try? cluster?.stop() } }
        let url = try database.serviceURL(ownerURL: database.configuredURL ?? cluster!.url)
        let client = PostgresClient(url: url, maximumConnections: 4, logger: logger)
        let cache = noGalleryCache ? nil : GalleryCache(directory: galleryCache ?? (database.resolvedHome as NSString).appendingPathComponent("cache/gallery"))
        let service = QueryService(store: PostgresServingStore(client: client, logger: logger), textEncoder: encoder, imageEncoder: imageEncoder, limits: limits,
                                   cache: cache, codesFrom: prefilterFrom, logger: logger)
        if configuration.keys.isEmpty { logger.warning("no API keys configured: searches are open to anyone who can reach \(host):\(port), admin routes are off") }
        var app = buildApplication(service: service, configuration: configuration, logger: logger)
        app.addServices(ModelWatcher(service: service, feed: PostgresChangeFeed(url: url), logger: logger))
        logger.info("listening on http://\(host):\(port)")
        try await app.runService()
        await client.shutdown()
    }
}
