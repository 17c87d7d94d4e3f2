import AmberCatalog
import AmberModel
import AmberSearch
import AmberServer
import AmberTensor
import AmberTrain
import Foundation
import Testing

/// A label-supervised (DRCL) model served like the matching model: its networks encode the
/// galleries and the queries, search answers with the global stage, results carry labels.
@Suite("Serving a label-supervised model")
struct LabelServingTests {
    static let classes = 3, perClass = 16

    /// Images and texts of 3 categories (global vectors around a centre per class, in different
    /// spaces; 2 local vectors each, which a label model does not read), and the same data as a
    /// labelled set.
    static func catalogue() -> (items: [NewItem], data: LabelledData) {
        var generator = RandomGenerator(seed: 11)
        let imageCentres = Tensor.randomNormal([classes, 6], standardDeviation: 2, using: &generator)
        let textCentres = Tensor.randomNormal([classes, 4], standardDeviation: 2, using: &generator)
        let count = classes * perClass
        let labels = (0..<count).map { [$0 % classes] }
        let imageGlobals = imageCentres.indexSelect(labels.map { $0[0] }) + Tensor.randomNormal([count, 6], standardDeviation: 0.7, using: &generator)
        let textGlobals = textCentres.indexSelect(labels.map { $0[0] }) + Tensor.randomNormal([count, 4], standardDeviation: 0.7, using: &generator)
        var items: [NewItem] = []
        for k in 0..<count {
            let local = Tensor.randomNormal([2, 3], using: &generator).scalars
            items.append(NewItem(modality: .image, externalID: "img\(k)", caption: nil,
                                 features: ItemFeatures(global: imageGlobals.slice(axis: 0, k ..< k + 1).scalars, local: local, localCount: 2),
                                 labels: ["class\(k % classes)"]))
            items.append(NewItem(modality: .text, externalID: "txt\(k)", caption: "text \(k)",
                                 features: ItemFeatures(global: textGlobals.slice(axis: 0, k ..< k + 1).scalars, local: local, localCount: 2),
                                 labels: ["class\(k % classes)"]))
        }
        let data = LabelledData(items: [.image: LabelledItems(features: imageGlobals, labels: labels),
                                        .text: LabelledItems(features: textGlobals, labels: labels)], classCount: classes)
        return (items, data)
    }

    static func trainer(seed: UInt64 = 1) -> LabelTrainer {
        var c = LabelTrainer.Configuration()
        c.network = LabelEncoder.Configuration(hidden: [16], output: 8)
        (c.priorEpochs, c.epochs, c.batchSize, c.seed) = (30, 60, 16, seed)
        (c.priorLearningRate, c.imageLearningRate, c.textLearningRate) = (5e-3, 5e-3, 5e-3)
        let (train, validation) = catalogue().data.split(validationShare: 0.25, seed: 0)
        return LabelTrainer(configuration: c, train: train, validation: validation)
    }

    /// The model of seed 1, trained once for every test of the suite (they run in parallel with
    /// the rest of the suite's tests; one training keeps the machine free for their requests).
    static let seedOne: LabelSupervisedModel = {
        do { return try trainer().run([.image, .text]) } catch { fatalError("training the fixture model failed: \(error)") }
    }()

    static func serve(_ model: LabelSupervisedModel) async throws -> (QueryService, InMemoryServingStore, Int64) {
        let store = InMemoryServingStore()
        _ = try await store.addItems(catalogue().items)
        let version = store.addModel(try model.encoded(), step: 0)
        try await store.promote(version)
        let service = QueryService(store: store, textEncoder: nil)
        try await service.reload()
        return (service, store, version)
    }

