import AmberCatalog
import AmberTensor

// Shape legend: `B` items, `n` fragments (padded to the longest), `D` joint dimension.

/// A model as the query service serves it: the matching model (learnt from pairs; global stage,
/// querybank, local re-rank) or a label-supervised model (DRCL; one network per modality into
/// the shared space, a global stage only). Either turns each modality's items into unit
/// vectors of one space, so the search, the galleries and their cache work the same.
public enum ServedModel: Sendable {
    case matching(TrainedModel)
    case labels(LabelSupervisedModel)

    /// Reads a model file of either kind (by its format); `name` stands for the file in errors.
    public static func read(bytes: [UInt8], name: String) throws -> ServedModel {
        let file = try SafetensorsFile(bytes: bytes, name: name)
        if file.metadata["format"] == LabelSupervisedModel.format {
            let model = try LabelSupervisedModel.read(file)
            let missing = Modality.allCases.filter { model.encoders[$0] == nil }
            guard missing.isEmpty else {
                throw TensorFileError(path: name, problem: "a label-supervised model without a \(missing.map(\.rawValue).joined(separator: " and ")) network cannot serve a cross-modal search; train that modality (amber train --supervision labels --modality \(missing[0].rawValue) --from …)")
            }
            return .labels(model)
        }
        return .matching(try TrainedModel.read(file))
    }

    /// The file's bytes (the gallery cache's fingerprint is their digest).
    public func encoded() throws -> [UInt8] {
        switch self {
        case .matching(let model): try model.encoded()
        case .labels(let model): try model.encoded()
        }
    }

    /// `D`.
    public var jointDimension: Int {
        switch self {
        case .matching(let model): model.encoder.jointDimension
        case .labels(let model): model.configuration.output
        }
    }

    /// Stage-1 hubness correction (matching models that have one).
    public var querybank: QuerybankNormalization? {
        if case .matching(let model) = self { return model.querybank }
        return nil
    }

    /// The stage-2 re-rank: the pair scorer and its α, or nil for a model with a global stage only.
    public var localStage: (scorer: PairScorer, ranking: TwoStageRanking)? {
        if case .matching(let model) = self { return (model.pairScorer, model.ranking) }
        return nil
    }

    /// The feature dimensions items and queries of `modality` need: the global vector's, and the
    /// local vectors' (nil: any; a label-supervised model reads the global vector only).
    public func featureDimensions(_ modality: Modality) -> (global: Int, fragment: Int?) {
        switch self {
        case .matching(let model):
            let d = model.dimensions
            return modality == .image ? (d.imageGlobal, d.imageFragment) : (d.textGlobal, d.textFragment)
        case .labels(let model):
            return (model.encoders[modality]?.inputDimension ?? 0, nil)
        }
    }

    /// Embeddings `[B, D]` of items of `modality` and, for a model with a local stage, their
    /// projected fragments `[B, n, D]` (padding rows past each item's count). Items must have
    /// the ``featureDimensions(_:)`` (and, for the matching model, 2 or more local vectors).
    public func encode(_ modality: Modality, _ items: [ItemFeatures]) -> (fused: Tensor, fragments: Tensor?) {
        withoutGradients {
            switch self {
            case .matching(let model):
                let encoder = modality == .image ? model.model.imageEncoder : model.model.textEncoder
                let encoded = encoder(EncoderInput(items))
                return (encoded.fused, encoded.fragments)
            case .labels(let model):
                guard let encoder = model.encoders[modality] else { preconditionFailure("ServedModel: no \(modality) network (read(bytes:) refuses such models)") }
                let global = Tensor(shape: [items.count, encoder.inputDimension], scalars: items.flatMap(\.global))
                return (encoder(global), nil)
            }
        }
    }
}
