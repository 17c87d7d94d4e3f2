import AmberModel
import AmberSearch
import AmberStore
import Foundation

/// Limits the query service enforces (each a 4xx naming the field when exceeded).
public struct ServerLimits: Sendable, Equatable {
    /// Request bodies larger than this are refused (413).
    public var maximumBodyBytes = 4 << 20
    public var maximumK = 100
    public var maximumRerank = 200
    /// Local vectors of a `features` query.
    public var maximumLocalVectors = 512
    /// Characters of a `text` query.
    public var maximumTextLength = 2000

    public init() {}
}

/// An error a client caused or must hear about: a status and a JSON body
/// `{"error": {"message": …, "field": …}}` naming the offending field when there is one.
public struct APIError: Error, Sendable, Equatable, CustomStringConvertible {
    public var status: Int
    public var message: String
    public var field: String?
    /// Seconds a client should wait before retrying (503).
    public var retryAfter: Int?

    public init(_ status: Int, _ message: String, field: String? = nil, retryAfter: Int? = nil) {
        self.status = status
        self.message = message
        self.field = field
        self.retryAfter = retryAfter
    }

    public static func badRequest(_ field: String, _ message: String) -> APIError { APIError(400, message, field: field) }

    public var description: String { "\(status) \(field.map { "\($0): " } ?? "")\(message)" }
}

/// A vector in a request: JSON numbers, or a base64 string of little-endian float32.
public struct WireVector: Decodable, Sendable, Equatable {
    public var values: [Float]
    /// How it was sent, for errors.
    public var wasBase64: Bool

    public init(values: [Float], wasBase64: Bool = false) {
        self.values = values
        self.wasBase64 = wasBase64
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let numbers = try? container.decode([Double].self) {
            values = numbers.map { Float($0) }
            wasBase64 = false
            return
        }
        guard let text = try? container.decode(String.self) else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "expected an array of numbers or a base64 string of float32")
        }
        guard let data = Data(base64Encoded: text), data.count % 4 == 0 else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "not base64 of little-endian float32 (length must be a multiple of 4 bytes)")
        }
        values = data.withUnsafeBytes { raw in
            (0..<(data.count / 4)).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self))) }
        }
        wasBase64 = true
    }
}

/// Local vectors: an array of vectors, or one base64 string of `[count, dimension]` float32.
public enum WireVectors: Decodable, Sendable, Equatable {
    case rows([WireVector])
    case packed(WireVector)

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let rows = try? container.decode([WireVector].self) {
            self = .rows(rows)
        } else {
            self = .packed(try container.decode(WireVector.self))
        }
    }
}

/// `POST /v1/search` body.
public struct SearchRequest: Decodable, Sendable {
    public struct Features: Decodable, Sendable {
        public var global: WireVector
        public var local: WireVectors
    }

    public var text: String?
    public var itemID: Int64?
    public var features: Features?
    public var target: String?
    public var k: Int?
    public var rerank: Int?
    public var alpha: Float?
    public var prefilter: Int?

    enum CodingKeys: String, CodingKey {
        case text, features, target, k, rerank, alpha, prefilter
        case itemID = "item_id"
    }

    public init(text: String? = nil, itemID: Int64? = nil, features: Features? = nil, target: String? = nil,
                k: Int? = nil, rerank: Int? = nil, alpha: Float? = nil, prefilter: Int? = nil) {
        self.text = text
        self.itemID = itemID
        self.features = features
        self.target = target
        self.k = k
        self.rerank = rerank
        self.alpha = alpha
        self.prefilter = prefilter
    }
}

/// `POST /v1/search` response.
public struct SearchResponse: Encodable, Sendable {
    public struct Result: Encodable, Sendable {
        public var itemID: Int64
        public var externalID: String
        public var caption: String?
        public var global: Float
        public var local: Float?
        public var fused: Float

        enum CodingKeys: String, CodingKey {
            case global, local, fused, caption
            case itemID = "item_id"
            case externalID = "external_id"
        }
    }

    public var modelVersion: Int64
    public var target: String
    public var query: String
    public var results: [Result]
    public var tookMilliseconds: Double

    enum CodingKeys: String, CodingKey {
        case target, query, results
        case modelVersion = "model_version"
        case tookMilliseconds = "took_ms"
    }
}

/// A search request checked against the limits and the loaded model: what to search with.
public struct ValidatedSearch: Sendable {
    public enum Query: Sendable {
        case text(String)
        case item(Int64)
        case features(ItemFeatures, Modality)
    }

    public var query: Query
    /// The gallery searched (nil: the other modality of the query's item, known once it is looked up).
    public var target: Modality?
    public var options: SearchOptions