    @Test(arguments: Transport.allCases)
    func searchUsesEachModalitysNetworkAndOnlyTheGlobalStage(transport: Transport) async throws {
        let model = Self.seedOne
        #expect((model.metrics?.mean ?? 0) > 0.9, "validation \(String(describing: model.metrics))")
        let (service, _, version) = try await Self.serve(model)
        let engine = try #require(service.engine)
        #expect(engine.version == version && engine.images.count == 48 && engine.texts.count == 48)
        // The gallery holds exactly what the label model's image network makes of the stored globals.
        let expected = model.encoders[.image]!.embed(Self.catalogue().data.items[.image]!.features)
        #expect(Tensor(shape: [48, 8], scalars: engine.images.encoding.fused).isApproximatelyEqual(to: expected, tolerance: 1e-5))
        #expect(engine.images.encoding.fragments.isEmpty, "no fragments are kept for a model without a local stage")
        try await withTransport(transport, service) { send in
            // A text item searches the images with the global stage only: no local score.
            let textID = try #require(engine.texts.item(at: 0).itemID)
            let response = try await send("POST", "/v1/search", #"{"item_id": \#(textID), "k": 5, "rerank": 3, "alpha": 0.5}"#, [:])
            #expect(response.status == 200, "\(response.body)")
            let results = (try JSONSerialization.jsonObject(with: Data(response.body.utf8)) as? [String: Any])?["results"] as? [[String: Any]] ?? []
            #expect(results.count == 5 && results.allSatisfy { $0["local"] == nil }, "\(response.body)")
            // The same ranking as the engine's (stage 2 asked for, but the model has none), with each item's labels.
            let direct = engine.search(itemAt: 0, of: .text, options: SearchOptions(k: 5, rerank: 3, alpha: 0.5))
            #expect(results.map { Int64($0["item_id"] as? Int ?? 0) } == direct.map(\.item.itemID))
            #expect(results.map { $0["labels"] as? [String] ?? [] } == direct.map(\.item.labels) && direct.allSatisfy { $0.item.labels.count == 1 })
            // Features queries need the model's global dimension; local vectors of any width are taken.
            let features = #"{"features": {"global": [1, 2, 3, 4], "local": [[1, 2, 3, 4, 5], [1, 2, 3, 4, 5]]}, "target": "image", "k": 3}"#
            #expect(try await send("POST", "/v1/search", features, [:]).status == 200)
            let wrong = #"{"features": {"global": [1, 2, 3], "local": [[1], [2]]}, "target": "image"}"#
            let refused = try await send("POST", "/v1/search", wrong, [:])
            #expect(refused.status == 400 && refused.body.contains("features.global"), "\(refused.body)")
        }
        // Cross-modal retrieval by category on the served galleries.
        var hits = 0
        for position in 0..<engine.texts.count {
            let top = engine.search(itemAt: position, of: .text, options: SearchOptions(k: 1, rerank: 0))
            hits += top.first?.item.labels == engine.texts.item(at: position).labels ? 1 : 0
        }
        #expect(hits >= 42, "\(hits) of 48 texts find an image of their class first")
    }

    /// DRCL's promise in the service: retraining (or adding) the text side leaves the image
    /// network, so the image gallery's vectors and the image searches stay as they were.
    @Test func aTextSideTrainedLaterLeavesTheImageGalleryAndItsSearchesUnchanged() async throws {
        let first = Self.seedOne
        let later = try Self.trainer(seed: 2).run([.text], existing: first)
        #expect(later.encoders[.text]!.output.value.scalars != first.encoders[.text]!.output.value.scalars, "the text side changed")
        let (before, _, _) = try await Self.serve(first)
        let (after, _, _) = try await Self.serve(later)
        let a = try #require(before.engine), b = try #require(after.engine)
        #expect(a.images.encoding.fused == b.images.encoding.fused)
        let query = Self.catalogue().items[0].features
        let options = SearchOptions(k: 10, rerank: 0)
        #expect(a.searchSameModality(query, of: .image, options: options).map(\.item.itemID)
                == b.searchSameModality(query, of: .image, options: options).map(\.item.itemID))
        #expect(a.searchSameModality(query, of: .image, options: options).map(\.global)
                == b.searchSameModality(query, of: .image, options: options).map(\.global))
    }

    /// Labels given later to stored items reach the served results without encoding anything again.
    @Test func labelsAddedToStoredItemsReachTheServedItems() async throws {
        let model = Self.seedOne
        let (service, store, _) = try await Self.serve(model)
        let before = try #require(service.engine)
        var relabelled = Self.catalogue().items[0]
        relabelled.labels = ["class0", "favourite"]
        _ = try await store.addItems([relabelled])
        try await service.reload()
        let after = try #require(service.engine)
        let position = try #require(after.images.position(of: before.images.item(at: 0).itemID))
        #expect(after.images.item(at: position).labels == ["class0", "favourite"])
        #expect(after.images.encoding.fused == before.images.encoding.fused, "nothing encoded again")
        #expect(before.images.item(at: 0).labels == ["class0"], "an engine a query holds is not changed under it")
    }

    @Test func aModelWithOneNetworkIsNotPromoted() async throws {
        let imageOnly = try Self.trainer().run([.image])
        let store = InMemoryServingStore()
        let version = store.addModel(try imageOnly.encoded(), step: 0)
        await #expect(throws: UnservableModelError.self) { try await store.promote(version) }
        do { _ = try UnservableModelError.check(try imageOnly.encoded(), version: version) } catch let error as UnservableModelError {
            #expect(error.problem.contains("without a text network"), "\(error.problem)")
        }
    }
}
