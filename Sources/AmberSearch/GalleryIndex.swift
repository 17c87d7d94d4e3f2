import AmberTensor
import Foundation

// Shape legend: `G` gallery items, `D` embedding dimension (any; SIMD in blocks of 64 with a
// scalar tail), `W = ⌈D / 64⌉`
// words of sign bits per item, `k` results, `C` prefilter candidates.

/// Stage 1 of the query service: the fused embeddings of every gallery item of one
/// modality in memory, searched by inner product.
///
/// - **Exact**: every item is scored (`s = e · q − o`, with the querybank offsets `o` when the
///   model has them), split over the cores, each keeping its own top `k`; then merged.
/// - **Binary prefilter** (large galleries): each item also keeps the sign bits of its
///   embedding (`W` 64-bit words); a query's candidates are the `C` items whose codes are
///   nearest in Hamming distance (XOR + popcount), and only they are scored exactly. Sign bits of
///   unit vectors approximate their angle (random-hyperplane LSH over the embedding's own
///   axes), so the exact re-score of a few thousand candidates recovers the top 10 nearly always
///   (measured by `amber bench search`).
///
/// Buffer sizes: `G·D` floats (4 bytes each) plus `G·W` words (8 bytes each) for the codes.
///
/// An index is an immutable view of its first `count` items; ``adding(itemIDs:embeddings:offsets:)``
/// returns a larger view that shares the rows already there (they are neither copied nor signed
/// again), so a gallery grows at the cost of its new items (amortised: buffers move to 1.5 ×
/// their size when full; untouched reserve costs no resident memory).
public final class GalleryIndex: @unchecked Sendable {
    public let dimension: Int
    /// Items in this view.
    public let count: Int
    private let ids: AppendableBuffer<Int64>
    /// `[G, D]` row-major, as given (unit length for cosine).
    private let vectors: AppendableBuffer<Float>
    /// Per-item offsets subtracted from scores (querybank normalisation), or nil.
    private let offsetValues: AppendableBuffer<Float>?
    /// `[G, W]` sign-bit codes, or nil when not built.
    private let codeWords: AppendableBuffer<UInt64>?
    private let words: Int

    /// The caller's identifier of each item (e.g. the store's item id), by position (a copy).
    public var itemIDs: [Int64] { ids.array(count) }
    /// The caller's identifier of the item at `position`.
    public func itemID(at position: Int) -> Int64 { ids[position] }

    /// Builds an index over `embeddings` (`[G, D]` row-major).
    /// - Parameters:
    ///   - offsets: subtracted from every score of the item (querybank normalisation); nil for none.
    ///   - withCodes: also build the sign-bit codes for ``search(_:k:prefilter:)``.
    public convenience init(itemIDs: [Int64], embeddings: [Float], dimension: Int, offsets: [Float]? = nil, withCodes: Bool = false) {
        precondition(dimension > 0, "GalleryIndex: dimension \(dimension) must be positive")
        precondition(embeddings.count == itemIDs.count * dimension,
                     "GalleryIndex: \(embeddings.count) values for \(itemIDs.count) items of dimension \(dimension)")
        precondition(offsets.map { $0.count == itemIDs.count } ?? true, "GalleryIndex: \(offsets?.count ?? 0) offsets for \(itemIDs.count) items")
        let G = itemIDs.count, reserve = max(G / 2, 1024)
        let vectors = AppendableBuffer(embeddings, reserve: reserve * dimension)
        self.init(count: G, dimension: dimension, ids: AppendableBuffer(itemIDs, reserve: reserve), vectors: vectors,
                  offsets: offsets.map { AppendableBuffer($0, reserve: reserve) },
                  codes: withCodes ? Self.signAll(vectors, count: G, dimension: dimension, reserve: reserve) : nil)
    }

    private init(count: Int, dimension: Int, ids: AppendableBuffer<Int64>, vectors: AppendableBuffer<Float>,
                 offsets: AppendableBuffer<Float>?, codes: AppendableBuffer<UInt64>?) {
        self.count = count
        self.dimension = dimension
        self.ids = ids
        self.vectors = vectors
        offsetValues = offsets
        codeWords = codes
        words = (dimension + 63) / 64
    }

