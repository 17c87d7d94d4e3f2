import AmberCatalog
import AmberModel
import AmberTensor
import ArgumentParser
import Foundation

/// Retrieval metrics of a trained model on a dataset split, stage 1 and two-stage.
struct RetrievalEvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "retrieval",
        abstract: "R@1/5/10 both ways, median rank and rsum of a trained model (stage 1, and with the stage-2 re-rank)."
    )

    @Option(help: "A model written by amber train (best.safetensors).") var model: String = ".amber/train/best.safetensors"
    @OptionGroup var dataOptions: OfflineDataOptions
    @Option(help: "Which images to rank: dev (from --dev-start on), train (before it) or all.") var split: String = "dev"
    @Option(help: "Stage-2 weight α of the global score (default: the model's, chosen on dev when it was trained).") var alpha: Float?
    @Option(help: "Stage 2: candidates re-ranked per query (default: the model's).") var depth: Int?
    @Option(help: "Querybank normalisation β of stage 1, 0 for off (default: the model's, chosen on dev when it was trained).")
    var querybankBeta: Float?
    @Option(help: "Queries scored per chunk (bounds memory on large galleries).") var chunkSize: Int = 512
    @Option(help: "Stage-2 scorer: scan or gare (default: the model's; gare needs a model trained with --gare-weight).") var stageTwo: StageTwoKind?
    @Option(parsing: .upToNextOption, help: "Stage-2 weights α to sweep (each printed; overrides --alpha).") var alphas: [Float] = []

    func run() throws {
        let trained = try TrainedModel.read(from: model)
        let (train, dev) = try dataOptions.load()
        let data: RetrievalData
        switch split {
        case "dev": data = dev
        case "train": data = train
        case "all": data = try RetrievalData.load(dataOptions.data)
        default: throw ValidationError("--split must be dev, train or all, not '\(split)'")
        }
        guard TrainedModel.Dimensions(of: data) == trained.dimensions else {
            throw ValidationError("\(model) was trained on features \(trained.dimensions); \(dataOptions.data) has \(TrainedModel.Dimensions(of: data))")
        }
        if let alpha, !(0...1).contains(alpha) { throw ValidationError("--alpha must be in [0, 1], got \(alpha)") }
        if let depth, depth < 1 { throw ValidationError("--depth must be at least 1, got \(depth)") }
        if let querybankBeta {
            guard querybankBeta >= 0, querybankBeta.isFinite else { throw ValidationError("--querybank-beta must be finite and ≥ 0, got \(querybankBeta)") }
            guard trained.querybank != nil else { throw ValidationError("--querybank-beta: \(model) has no querybank (trained before querybank normalisation); retrain it") }
        }
        if let bad = alphas.first(where: { !(0...1).contains($0) }) { throw ValidationError("--alphas must be in [0, 1], got \(bad)") }
        var scorer = trained.pairScorer
        if let stageTwo {
            switch stageTwo {
            case .scan: scorer = .scan(trained.alignment)
            case .gare:
                guard let gare = trained.model.gare else { throw ValidationError("--stage-two gare: \(model) has no GARE scorer (train with --gare-weight)") }
                scorer = .gare(gare)
            }
        }
        let ranking = TwoStageRanking(alpha: alpha ?? trained.ranking.alpha, depth: depth ?? trained.ranking.depth)
        print("\(model): step \(trained.step), D = \(trained.encoder.jointDimension), fusion \(trained.encoder.fusion.rawValue); "
              + "\(split): \(data.imageCount) images, \(data.textCount) texts")
        let started = Date()
        let gallery = trained.model.encodeGallery(data)
        let swept = !self.alphas.isEmpty
        let alphas = swept ? [Float(1)] + self.alphas.filter { $0 != 1 } : (ranking.alpha == 1 ? [Float(1)] : [1, ranking.alpha])
        let plain = RetrievalMetrics.evaluate(images: gallery.images, texts: gallery.texts, imageOfText: data.imageOfText, chunkSize: chunkSize)
        print("stage 1 (fused embeddings):       \(plain)")
        var offsets: ScoreOffsets?
        let beta = querybankBeta ?? trained.querybank?.beta ?? 0
        if let querybank = trained.querybank, beta > 0 {
            offsets = querybank.with(beta: beta).offsets(images: gallery.images, texts: gallery.texts)
        }
        let results = ranking.sweep(alphas: alphas, gallery: gallery, scorer: scorer, imageOfText: data.imageOfText,
                                    offsets: offsets, chunkSize: chunkSize)
        if offsets != nil {
            print(String(format: "stage 1, querybank β %.1f:          %@", beta, results[0].metrics.description))
        } else {
            print("querybank normalisation is off (β = 0)" + (trained.querybank == nil ? "" : "; pass --querybank-beta to try it"))
        }
        if swept {
            for result in results.dropFirst() {
                print(String(format: "two-stage, %@ (α %.2f, top %d re-ranked): %@", scorer.kind.rawValue, result.alpha, ranking.depth, result.metrics.description))
            }
        } else if results.count > 1 {
            print(String(format: "two-stage, %@ (α %.2f, top %d re-ranked): %@", scorer.kind.rawValue, ranking.alpha, ranking.depth, results[1].metrics.description))
        } else {
            print("stage 2 is off for this model (α = 1); pass --alpha to try it")
        }
        print(String(format: "(%.1f s)", Date().timeIntervalSince(started)))
    }
}
