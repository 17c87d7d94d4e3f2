import AmberCatalog
import AmberSearch
import AmberTensor
import ArgumentParser
import Foundation

struct SearchBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "search",
        abstract: "Stage 1 on a synthetic gallery: exact scan (ms per query, GB/s) and the binary prefilter (ms, recall@10 against exact)."
    )

    @Option(help: "Gallery items.") var items: Int = 1_000_000
    @Option(help: "Embedding dimension (a multiple of 64).") var dimension: Int = 1024
    @Option(help: "Timed queries (after 3 warm-up queries).") var queries: Int = 100
    @Option(parsing: .upToNextOption, help: "Prefilter candidates to try (items re-scored exactly).") var candidates: [Int] = [1000, 2000, 4000, 8000]
    @Option(help: "Clusters the synthetic items are drawn around.") var clusters: Int = 10000
    @Option(help: "Spread of items around their cluster centre (per component, before normalising).") var spread: Float = 0.5
    @Option(parsing: .upToNextOption, help: "Cosine of each query to the gallery item it is drawn from (query = c·item + √(1−c²)·random direction); one run per value.")
    var queryCosine: [Float] = [0.5]
    @Option(help: "Random seed.") var seed: UInt64 = 1
    @Option(help: "Python with faiss-cpu and numpy: runs ops/dev/faiss_bench.py on the same gallery and queries (exported to --export-directory) after Amber, same thread count.")
    var reference: String?
    @Option(help: "Where --reference's gallery.npy and queries.npy are written (float32; items × dimension × 4 bytes).")
    var exportDirectory: String = "/tmp/amber-search-bench"
    @Option(parsing: .upToNextOption, help: "Instead of searching: time and peak memory of adding this many items to the gallery, by rebuilding its index (what a reload did before galleries grew in place) and by GalleryIndex.adding.")
    var add: [Int] = []

    func validate() throws {
        guard items >= 10, dimension >= 64, dimension % 64 == 0, queries >= 1, clusters >= 1 else {
            throw ValidationError("--items ≥ 10, --dimension a positive multiple of 64, --queries ≥ 1, --clusters ≥ 1")
        }
    }

    func run() throws {
        let D = dimension
        print("building a synthetic gallery: \(items) unit vectors of dimension \(D) around \(clusters) centres (\(String(format: "%.2f", Double(items * D * 4) / 1e9)) GB)")
        let started = Date()
        var generator = RandomGenerator(seed: seed)
        var values = SyntheticGallery.embeddings(items: items, dimension: D, clusters: clusters, spread: spread, generator: &generator)
        let index = GalleryIndex(itemIDs: (0..<items).map(Int64.init), embeddings: values, dimension: D, withCodes: true)
        if reference != nil {
            try FileManager.default.createDirectory(atPath: exportDirectory, withIntermediateDirectories: true)
            try NumpyFile.write(Tensor(shape: [items, D], scalars: values), to: exportDirectory + "/gallery.npy")
        }
        values = []
        print(String(format: "built in %.1f s (embeddings %.2f GB, codes %.0f MB)", Date().timeIntervalSince(started),
                     Double(items * D * 4) / 1e9, Double(items * D / 8) / 1e6))
        if !add.isEmpty {
            growth(index, generator: &generator)
            return
        }
        for cosine in queryCosine {
            let queryVectors = (0..<(queries + 3)).map { _ in
                SyntheticGallery.query(near: index.embedding(at: generator.nextInt(below: items)), cosine: cosine, generator: &generator)
            }
            print(String(format: "queries at cosine %.2f to a gallery item:", cosine))
            run(index, queryVectors)
            if let reference {
                try NumpyFile.write(Tensor(shape: [queryVectors.count, D], scalars: queryVectors.flatMap { $0 }), to: exportDirectory + "/queries.npy")
                print("  FAISS, same gallery and queries (\(ProcessInfo.processInfo.activeProcessorCount) threads):")
                try runReference(python: reference, script: "ops/dev/faiss_bench.py",
                                 arguments: [exportDirectory, String(ProcessInfo.processInfo.activeProcessorCount)])
            }
        }
    }

    /// Adding items to the gallery: a rebuild (every row copied out and into a new index, every
    /// code signed again — the least the reload did before) against an append in place.
    func growth(_ index: GalleryIndex, generator: inout RandomGenerator) {
        let D = dimension
        func residentMB(_ field: String) -> Double {
            guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
                  let line = status.split(separator: "\n").first(where: { $0.hasPrefix(field + ":") }),
                  let kB = Double(line.split(whereSeparator: { $0 == " " || $0 == "\t" }).dropFirst().first ?? "") else { return .nan }
            return kB / 1024
        }
        /// Seconds and the growth of peak resident memory (MB) over the memory before.
        func measure(_ body: () -> GalleryIndex) -> (seconds: Double, peakMB: Double, result: GalleryIndex) {
            _ = try? "5".write(toFile: "/proc/self/clear_refs", atomically: false, encoding: .utf8)   // resets the peak
            let before = residentMB("VmRSS")
            let started = Date()
            let result = body()
            return (Date().timeIntervalSince(started), residentMB("VmHWM") - before, result)
        }
        print("adding items to a gallery of \(items) × \(D) with sign-bit codes (peak = growth of peak resident memory over the memory before):")
        print("items added   rebuild: time   peak MB     in place: time   peak MB")
        var grown = index
        for count in add where count >= 1 {
            let newValues = SyntheticGallery.embeddings(items: count, dimension: D, clusters: clusters, spread: spread, generator: &generator)
            let newIDs = (0..<count).map { Int64(grown.count + $0) }
            // The rebuilt index is dropped at once (scoped), before the append is measured.
            let (rebuildSeconds, rebuildPeak): (Double, Double) = {
                let rebuild = measure {
                    var all = [Float]()
                    all.reserveCapacity((grown.count + count) * D)
                    for position in 0..<grown.count { all += grown.embedding(at: position) }
                    all += newValues
                    return GalleryIndex(itemIDs: grown.itemIDs + newIDs, embeddings: all, dimension: D, withCodes: true)
                }
                return (rebuild.seconds, rebuild.peakMB)
            }()
            let appended = measure { grown.adding(itemIDs: newIDs, embeddings: newValues, offsets: nil) }
            print(String(format: "%11d   %10.3f s   %7.0f     %10.4f s   %7.1f", count, rebuildSeconds, rebuildPeak, appended.seconds, appended.peakMB))
            grown = appended.result
        }
    }

    func run(_ index: GalleryIndex, _ queryVectors: [[Float]]) {
        let D = dimension
        func measure(_ body: ([Float]) -> [GalleryIndex.Hit]) -> (times: [Double], results: [[GalleryIndex.Hit]]) {
            for query in queryVectors.prefix(3) { _ = body(query) }
            var times: [Double] = [], results: [[GalleryIndex.Hit]] = []
            for query in queryVectors.dropFirst(3) {
                let t = Date()
                results.append(body(query))
                times.append(Date().timeIntervalSince(t) * 1000)
            }
            return (times, results)
        }
        let cores = ProcessInfo.processInfo.activeProcessorCount
        let exact = measure { index.search($0, k: 10) }
        let bytes = Double(items * D * 4)
        let p50 = percentile(exact.times, 0.5)
        print(String(format: "  exact scan:       p50 %7.2f ms  p99 %7.2f ms  %5.1f GB/s (%.1f GB/s per core, %d cores)  %.0f queries/s",
                     p50, percentile(exact.times, 0.99), bytes / (p50 / 1000) / 1e9, bytes / (p50 / 1000) / 1e9 / Double(cores), cores,
                     1000 / (exact.times.reduce(0, +) / Double(exact.times.count))))
        for count in candidates where count < items {
            for weighted in [false, true] {
                let filtered = measure { index.search($0, k: 10, prefilter: count, weighted: weighted) }
                var found = 0
                for (a, b) in zip(exact.results, filtered.results) { found += Set(a.map(\.position)).intersection(b.map(\.position)).count }
                print(String(format: "  prefilter %6d %@:  p50 %7.2f ms  p99 %7.2f ms  recall@10 %.3f  %.0f queries/s", count,
                             weighted ? "weighted" : "plain   ",
                             percentile(filtered.times, 0.5), percentile(filtered.times, 0.99), Double(found) / Double(10 * exact.results.count),
                             1000 / (filtered.times.reduce(0, +) / Double(filtered.times.count))))
            }
        }
    }
}

