import AmberCatalog
import AmberModel
import AmberTensor
import Foundation

// Shape legend: `G` gallery items, `n_i` fragments of item `i` (ragged in the gallery, padded to
// the widest of a batch), `D` joint dimension, `c` stage-2 candidates.

/// An item of a gallery as the caller knows it.
public struct GalleryItem: Sendable, Equatable {
    public var itemID: Int64
    public var externalID: String
    /// The caption, for texts.
    public var caption: String?
    /// The item's categories, sorted.
    public var labels: [String]

    public init(itemID: Int64, externalID: String, caption: String?, labels: [String] = []) {
        self.itemID = itemID
        self.externalID = externalID
        self.caption = caption
        self.labels = labels
    }
}

/// One modality's items encoded by one model: the stage-1 index (fused embeddings, querybank
/// offsets, sign-bit codes for large galleries) and the projected fragments stage 2 needs.
///
/// Immutable: ``adding(_:encoding:withCodes:)`` returns a larger gallery that shares this one's
/// items, rows, codes and fragments (nothing of them is copied while the buffers have room).
public final class EncodedModalityGallery: @unchecked Sendable {
    public let modality: Modality
    public let index: GalleryIndex
    /// Items in this gallery.
    public let count: Int
    private let itemStore: AppendableBuffer<GalleryItem>
    /// `[F, D]` projected fragments, item after item (ragged); item `i` has rows
    /// `fragmentStarts[i] ..< fragmentStarts[i + 1]`.
    private let fragments: AppendableBuffer<Float>
    private let counts: AppendableBuffer<Int>
    /// `G + 1` values: the first fragment row of each item, then `F`.
    private let starts: AppendableBuffer<Int>
    private let positions: PositionTable

    init(modality: Modality, items: [GalleryItem], index: GalleryIndex, encoding: GalleryEncoding) {
        let reserve = max(items.count / 2, 1024)
        self.modality = modality
        self.index = index
        count = items.count
        itemStore = AppendableBuffer(items, reserve: reserve)
        let fragmentRows = encoding.fragmentCounts.reduce(0, +)
        fragments = AppendableBuffer(encoding.fragments, reserve: (fragmentRows / max(items.count, 1) + 1) * reserve * encoding.dimension)
        counts = AppendableBuffer(encoding.fragmentCounts, reserve: reserve)
        starts = AppendableBuffer(encoding.fragmentStarts, reserve: reserve)
        positions = PositionTable(items.map(\.itemID))
    }

    private init(modality: Modality, index: GalleryIndex, count: Int, items: AppendableBuffer<GalleryItem>, fragments: AppendableBuffer<Float>,
                 counts: AppendableBuffer<Int>, starts: AppendableBuffer<Int>, positions: PositionTable) {
        self.modality = modality
        self.index = index
        self.count = count
        itemStore = items
        self.fragments = fragments
        self.counts = counts
        self.starts = starts
        self.positions = positions
    }

    /// This gallery followed by `items`, whose encoding (same model) is `encoding`; with
    /// `withCodes`, the index has sign-bit codes (built once when this one had none).
    public func adding(_ items: [GalleryItem], encoding: GalleryEncoding, withCodes: Bool) -> EncodedModalityGallery {
        precondition(items.map(\.itemID) == encoding.itemIDs && encoding.dimension == index.dimension,
                     "EncodedModalityGallery.adding: the items and their encoding differ")
        var grown = index.adding(itemIDs: encoding.itemIDs, embeddings: encoding.fused, offsets: encoding.offsets)
        if withCodes { grown = grown.withCodes() }
        let fragmentRows = starts[count]
        let newStarts = encoding.fragmentStarts.dropFirst().map { $0 + fragmentRows }
        let itemBuffer = itemStore.appending(items, toViewOf: count)
        // The ids' positions are shared along one line of growth; a gallery grown from an older
        // view starts a table of its own.
        let table = itemBuffer === itemStore ? positions : positions.copy(below: count)
        table.add(items.map(\.itemID), from: count)
        return EncodedModalityGallery(
            modality: modality, index: grown, count: count + items.count, items: itemBuffer,
            fragments: fragments.appending(encoding.fragments, toViewOf: fragmentRows * index.dimension),
            counts: counts.appending(encoding.fragmentCounts, toViewOf: count),
            starts: starts.appending(newStarts, toViewOf: count + 1), positions: table)
    }