    /// Sign-bit codes of the first `count` rows of `vectors`, over both cores.
    private static func signAll(_ vectors: AppendableBuffer<Float>, count G: Int, dimension: Int, reserve: Int) -> AppendableBuffer<UInt64> {
        let words = (dimension + 63) / 64
        let codes = AppendableBuffer(repeatElement(UInt64(0), count: G * words), reserve: reserve * words)
        let source = UncheckedSendable(vectors.base), target = UncheckedSendable(codes.base)
        parallel(G) { range in
            for item in range { signBits(source.value + item * dimension, dimension: dimension, into: target.value + item * words) }
        }
        return codes
    }

    /// This index followed by `itemIDs` with their `embeddings` (`[n, D]`) and, when this index
    /// has them, their `offsets` (and sign-bit codes, made for the new rows only). This view is
    /// unchanged; the new one shares its rows.
    public func adding(itemIDs newIDs: [Int64], embeddings newRows: [Float], offsets newOffsets: [Float]?) -> GalleryIndex {
        precondition(newRows.count == newIDs.count * dimension,
                     "GalleryIndex.adding: \(newRows.count) values for \(newIDs.count) items of dimension \(dimension)")
        precondition((newOffsets == nil) == (offsetValues == nil) && (newOffsets?.count ?? newIDs.count) == newIDs.count,
                     "GalleryIndex.adding: \(newOffsets?.count ?? 0) offsets for \(newIDs.count) items, index \(offsetValues == nil ? "without" : "with") offsets")
        var codes: AppendableBuffer<UInt64>?
        if let codeWords {
            var newCodes = [UInt64](repeating: 0, count: newIDs.count * words)
            newRows.withUnsafeBufferPointer { rows in
                newCodes.withUnsafeMutableBufferPointer { out in
                    for item in 0..<newIDs.count {
                        Self.signBits(rows.baseAddress! + item * dimension, dimension: dimension, into: out.baseAddress! + item * words)
                    }
                }
            }
            codes = codeWords.appending(newCodes, toViewOf: count * words)
        }
        var offsets: AppendableBuffer<Float>?
        if let offsetValues, let newOffsets { offsets = offsetValues.appending(newOffsets, toViewOf: count) }
        return GalleryIndex(count: count + newIDs.count, dimension: dimension, ids: ids.appending(newIDs, toViewOf: count),
                            vectors: vectors.appending(newRows, toViewOf: count * dimension), offsets: offsets, codes: codes)
    }

    /// This index with sign-bit codes (built once over every row), for a gallery that grew past
    /// the size where the prefilter pays; itself when it has them.
    public func withCodes() -> GalleryIndex {
        guard codeWords == nil else { return self }
        return GalleryIndex(count: count, dimension: dimension, ids: ids, vectors: vectors, offsets: offsetValues,
                            codes: Self.signAll(vectors, count: count, dimension: dimension, reserve: max(count / 2, 1024)))
    }

    /// Whether scores are corrected by per-item (querybank) offsets.
    public var hasOffsets: Bool { offsetValues != nil }

    /// The offset subtracted from the item's scores (0 without offsets).
    public func offset(at position: Int) -> Float { offsetValues?[position] ?? 0 }

    /// Whether ``search(_:k:prefilter:)`` can use the binary prefilter.
    public var hasCodes: Bool { codeWords != nil }

    /// The embedding of the item at `position`.
    public func embedding(at position: Int) -> [Float] {
        Array(UnsafeBufferPointer(start: vectors.base + position * dimension, count: dimension))
    }

    /// One result: the item's position in the index and its (offset-corrected) score.
    public struct Hit: Sendable, Equatable {
        public var position: Int
        public var score: Float
    }

