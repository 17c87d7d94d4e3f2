import AmberCatalog
import AmberModel
import AmberTensor
import AmberTestSupport
import AmberTrain
import Foundation
import Testing

@Suite("Replay sampler")
struct ReplaySamplerTests {
    @Test func unseenPairsComeFirstOldestFirstAndReplayFillsTheRest() throws {
        var sampler = ReplaySampler(newShare: 0.5, seed: 3)
        #expect(sampler.next(size: 4) == nil, "no pairs, no batch")
        sampler.grow(by: 3)
        #expect(sampler.next(size: 4) == nil, "fewer pairs than a batch")
        sampler.grow(by: 5)
        // Nothing seen yet: the whole batch is new, oldest first.
        #expect(sampler.next(size: 4) == [0, 1, 2, 3])
        // Half new (the next oldest), half replay of 0...3, distinct.
        let drawn2 = sampler.next(size: 4)
        let second = try #require(drawn2)
        #expect(Array(second.prefix(2)) == [4, 5])
        #expect(Set(second.suffix(2)).count == 2 && second.suffix(2).allSatisfy { (0..<4).contains($0) })
        #expect(sampler.unseen == 6..<8)
        let drawn3 = sampler.next(size: 4)
        let third = try #require(drawn3)
        #expect(Array(third.prefix(2)) == [6, 7] && sampler.unseen.isEmpty)
        // All seen: pure replay, distinct within the batch.
        for _ in 0..<20 {
            let drawn = sampler.next(size: 4)
            let batch = try #require(drawn)
            #expect(Set(batch).count == 4 && batch.allSatisfy { (0..<8).contains($0) })
        }
    }

    @Test func everyPairIsTrainedOnWhateverTheShare() throws {
        for share in [0.1, 0.5, 1.0] {
            var sampler = ReplaySampler(newShare: share, seed: 1)
            var trained = Set<Int>()
            for arrival in 0..<30 {
                sampler.grow(by: arrival % 3 == 0 ? 7 : 0)
                if let batch = sampler.next(size: 5) { trained.formUnion(batch) }
            }
            while !sampler.unseen.isEmpty {
                let drawn = sampler.next(size: 5)
                trained.formUnion(try #require(drawn))
            }
            #expect(trained == Set(0..<sampler.count), "share \(share)")
        }
    }

    @Test func theStateRoundTripsAndTheSeedDecides() throws {
        var a = ReplaySampler(newShare: 0.25, seed: 9)
        a.grow(by: 40)
        for _ in 0..<5 { _ = a.next(size: 8) }
        var b = try MetadataJSON.decode(ReplaySampler.self, from: MetadataJSON.encode(a))
        #expect(a == b)
        #expect(a.next(size: 8) == b.next(size: 8))
        var c = ReplaySampler(newShare: 0.25, seed: 10)
        c.grow(by: 40)
        var d = ReplaySampler(newShare: 0.25, seed: 9)
        d.grow(by: 40)
        for _ in 0..<5 { _ = c.next(size: 8); _ = d.next(size: 8) }
        #expect(c.next(size: 8) != d.next(size: 8), "another seed replays other pairs")
    }
}

@Suite("Continuous trainer (in-memory store)")
struct ContinuousTrainerTests {
    /// Synthetic items: `images` images with 2 fragments (12-d), 5 texts each with 2 tokens
    /// (8-d), texts a noisy linear map of their image. Returns (image ids, [(image, text)]).
    static func populate(_ store: InMemoryTrainingStore, images: Int, seed: UInt64) -> [(image: Int64, text: Int64)] {
        var generator = RandomGenerator(seed: seed)
        var mapGenerator = RandomGenerator(seed: 77)
        let map = Tensor.randomNormal([12, 8], using: &mapGenerator)
        var pairs: [(Int64, Int64)] = []
        for _ in 0..<images {
            let global = Tensor.randomNormal([1, 12], using: &generator)
            let local = Tensor.concatenate([global, global + Tensor.randomNormal([1, 12], standardDeviation: 0.1, using: &generator)], axis: 0)
            let image = store.addItem(ItemFeatures(global: global.scalars, local: local.scalars, localCount: 2))
            for _ in 0..<5 {
                let text = Tensor.matmul(global, map) + Tensor.randomNormal([1, 8], standardDeviation: 0.5, using: &generator)
                let id = store.addItem(ItemFeatures(global: text.scalars, local: text.scalars + text.scalars, localCount: 2))
                pairs.append((image, id))
            }
        }
        return pairs
    }

