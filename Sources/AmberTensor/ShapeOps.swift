// Ops that move elements without arithmetic: reshape, transpose, concatenate, split, slice,
// index-select, gather, scatter-add.

extension Tensor {
    /// The same elements with a new shape (a view: no copy). One extent may be `-1` (inferred).
    public func reshaped(_ newShape: [Int]) -> Tensor {
        var resolved = newShape
        if let unknown = newShape.firstIndex(of: -1) {
            var known = 1
            for (axis, extent) in newShape.enumerated() where axis != unknown { known *= extent }
            precondition(known > 0 && count % known == 0, "reshaped: cannot infer \(newShape) from \(shape)")
            resolved[unknown] = count / known
        }
        precondition(Tensor.elementCount(resolved) == count,
                     "reshaped: \(shape) (\(count) elements) cannot become \(newShape)")
        let view = Tensor(shape: resolved, storage: storage, offset: offset)
        let sourceShape = shape
        return Tensor.record(view, inputs: [self]) { g in [g.reshaped(sourceShape)] }
    }

    /// Swaps two axes (copies the elements into the new order).
    public func transposed(_ first: Int = -2, _ second: Int = -1) -> Tensor {
        let a = normalizedAxis(first), b = normalizedAxis(second)
        if a == b { return self }
        var newShape = shape
        newShape.swapAt(a, b)
        let result = Tensor(uninitializedShape: newShape)
        // Source strides permuted into the result's axis order.
        var sourceStrides = [Int](repeating: 1, count: rank)
        for axis in stride(from: rank - 2, through: 0, by: -1) {
            sourceStrides[axis] = sourceStrides[axis + 1] * shape[axis + 1]
        }
        sourceStrides.swapAt(a, b)
        Tensor.stridedCopy(from: pointer, strides: sourceStrides, shape: newShape, to: result.pointer)
        return Tensor.record(result, inputs: [self]) { g in [g.transposed(a, b)] }
    }

    /// Copies a strided source into a contiguous destination of `shape`.
    static func stridedCopy(
        from source: UnsafeMutablePointer<Float>, strides: [Int], shape: [Int],
        to destination: UnsafeMutablePointer<Float>
    ) {
        let total = elementCount(shape)
        guard total > 0 else { return }
        let rank = shape.count
        guard rank > 0 else { destination[0] = source[0]; return }
        let inner = shape[rank - 1], innerStride = strides[rank - 1]
        var index = [Int](repeating: 0, count: rank)
        var sourceOffset = 0, written = 0
        while written < total {
            let src = source + sourceOffset, dst = destination + written
            if innerStride == 1 {
                dst.update(from: src, count: inner)
            } else {
                for j in 0..<inner { dst[j] = src[j * innerStride] }
            }
            written += inner
            var axis = rank - 2
            while axis >= 0 {
                index[axis] += 1
                sourceOffset += strides[axis]
                if index[axis] < shape[axis] { break }
                sourceOffset -= strides[axis] * shape[axis]
                index[axis] = 0
                axis -= 1
            }
        }
    }

    /// Joins tensors along `axis`; all other extents must agree.
    public static func concatenate(_ parts: [Tensor], axis: Int = 0) -> Tensor {
        precondition(!parts.isEmpty, "concatenate: no tensors")
        let first = parts[0]
        let axis = first.normalizedAxis(axis)
        var total = 0
        for part in parts {
            precondition(part.rank == first.rank, "concatenate: ranks differ, \(first.shape) and \(part.shape)")
            for a in 0..<first.rank where a != axis {
                precondition(part.shape[a] == first.shape[a],
                             "concatenate along \(axis): shapes \(first.shape) and \(part.shape) differ off-axis")
            }
            total += part.shape[axis]
        }
        var outShape = first.shape
        outShape[axis] = total
        let result = Tensor(uninitializedShape: outShape)
        let (outer, _, inner) = first.axisView(axis)
        var start = 0
        for part in parts {
            let width = part.shape[axis] * inner
            let source = part.pointer
            for o in 0..<outer {
                (result.pointer + o * total * inner + start * inner).update(from: source + o * width, count: width)
            }
            start += part.shape[axis]
        }
        let extents = parts.map { $0.shape[axis] }
        return record(result, inputs: parts) { g in g.split(extents, axis: axis) }
    }

