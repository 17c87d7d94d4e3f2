import AmberCatalog
import AmberImage
import AmberIngest
import AmberModel
import AmberSearch
import AmberText
import Foundation
import Logging
import Synchronization

/// What the query service reads from and writes to: the serving model, the galleries, model
/// versions, the bank summary. The PostgreSQL adapter (`PostgresServingStore` in `AmberStore`) is the real one.
public protocol ServingStore: Sendable {
    /// The promoted model and its version, if one is promoted.
    func servingModel() async throws -> (version: Int64, model: ServedModel)?
    /// Every item of `modality` that has features, ordered by item id (no features: cheap).
    func galleryCatalog(_ modality: Modality) async throws -> [GalleryItem]
    /// The features of the items of `modality` with these ids (those that have them), by item id.
    func galleryFeatures(_ modality: Modality, ids: [Int64]) async throws -> [(itemID: Int64, features: ItemFeatures)]
    func modelVersions(limit: Int) async throws -> [ModelVersion]
    func promote(_ version: Int64) async throws
    func bankSummary() async throws -> [BankSummary]
    /// Stores items with their features (one transaction); returns added and already-stored counts.
    func addItems(_ items: [NewItem]) async throws -> (added: Int, existing: Int)
    /// Stores pairs (one transaction, `NOTIFY amber_new_pairs`); returns added and already-stored counts.
    func addPairs(_ pairs: [NewPair]) async throws -> (added: Int, existing: Int)
    /// The stored picture of an image item (nil: none).
    func itemImage(_ itemID: Int64) async throws -> StoredImage?
    /// Stores a user's feedback and the training pair it makes (one transaction).
    /// - Throws: ``ItemWriteError`` naming the field of an item that is not stored.
    func addFeedback(_ feedback: NewFeedback) async throws -> FeedbackResult
}

extension ServingStore {
    public func itemImage(_ itemID: Int64) async throws -> StoredImage? { nil }
    public func addFeedback(_ feedback: NewFeedback) async throws -> FeedbackResult {
        throw APIError(503, "this store keeps no feedback")
    }
}

/// One row of `GET /v1/bank/summary` (from `amber.bank_overview`).
public struct BankSummary: Sendable, Codable, Equatable {
    public var runID: Int64
    public var modality: String
    public var entries: Int
    public var distinctItems: Int
    public var stalenessSteps: Int
    public var meanAmbiguity: Float?

    public init(runID: Int64, modality: String, entries: Int, distinctItems: Int, stalenessSteps: Int, meanAmbiguity: Float?) {
        self.runID = runID
        self.modality = modality
        self.entries = entries
        self.distinctItems = distinctItems
        self.stalenessSteps = stalenessSteps
        self.meanAmbiguity = meanAmbiguity
    }

    enum CodingKeys: String, CodingKey {
        case modality, entries
        case runID = "run_id"
        case distinctItems = "distinct_items"
        case stalenessSteps = "staleness_steps"
        case meanAmbiguity = "mean_ambiguity"
    }
}

/// The query side of Amber: the search engine of the serving model (swapped whole when a new
/// model is loaded; queries in flight finish on the engine they started with), the text encoder,
/// and the store.
public final class QueryService: Sendable {
    private let current = Mutex<SearchEngine?>(nil)
    public let textEncoder: MiniLMEncoder?
    /// The image encoder for image queries and uploads (nil: those answer 503).
    public let imageEncoder: EfficientNetLiteEncoder?
    public let store: (any ServingStore)?
    public let limits: ServerLimits
    /// Where gallery encodings are kept per model version (nil: not kept).
    public let cache: GalleryCache?
    /// Galleries of at least this many items get the sign-bit prefilter.
    public let codesFrom: Int
    private let logger: Logger
    /// The version last loaded and its model's fingerprint for the cache (computed once per version).
    private let lastLoaded = Mutex<(version: Int64, fingerprint: String?)?>(nil)
    /// Items whose stored features the serving model cannot take (logged once, left out of the
    /// galleries), by the model version they were checked against.
    private let rejected = Mutex<(version: Int64, items: Set<Int64>)>((0, []))
    /// A promoted version that cannot be served (logged once; the engine in service stays).
    private let unservable = Mutex<Int64?>(nil)

