import AmberCatalog
import AmberImage
import AmberModel
import AmberSearch
import AmberTensor
import Foundation

/// Limits the query service enforces (each a 4xx naming the field when exceeded).
public struct ServerLimits: Sendable, Equatable {
    /// Request bodies larger than this are refused (413).
    public var maximumBodyBytes = 4 << 20
    public var maximumK = 100
    public var maximumRerank = 200
    /// Code points of a `text` query.
    public var maximumTextLength = 2000
    /// Items per `POST /v1/items` and pairs per `POST /v1/pairs`.
    public var maximumItemsPerRequest = 1000
    public var maximumPairsPerRequest = 10_000
    /// What features a query or an item may have (fragment counts, magnitudes, dimensions);
    /// the same limits apply to items read back from the database.
    public var features = FeatureLimits()
    /// What an uploaded image (search or items) may be: decoded bytes, pixels, scans.
    public var image = ImageLimits(maximumPixels: 40_000_000, maximumBytes: 3 << 20, maximumScans: 200)

    public init() {}
}

/// The bytes of a base64 field (standard alphabet, padding optional, no whitespace).
/// - Throws: ``APIError`` 400 naming `field`.
func base64Bytes(_ text: String, field: String, maximum: Int) throws -> [UInt8] {
    guard text.utf8.count <= (maximum / 3 + 1) * 4 else {
        throw APIError.badRequest(field, "\(field) holds more than \(maximum) bytes of image")
    }
    var padded = text
    if padded.utf8.count % 4 != 0 { padded += String(repeating: "=", count: 4 - padded.utf8.count % 4) }
    guard let data = Data(base64Encoded: padded), !data.isEmpty else {
        throw APIError.badRequest(field, "\(field) must be a JPEG or PNG file in base64")
    }
    return [UInt8](data)
}

/// An uploaded photo: base64 undone and decoded, so that bad bytes get a 400 whether or not
/// the encoder is loaded.
/// - Throws: ``APIError`` 400 naming `field`.
func uploadedImage(_ text: String, field: String, limits: ServerLimits) throws -> RGBImage {
    let bytes = try base64Bytes(text, field: field, maximum: limits.image.maximumBytes)
    do {
        return try ImageDecoder.decode(bytes, limits: limits.image)
    } catch {
        throw APIError.badRequest(field, "\(field): \(error)")
    }
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
        values = data.withUnsafeBytes { ElementType.float32.floats($0) }
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
    /// A JPEG or PNG, base64.
    public var image: String?
    public var target: String?
    public var k: Int?
    public var rerank: Int?
    public var alpha: Float?
    public var prefilter: Int?

    enum CodingKeys: String, CodingKey {
        case text, features, image, target, k, rerank, alpha, prefilter
        case itemID = "item_id"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        text = try c.decodeIfPresent(String.self, forKey: .text)
        image = try c.decodeIfPresent(String.self, forKey: .image)
        itemID = try c.wholeNumber(Int64.self, forKey: .itemID)
        features = try c.decodeIfPresent(Features.self, forKey: .features)
        target = try c.decodeIfPresent(String.self, forKey: .target)
        k = try c.wholeNumber(Int.self, forKey: .k)
        rerank = try c.wholeNumber(Int.self, forKey: .rerank)
        alpha = try c.number(forKey: .alpha)
        prefilter = try c.wholeNumber(Int.self, forKey: .prefilter)
    }

    public init(text: String? = nil, itemID: Int64? = nil, features: Features? = nil, image: String? = nil, target: String? = nil,
                k: Int? = nil, rerank: Int? = nil, alpha: Float? = nil, prefilter: Int? = nil) {
        self.text = text
        self.itemID = itemID
        self.features = features
        self.image = image
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
        /// The item's categories (empty when it has none).
        public var labels: [String] = []

        enum CodingKeys: String, CodingKey {
            case global, local, fused, caption, labels
            case itemID = "item_id"
            case externalID = "external_id"
        }
    }

    public var modelVersion: Int64
    public var target: String
    public var query: String
    public var results: [Result]
    public var tookMilliseconds: Double
    /// The stage-2 scorer that re-ranked the top results: `scan`, `gare`, or `none` (stage 2 off
    /// for this search, or the model has none).
    public var stageTwo: String = "none"

    enum CodingKeys: String, CodingKey {
        case target, query, results
        case modelVersion = "model_version"
        case tookMilliseconds = "took_ms"
        case stageTwo = "stage_two"
    }
}