    /// Cuts along `axis` into consecutive pieces of the given extents (which must add up).
    public func split(_ extents: [Int], axis: Int = 0) -> [Tensor] {
        let axis = normalizedAxis(axis)
        precondition(extents.reduce(0, +) == shape[axis],
                     "split: extents \(extents) do not add up to \(shape[axis]) (shape \(shape))")
        var start = 0
        return extents.map { extent in
            defer { start += extent }
            return slice(axis: axis, start ..< start + extent)
        }
    }

    /// The elements with index in `range` along `axis`. Along axis 0 this is a view.
    public func slice(axis: Int = 0, _ range: Range<Int>) -> Tensor {
        let axis = normalizedAxis(axis)
        precondition(range.lowerBound >= 0 && range.upperBound <= shape[axis],
                     "slice: range \(range) out of bounds for axis \(axis) of shape \(shape)")
        var outShape = shape
        outShape[axis] = range.count
        let (outer, extent, inner) = axisView(axis)
        let result: Tensor
        if outer == 1 {
            result = Tensor(shape: outShape, storage: storage, offset: offset + range.lowerBound * inner)
        } else {
            result = Tensor(uninitializedShape: outShape)
            let width = range.count * inner
            for o in 0..<outer {
                (result.pointer + o * width).update(from: pointer + (o * extent + range.lowerBound) * inner, count: width)
            }
        }
        let sourceShape = shape
        return Tensor.record(result, inputs: [self]) { g in
            let grad = Tensor(shape: sourceShape, repeating: 0)
            let width = range.count * inner
            for o in 0..<outer {
                (grad.pointer + (o * extent + range.lowerBound) * inner).update(from: g.pointer + o * width, count: width)
            }
            return [grad]
        }
    }

    /// Selects entries along `axis` by position (`indices` may repeat; rows of an embedding
    /// table with `axis: 0`). The result has extent `indices.count` on `axis`.
    public func indexSelect(_ indices: [Int], axis: Int = 0) -> Tensor {
        let axis = normalizedAxis(axis)
        let (outer, extent, inner) = axisView(axis)
        for i in indices {
            precondition(i >= 0 && i < extent, "indexSelect: index \(i) out of range 0..<\(extent) on axis \(axis) of \(shape)")
        }
        var outShape = shape
        outShape[axis] = indices.count
        let result = Tensor(uninitializedShape: outShape)
        for o in 0..<outer {
            for (r, i) in indices.enumerated() {
                (result.pointer + (o * indices.count + r) * inner).update(from: pointer + (o * extent + i) * inner, count: inner)
            }
        }
        let sourceShape = shape
        return Tensor.record(result, inputs: [self]) { g in
            [Tensor.zeros(sourceShape).scatterAdding(g.detached, at: indices, axis: axis)]
        }
    }

    /// `self` with `source` added at `indices` along `axis`: entry `r` of `source` on that axis
    /// is added to entry `indices[r]` of `self` (repeated indices add up). The adjoint of
    /// ``indexSelect(_:axis:)``.
    public func scatterAdding(_ source: Tensor, at indices: [Int], axis: Int = 0) -> Tensor {
        let axis = normalizedAxis(axis)
        let (outer, extent, inner) = axisView(axis)
        var expected = shape
        expected[axis] = indices.count
        precondition(source.shape == expected,
                     "scatterAdding: source shape \(source.shape) should be \(expected) for \(indices.count) indices into \(shape)")
        var result = detached
        result.makeUniqueStorage()
        let out = result.pointer, input = source.pointer
        for o in 0..<outer {
            for (r, i) in indices.enumerated() {
                precondition(i >= 0 && i < extent, "scatterAdding: index \(i) out of range 0..<\(extent)")
                let dst = out + (o * extent + i) * inner, src = input + (o * indices.count + r) * inner
                for j in 0..<inner { dst[j] += src[j] }
            }
        }
        return Tensor.record(result, inputs: [self, source]) { g in
            [g, g.indexSelect(indices, axis: axis)]
        }
    }

