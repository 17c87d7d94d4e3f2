import AmberTensor
import CBLAS

// The convolution kernels of an inference-only MobileNet-style network, in NHWC (channels
// contiguous): a 1×1 convolution is one sgemm; the stem's k×k convolution is an im2col and one
// sgemm; the depthwise k×k convolution is a direct loop vectorised over channels. Batch norm is
// folded into the weights and a bias at load, so each layer is "product, + bias, activation".

/// TensorFlow's "SAME" padding: the output is ⌈n / s⌉ long and the padding, when odd, goes
/// after (right, bottom) rather than before — asymmetric on stride 2.
public struct SamePadding: Equatable, Sendable {
    public let output: Int
    public let before: Int
    public let after: Int

    public init(input: Int, kernel: Int, stride: Int) {
        output = (input + stride - 1) / stride
        let total = max((output - 1) * stride + kernel - input, 0)
        before = total / 2
        after = total - before
    }
}

/// What follows a layer's product and bias.
public enum Activation: Sendable {
    case none
    /// min(max(x, 0), 6)
    case relu6
}

/// A dense spatial map: `batch × height × width × channels` floats, channels fastest.
struct FeatureMap {
    var values: [Float]
    let batch: Int, height: Int, width: Int, channels: Int

    init(batch: Int, height: Int, width: Int, channels: Int) {
        self.batch = batch
        self.height = height
        self.width = width
        self.channels = channels
        values = [Float](repeating: 0, count: batch * height * width * channels)
    }

    init(values: [Float], batch: Int, height: Int, width: Int, channels: Int) {
        self.values = values
        self.batch = batch
        self.height = height
        self.width = width
        self.channels = channels
    }

    var pixels: Int { batch * height * width }
}

/// A convolution with batch norm folded in: `weights` laid out for the kernel that runs it.
struct FoldedConvolution: Sendable {
    enum Kind: Sendable { case pointwise, dense, depthwise }
    let kind: Kind
    let kernel: Int
    let stride: Int
    let inputChannels: Int
    let outputChannels: Int
    /// pointwise: `[in, out]`; dense: `[kernel·kernel·in, out]` ordered (ky, kx, c); depthwise:
    /// `[kernel·kernel, channels]`.
    let weights: [Float]
    let bias: [Float]
    let activation: Activation

    /// Folds `batchNorm` (γ, β, running mean μ, running variance σ², ε) into a PyTorch weight
    /// `[out, in/groups, k, k]`: w' = w·γ/√(σ²+ε), b' = β − μ·γ/√(σ²+ε), computed in double.
    init(kind: Kind, pytorchWeight: [Float], kernel: Int, stride: Int, inputChannels: Int, outputChannels: Int,
         gamma: [Float], beta: [Float], mean: [Float], variance: [Float], epsilon: Float, activation: Activation) {
        self.kind = kind
        self.kernel = kernel
        self.stride = stride
        self.inputChannels = inputChannels
        self.outputChannels = outputChannels
        self.activation = activation
        let scale = (0..<outputChannels).map { Double(gamma[$0]) / (Double(variance[$0]) + Double(epsilon)).squareRoot() }
        bias = (0..<outputChannels).map { Float(Double(beta[$0]) - Double(mean[$0]) * scale[$0]) }
        let taps = kernel * kernel
        var folded = [Float](repeating: 0, count: pytorchWeight.count)
        switch kind {
        case .pointwise:
            for o in 0..<outputChannels {
                for c in 0..<inputChannels {
                    folded[c * outputChannels + o] = Float(Double(pytorchWeight[o * inputChannels + c]) * scale[o])
                }
            }
        case .dense:
            for o in 0..<outputChannels {
                for c in 0..<inputChannels {
                    for t in 0..<taps {
                        folded[(t * inputChannels + c) * outputChannels + o] =
                            Float(Double(pytorchWeight[(o * inputChannels + c) * taps + t]) * scale[o])
                    }
                }
            }
        case .depthwise:
            for c in 0..<outputChannels {
                for t in 0..<taps {
                    folded[t * outputChannels + c] = Float(Double(pytorchWeight[c * taps + t]) * scale[c])
                }
            }
        }
        weights = folded
    }