    static var configuration: ContinuousTrainer.Configuration {
        var c = ContinuousTrainer.Configuration()
        c.model = MatchingTrainerTests.fullConfiguration
        c.model.optimization.decayEvery = 100_000
        c.checkpointEvery = 10
        c.evaluateEvery = 20
        c.keepCheckpoints = 2
        c.idleWait = 0.01
        c.retryDelay = 0.01
        c.pageSize = 40
        return c
    }

    /// Adds the first `trainImages` images' pairs as train and the rest as dev.
    static func store(trainImages: Int = 40, devImages: Int = 10) -> (InMemoryTrainingStore, [(image: Int64, text: Int64)]) {
        let store = InMemoryTrainingStore()
        let pairs = populate(store, images: trainImages + devImages, seed: 4)
        store.addPairs(pairs.prefix(trainImages * 5).map { ($0.image, $0.text, .train) })
        store.addPairs(pairs.suffix(devImages * 5).map { ($0.image, $0.text, .dev) })
        return (store, pairs)
    }

    @Test func hostileRowsAreSkippedAndTheRunTrainsOnAndResumes() throws {
        let store = InMemoryTrainingStore()
        // Accepted before today's checks (or written by hand): they come first, as new pairs do.
        let goodImage = store.addItem(ItemFeatures(global: [Float](repeating: 0.1, count: 12), local: [Float](repeating: 0.1, count: 24), localCount: 2))
        let oneFragment = store.addItem(ItemFeatures(global: [Float](repeating: 0.1, count: 8), local: [Float](repeating: 0.1, count: 8), localCount: 1))
        let huge = store.addItem(ItemFeatures(global: [Float](repeating: 3e38, count: 8), local: [Float](repeating: 0.1, count: 16), localCount: 2))
        let wide = store.addItem(ItemFeatures(global: [Float](repeating: 0.1, count: 9), local: [Float](repeating: 0.1, count: 18), localCount: 2))
        store.addPairs([(goodImage, oneFragment, .train), (goodImage, huge, .train), (goodImage, 999_999, .train)])
        let pairs = Self.populate(store, images: 50, seed: 4)
        store.addPairs(pairs.prefix(200).map { ($0.image, $0.text, .train) })
        store.addPairs([(goodImage, wide, .train)])          // other dimensions than the texts before it
        store.addPairs(pairs.suffix(50).map { ($0.image, $0.text, .dev) })
        var c = Self.configuration
        c.maximumSteps = 30
        var lines: [String] = []
        let trainer = ContinuousTrainer(configuration: c, store: store) { lines.append($0) }
        let summary = try trainer.run()
        #expect(summary.step == 30 && summary.trainPairs == 200 && summary.devPairs == 50)
        #expect(trainer.skippedPairs == 4)
        #expect(lines.filter { $0.hasPrefix("pair skipped") }.count == 4, "\(lines.filter { $0.hasPrefix("pair skipped") })")
        #expect(lines.contains { $0.contains("local has 1 vectors") } && lines.contains { $0.contains("|x| ≤") })
        // A restart resumes past them (same skips, same sampler) and trains on.
        c.maximumSteps = 40
        var again: [String] = []
        let resumed = try ContinuousTrainer(configuration: c, store: store) { again.append($0) }.run()
        #expect(resumed.step == 40 && resumed.trainPairs == 200)
        #expect(again.contains { $0.hasPrefix("resumed run") } && !again.contains { $0.contains("sampler starts over") })
    }

    @Test func aResumeOverAnotherPairSetRestartsTheSamplerAndEmptiesTheBank() throws {
        let (store, _) = Self.store()
        // Ten more train pairs whose texts have 5 tokens: accepted now, refused by stricter limits later.
        let image = store.addItem(ItemFeatures(global: [Float](repeating: 0.1, count: 12), local: [Float](repeating: 0.1, count: 24), localCount: 2))
        let long = (0..<10).map { i in store.addItem(ItemFeatures(global: [Float](repeating: Float(i) / 10, count: 8),
                                                                  local: [Float](repeating: 0.2, count: 40), localCount: 5)) }
        store.addPairs(long.map { (image, $0, .train) })
        var c = Self.configuration
        c.maximumSteps = 20
        let first = try ContinuousTrainer(configuration: c, store: store).run()
        #expect(first.trainPairs == 210)
        c.features.maximumTextFragments = 4
        c.maximumSteps = 40
        var lines: [String] = []
        let trainer = ContinuousTrainer(configuration: c, store: store) { lines.append($0) }
        let resumed = try trainer.run()
        #expect(resumed.step == 40 && resumed.trainPairs == 200 && trainer.skippedPairs == 10)
        #expect(lines.contains { $0.contains("the sampler starts over") }, "\(lines.prefix(5))")
        // The checkpoints after the resume hold bank slots of the new pair set only.
        let run = try #require(store.runs[1])
        #expect(run.lastStep == 40 && !run.bank.isEmpty)
    }

