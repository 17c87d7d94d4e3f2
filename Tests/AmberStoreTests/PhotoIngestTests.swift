import AmberCatalog
@testable import AmberIngest
import AmberImage
import AmberModel
import AmberServer
@testable import AmberStore
import AmberTestSupport
import AmberTensor
import Foundation
import Testing

/// A folder of generated photos and a captions file, in a temporary directory.
struct PhotoFolder {
    let directory: String
    var images: String { directory + "/images" }

    init(photos: Int = 3) throws {
        directory = "/tmp/amber-photos-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory + "/images", withIntermediateDirectories: true)
        for index in 0..<photos {
            var pixels: [UInt8] = []
            for y in 0..<48 { for x in 0..<64 { pixels += [UInt8((x * 4 + index * 50) % 256), UInt8((y * 5 + index * 90) % 256), UInt8((x + y) % 256)] } }
            let jpeg = try ImageEncoder.jpeg(RGBImage(width: 64, height: 48, pixels: pixels)!)
            FileManager.default.createFile(atPath: "\(images)/photo\(index).jpg", contents: Data(jpeg))
        }
    }

    func write(_ name: String, _ text: String) throws {
        try text.write(toFile: directory + "/" + name, atomically: true, encoding: .utf8)
    }

    func remove() { try? FileManager.default.removeItem(atPath: directory) }
}

/// The model files the command line loads (ops/test fetches them into .amber/models).
var modelEnvironment: [String: String] {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    return ["AMBER_IMAGE_MODEL": root + "/.amber/models/efficientnet-lite0", "AMBER_TEXT_MODEL": root + "/.amber/models/all-minilm-l6-v2"]
}