    /// This gallery with its items' descriptions (caption, labels) taken from `catalog` where an
    /// item with the same id differs; nil when none does. `catalog` lists the gallery's items in
    /// gallery order (it may hold others between and after them: items left out, new ones), so
    /// one walk compares them. Rows, codes and fragments are shared.
    public func updatingItems(from catalog: [GalleryItem]) -> EncodedModalityGallery? {
        var changed: [(position: Int, item: GalleryItem)] = []
        var position = 0
        for item in catalog where position < count && itemStore[position].itemID == item.itemID {
            if itemStore[position] != item { changed.append((position, item)) }
            position += 1
        }
        guard !changed.isEmpty else { return nil }
        var current = items
        for (position, item) in changed { current[position] = item }
        return EncodedModalityGallery(modality: modality, index: index, count: count,
                                      items: AppendableBuffer(current, reserve: max(count / 2, 1024)), fragments: fragments,
                                      counts: counts, starts: starts, positions: positions.copy(below: count))
    }

    /// The item at `position`.
    public func item(at position: Int) -> GalleryItem { itemStore[position] }

    /// Every item, in gallery order (a copy).
    public var items: [GalleryItem] { itemStore.array(count) }

    /// Fragments of the item at `position`.
    func fragmentCount(at position: Int) -> Int { counts[position] }

    /// The fragments of the items at `positions`, zero-padded to the widest: `[c, max n_i, D]`.
    func paddedFragments(_ positions: [Int]) -> Tensor {
        let D = index.dimension
        return Tensor.padded(counts: positions.map { counts[$0] }, rowWidth: D, minimumLength: 1) { item, row in
            row.update(from: fragments.base + starts[positions[item]] * D, count: counts[positions[item]] * D)
        }
    }

    /// The position of the item with store id `itemID`, if it is in the gallery.
    public func position(of itemID: Int64) -> Int? { positions.position(of: itemID, below: count) }

    /// Every item's encoding, in gallery order (a copy; to reuse them in a rebuilt gallery).
    public var encoding: GalleryEncoding {
        let D = index.dimension
        var fused = [Float](); fused.reserveCapacity(count * D)
        for p in 0..<count { fused += index.embedding(at: p) }
        return GalleryEncoding(itemIDs: items.map(\.itemID), fused: fused,
                               offsets: index.hasOffsets ? (0..<count).map { index.offset(at: $0) } : nil,
                               fragments: fragments.array(starts[count] * D), fragmentCounts: counts.array(count), dimension: D)
    }
}

/// How one query is ranked.
public struct SearchOptions: Sendable, Equatable {
    /// Results returned.
    public var k: Int
    /// Stage-1 candidates re-ranked by stage 2 (0: stage 2 off).
    public var rerank: Int
    /// Weight of the global score in the fused stage-2 score (nil: the model's).
    public var alpha: Float?
    /// Binary-prefilter candidates for stage 1 (nil: exact scan).
    public var prefilter: Int?

    public init(k: Int = 10, rerank: Int = 32, alpha: Float? = nil, prefilter: Int? = nil) {
        self.k = k
        self.rerank = rerank
        self.alpha = alpha
        self.prefilter = prefilter
    }
}

/// One ranked result.
public struct SearchHit: Sendable, Equatable {
    public var item: GalleryItem
    /// Stage-1 score (fused embeddings, querybank-corrected when the model has it).
    public var global: Float
    /// Stage-2 local alignment score, for re-ranked candidates.
    public var local: Float?
    /// The score the ranking used: `α·global + (1−α)·local` for re-ranked candidates, else `global`.
    public var fused: Float
}

/// Two-stage search over the galleries of both modalities with one trained model:
/// encode the query → stage 1 on the target gallery (exact or binary prefilter, querybank
/// offsets) → stage 2 re-scores the top `rerank` with the local alignment, fused with stage 1.
public final class SearchEngine: @unchecked Sendable {
    public let model: ServedModel
    /// The model version the galleries were encoded with.
    public let version: Int64
    public let images: EncodedModalityGallery
    public let texts: EncodedModalityGallery