    @Test func trainsCheckpointsWritesVersionsAndPromotes() throws {
        let (store, _) = Self.store()
        var c = Self.configuration
        c.maximumSteps = 60
        var lines: [String] = []
        let summary = try ContinuousTrainer(configuration: c, store: store) { lines.append($0) }.run()
        #expect(summary.step == 60 && summary.committedStep == 60)
        #expect(summary.trainPairs == 200 && summary.devPairs == 50 && summary.cursor == 250)
        let run = try #require(store.runs[1])
        #expect(run.status == "stopped" && run.lastStep == 60)
        #expect(run.checkpoints.map(\.step) == [50, 60], "the newest two are kept")
        #expect(Set(run.steps.keys) == Set(1...60), "every step's losses are recorded once")
        #expect(run.steps.values.allSatisfy { $0.loss.isFinite && $0.terms["triplet"] != nil })
        #expect(run.checkpoints.last!.pendingPairs.isEmpty, "every train pair was trained on")
        // The bank holds the queues of the last checkpoint: 64 slots per modality, store ids.
        #expect(run.bank.count == 128)
        #expect(run.bank.values.allSatisfy { $0.embedding.count == 16 && $0.ambiguity != nil && $0.neighbourItemID != nil })
        #expect(run.bank.values.filter { $0.modality == .text }.allSatisfy { $0.pairID != nil && $0.imageID != $0.itemID })
        #expect(run.bank.values.filter { $0.modality == .image }.allSatisfy { $0.imageID == $0.itemID })
        // Slots carry the version of the checkpoint that wrote them; the last one wrote version 3.
        #expect(run.bank.values.allSatisfy { ($0.modelVersion ?? 0) <= 3 } && run.bank.values.contains { $0.modelVersion == 3 })
        #expect(run.checkpoints.last!.modelVersion == 3)
        // Versions at 20, 40, 60; the first is promoted (nothing served), the gate decides the rest.
        #expect(summary.versionsWritten == [1, 2, 3])
        #expect(summary.versionsPromoted.first == 1)
        #expect(store.serving == summary.versionsPromoted.last)
        let first = try #require(store.versions[1]).record
        let metrics = try MetadataJSON.decode(VersionMetrics.self, from: first.metrics)
        #expect(metrics.step == 20 && metrics.devPairs == 50 && metrics.gate == "promoted: nothing served yet")
        #expect(first.prototypes.count == 4 && first.prototypes.allSatisfy { $0.count == 16 })
        let model = try TrainedModel.read(bytes: first.model, name: "version 1")
        #expect(model.step == 20 && model.querybank != nil)
        #expect(lines.contains { $0.contains("model version 1") } && lines.contains { $0.hasPrefix("step     60") })
    }

    @Test func theGateRefusesAWorseModel() throws {
        let (store, _) = Self.store()
        var c = Self.configuration
        c.maximumSteps = 40
        c.promotionTolerance = -1000     // a candidate must beat the serving model by 1000 rsum
        let summary = try ContinuousTrainer(configuration: c, store: store).run()
        #expect(summary.versionsWritten == [1, 2] && summary.versionsPromoted == [1])
        let refused = try MetadataJSON.decode(VersionMetrics.self, from: try #require(store.versions[2]).record.metrics)
        #expect(refused.gate.hasPrefix("refused") && refused.servingVersion == 1 && refused.servingRsum != nil)
        #expect(store.serving == 1)
    }

    @Test func aRunResumedAfterACrashEndsExactlyWhereAnUninterruptedOneDoes() throws {
        var c = Self.configuration
        c.maximumSteps = 50
        c.evaluateEvery = 1000
        let (reference, _) = Self.store()
        _ = try ContinuousTrainer(configuration: c, store: reference).run()

        // The same run, crashing after its second checkpoint (step 20), then resumed.
        let (store, _) = Self.store()
        #expect(throws: CrashingStore<InMemoryTrainingStore>.Crash.self) {
            _ = try ContinuousTrainer(configuration: c, store: CrashingStore(store, afterCommits: 2)).run()
        }
        #expect(store.runs[1]!.lastStep == 20 && store.runs[1]!.status == "running")
        var lines: [String] = []
        let resumed = try ContinuousTrainer(configuration: c, store: store) { lines.append($0) }.run()
        #expect(lines.first?.hasPrefix("resumed run main at step 20") == true, "\(lines.first ?? "")")
        #expect(resumed.step == 50)
        let a = reference.runs[1]!, b = store.runs[1]!
        #expect(Data(a.checkpoints.last!.state) == Data(b.checkpoints.last!.state), "same parameters, optimiser, queues and generators")
        #expect(a.steps.keys.sorted() == b.steps.keys.sorted())
        #expect(a.steps.values.sorted { $0.step < $1.step }.map(\.loss) == b.steps.values.sorted { $0.step < $1.step }.map(\.loss))
        let sameBank = a.bank.mapValues(\.embedding) == b.bank.mapValues(\.embedding)
        #expect(sameBank, "the bank written after the resume is the uninterrupted run's")
    }

