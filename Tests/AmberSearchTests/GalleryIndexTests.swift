@testable import AmberSearch
import AmberTensor
import Foundation
import Testing

/// Seeded unit vectors clustered around `clusters` centres (so neighbours mean something).
func clusteredGallery(items: Int, dimension: Int, clusters: Int, spread: Float, seed: UInt64) -> [Float] {
    var generator = SplitMix(seed: seed)
    let centres = (0..<(clusters * dimension)).map { _ in generator.normal() }
    var values = [Float](repeating: 0, count: items * dimension)
    for item in 0..<items {
        let centre = generator.below(clusters)
        var norm: Float = 0
        for j in 0..<dimension {
            let v = centres[centre * dimension + j] + spread * generator.normal()
            values[item * dimension + j] = v
            norm += v * v
        }
        for j in 0..<dimension { values[item * dimension + j] /= norm.squareRoot() }
    }
    return values
}

/// A small seeded generator for test data (SplitMix64 + Box–Muller).
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func uniform() -> Float { Float(next() >> 40) / Float(1 << 24) }
    mutating func normal() -> Float {
        let u = max(uniform(), 1e-7), v = uniform()
        return (-2 * log(u)).squareRoot() * cos(2 * .pi * v)
    }
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
}

/// Reference: every score in Double, sorted (score desc, position asc).
func referenceTop(_ values: [Float], dimension: Int, offsets: [Float]?, query: [Float], k: Int) -> [Int] {
    let count = values.count / dimension
    let scores = (0..<count).map { item -> Double in
        var s = 0.0
        for j in 0..<dimension { s += Double(values[item * dimension + j]) * Double(query[j]) }
        return s - Double(offsets?[item] ?? 0)
    }
    return Array((0..<count).sorted { scores[$0] > scores[$1] || (scores[$0] == scores[$1] && $0 < $1) }.prefix(k))
}