    public init(store: (any ServingStore)?, textEncoder: MiniLMEncoder?, imageEncoder: EfficientNetLiteEncoder? = nil,
                limits: ServerLimits = ServerLimits(),
                cache: GalleryCache? = nil, codesFrom: Int = 100_000, logger: Logger = Logger(label: "amber.serve")) {
        self.store = store
        self.textEncoder = textEncoder
        self.imageEncoder = imageEncoder
        self.limits = limits
        self.cache = cache
        self.codesFrom = codesFrom
        self.logger = logger
    }

    /// The engine queries use now (nil until a model is loaded).
    public var engine: SearchEngine? { current.withLock { $0 } }

    /// Serves `engine` from now on.
    public func install(_ engine: SearchEngine) {
        current.withLock { $0 = engine }
    }

    /// Loads the promoted model and both galleries from the store and swaps the new engine in;
    /// returns the version now served (nil when nothing is promoted).
    ///
    /// Only items not yet encoded with the serving model are encoded: for the model in service,
    /// the items it already holds are kept (so new items join the gallery at the cost of their
    /// own encoding); for a newly promoted model, the gallery cache on disk (when configured)
    /// supplies what an earlier run encoded with it. Nothing is swapped when nothing changed.
    @discardableResult
    public func reload() async throws -> Int64? {
        guard let store else { return engine?.version }
        let served: (version: Int64, model: ServedModel)?
        do {
            served = try await store.servingModel()
        } catch let error as UnservableModelError {
            // A bad model row must not take the service down: keep what is served, say so once.
            if unservable.withLock({ $0 }) != error.version {
                logger.error("the promoted model cannot be served; keeping the engine in service (promote or roll back to another version)",
                             metadata: ["serve.version": "\(error.version)", "error": "\(error.problem)"])
                unservable.withLock { $0 = error.version }
            }
            return engine?.version
        }
        guard let (version, model) = served else {
            logger.info("no model is promoted yet")
            return nil
        }
        let started = Date()
        let previous = engine.flatMap { $0.version == version ? $0 : nil }
        var catalogs: [Modality: [GalleryItem]] = [:]
        for modality in Modality.allCases { catalogs[modality] = try await store.galleryCatalog(modality) }
        var refused = rejected.withLock { $0.version == version ? $0.items : [] }
        // Items refused for this model are not "new": leave them out before comparing.
        if !refused.isEmpty { catalogs = catalogs.mapValues { $0.filter { !refused.contains($0.itemID) } } }
        if let previous, Modality.allCases.allSatisfy({ catalogs[$0]!.map(\.itemID) == previous.gallery($0).index.itemIDs }) {
            // No new item; labels may have been added to stored ones: swap in their descriptions.
            if let relabelled = previous.updatingItems(from: catalogs) { install(relabelled) }
            return version                                  // nothing new to encode
        }
        let last = lastLoaded.withLock { $0 }
        let fingerprint = last?.version == version ? last?.fingerprint : galleryCacheFingerprint(model)
        // New items at the end of a gallery in service: encode them, append them (nothing already
        // in the galleries is copied), append them to the cache.
        if let previous, let grown = try await appending(to: previous, catalogs: catalogs, model: model, refused: &refused) {
            rejected.withLock { $0 = (version, refused) }
            unservable.withLock { $0 = nil }
            if let cache, let fingerprint {
                for modality in Modality.allCases {
                    guard let added = grown.added[modality], added.count > 0 else { continue }
                    do {
                        // The cache holds what the engine in service held: append; else (no file yet,
                        // or one behind) write it whole once.
                        if try !cache.append(added, after: previous.gallery(modality).count, version: version, modality: modality, fingerprint: fingerprint) {
                            try cache.store(grown.engine.gallery(modality).encoding, version: version, modality: modality, fingerprint: fingerprint)
                        }
                    } catch {
                        logger.warning("cannot append to the gallery cache; the next start encodes these items again", metadata: ["error": "\(error)"])
                    }
                }
            }
            install(grown.engine.updatingItems(from: catalogs) ?? grown.engine)
            logger.info("gallery grown", metadata: [
                "serve.version": "\(version)", "serve.images": "\(grown.engine.images.count)", "serve.texts": "\(grown.engine.texts.count)",
                "serve.encoded": "\(grown.added.values.reduce(0) { $0 + $1.count })", "serve.appended": "true",
                "serve.seconds": "\(String(format: "%.2f", Date().timeIntervalSince(started)))",
            ])
            return version
        }
        var galleries: [Modality: (items: [GalleryItem], encoding: GalleryEncoding)] = [:]
        var encoded = 0, reused = 0, fromCache = 0
        for modality in Modality.allCases {
            let catalog = catalogs[modality]!
            // What is already encoded with this model: the engine in service, else the cache.
            var known: GalleryEncoding?
            if let previous {
                known = previous.gallery(modality).encoding
            } else if let cache, let fingerprint,
                      let cached = cache.load(version: version, modality: modality, fingerprint: fingerprint, dimension: model.jointDimension,
                                              withOffsets: (model.querybank?.beta ?? 0) > 0) {
                known = cached
                fromCache += cached.count
            }
            let cacheIsCurrent = previous != nil || known != nil
            let knownRow = Dictionary((known?.itemIDs ?? []).enumerated().map { ($1, $0) }, uniquingKeysWith: { first, _ in first })
            let missing = catalog.filter { knownRow[$0.itemID] == nil && !refused.contains($0.itemID) }.map(\.itemID)
            let features = try await servableFeatures(missing, of: modality, model: model, refused: &refused)
            let fresh = GalleryEncoding.encode(features, of: modality, model: model)
            let freshRow = Dictionary(fresh.itemIDs.enumerated().map { ($1, $0) }, uniquingKeysWith: { first, _ in first })
            // Catalog order; an item whose features vanished in between is left out.
            let items = catalog.filter { knownRow[$0.itemID] != nil || freshRow[$0.itemID] != nil }
            let kept = items.compactMap { knownRow[$0.itemID] }
            let reusedPart = known.map { $0.rows(kept) }
            let joined = GalleryEncoding.concatenate([reusedPart, fresh].compactMap { $0 }, dimension: model.jointDimension,
                                                     withOffsets: fresh.offsets != nil)
            let joinedRow = Dictionary(joined.itemIDs.enumerated().map { ($1, $0) }, uniquingKeysWith: { first, _ in first })
            let encoding = fresh.count == 0 ? joined : joined.rows(items.map { joinedRow[$0.itemID]! })
            galleries[modality] = (items, encoding)
            encoded += fresh.count
            reused += kept.count
            if let cache, let fingerprint, fresh.count > 0 || !cacheIsCurrent {
                do {
                    try cache.store(encoding, version: version, modality: modality, fingerprint: fingerprint)
                } catch {
                    logger.warning("cannot write the gallery cache; the next start encodes again", metadata: ["error": "\(error)"])
                }
            }
        }
        rejected.withLock { $0 = (version, refused) }
        unservable.withLock { $0 = nil }
        if let previous, encoded == 0, galleries[.image]?.items.count == previous.images.count, galleries[.text]?.items.count == previous.texts.count {
            return version
        }
        let images = galleries[.image]!, texts = galleries[.text]!
        install(SearchEngine(model: model, version: version, images: images, texts: texts, codesFrom: codesFrom))
        if let cache, previous == nil {
            // Keep this version's files and the previous serving version's (for a rollback).
            var keep: Set<Int64> = [version]
            if let old = last?.version { keep.insert(old) }
            cache.prune(keeping: keep)
        }
        lastLoaded.withLock { $0 = (version, fingerprint) }
        logger.info(previous == nil ? "serving model version" : "gallery grown", metadata: [
            "serve.version": "\(version)", "serve.images": "\(images.items.count)", "serve.texts": "\(texts.items.count)",
            "serve.encoded": "\(encoded)", "serve.reused": "\(reused)", "serve.from_cache": "\(fromCache)",
            "serve.seconds": "\(String(format: "%.1f", Date().timeIntervalSince(started)))",
        ])
        return version
    }