    @Test func rejectedResultsBecomeHardNegativesOfTheirQuery() throws {
        var c = Self.configuration
        c.maximumSteps = 30
        c.evaluateEvery = 1000
        let (plain, _) = Self.store()
        _ = try ContinuousTrainer(configuration: c, store: plain).run()

        // Users rejected images 1 and 2 (and a dev image, never trained on, and the query's own
        // image, which is no negative) for the captions of image 0; captions of image 2 for image 0.
        func withFeedback() -> InMemoryTrainingStore {
            let (store, pairs) = Self.store()
            let devImage = pairs[pairs.count - 1].image
            for text in pairs[0..<5].map(\.text) {
                store.addRejections(query: text, rejected: [pairs[5].image, pairs[10].image, devImage, pairs[0].image])
            }
            store.addRejections(query: pairs[0].image, rejected: [pairs[10].text, pairs[11].text])
            return store
        }
        let store = withFeedback()
        var lines: [String] = []
        let trainer = ContinuousTrainer(configuration: c, store: store) { lines.append($0) }
        _ = try trainer.run()
        #expect(trainer.rejectionsRead == 22)
        #expect(trainer.hardNegativesUsed > 0)
        #expect(lines.contains { $0.contains("feedback: 22 rejections") })
        let a = plain.runs[1]!.steps, b = store.runs[1]!.steps
        #expect(a.keys.sorted() == b.keys.sorted())
        let differs = a.keys.contains { a[$0]!.terms["memory"] != b[$0]!.terms["memory"] }
        #expect(differs, "the hard negatives changed the memory-bank loss")

        // Weight 0: feedback is not read and the run is the one without feedback, step for step.
        c.hardNegativeWeight = 0
        let off = withFeedback()
        let untouched = ContinuousTrainer(configuration: c, store: off)
        _ = try untouched.run()
        #expect(untouched.rejectionsRead == 0 && untouched.hardNegativesUsed == 0)
        #expect(Data(plain.runs[1]!.checkpoints.last!.state) == Data(off.runs[1]!.checkpoints.last!.state))
    }

    @Test func rejectionsThatAreNoNegativesChangeNothing() throws {
        var c = Self.configuration
        c.pageSize = 1000            // every pair is known before the first step
        c.maximumSteps = 30
        c.evaluateEvery = 1000
        let (plain, plainPairs) = Self.store()
        // Caption 3 of image 0 is also paired with image 1 (one text item in two pairs).
        plain.addPairs([(plainPairs[5].image, plainPairs[3].text, .train)])
        _ = try ContinuousTrainer(configuration: c, store: plain).run()
        let (store, pairs) = Self.store()
        store.addPairs([(pairs[5].image, pairs[3].text, .train)])
        let devImage = pairs[pairs.count - 1].image, devText = pairs[pairs.count - 1].text
        for text in pairs[0..<5].map(\.text) { store.addRejections(query: text, rejected: [pairs[0].image, devImage]) }   // its own image, a dev image
        store.addRejections(query: pairs[0].image, rejected: [pairs[1].text, devText])       // its own caption, a dev caption
        store.addRejections(query: pairs[5].image, rejected: [pairs[3].text])               // a caption it is paired with through its second pair
        let trainer = ContinuousTrainer(configuration: c, store: store)
        _ = try trainer.run()
        #expect(trainer.rejectionsRead == 13 && trainer.hardNegativesUsed == 0, "\(trainer.rejectionsRead) read, \(trainer.hardNegativesUsed) used")
        #expect(Data(plain.runs[1]!.checkpoints.last!.state) == Data(store.runs[1]!.checkpoints.last!.state))
    }

