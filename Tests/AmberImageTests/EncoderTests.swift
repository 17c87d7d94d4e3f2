@testable import AmberImage
import AmberTensor
import Foundation
import Testing

/// A tiny EfficientNet-Lite-shaped network with random weights, input images, PIL's resizes of
/// them and the features an independent NumPy forward pass gives (ops/dev/make_image_fixture.py,
/// whose NumPy network matches the real Lite0 reference features).
struct ImageFixture: Decodable {
    struct Architecture: Decodable {
        let stages: [[Int]]
        let stem: Int
        let head: Int
        let image_size: Int
    }
    struct Picture: Decodable {
        var source: Int?
        let width: Int
        let height: Int
        let pixels: [UInt8]
        var image: RGBImage { RGBImage(width: width, height: height, pixels: pixels)! }
    }
    let architecture: Architecture
    let images: [Picture]
    let resized: [Picture]
    let local: [[Float]]
    let global: [[Float]]
    let cells: Int
    let channels: Int

    static func url(_ name: String, _ ext: String) -> URL {
        Bundle.module.url(forResource: name, withExtension: ext, subdirectory: "Fixtures")!
    }

    static func load() throws -> ImageFixture {
        try JSONDecoder().decode(ImageFixture.self, from: Data(contentsOf: url("image_fixture", "json")))
    }

    var lite: EfficientNetArchitecture {
        EfficientNetArchitecture(
            stemChannels: architecture.stem,
            blocks: EfficientNetArchitecture.stages(architecture.stages.map { ($0[0], $0[1], $0[2], $0[3], $0[4], $0[5]) }),
            headChannels: architecture.head, imageSize: architecture.image_size)
    }
}

func cosine(_ a: [Float], _ b: [Float]) -> Double {
    let dot = zip(a, b).map { Double($0) * Double($1) }.reduce(0, +)
    let na = a.map { Double($0) * Double($0) }.reduce(0, +).squareRoot()
    let nb = b.map { Double($0) * Double($0) }.reduce(0, +).squareRoot()
    return dot / (na * nb)
}

@Suite("EfficientNet-Lite encoder")
struct EncoderTests {
    @Test("The tiny network's local and global vectors match the NumPy forward pass, in any batch size")
    func matchesNumPy() throws {
        let fixture = try ImageFixture.load()
        let weights = try SafetensorsFile(path: ImageFixture.url("tiny_lite", "safetensors").path)
        for batchSize in [1, 2, 3] {
            let encoder = try EfficientNetLiteEncoder(weights: weights, architecture: fixture.lite, batchSize: batchSize)
            #expect(encoder.architecture.gridSize * encoder.architecture.gridSize == fixture.cells)
            let encodings = encoder.encode(fixture.images.map(\.image))
            #expect(encodings.count == fixture.images.count)
            for (index, encoding) in encodings.enumerated() {
                #expect(encoding.localVectors.shape == [fixture.cells, fixture.channels])
                let local = encoding.localVectors.scalars, global = encoding.globalVector.scalars
                for cell in 0..<fixture.cells {
                    let range = (cell * fixture.channels) ..< ((cell + 1) * fixture.channels)
                    let c = cosine(Array(local[range]), Array(fixture.local[index][range]))
                    #expect(c > 0.99999, "image \(index) cell \(cell): cosine \(c)")
                }
                let worst = zip(global, fixture.global[index]).map { abs($0 - $1) }.max() ?? 0
                let scale = fixture.global[index].map(abs).max() ?? 1
                #expect(worst <= 1e-4 * scale, "image \(index): global differs by \(worst)")
            }
        }
    }