    /// Checks `request`; `dimensions` are the serving model's feature dimensions
    /// (global, fragment) per modality.
    /// - Throws: ``APIError`` 400 naming the field.
    public init(_ request: SearchRequest, limits: ServerLimits, dimensions: (Modality) -> (global: Int, fragment: Int)) throws {
        let given = [request.text != nil, request.itemID != nil, request.features != nil].filter { $0 }.count
        guard given == 1 else {
            throw APIError.badRequest("text", "give exactly one of text, item_id and features (got \(given))")
        }
        var target: Modality?
        if let name = request.target {
            guard let modality = Modality(rawValue: name) else { throw APIError.badRequest("target", "target must be image or text, not '\(name)'") }
            target = modality
        }
        let k = request.k ?? 10
        guard (1...limits.maximumK).contains(k) else { throw APIError.badRequest("k", "k must be between 1 and \(limits.maximumK), got \(k)") }
        let rerank = request.rerank ?? 32
        guard (0...limits.maximumRerank).contains(rerank) else {
            throw APIError.badRequest("rerank", "rerank must be between 0 and \(limits.maximumRerank), got \(rerank)")
        }
        if let alpha = request.alpha, !(alpha >= 0 && alpha <= 1) {
            throw APIError.badRequest("alpha", "alpha must be in [0, 1], got \(alpha)")
        }
        if let prefilter = request.prefilter, prefilter < k || prefilter > 1_000_000 {
            throw APIError.badRequest("prefilter", "prefilter must be between k (\(k)) and 1000000, got \(prefilter)")
        }
        options = SearchOptions(k: k, rerank: rerank, alpha: request.alpha, prefilter: request.prefilter)
        if let text = request.text {
            let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
            guard !trimmed.isEmpty else { throw APIError.badRequest("text", "text is empty") }
            guard text.count <= limits.maximumTextLength else {
                throw APIError.badRequest("text", "text has \(text.count) characters; at most \(limits.maximumTextLength)")
            }
            if target == .text { throw APIError.badRequest("target", "a text query searches images: target must be image") }
            query = .text(text)
            self.target = .image
            return
        }
        if let itemID = request.itemID {
            guard itemID > 0 else { throw APIError.badRequest("item_id", "item_id must be positive, got \(itemID)") }
            query = .item(itemID)
            self.target = target
            return
        }
        let features = request.features!
        guard let target else { throw APIError.badRequest("target", "a features query needs target (image or text): the gallery to search") }
        let modality = target.other
        let expected = dimensions(modality)
        let global = features.global.values
        guard global.count == expected.global else {
            throw APIError.badRequest("features.global", "features.global has \(global.count) values; a \(modality.rawValue) query needs \(expected.global)")
        }
        let local: [Float]
        let count: Int
        switch features.local {
        case .rows(let rows):
            guard !rows.isEmpty else { throw APIError.badRequest("features.local", "features.local is empty; give at least one vector") }
            for (i, row) in rows.enumerated() where row.values.count != expected.fragment {
                throw APIError.badRequest("features.local[\(i)]", "features.local[\(i)] has \(row.values.count) values; a \(modality.rawValue) query needs \(expected.fragment)")
            }
            local = rows.flatMap(\.values)
            count = rows.count
        case .packed(let packed):
            guard !packed.values.isEmpty, packed.values.count % expected.fragment == 0 else {
                throw APIError.badRequest("features.local", "features.local holds \(packed.values.count) values; a \(modality.rawValue) query needs a positive multiple of \(expected.fragment)")
            }
            local = packed.values
            count = packed.values.count / expected.fragment
        }
        guard count <= limits.maximumLocalVectors else {
            throw APIError.badRequest("features.local", "features.local has \(count) vectors; at most \(limits.maximumLocalVectors)")
        }
        guard global.allSatisfy(\.isFinite) else { throw APIError.badRequest("features.global", "features.global holds NaN or infinity") }
        guard local.allSatisfy(\.isFinite) else { throw APIError.badRequest("features.local", "features.local holds NaN or infinity") }
        query = .features(ItemFeatures(global: global, local: local, localCount: count), modality)
        self.target = target
    }
}

/// `POST /v1/items` body: items with their features (texts may leave them out when the server
/// has the text encoder: it encodes the caption).
public struct ItemsRequest: Decodable, Sendable {
    public struct Item: Decodable, Sendable {
        public var modality: String
        public var externalID: String
        public var caption: String?
        public var features: SearchRequest.Features?

        enum CodingKeys: String, CodingKey {
            case modality, caption, features
            case externalID = "external_id"
        }
    }

    public var items: [Item]
}

