import AmberCatalog
import AmberModel
import AmberTensor
import AmberTrain
import Foundation
import Testing

@Suite("Matching-model trainer")
struct MatchingTrainerTests {
    /// Synthetic pairs with fragments: two noisy copies of the global vector per image, the
    /// sentence vector twice per text, so max-2 and attention have work.
    static func data() -> (train: RetrievalData, dev: RetrievalData) {
        let d = PairBatcherTests.syntheticData(images: 60, seed: 4)
        var generator = RandomGenerator(seed: 1)
        let images = Tensor.concatenate([d.imageGlobal.reshaped([d.imageCount, 1, 12]), d.imageGlobal.reshaped([d.imageCount, 1, 12])], axis: 1)
            + Tensor.randomNormal([d.imageCount, 2, 12], standardDeviation: 0.1, using: &generator)
        let tokens = Tensor.concatenate([d.textGlobal, d.textGlobal], axis: 1).reshaped([d.textCount * 2, 8])
        let all = RetrievalData(imageGlobal: d.imageGlobal, imageLocal: images, textGlobal: d.textGlobal, textTokens: tokens,
                                tokenOffsets: (0...d.textCount).map { $0 * 2 }, imageOfText: d.imageOfText, captions: [])
        return (all.subset(images: 0..<50), all.subset(images: 50..<60))
    }

    static var baseConfiguration: MatchingTrainer.Configuration {
        var configuration = MatchingTrainer.Configuration()
        configuration.encoder.jointDimension = 16
        configuration.optimization.batchSize = 25
        configuration.optimization.steps = 120
        configuration.optimization.learningRate = 3e-3
        configuration.optimization.warmupSteps = 10
        configuration.optimization.allNegativesSteps = 20
        configuration.optimization.evaluateEvery = 60
        configuration.rerankDepth = 5
        return configuration
    }

    /// Memory bank, prototypes (from step 30) and graph all on.
    static var fullConfiguration: MatchingTrainer.Configuration {
        var configuration = baseConfiguration
        configuration.memoryWeight = 0.5
        configuration.queueSize = 64
        configuration.momentum = 0.9
        configuration.memoryTemperature = 0.1
        configuration.prototypeWeight = 0.2
        configuration.prototypeCount = 4
        configuration.prototypeWarmupSteps = 30
        configuration.graphWeight = 0.5
        return configuration
    }

