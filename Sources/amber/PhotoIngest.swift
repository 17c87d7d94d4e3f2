import AmberCatalog
import AmberIngest
import AmberImage
import AmberServer
import AmberStore
import AmberTensor
import AmberText
import ArgumentParser
import Foundation

/// Where a photo folder's captions and images are; shared by `amber ingest` and `amber encode`.
struct PhotoFolderOptions: ParsableArguments {
    @Option(help: "Photos: the captions file (default: captions.tsv, captions.csv, Flickr8k.token.txt, captions.txt or the one *.json in the directory).")
    var captions: String?

    @Option(help: "Photos: the folder of image files (default: DIR/images when present, else DIR).")
    var imageDirectory: String?

    @Option(help: "Photos: the captions file's format (flickr-token, tsv, csv, coco; default: from its name and first line).")
    var format: String?

    func validate() throws {
        if let format, Self.format(format) == nil {
            throw ValidationError("--format must be flickr-token, tsv, csv or coco, got '\(format)'")
        }
    }

    static func format(_ name: String) -> PhotoCaptions.Format? {
        switch name.lowercased() {
        case "flickr-token", "token", "flickr": .flickrToken
        case "tsv": .tsv
        case "csv": .csv
        case "coco", "json": .coco
        default: nil
        }
    }

    /// Whether the options name photos (else the directory decides).
    var given: Bool { captions != nil || imageDirectory != nil }

    /// The photos of `directory` (only those at `images`, `START:END`, when given) and their splits.
    /// - Throws: `ValidationError` naming the file and line.
    func read(_ directory: String, images: String?) throws -> (photos: PhotoCaptions, splits: [String: Split]) {
        guard let captionsFile = captions ?? PhotoCaptions.findCaptionsFile(in: directory) else {
            throw ValidationError("\(directory): no captions file (captions.tsv, captions.csv, Flickr8k.token.txt, captions.txt or one *.json); name it with --captions")
        }
        var photos: PhotoCaptions
        let splits: [String: Split]
        do {
            photos = try PhotoCaptions.read(captionsFile: captionsFile, imageDirectory: imageDirectory ?? PhotoCaptions.findImageDirectory(in: directory),
                                            format: format.flatMap(Self.format))
            splits = try photos.splits(listDirectory: URL(fileURLWithPath: captionsFile).deletingLastPathComponent().path)
        } catch let error as IngestError {
            throw ValidationError("\(error)")
        }
        if let images {
            photos = photos.subset(try imageRange(images, count: photos.photos.count, in: captionsFile))
        }
        return (photos, splits)
    }
}

/// `--images START:END` against a count of `count` (photos or images of `file`).
func imageRange(_ text: String, count: Int, in file: String) throws -> Range<Int> {
    let bounds = text.split(separator: ":", omittingEmptySubsequences: false).map { Int($0) }
    guard bounds.count == 2, let start = bounds[0], let end = bounds[1], start >= 0, start < end else {
        throw ValidationError("--images must be START:END with 0 ≤ START < END, got '\(text)'")
    }
    guard start < count else { throw ValidationError("--images \(text): \(file) has \(count)") }
    return start..<end
}
