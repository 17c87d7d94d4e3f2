import AmberTensor
import Foundation

/// A trained matching model as it is kept and served: encoder configuration, the feature
/// dimensions it was trained on, its parameters, and its two-stage ranking (α chosen on dev).
/// Stored as one safetensors file: parameters by name, the rest as JSON metadata.
public struct TrainedModel: Sendable {
    /// Feature dimensions of the data a model was trained on.
    public struct Dimensions: Sendable, Codable, Equatable, CustomStringConvertible {
        public var imageGlobal: Int
        public var imageFragment: Int
        public var textGlobal: Int
        public var textFragment: Int

        public init(imageGlobal: Int, imageFragment: Int, textGlobal: Int, textFragment: Int) {
            self.imageGlobal = imageGlobal
            self.imageFragment = imageFragment
            self.textGlobal = textGlobal
            self.textFragment = textFragment
        }

        /// The dimensions of `data`'s features.
        public init(of data: RetrievalData) {
            self.init(imageGlobal: data.imageGlobal.shape[1], imageFragment: data.imageLocal.shape[2],
                      textGlobal: data.textGlobal.shape[1], textFragment: data.textTokens.shape[1])
        }

        public func makeModel(_ configuration: ModalityEncoder.Configuration, gare: GapAwareScorer.Configuration? = nil,
                              generator: inout RandomGenerator) -> MatchingModel {
            MatchingModel(imageGlobal: imageGlobal, imageFragment: imageFragment, textGlobal: textGlobal, textFragment: textFragment,
                          configuration: configuration, gare: gare, generator: &generator)
        }

        public var description: String {
            "image \(imageGlobal) + n×\(imageFragment), text \(textGlobal) + n×\(textFragment)"
        }

        /// What is wrong with these dimensions (each must be 1…8192), or nil.
        public var problem: String? {
            let all = [imageGlobal, imageFragment, textGlobal, textFragment]
            return all.allSatisfy({ (1...8192).contains($0) }) ? nil : "feature dimensions must be 1…8192, got \(self)"
        }
    }

    public var encoder: ModalityEncoder.Configuration
    public var dimensions: Dimensions
    public var model: MatchingModel
    /// Training step the parameters are from.
    public var step: Int
    /// Dev metrics of stage 1 and of the two-stage ranking, when known.
    public var metrics: RetrievalMetrics?
    /// Dev metrics of the ranking as served: querybank normalisation and stage 2 as chosen on dev.
    public var stageTwoMetrics: RetrievalMetrics?
    public var ranking: TwoStageRanking
    public var alignment: LocalAlignment
    /// The stage-2 scorer: SCAN-style alignment, or the model's GARE scorer (which it must have).
    public var stageTwo: StageTwoKind
    /// Hubness correction of stage 1 (β chosen on dev; β = 0 keeps it off), with the querybank
    /// of training embeddings it needs for galleries it has not seen. Nil in models without one.
    public var querybank: QuerybankNormalization?

    public init(encoder: ModalityEncoder.Configuration, dimensions: Dimensions, model: MatchingModel, step: Int,
                metrics: RetrievalMetrics?, stageTwoMetrics: RetrievalMetrics?, ranking: TwoStageRanking, alignment: LocalAlignment,
                querybank: QuerybankNormalization? = nil, stageTwo: StageTwoKind = .scan) {
        precondition(stageTwo == .scan || model.gare != nil, "TrainedModel: a GARE stage 2 needs a model with a GARE scorer")
        self.encoder = encoder
        self.dimensions = dimensions
        self.model = model
        self.step = step
        self.metrics = metrics
        self.stageTwoMetrics = stageTwoMetrics
        self.ranking = ranking
        self.alignment = alignment
        self.querybank = querybank
        self.stageTwo = stageTwo
    }

    /// The stage-2 scorer the model serves with.
    public var pairScorer: PairScorer {
        if stageTwo == .gare, let gare = model.gare { return .gare(gare) }
        return .scan(alignment)
    }

    /// Metrics of the ranking as the model serves it (its querybank β and stage-2 α) on `data`.
    public func servedMetrics(on data: RetrievalData) -> RetrievalMetrics {
        let gallery = model.encodeGallery(data)
        return ranking.sweep(alphas: [ranking.alpha], gallery: gallery, scorer: pairScorer, imageOfText: data.imageOfText,
                             offsets: offsets(for: gallery))[0].metrics
    }

    /// Stage-1 offsets of a gallery under the model's querybank normalisation (nil when off).
    public func offsets(for gallery: EncodedGallery) -> ScoreOffsets? {
        guard let querybank, querybank.beta > 0 else { return nil }
        return querybank.offsets(images: gallery.images, texts: gallery.texts)
    }

    static let format = "amber-matching-model/1"

    /// Writes the model atomically (temp file, fsync, rename).
    public func write(to path: String) throws {
        try AtomicFile.write(encodedChunks(), to: path)
    }

    /// The model file's bytes (what ``write(to:)`` writes), e.g. for a database row.
    public func encoded() throws -> [UInt8] {
        try encodedChunks().flatMap { $0 }
    }