    @Test func aRunWithFeedbackResumedAfterACrashEndsWhereAnUninterruptedOneDoes() throws {
        var c = Self.configuration
        c.maximumSteps = 50
        c.evaluateEvery = 1000
        func withFeedback() -> InMemoryTrainingStore {
            let (store, pairs) = Self.store()
            for (offset, text) in pairs[0..<10].map(\.text).enumerated() {
                store.addRejections(query: text, rejected: [pairs[10 + offset * 5].image, pairs[60 + offset * 5].image])
            }
            store.addRejections(query: pairs[0].image, rejected: [pairs[20].text, pairs[30].text])
            return store
        }
        let reference = withFeedback()
        let uninterrupted = ContinuousTrainer(configuration: c, store: reference)
        _ = try uninterrupted.run()
        #expect(uninterrupted.hardNegativesUsed > 0)
        let store = withFeedback()
        #expect(throws: CrashingStore<InMemoryTrainingStore>.Crash.self) {
            _ = try ContinuousTrainer(configuration: c, store: CrashingStore(store, afterCommits: 2)).run()
        }
        #expect(store.runs[1]!.checkpoints.last!.feedbackCursor == 11, "the checkpoint knows the feedback it had read")
        _ = try ContinuousTrainer(configuration: c, store: store).run()
        let a = reference.runs[1]!, b = store.runs[1]!
        #expect(Data(a.checkpoints.last!.state) == Data(b.checkpoints.last!.state), "same parameters, optimiser, queues and generators")
        #expect(a.steps.values.sorted { $0.step < $1.step }.map(\.loss) == b.steps.values.sorted { $0.step < $1.step }.map(\.loss))
    }

    @Test func pairsArrivingWhileTrainingAreAllTrainedOnAndNoneTwiceAsNew() throws {
        let store = InMemoryTrainingStore()
        let pairs = Self.populate(store, images: 60, seed: 6)
        store.addPairs(pairs.prefix(50).map { ($0.image, $0.text, .train) })
        store.addPairs(pairs.suffix(50).map { ($0.image, $0.text, .dev) })
        var c = Self.configuration
        c.newShare = 0.25
        c.maximumSteps = 30
        // Chunks of 50 more train pairs arrive between bounded runs (each run resumes the last).
        var cursor: Int64 = 0
        for chunk in 0..<4 {
            store.addPairs(pairs.dropFirst(50 + chunk * 50).prefix(50).map { ($0.image, $0.text, .train) })
            c.maximumSteps = 30 * (chunk + 1)
            let summary = try ContinuousTrainer(configuration: c, store: store).run()
            #expect(summary.cursor > cursor)
            cursor = summary.cursor
        }
        let last = store.runs[1]!.checkpoints.last!
        #expect(last.cursor == Int64(store.pairCount))
        #expect(last.pendingPairs.isEmpty, "every arrived train pair was trained on: \(last.pendingPairs.count) pending")
    }

    @Test func anOutageIsWaitedOutWithALogLine() throws {
        let (store, _) = Self.store()
        var c = Self.configuration
        c.maximumSteps = 30
        store.outage = InMemoryOutage()
        var lines: [String] = []
        let done = DispatchSemaphore(value: 0)
        let clearer = Thread {
            Thread.sleep(forTimeInterval: 0.2)
            store.outage = nil
            done.signal()
        }
        clearer.start()
        let summary = try ContinuousTrainer(configuration: c, store: store) { lines.append($0) }.run()
        done.wait()
        #expect(summary.committedStep == 30)
        #expect(lines.contains { $0.contains("store unavailable while opening run main (attempt 1)") && $0.contains("simulated outage") })
        #expect(lines.contains { $0.contains("store reachable again") })
    }

    @Test func itemsWithoutFeaturesAreNamedAndSkipped() throws {
        let store = InMemoryTrainingStore()
        let image = store.addItem(ItemFeatures(global: [Float](repeating: 1, count: 12), local: [Float](repeating: 1, count: 24), localCount: 2))
        store.addPairs([(image, 999, .train)])
        final class Lines { var all: [String] = [] }
        let lines = Lines()
        let trainer = ContinuousTrainer(configuration: Self.configuration, store: store) { lines.all.append($0) }
        let summary = try trainer.run(shouldStop: { lines.all.contains { $0.hasPrefix("pair skipped") } })
        #expect(lines.all.contains { $0.contains("pair 1: text item 999 has no features") }, "\(lines.all)")
        #expect(summary.cursor == 1 && summary.trainPairs == 0 && trainer.skippedPairs == 1, "the cursor passes the pair")
    }
}