@Suite("Captions files of photo folders")
struct PhotoCaptionsTests {
    @Test("The Flickr token format, a TSV with a split column, a quoted CSV and COCO JSON give the same photos")
    func formats() throws {
        let folder = try PhotoFolder()
        defer { folder.remove() }
        try folder.write("Flickr8k.token.txt", "photo0.jpg#0\tA red dog .\nphoto0.jpg#1\tA dog runs\r\nphoto1.jpg#0\tTwo cats\n\n")
        let token = try PhotoCaptions.read(captionsFile: folder.directory + "/Flickr8k.token.txt", imageDirectory: folder.images)
        #expect(token.format == .flickrToken)
        #expect(token.photos == [.init(file: "photo0.jpg", captions: ["A red dog .", "A dog runs"], split: nil),
                                 .init(file: "photo1.jpg", captions: ["Two cats"], split: nil)])
        try folder.write("captions.tsv", "image\tsplit\tcaption\nphoto0.jpg\ttrain\tA red dog .\nphoto0.jpg\ttrain\tA dog runs\nphoto1.jpg\tval\tTwo cats\n")
        let tsv = try PhotoCaptions.read(captionsFile: folder.directory + "/captions.tsv", imageDirectory: folder.images)
        #expect(tsv.format == .tsv && tsv.photos.map(\.captions) == token.photos.map(\.captions))
        #expect(tsv.photos.map(\.split) == [.train, .dev])
        try folder.write("captions.csv", "file_name,caption\nphoto0.jpg,\"A red dog, seen \"\"up close\"\"\"\nphoto1.jpg,\"Two\ncats\"\n")
        let csv = try PhotoCaptions.read(captionsFile: folder.directory + "/captions.csv", imageDirectory: folder.images)
        // A line break inside a quoted field becomes a space: a caption is one line.
        #expect(csv.photos.map(\.captions) == [["A red dog, seen \"up close\""], ["Two cats"]])
        // A spreadsheet's byte-order mark before the header.
        try folder.write("bom.csv", "\u{FEFF}image,caption\nphoto1.jpg,Two cats\n")
        let bom = try PhotoCaptions.read(captionsFile: folder.directory + "/bom.csv", imageDirectory: folder.images)
        #expect(bom.photos == [.init(file: "photo1.jpg", captions: ["Two cats"], split: nil)])
        try folder.write("captions.json", #"{"images": [{"id": 7, "file_name": "photo1.jpg"}, {"id": 9, "file_name": "photo2.jpg"}], "annotations": [{"image_id": 9, "caption": " A bird. "}, {"image_id": 7, "caption": "Two cats"}, {"image_id": 9, "caption": "A bird flies"}]}"#)
        let coco = try PhotoCaptions.read(captionsFile: folder.directory + "/captions.json", imageDirectory: folder.images)
        #expect(coco.format == .coco)
        #expect(coco.photos == [.init(file: "photo2.jpg", captions: ["A bird.", "A bird flies"], split: nil),
                                .init(file: "photo1.jpg", captions: ["Two cats"], split: nil)])
    }

    @Test("Bad captions files are named with the line: missing photo, bad header, ragged row, unknown split, bad JSON")
    func errors() throws {
        let folder = try PhotoFolder()
        defer { folder.remove() }
        func problem(_ name: String, _ text: String) -> String {
            do {
                try folder.write(name, text)
                _ = try PhotoCaptions.read(captionsFile: folder.directory + "/" + name, imageDirectory: folder.images)
                return "no error"
            } catch { return "\(error)" }
        }
        #expect(problem("a.tsv", "image\tcaption\nphoto9.jpg\tA dog\n").contains("names photo9.jpg, which is not in"))
        #expect(problem("b.tsv", "picture\twords\nphoto0.jpg\tA dog\n").contains("b.tsv:1: the header row must name"))
        #expect(problem("c.tsv", "image\tcaption\nphoto0.jpg\tA dog\nphoto1.jpg\n").contains("c.tsv:3: has 1 fields"))
        #expect(problem("d.tsv", "image\tcaption\tsplit\nphoto0.jpg\tA dog\tholdout\n").contains("d.tsv:2: unknown split 'holdout'"))
        #expect(problem("e.tsv", "image\tcaption\tsplit\nphoto0.jpg\tA dog\ttrain\nphoto0.jpg\tA cat\ttest\n").contains("e.tsv:3: photo0.jpg is in split test here and train before"))
        #expect(problem("f.txt", "photo0.jpg#0\tA dog\nphoto0.jpg A cat\n").contains("f.txt:2: expected"))
        #expect(problem("g.json", #"{"images": []}"#).contains("not COCO captions JSON"))
        #expect(problem("h.csv", "image,caption\nphoto0.jpg,\"open\n").contains("not closed"))
        // The line of a row after a caption that spans lines is the line it starts on.
        #expect(problem("k.csv", "image,caption\nphoto0.jpg,\"two\nlines\"\nphoto1.jpg\n").contains("k.csv:4: has 1 fields"))
        #expect(problem("i.tsv", "image\tcaption\nphoto0.jpg\tA\u{0}dog\n").contains("NUL"))
        #expect(problem("j.tsv", "image\tcaption\n").contains("names no photos"))
    }

    @Test("Splits: the file's column, else the list files, else one photo in eight by a hash of the name")
    func splits() throws {
        let folder = try PhotoFolder()
        defer { folder.remove() }
        try folder.write("captions.tsv", "image\tcaption\nphoto0.jpg\ta\nphoto1.jpg\tb\nphoto2.jpg\tc\n")
        try folder.write("dev_images.txt", "photo1.jpg\n")
        try folder.write("test_images.txt", "photo2.jpg\n")
        let photos = try PhotoCaptions.read(captionsFile: folder.directory + "/captions.tsv", imageDirectory: folder.images)
        let splits = try photos.splits(listDirectory: folder.directory)
        #expect(splits["photo1.jpg"] == .dev && splits["photo2.jpg"] == .test)
        #expect(splits["photo0.jpg"] == PhotoCaptions.defaultSplit("photo0.jpg"))
        let names = (0..<8000).map { "image\($0).jpg" }
        let dev = names.filter { PhotoCaptions.defaultSplit($0) == .dev }.count
        #expect((850...1150).contains(dev), "\(dev) of 8000 are dev")
        #expect(names.map(PhotoCaptions.defaultSplit) == names.map(PhotoCaptions.defaultSplit))
    }
}

