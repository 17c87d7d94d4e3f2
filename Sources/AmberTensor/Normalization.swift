// Normalisations with fused forward and backward passes.

extension Tensor {
    /// `x / max(‖x‖₂, ε)` along `axis` (unit vectors; as `torch.nn.functional.normalize`).
    ///
    /// Gradient where `‖x‖ > ε`: `(g − y (g·y)) / ‖x‖`; elsewhere `g / ε`.
    public func l2Normalized(axis: Int = -1, epsilon: Float = 1e-12) -> Tensor {
        let axis = normalizedAxis(axis)
        let (outer, extent, inner) = axisView(axis)
        let result = Tensor(uninitializedShape: shape)
        var norms = [Float](repeating: 0, count: outer * inner)
        let input = pointer, out = result.pointer
        if inner == 1 {
            // Along the last axis (rows of embeddings): contiguous, 16 lanes at a time.
            for o in 0..<outer {
                let row = input + o * extent, target = out + o * extent
                let norm = Swift.max(VectorMath.dot(row, row, count: extent).squareRoot(), epsilon)
                norms[o] = norm
                let scale = 1 / norm
                for e in 0..<extent { target[e] = row[e] * scale }
            }
            return Tensor.record(result, inputs: [self]) { g in
                let grad = Tensor(uninitializedShape: g.shape)
                let pg = g.pointer, py = result.pointer, pd = grad.pointer
                for o in 0..<outer {
                    let gr = pg + o * extent, yr = py + o * extent, dr = pd + o * extent
                    let norm = norms[o], scale = 1 / norm
                    let dot = norm > epsilon ? VectorMath.dot(gr, yr, count: extent) : 0
                    for e in 0..<extent { dr[e] = (gr[e] - yr[e] * dot) * scale }
                }
                return [grad]
            }
        }
        for o in 0..<outer {
            for j in 0..<inner {
                let base = o * extent * inner + j
                var total: Float = 0
                for e in 0..<extent { let v = input[base + e * inner]; total += v * v }
                let norm = Swift.max(total.squareRoot(), epsilon)
                norms[o * inner + j] = norm
                let scale = 1 / norm
                for e in 0..<extent { out[base + e * inner] = input[base + e * inner] * scale }
            }
        }
        return Tensor.record(result, inputs: [self]) { g in
            let grad = Tensor(uninitializedShape: g.shape)
            let pg = g.pointer, py = result.pointer, pd = grad.pointer
            for o in 0..<outer {
                for j in 0..<inner {
                    let base = o * extent * inner + j
                    let norm = norms[o * inner + j]
                    let scale = 1 / norm
                    if norm > epsilon {
                        var dot: Float = 0
                        for e in 0..<extent { dot += pg[base + e * inner] * py[base + e * inner] }
                        for e in 0..<extent {
                            pd[base + e * inner] = (pg[base + e * inner] - py[base + e * inner] * dot) * scale
                        }
                    } else {
                        for e in 0..<extent { pd[base + e * inner] = pg[base + e * inner] * scale }
                    }
                }
            }
            return [grad]
        }
    }

    /// Layer normalisation over the last axis: `γ ⊙ (x − μ) / √(σ² + ε) + β`
    /// (Ba et al., 2016; biased variance, as BERT).
    /// - Parameters:
    ///   - gain: `γ`, shape `[D]`.
    ///   - bias: `β`, shape `[D]`.
    public func layerNormalized(gain: Tensor, bias: Tensor, epsilon: Float = 1e-5) -> Tensor {
        let width = shape.last ?? 1
        precondition(rank >= 1 && width > 0, "layerNormalized: needs a non-empty last axis, shape \(shape)")
        precondition(gain.shape == [width] && bias.shape == [width],
                     "layerNormalized: gain \(gain.shape) and bias \(bias.shape) must be [\(width)]")
        let rows = count / width
        // x̂ and 1/σ are kept only for a recorded backward pass (inference skips writing them).
        let recording = GradientRecording.isEnabled && [self, gain, bias].contains { $0.node != nil }
        let normalized = Tensor(uninitializedShape: recording ? shape : [0])
        let result = Tensor(uninitializedShape: shape)
        var inverseDeviations = [Float](repeating: 0, count: recording ? rows : 0)
        let input = pointer, xhat = normalized.pointer, out = result.pointer
        let pGain = gain.pointer, pBias = bias.pointer
        for r in 0..<rows {
            let row = input + r * width
            var mean: Float = 0
            for j in 0..<width { mean += row[j] }
            mean /= Float(width)
            var variance: Float = 0
            for j in 0..<width { let d = row[j] - mean; variance += d * d }
            variance /= Float(width)
            let inverse = 1 / (variance + epsilon).squareRoot()
            if recording {
                inverseDeviations[r] = inverse
                for j in 0..<width {
                    let h = (row[j] - mean) * inverse
                    xhat[r * width + j] = h
                    out[r * width + j] = h * pGain[j] + pBias[j]
                }
            } else {
                for j in 0..<width { out[r * width + j] = (row[j] - mean) * inverse * pGain[j] + pBias[j] }
            }
        }
        let savedGain = gain.detached
        return Tensor.record(result, inputs: [self, gain, bias]) { g in
            // dx̂ = g ⊙ γ;  dx = (dx̂ − mean(dx̂) − x̂ · mean(dx̂ ⊙ x̂)) / σ
            let dx = Tensor(uninitializedShape: g.shape)
            let dGain = Tensor(shape: [width], repeating: 0)
            let dBias = Tensor(shape: [width], repeating: 0)
            let pg = g.pointer, ph = normalized.pointer, pdx = dx.pointer
            let pdg = dGain.pointer, pdb = dBias.pointer, pγ = savedGain.pointer
            for r in 0..<rows {
                var meanD: Float = 0, meanDH: Float = 0
                for j in 0..<width {
                    let i = r * width + j
                    let d = pg[i] * pγ[j]
                    meanD += d
                    meanDH += d * ph[i]
                    pdg[j] += pg[i] * ph[i]
                    pdb[j] += pg[i]
                }
                meanD /= Float(width)
                meanDH /= Float(width)
                let inverse = inverseDeviations[r]
                for j in 0..<width {
                    let i = r * width + j
                    pdx[i] = (pg[i] * pγ[j] - meanD - ph[i] * meanDH) * inverse
                }
            }
            return [dx, dGain, dBias]
        }
    }
}