    /// Applies the layer; `residual`, when given, is added after the bias (and before the
    /// activation, which residual layers do not have).
    func callAsFunction(_ input: FeatureMap, residual: FeatureMap? = nil) -> FeatureMap {
        switch kind {
        case .pointwise:
            var output = FeatureMap(batch: input.batch, height: input.height, width: input.width, channels: outputChannels)
            Kernels.sgemm(rows: input.pixels, inner: inputChannels, columns: outputChannels, input.values, weights, &output.values)
            Kernels.biasActivation(&output.values, bias: bias, activation: activation, residual: residual?.values)
            return output
        case .dense:
            let rows = SamePadding(input: input.height, kernel: kernel, stride: stride)
            let columns = SamePadding(input: input.width, kernel: kernel, stride: stride)
            let patches = Kernels.im2col(input, kernel: kernel, stride: stride, rows: rows, columns: columns)
            var output = FeatureMap(batch: input.batch, height: rows.output, width: columns.output, channels: outputChannels)
            Kernels.sgemm(rows: output.pixels, inner: kernel * kernel * inputChannels, columns: outputChannels,
                          patches, weights, &output.values)
            Kernels.biasActivation(&output.values, bias: bias, activation: activation, residual: residual?.values)
            return output
        case .depthwise:
            return Kernels.depthwise(input, weights: weights, bias: bias, kernel: kernel, stride: stride, activation: activation)
        }
    }
}