/// A search request checked against the limits and the loaded model: what to search with.
public struct ValidatedSearch: Sendable {
    public enum Query: Sendable {
        case text(String)
        case item(Int64)
        case features(ItemFeatures, Modality)
        /// A decoded photo (encoded by the service).
        case image(RGBImage)
    }

    public var query: Query
    /// The gallery searched (nil: the other modality of the query's item, known once it is looked up).
    public var target: Modality?
    public var options: SearchOptions

    /// Checks `request`; `dimensions` are the serving model's feature dimensions
    /// (global, fragment) per modality.
    /// - Throws: ``APIError`` 400 naming the field.
    public init(_ request: SearchRequest, limits: ServerLimits, dimensions: (Modality) -> (global: Int, fragment: Int?)) throws {
        let given = [request.text != nil, request.itemID != nil, request.features != nil, request.image != nil].filter { $0 }.count
        guard given == 1 else {
            throw APIError.badRequest("text", "give exactly one of text, item_id, image and features (got \(given))")
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
            if let problem = CatalogText.problem(text, field: "text", codePoints: 1...limits.maximumTextLength) {
                throw APIError.badRequest(problem.field, problem.message)
            }
            guard !text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else { throw APIError.badRequest("text", "text is empty") }
            if target == .text { throw APIError.badRequest("target", "a text query searches images: target must be image") }
            query = .text(text)
            self.target = .image
            return
        }
        if let image = request.image {
            query = .image(try uploadedImage(image, field: "image", limits: limits))
            self.target = target ?? .text
            return
        }
        if let itemID = request.itemID {
            guard itemID > 0 else { throw APIError.badRequest("item_id", "item_id must be positive, got \(itemID)") }
            query = .item(itemID)
            self.target = target
            return
        }
        guard let features = request.features else { throw APIError.badRequest("features", "features is missing") }
        guard let target else { throw APIError.badRequest("target", "a features query needs target (image or text): the gallery to search") }
        let modality = target.other
        let expected = dimensions(modality)
        let global = features.global.values
        guard global.count == expected.global else {
            throw APIError.badRequest("features.global", "features.global has \(global.count) values; a \(modality.rawValue) query needs \(expected.global)")
        }
        let (local, count) = try features.local.flattened(field: "features.local", dimension: expected.fragment, modality: modality)
        if let problem = limits.features.problem(modality: modality, global: global, local: local, localCount: count, field: "features") {
            throw APIError.badRequest(problem.field, problem.message)
        }
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
        /// An image item's photo, JPEG or PNG in base64: encoded by the service (unless features
        /// are given) and kept as its thumbnail.
        public var image: String?
        /// Categories, added to the item (new or stored).
        public var labels: [String]?

        enum CodingKeys: String, CodingKey {
            case modality, caption, features, image, labels
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

/// `POST /v1/feedback` body: a search's query (stored item or text), the result the user chose,
/// and optionally the ones they rejected, the rank they saw it at, the model version that
/// ranked it, and the client that sends it.
public struct FeedbackRequest: Decodable, Sendable {
    public struct Query: Decodable, Sendable {
        public var text: String?
        public var itemID: Int64?
        enum CodingKeys: String, CodingKey {
            case text
            case itemID = "item_id"
        }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            text = try container.decodeIfPresent(String.self, forKey: .text)
            itemID = try container.wholeNumber(Int64.self, forKey: .itemID)
        }
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        query = try container.decode(Query.self, forKey: .query)
        guard let chosen = try container.wholeNumber(Int64.self, forKey: .chosen) else {
            throw APIError.badRequest("chosen", "chosen is missing: the item_id of the result the user chose")
        }
        self.chosen = chosen
        if container.contains(.rejected), try !container.decodeNil(forKey: .rejected) {
            guard let ids = try? container.decode([Int64].self, forKey: .rejected) else {
                throw APIError.badRequest("rejected", "rejected must be an array of item_ids (whole numbers)")
            }
            rejected = ids
        }
        rank = try container.wholeNumber(Int.self, forKey: .rank)
        modelVersion = try container.wholeNumber(Int64.self, forKey: .modelVersion)
        client = try container.decodeIfPresent(String.self, forKey: .client)
    }

    public var query: Query
    public var chosen: Int64
    public var rejected: [Int64]?
    public var rank: Int?
    public var modelVersion: Int64?
    public var client: String?

    enum CodingKeys: String, CodingKey {
        case query, chosen, rejected, rank, client
        case modelVersion = "model_version"
    }

    /// At most this many rejected results per feedback.
    public static let maximumRejected = 100

    /// - Throws: ``APIError`` 400 naming the field. `encode` gives a text query's features
    ///   (nil: no text encoder; the feedback is kept without a pair).
    public func validated(encode: ((String) -> ItemFeatures)?) throws -> NewFeedback {
        let parsed: NewFeedback.Query
        switch (query.text, query.itemID) {
        case (let text?, nil):
            if let problem = CatalogText.problem(text, field: "query.text", codePoints: 1...CatalogText.maximumCaption) {
                throw APIError.badRequest(problem.field, problem.message)
            }
            let features = encode?(text)
            parsed = .text(text, features: features.map { NewItem(modality: .text, externalID: "", caption: text, features: $0) })
        case (nil, let item?):
            guard item > 0 else { throw APIError.badRequest("query.item_id", "query.item_id must be a positive item_id, got \(item)") }
            parsed = .item(item)
        default:
            throw APIError.badRequest("query", "query needs exactly one of text and item_id")
        }
        guard chosen > 0 else { throw APIError.badRequest("chosen", "chosen must be a positive item_id, got \(chosen)") }
        if case .item(let item) = parsed, item == chosen {
            throw APIError.badRequest("chosen", "chosen is the query item itself")
        }
        let rejected = self.rejected ?? []
        guard rejected.count <= Self.maximumRejected else {
            throw APIError.badRequest("rejected", "at most \(Self.maximumRejected) rejected results, got \(rejected.count)")
        }
        for (index, item) in rejected.enumerated() {
            guard item > 0 else { throw APIError.badRequest("rejected[\(index)]", "rejected[\(index)] must be a positive item_id, got \(item)") }
            guard item != chosen else { throw APIError.badRequest("rejected[\(index)]", "rejected[\(index)] is the chosen result") }
        }
        if let rank, !(1...10_000).contains(rank) { throw APIError.badRequest("rank", "rank must be 1…10000 (1 = first result), got \(rank)") }
        if let modelVersion, modelVersion < 1 { throw APIError.badRequest("model_version", "model_version must be ≥ 1, got \(modelVersion)") }
        if let client, let problem = CatalogText.problem(client, field: "client", codePoints: 1...200) {
            throw APIError.badRequest(problem.field, problem.message)
        }
        var unique: [Int64] = []
        for item in rejected where !unique.contains(item) { unique.append(item) }
        return NewFeedback(query: parsed, chosen: chosen, rejected: unique, chosenRank: rank, modelVersion: modelVersion, client: client)
    }
}

/// `POST /v1/feedback` response.
public struct FeedbackResponse: Encodable, Sendable {
    public var feedbackID: Int64
    public var pairID: Int64?
    public var pairAdded: Bool
    public var notPairedBecause: String?

    enum CodingKeys: String, CodingKey {
        case feedbackID = "feedback_id", pairID = "pair_id", pairAdded = "pair_added", notPairedBecause = "not_paired_because"
    }
}

/// `POST /v1/items` and `/v1/pairs` response.
public struct WriteResponse: Encodable, Sendable {
    public var added: Int
    public var existing: Int
}

extension WireVectors {
    /// The vectors as one row-major array and their count. `dimension` is the width each vector
    /// must have (nil: the first vector's; a packed string then cannot be split).
    /// - Throws: ``APIError`` 400 naming `field` (or the vector).
    func flattened(field: String, dimension: Int?, modality: Modality) throws -> (values: [Float], count: Int) {
        switch self {
        case .rows(let rows):
            guard let width = dimension ?? rows.first?.values.count, width > 0, !rows.isEmpty else {
                throw APIError.badRequest(field, "\(field) is empty; give at least two vectors")
            }
            for (i, row) in rows.enumerated() where row.values.count != width {
                throw APIError.badRequest("\(field)[\(i)]", dimension == nil ? "\(field)[\(i)] has \(row.values.count) values, the first vector \(width)"
                                                                     : "\(field)[\(i)] has \(row.values.count) values; a \(modality.rawValue) needs \(width)")
            }
            return (rows.flatMap(\.values), rows.count)
        case .packed(let packed):
            guard let width = dimension else {
                throw APIError.badRequest(field, "\(field) must be an array of vectors (each a number array or base64 float32)")
            }
            guard !packed.values.isEmpty, packed.values.count % width == 0 else {
                throw APIError.badRequest(field, "\(field) holds \(packed.values.count) values; a \(modality.rawValue) needs a positive multiple of \(width)")
            }
            return (packed.values, packed.values.count / width)
        }
    }
}

extension ItemsRequest {
    /// Checks every item; texts without features are encoded with `encode` when it is given.
    /// - Throws: ``APIError`` 400 naming the entry (503 when a text needs the missing encoder).
    public func validated(limits: ServerLimits, encode: ((String) -> ItemFeatures)?,
                          encodeImage: ((RGBImage, String) throws -> (features: ItemFeatures, thumbnail: StoredImage?))? = nil) throws -> [NewItem] {
        guard !items.isEmpty else { throw APIError.badRequest("items", "items is empty") }
        guard items.count <= limits.maximumItemsPerRequest else {
            throw APIError.badRequest("items", "at most \(limits.maximumItemsPerRequest) items per request, got \(items.count)")
        }
        return try items.enumerated().map { index, item in
            let at = "items[\(index)]"
            guard let modality = Modality(rawValue: item.modality) else {
                throw APIError.badRequest("\(at).modality", "\(at).modality must be image or text, not '\(item.modality)'")
            }
            if let problem = CatalogText.problem(item.externalID, field: "\(at).external_id", codePoints: 1...CatalogText.maximumExternalID) {
                throw APIError.badRequest(problem.field, problem.message)
            }
            if modality == .image, item.caption != nil {
                throw APIError.badRequest("\(at).caption", "\(at).caption: only texts have captions")
            }
            if let caption = item.caption, let problem = CatalogText.problem(caption, field: "\(at).caption", codePoints: 1...CatalogText.maximumCaption) {
                throw APIError.badRequest(problem.field, problem.message)
            }
            if modality == .text, item.image != nil {
                throw APIError.badRequest("\(at).image", "\(at).image: only images have photos")
            }
            if let labels = item.labels, let problem = CatalogText.labelProblem(labels, field: "\(at).labels") {
                throw APIError.badRequest(problem.field, problem.message)
            }
            var thumbnail: StoredImage?
            var encodedImage: ItemFeatures?
            if let image = item.image {
                let decoded = try uploadedImage(image, field: "\(at).image", limits: limits)
                guard let encodeImage else {
                    throw APIError(503, "\(at).image cannot be encoded: the image encoder is not loaded; run ops/setup", field: "\(at).image", retryAfter: 60)
                }
                let made = try encodeImage(decoded, "\(at).image")
                thumbnail = made.thumbnail
                encodedImage = made.features
            }
            let features: ItemFeatures
            if let encodedImage, item.features == nil {
                features = encodedImage
            } else if let given = item.features {
                let (local, count) = try given.local.flattened(field: "\(at).features.local", dimension: nil, modality: modality)
                let global = given.global.values
                if let problem = limits.features.problem(modality: modality, global: global, local: local, localCount: count, field: "\(at).features") {
                    throw APIError.badRequest(problem.field, problem.message)
                }
                features = ItemFeatures(global: global, local: local, localCount: count)
            } else {
                guard modality == .text, let caption = item.caption else {
                    throw APIError.badRequest("\(at).features", "\(at).features is missing (only a text with a caption or an image with its photo may leave it out)")
                }
                guard let encode else {
                    throw APIError(503, "\(at) has no features and the text encoder is not loaded; send features or run ops/setup",
                                   field: "\(at).features", retryAfter: 60)
                }
                features = encode(caption)
            }
            return NewItem(modality: modality, externalID: item.externalID, caption: item.caption, features: features, thumbnail: thumbnail,
                           labels: item.labels ?? [])
        }
    }
}

extension PairsRequest {
    /// - Throws: ``APIError`` 400 naming the entry.
    public func validated(limits: ServerLimits) throws -> [NewPair] {
        guard !pairs.isEmpty else { throw APIError.badRequest("pairs", "pairs is empty") }
        guard pairs.count <= limits.maximumPairsPerRequest else {
            throw APIError.badRequest("pairs", "at most \(limits.maximumPairsPerRequest) pairs per request, got \(pairs.count)")
        }
        return try pairs.enumerated().map { index, pair in
            for (name, value) in [("image", pair.image), ("text", pair.text)] {
                if let problem = CatalogText.problem(value, field: "pairs[\(index)].\(name)", codePoints: 1...CatalogText.maximumExternalID) {
                    throw APIError.badRequest(problem.field, problem.message)
                }
            }
            let name = pair.split ?? "train"
            guard let split = Split(rawValue: name) else {
                throw APIError.badRequest("pairs[\(index)].split", "pairs[\(index)].split must be train, dev or test, not '\(name)'")
            }
            return NewPair(image: pair.image, text: pair.text, split: split)
        }
    }
}

/// The JSON path of a coding path, as error fields name it: `items[3].features.global`.
func jsonPath(_ keys: [any CodingKey]) -> String {
    var path = ""
    for key in keys {
        if let index = key.intValue {
            path += "[\(index)]"
        } else {
            path += path.isEmpty ? key.stringValue : "." + key.stringValue
        }
    }
    return path
}

extension KeyedDecodingContainer {
    /// An optional integer field; a fraction, an out-of-range number or another type is a 400
    /// naming the field (Foundation reports those as "not valid JSON" with no path).
    func wholeNumber<T: FixedWidthInteger & Decodable>(_ type: T.Type, forKey key: Key) throws -> T? {
        guard contains(key), try !decodeNil(forKey: key) else { return nil }
        if let value = try? decode(T.self, forKey: key) { return value }
        let field = jsonPath(codingPath + [key])
        if let number = try? decode(Double.self, forKey: key) {
            throw APIError.badRequest(field, "\(field) must be a whole number from \(T.min) to \(T.max), got \(number)")
        }
        throw APIError.badRequest(field, "\(field) must be a whole number")
    }

    /// An optional finite number field (read as a Double, then rounded to Float: `1e-50` is 0).
    func number(forKey key: Key) throws -> Float? {
        guard contains(key), try !decodeNil(forKey: key) else { return nil }
        let field = jsonPath(codingPath + [key])
        guard let value = try? decode(Double.self, forKey: key) else { throw APIError.badRequest(field, "\(field) must be a number") }
        guard value.isFinite, Float(value).isFinite else { throw APIError.badRequest(field, "\(field) must be a finite number, got \(value)") }
        return Float(value)
    }
}
