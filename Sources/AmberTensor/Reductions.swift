#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// Reductions and axis-wise normalisations. An axis op views the tensor as
// `[outer, extent, inner]` around the axis (see `axisView`), so one loop nest serves every axis.

/// The `k` largest values along an axis and where they were.
public struct TopK {
    /// Values, largest first: the input shape with the axis extent replaced by `k`.
    public var values: Tensor
    /// Positions along the axis, row-major in the shape of `values`.
    public var indices: [Int]
}

extension Tensor {
    func reducedShape(axis: Int, keepingDimension: Bool) -> [Int] {
        var result = shape
        if keepingDimension { result[axis] = 1 } else { result.remove(at: axis) }
        return result
    }

    /// Sum of all elements (rank 0).
    public func sum() -> Tensor {
        var total: Float = 0
        let p = pointer
        for i in 0..<count { total += p[i] }
        let sourceShape = shape
        return Tensor.record(Tensor(total), inputs: [self]) { g in
            [Tensor(shape: sourceShape, repeating: g.scalar)]
        }
    }

    /// Mean of all elements (rank 0).
    public func mean() -> Tensor {
        precondition(count > 0, "mean() of an empty tensor, shape \(shape)")
        return sum() * (1 / Float(count))
    }

    /// Sum along `axis`.
    public func sum(axis: Int, keepingDimension: Bool = false) -> Tensor {
        let axis = normalizedAxis(axis)
        let (outer, extent, inner) = axisView(axis)
        let result = Tensor(shape: reducedShape(axis: axis, keepingDimension: keepingDimension), repeating: 0)
        let input = pointer, out = result.pointer
        for o in 0..<outer {
            let po = out + o * inner
            for e in 0..<extent {
                let pi = input + (o * extent + e) * inner
                for j in 0..<inner { po[j] += pi[j] }
            }
        }
        let sourceShape = shape
        let keptShape = reducedShape(axis: axis, keepingDimension: true)
        return Tensor.record(result, inputs: [self]) { g in
            [g.reshaped(keptShape).broadcast(to: sourceShape)]
        }
    }

    /// Mean along `axis`.
    public func mean(axis: Int, keepingDimension: Bool = false) -> Tensor {
        let extent = shape[normalizedAxis(axis)]
        precondition(extent > 0, "mean(axis:) over an empty axis, shape \(shape)")
        return sum(axis: axis, keepingDimension: keepingDimension) * (1 / Float(extent))
    }

    /// Largest value along `axis`; the gradient goes to the first position holding it.
    public func max(axis: Int, keepingDimension: Bool = false) -> Tensor {
        let axis = normalizedAxis(axis)
        precondition(shape[axis] > 0, "max(axis:) over an empty axis, shape \(shape)")
        let top = topK(1, axis: axis)
        return keepingDimension ? top.values : top.values.reshaped(reducedShape(axis: axis, keepingDimension: false))
    }

    /// Position of the largest value along `axis`, row-major over the reduced shape.
    public func argmax(axis: Int) -> [Int] {
        topK(1, axis: axis).indices
    }

    /// `log Σ exp(x)` along `axis`, computed stably (shifted by the maximum).
    public func logSumExp(axis: Int, keepingDimension: Bool = false) -> Tensor {
        let axis = normalizedAxis(axis)
        let (outer, extent, inner) = axisView(axis)
        precondition(extent > 0, "logSumExp over an empty axis, shape \(shape)")
        let keptShape = reducedShape(axis: axis, keepingDimension: true)
        let result = Tensor(uninitializedShape: keptShape)
        let input = pointer, out = result.pointer
        for o in 0..<outer {
            for j in 0..<inner {
                var peak = -Float.infinity
                for e in 0..<extent { peak = Swift.max(peak, input[(o * extent + e) * inner + j]) }
                if peak == -.infinity { out[o * inner + j] = -.infinity; continue }
                var total: Float = 0
                for e in 0..<extent { total += expf(input[(o * extent + e) * inner + j] - peak) }
                out[o * inner + j] = peak + logf(total)
            }
        }
        let saved = detached
        let sourceShape = shape
        let recorded = Tensor.record(result, inputs: [self]) { g in
            // d/dx logΣexp = softmax(x)
            [(saved - result).exp() * g.broadcast(to: sourceShape)]
        }
        return keepingDimension ? recorded : recorded.reshaped(reducedShape(axis: axis, keepingDimension: false))
    }