    /// The engine in service grown by the items the catalogs hold after its galleries' items, or
    /// nil when the catalogs changed otherwise (an item gone or arriving out of id order: the
    /// caller rebuilds). Items whose features cannot be served are left out and added to `refused`.
    private func appending(to previous: SearchEngine, catalogs: [Modality: [GalleryItem]], model: ServedModel,
                           refused: inout Set<Int64>) async throws -> (engine: SearchEngine, added: [Modality: GalleryEncoding])? {
        var additions: [Modality: (items: [GalleryItem], encoding: GalleryEncoding)] = [:]
        for modality in Modality.allCases {
            guard let catalog = catalogs[modality] else { return nil }
            let gallery = previous.gallery(modality)
            // The gallery's items must be the catalog's first ones, in order (refused ones aside).
            var matched = 0
            var tail: [GalleryItem] = []
            for item in catalog {
                if matched < gallery.count {
                    if gallery.item(at: matched).itemID == item.itemID { matched += 1 } else if !refused.contains(item.itemID) { return nil }
                } else if !refused.contains(item.itemID) {
                    tail.append(item)
                }
            }
            guard matched == gallery.count else { return nil }
            let features = try await servableFeatures(tail.map(\.itemID), of: modality, model: model, refused: &refused)
            let byID = Dictionary(tail.map { ($0.itemID, $0) }, uniquingKeysWith: { first, _ in first })
            let items = features.compactMap { byID[$0.itemID] }
            additions[modality] = (items, GalleryEncoding.encode(features, of: modality, model: model))
        }
        let empty = (items: [GalleryItem](), encoding: GalleryEncoding.empty(dimension: model.jointDimension, withOffsets: (model.querybank?.beta ?? 0) > 0))
        let engine = previous.adding(images: additions[.image] ?? empty, texts: additions[.text] ?? empty, codesFrom: codesFrom)
        return (engine, additions.mapValues(\.encoding))
    }

