import AmberCatalog
import AmberTensor
import Foundation

/// A folder of photos with a captions file, as people have them: which photo each caption
/// describes and, when the file says so, its split. Encoding the photos and captions is the
/// caller's (the encoders live above the store); this reads and validates the files.
public struct PhotoCaptions: Sendable {
    public struct Photo: Sendable, Equatable {
        /// The file name relative to `imageDirectory`; also the item's external id.
        public let file: String
        public var captions: [String]
        public var split: Split?
    }

    /// The captions file's formats.
    public enum Format: String, Sendable, CaseIterable {
        /// `name.jpg#n<TAB>caption` (the Flickr8k/Flickr30k release format).
        case flickrToken
        /// A header row naming `image` (or `file`, `filename`, `file_name`), `caption` (or `text`,
        /// `sentence`) and optionally `split`; tab-separated.
        case tsv
        /// The same, comma-separated with RFC 4180 quoting.
        case csv
        /// COCO captions: `{"images": [{"id", "file_name"}], "annotations": [{"image_id", "caption"}]}`.
        case coco
    }

    public let captionsFile: String
    public let format: Format
    public let imageDirectory: String
    /// In file order of first appearance.
    public let photos: [Photo]

    /// The photos at `range` (positions in `photos`), e.g. to ingest a slice.
    public func subset(_ range: Range<Int>) -> PhotoCaptions {
        PhotoCaptions(captionsFile: captionsFile, format: format, imageDirectory: imageDirectory,
                      photos: Array(photos[range.clamped(to: 0..<photos.count)]))
    }

    /// External id of caption `n` of `photo` (as the Flickr token format names them).
    public static func textID(_ photo: String, _ n: Int) -> String { "\(photo)#\(n)" }

    /// The captions file of a photo directory: `captions.tsv`, `captions.csv`, `captions.txt`
    /// (token format), `Flickr8k.token.txt`, `results_20130124.token`, or a single `*.json`.
    public static func findCaptionsFile(in directory: String) -> String? {
        let files = Set((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [])
        for name in ["captions.tsv", "captions.csv", "Flickr8k.token.txt", "Flickr30k.token.txt", "results_20130124.token", "captions.txt"]
        where files.contains(name) {
            return directory + "/" + name
        }
        let json = files.filter { $0.hasSuffix(".json") }.sorted()
        return json.count == 1 ? directory + "/" + json[0] : nil
    }

    /// The image folder of a photo directory: `images/` (or `Images/`, `Flicker8k_Dataset/`) when
    /// present, else the directory itself.
    public static func findImageDirectory(in directory: String) -> String {
        for name in ["images", "Images", "Flicker8k_Dataset", "flickr30k-images"] {
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: directory + "/" + name, isDirectory: &isDirectory), isDirectory.boolValue {
                return directory + "/" + name
            }
        }
        return directory
    }