    /// The `k` largest values along `axis`, in descending order (ties: lower index first).
    public func topK(_ k: Int, axis: Int = -1) -> TopK {
        let axis = normalizedAxis(axis)
        let (outer, extent, inner) = axisView(axis)
        precondition(k >= 1 && k <= extent, "topK: k = \(k) must be in 1...\(extent) for shape \(shape)")
        var outShape = shape
        outShape[axis] = k
        let values = Tensor(uninitializedShape: outShape)
        var indices = [Int](repeating: 0, count: outer * k * inner)
        let input = pointer, out = values.pointer
        if k <= 2 && inner >= 8 {
            Self.topOneOrTwo(input, out, &indices, k: k, outer: outer, extent: extent, inner: inner)
        } else {
        var best = [Int](repeating: 0, count: k)
        for o in 0..<outer {
            for j in 0..<inner {
                // Insertion into a sorted buffer of size k: O(extent · k), fine for small k.
                var filled = 0
                for e in 0..<extent {
                    let v = input[(o * extent + e) * inner + j]
                    if filled == k && !(v > input[(o * extent + best[k - 1]) * inner + j]) { continue }
                    var position = filled == k ? k - 1 : filled
                    if filled < k { filled += 1 }
                    while position > 0 && v > input[(o * extent + best[position - 1]) * inner + j] {
                        best[position] = best[position - 1]
                        position -= 1
                    }
                    best[position] = e
                }
                for r in 0..<k {
                    let target = (o * k + r) * inner + j
                    indices[target] = best[r]
                    out[target] = input[(o * extent + best[r]) * inner + j]
                }
            }
        }
        }
        let sourceShape = shape
        let frozenIndices = indices
        let recorded = Tensor.record(values, inputs: [self]) { g in
            let grad = Tensor(shape: sourceShape, repeating: 0)
            let pg = g.pointer, pd = grad.pointer
            for o in 0..<outer {
                for r in 0..<k {
                    for j in 0..<inner {
                        let source = (o * k + r) * inner + j
                        pd[(o * extent + frozenIndices[source]) * inner + j] += pg[source]
                    }
                }
            }
            return [grad]
        }
        return TopK(values: recorded, indices: indices)
    }

    /// The largest (k = 1) or two largest (k = 2) values along an axis with `inner` ≥ 8
    /// contiguous positions after it (e.g. max-2 pooling over fragments, `[B, n, D]` along n):
    /// one pass over the axis keeps a running best and second best per position, so the loop
    /// over positions vectorises. Same values, indices and ties as the insertion above (the
    /// first `k` entries fill the buffer whatever they are; later ones enter when strictly larger).
    private static func topOneOrTwo(_ input: UnsafeMutablePointer<Float>, _ out: UnsafeMutablePointer<Float>, _ indices: inout [Int],
                                    k: Int, outer: Int, extent: Int, inner: Int) {
        var first = [Int32](repeating: 0, count: inner), second = [Int32](repeating: 0, count: inner)
        first.withUnsafeMutableBufferPointer { firstBuffer in
            second.withUnsafeMutableBufferPointer { secondBuffer in
                guard let i1 = firstBuffer.baseAddress, let i2 = secondBuffer.baseAddress else { return }
                for o in 0..<outer {
                    let base = input + o * extent * inner
                    let v1 = out + o * k * inner
                    for j in 0..<inner { v1[j] = base[j]; i1[j] = 0 }
                    if k == 1 {
                        for e in 1..<extent {
                            let row = base + e * inner, index = Int32(e)
                            for j in 0..<inner {
                                let v = row[j], a = v1[j]
                                let greater = v > a
                                v1[j] = greater ? v : a
                                i1[j] = greater ? index : i1[j]
                            }
                        }
                    } else {
                        let v2 = v1 + inner
                        let row = base + inner
                        for j in 0..<inner {
                            let v = row[j], a = v1[j]
                            let greater = v > a
                            v2[j] = greater ? a : v
                            i2[j] = greater ? 0 : 1
                            v1[j] = greater ? v : a
                            i1[j] = greater ? 1 : 0
                        }
                        for e in 2..<extent {
                            let row = base + e * inner, index = Int32(e)
                            for j in 0..<inner {
                                let v = row[j], a = v1[j], b = v2[j]
                                let aboveSecond = v > b, aboveFirst = aboveSecond && v > a   // (NaN kept second blocks entry)
                                v2[j] = aboveFirst ? a : (aboveSecond ? v : b)
                                i2[j] = aboveFirst ? i1[j] : (aboveSecond ? index : i2[j])
                                v1[j] = aboveFirst ? v : a
                                i1[j] = aboveFirst ? index : i1[j]
                            }
                        }
                        for j in 0..<inner { indices[(o * k + 1) * inner + j] = Int(i2[j]) }
                    }
                    for j in 0..<inner { indices[o * k * inner + j] = Int(i1[j]) }
                }
            }
        }
    }