/// Synthetic galleries for the search benchmarks: unit vectors around random centres, and
/// queries at a chosen cosine to a gallery item.
enum SyntheticGallery {
    /// `[items, dimension]` unit vectors, each a random centre (of `clusters`, N(0, 1) per
    /// component) plus N(0, spread²) noise, normalised. Parallel chunks with their own generators
    /// seeded from `generator`.
    static func embeddings(items: Int, dimension D: Int, clusters: Int, spread: Float, generator: inout RandomGenerator) -> [Float] {
        let centres = (0..<(clusters * D)).map { _ in generator.nextNormal() }
        let seed = generator.next()
        var values = [Float](repeating: 0, count: items * D)
        let chunk = 65536
        values.withUnsafeMutableBufferPointer { buffer in
            let box = UncheckedSendable(buffer)
            DispatchQueue.concurrentPerform(iterations: (items + chunk - 1) / chunk) { part in
                var local = RandomGenerator(seed: seed &+ UInt64(part) &* 0x9E37_79B9)
                for item in (part * chunk) ..< min((part + 1) * chunk, items) {
                    let centre = local.nextInt(below: clusters)
                    var norm: Float = 0
                    for j in 0..<D {
                        let v = centres[centre * D + j] + spread * local.nextNormal()
                        box.value[item * D + j] = v
                        norm += v * v
                    }
                    let scale = 1 / norm.squareRoot()
                    for j in 0..<D { box.value[item * D + j] *= scale }
                }
            }
        }
        return values
    }

    /// `cosine · item + √(1 − cosine²) · u`, `u` a random unit direction orthogonal to `item`.
    static func query(near item: [Float], cosine: Float, generator: inout RandomGenerator) -> [Float] {
        var direction = item.map { _ in generator.nextNormal() }
        let along = zip(direction, item).reduce(0) { $0 + $1.0 * $1.1 }
        direction = zip(direction, item).map { $0 - along * $1 }
        let norm = direction.reduce(0) { $0 + $1 * $1 }.squareRoot()
        let sine = (1 - cosine * cosine).squareRoot()
        return zip(item, direction).map { cosine * $0 + sine * $1 / norm }
    }
}

/// The `p`-quantile of `values` (nearest rank on `count − 1`; NaN when empty).
func percentile(_ values: [Double], _ p: Double) -> Double {
    let sorted = values.sorted()
    return sorted.isEmpty ? .nan : sorted[min(sorted.count - 1, Int((Double(sorted.count - 1) * p).rounded()))]
}