    /// Whether `directory` looks like photos with captions (an image folder and a captions file).
    public static func looksLikePhotoDirectory(_ directory: String) -> Bool {
        guard findCaptionsFile(in: directory) != nil else { return false }
        let images = findImageDirectory(in: directory)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: images)) ?? []
        return names.contains { isImageName($0) }
    }

    static func isImageName(_ name: String) -> Bool {
        let lower = name.lowercased()
        return lower.hasSuffix(".jpg") || lower.hasSuffix(".jpeg") || lower.hasSuffix(".png")
    }

    /// Reads a captions file (format from its name and first line unless given) and checks every
    /// photo it names exists in `imageDirectory`.
    /// - Throws: ``IngestError`` naming the file and line.
    public static func read(captionsFile: String, imageDirectory: String, format given: Format? = nil) throws -> PhotoCaptions {
        guard let data = FileManager.default.contents(atPath: captionsFile) else {
            throw IngestError(file: captionsFile, "missing or unreadable")
        }
        guard var text = String(data: data, encoding: .utf8) else { throw IngestError(file: captionsFile, "is not UTF-8 text") }
        if text.first == "\u{FEFF}" { text.removeFirst() }   // a byte-order mark (spreadsheets write one)
        let format = given ?? detectFormat(path: captionsFile, text: text)
        var photos: [Photo]
        switch format {
        case .flickrToken: photos = try parseToken(text, file: captionsFile)
        case .tsv: photos = try parseTable(rows: Self.lines(text).enumerated().map {
            ($0.element.split(separator: "\t", omittingEmptySubsequences: false).map(String.init), $0.offset + 1)
        }, file: captionsFile)
        case .csv: photos = try parseTable(rows: try csvRows(text, file: captionsFile), file: captionsFile)
        case .coco: photos = try parseCOCO(data, file: captionsFile)
        }
        guard !photos.isEmpty else { throw IngestError(file: captionsFile, "names no photos") }
        let present = Set((try? FileManager.default.contentsOfDirectory(atPath: imageDirectory)) ?? [])
        for photo in photos {
            if let problem = CatalogText.problem(photo.file, field: "the image name", codePoints: 1...(CatalogText.maximumExternalID - 16)) {
                throw IngestError(file: captionsFile, problem.message)
            }
            let exists = present.contains(photo.file) || (photo.file.contains("/") && FileManager.default.fileExists(atPath: imageDirectory + "/" + photo.file))
            guard exists else {
                throw IngestError(file: captionsFile, "names \(photo.file), which is not in \(imageDirectory)")
            }
            for caption in photo.captions {
                if let problem = CatalogText.problem(caption, field: "a caption of \(photo.file)", codePoints: 1...CatalogText.maximumCaption) {
                    throw IngestError(file: captionsFile, problem.message)
                }
            }
        }
        return PhotoCaptions(captionsFile: captionsFile, format: format, imageDirectory: imageDirectory, photos: photos)
    }

    /// Lines split at LF or CRLF (one Character in Swift) only: a caption may hold other
    /// Unicode line breaks.
    static func lines(_ text: String) -> [Substring] {
        text.split(omittingEmptySubsequences: false) { $0 == "\n" || $0 == "\r\n" }
    }

    static func detectFormat(path: String, text: String) -> Format {
        let lower = path.lowercased()
        if lower.hasSuffix(".json") { return .coco }
        if lower.hasSuffix(".csv") { return .csv }
        let first = text.prefix { $0 != "\n" }
        if let tab = first.firstIndex(of: "\t"), first[..<tab].contains("#") { return .flickrToken }
        return .tsv
    }

    /// Groups (photo, caption, split) rows by photo, in order of first appearance.
    static func group(_ rows: [(file: String, caption: String, split: Split?, line: Int)], file: String) throws -> [Photo] {
        var index: [String: Int] = [:]
        var photos: [Photo] = []
        for row in rows {
            if let at = index[row.file] {
                if photos[at].split != row.split {
                    throw IngestError(file: file, line: row.line, "\(row.file) is in split \(row.split?.rawValue ?? "(none)") here and \(photos[at].split?.rawValue ?? "(none)") before")
                }
                photos[at].captions.append(row.caption)
            } else {
                index[row.file] = photos.count
                photos.append(Photo(file: row.file, captions: [row.caption], split: row.split))
            }
        }
        return photos
    }

    static func parseSplit(_ value: String, file: String, line: Int) throws -> Split? {
        switch value.trimmingCharacters(in: .whitespaces).lowercased() {
        case "": return nil
        case "train", "restval": return .train
        case "dev", "val", "valid", "validation": return .dev
        case "test": return .test
        default: throw IngestError(file: file, line: line, "unknown split '\(value)'; use train, dev (or val) or test")
        }
    }

    static func parseToken(_ text: String, file: String) throws -> [Photo] {
        var rows: [(file: String, caption: String, split: Split?, line: Int)] = []
        for (number, line) in lines(text).enumerated() {
            if line.trimmingCharacters(in: .whitespaces).isEmpty { continue }
            guard let tab = line.firstIndex(of: "\t") else {
                throw IngestError(file: file, line: number + 1, "expected 'name.jpg#n<TAB>caption'")
            }
            let key = line[..<tab], caption = String(line[line.index(after: tab)...]).trimmingCharacters(in: .whitespaces)
            guard let hash = key.lastIndex(of: "#"), Int(key[key.index(after: hash)...]) != nil, hash > key.startIndex else {
                throw IngestError(file: file, line: number + 1, "expected 'name.jpg#n' before the tab, found '\(key)'")
            }
            rows.append((String(key[..<hash]), caption, nil, number + 1))
        }
        return try group(rows, file: file)
    }

    /// A caption on one line: line breaks and tabs inside a (quoted CSV) field become spaces, so
    /// that every caption is one line of `caps.txt` and of a log.
    static func oneLine(_ field: String) -> String {
        let trimmed = field.trimmingCharacters(in: .whitespaces)
        guard trimmed.contains(where: { $0.isNewline || $0 == "\t" }) else { return trimmed }
        var out = ""
        var inBreak = false
        for c in trimmed.trimmingCharacters(in: .whitespacesAndNewlines) {
            if c.isNewline || c == "\t" {
                if !inBreak { out.append(" ") }
                inBreak = true
            } else {
                inBreak = false
                out.append(c)
            }
        }
        return out
    }

    /// `rows`: each row's fields and the line it starts on.
    static func parseTable(rows: [(fields: [String], line: Int)], file: String) throws -> [Photo] {
        guard let header = rows.first?.fields else { throw IngestError(file: file, "is empty") }
        let names = header.map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
        func column(_ candidates: [String]) -> Int? { names.firstIndex { candidates.contains($0) } }
        guard let imageColumn = column(["image", "file", "filename", "file_name", "image_name"]),
              let captionColumn = column(["caption", "text", "sentence", "comment"]) else {
            throw IngestError(file: file, line: 1, "the header row must name an image column (image, file, filename) and a caption column (caption, text); found \(header)")
        }
        let splitColumn = column(["split"])
        var parsed: [(file: String, caption: String, split: Split?, line: Int)] = []
        for (row, line) in rows.dropFirst() {
            if row.count == 1 && row[0].trimmingCharacters(in: .whitespaces).isEmpty { continue }
            guard row.count == header.count else {
                throw IngestError(file: file, line: line, "has \(row.count) fields; the header has \(header.count)")
            }
            let split = try splitColumn.map { try parseSplit(row[$0], file: file, line: line) } ?? nil
            parsed.append((row[imageColumn].trimmingCharacters(in: .whitespaces), oneLine(row[captionColumn]), split, line))
        }
        return try group(parsed, file: file)
    }

    /// RFC 4180 fields: commas separate, double quotes enclose, `""` inside quotes is a quote;
    /// each row with the line it starts on (a quoted field may span lines).
    static func csvRows(_ text: String, file: String) throws -> [(fields: [String], line: Int)] {
        var rows: [(fields: [String], line: Int)] = [], row: [String] = [], field = ""
        var quoted = false, line = 1, rowLine = 1
        var characters = text.makeIterator()
        var pending: Character? = nil
        while let c = pending ?? characters.next() {
            pending = nil
            if quoted {
                if c == "\"" {
                    if let next = characters.next() {
                        if next == "\"" { field.append("\"") } else { quoted = false; pending = next }
                    } else { quoted = false }
                } else {
                    if c == "\n" || c == "\r\n" { line += 1 }
                    field.append(c)
                }
                continue
            }
            switch c {
            case "\"" where field.isEmpty: quoted = true
            case ",": row.append(field); field = ""
            case "\n", "\r\n":
                row.append(field); rows.append((row, rowLine)); row = []; field = ""; line += 1; rowLine = line
            case "\r": continue
            default: field.append(c)
            }
        }
        if quoted { throw IngestError(file: file, line: line, "a quoted field is not closed") }
        if !field.isEmpty || !row.isEmpty { row.append(field); rows.append((row, rowLine)) }
        return rows
    }

    static func parseCOCO(_ data: Data, file: String) throws -> [Photo] {
        struct Document: Decodable {
            struct Image: Decodable { let id: Int64; let file_name: String }
            struct Annotation: Decodable { let image_id: Int64; let caption: String }
            let images: [Image]
            let annotations: [Annotation]
        }
        let document: Document
        do { document = try JSONDecoder().decode(Document.self, from: data) } catch {
            throw IngestError(file: file, "not COCO captions JSON (images with id and file_name, annotations with image_id and caption): \(error)")
        }
        var names: [Int64: String] = [:]
        for image in document.images {
            if let previous = names[image.id], previous != image.file_name {
                throw IngestError(file: file, "image id \(image.id) is both \(previous) and \(image.file_name)")
            }
            names[image.id] = image.file_name
        }
        var rows: [(file: String, caption: String, split: Split?, line: Int)] = []
        for (index, annotation) in document.annotations.enumerated() {
            guard let name = names[annotation.image_id] else {
                throw IngestError(file: file, "annotation \(index) refers to image id \(annotation.image_id), which is not in images")
            }
            rows.append((name, annotation.caption.trimmingCharacters(in: .whitespacesAndNewlines), nil, 0))
        }
        return try group(rows, file: file)
    }

    /// Each photo's split: its own (from the captions file), else a list file in `directory`
    /// (`train_images.txt`, `dev_images.txt`, `test_images.txt`, or Flickr8k's
    /// `Flickr_8k.{train,dev,test}Images.txt`), else a deterministic default: one photo in eight
    /// is dev, by a hash of its name (stable whatever the order or number of photos).
    public func splits(listDirectory directory: String) throws -> [String: Split] {
        var listed: [String: Split] = [:]
        let lists: [(Split, [String])] = [(.train, ["train_images.txt", "Flickr_8k.trainImages.txt"]),
                                          (.dev, ["dev_images.txt", "val_images.txt", "Flickr_8k.devImages.txt"]),
                                          (.test, ["test_images.txt", "Flickr_8k.testImages.txt"])]
        for (split, names) in lists {
            for name in names {
                let path = directory + "/" + name
                guard FileManager.default.fileExists(atPath: path) else { continue }
                guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw IngestError(file: path, "is not UTF-8 text") }
                for (number, line) in Self.lines(text).enumerated() {
                    let name = line.trimmingCharacters(in: .whitespacesAndNewlines)
                    if name.isEmpty { continue }
                    if let other = listed[name], other != split {
                        throw IngestError(file: path, line: number + 1, "\(name) is also in the \(other.rawValue) list")
                    }
                    listed[name] = split
                }
            }
        }
        var result: [String: Split] = [:]
        for photo in photos {
            result[photo.file] = photo.split ?? listed[photo.file] ?? Self.defaultSplit(photo.file)
        }
        return result
    }

    /// One in eight photos is dev, by the FNV-1a hash of the name.
    public static func defaultSplit(_ name: String) -> Split {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in name.utf8 { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3 }
        return hash % 8 == 0 ? .dev : .train
    }
}

