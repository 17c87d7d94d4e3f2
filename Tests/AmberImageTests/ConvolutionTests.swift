@testable import AmberImage
import Testing

/// A seeded generator of floats in [-1, 1).
struct Noise {
    var state: UInt64
    mutating func next() -> Float {
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        return Float(Int64(bitPattern: state >> 11) % 10_000) / 10_000
    }
    mutating func values(_ count: Int) -> [Float] { (0..<count).map { _ in next() } }
}

/// The reference: a direct NHWC convolution (groups 1 or depthwise) with explicit zero padding
/// `before`, batch norm applied unfolded, in double, then the activation.
func naiveConvolution(input: [Float], batch: Int, height: Int, width: Int, channels: Int,
                      weight: [Float], outputChannels: Int, kernel: Int, stride: Int, depthwise: Bool,
                      gamma: [Float], beta: [Float], mean: [Float], variance: [Float], epsilon: Float,
                      relu6: Bool, residual: [Float]? = nil) -> (values: [Float], height: Int, width: Int) {
    let oh = (height + stride - 1) / stride, ow = (width + stride - 1) / stride
    let padY = max((oh - 1) * stride + kernel - height, 0) / 2
    let padX = max((ow - 1) * stride + kernel - width, 0) / 2
    var out = [Float](repeating: 0, count: batch * oh * ow * outputChannels)
    for b in 0..<batch {
        for y in 0..<oh {
            for x in 0..<ow {
                for o in 0..<outputChannels {
                    var total = 0.0
                    for ky in 0..<kernel {
                        for kx in 0..<kernel {
                            let iy = y * stride + ky - padY, ix = x * stride + kx - padX
                            guard iy >= 0, iy < height, ix >= 0, ix < width else { continue }
                            if depthwise {
                                total += Double(input[((b * height + iy) * width + ix) * channels + o])
                                    * Double(weight[(o * kernel + ky) * kernel + kx])
                            } else {
                                for c in 0..<channels {
                                    total += Double(input[((b * height + iy) * width + ix) * channels + c])
                                        * Double(weight[((o * channels + c) * kernel + ky) * kernel + kx])
                                }
                            }
                        }
                    }
                    var v = (total - Double(mean[o])) / (Double(variance[o]) + Double(epsilon)).squareRoot()
                        * Double(gamma[o]) + Double(beta[o])
                    let index = ((b * oh + y) * ow + x) * outputChannels + o
                    if let residual { v += Double(residual[index]) }
                    if relu6 { v = min(max(v, 0), 6) }
                    out[index] = Float(v)
                }
            }
        }
    }
    return (out, oh, ow)
}

@Suite("Convolution layers against naive references")
struct ConvolutionTests {
    @Test("SAME padding: ⌈n/s⌉ outputs, odd padding after (TensorFlow's rule, as the reference package pads)",
          arguments: [(224, 3, 2, 112, 0, 1), (112, 3, 1, 112, 1, 1), (56, 5, 2, 28, 1, 2), (14, 5, 1, 14, 2, 2),
                      (7, 3, 2, 4, 1, 1), (37, 3, 2, 19, 1, 1), (19, 5, 2, 10, 2, 2), (1, 5, 2, 1, 2, 2), (8, 1, 1, 8, 0, 0)])
    func samePadding(input: Int, kernel: Int, stride: Int, output: Int, before: Int, after: Int) {
        let padding = SamePadding(input: input, kernel: kernel, stride: stride)
        #expect(padding.output == output && padding.before == before && padding.after == after)
    }

    struct Case: Sendable, CustomTestStringConvertible {
        let kind: FoldedConvolution.Kind
        let kernel: Int, stride: Int, height: Int, width: Int, channels: Int, outputs: Int, relu6: Bool, residual: Bool
        var testDescription: String { "\(kind) k\(kernel) s\(stride) \(height)×\(width)×\(channels)→\(outputs)\(relu6 ? " relu6" : "")\(residual ? " +residual" : "")" }
    }

    @Test("Each layer kind with folded batch norm equals convolution → batch norm → activation", arguments: [
        Case(kind: .pointwise, kernel: 1, stride: 1, height: 5, width: 7, channels: 19, outputs: 33, relu6: true, residual: false),
        Case(kind: .pointwise, kernel: 1, stride: 1, height: 3, width: 4, channels: 40, outputs: 24, relu6: false, residual: true),
        Case(kind: .dense, kernel: 3, stride: 2, height: 11, width: 8, channels: 3, outputs: 10, relu6: true, residual: false),
        Case(kind: .dense, kernel: 3, stride: 1, height: 6, width: 5, channels: 4, outputs: 17, relu6: false, residual: false),
        Case(kind: .depthwise, kernel: 3, stride: 1, height: 9, width: 6, channels: 35, outputs: 35, relu6: true, residual: false),
        Case(kind: .depthwise, kernel: 3, stride: 2, height: 10, width: 11, channels: 16, outputs: 16, relu6: true, residual: false),
        Case(kind: .depthwise, kernel: 5, stride: 2, height: 9, width: 9, channels: 21, outputs: 21, relu6: true, residual: false),
        Case(kind: .depthwise, kernel: 5, stride: 1, height: 3, width: 2, channels: 48, outputs: 48, relu6: false, residual: false),
    ])
    func layer(_ c: Case) {
        var noise = Noise(state: UInt64(c.kernel * 1000 + c.channels * 10 + c.stride))
        let batch = 2
        let input = noise.values(batch * c.height * c.width * c.channels).map { $0 * 3 }
        let perGroup = c.kind == .depthwise ? 1 : c.channels
        let weight = noise.values(c.outputs * perGroup * c.kernel * c.kernel)
        let gamma = noise.values(c.outputs).map { 1 + $0 / 2 }, beta = noise.values(c.outputs)
        let mean = noise.values(c.outputs).map { $0 / 4 }, variance = noise.values(c.outputs).map { 0.5 + abs($0) }
        let layer = FoldedConvolution(kind: c.kind, pytorchWeight: weight, kernel: c.kernel, stride: c.stride,
                                      inputChannels: c.channels, outputChannels: c.outputs, gamma: gamma, beta: beta,
                                      mean: mean, variance: variance, epsilon: 1e-3, activation: c.relu6 ? .relu6 : .none)
        let oh = (c.height + c.stride - 1) / c.stride, ow = (c.width + c.stride - 1) / c.stride
        let residual = c.residual ? noise.values(batch * oh * ow * c.outputs) : nil
        let map = FeatureMap(values: input, batch: batch, height: c.height, width: c.width, channels: c.channels)
        let got = layer(map, residual: residual.map { FeatureMap(values: $0, batch: batch, height: oh, width: ow, channels: c.outputs) })
        let expected = naiveConvolution(input: input, batch: batch, height: c.height, width: c.width, channels: c.channels,
                                        weight: weight, outputChannels: c.outputs, kernel: c.kernel, stride: c.stride,
                                        depthwise: c.kind == .depthwise, gamma: gamma, beta: beta, mean: mean,
                                        variance: variance, epsilon: 1e-3, relu6: c.relu6, residual: residual)
        #expect(got.height == expected.height && got.width == expected.width && got.channels == c.outputs)
        let worst = zip(got.values, expected.values).map { abs($0 - $1) }.max() ?? .infinity
        #expect(got.values.count == expected.values.count)
        #expect(worst < 1e-4, "largest difference \(worst)")
        if c.relu6 {
            #expect(got.values.allSatisfy { $0 >= 0 && $0 <= 6 })
            #expect(got.values.contains(0) || got.values.contains(6), "the clamp was never exercised")
        }
    }
}