    /// The `k` best items for `query` (`[D]`), best first (ties: lower position first).
    /// - Parameter prefilter: score only the `prefilter` items nearest in Hamming distance
    ///   (needs codes); nil scores every item.
    public func search(_ query: [Float], k: Int, prefilter: Int? = nil, weighted: Bool = true) -> [Hit] {
        precondition(query.count == dimension, "GalleryIndex.search: query of \(query.count) values, index of dimension \(dimension)")
        let k = min(max(k, 0), count)
        guard k > 0 else { return [] }
        if let prefilter, let codeWords, prefilter < count {
            return searchPrefiltered(query, k: k, candidates: max(prefilter, k), weighted: weighted, codes: codeWords.base)
        }
        return query.withUnsafeBufferPointer { q in
            let parts = Self.parallelMap(count) { range -> [(score: Float, index: Int)] in
                var top = TopScores(k)
                for item in range { top.offer(score(item, q.baseAddress!), item) }
                return top.entries
            }
            var merged = TopScores(k)
            for part in parts { for entry in part { merged.offer(entry.score, entry.index) } }
            return merged.sorted.map { Hit(position: $0.index, score: $0.score) }
        }
    }

    private func searchPrefiltered(_ query: [Float], k: Int, candidates: Int, weighted: Bool, codes: UnsafeMutablePointer<UInt64>) -> [Hit] {
        var queryCode = [UInt64](repeating: 0, count: words)
        query.withUnsafeBufferPointer { q in queryCode.withUnsafeMutableBufferPointer { Self.signBits(q.baseAddress!, dimension: dimension, into: $0.baseAddress!) } }
        // Weighted Hamming: a disagreeing bit costs 1, 3 or 5 by how large the query's component
        // is (below the median |q|, up to the upper quartile, above it), approximating the loss
        // of inner product `2·|q_j|` that a flipped sign costs (asymmetric: the query keeps its
        // magnitudes, items only their signs). Plain Hamming: every bit costs 1.
        let (upperHalf, upperQuarter) = weighted ? Self.magnitudeMasks(query) : ([UInt64](repeating: 0, count: words), [UInt64](repeating: 0, count: words))
        let maximum = weighted ? 5 * dimension : dimension
        let words = self.words, G = count
        // Distances of every item (one pass, both cores) with a histogram per chunk; the
        // candidates are the items below the distance where the histogram reaches `candidates`,
        // then those at that distance in position order. No heap, no sort.
        var distances = [UInt16](repeating: 0, count: G)
        let histograms = queryCode.withUnsafeBufferPointer { qc in
            upperHalf.withUnsafeBufferPointer { h1 in
                upperQuarter.withUnsafeBufferPointer { h2 in
                    distances.withUnsafeMutableBufferPointer { out in
                        let box = UncheckedSendable(out)
                        return Self.parallelMap(G) { range -> [Int] in
                            var histogram = [Int](repeating: 0, count: maximum + 1)
                            let base = UnsafePointer(codes)
                            for item in range {
                                var distance = 0
                                let row = base + item * words
                                if weighted {
                                    for w in 0..<words {
                                        let differ = row[w] ^ qc[w]
                                        distance &+= differ.nonzeroBitCount &+ 2 &* ((differ & h1[w]).nonzeroBitCount &+ (differ & h2[w]).nonzeroBitCount)
                                    }
                                } else {
                                    for w in 0..<words { distance &+= (row[w] ^ qc[w]).nonzeroBitCount }
                                }
                                box.value[item] = UInt16(distance)
                                histogram[distance] += 1
                            }
                            return histogram
                        }
                    }
                }
            }
        }
        var threshold = 0, below = 0
        while threshold <= maximum {
            let here = histograms.reduce(0) { $0 + $1[threshold] }
            if below + here >= candidates { break }
            below += here
            threshold += 1
        }
        var survivors: [Int] = []
        survivors.reserveCapacity(candidates)
        var atThreshold = candidates - below
        for item in 0..<G {
            let d = Int(distances[item])
            if d < threshold {
                survivors.append(item)
            } else if d == threshold && atThreshold > 0 {
                survivors.append(item)
                atThreshold -= 1
            }
        }
        // Exact re-score of the survivors.
        return query.withUnsafeBufferPointer { q in
            var top = TopScores(k)
            for candidate in survivors { top.offer(score(candidate, q.baseAddress!), candidate) }
            return top.sorted.map { Hit(position: $0.index, score: $0.score) }
        }
    }

