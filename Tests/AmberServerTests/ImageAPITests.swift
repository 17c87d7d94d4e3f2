import AmberCatalog
import AmberImage
@testable import AmberServer
@testable import AmberStore
import AmberTensor
import Foundation
import Testing

/// A tiny EfficientNet-Lite with random weights whose output (12 channels on an 8 × 8 grid)
/// fits SearchEngineFixture's image features (12 + n×12).
func tinyImageEncoder() throws -> EfficientNetLiteEncoder {
    let architecture = EfficientNetArchitecture(stemChannels: 8, blocks: EfficientNetArchitecture.stages([(1, 3, 2, 1, 8, 8)]),
                                                headChannels: 12, imageSize: 32)
    var state: UInt64 = 7
    func values(_ count: Int, scale: Float = 0.3, offset: Float = 0) -> [Float] {
        (0..<count).map { _ in
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return offset + scale * Float(Int64(bitPattern: state >> 11) % 1000) / 1000
        }
    }
    var entries: [String: SafetensorsFile.Entry] = [:]
    func conv(_ name: String, _ shape: [Int]) { entries[name] = .float(Tensor(shape: shape, scalars: values(shape.reduce(1, *))), .float32) }
    func norm(_ name: String, _ c: Int) {
        entries[name + ".weight"] = .float(Tensor(shape: [c], scalars: values(c, offset: 0.8)), .float32)
        entries[name + ".bias"] = .float(Tensor(shape: [c], scalars: values(c)), .float32)
        entries[name + ".running_mean"] = .float(Tensor(shape: [c], scalars: values(c)), .float32)
        entries[name + ".running_var"] = .float(Tensor(shape: [c], scalars: values(c, offset: 0.5)), .float32)
    }
    conv("_conv_stem.weight", [8, 3, 3, 3]); norm("_bn0", 8)
    conv("_blocks.0._depthwise_conv.weight", [8, 1, 3, 3]); norm("_blocks.0._bn1", 8)
    conv("_blocks.0._project_conv.weight", [8, 8, 1, 1]); norm("_blocks.0._bn2", 8)
    conv("_conv_head.weight", [12, 8, 1, 1]); norm("_bn1", 12)
    let bytes = try SafetensorsFile.encode(entries).flatMap { $0 }
    return try EfficientNetLiteEncoder(weights: SafetensorsFile(bytes: bytes, name: "tiny.safetensors"), architecture: architecture)
}

func photoBase64(seed: Int, width: Int = 40, height: Int = 30) throws -> String {
    var pixels: [UInt8] = []
    for y in 0..<height { for x in 0..<width { pixels += [UInt8((x * 6 + seed * 40) % 256), UInt8((y * 8 + seed * 70) % 256), UInt8((x * y + seed) % 256)] } }
    return Data(try ImageEncoder.jpeg(RGBImage(width: width, height: height, pixels: pixels)!)).base64EncodedString()
}

extension ServerTests {
    static func imageService() async throws -> (QueryService, MemoryServingStore) {
        let (plain, store) = try await service()
        let service = QueryService(store: store, textEncoder: nil, imageEncoder: try tinyImageEncoder())
        try await service.reload()
        _ = plain
        return (service, store)
    }

