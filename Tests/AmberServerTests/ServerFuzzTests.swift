@testable import AmberModel
import AmberCatalog
import AmberSearch
@testable import AmberServer
@testable import AmberStore
import AmberTensor
import AmberTestSupport
import Foundation
import Testing

/// Property-based fuzzing of every route (seeded, bounded): generated bodies cover the classes
/// that broke the server before — wrong fragment counts, huge and non-finite numbers, numbers of
/// the wrong kind, duplicate keys, deep nesting, NUL and multi-code-point characters, truncated
/// and mutated JSON, random bytes — and the server must answer each with a 2xx or a 4xx (503
/// only for a missing text encoder), keep answering `/healthz`, and store only valid items.
// Nested in ServerTests: its suite is serialized (test servers run one at a time).
extension ServerTests {
    @Suite("Fuzzing every route (seeded, bounded)")
    struct ServerFuzzTests {
        /// Bodies for `route`, drawn from `generator`.
        struct BodyGenerator {
            var generator: RandomGenerator

            mutating func int(_ range: ClosedRange<Int>) -> Int { range.lowerBound + Int(generator.next() % UInt64(range.count)) }
            mutating func chance(_ p: Double) -> Bool { Double(generator.next() % 1_000_000) / 1_000_000 < p }
            mutating func pick<T>(_ values: [T]) -> T { values[int(0...(values.count - 1))] }

            mutating func number() -> String {
                pick(["0", "1", "-1", "0.5", "10.5", "1e-50", "3e38", "-3e38", "1e39", "1e308", "1e400", "NaN", "\"nan\"", "Infinity",
                      "9007199254740993", "-0", "2", "100", "1000", "true", "null", "\"5\"", "[]", "{}"])
            }

            mutating func string() -> String {
                let pieces = ["a", "dog", " ", "\\r\\n", "🇫🇷", "e\\u0301", "\\u0000", "\\ud800", "\\\"", "\\\\", "ü", "\\t", "x"]
                let count = pick([0, 1, 3, 20, 300, 700])
                return "\"" + (0..<count).map { _ in pick(pieces) }.joined() + "\""
            }

            mutating func vector(_ length: Int) -> String {
                if chance(0.2) { return string() }                      // not a vector (or a base64 guess)
                if chance(0.15) {                                       // base64 float32 of a valid-looking vector
                    var bytes: [UInt8] = []
                    for _ in 0..<length { withUnsafeBytes(of: Float(int(-100...100)) / 50) { bytes += $0 } }
                    return "\"" + Data(bytes).base64EncodedString() + "\""
                }
                return "[" + (0..<length).map { _ in chance(0.9) ? String(Float(int(-100...100)) / 50) : number() }.joined(separator: ",") + "]"
            }

            mutating func features(globalLength: Int, fragmentLength: Int) -> String {
                let global = vector(pick([globalLength, globalLength, 0, 1, globalLength + 1]))
                let rows = pick([0, 1, 2, 3, 5, 300])
                let local = chance(0.15) ? vector(rows * fragmentLength)
                    : "[" + (0..<rows).map { _ in vector(pick([fragmentLength, fragmentLength, fragmentLength, 1])) }.joined(separator: ",") + "]"
                return "{\"global\": \(global), \"local\": \(local)}"
            }

            mutating func search() -> String {
                var fields: [String] = []
                switch int(0...3) {
                case 0: fields.append("\"text\": \(string())")
                case 1: fields.append("\"item_id\": \(pick(["100", "1015", "0", "-4", "999999", "1e30", "10.5", number()]))")
                case 2: fields.append("\"features\": \(features(globalLength: pick([12, 8]), fragmentLength: pick([12, 8])))")
                default: break
                }
                for name in ["target", "k", "rerank", "alpha", "prefilter"] where chance(0.35) {
                    fields.append("\"\(name)\": " + (name == "target" ? pick(["\"image\"", "\"text\"", "\"video\"", number()]) : number()))
                }
                if chance(0.1), let first = fields.first { fields.append(first) }            // a duplicate key
                return "{" + fields.joined(separator: ", ") + "}"
            }