@Suite("amber ingest of photos (real PostgreSQL, native encoders)")
struct PhotoIngestCommandTests {
    @Test("Photos and captions are encoded and stored once; a bad photo is named, or skipped on request")
    func ingestsPhotos() throws {
        let folder = try PhotoFolder(photos: 3)
        defer { folder.remove() }
        try folder.write("captions.tsv", "image\tsplit\tcaption\nphoto0.jpg\ttrain\tA red dog\nphoto0.jpg\ttrain\tA dog runs\nphoto1.jpg\tdev\tTwo cats\nphoto2.jpg\ttrain\tA bird\n")
        let url = try TestDatabase.fresh(migrated: true)
        let first = try runAmber(["ingest", folder.directory, "--database-url", url, "--chunk", "2"], environment: modelEnvironment)
        #expect(first.status == 0, "\(first.error)")
        #expect(first.output.contains("encoded 3 photos and 4 captions"), "\(first.output)")
        #expect(first.output.contains("added 3 images, 4 texts, 7 feature rows, 4 pairs, 3 thumbnails"), "\(first.output)")
        let connection = try PostgresConnection(url: url)
        let features = try connection.execute("""
            SELECT i.modality::text AS modality, f.global_dim::bigint AS global_dim, f.local_count::bigint AS local_count, f.local_type::text AS local_type
            FROM amber.features f JOIN amber.items i USING (item_id) ORDER BY i.modality, i.external_id
            """)
        #expect(try features.column(Int64.self, 1).compactMap { $0 } == [1280, 1280, 1280, 384, 384, 384, 384])
        #expect(try features.column(Int64.self, 2).prefix(3).compactMap { $0 } == [49, 49, 49])
        let splits = try connection.execute("SELECT split::text AS split, count(*)::int AS n FROM amber.pairs GROUP BY split ORDER BY split")
        #expect(try splits.column(String.self, 0).compactMap { $0 }.sorted() == ["dev", "train"])
        #expect(try features.column(String.self, 3).compactMap { $0 } == ["float16", "float16", "float16", "float16", "float16", "float16", "float16"])
        let thumbnail = try connection.execute("SELECT width::bigint AS w, height::bigint AS h, bytes FROM amber.item_images ORDER BY item_id LIMIT 1")
        #expect(try thumbnail.value(Int64.self, column: "w") == 64 && thumbnail.value(Int64.self, column: "h") == 48)
        let jpeg = try thumbnail.value([UInt8].self, column: "bytes")
        #expect(try ImageDecoder.decode(jpeg).width == 64)
        // Again: nothing to encode, nothing added.
        let second = try runAmber(["ingest", folder.directory, "--database-url", url], environment: modelEnvironment)
        #expect(second.output.contains("encoded 0 photos and 0 captions (3 photos already in the database)"), "\(second.output)")
        #expect(second.output.contains("added 0 images, 0 texts, 0 feature rows, 0 pairs"))
        // A new photo that is not a JPEG: named, nothing of it written; skipped on request.
        FileManager.default.createFile(atPath: folder.images + "/photo3.jpg", contents: Data("not a jpeg".utf8))
        // An edited caption is refused before anything is written.
        try folder.write("captions.tsv", "image\tcaption\nphoto0.jpg\tA blue dog\n")
        let edited = try runAmber(["ingest", folder.directory, "--database-url", url], environment: modelEnvironment)
        #expect(edited.status != 0 && edited.error.contains("differs from the stored photo0.jpg#0"), "\(edited.error)")
        try folder.write("captions.tsv", "image\tcaption\nphoto3.jpg\tA broken photo\nphoto0.jpg\tA red dog\nphoto0.jpg\tA dog runs\nphoto0.jpg\tA third caption\n")
        let bad = try runAmber(["ingest", folder.directory, "--database-url", url], environment: modelEnvironment)
        #expect(bad.status != 0)
        #expect(bad.error.contains("photo3.jpg") && bad.error.contains("not a JPEG or PNG"), "\(bad.error)")
        let skipped = try runAmber(["ingest", folder.directory, "--database-url", url, "--skip-bad-images"], environment: modelEnvironment)
        #expect(skipped.status == 0, "\(skipped.error)")
        #expect(skipped.output.contains("skipped 1 undecodable photos: photo3.jpg"), "\(skipped.output)")
        #expect(skipped.output.contains("added 0 images, 1 texts, 1 feature rows, 1 pairs, 0 thumbnails"), "\(skipped.output)")
    }
}