@Suite("Simulated user of the search (feedback experiments)")
struct SimulatedUserTests {
    @Test func choosesTheFirstRightResultWithinPatienceAndRejectsThoseAbove() {
        let user = SimulatedUser(patience: 3)
        #expect(user.feedback(on: [7, 4, 9, 1], isRight: { $0 == 9 }) == .init(chosen: 9, rank: 3, rejected: [7, 4]))
        #expect(user.feedback(on: [7, 4, 9, 1], isRight: { $0 == 7 || $0 == 9 }) == .init(chosen: 7, rank: 1, rejected: []))
        #expect(user.feedback(on: [7, 4, 9, 1], isRight: { $0 == 1 }) == nil, "past the user's patience")
        #expect(user.feedback(on: [], isRight: { _ in true }) == nil)
    }

    @Test func rankingIsTheTopOfASortAndTiesGoToTheLowerIndex() {
        var generator = RandomGenerator(seed: 3)
        let scores = (0..<500).map { _ in Float(Int(generator.nextUniform() * 50)) }   // many ties
        let expected = scores.indices.sorted { scores[$0] > scores[$1] || (scores[$0] == scores[$1] && $0 < $1) }
        for count in [1, 10, 499, 500, 600] {
            let ranking = scores.withUnsafeBufferPointer { SimulatedUser.ranking($0, count: count) }
            #expect(ranking == Array(expected.prefix(count)))
        }
    }
}

@Suite("Growing pair set")
struct GrowingPairSetTests {
    /// Pairs whose images have 2, then 3 (wider: a re-pad), then 2 fragments.
    static func pairs() -> (pairs: [StoredPair], features: [Int64: ItemFeatures]) {
        var generator = RandomGenerator(seed: 12)
        var features: [Int64: ItemFeatures] = [:], pairs: [StoredPair] = []
        for image in 0..<6 {
            let fragments = image == 3 ? 3 : 2
            features[Int64(image)] = ItemFeatures(global: (0..<5).map { _ in generator.nextNormal() },
                                                  local: (0..<(fragments * 4)).map { _ in generator.nextNormal() }, localCount: fragments)
            for caption in 0..<3 {
                let id = Int64(100 + image * 3 + caption), tokens = 2 + caption
                features[id] = ItemFeatures(global: (0..<3).map { _ in generator.nextNormal() },
                                            local: (0..<(tokens * 2)).map { _ in generator.nextNormal() }, localCount: tokens)
                pairs.append(StoredPair(pairID: Int64(pairs.count + 1), imageID: Int64(image), textID: id, split: .train))
            }
        }
        return (pairs, features)
    }

    static func describe(_ data: RetrievalData) -> [String] {
        [data.imageGlobal, data.imageLocal, data.textGlobal, data.textTokens].map { "\($0.shape) \($0.scalars)" }
            + ["\(data.tokenOffsets) \(data.imageOfText) \(String(describing: data.imageFragmentCounts))"]
    }

    @Test func takingPairsInPagesEqualsTakingThemAtOnceAndEarlierDataKeepItsRows() throws {
        let (pairs, features) = Self.pairs()
        var once = GrowingPairSet()
        for pair in pairs { try once.add(pair, features: features) }
        var paged = GrowingPairSet()
        var earlier: [(RetrievalData, [String])] = []
        for page in stride(from: 0, to: pairs.count, by: 4) {
            for pair in pairs[page ..< min(page + 4, pairs.count)] { try paged.add(pair, features: features) }
            let taken = paged.data()
            let data = try #require(taken)
            earlier.append((data, Self.describe(data)))
        }
        let onceData = once.data(), pagedData = paged.data()
        let all = try #require(onceData), grown = try #require(pagedData)
        #expect(Self.describe(grown) == Self.describe(all))
        #expect(all.imageLocal.shape == [6, 3, 4] && all.imageFragmentCounts == [2, 2, 2, 3, 2, 2])
        // The padded rows hold each image's fragments, then zeros.
        let image0 = try #require(features[0])
        #expect(Array(all.imageLocal.scalars.prefix(12)) == image0.local + [0, 0, 0, 0])
        for (data, description) in earlier { #expect(Self.describe(data) == description, "data taken earlier keeps its rows") }
    }
}