            mutating func items() -> String {
                let entries = (0..<pick([0, 1, 2, 3])).map { index -> String in
                    var fields = ["\"modality\": \(pick(["\"image\"", "\"text\"", "\"video\"", number()]))",
                                  "\"external_id\": \(chance(0.7) ? "\"fuzz-\(int(0...50))\"" : string())"]
                    if chance(0.5) { fields.append("\"caption\": \(string())") }
                    if chance(0.8) { fields.append("\"features\": \(features(globalLength: pick([12, 8, 2]), fragmentLength: pick([12, 8, 2])))") }
                    return "{" + fields.joined(separator: ", ") + "}"
                }
                return "{\"items\": [" + entries.joined(separator: ", ") + "]}"
            }

            mutating func pairs() -> String {
                let entries = (0..<pick([0, 1, 2])).map { _ in
                    "{\"image\": \(chance(0.6) ? "\"img\(int(0...20))\"" : string()), \"text\": \(chance(0.6) ? "\"fuzz-\(int(0...50))\"" : string())"
                        + (chance(0.5) ? ", \"split\": \(pick(["\"train\"", "\"dev\"", "\"holdout\"", number()]))" : "") + "}"
                }
                return "{\"pairs\": [" + entries.joined(separator: ", ") + "]}"
            }

            mutating func feedback() -> String {
                var fields: [String] = []
                switch int(0...3) {
                case 0: fields.append("\"query\": {\"text\": \(string())}")
                case 1: fields.append("\"query\": {\"item_id\": \(pick(["1", "2", "3", "0", "-4", "999999", "1e30", "10.5", number()]))}")
                case 2: fields.append("\"query\": {\"text\": \(string()), \"item_id\": 2}")
                default: break
                }
                if chance(0.9) { fields.append("\"chosen\": \(pick(["1", "2", "5", "0", "-1", "999999", "2.5", "\"7\"", number()]))") }
                if chance(0.5) { fields.append("\"rejected\": [" + (0..<pick([0, 1, 3, 120])).map { _ in pick(["1", "3", "4", "0", "999999", number()]) }.joined(separator: ", ") + "]") }
                for name in ["rank", "model_version"] where chance(0.3) { fields.append("\"\(name)\": \(number())") }
                if chance(0.3) { fields.append("\"client\": \(string())") }
                return "{" + fields.joined(separator: ", ") + "}"
            }

            /// A valid-looking body, then perhaps broken: truncated, a byte changed, nested deep, or bytes.
            mutating func mutate(_ body: String) -> String {
                var bytes = Array(body.utf8)
                switch int(0...9) {
                case 0 where !bytes.isEmpty: bytes = Array(bytes.prefix(int(0...(bytes.count - 1))))
                case 1 where !bytes.isEmpty: bytes[int(0...(bytes.count - 1))] = UInt8(int(0...255))
                case 2: return String(repeating: "[", count: pick([33, 1000, 100_000])) + body
                case 3: return String(decoding: (0..<int(0...64)).map { _ in UInt8(int(0...255)) }, as: UTF8.self)
                default: break
                }
                return String(decoding: bytes, as: UTF8.self)
            }
        }

        /// Sends `count` generated requests through `send`; returns how many of each status came back.
        static func fuzz(_ send: Send, count: Int, seed: UInt64) async throws -> [Int: Int] {
            var bodies = BodyGenerator(generator: RandomGenerator(seed: seed))
            var statuses: [Int: Int] = [:]
            let admin = HostileInputTests.admin
            for i in 0..<count {
                let route = i % 7
                let (method, path, body): (String, String, String?)
                switch route {
                case 6: (method, path, body) = ("POST", "/v1/feedback", bodies.mutate(bodies.feedback()))
                case 0, 1: (method, path, body) = ("POST", "/v1/search", bodies.mutate(bodies.search()))
                case 2: (method, path, body) = ("POST", "/v1/items", bodies.mutate(bodies.items()))
                case 3: (method, path, body) = ("POST", "/v1/pairs", bodies.mutate(bodies.pairs()))
                case 4: (method, path, body) = ("GET", "/v1/models?limit=" + bodies.pick(["1", "abc", "0", "5000", "-1", "1e3", "%00", ""]), nil)
                default: (method, path, body) = ("POST", "/v1/models/" + bodies.pick(["3", "4", "0", "x", "99999999999999999999", "-1"]) + "/promote", nil)
                }
                let response = try await send(method, path, body, admin)
                statuses[response.status, default: 0] += 1
                let allowed = (200..<500).contains(response.status) || (response.status == 503 && ["/v1/search", "/v1/items", "/v1/feedback"].contains(path))
                #expect(allowed, "\(method) \(path) \(body?.prefix(300) ?? "") → \(response.status) \(response.body.prefix(300))")
                if (400..<500).contains(response.status) && response.status != 404 || response.status == 404 && path != "/v1/nothing" {
                    #expect((json(response.body)["error"] as? [String: Any])?["message"] != nil, "\(path) → \(response.body.prefix(200))")
                }
            }
            #expect(try await send("GET", "/healthz", nil, [:]).status == 200)
            return statuses
        }

        /// Every item the store holds passes the limits the server checks (nothing half-valid got in).
        static func checkStored(_ items: [NewItem]) {
            let limits = FeatureLimits()
            for item in items {
                let modality: Modality? = item.modality
                #expect(CatalogText.problem(item.externalID, field: "id", codePoints: 1...CatalogText.maximumExternalID) == nil)
                if let caption = item.caption { #expect(CatalogText.problem(caption, field: "caption", codePoints: 1...CatalogText.maximumCaption) == nil) }
                if let modality {
                    #expect(item.features.problem(under: limits, modality: modality, field: "f") == nil)
                }
            }
        }

        @Test func inProcessTwoThousandRequests() async throws {
            let (service, store) = try await ServerTests.service()
            try await withTransport(.inProcess, service, keys: try HostileInputTests.keys()) { send in
                let statuses = try await Self.fuzz(send, count: 2000, seed: 14)
                #expect(statuses.keys.allSatisfy { $0 != 500 })
                #expect((statuses[200] ?? 0) > 20, "some generated requests are valid: \(statuses)")
            }
            Self.checkStored(store.items)
            #expect(service.engine != nil)
        }

        @Test func overARealSocketThreeHundredRequests() async throws {
            let (service, store) = try await ServerTests.service()
            try await withTransport(.socket, service, keys: try HostileInputTests.keys()) { send in
                let statuses = try await Self.fuzz(send, count: 300, seed: 15)
                #expect(statuses.keys.allSatisfy { $0 != 500 && $0 != 0 }, "\(statuses)")
            }
            Self.checkStored(store.items)
        }

        @Test func againstPostgreSQLTheDatabaseStaysConsistent() async throws {
            let (cluster, db) = try ServerTests.database("fuzz")
            defer { ServerTests.remove(cluster) }
            let model = SearchEngineFixture.model(alpha: 0.7, beta: 10)
            let version = try ModelRegistry.add(model: try model.encoded(), step: 1, configuration: "{}", metrics: "{}", on: db)
            try ModelRegistry.promote(version, on: db)
            let client = PostgresClient(url: cluster.url, maximumConnections: 2)
            let service = QueryService(store: PostgresServingStore(client: client), textEncoder: nil)
            try await service.reload()
            try await withTransport(.inProcess, service, keys: try HostileInputTests.keys()) { send in
                let statuses = try await Self.fuzz(send, count: 600, seed: 16)
                #expect(statuses.keys.allSatisfy { $0 != 500 }, "\(statuses)")
            }
            // Every stored row is one the gallery can take; pairs link stored items; a reload works.
            let bad = try db.execute("""
                SELECT count(*) AS n FROM amber.features f JOIN amber.items i USING (item_id)
                WHERE f.local_count < 2 OR f.local_count > 256 OR length(i.external_id) > 512 OR length(i.caption) > 10000
                """)
            #expect(try bad.value(Int.self, column: "n") == 0)
            // Every stored value within the limits, read back as the gallery reads it.
            let store = PostgresServingStore(client: client)
            for modality in Modality.allCases {
                let ids = try await store.galleryCatalog(modality).map(\.itemID)
                for (id, features) in try await store.galleryFeatures(modality, ids: ids) {
                    #expect(features.problem(under: FeatureLimits(), modality: modality, field: "item \(id)") == nil)
                }
            }
            #expect(try await service.reload() == version)
            #expect(service.engine != nil)
            await client.shutdown()
        }
    }
}