    /// `softmax(x)_i = exp(x_i) / Σ_j exp(x_j)` along `axis`.
    public func softmax(axis: Int = -1) -> Tensor {
        let axis = normalizedAxis(axis)
        let (outer, extent, inner) = axisView(axis)
        let result = Tensor(uninitializedShape: shape)
        let input = pointer, out = result.pointer
        for o in 0..<outer {
            for j in 0..<inner {
                let base = o * extent * inner + j
                var peak = -Float.infinity
                for e in 0..<extent { peak = Swift.max(peak, input[base + e * inner]) }
                var total: Float = 0
                if inner == 1 {
                    // Contiguous lane: shift, vectorised exp, sum.
                    for e in 0..<extent { out[base + e] = input[base + e] - peak }
                    VectorMath.map(out + base, out + base, count: extent, lanes: VectorMath.exp, scalar: { expf($0) })
                    for e in 0..<extent { total += out[base + e] }
                } else {
                    for e in 0..<extent {
                        let v = expf(input[base + e * inner] - peak)
                        out[base + e * inner] = v
                        total += v
                    }
                }
                let scale = 1 / total
                for e in 0..<extent { out[base + e * inner] *= scale }
            }
        }
        return Tensor.record(result, inputs: [self]) { g in
            // dx = y ⊙ (g − Σ g ⊙ y)
            let grad = Tensor(uninitializedShape: g.shape)
            let pg = g.pointer, py = result.pointer, pd = grad.pointer
            for o in 0..<outer {
                for j in 0..<inner {
                    let base = o * extent * inner + j
                    var dot: Float = 0
                    for e in 0..<extent { dot += pg[base + e * inner] * py[base + e * inner] }
                    for e in 0..<extent {
                        pd[base + e * inner] = py[base + e * inner] * (pg[base + e * inner] - dot)
                    }
                }
            }
            return [grad]
        }
    }

    /// `log softmax(x)` along `axis`, computed stably.
    public func logSoftmax(axis: Int = -1) -> Tensor {
        let axis = normalizedAxis(axis)
        let (outer, extent, inner) = axisView(axis)
        let result = Tensor(uninitializedShape: shape)
        let input = pointer, out = result.pointer
        for o in 0..<outer {
            for j in 0..<inner {
                let base = o * extent * inner + j
                var peak = -Float.infinity
                for e in 0..<extent { peak = Swift.max(peak, input[base + e * inner]) }
                var total: Float = 0
                for e in 0..<extent { total += expf(input[base + e * inner] - peak) }
                let shift = peak + logf(total)
                for e in 0..<extent { out[base + e * inner] = input[base + e * inner] - shift }
            }
        }
        return Tensor.record(result, inputs: [self]) { g in
            // dx = g − softmax(x) · Σ g
            let grad = Tensor(uninitializedShape: g.shape)
            let pg = g.pointer, py = result.pointer, pd = grad.pointer
            for o in 0..<outer {
                for j in 0..<inner {
                    let base = o * extent * inner + j
                    var total: Float = 0
                    for e in 0..<extent { total += pg[base + e * inner] }
                    for e in 0..<extent {
                        pd[base + e * inner] = pg[base + e * inner] - expf(py[base + e * inner]) * total
                    }
                }
            }
            return [grad]
        }
    }
}
