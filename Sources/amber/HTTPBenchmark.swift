import AmberCatalog
import AmberModel
import AmberSearch
import AmberServer
import AmberTensor
import ArgumentParser
import Foundation
import Hummingbird
import Logging
import Synchronization

struct HTTPBenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "http",
        abstract: "The query service over loopback HTTP on a synthetic gallery: p50/p99 latency, queries/s, recall@10 of the prefilter against exact.",
        discussion: """
        Starts the HTTP server in this process on an ephemeral loopback port with a synthetic text gallery of --items \
        embeddings and --queries image items placed at --query-cosine to a random text item, then drives it with \
        --connections keep-alive clients sending {"item_id": …, "k": 10, "rerank": 0} searches (stage 1 only: the \
        synthetic items have no fragments), first with the exact scan, then with each --candidates prefilter. \
        Client and server share the machine's cores, as wrk on loopback does.
        """
    )

    @Option(help: "Gallery items (texts).") var items: Int = 1_000_000
    @Option(help: "Embedding dimension.") var dimension: Int = 1024
    @Option(help: "Distinct query items (images).") var queries: Int = 200
    @Option(help: "Concurrent keep-alive connections.") var connections: Int = 2
    @Option(help: "Seconds of load per configuration.") var duration: Double = 10
    @Option(parsing: .upToNextOption, help: "Prefilter candidates to try.") var candidates: [Int] = [4000]
    @Option(help: "Cosine of each query to the gallery item it is drawn from.") var queryCosine: Float = 0.5
    @Option(help: "Clusters the synthetic items are drawn around.") var clusters: Int = 10000
    @Option(help: "Spread of items around their cluster centre.") var spread: Float = 0.5
    @Option(help: "Random seed.") var seed: UInt64 = 1
    @Flag(help: "Also time GET /healthz every 20 ms on a connection of its own while the searches load the server.")
    var healthProbe = false

    func validate() throws {
        guard items >= 10, (1...8192).contains(dimension), queries >= 1, (1...256).contains(connections), duration > 0, duration.isFinite else {
            throw ValidationError("--items ≥ 10, --dimension 1…8192, --queries ≥ 1, --connections 1…256, --duration > 0")
        }
    }

    func run() async throws {
        BLASThreads.count = 1
        let D = dimension
        print("building a synthetic gallery: \(items) texts of dimension \(D), \(queries) query images at cosine \(queryCosine)")
        var generator = RandomGenerator(seed: seed)
        let texts = SyntheticGallery.embeddings(items: items, dimension: D, clusters: clusters, spread: spread, generator: &generator)
        var imageValues: [Float] = []
        for _ in 0..<queries {
            let source = generator.nextInt(below: items)
            imageValues += SyntheticGallery.query(near: Array(texts[(source * D) ..< ((source + 1) * D)]), cosine: queryCosine, generator: &generator)
        }
        // A model of the right joint dimension (its weights are not used: the items come encoded).
        var encoderConfiguration = ModalityEncoder.Configuration()
        encoderConfiguration.jointDimension = D
        let dimensions = TrainedModel.Dimensions(imageGlobal: 8, imageFragment: 8, textGlobal: 8, textFragment: 8)
        let model = TrainedModel(encoder: encoderConfiguration, dimensions: dimensions, model: dimensions.makeModel(encoderConfiguration, generator: &generator),
                                 step: 0, metrics: nil, stageTwoMetrics: nil, ranking: TwoStageRanking(alpha: 1, depth: 1),
                                 alignment: LocalAlignment(), querybank: nil)
        func gallery(_ prefix: String, firstID: Int64, _ values: [Float]) -> ([GalleryItem], GalleryEncoding) {
            let count = values.count / D
            let ids = (0..<count).map { firstID + Int64($0) }
            return (ids.map { GalleryItem(itemID: $0, externalID: "\(prefix)\($0)", caption: prefix == "t" ? "synthetic caption \($0)" : nil) },
                    GalleryEncoding(itemIDs: ids, fused: values, offsets: nil, fragments: [],
                                    fragmentCounts: [Int](repeating: 0, count: count), dimension: D))
        }
        let engine = SearchEngine(model: model, version: 1, images: gallery("i", firstID: 1, imageValues),
                                  texts: gallery("t", firstID: 1_000_000_000, texts), codesFrom: 1)
        let service = QueryService(store: nil, textEncoder: nil)
        service.install(engine)

        var configuration = ServerConfiguration()
        configuration.port = 0
        var logger = Logger(label: "amber.bench")
        logger.logLevel = .critical          // the server logs its own cancellation at the end as an error
        let port = AsyncStream<Int>.makeStream()
        let app = buildApplication(service: service, configuration: configuration, logger: logger) { channel in
            port.continuation.yield(channel.localAddress?.port ?? 0)
        }
        let bodies: (Int?) -> [String] = { prefilter in
            (0..<queries).map { q in
                "{\"item_id\": \(1 + q), \"k\": 10, \"rerank\": 0" + (prefilter.map { ", \"prefilter\": \($0)" } ?? "") + "}"
            }
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await app.run() }
            var iterator = port.stream.makeAsyncIterator()
            let bound = await iterator.next() ?? 0
            print("serving on 127.0.0.1:\(bound); \(connections) connections, \(duration) s per configuration")
            let exactIDs = try LoadClient.answers(port: bound, bodies: bodies(nil))
            let configurations: [(String, Int?)] = [("exact scan", nil)] + candidates.map { ("prefilter \($0)", $0) }
            for (name, prefilter) in configurations {
                let recall: Double
                if prefilter == nil {
                    recall = 1
                } else {
                    let answers = try LoadClient.answers(port: bound, bodies: bodies(prefilter))
                    let found = zip(exactIDs, answers).reduce(0) { $0 + Set($1.0).intersection($1.1).count }
                    recall = Double(found) / Double(exactIDs.reduce(0) { $0 + $1.count })
                }
                let result = try LoadClient.run(port: bound, bodies: bodies(prefilter), connections: connections, duration: duration,
                                                healthProbe: healthProbe)
                var errors = "\(result.errors) errors"
                if !result.statuses.isEmpty { errors += ": " + result.statuses.sorted { $0.key < $1.key }.map { "\($0.value)× \($0.key)" }.joined(separator: ", ") }
                print(String(format: "%@ p50 %7.2f ms  p99 %7.2f ms  %6.1f queries/s  recall@10 %.3f  (%d requests, %@)",
                             name.padding(toLength: 16, withPad: " ", startingAt: 0), result.percentile(0.5), result.percentile(0.99), result.perSecond, recall,
                             result.latencies.count, errors))
                if healthProbe {
                    let health = result.health
                    print(String(format: "%@ /healthz during the load: p50 %.2f ms  p99 %.2f ms  max %.2f ms  (%d probes, %d failed)",
                                 String(repeating: " ", count: 16), amber.percentile(health, 0.5), amber.percentile(health, 0.99), health.max() ?? 0,
                                 health.count, result.healthFailures))
                }
            }
            group.cancelAll()
        }
    }
}