    /// Encodes both galleries with `model` (in chunks of `chunkSize` items).
    /// - Parameters:
    ///   - images, texts: the items and their features, in the same order.
    ///   - codesFrom: galleries of at least this many items also get sign-bit codes.
    public convenience init(model: ServedModel, version: Int64, images: [(GalleryItem, ItemFeatures)], texts: [(GalleryItem, ItemFeatures)],
                            codesFrom: Int = 100_000, chunkSize: Int = 256) {
        func encode(_ modality: Modality, _ entries: [(GalleryItem, ItemFeatures)]) -> GalleryEncoding {
            GalleryEncoding.encode(entries.map { ($0.0.itemID, $0.1) }, of: modality, model: model, chunkSize: chunkSize)
        }
        self.init(model: model, version: version, images: (images.map(\.0), encode(.image, images)),
                  texts: (texts.map(\.0), encode(.text, texts)), codesFrom: codesFrom)
    }

    /// Builds the engine over galleries already encoded with `model` (`items[i]` is row `i` of
    /// its encoding).
    public init(model: ServedModel, version: Int64, images: (items: [GalleryItem], encoding: GalleryEncoding),
                texts: (items: [GalleryItem], encoding: GalleryEncoding), codesFrom: Int = 100_000) {
        self.model = model
        self.version = version
        func gallery(_ modality: Modality, _ items: [GalleryItem], _ encoding: GalleryEncoding) -> EncodedModalityGallery {
            precondition(items.map(\.itemID) == encoding.itemIDs, "SearchEngine: the \(modality.rawValue) items and their encoding differ")
            let index = GalleryIndex(itemIDs: encoding.itemIDs, embeddings: encoding.fused, dimension: encoding.dimension,
                                     offsets: encoding.offsets, withCodes: items.count >= codesFrom)
            return EncodedModalityGallery(modality: modality, items: items, index: index, encoding: encoding)
        }
        self.images = gallery(.image, images.items, images.encoding)
        self.texts = gallery(.text, texts.items, texts.encoding)
    }

    /// The engine of a matching model.
    public convenience init(model: TrainedModel, version: Int64, images: [(GalleryItem, ItemFeatures)], texts: [(GalleryItem, ItemFeatures)],
                            codesFrom: Int = 100_000, chunkSize: Int = 256) {
        self.init(model: .matching(model), version: version, images: images, texts: texts, codesFrom: codesFrom, chunkSize: chunkSize)
    }

    /// The engine of a matching model over galleries already encoded with it.
    public convenience init(model: TrainedModel, version: Int64, images: (items: [GalleryItem], encoding: GalleryEncoding),
                            texts: (items: [GalleryItem], encoding: GalleryEncoding), codesFrom: Int = 100_000) {
        self.init(model: .matching(model), version: version, images: images, texts: texts, codesFrom: codesFrom)
    }

    private init(model: ServedModel, version: Int64, images: EncodedModalityGallery, texts: EncodedModalityGallery) {
        self.model = model
        self.version = version
        self.images = images
        self.texts = texts
    }

    /// This engine with `images` and `texts` (encoded with the same model) added at the end of
    /// their galleries; a gallery that reaches `codesFrom` items gets sign-bit codes. Nothing
    /// already in the galleries is copied or encoded again (see ``EncodedModalityGallery``).
    public func adding(images newImages: (items: [GalleryItem], encoding: GalleryEncoding),
                       texts newTexts: (items: [GalleryItem], encoding: GalleryEncoding), codesFrom: Int = 100_000) -> SearchEngine {
        func grow(_ gallery: EncodedModalityGallery, _ added: (items: [GalleryItem], encoding: GalleryEncoding)) -> EncodedModalityGallery {
            guard !added.items.isEmpty else { return gallery }
            return gallery.adding(added.items, encoding: added.encoding, withCodes: gallery.count + added.items.count >= codesFrom)
        }
        return SearchEngine(model: model, version: version, images: grow(images, newImages), texts: grow(texts, newTexts))
    }

    /// The gallery of `modality`.
    public func gallery(_ modality: Modality) -> EncodedModalityGallery { modality == .image ? images : texts }