    /// The score of the item at `position` for `query`: `e · q − o`.
    public func score(of position: Int, _ query: [Float]) -> Float {
        query.withUnsafeBufferPointer { score(position, $0.baseAddress!) }
    }

    /// `e_item · q − o_item`.
    @inline(__always)
    private func score(_ item: Int, _ query: UnsafePointer<Float>) -> Float {
        let value = Self.dot(vectors.base + item * dimension, query, dimension)
        return offsetValues.map { value - $0[item] } ?? value
    }

    /// Dot product of two `D`-vectors with four SIMD16 accumulators (vectorises with FMA on the
    /// project's target CPU, set in Package.swift).
    @inline(__always)
    static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
        var s0 = SIMD16<Float>(), s1 = SIMD16<Float>(), s2 = SIMD16<Float>(), s3 = SIMD16<Float>()
        let ra = UnsafeRawPointer(a), rb = UnsafeRawPointer(b)
        var i = 0
        while i + 64 <= n {
            s0 += ra.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self) * rb.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
            s1 += ra.loadUnaligned(fromByteOffset: (i + 16) * 4, as: SIMD16<Float>.self) * rb.loadUnaligned(fromByteOffset: (i + 16) * 4, as: SIMD16<Float>.self)
            s2 += ra.loadUnaligned(fromByteOffset: (i + 32) * 4, as: SIMD16<Float>.self) * rb.loadUnaligned(fromByteOffset: (i + 32) * 4, as: SIMD16<Float>.self)
            s3 += ra.loadUnaligned(fromByteOffset: (i + 48) * 4, as: SIMD16<Float>.self) * rb.loadUnaligned(fromByteOffset: (i + 48) * 4, as: SIMD16<Float>.self)
            i += 64
        }
        var total = ((s0 + s1) + (s2 + s3)).sum()
        while i < n {
            total += a[i] * b[i]
            i += 1
        }
        return total
    }

    /// Bit `j` of the first mask is set when `|q_j|` is above the median of `|q|`, of the second
    /// when it is above the upper quartile.
    static func magnitudeMasks(_ query: [Float]) -> (upperHalf: [UInt64], upperQuarter: [UInt64]) {
        let magnitudes = query.map(abs)
        let sorted = magnitudes.sorted()
        let median = sorted[sorted.count / 2], quartile = sorted[(3 * sorted.count) / 4]
        var half = [UInt64](repeating: 0, count: (query.count + 63) / 64), quarter = half
        for (j, m) in magnitudes.enumerated() {
            if m >= median { half[j / 64] |= 1 << UInt64(j % 64) }
            if m >= quartile { quarter[j / 64] |= 1 << UInt64(j % 64) }
        }
        return (half, quarter)
    }

    /// Bit `j` of the code is set when component `j` is positive; the bits past `D` in the
    /// last word stay 0 for every item and query, so they never add distance.
    static func signBits(_ vector: UnsafePointer<Float>, dimension: Int, into code: UnsafeMutablePointer<UInt64>) {
        for w in 0..<((dimension + 63) / 64) {
            var word: UInt64 = 0
            for b in 0..<min(64, dimension - w * 64) where vector[w * 64 + b] > 0 { word |= 1 << UInt64(b) }
            code[w] = word
        }
    }

    /// `body` over `0..<count` in one chunk per core (one chunk when small).
    static func parallel(_ count: Int, _ body: (Range<Int>) -> Void) {
        _ = parallelMap(count, body)
    }

    /// `body` over `0..<count` in one chunk per core, results in chunk order.
    static func parallelMap<T>(_ count: Int, _ body: (Range<Int>) -> T) -> [T] {
        Parallel.map(count, minimum: 4096, body)
    }
}