    /// Picks, for every position of the result, one entry along `axis`: `result[…, r, …] =
    /// self[…, indices[…, r, …], …]` (`torch.gather`). `indices` is row-major in the result
    /// shape, which is this shape with extent `indices.count / (outer · inner)` on `axis`.
    public func gather(_ indices: [Int], axis: Int) -> Tensor {
        let axis = normalizedAxis(axis)
        let (outer, extent, inner) = axisView(axis)
        precondition(outer * inner > 0 && indices.count % (outer * inner) == 0,
                     "gather: \(indices.count) indices do not fit shape \(shape) along axis \(axis)")
        let picked = indices.count / (outer * inner)
        var outShape = shape
        outShape[axis] = picked
        let result = Tensor(uninitializedShape: outShape)
        let out = result.pointer, input = pointer
        for o in 0..<outer {
            for r in 0..<picked {
                for j in 0..<inner {
                    let target = (o * picked + r) * inner + j
                    let i = indices[target]
                    precondition(i >= 0 && i < extent, "gather: index \(i) out of range 0..<\(extent)")
                    out[target] = input[(o * extent + i) * inner + j]
                }
            }
        }
        let sourceShape = shape
        return Tensor.record(result, inputs: [self]) { g in
            let grad = Tensor(shape: sourceShape, repeating: 0)
            let pg = g.pointer, pd = grad.pointer
            for o in 0..<outer {
                for r in 0..<picked {
                    for j in 0..<inner {
                        let source = (o * picked + r) * inner + j
                        pd[(o * extent + indices[source]) * inner + j] += pg[source]
                    }
                }
            }
            return [grad]
        }
    }

    /// Inserts an axis of extent 1 at `axis` (a view).
    public func expandingDimension(at axis: Int) -> Tensor {
        let position = axis < 0 ? axis + rank + 1 : axis
        precondition(position >= 0 && position <= rank, "expandingDimension: axis \(axis) for shape \(shape)")
        var newShape = shape
        newShape.insert(1, at: position)
        return reshaped(newShape)
    }

    /// Removes an axis of extent 1 (a view).
    public func squeezing(axis: Int) -> Tensor {
        let axis = normalizedAxis(axis)
        precondition(shape[axis] == 1, "squeezing: axis \(axis) of \(shape) has extent \(shape[axis]), not 1")
        var newShape = shape
        newShape.remove(at: axis)
        return reshaped(newShape)
    }
}

extension Tensor {
    /// Items of different lengths stacked into one batch, zero-padded to the longest:
    /// `[counts.count, n, rowWidth]` with `n = max(counts ∪ [minimumLength])`. `write(item, row)`
    /// fills item `item`'s `counts[item] × rowWidth` values starting at `row`. The one padding of
    /// Amber's variable-length inputs (fragments of a batch of items, a gallery's candidates).
    public static func padded(counts: [Int], rowWidth: Int, minimumLength: Int = 0,
                              write: (_ item: Int, _ row: UnsafeMutablePointer<Float>) -> Void) -> Tensor {
        let n = Swift.max(counts.max() ?? 0, minimumLength)
        let result = Tensor(shape: [counts.count, n, rowWidth], repeating: 0)
        let out = result.pointer
        for (item, count) in counts.enumerated() {
            precondition(count >= 0 && count <= n, "Tensor.padded: item \(item) has \(count) rows of at most \(n)")
            write(item, out + item * n * rowWidth)
        }
        return result
    }
}