    @Test("A file of the wrong network is refused with the tensor named; a NaN weight is refused")
    func refusesWrongWeights() throws {
        let fixture = try ImageFixture.load()
        let weights = try SafetensorsFile(path: ImageFixture.url("tiny_lite", "safetensors").path)
        var wider = fixture.lite
        wider.headChannels += 1
        #expect(throws: ImageEncoderFileError.self) { try EfficientNetLiteEncoder(weights: weights, architecture: wider) }
        do {
            _ = try EfficientNetLiteEncoder(weights: weights, architecture: wider)
        } catch {
            #expect("\(error)".contains("_bn1.running_var") && "\(error)".contains("expected [41]"))
        }
        // The same tensors with one value made NaN.
        var entries: [String: SafetensorsFile.Entry] = [:]
        for name in weights.names {
            let tensor = try weights.tensor(name)
            var values = tensor.scalars
            if name == "_blocks.1._depthwise_conv.weight" { values[3] = .nan }
            entries[name] = .float(Tensor(shape: tensor.shape, scalars: values), .float32)
        }
        let bytes = try SafetensorsFile.encode(entries).flatMap { $0 }
        let poisoned = try SafetensorsFile(bytes: bytes, name: "poisoned.safetensors")
        #expect(throws: ImageEncoderFileError.self) { try EfficientNetLiteEncoder(weights: poisoned, architecture: fixture.lite) }
        // A missing directory names ops/setup.
        do {
            _ = try EfficientNetLiteEncoder(directory: "/nonexistent/amber-model")
            Issue.record("a missing model directory loaded")
        } catch {
            #expect("\(error)".contains("ops/setup"))
        }
    }

    @Test("Lite0's architecture: 16 blocks, a 7 × 7 grid at 224, the reference package's channel counts")
    func lite0Shape() {
        let lite0 = EfficientNetArchitecture.lite0
        #expect(lite0.blocks.count == 16)
        #expect(lite0.gridSize == 7)
        #expect(lite0.blocks.map(\.output) == [16, 24, 24, 40, 40, 80, 80, 80, 112, 112, 112, 192, 192, 192, 192, 320])
        #expect(lite0.blocks.filter(\.hasResidual).count == 9)
        #expect(lite0.blocks.map(\.stride) == [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1])
    }

    @Test("Preprocessing is (x/255 − 0.498)/0.502 in float, after PIL's resize")
    func preprocessing() throws {
        let fixture = try ImageFixture.load()
        let weights = try SafetensorsFile(path: ImageFixture.url("tiny_lite", "safetensors").path)
        let encoder = try EfficientNetLiteEncoder(weights: weights, architecture: fixture.lite)
        let image = fixture.images[0].image   // already at the network's size: no resize
        let input = encoder.preprocess(image)
        #expect(input.count == image.pixels.count)
        for (value, byte) in zip(input, image.pixels) {
            #expect(value == (Float(byte) / 255 - 0.498) / 0.502)
        }
        #expect(encoder.preprocess(fixture.images[1].image).count == 37 * 37 * 3)
    }
}

@Suite("PIL-exact bicubic resize")
struct ResampleTests {
    @Test("Down, up and mixed scaling give PIL's bytes exactly")
    func matchesPIL() throws {
        let fixture = try ImageFixture.load()
        for expected in fixture.resized {
            let source = fixture.images[expected.source ?? 0]
            let resized = Resample.bicubic(source.image, width: expected.width, height: expected.height)
            #expect(resized.width == expected.width && resized.height == expected.height)
            let differing = zip(resized.pixels, expected.pixels).filter { $0 != $1 }.count
            #expect(differing == 0, "\(source.width)×\(source.height) → \(expected.width)×\(expected.height): \(differing) bytes differ")
        }
    }

    @Test("The same size is a copy; a constant image stays constant at any size")
    func invariants() {
        let image = RGBImage(width: 5, height: 4, pixels: (0..<60).map { UInt8($0 * 4) })!
        #expect(Resample.bicubic(image, width: 5, height: 4) == image)
        let grey = RGBImage(width: 13, height: 7, pixels: [UInt8](repeating: 173, count: 13 * 7 * 3))!
        for (w, h) in [(1, 1), (3, 20), (40, 2), (13, 3)] {
            #expect(Resample.bicubic(grey, width: w, height: h).pixels.allSatisfy { $0 == 173 })
        }
    }

    @Test("Weights per output sum to one in fixed point (±1 per tap of rounding)")
    func coefficientsNormalised() {
        for (input, output) in [(224, 7), (7, 224), (500, 224), (224, 223)] {
            let c = Resample.coefficients(input: input, output: output)
            for position in 0..<output {
                let sum = c.weights[(position * c.taps) ..< (position * c.taps + c.count[position])].reduce(0) { $0 + Int($1) }
                #expect(abs(sum - (1 << Resample.precisionBits)) <= c.count[position])
                #expect(c.first[position] >= 0 && c.first[position] + c.count[position] <= input)
            }
        }
    }
}