@Suite("Gallery index (stage 1)")
struct GalleryIndexTests {
    @Test("exact search equals a sorted full scan, with and without offsets, across the parallel split",
          arguments: [100, 9000])
    func exactSearchMatchesTheReference(items: Int) {
        let D = 128
        let values = clusteredGallery(items: items, dimension: D, clusters: 20, spread: 0.8, seed: 3)
        var generator = SplitMix(seed: 9)
        let offsets = (0..<items).map { _ in 0.05 * generator.uniform() }
        for withOffsets in [false, true] {
            let index = GalleryIndex(itemIDs: (0..<items).map { Int64($0 * 10) }, embeddings: values, dimension: D,
                                     offsets: withOffsets ? offsets : nil)
            for q in 0..<5 {
                let query = Array(values[(q * 7 * D) ..< ((q * 7 + 1) * D)])
                for k in [1, 10, 57] {
                    let hits = index.search(query, k: k)
                    let expected = referenceTop(values, dimension: D, offsets: withOffsets ? offsets : nil, query: query, k: k)
                    // Scores agree to float rounding; positions agree except where two scores tie that closely.
                    #expect(hits.count == k)
                    #expect(hits.map(\.position) == expected || zip(hits, expected).allSatisfy { abs($0.score - index.score(of: $1, query)) < 1e-5 },
                            "k \(k), offsets \(withOffsets)")
                    #expect(zip(hits, hits.dropFirst()).allSatisfy { $0.score >= $1.score }, "best first")
                }
            }
        }
    }

    @Test func kIsClampedAndIDsMapPositions() {
        let values: [Float] = (0..<(3 * 64)).map { Float($0 % 64 == $0 / 64 ? 1 : 0) }
        let index = GalleryIndex(itemIDs: [7, 8, 9], embeddings: values, dimension: 64)
        var query = [Float](repeating: 0, count: 64)
        query[2] = 1
        #expect(index.search(query, k: 0).isEmpty)
        let all = index.search(query, k: 10)
        #expect(all.count == 3 && all[0].position == 2 && index.itemIDs[all[0].position] == 9 && all[0].score == 1)
        #expect(all.dropFirst().map(\.position) == [0, 1], "ties go to the lower position")
    }

    @Test func codesAreTheSignBits() {
        var generator = SplitMix(seed: 1)
        let values = (0..<(5 * 128)).map { _ in generator.normal() }
        let index = GalleryIndex(itemIDs: Array(0..<5), embeddings: values, dimension: 128, withCodes: true)
        #expect(index.hasCodes)
        var code = [UInt64](repeating: 0, count: 2)
        values.withUnsafeBufferPointer { v in code.withUnsafeMutableBufferPointer { GalleryIndex.signBits(v.baseAddress! + 128, dimension: 128, into: $0.baseAddress!) } }
        for j in 0..<128 {
            #expect(((code[j / 64] >> UInt64(j % 64)) & 1 == 1) == (values[128 + j] > 0))
        }
    }

    @Test func thePrefilterFindsTheTrueNeighboursAndIsExactWhenItKeepsEverything() {
        let D = 256, G = 20000
        let values = clusteredGallery(items: G, dimension: D, clusters: 400, spread: 0.5, seed: 5)
        let index = GalleryIndex(itemIDs: (0..<G).map(Int64.init), embeddings: values, dimension: D, withCodes: true)
        var generator = SplitMix(seed: 11)
        var found = 0, total = 0
        for _ in 0..<20 {
            let source = generator.below(G)
            var query = (0..<D).map { values[source * D + $0] + 0.02 * generator.normal() }
            let norm = query.reduce(0) { $0 + $1 * $1 }.squareRoot()
            query = query.map { $0 / norm }
            let exact = index.search(query, k: 10)
            let filtered = index.search(query, k: 10, prefilter: 1000)
            found += Set(exact.map(\.position)).intersection(filtered.map(\.position)).count
            total += 10
            #expect(index.search(query, k: 10, prefilter: G) == exact, "a prefilter that keeps everything is exact")
            // Survivors are scored exactly: the same scores as the exact search gives them.
            for hit in filtered { #expect(abs(hit.score - index.score(of: hit.position, query)) < 1e-6) }
        }
        #expect(Double(found) / Double(total) >= 0.95, "recall@10 of the prefilter: \(found)/\(total)")
        // Without codes the prefilter is ignored (exact).
        let plain = GalleryIndex(itemIDs: (0..<G).map(Int64.init), embeddings: values, dimension: D)
        let query = plain.embedding(at: 3)
        #expect(plain.search(query, k: 5, prefilter: 10) == plain.search(query, k: 5))
    }

    @Test("the prefilter's candidates are the items nearest in (weighted) Hamming distance, as a per-bit reference counts them, for any dimension",
          arguments: [false, true], [128, 100, 7])
    func prefilterCandidatesMatchAReference(weighted: Bool, D: Int) {
        let G = 3000, C = 200
        let values = clusteredGallery(items: G, dimension: D, clusters: 30, spread: 1.0, seed: 8)
        let index = GalleryIndex(itemIDs: (0..<G).map(Int64.init), embeddings: values, dimension: D, withCodes: true)
        var generator = SplitMix(seed: 4)
        for _ in 0..<5 {
            let query = (0..<D).map { _ in generator.normal() }
            // Reference: a disagreeing sign costs 1, 3 or 5 by |q_j| against its median and upper quartile.
            let sorted = query.map(abs).sorted()
            let median = sorted[D / 2], quartile = sorted[3 * D / 4]
            let distance = (0..<G).map { item -> Int in
                (0..<D).reduce(0) { total, j in
                    guard (values[item * D + j] > 0) != (query[j] > 0) else { return total }
                    let m = abs(query[j])
                    return total + (weighted ? 1 + (m >= median ? 2 : 0) + (m >= quartile ? 2 : 0) : 1)
                }
            }
            let expected = Set((0..<G).sorted { distance[$0] < distance[$1] || (distance[$0] == distance[$1] && $0 < $1) }.prefix(C))
            // Asking for as many results as candidates returns every survivor.
            let survivors = Set(index.search(query, k: C, prefilter: C, weighted: weighted).map(\.position))
            #expect(survivors == expected)
            // And the exact scores (the SIMD dot's scalar tail for D not a multiple of 64) are the plain sums.
            for hit in index.search(query, k: 5) {
                let reference = (0..<D).reduce(Float(0)) { $0 + values[hit.position * D + $1] * query[$1] }
                #expect(abs(hit.score - reference) <= 1e-4 * max(1, abs(reference)))
            }
        }
    }

    @Test func weightingKeepsRecallForQueriesFarFromEveryItem() {
        // A weakly clustered gallery and queries at cosine 0.4 to an item: plain sign-bit Hamming
        // loses true neighbours; weighting by the query's magnitudes keeps them.
        let D = 256, G = 20000, C = 600
        let values = clusteredGallery(items: G, dimension: D, clusters: 400, spread: 2.0, seed: 6)
        let index = GalleryIndex(itemIDs: (0..<G).map(Int64.init), embeddings: values, dimension: D, withCodes: true)
        var generator = SplitMix(seed: 12)
        var plain = 0, weighted = 0, total = 0
        for _ in 0..<20 {
            let source = index.embedding(at: generator.below(G))
            var direction = (0..<D).map { _ in generator.normal() }
            let along = zip(direction, source).reduce(0) { $0 + $1.0 * $1.1 }
            direction = zip(direction, source).map { $0 - along * $1 }
            let norm = direction.reduce(0) { $0 + $1 * $1 }.squareRoot()
            let query = zip(source, direction).map { 0.4 * $0 + 0.9165 * $1 / norm }
            let exact = Set(index.search(query, k: 10).map(\.position))
            plain += exact.intersection(index.search(query, k: 10, prefilter: C, weighted: false).map(\.position)).count
            weighted += exact.intersection(index.search(query, k: 10, prefilter: C, weighted: true).map(\.position)).count
            total += 10
        }
        #expect(Double(weighted) / Double(total) >= 0.9, "weighted recall@10 \(weighted)/\(total)")
        #expect(weighted > plain, "weighted \(weighted) vs plain \(plain) of \(total)")
    }

    @Test func topKKeepsTheBestInOrder() {
        var generator = SplitMix(seed: 2)
        let scores = (0..<500).map { _ in Float(generator.below(50)) }
        var top = TopScores(17)
        for (position, score) in scores.enumerated() { top.offer(score, position) }
        let expected = scores.indices.sorted { scores[$0] > scores[$1] || (scores[$0] == scores[$1] && $0 < $1) }.prefix(17)
        #expect(top.sorted.map(\.index) == Array(expected))
        #expect(TopScores.indices(of: scores, k: 17) == Array(expected))
        // k beyond the count keeps everything, sorted; k = 0 keeps nothing.
        #expect(TopScores.indices(of: Array(scores.prefix(5)), k: 9) == Array(scores.prefix(5).indices.sorted { scores[$0] > scores[$1] || (scores[$0] == scores[$1] && $0 < $1) }))
        #expect(TopScores.indices(of: scores, k: 0).isEmpty)
    }
}

