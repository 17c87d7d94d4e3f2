import AmberTensor

// Shape legend: `B` batch, `Di` image global dimension, `Dt` text global dimension, `D` joint.

/// VSE++ on global vectors (Faghri et al. 2018): one linear projection per modality into a
/// joint space, L2-normalised, trained with the hardest-negative triplet loss. A baseline for
/// the full model, in the same harness.
public struct VSEBaseline: Sendable {
    public let imageProjection: Linear
    public let textProjection: Linear

    public init(imageDimension: Int, textDimension: Int, jointDimension: Int, generator: inout RandomGenerator) {
        imageProjection = Linear(inputs: imageDimension, outputs: jointDimension, name: "vse.image", generator: &generator)
        textProjection = Linear(inputs: textDimension, outputs: jointDimension, name: "vse.text", generator: &generator)
    }

    public var parameters: [Parameter] { imageProjection.parameters + textProjection.parameters }

    /// `[B, Di]` → `[B, D]`, unit length.
    public func embedImages(_ global: Tensor) -> Tensor { imageProjection(global).l2Normalized(axis: -1) }

    /// `[B, Dt]` → `[B, D]`, unit length.
    public func embedTexts(_ global: Tensor) -> Tensor { textProjection(global).l2Normalized(axis: -1) }
}