    /// A history without its timings (pairs/s), for exact comparisons.
    static func outcome(_ history: [TrainingEvaluation]) -> [String] {
        history.map { e in "\(e.step) \(e.loss.bitPattern) \(e.terms.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value.bitPattern)" }) \(e.metrics)" }
    }

    static func run(_ configuration: MatchingTrainer.Configuration) throws -> MatchingTrainer.Result {
        let (train, dev) = data()
        return try MatchingTrainer(configuration: configuration, train: train).run(train: train, dev: dev)
    }

    @Test func learnsSyntheticPairsDeterministicallyWithEachLoss() throws {
        let first = try Self.run(Self.baseConfiguration), second = try Self.run(Self.baseConfiguration)
        #expect(Self.outcome(first.history) == Self.outcome(second.history))
        #expect(first.history.map(\.step) == [0, 60, 120], "the start is evaluated, then every 60 steps")
        #expect(first.history[0].loss.isNaN && first.history[0].terms.isEmpty)
        #expect(first.history.last!.loss < first.history[1].loss)
        #expect(first.history.last!.metrics.rsum > 300, "\(first.history.last!.metrics)")
        #expect(first.history.dropFirst().allSatisfy { Set($0.terms.keys) == ["triplet"] })

        // Each further loss: still deterministic, still learns, a different model, and its
        // named term is logged and adds up to the total.
        var configuration = Self.baseConfiguration
        var previous = first
        for (name, change) in [("memory", { (c: inout MatchingTrainer.Configuration) in c.memoryWeight = 0.5; c.queueSize = 64; c.momentum = 0.9; c.memoryTemperature = 0.1 }),
                               ("prototype", { $0.prototypeWeight = 0.2; $0.prototypeCount = 4; $0.prototypeWarmupSteps = 0 }),
                               ("graph", { $0.graphWeight = 0.5 })] as [(String, (inout MatchingTrainer.Configuration) -> Void)] {
            change(&configuration)
            let result = try Self.run(configuration), again = try Self.run(configuration)
            #expect(Self.outcome(result.history) == Self.outcome(again.history), "\(name)")
            #expect(result.history.dropFirst().map(\.loss) != previous.history.dropFirst().map(\.loss), "\(name)")
            #expect(result.history.dropFirst().allSatisfy { $0.terms[name] != nil && $0.loss.isFinite }, "\(name)")
            let last = result.history.last!
            #expect(abs(last.terms.values.reduce(0, +) - last.loss) < 1e-4 * max(1, last.loss))
            #expect(last.metrics.rsum > 300, "\(name): \(last.metrics)")
            previous = result
        }
    }

    @Test func prototypesArePlacedOnTheBatchWhenTheirLossStarts() throws {
        var configuration = Self.fullConfiguration
        configuration.prototypeWarmupSteps = 5
        configuration.encoder.fragmentDropout = 0          // training embeddings = inference ones
        let (train, _) = Self.data()
        let trainer = try MatchingTrainer(configuration: configuration, train: train, ownBatches: false)
        let batches = (0..<6).map { step in (0..<25).map { (step * 25 + $0 * 7) % train.textCount } }
        func nearestCosines(_ batch: [Int]) -> [Float] {
            let images = trainer.model.imageEncoder(train.imageInput(batch.map { train.imageOfText[$0] })).fused
            let texts = trainer.model.textEncoder(train.textInput(batch)).fused
            let candidates = Tensor.concatenate([images, texts], axis: 0).l2Normalized()
            let scores = Tensor.matmul(trainer.prototypeCentroids.l2Normalized(), candidates, transposeB: true)   // [K, 2B]
            return (0..<scores.shape[0]).map { k in scores.slice(axis: 0, k..<k + 1).scalars.max()! }
        }
        for step in 0..<5 { _ = trainer.train(batch: batches[step], data: train) }
        let before = withoutGradients { nearestCosines(batches[5]) }
        #expect(before.allSatisfy { $0 < 0.95 }, "random prototypes: \(before)")
        _ = trainer.train(batch: batches[5], data: train)           // step 5: seeded, then one optimiser step
        let after = withoutGradients { nearestCosines(batches[5]) }
        #expect(after.allSatisfy { $0 > 0.97 }, "each prototype sits on one of the batch's embeddings: \(after)")
        let c = trainer.prototypeCentroids.l2Normalized()
        let pairwise = Tensor.matmul(c, c, transposeB: true)
        for a in 0..<4 { for b in 0..<4 where a != b { #expect(pairwise[a, b] < 0.999, "prototypes \(a) and \(b) coincide") } }
    }

    @Test func prototypesFollowTheDataOrLearnByGradientAsConfigured() throws {
        let (train, _) = Self.data()
        let batches = (0..<8).map { step in (0..<25).map { (step * 25 + $0 * 7) % train.textCount } }
        for momentum in [Float(0.9), nil] {
            var configuration = Self.fullConfiguration
            configuration.prototypeWarmupSteps = 2
            configuration.prototypeMomentum = momentum
            let trainer = try MatchingTrainer(configuration: configuration, train: train, ownBatches: false)
            var seen: [Tensor] = []
            for batch in batches {
                _ = trainer.train(batch: batch, data: train)
                seen.append(trainer.prototypeCentroids)
            }
            // Every step from the third moves the prototypes, either way.
            for step in 3..<8 { #expect(seen[step].maxAbsoluteDifference(to: seen[step - 1]) > 0, "momentum \(String(describing: momentum)) step \(step)") }
            // Following keeps them unit vectors (they are normalised after each move); Adam's moves do not.
            let norms = trainer.prototypeCentroids.squared().sum(axis: -1).sqrt().scalars
            if momentum != nil {
                #expect(norms.allSatisfy { abs($0 - 1) < 1e-5 }, "\(norms)")
            } else {
                #expect(norms.contains { abs($0 - 1) > 1e-4 }, "\(norms)")
            }
        }
    }

    /// Negatives for every text of `data`: type 0 for all, type 1 for even texts, type 2 for none;
    /// each negative is its caption's tokens reversed with a perturbed sentence vector.
    static func captionNegatives(_ data: RetrievalData) -> CaptionNegativeSet {
        var rows: [[Int]] = [], features: [ItemFeatures] = []
        var generator = RandomGenerator(seed: 9)
        for t in 0..<data.textCount {
            var row = [-1, -1, -1]
            for k in 0..<2 where k == 0 || t % 2 == 0 {
                let global = (data.textGlobal.slice(axis: 0, t..<t + 1) + Tensor.randomNormal([1, 8], standardDeviation: 0.5, using: &generator)).scalars
                let tokens = data.textTokens.slice(axis: 0, data.tokenOffsets[t + 1] - 1 ..< data.tokenOffsets[t + 1]).scalars
                    + data.textTokens.slice(axis: 0, data.tokenOffsets[t] ..< data.tokenOffsets[t] + 1).scalars
                row[k] = features.count
                features.append(ItemFeatures(global: global, local: tokens, localCount: 2))
            }
            rows.append(row)
        }
        return CaptionNegativeSet(rows: rows, features: features, types: 3)!
    }

    @Test func captionNegativeTermsTrainDeterministicallyAndResume() throws {
        let (train, _) = Self.data()
        var configuration = Self.fullConfiguration
        configuration.captionNegativeWeight = 0.5
        configuration.rankWeight = 0.2
        configuration.intraWeight = 0.3
        let negatives = Self.captionNegatives(train)
        let batches = (0..<12).map { step in (0..<25).map { (step * 25 + $0 * 7) % train.textCount } }
        func trainer() throws -> MatchingTrainer {
            let trainer = try MatchingTrainer(configuration: configuration, train: train, ownBatches: false)
            trainer.captionNegatives = negatives
            return trainer
        }
        let first = try trainer(), second = try trainer()
        var losses: [[String: Float]] = []
        for batch in batches.prefix(6) {
            let a = first.train(batch: batch, data: train), b = second.train(batch: batch, data: train)
            #expect(a.total.bitPattern == b.total.bitPattern && !a.skipped)
            #expect(["caption negatives", "rank", "intra"].allSatisfy { a.terms[$0].map(\.isFinite) == true }, "\(a.terms)")
            losses.append(a.terms)
        }
        // The margins are the last batch's clamped mean gaps, one per type; the type nobody has stays 0.
        #expect(first.rankThresholds.count == 3 && first.rankThresholds[2] == 0 && first.rankThresholds.allSatisfy { (0...10).contains($0) })
        // A trainer restored from the state after 6 steps ends where the uninterrupted one does.
        let resumed = try MatchingTrainer(resumingFrom: first.stateBytes(), name: "state", configuration: configuration, train: train, ownBatches: false)
        resumed.captionNegatives = negatives
        #expect(resumed.rankThresholds == first.rankThresholds)
        for batch in batches.dropFirst(6) {
            let a = first.train(batch: batch, data: train), b = resumed.train(batch: batch, data: train)
            #expect(a.total.bitPattern == b.total.bitPattern)
        }
        #expect(first.model.parameters.map(\.value.scalars) == resumed.model.parameters.map(\.value.scalars))
        // Without negatives set, the terms are absent (the configuration alone does nothing).
        let plain = try MatchingTrainer(configuration: configuration, train: train, ownBatches: false)
        #expect(plain.train(batch: batches[0], data: train).terms["rank"] == nil)
    }

    /// GARE as an objective and as the stage-2 scorer: the term trains deterministically and
    /// resumes, the encoders start where a run without it starts, the model file carries the
    /// scorer, and the chosen α's dev metrics are those of the GARE re-rank.
    @Test func gareTrainsResumesAndServesAsStageTwo() throws {
        let (train, dev) = Self.data()
        var configuration = Self.fullConfiguration
        configuration.gare = GapAwareScorer.Configuration(width: 8)
        configuration.gareWeight = 0.5
        configuration.stageTwo = .gare
        configuration.alphaGrid = [1, 0.5, 0]
        let batches = (0..<10).map { step in (0..<25).map { (step * 25 + $0 * 7) % train.textCount } }
        let first = try MatchingTrainer(configuration: configuration, train: train, ownBatches: false)
        let plain = try MatchingTrainer(configuration: Self.fullConfiguration, train: train, ownBatches: false)
        #expect(zip(plain.model.parameters, first.model.parameters).allSatisfy { $0.value.scalars == $1.value.scalars }, "same encoder start")
        #expect(first.model.gare != nil && first.model.parameters.count == plain.model.parameters.count + first.model.gare!.parameters.count)
        for batch in batches.prefix(5) {
            let step = first.train(batch: batch, data: train)
            #expect(step.terms["gare"].map(\.isFinite) == true && !step.skipped, "\(step.terms)")
        }
        let resumed = try MatchingTrainer(resumingFrom: first.stateBytes(), name: "state", configuration: configuration, train: train, ownBatches: false)
        for batch in batches.dropFirst(5) {
            #expect(first.train(batch: batch, data: train).total.bitPattern == resumed.train(batch: batch, data: train).total.bitPattern)
        }
        #expect(first.model.parameters.map(\.value.scalars) == resumed.model.parameters.map(\.value.scalars))
        // The model made ready to serve: stage 2 is GARE, its file carries the scorer.
        let (served, _, sweep) = first.servingModel(train: train, dev: dev, metrics: nil)
        #expect(served.stageTwo == .gare && sweep.count == 3)
        let gare = try #require(first.model.gare)
        let gallery = first.model.encodeGallery(dev)
        let direct = TwoStageRanking(alpha: 1, depth: configuration.rerankDepth)
            .sweep(alphas: [0.5], gallery: gallery, scorer: .gare(gare), imageOfText: dev.imageOfText, offsets: served.offsets(for: gallery))
        #expect(sweep.first { $0.alpha == 0.5 }?.metrics == direct[0].metrics)
        let bytes = try served.encoded()
        let read = try TrainedModel.read(bytes: bytes, name: "gare model")
        #expect(read.stageTwo == .gare && read.model.gare?.configuration == gare.configuration)
        let texts = gallery.texts.slice(axis: 0, 0..<3), fragments = gallery.imageFragments.slice(axis: 0, 0..<2)
        #expect(read.model.gare!.scores(texts: texts, fragments: fragments, counts: [2, 2]).scalars
                == gare.scores(texts: texts, fragments: fragments, counts: [2, 2]).scalars)
        // Option checks: GARE as stage 2 needs it trained.
        var untrained = Self.baseConfiguration
        untrained.stageTwo = .gare
        #expect(untrained.problem?.contains("--gare-weight") == true)
    }

    @Test func theResultIsTheBestOnDevWithBetaAndAlphaChosenOnDev() throws {
        var configuration = Self.fullConfiguration
        configuration.optimization.evaluateEvery = 20
        // 0.999 ranks as 1 does: a tie the choice must settle towards 1.
        configuration.alphaGrid = [0.999, 1]
        let result = try Self.run(configuration)
        let best = result.history.max { $0.metrics.rsum < $1.metrics.rsum }!
        #expect(result.model.metrics?.rsum == best.metrics.rsum)
        #expect(result.model.step == result.history.first { $0.metrics.rsum == best.metrics.rsum }!.step)
        // The returned model really is that one: its stage-1 dev metrics are the best ones.
        let dev = Self.data().dev
        let (images, texts) = result.model.model.embed(dev)
        #expect(RetrievalMetrics.evaluate(images: images, texts: texts, imageOfText: dev.imageOfText) == best.metrics)
        // β: the best of the grid on dev for stage 1, β = 0 being the plain ranking; the querybank
        // holds the best model's embeddings of the training pairs.
        let train = Self.data().train
        let querybank = try #require(result.model.querybank)
        #expect(querybank.imageQueries.scalars == result.model.model.embed(train).images.scalars)
        #expect(querybank.textQueries.shape == [train.textCount, configuration.encoder.jointDimension])
        #expect(result.betaSweep.map(\.beta) == configuration.querybankBetas)
        #expect(result.betaSweep.first { $0.beta == 0 }!.metrics == best.metrics)
        let stageOne = try #require(result.betaSweep.first { $0.beta == querybank.beta }).metrics
        #expect(stageOne.rsum == result.betaSweep.map(\.metrics.rsum).max())
        #expect(stageOne == RetrievalMetrics.evaluate(images: images, texts: texts, imageOfText: dev.imageOfText,
                                                      offsets: querybank.offsets(images: images, texts: texts)))
        // α: the best of the grid on dev, on top of the chosen β; α = 1 is stage 1.
        #expect(result.alphaSweep.map(\.alpha) == configuration.alphaGrid)
        #expect(result.alphaSweep.first { $0.alpha == 1 }!.metrics == stageOne)
        let top = result.alphaSweep.map(\.metrics.rsum).max()!
        #expect(result.model.stageTwoMetrics?.rsum == top)
        #expect(result.alphaSweep.first { $0.alpha == result.model.ranking.alpha }!.metrics.rsum == top)
        // Ties go to the largest α (the least stage 2).
        #expect(result.alphaSweep[0].metrics == result.alphaSweep[1].metrics, "the tie this test needs")
        #expect(result.model.ranking.alpha == result.alphaSweep.filter { $0.metrics.rsum == top }.map(\.alpha).max())
    }

    @Test func aResumedRunEndsExactlyWhereAnUninterruptedOneDoes() throws {
        let directory = FileManager.default.temporaryDirectory.path + "/amber-resume-\(getpid())-\(UInt64.random(in: 0..<1 << 40))"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let (train, dev) = Self.data()
        var configuration = Self.fullConfiguration
        configuration.optimization.evaluateEvery = 40
        let uninterrupted = try Self.run(configuration)

        // Stop at step 80 (prototypes on, queues full, best model kept), then resume to 120.
        var short = configuration
        short.optimization.steps = 80
        _ = try MatchingTrainer(configuration: short, train: train).run(train: train, dev: dev, checkpoints: directory)
        for file in ["training.safetensors", "best.safetensors", "report.svg"] {
            #expect(FileManager.default.fileExists(atPath: directory + "/" + file), "\(file)")
        }
        let resumed = try MatchingTrainer(resumingFrom: directory + "/training.safetensors", configuration: configuration, train: train)
        #expect(resumed.step == 80)
        let finished = try resumed.run(train: train, dev: dev, checkpoints: directory)
        #expect(Self.outcome(finished.history) == Self.outcome(uninterrupted.history))
        #expect(finished.model.step == uninterrupted.model.step)
        #expect(finished.model.ranking == uninterrupted.model.ranking)
        for (a, b) in zip(finished.model.model.parameters, uninterrupted.model.model.parameters) {
            #expect(a.value.scalars == b.value.scalars, "\(a.name)")
        }
        // The best model on disk is the returned one.
        let saved = try TrainedModel.read(from: directory + "/best.safetensors")
        #expect(saved.ranking == finished.model.ranking && saved.step == finished.model.step)
        for (a, b) in zip(saved.model.parameters, finished.model.model.parameters) { #expect(a.value.scalars == b.value.scalars, "\(a.name)") }

        // A resume with other options is refused, naming the file.
        var other = configuration
        other.memoryWeight = 0.1
        #expect { try MatchingTrainer(resumingFrom: directory + "/training.safetensors", configuration: other, train: train) } throws: { error in
            "\(error)".contains("training.safetensors") && "\(error)".contains("different configuration")
        }
    }

    @Test func aTrainedModelRoundTripsThroughItsFileAndBadFilesAreNamed() throws {
        let directory = FileManager.default.temporaryDirectory.path + "/amber-model-\(getpid())-\(UInt64.random(in: 0..<1 << 40))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let result = try Self.run(Self.baseConfiguration)
        try result.model.write(to: directory + "/model.safetensors")
        let loaded = try TrainedModel.read(from: directory + "/model.safetensors")
        #expect(loaded.encoder == result.model.encoder && loaded.dimensions == result.model.dimensions)
        #expect(loaded.metrics == result.model.metrics && loaded.stageTwoMetrics == result.model.stageTwoMetrics)
        #expect(loaded.querybank != nil && loaded.querybank?.beta == result.model.querybank?.beta)
        #expect(loaded.querybank?.imageQueries.scalars == result.model.querybank?.imageQueries.scalars)
        #expect(loaded.querybank?.textQueries.scalars == result.model.querybank?.textQueries.scalars)
        let dev = Self.data().dev
        #expect(loaded.model.embed(dev).texts.scalars == result.model.model.embed(dev).texts.scalars)

        // Not a model: a training state, a truncated file, a tensor of the wrong shape.
        try SafetensorsFile.write(["x": .float(Tensor.zeros([2]), .float32)], metadata: ["format": "something-else"], to: directory + "/other.safetensors")
        #expect { try TrainedModel.read(from: directory + "/other.safetensors") } throws: { "\($0)".contains("other.safetensors") && "\($0)".contains("not an Amber model") }
        let bytes = try Data(contentsOf: URL(fileURLWithPath: directory + "/model.safetensors"))
        try bytes.prefix(bytes.count / 2).write(to: URL(fileURLWithPath: directory + "/truncated.safetensors"))
        #expect(throws: TensorFileError.self) { try TrainedModel.read(from: directory + "/truncated.safetensors") }
        let file = try SafetensorsFile(path: directory + "/model.safetensors")
        var entries: [String: SafetensorsFile.Entry] = [:]
        for name in file.names { entries[name] = .float(try file.tensor(name), .float32) }
        entries["image.gate.bias"] = .float(Tensor.zeros([3]), .float32)
        try SafetensorsFile.write(entries, metadata: file.metadata, to: directory + "/shape.safetensors")
        #expect { try TrainedModel.read(from: directory + "/shape.safetensors") } throws: { "\($0)".contains("image.gate.bias") && "\($0)".contains("shape") }
        // A querybank β without its tensors, and a querybank of the wrong width.
        entries = [:]
        for name in file.names where name != "querybank.texts" { entries[name] = .float(try file.tensor(name), .float32) }
        try SafetensorsFile.write(entries, metadata: file.metadata, to: directory + "/nobank.safetensors")
        #expect { try TrainedModel.read(from: directory + "/nobank.safetensors") } throws: { "\($0)".contains("nobank.safetensors") && "\($0)".contains("querybank.texts") }
        entries["querybank.texts"] = .float(Tensor.zeros([4, 3]), .float32)
        try SafetensorsFile.write(entries, metadata: file.metadata, to: directory + "/badbank.safetensors")
        #expect { try TrainedModel.read(from: directory + "/badbank.safetensors") } throws: { "\($0)".contains("querybank tensors have shapes") }
    }

    @Test func theReportPlotsEveryTermAndDevRsum() throws {
        var configuration = Self.fullConfiguration
        configuration.optimization.evaluateEvery = 30
        let history = try Self.run(configuration).history
        let svg = TrainingReport.svg(history: history, title: "a <test> run")
        #expect(svg.hasPrefix("<svg") && svg.hasSuffix("</svg>\n"))
        // One line per term, the total, and dev rsum.
        let terms = Set(history.flatMap(\.terms.keys))
        #expect(terms == ["triplet", "memory", "prototype", "graph"])
        #expect(svg.components(separatedBy: "<polyline").count - 1 == terms.count + 2)
        for term in terms { #expect(svg.contains(">\(term)</text>")) }
        let best = history.max { $0.metrics.rsum < $1.metrics.rsum }!
        #expect(svg.contains("best \(String(format: "%.1f", best.metrics.rsum)) at step \(best.step)"))
        #expect(svg.contains("a &lt;test&gt; run"))
        #expect(TrainingReport.svg(history: [], title: "empty").contains("no evaluation yet"))
    }

    @Test func frozenParametersStayAndAnchoredOnesArePulledBack() throws {
        let (train, dev) = Self.data()
        func trained(_ change: (inout MatchingTrainer.Configuration) -> Void) throws -> (start: [String: [Float]], end: [String: [Float]]) {
            var configuration = Self.baseConfiguration
            configuration.optimization.steps = 40
            change(&configuration)
            let trainer = try MatchingTrainer(configuration: configuration, train: train)
            let start = Dictionary(uniqueKeysWithValues: trainer.model.parameters.map { ($0.name, $0.value.scalars) })
            _ = try trainer.run(train: train, dev: dev)
            // The last step's parameters (not the best-on-dev copy the result carries).
            return (start, Dictionary(uniqueKeysWithValues: trainer.model.parameters.map { ($0.name, $0.value.scalars) }))
        }
        func distance(_ a: [Float], _ b: [Float]) -> Float { zip(a, b).reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) }.squareRoot() }

        let frozen = try trained { $0.frozen = ["fragment", "gate.weight"] }
        for (name, start) in frozen.start {
            let moved = distance(start, frozen.end[name]!)
            if name.contains("fragment") || name.contains("gate.weight") {
                #expect(moved == 0, "\(name) is frozen")
            } else {
                #expect(moved > 0, "\(name) trains")
            }
        }
        let free = try trained { _ in }
        let anchored = try trained { $0.anchorStrength = 100 }
        let pinned = try trained { $0.anchorStrength = 1e9 }     // pull capped at 1: back to the start every step
        for (name, start) in free.start {
            #expect(distance(start, anchored.end[name]!) < distance(start, free.end[name]!), "\(name)")
            #expect(pinned.end[name]! == start, "\(name)")
        }
    }
}