/// A bounded HTTP/1.1 load client on blocking POSIX sockets: keep-alive connections, each on
/// its own thread, sending POST /v1/search bodies round-robin.
enum LoadClient {
    struct Result {
        var latencies: [Double]           // milliseconds
        var errors: Int
        var seconds: Double
        /// Statuses other than 200, by count.
        var statuses: [Int: Int] = [:]
        /// `/healthz` latencies during the load (with the probe), milliseconds.
        var health: [Double] = []
        var healthFailures = 0
        var perSecond: Double { Double(latencies.count) / seconds }
        func percentile(_ p: Double) -> Double { amber.percentile(latencies, p) }
    }

    final class Connection {
        let fd: Int32
        var buffer: [UInt8] = []

        init(port: Int) throws {
            fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            guard fd >= 0 else { throw ValidationError("socket() failed") }
            var one: Int32 = 1
            setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = in_port_t(UInt16(port).bigEndian)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard connected == 0 else { close(fd); throw ValidationError("cannot connect to 127.0.0.1:\(port)") }
        }

        deinit { close(fd) }

        /// Sends one search and returns the status and body.
        func search(_ body: String) throws -> (status: Int, body: [UInt8]) {
            try exchange("POST /v1/search", body: body)
        }

        /// Sends `line` (method and path) with an optional JSON body; returns the status and body.
        func exchange(_ line: String, body: String?) throws -> (status: Int, body: [UInt8]) {
            let payload = Array((body ?? "").utf8)
            let request = Array("\(line) HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: \(payload.count)\r\n\r\n".utf8) + payload
            var sent = 0
            while sent < request.count {
                let n = request[sent...].withUnsafeBytes { send(fd, $0.baseAddress!, $0.count, Int32(MSG_NOSIGNAL)) }
                guard n > 0 else { throw ValidationError("send failed") }
                sent += n
            }
            // Headers, then Content-Length bytes.
            var headerEnd: Int?
            while headerEnd == nil {
                headerEnd = find(Array("\r\n\r\n".utf8))
                if headerEnd == nil { try fill() }
            }
            let head = String(decoding: buffer[..<headerEnd!], as: UTF8.self)
            let status = Int(head.split(separator: " ").dropFirst().first ?? "") ?? 0
            var length = 0
            for line in head.split(separator: "\r\n") where line.lowercased().hasPrefix("content-length:") {
                length = Int(line.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) ?? 0
            }
            let start = headerEnd! + 4
            while buffer.count < start + length { try fill() }
            let responseBody = Array(buffer[start ..< start + length])
            buffer.removeFirst(start + length)
            return (status, responseBody)
        }