extension PhotoIngestCommandTests {
    @Test("File names are unique only within a folder: another folder's photo0.jpg is refused unless it has an id prefix; lost pairs come back on a re-run")
    func foldersDoNotCollide() throws {
        let first = try PhotoFolder(photos: 2), second = try PhotoFolder(photos: 1)
        defer { first.remove(); second.remove() }
        try first.write("captions.tsv", "image\tcaption\nphoto0.jpg\tA red dog\nphoto1.jpg\tTwo cats\n")
        try second.write("captions.tsv", "image\tcaption\nphoto0.jpg\tA red dog\n")
        let url = try TestDatabase.fresh(migrated: true)
        let a = try runAmber(["ingest", first.directory, "--database-url", url], environment: modelEnvironment)
        #expect(a.status == 0, "\(a.error)")
        // Same name, same caption, another folder: not taken for the stored photo.
        let b = try runAmber(["ingest", second.directory, "--database-url", url], environment: modelEnvironment)
        #expect(b.status != 0 && b.error.contains("photo0.jpg") && b.error.contains("--id-prefix"), "\(b.error)")
        let prefixed = try runAmber(["ingest", second.directory, "--database-url", url, "--id-prefix", "shop-b/"], environment: modelEnvironment)
        #expect(prefixed.status == 0, "\(prefixed.error)")
        #expect(prefixed.output.contains("added 1 images, 1 texts, 2 feature rows, 1 pairs, 1 thumbnails"), "\(prefixed.output)")
        let connection = try PostgresConnection(url: url)
        let ids = try connection.execute("SELECT external_id FROM amber.items WHERE source = $1 ORDER BY external_id",
                                         [.text(URL(fileURLWithPath: second.directory).lastPathComponent)])
        #expect(try ids.column(String.self, 0).compactMap { $0 } == ["shop-b/photo0.jpg", "shop-b/photo0.jpg#0"])
        // Pairs deleted since (by an operator): a re-run of the folder writes them again, and only them.
        try connection.execute("DELETE FROM amber.pairs p USING amber.items i WHERE i.item_id = p.image_id AND i.external_id = 'photo1.jpg'")
        let again = try runAmber(["ingest", first.directory, "--database-url", url], environment: modelEnvironment)
        #expect(again.output.contains("encoded 0 photos and 0 captions (2 photos already in the database)"), "\(again.output)")
        #expect(again.output.contains("added 0 images, 0 texts, 0 feature rows, 1 pairs"), "\(again.output)")
        // The same folder under another source label is refused too, and --source names it.
        let renamed = try runAmber(["ingest", first.directory, "--database-url", url, "--source", "elsewhere"], environment: modelEnvironment)
        #expect(renamed.status != 0 && renamed.error.contains("--source"), "\(renamed.error)")
        let bad = try runAmber(["ingest", first.directory, "--database-url", url, "--id-prefix", "a\u{7}b"], environment: modelEnvironment)
        #expect(bad.status != 0 && bad.error.contains("--id-prefix"), "\(bad.error)")
    }
}