enum Kernels {
    /// `c[rows × columns] = a[rows × inner] · b[inner × columns]`, row-major.
    static func sgemm(rows: Int, inner: Int, columns: Int, _ a: [Float], _ b: [Float], _ c: inout [Float]) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(rows), Int32(columns), Int32(inner),
                    1, a, Int32(inner), b, Int32(columns), 0, &c, Int32(columns))
    }

    /// values[p, c] = act(values[p, c] + bias[c] (+ residual[p, c])), over the cores. Plain
    /// loops over channels, one specialised loop per case, which the compiler vectorises.
    static func biasActivation(_ values: inout [Float], bias: [Float], activation: Activation, residual: [Float]?) {
        let channels = bias.count
        let pixels = values.count / channels
        values.withUnsafeMutableBufferPointer { out in
            bias.withUnsafeBufferPointer { bias in
                let residualBuffer = residual.map { UncheckedSendable($0) }
                let box = UncheckedSendableBuffers(out: out.baseAddress!, bias: bias.baseAddress!)
                _ = Parallel.map(pixels, minimum: 512) { range in
                    let out = box.out, bias = box.bias
                    switch (activation, residualBuffer) {
                    case (.relu6, nil):
                        for p in range {
                            let row = out + p * channels
                            for c in 0..<channels {
                                let v = row[c] + bias[c]
                                row[c] = v < 0 ? 0 : (v > 6 ? 6 : v)
                            }
                        }
                    case (.none, nil):
                        for p in range {
                            let row = out + p * channels
                            for c in 0..<channels { row[c] += bias[c] }
                        }
                    case (.relu6, let extra?):
                        extra.value.withUnsafeBufferPointer { extra in
                            for p in range {
                                let row = out + p * channels, add = extra.baseAddress! + p * channels
                                for c in 0..<channels {
                                    let v = row[c] + bias[c] + add[c]
                                    row[c] = v < 0 ? 0 : (v > 6 ? 6 : v)
                                }
                            }
                        }
                    case (.none, let extra?):
                        extra.value.withUnsafeBufferPointer { extra in
                            for p in range {
                                let row = out + p * channels, add = extra.baseAddress! + p * channels
                                for c in 0..<channels { row[c] = row[c] + bias[c] + add[c] }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Patches of a k×k, stride-s convolution with SAME padding: `[pixels_out, k·k·C]`, ordered
    /// (ky, kx, c); padding reads as zero.
    static func im2col(_ input: FeatureMap, kernel: Int, stride: Int, rows: SamePadding, columns: SamePadding) -> [Float] {
        let c = input.channels, width = kernel * kernel * c
        var patches = [Float](repeating: 0, count: input.batch * rows.output * columns.output * width)
        input.values.withUnsafeBufferPointer { source in
            patches.withUnsafeMutableBufferPointer { target in
                for b in 0..<input.batch {
                    for oy in 0..<rows.output {
                        for ox in 0..<columns.output {
                            let patch = ((b * rows.output + oy) * columns.output + ox) * width
                            for ky in 0..<kernel {
                                let iy = oy * stride + ky - rows.before
                                guard iy >= 0, iy < input.height else { continue }
                                for kx in 0..<kernel {
                                    let ix = ox * stride + kx - columns.before
                                    guard ix >= 0, ix < input.width else { continue }
                                    let from = ((b * input.height + iy) * input.width + ix) * c
                                    let to = patch + (ky * kernel + kx) * c
                                    for channel in 0..<c { target[to + channel] = source[from + channel] }
                                }
                            }
                        }
                    }
                }
            }
        }
        return patches
    }

    /// Depthwise k×k convolution, stride s, SAME padding, + bias, activation; over the cores by
    /// output row, vectorised over channels 16 at a time.
    static func depthwise(_ input: FeatureMap, weights: [Float], bias: [Float], kernel: Int, stride: Int,
                          activation: Activation) -> FeatureMap {
        let rows = SamePadding(input: input.height, kernel: kernel, stride: stride)
        let columns = SamePadding(input: input.width, kernel: kernel, stride: stride)
        let channels = input.channels
        var output = FeatureMap(batch: input.batch, height: rows.output, width: columns.output, channels: channels)
        let outputRows = input.batch * rows.output
        input.values.withUnsafeBufferPointer { source in
            output.values.withUnsafeMutableBufferPointer { target in
                weights.withUnsafeBufferPointer { weights in
                    bias.withUnsafeBufferPointer { bias in
                        let box = UncheckedSendableDepthwise(source: source.baseAddress!, target: target.baseAddress!,
                                                             weights: weights.baseAddress!, bias: bias.baseAddress!)
                        _ = Parallel.map(outputRows, minimum: 4) { range in
                            let source = box.source, weights = box.weights, bias = box.bias
                            for row in range {
                                let b = row / rows.output, oy = row % rows.output
                                // The kernel rows and columns that fall inside the image.
                                let y0 = oy * stride - rows.before
                                let kyLow = max(0, -y0), kyHigh = min(kernel, input.height - y0)
                                for ox in 0..<columns.output {
                                    let x0 = ox * stride - columns.before
                                    let kxLow = max(0, -x0), kxHigh = min(kernel, input.width - x0)
                                    let out = box.target + ((b * rows.output + oy) * columns.output + ox) * channels
                                    for c in 0..<channels { out[c] = bias[c] }
                                    for ky in kyLow..<kyHigh {
                                        let line = source + ((b * input.height + y0 + ky) * input.width + x0) * channels
                                        let taps = weights + ky * kernel * channels
                                        for kx in kxLow..<kxHigh {
                                            let x = line + kx * channels, w = taps + kx * channels
                                            for c in 0..<channels { out[c] += x[c] * w[c] }
                                        }
                                    }
                                    if case .relu6 = activation {
                                        for c in 0..<channels {
                                            let v = out[c]
                                            out[c] = v < 0 ? 0 : (v > 6 ? 6 : v)
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        return output
    }
}

struct UncheckedSendableBuffers: @unchecked Sendable {
    let out: UnsafeMutablePointer<Float>
    let bias: UnsafePointer<Float>
}

struct UncheckedSendableDepthwise: @unchecked Sendable {
    let source: UnsafePointer<Float>
    let target: UnsafeMutablePointer<Float>
    let weights: UnsafePointer<Float>
    let bias: UnsafePointer<Float>
}