    /// The stored features of the items `ids` that `model` can serve. An item whose row did not
    /// come back (it did not decode: the store logged it; or it vanished), or whose features the
    /// model cannot take (written before today's checks, or by hand), joins `refused` and is
    /// logged once.
    private func servableFeatures(_ ids: [Int64], of modality: Modality, model: ServedModel,
                                  refused: inout Set<Int64>) async throws -> [(itemID: Int64, features: ItemFeatures)] {
        guard !ids.isEmpty, let store else { return [] }
        let stored = try await store.galleryFeatures(modality, ids: ids)
        let returned = Set(stored.map(\.itemID))
        for id in ids where !returned.contains(id) { refused.insert(id) }
        return stored.filter { entry in
            guard let problem = servingProblem(entry.features, of: modality, model: model) else { return true }
            refused.insert(entry.itemID)
            logger.error("item left out of the gallery: its stored features cannot be searched",
                         metadata: ["serve.item_id": "\(entry.itemID)", "serve.modality": "\(modality.rawValue)", "error": "\(problem)"])
            return false
        }
    }

    /// Why `features` cannot join the gallery of `modality` under `model`, or nil.
    func servingProblem(_ features: ItemFeatures, of modality: Modality, model: ServedModel) -> FeatureProblem? {
        let (global, fragment) = model.featureDimensions(modality)
        guard features.global.count == global, fragment.map({ features.localDimension == $0 }) ?? true else {
            return FeatureProblem(field: "features", message: "features of \(features.global.count) + n×\(features.localDimension); the model takes \(global) + n×\(fragment.map(String.init) ?? "any")")
        }
        return features.problem(under: limits.features, modality: modality, field: "features")
    }

    /// The model's fingerprint for the gallery cache (nil without a cache).
    private func galleryCacheFingerprint(_ model: ServedModel) -> String? {
        guard cache != nil, let bytes = try? model.encoded() else { return nil }
        return GalleryCache.fingerprint(bytes)
    }

    /// The features of a text as the text encoder makes them (token vectors and the sentence
    /// vector), truncated to the most fragments a text may have.
    public func features(of text: String, encoder: MiniLMEncoder) -> ItemFeatures {
        let encoding = encoder.encode(text)
        let tokens = min(encoding.tokenVectors.shape[0], limits.features.maximumTextFragments)
        let width = encoding.tokenVectors.shape[1]
        return ItemFeatures(global: encoding.sentenceVector.scalars, local: Array(encoding.tokenVectors.scalars.prefix(tokens * width)),
                            localCount: tokens)
    }

    /// The features of a decoded photo as the image encoder makes them.
    /// - Throws: ``APIError`` 503 naming `field` without the image encoder.
    public func imageFeatures(_ image: RGBImage, field: String) throws -> ItemFeatures {
        guard let imageEncoder else {
            throw APIError(503, "the image encoder is not loaded; run ops/setup (it fetches its weights) and restart", field: field, retryAfter: 60)
        }
        let encoding = imageEncoder.encode(image)
        let local = encoding.localVectors
        let cells = min(local.shape[0], limits.features.maximumImageFragments)
        return ItemFeatures(global: encoding.globalVector.scalars, local: Array(local.scalars.prefix(cells * local.shape[1])),
                            localCount: cells)
    }