@Suite("amber encode: photos to the global/local layout")
struct EncodeCommandTests {
    @Test("Writes the layout amber ingest reads, train before dev; uneven caption counts are refused")
    func encodes() throws {
        let folder = try PhotoFolder(photos: 3)
        defer { folder.remove() }
        try folder.write("captions.tsv", "image\tsplit\tcaption\nphoto0.jpg\tdev\tA red dog\nphoto0.jpg\tdev\tA dog runs\nphoto1.jpg\ttrain\tTwo cats\nphoto1.jpg\ttrain\tCats sleep\nphoto2.jpg\ttrain\tA bird\nphoto2.jpg\ttrain\tA bird sings\n")
        let output = folder.directory + "/features"
        let run = try runAmber(["encode", folder.directory, "--output", output], environment: modelEnvironment)
        #expect(run.status == 0, "\(run.error)")
        #expect(run.output.contains("--dev-start 2"), "\(run.output)")
        #expect(try String(contentsOfFile: output + "/image_ids.txt", encoding: .utf8) == "photo1.jpg\nphoto2.jpg\nphoto0.jpg\n")
        #expect(try NumpyFile.read(output + "/ims_local.npy").shape == [3, 49, 1280])
        #expect(try NumpyFile.read(output + "/caps_global.npy").shape == [6, 384])
        let dataset = try DatasetReader.read(output, options: .init(captionsPerImage: 2, devStart: 2))
        #expect(dataset.images.count == 3 && dataset.texts.count == 6)
        #expect(dataset.texts[0].caption == "Two cats" && dataset.pairs.last?.split == .dev)
        try folder.write("captions.tsv", "image\tcaption\nphoto0.jpg\tA red dog\nphoto0.jpg\tA dog runs\nphoto1.jpg\tTwo cats\n")
        let uneven = try runAmber(["encode", folder.directory, "--output", output], environment: modelEnvironment)
        #expect(uneven.status != 0 && uneven.error.contains("photo1.jpg has 1 captions"), "\(uneven.error)")
    }
}

@Suite("Photos end to end: amber ingest, then the query service over PostgreSQL")
struct PhotoSearchEndToEndTests {
    @Test("A photo sent as a query ranks the captions as the same photo ingested by amber ingest does; its thumbnail is served")
    func photoQueryMatchesTheIngestedPhoto() async throws {
        let folder = try PhotoFolder(photos: 3)
        defer { folder.remove() }
        try folder.write("captions.tsv", "image\tcaption\nphoto0.jpg\tA red dog\nphoto0.jpg\tA dog runs\nphoto1.jpg\tTwo cats\nphoto1.jpg\tCats sleep\nphoto2.jpg\tA bird\nphoto2.jpg\tA bird sings\n")
        let url = try TestDatabase.fresh(migrated: true)
        let ingest = try runAmber(["ingest", folder.directory, "--database-url", url], environment: modelEnvironment)
        #expect(ingest.status == 0, "\(ingest.error)")
        // A model of the encoders' dimensions, promoted.
        let model = SearchEngineFixture.model(alpha: 0.5, beta: 10, dimensions: TrainedModel.Dimensions(
            imageGlobal: 1280, imageFragment: 1280, textGlobal: 384, textFragment: 384))
        let file = folder.directory + "/model.safetensors"
        try model.write(to: file)
        let add = try runAmber(["models", "add", file, "--promote", "--database-url", url])
        #expect(add.status == 0, "\(add.error)")

        let client = PostgresClient(url: url)
        let imageEncoder = try EfficientNetLiteEncoder(directory: modelEnvironment["AMBER_IMAGE_MODEL"]!)
        let service = QueryService(store: PostgresServingStore(client: client), textEncoder: nil, imageEncoder: imageEncoder)
        #expect(try await service.reload() != nil)
        let connection = try PostgresConnection(url: url)
        let photoID = try connection.execute("SELECT item_id FROM amber.items WHERE modality = 'image' AND external_id = 'photo0.jpg'")
            .value(Int64.self, column: "item_id")
        let bytes = try #require(FileManager.default.contents(atPath: folder.images + "/photo0.jpg"))
        let byPhoto = try service.search(SearchRequest(image: bytes.base64EncodedString(), k: 6, rerank: 6))
        let byItem = try service.search(SearchRequest(itemID: photoID, k: 6, rerank: 6))
        #expect(byPhoto.target == "text" && byPhoto.results.count == 6)
        #expect(byPhoto.results.map(\.itemID) == byItem.results.map(\.itemID))
        for (a, b) in zip(byPhoto.results, byItem.results) {
            #expect(abs(a.fused - b.fused) < 1e-3, "\(a.externalID): \(a.fused) by photo, \(b.fused) as the stored item (float16 features)")
        }
        // Similar photos: the photo itself first.
        let similar = try service.search(SearchRequest(image: bytes.base64EncodedString(), target: "image", k: 3))
        #expect(similar.results.first?.externalID == "photo0.jpg")
        let picture = try await PostgresServingStore(client: client).itemImage(photoID)
        #expect(picture?.width == 64 && picture?.height == 48)
    }
}