    private func encodedChunks() throws -> [[UInt8]] {
        var entries: [String: SafetensorsFile.Entry] = [:]
        for parameter in model.parameters { entries[parameter.name] = .float(parameter.value, .float32) }
        var metadata: [String: String] = try [
            "format": Self.format,
            "encoder": MetadataJSON.encode(encoder),
            "dimensions": MetadataJSON.encode(dimensions),
            "step": String(step),
            "ranking": MetadataJSON.encode(ranking),
            "alignment": MetadataJSON.encode(alignment),
        ]
        if let gare = model.gare { metadata["gare"] = try MetadataJSON.encode(gare.configuration) }
        if stageTwo != .scan { metadata["stage_two"] = stageTwo.rawValue }
        if let metrics { metadata["metrics"] = try MetadataJSON.encode(metrics) }
        if let stageTwoMetrics { metadata["stage_two_metrics"] = try MetadataJSON.encode(stageTwoMetrics) }
        if let querybank {
            metadata["querybank_beta"] = try MetadataJSON.encode(querybank.beta)
            entries["querybank.images"] = .float(querybank.imageQueries, .float32)
            entries["querybank.texts"] = .float(querybank.textQueries, .float32)
        }
        return try SafetensorsFile.encode(entries, metadata: metadata)
    }

    /// Reads a model written by ``write(to:)``; any problem is a `TensorFileError` naming the file.
    public static func read(from path: String) throws -> TrainedModel {
        try read(SafetensorsFile(path: path))
    }

    /// Reads a model from the bytes of its file; `name` (e.g. "model version 3") stands for the
    /// file in errors.
    public static func read(bytes: [UInt8], name: String) throws -> TrainedModel {
        try read(SafetensorsFile(bytes: bytes, name: name))
    }

    static func read(_ safetensors: SafetensorsFile) throws -> TrainedModel {
        let file = try ModelFile(safetensors, format: format, kind: "model")
        let fail = file.fail
        let encoder = try file.field("encoder", as: ModalityEncoder.Configuration.self)
        if let problem = encoder.problem { throw fail("encoder configuration: \(problem)") }
        let dimensions = try file.field("dimensions", as: Dimensions.self)
        if let problem = dimensions.problem { throw fail(problem) }
        guard let step = safetensors.metadata["step"].flatMap(Int.init), step >= 0 else { throw fail("metadata has no non-negative integer 'step'") }
        let gare = try file.optionalField("gare", as: GapAwareScorer.Configuration.self)
        if let problem = gare?.problem { throw fail("GARE configuration: \(problem)") }
        let stageTwo = try safetensors.metadata["stage_two"].map { name in
            guard let kind = StageTwoKind(rawValue: name) else { throw fail("metadata 'stage_two' must be scan or gare, got '\(name)'") }
            return kind
        } ?? .scan
        if stageTwo == .gare && gare == nil { throw fail("stage 2 is GARE but the file has no GARE scorer") }
        var generator = RandomGenerator(seed: 0)
        let model = dimensions.makeModel(encoder, gare: gare, generator: &generator)
        for parameter in model.parameters { parameter.assign(try file.tensor(parameter.name, shape: parameter.shape)) }
        let ranking = try file.field("ranking", as: TwoStageRanking.self)
        guard ranking.alpha >= 0, ranking.alpha <= 1, ranking.depth >= 1, ranking.depth <= 100_000 else {
            throw fail("ranking α \(ranking.alpha) must be in [0, 1] and depth \(ranking.depth) at least 1")
        }
        let alignment = try file.field("alignment", as: LocalAlignment.self)
        guard alignment.temperature.isFinite, alignment.temperature >= 0 else {
            throw fail("alignment temperature \(alignment.temperature) must be finite and ≥ 0")
        }
        var querybank: QuerybankNormalization?
        if let beta = try file.optionalField("querybank_beta", as: Float.self) {
            guard beta >= 0, beta <= 1000 else { throw fail("querybank β \(beta) must be in [0, 1000]") }
            guard safetensors.arrays["querybank.images"] != nil, safetensors.arrays["querybank.texts"] != nil else {
                throw fail("has a querybank β but not the tensors querybank.images and querybank.texts")
            }
            let images = try safetensors.tensor("querybank.images"), texts = try safetensors.tensor("querybank.texts")
            let D = encoder.jointDimension
            guard images.rank == 2, texts.rank == 2, images.shape[1] == D, texts.shape[1] == D, images.shape[0] > 0, texts.shape[0] > 0 else {
                throw fail("querybank tensors have shapes \(images.shape) and \(texts.shape); the model needs [Q, \(D)] with Q ≥ 1")
            }
            querybank = QuerybankNormalization(beta: beta, imageQueries: try file.tensor("querybank.images", shape: images.shape),
                                               textQueries: try file.tensor("querybank.texts", shape: texts.shape))
        }
        return TrainedModel(encoder: encoder, dimensions: dimensions, model: model, step: step,
                            metrics: try file.optionalField("metrics", as: RetrievalMetrics.self),
                            stageTwoMetrics: try file.optionalField("stage_two_metrics", as: RetrievalMetrics.self),
                            ranking: ranking, alignment: alignment, querybank: querybank, stageTwo: stageTwo)
    }
}

/// JSON for file metadata (sorted keys; non-finite floats as strings).
public enum MetadataJSON {
    public static func encode<T: Encodable>(_ value: T) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return String(decoding: try encoder.encode(value), as: UTF8.self)
    }

    public static func decode<T: Decodable>(_ type: T.Type, from text: String) throws -> T {
        let decoder = JSONDecoder()
        decoder.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return try decoder.decode(type, from: Data(text.utf8))
    }
}