    @Test("Image search: a photo query ranks captions as its encoded features do, or images with target image; uploads keep a thumbnail", arguments: Transport.allCases)
    func imageQueriesAndUploads(transport: Transport) async throws {
        let (service, store) = try await Self.imageService()
        store.galleryTakesItems = true
        let keys = try APIKeys(configuration: "read:reader-key-0123456789, admin:admin-key-0123456789")
        let admin = ["Authorization": "Bearer admin-key-0123456789"], reader = ["Authorization": "Bearer reader-key-0123456789"]
        let photo = try photoBase64(seed: 1)
        try await withTransport(transport, service, keys: keys) { send in
            // Upload: encoded in the server, thumbnail kept.
            let upload = try await send("POST", "/v1/items", #"{"items": [{"modality": "image", "external_id": "upload.jpg", "image": "\#(photo)"}]}"#, admin)
            #expect(upload.status == 200 && json(upload.body)["added"] as? Int == 1, "\(upload.body)")
            guard let stored = store.items.last(where: { $0.externalID == "upload.jpg" }) else { Issue.record("not stored"); return }
            #expect(stored.features.global.count == 12 && stored.features.localCount == 64 && stored.features.local.count == 64 * 12)
            #expect(stored.thumbnail.map { $0.width == 40 && $0.height == 30 && (try? ImageDecoder.decode($0.bytes)) != nil } == true)
            // The same photo as a query ranks as its features do.
            let byImage = try await send("POST", "/v1/search", #"{"image": "\#(photo)", "k": 8}"#, reader)
            #expect(byImage.status == 200, "\(byImage.body)")
            #expect(json(byImage.body)["target"] as? String == "text")
            let local = stride(from: 0, to: stored.features.local.count, by: 12).map { Array(stored.features.local[$0 ..< $0 + 12]) }
            let featuresBody = #"{"features": {"global": \#(stored.features.global), "local": \#(local)}, "target": "text", "k": 8}"#
            let byFeatures = try await send("POST", "/v1/search", featuresBody, reader)
            #expect(byFeatures.status == 200, "\(byFeatures.body)")
            let ids = { (body: String) in ((json(body)["results"] as? [[String: Any]]) ?? []).compactMap { $0["item_id"] as? Int } }
            #expect(ids(byImage.body).count == 8 && ids(byImage.body) == ids(byFeatures.body))
            // Similar images: the image gallery, where the upload is searchable at once (first: itself).
            let similar = try await send("POST", "/v1/search", #"{"image": "\#(photo)", "target": "image", "k": 3}"#, reader)
            #expect(similar.status == 200 && json(similar.body)["target"] as? String == "image", "\(similar.body)")
            #expect(((json(similar.body)["results"] as? [[String: Any]])?.first?["external_id"] as? String) == "upload.jpg", "\(similar.body)")
            #expect(((json(similar.body)["results"] as? [[String: Any]]) ?? []).allSatisfy { $0["caption"] == nil || $0["caption"] is NSNull })
            // Bad uploads and queries name the field.
            let notImage = Data("just some text, not a photo".utf8).base64EncodedString()
            let cases: [(String, String, Int, String, String)] = [
                ("/v1/search", #"{"image": "%%%not base64"}"#, 400, "image", "base64"),
                ("/v1/search", #"{"image": "\#(notImage)"}"#, 400, "image", "not a JPEG or PNG"),
                ("/v1/search", #"{"image": "\#(String(photo.prefix(photo.count / 2)))"}"#, 400, "image", "truncated"),
                ("/v1/search", #"{"image": "\#(photo)", "text": "a dog"}"#, 400, "text", "exactly one"),
                ("/v1/items", #"{"items": [{"modality": "text", "external_id": "t", "caption": "x", "image": "\#(photo)"}]}"#, 400, "items[0].image", "only images"),
                ("/v1/items", #"{"items": [{"modality": "image", "external_id": "u", "image": "\#(notImage)"}]}"#, 400, "items[0].image", "not a JPEG or PNG"),
            ]
            for (path, body, status, field, words) in cases {
                let response = try await send("POST", path, body, admin)
                let error = json(response.body)["error"] as? [String: Any]
                #expect(response.status == status && error?["field"] as? String == field, "\(body.prefix(80)) → \(response.status) \(response.body)")
                #expect((error?["message"] as? String)?.contains(words) == true, "\(response.body)")
            }
        }
    }

    @Test("Without the image encoder, photo queries answer 503 naming the field; bad bytes still 400", arguments: Transport.allCases)
    func imageWithoutEncoder(transport: Transport) async throws {
        let (service, _) = try await Self.service()
        let photo = try photoBase64(seed: 2)
        try await withTransport(transport, service) { send in
            let response = try await send("POST", "/v1/search", #"{"image": "\#(photo)"}"#, [:])
            #expect(response.status == 503 && (json(response.body)["error"] as? [String: Any])?["field"] as? String == "image", "\(response.body)")
            // Bad bytes are a 400 whether or not the encoder is there.
            let garbage = try await send("POST", "/v1/search", #"{"image": "aA=="}"#, [:])
            #expect(garbage.status == 400 && (json(garbage.body)["error"] as? [String: Any])?["field"] as? String == "image", "\(garbage.body)")
        }
    }

    @Test("GET /v1/items/{id}/image: the stored JPEG, 404 without one, 400 for a bad id", arguments: Transport.allCases)
    func itemImages(transport: Transport) async throws {
        let (service, store) = try await Self.service()
        let jpeg = try ImageEncoder.jpeg(RGBImage(width: 4, height: 3, pixels: [UInt8](repeating: 90, count: 36))!)
        store.pictures[100] = StoredImage(width: 4, height: 3, bytes: jpeg)
        try await withTransport(transport, service) { send in
            let found = try await send("GET", "/v1/items/100/image", nil, [:])
            #expect(found.status == 200 && found.headers["content-type"] == "image/jpeg" && found.headers["content-length"] == String(jpeg.count), "\(found.headers)")
            if transport == .inProcess { #expect(found.body.utf8.count > 0) }
            let missing = try await send("GET", "/v1/items/101/image", nil, [:])
            #expect(missing.status == 404 && (json(missing.body)["error"] as? [String: Any])?["field"] as? String == "id")
            for bad in ["abc", "0", "-3", "99999999999999999999"] {
                let response = try await send("GET", "/v1/items/\(bad)/image", nil, [:])
                #expect(response.status == 400, "\(bad) → \(response.status)")
            }
        }
    }
}