@Suite("Gallery index: growth in place")
struct GalleryIndexGrowthTests {
    /// Everything a search can tell about an index: ids, each row, offsets, and the hits of a few
    /// queries exact and prefiltered (plain and weighted).
    func fingerprint(_ index: GalleryIndex, queries: [[Float]]) -> [String] {
        var lines = ["ids \(index.itemIDs)", "codes \(index.hasCodes)", "offsets \(index.hasOffsets)"]
        for p in 0..<index.count { lines.append("\(p): \(index.embedding(at: p)) \(index.offset(at: p))") }
        for q in queries {
            lines.append("exact \(index.search(q, k: 7))")
            if index.hasCodes {
                lines.append("plain \(index.search(q, k: 7, prefilter: 40, weighted: false))")
                lines.append("weighted \(index.search(q, k: 7, prefilter: 40))")
            }
        }
        return lines
    }

    @Test("adding rows in batches equals building from all rows at once", arguments: [64, 100], [false, true])
    func growingEqualsBuilding(dimension D: Int, withOffsets: Bool) {
        let total = 5200   // crosses the initial reserve (max(G/2, 1024) rows) several times
        let values = clusteredGallery(items: total, dimension: D, clusters: 30, spread: 0.7, seed: 5)
        var generator = SplitMix(seed: 17)
        let offsets = withOffsets ? (0..<total).map { _ in generator.uniform() * 0.1 } : nil
        let ids = (0..<total).map { Int64(1000 + $0) }
        let queries = (0..<3).map { _ in (0..<D).map { _ in generator.normal() } }
        var grown = GalleryIndex(itemIDs: Array(ids.prefix(10)), embeddings: Array(values.prefix(10 * D)), dimension: D,
                                 offsets: offsets.map { Array($0.prefix(10)) }, withCodes: true)
        var start = 10
        for batch in [1, 7, 4096, 1, 1085] {
            let range = start ..< start + batch
            grown = grown.adding(itemIDs: Array(ids[range]), embeddings: Array(values[range.lowerBound * D ..< range.upperBound * D]),
                                 offsets: offsets.map { Array($0[range]) })
            start += batch
        }
        #expect(start == total)
        let built = GalleryIndex(itemIDs: ids, embeddings: values, dimension: D, offsets: offsets, withCodes: true)
        #expect(fingerprint(grown, queries: queries) == fingerprint(built, queries: queries))
    }

    @Test func aViewNeverChangesAndGrowingAnOlderViewCopiesIt() {
        let D = 64
        let values = clusteredGallery(items: 60, dimension: D, clusters: 5, spread: 0.5, seed: 8)
        let ids = (0..<60).map(Int64.init)
        let base = GalleryIndex(itemIDs: Array(ids.prefix(20)), embeddings: Array(values.prefix(20 * D)), dimension: D)
        let query = Array(values[25 * D ..< 26 * D])
        let before = base.search(query, k: 5)
        let a = base.adding(itemIDs: Array(ids[20..<40]), embeddings: Array(values[20 * D ..< 40 * D]), offsets: nil)
        // A second line of growth from the same (now older) view: its rows 20..<40 are other items.
        let b = base.adding(itemIDs: Array(ids[40..<60]), embeddings: Array(values[40 * D ..< 60 * D]), offsets: nil)
        #expect(base.count == 20 && base.search(query, k: 5) == before, "the old view is unchanged")
        #expect(a.itemIDs == Array(ids[0..<40]) && b.itemIDs == Array(ids[0..<20] + ids[40..<60]))
        #expect(a.embedding(at: 25) == Array(values[25 * D ..< 26 * D]))
        #expect(b.embedding(at: 25) == Array(values[45 * D ..< 46 * D]))
        #expect(a.search(query, k: 1).first?.position == 25, "the query's own row is found in the line that holds it")
        // Codes built once for a grown gallery equal codes built with it.
        let coded = a.withCodes()
        let reference = GalleryIndex(itemIDs: Array(ids[0..<40]), embeddings: Array(values[0 ..< 40 * D]), dimension: D, withCodes: true)
        #expect(coded.search(query, k: 5, prefilter: 10) == reference.search(query, k: 5, prefilter: 10))
    }
}
