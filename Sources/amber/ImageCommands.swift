import AmberCatalog
import AmberImage
import AmberTensor
import ArgumentParser
import Foundation

/// Where the image encoder's weights are; shared by the image commands.
struct ImageModelOptions: ParsableArguments {
    @Option(name: .customLong("image-model"),
            help: "Directory with the image encoder's model.safetensors (default: $AMBER_IMAGE_MODEL or $AMBER_HOME/models/efficientnet-lite0).")
    var imageModel: String?

    func load(batchSize: Int = 4) throws -> EfficientNetLiteEncoder {
        try EfficientNetLiteEncoder(directory: imageModel ?? EfficientNetLiteEncoder.defaultDirectory, batchSize: batchSize)
    }
}

/// Reads and decodes one image file; errors name the file.
func decodeImageFile(_ path: String, limits: ImageLimits = .standard) throws -> RGBImage {
    do {
        return try ImageDecoder.decode(file: path, limits: limits)
    } catch {
        throw ValidationError("\(path): \(error)")
    }
}

struct ImageParityCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "image-parity",
        abstract: "Check the native image encoder against ims_global.npy / ims_local.npy made by the reference pipeline, and print the worst cases."
    )

    @Option(help: "Directory of reference features: image_ids.txt, ims_global.npy, ims_local.npy.")
    var reference: String = "../shared/data/flickr8k/reference-dev100"

    @Option(help: "Directory of the image files named in image_ids.txt.")
    var images: String = "../shared/data/flickr8k/images"

    @OptionGroup var imageModel: ImageModelOptions

    @Option(help: "Worst cases to print.")
    var worst: Int = 5

    func validate() throws {
        guard worst >= 0 else { throw ValidationError("--worst must be 0 or more") }
    }

    func run() throws {
        let encoder = try imageModel.load()
        let idsPath = reference + "/image_ids.txt"
        guard let idsText = try? String(contentsOfFile: idsPath, encoding: .utf8) else {
            throw ValidationError("\(idsPath): cannot be read")
        }
        let ids = idsText.split(separator: "\n").map(String.init).filter { !$0.isEmpty }
        let globals = try NumpyFile.read(reference + "/ims_global.npy").tensor()
        let locals = try NumpyFile.read(reference + "/ims_local.npy").tensor()
        let cells = encoder.architecture.gridSize * encoder.architecture.gridSize
        let channels = encoder.architecture.headChannels
        guard globals.shape == [ids.count, channels], locals.shape == [ids.count, cells, channels] else {
            throw ValidationError("\(reference): ims_global.npy \(globals.shape) / ims_local.npy \(locals.shape) do not match \(ids.count) images of \(cells) × \(channels)")
        }
        let decodeStart = Date()
        let decoded = try ids.map { try decodeImageFile(images + "/" + $0) }
        let decodeSeconds = Date().timeIntervalSince(decodeStart)
        let started = Date()
        let encodings = encoder.encode(decoded)
        let seconds = Date().timeIntervalSince(started)
        let referenceGlobal = globals.scalars, referenceLocal = locals.scalars
        func cosine(_ a: ArraySlice<Float>, _ b: ArraySlice<Float>) -> Double {
            var dot = 0.0, na = 0.0, nb = 0.0
            for (x, y) in zip(a, b) { dot += Double(x) * Double(y); na += Double(x) * Double(x); nb += Double(y) * Double(y) }
            return na == 0 && nb == 0 ? 1 : dot / max((na * nb).squareRoot(), 1e-30)
        }
        var globalWorst: [(Double, Int)] = [], localWorst: [(Double, Int, Int)] = []
        for (i, encoding) in encodings.enumerated() {
            let g = encoding.globalVector.scalars, l = encoding.localVectors.scalars
            globalWorst.append((cosine(g[...], referenceGlobal[(i * channels) ..< ((i + 1) * channels)]), i))
            for cell in 0..<cells {
                let start = (i * cells + cell) * channels
                localWorst.append((cosine(l[(cell * channels) ..< ((cell + 1) * channels)], referenceLocal[start ..< (start + channels)]), i, cell))
            }
        }
        globalWorst.sort { $0.0 < $1.0 }
        localWorst.sort { $0.0 < $1.0 }
        let minimumGlobal = globalWorst.first?.0 ?? 1, minimumLocal = localWorst.first?.0 ?? 1
        print("image parity on \(ids.count) images of \(reference)")
        print(String(format: "decode %.2f s (%.0f images/s); encode %.2f s (%.1f images/s, batch %d)",
                     decodeSeconds, Double(ids.count) / decodeSeconds, seconds, Double(ids.count) / seconds, encoder.batchSize))
        print(String(format: "global vectors: minimum cosine %.9f (goal ≥ 0.9999), below 0.9999: %d",
                     minimumGlobal, globalWorst.filter { $0.0 < 0.9999 }.count))
        for (c, i) in globalWorst.prefix(worst) { print(String(format: "  %.9f %@", c, ids[i])) }
        print(String(format: "local vectors: %d compared, minimum cosine %.9f (goal ≥ 0.999), below 0.999: %d",
                     localWorst.count, minimumLocal, localWorst.filter { $0.0 < 0.999 }.count))
        for (c, i, cell) in localWorst.prefix(worst) { print(String(format: "  %.9f %@ cell (%d, %d)", c, ids[i], cell / encoder.architecture.gridSize, cell % encoder.architecture.gridSize)) }
        let passed = minimumGlobal >= 0.9999 && minimumLocal >= 0.999
        print(passed ? "PARITY: pass" : "PARITY: FAIL")
        if !passed { throw ExitCode.failure }
    }
}