/// `POST /v1/pairs` body.
public struct PairsRequest: Decodable, Sendable {
    public struct Pair: Decodable, Sendable {
        public var image: String
        public var text: String
        public var split: String?
    }

    public var pairs: [Pair]
}

/// `POST /v1/items` and `/v1/pairs` response.
public struct WriteResponse: Encodable, Sendable {
    public var added: Int
    public var existing: Int
}

extension ItemsRequest {
    /// Checks every item; texts without features are encoded with `encode` when it is given.
    /// - Throws: ``APIError`` 400 naming the entry (503 when a text needs the missing encoder).
    public func validated(encode: ((String) -> ItemFeatures)?) throws -> [NewItem] {
        guard !items.isEmpty else { throw APIError.badRequest("items", "items is empty") }
        guard items.count <= 1000 else { throw APIError.badRequest("items", "at most 1000 items per request, got \(items.count)") }
        return try items.enumerated().map { index, item in
            let at = "items[\(index)]"
            guard item.modality == "image" || item.modality == "text" else {
                throw APIError.badRequest("\(at).modality", "\(at).modality must be image or text, not '\(item.modality)'")
            }
            guard (1...512).contains(item.externalID.count) else {
                throw APIError.badRequest("\(at).external_id", "\(at).external_id must have 1 to 512 characters")
            }
            if item.modality == "image", item.caption != nil {
                throw APIError.badRequest("\(at).caption", "\(at).caption: only texts have captions")
            }
            if let caption = item.caption, caption.isEmpty || caption.count > 10000 {
                throw APIError.badRequest("\(at).caption", "\(at).caption must have 1 to 10000 characters")
            }
            guard let features = item.features else {
                guard item.modality == "text", let caption = item.caption else {
                    throw APIError.badRequest("\(at).features", "\(at).features is missing (only a text with a caption may leave it out)")
                }
                guard let encode else {
                    throw APIError(503, "\(at) has no features and the text encoder is not loaded; send features or run ops/setup", field: "\(at).features")
                }
                let encoded = encode(caption)
                return NewItem(modality: "text", externalID: item.externalID, caption: caption,
                               global: encoded.global, local: encoded.local, localCount: encoded.localCount)
            }
            let global = features.global.values
            guard !global.isEmpty else { throw APIError.badRequest("\(at).features.global", "\(at).features.global is empty") }
            guard global.allSatisfy(\.isFinite) else { throw APIError.badRequest("\(at).features.global", "\(at).features.global holds NaN or infinity") }
            let local: [Float], count: Int
            switch features.local {
            case .rows(let rows):
                guard let width = rows.first?.values.count, width > 0 else {
                    throw APIError.badRequest("\(at).features.local", "\(at).features.local is empty; give at least one vector")
                }
                for (r, row) in rows.enumerated() where row.values.count != width {
                    throw APIError.badRequest("\(at).features.local[\(r)]", "\(at).features.local[\(r)] has \(row.values.count) values, the first vector \(width)")
                }
                local = rows.flatMap(\.values)
                count = rows.count
            case .packed:
                throw APIError.badRequest("\(at).features.local", "\(at).features.local must be an array of vectors (each a number array or base64 float32)")
            }
            guard count <= 4096 else { throw APIError.badRequest("\(at).features.local", "\(at).features.local has \(count) vectors; at most 4096") }
            guard local.allSatisfy(\.isFinite) else { throw APIError.badRequest("\(at).features.local", "\(at).features.local holds NaN or infinity") }
            return NewItem(modality: item.modality, externalID: item.externalID, caption: item.caption, global: global, local: local, localCount: count)
        }
    }
}

extension PairsRequest {
    /// - Throws: ``APIError`` 400 naming the entry.
    public func validated() throws -> [NewPair] {
        guard !pairs.isEmpty else { throw APIError.badRequest("pairs", "pairs is empty") }
        guard pairs.count <= 10000 else { throw APIError.badRequest("pairs", "at most 10000 pairs per request, got \(pairs.count)") }
        return try pairs.enumerated().map { index, pair in
            guard !pair.image.isEmpty else { throw APIError.badRequest("pairs[\(index)].image", "pairs[\(index)].image is empty") }
            guard !pair.text.isEmpty else { throw APIError.badRequest("pairs[\(index)].text", "pairs[\(index)].text is empty") }
            let split = pair.split ?? "train"
            guard ["train", "dev", "test"].contains(split) else {
                throw APIError.badRequest("pairs[\(index)].split", "pairs[\(index)].split must be train, dev or test, not '\(split)'")
            }
            return NewPair(image: pair.image, text: pair.text, split: split)
        }
    }
}