/// Feature bytes made in memory (by the native encoders) for an ingest: owns its memory for as
/// long as the dataset that points into it.
public final class EncodedFeatureStore: @unchecked Sendable {
    private var buffers: [UnsafeMutableRawBufferPointer] = []

    public init() {}

    deinit { for buffer in buffers { buffer.deallocate() } }

    /// A block of `rows × dimension` values stored as `elementType` (float32 or float16).
    public func block(_ values: [Float], rows: Int, dimension: Int, as elementType: ElementType) -> FeatureBlock {
        let bytes = ElementEncoding.encode(Tensor(shape: [values.count], scalars: values),
                                           as: elementType == .float16 ? .float16 : .float32)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bytes.count, 1), alignment: 16)
        bytes.withUnsafeBytes { buffer.copyMemory(from: $0) }
        buffers.append(buffer)
        return FeatureBlock(elementType: elementType, rows: rows, dimension: dimension,
                            bytes: UnsafeRawBufferPointer(rebasing: buffer[0..<bytes.count]))
    }
}

extension IngestDataset {
    /// A dataset of features made in memory; `store` keeps their bytes alive.
    public init(source: String, images: [IngestImage], texts: [IngestText], pairs: [IngestPair], store: EncodedFeatureStore) {
        self.init(source: source, images: images, texts: texts, pairs: pairs, keepAlive: [store])
    }
}

extension IngestImage {
    /// An image named without features (its features are in the database already, or come later).
    public init(externalID: String) {
        self.init(externalID: externalID, features: nil)
    }

    public init(externalID: String, encoded features: IngestFeatures) {
        self.init(externalID: externalID, features: features)
    }
}

extension IngestText {
    public init(externalID: String, caption: String, encoded features: IngestFeatures) {
        self.init(externalID: externalID, caption: caption, features: features)
    }
}

extension IngestPair {
    public init(image: String, text: String, split: Split) {
        self.init(imageExternalID: image, textExternalID: text, split: split)
    }
}

extension IngestFeatures {
    public init(encodedGlobal global: FeatureBlock, local: FeatureBlock) {
        self.init(global: global, local: local)
    }
}