    /// Answers a checked search on the current engine.
    /// - Throws: ``APIError`` (503 without a model or a text encoder, 404 for an unknown item).
    public func search(_ request: SearchRequest) throws -> SearchResponse {
        guard let engine else { throw APIError(503, "no model is loaded yet; promote one (amber models promote) and retry", retryAfter: 5) }
        let started = Date()
        let model = engine.model
        let search = try ValidatedSearch(request, limits: limits) { model.featureDimensions($0) }
        /// Whether encoder-made features fit the model (a model trained on other encoders' features does not).
        func fits(_ features: ItemFeatures, _ modality: Modality) -> Bool {
            let (global, fragment) = model.featureDimensions(modality)
            return features.global.count == global && fragment.map { features.local.count == features.localCount * $0 } ?? true
        }
        let hits: [SearchHit]
        let target: Modality
        let described: String
        switch search.query {
        case .text(let text):
            guard let textEncoder else {
                throw APIError(503, "the text encoder is not loaded; run ops/setup (it fetches its weights) and restart", field: "text", retryAfter: 60)
            }
            let features = self.features(of: text, encoder: textEncoder)
            guard fits(features, .text) else {
                throw APIError(503, "the text encoder's vectors (\(features.global.count)) do not match the model's text features (\(model.featureDimensions(.text).global))",
                               field: "text", retryAfter: 60)
            }
            target = .image
            hits = engine.search(features, of: .text, options: search.options)
            described = "text"
        case .item(let itemID):
            let modality: Modality
            let position: Int
            if let p = engine.images.position(of: itemID) {
                (modality, position) = (.image, p)
            } else if let p = engine.texts.position(of: itemID) {
                (modality, position) = (.text, p)
            } else {
                throw APIError(404, "item_id \(itemID) is not in the gallery (an item needs features to be searchable)", field: "item_id")
            }
            if let wanted = search.target, wanted == modality {
                throw APIError.badRequest("target", "item \(itemID) is an \(modality.rawValue); it searches the \(modality.other.rawValue) gallery")
            }
            target = modality.other
            hits = engine.search(itemAt: position, of: modality, options: search.options)
            described = "item \(itemID) (\(modality.rawValue))"
        case .features(let features, let modality):
            target = modality.other
            hits = engine.search(features, of: modality, options: search.options)
            described = "features (\(modality.rawValue))"
        case .image(let image):
            let features = try imageFeatures(image, field: "image")
            guard fits(features, .image) else {
                throw APIError(503, "the image encoder's vectors (\(features.global.count)) do not match the model's image features (\(model.featureDimensions(.image).global))",
                               field: "image", retryAfter: 60)
            }
            if search.target == .image {
                target = .image
                hits = engine.searchSameModality(features, of: .image, options: search.options)
                described = "image (image gallery, global stage)"
            } else {
                target = .text
                hits = engine.search(features, of: .image, options: search.options)
                described = "image"
            }
        }
        let reranked = hits.contains { $0.local != nil }
        return SearchResponse(
            modelVersion: engine.version, target: target.rawValue, query: described,
            results: hits.map { SearchResponse.Result(itemID: $0.item.itemID, externalID: $0.item.externalID, caption: $0.item.caption,
                                                      global: $0.global, local: $0.local, fused: $0.fused, labels: $0.item.labels) },
            tookMilliseconds: Date().timeIntervalSince(started) * 1000,
            stageTwo: reranked ? model.localStage?.scorer.kind.rawValue ?? "none" : "none")
    }
}

/// A promoted model version whose file cannot be served (it does not decode, or its
/// configuration or parameters are out of bounds).
public struct UnservableModelError: Error, CustomStringConvertible {
    public let version: Int64
    public let problem: String

    public init(version: Int64, problem: String) {
        self.version = version
        self.problem = problem
    }

    public var description: String { "model version \(version) cannot be served: \(problem)" }

    /// The model of a stored file, checked for serving.
    /// - Throws: ``UnservableModelError``.
    public static func check(_ bytes: [UInt8], version: Int64) throws -> ServedModel {
        do {
            return try ServedModel.read(bytes: bytes, name: "model version \(version)")
        } catch {
            throw UnservableModelError(version: version, problem: "\(error)")
        }
    }
}
