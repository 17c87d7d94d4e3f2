import AmberCatalog
import AmberModel
import AmberSearch
import Foundation
import Synchronization

/// A ``ServingStore`` in memory, with the PostgreSQL store's rules (the contract suite runs both):
/// items are unique per modality and external id and keep what they were first stored with; the
/// first items with features fix each modality's dimensions; a write that breaks a rule names the
/// entry and changes nothing; pairs name stored items and are unique; model versions are
/// candidates until promoted, one promoted at a time, and a version is promoted only if its file
/// can be served. It keeps no feedback (``addFeedback(_:)`` answers 503) and no training runs (the
/// bank summary is empty). For tests, demos and experiments without a database.
public final class InMemoryServingStore: ServingStore {
    private struct Item {
        var itemID: Int64
        var modality: Modality
        var externalID: String
        var caption: String?
        var features: ItemFeatures
        var thumbnail: StoredImage?
        var labels: Set<String> = []
    }

    private struct Model {
        var version: ModelVersion
        var bytes: [UInt8]
    }

    private struct State {
        var items: [Item] = []
        var itemIndex: [String: Int] = [:]          // "modality/externalID" → position in items
        var dimensions: [Modality: (global: Int, local: Int)] = [:]
        var pairs: [String: NewPair] = [:]           // "imageID/textID" (item ids) → the pair as first stored
        var models: [Model] = []
        var serving: Int64?
        var nextItemID: Int64 = 1

        static func key(_ modality: Modality, _ externalID: String) -> String { modality.rawValue + "/" + externalID }
    }

    private let state = Mutex(State())

    public init() {}

    public func servingModel() async throws -> (version: Int64, model: ServedModel)? {
        guard let (version, bytes) = state.withLock({ state -> (Int64, [UInt8])? in
            guard let serving = state.serving, let model = state.models.first(where: { $0.version.version == serving }) else { return nil }
            return (serving, model.bytes)
        }) else { return nil }
        return (version, try UnservableModelError.check(bytes, version: version))
    }

    public func galleryCatalog(_ modality: Modality) async throws -> [GalleryItem] {
        state.withLock { state in
            state.items.filter { $0.modality == modality }.map {
                GalleryItem(itemID: $0.itemID, externalID: $0.externalID, caption: $0.caption, labels: $0.labels.sorted())
            }
        }
    }

    public func galleryFeatures(_ modality: Modality, ids: [Int64]) async throws -> [(itemID: Int64, features: ItemFeatures)] {
        let wanted = Set(ids)
        return state.withLock { state in
            state.items.filter { $0.modality == modality && wanted.contains($0.itemID) }.map { ($0.itemID, $0.features) }
        }
    }

    public func modelVersions(limit: Int) async throws -> [ModelVersion] {
        state.withLock { state in Array(state.models.map(\.version).sorted { $0.version > $1.version }.prefix(max(limit, 0))) }
    }

    /// Registers a model file (the bytes of a `TrainedModel`) as a new candidate version; returns its number.
    @discardableResult
    public func addModel(_ bytes: [UInt8], step: Int, rsum: Double? = nil, gate: String? = nil) -> Int64 {
        state.withLock { state in
            let version = (state.models.map(\.version.version).max() ?? 0) + 1
            state.models.append(Model(version: ModelVersion(version: version, parentVersion: nil, run: nil, step: step, status: "candidate",
                                                            rsum: rsum, gate: gate, createdAt: Date(), promotedAt: nil),
                                      bytes: bytes))
            return version
        }
    }

    /// Promotes `version` once its file is known to be servable.
    /// - Throws: ``UnservableModelError`` (nothing promoted), ``RegistryError`` for an unknown version.
    public func promote(_ version: Int64) async throws {
        guard let bytes = state.withLock({ $0.models.first { $0.version.version == version }?.bytes }) else {
            throw RegistryError(description: "model version \(version) does not exist (amber models list shows the versions)")
        }
        _ = try UnservableModelError.check(bytes, version: version)
        state.withLock { state in
            let now = Date()
            for index in state.models.indices {
                if state.models[index].version.version == version {
                    state.models[index].version.status = "promoted"
                    state.models[index].version.promotedAt = now
                } else if state.models[index].version.status == "promoted" {
                    state.models[index].version.status = "retired"
                }
            }
            state.serving = version
        }
    }

    public func bankSummary() async throws -> [BankSummary] { [] }

    public func addItems(_ items: [NewItem]) async throws -> (added: Int, existing: Int) {
        try state.withLock { state in
            var next = state          // written back only when every item passes
            var added = 0
            for (index, item) in items.enumerated() {
                let global = item.features.global.count, local = item.features.localDimension
                let known = next.dimensions[item.modality] ?? (global, local)
                next.dimensions[item.modality] = known
                guard known.global == global else {
                    throw ItemWriteError(field: "items[\(index)].features.global",
                                         description: "items[\(index)].features.global has \(global) values; stored \(item.modality.rawValue) features have \(known.global)")
                }
                guard known.local == local else {
                    throw ItemWriteError(field: "items[\(index)].features.local",
                                         description: "items[\(index)].features.local has vectors of \(local) values; stored \(item.modality.rawValue) features have \(known.local)")
                }
                let key = State.key(item.modality, item.externalID)
                if let stored = next.itemIndex[key] {
                    next.items[stored].labels.formUnion(item.labels)
                    continue
                }
                next.itemIndex[key] = next.items.count
                next.items.append(Item(itemID: next.nextItemID, modality: item.modality, externalID: item.externalID, caption: item.caption,
                                       features: item.features, thumbnail: item.modality == .image ? item.thumbnail : nil, labels: Set(item.labels)))
                next.nextItemID += 1
                added += 1
            }
            state = next
            return (added, items.count - added)
        }
    }

    public func addPairs(_ pairs: [NewPair]) async throws -> (added: Int, existing: Int) {
        try state.withLock { state in
            var next = state.pairs
            var added = 0
            for (index, pair) in pairs.enumerated() {
                guard let image = state.itemIndex[State.key(.image, pair.image)].map({ state.items[$0].itemID }) else {
                    throw ItemWriteError(field: "pairs[\(index)].image", description: "pairs[\(index)].image: no image with external id '\(pair.image)'")
                }
                guard let text = state.itemIndex[State.key(.text, pair.text)].map({ state.items[$0].itemID }) else {
                    throw ItemWriteError(field: "pairs[\(index)].text", description: "pairs[\(index)].text: no text with external id '\(pair.text)'")
                }
                let key = "\(image)/\(text)"
                guard next[key] == nil else { continue }
                next[key] = pair
                added += 1
            }
            state.pairs = next
            return (added, pairs.count - added)
        }
    }

    public func itemImage(_ itemID: Int64) async throws -> StoredImage? {
        state.withLock { state in state.items.first { $0.itemID == itemID }?.thumbnail }
    }

    /// The stored pairs (as first stored), in no particular order.
    public var pairs: [NewPair] { state.withLock { Array($0.pairs.values) } }
}