        private func find(_ pattern: [UInt8]) -> Int? {
            guard buffer.count >= pattern.count else { return nil }
            for i in 0...(buffer.count - pattern.count) where buffer[i] == pattern[0] && Array(buffer[i ..< i + pattern.count]) == pattern { return i }
            return nil
        }

        private func fill() throws {
            var chunk = [UInt8](repeating: 0, count: 65536)
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, $0.count, 0) }
            guard n > 0 else { throw ValidationError("connection closed by the server") }
            buffer += chunk[..<n]
        }
    }

    /// The result item ids of each body, in order, over one connection.
    static func answers(port: Int, bodies: [String]) throws -> [[Int64]] {
        let connection = try Connection(port: port)
        return try bodies.map { body in
            let (status, payload) = try connection.search(body)
            guard status == 200, let json = try JSONSerialization.jsonObject(with: Data(payload)) as? [String: Any],
                  let results = json["results"] as? [[String: Any]] else {
                throw ValidationError("search \(body) answered \(status): \(String(decoding: payload, as: UTF8.self))")
            }
            return results.compactMap { ($0["item_id"] as? NSNumber)?.int64Value }
        }
    }

    /// `connections` threads sending `bodies` round-robin for `duration` seconds (after one warm-up
    /// round each); with `healthProbe`, one more thread times `GET /healthz` every 20 ms meanwhile.
    static func run(port: Int, bodies: [String], connections: Int, duration: Double, healthProbe: Bool = false) throws -> Result {
        let collected = Mutex<(latencies: [Double], errors: Int, statuses: [Int: Int], health: [Double], healthFailures: Int)>(([], 0, [:], [], 0))
        let start = Date()
        let group = DispatchGroup()
        // Threads of their own (GCD would run only as many as there are cores).
        for worker in 0..<connections {
            group.enter()
            Thread {
                defer { group.leave() }
                guard let connection = try? Connection(port: port) else {
                    collected.withLock { $0.errors += 1 }
                    return
                }
                var mine: [Double] = [], failed = 0, statuses: [Int: Int] = [:]
                for body in bodies.prefix(3) { _ = try? connection.search(body) }
                let begin = Date()
                var next = worker
                while Date().timeIntervalSince(begin) < duration {
                    let t = Date()
                    let status = (try? connection.search(bodies[next % bodies.count]))?.status ?? 0
                    if status == 200 { mine.append(Date().timeIntervalSince(t) * 1000) } else { failed += 1; statuses[status, default: 0] += 1 }
                    next += connections
                }
                collected.withLock {
                    $0.latencies += mine
                    $0.errors += failed
                    $0.statuses.merge(statuses, uniquingKeysWith: +)
                }
            }.start()
        }
        if healthProbe {
            group.enter()
            Thread {
                defer { group.leave() }
                guard let connection = try? Connection(port: port) else { return }
                Thread.sleep(forTimeInterval: min(1, duration / 4))           // let the load build up
                var mine: [Double] = [], failed = 0
                let begin = Date()
                while Date().timeIntervalSince(begin) < duration * 0.75 {
                    let t = Date()
                    if (try? connection.exchange("GET /healthz", body: nil))?.status == 200 { mine.append(Date().timeIntervalSince(t) * 1000) } else { failed += 1 }
                    Thread.sleep(forTimeInterval: 0.02)
                }
                collected.withLock {
                    $0.health = mine
                    $0.healthFailures = failed
                }
            }.start()
        }
        group.wait()
        let c = collected.withLock { $0 }
        return Result(latencies: c.latencies, errors: c.errors, seconds: Date().timeIntervalSince(start), statuses: c.statuses,
                      health: c.health, healthFailures: c.healthFailures)
    }
}