    /// This engine with its items' descriptions (labels, captions) as `catalogs` has them now;
    /// nil when nothing changed. Nothing is encoded again.
    public func updatingItems(from catalogs: [Modality: [GalleryItem]]) -> SearchEngine? {
        func fresh(_ modality: Modality) -> EncodedModalityGallery? { gallery(modality).updatingItems(from: catalogs[modality] ?? []) }
        let newImages = fresh(.image), newTexts = fresh(.text)
        guard newImages != nil || newTexts != nil else { return nil }
        return SearchEngine(model: model, version: version, images: newImages ?? images, texts: newTexts ?? texts)
    }

    /// Ranks the gallery of the other modality for a query of `modality` given by its features.
    public func search(_ query: ItemFeatures, of modality: Modality, options: SearchOptions) -> [SearchHit] {
        let encoded = model.encode(modality, [query])
        return search(fused: encoded.fused.scalars, fragments: { encoded.fragments?.slice(axis: 1, 0..<query.localCount) },
                      of: modality, options: options)
    }

    /// Ranks the gallery of the query's own modality (an image for similar images) by the
    /// global stage: the joint embedding's cosine. The local re-rank aligns texts with images
    /// and has no same-modality form, so there is none.
    public func searchSameModality(_ query: ItemFeatures, of modality: Modality, options: SearchOptions) -> [SearchHit] {
        let encoded = model.encode(modality, [query])
        let gallery = gallery(modality)
        return gallery.index.search(encoded.fused.scalars, k: options.k, prefilter: options.prefilter).map {
            SearchHit(item: gallery.item(at: $0.position), global: $0.score, local: nil, fused: $0.score)
        }
    }

    /// Ranks the gallery of the other modality for a gallery item as the query (its stored
    /// embedding and fragments; no re-encoding).
    public func search(itemAt position: Int, of modality: Modality, options: SearchOptions) -> [SearchHit] {
        let source = gallery(modality)
        return search(fused: source.index.embedding(at: position), fragments: { source.paddedFragments([position]) },
                      of: modality, options: options)
    }

    /// - Parameters: `fused` `[D]`, `fragments` `[1, m, D]` (real rows only; asked for only when
    ///   stage 2 runs, and nil from a model without a local stage).
    private func search(fused: [Float], fragments: () -> Tensor?, of modality: Modality, options: SearchOptions) -> [SearchHit] {
        let gallery = gallery(modality.other)
        let depth = options.rerank > 0 ? min(options.rerank, gallery.count) : 0
        let stage = model.localStage
        let alpha = options.alpha ?? stage?.ranking.alpha ?? 1
        let first = gallery.index.search(fused, k: max(options.k, depth), prefilter: options.prefilter)
        guard depth > 0, alpha < 1, let scorer = stage?.scorer, let queryFragments = fragments() else {
            return first.prefix(options.k).map { SearchHit(item: gallery.item(at: $0.position), global: $0.score, local: nil, fused: $0.score) }
        }
        let queryCount = queryFragments.shape[1]
        let D = queryFragments.shape[2]
        // Stage 2 on the top `depth`: scores are defined (image, text) either way round.
        let candidates = Array(first.prefix(depth))
        let positions = candidates.map(\.position)
        let local: [Float]
        if modality == .text {
            local = scorer.scores(imageFragments: gallery.paddedFragments(positions), imageCounts: positions.map { gallery.fragmentCount(at: $0) },
                                  textFragments: queryFragments, textCounts: [queryCount],
                                  textFused: Tensor(shape: [1, fused.count], scalars: fused)).scalars
        } else {
            let texts = Tensor(shape: [positions.count, D], scalars: positions.flatMap { gallery.index.embedding(at: $0) })
            local = scorer.scores(imageFragments: queryFragments, imageCounts: [queryCount],
                                  textFragments: gallery.paddedFragments(positions), textCounts: positions.map { gallery.fragmentCount(at: $0) },
                                  textFused: texts).scalars
        }
        let reranked = TwoStageRanking.fuse(candidates: positions, global: candidates.map(\.score), local: local, alpha: alpha).map { fused in
            SearchHit(item: gallery.item(at: positions[fused.slot]), global: candidates[fused.slot].score, local: local[fused.slot], fused: fused.score)
        }
        let rest = first.dropFirst(depth).map { SearchHit(item: gallery.item(at: $0.position), global: $0.score, local: nil, fused: $0.score) }
        return Array((reranked + rest).prefix(options.k))
    }
}
