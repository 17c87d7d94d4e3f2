import AmberCatalog
import AmberTensor
import AmberTrain
import CBLAS
import Foundation

/// `amber bench tensor`: the numerical core's speed against direct BLAS calls in the same run.
struct TensorBenchmark {
    var repetitions: Int
    var quick: Bool
    var threads = ProcessInfo.processInfo.activeProcessorCount
    var parts: Set<String> = ["sgemm", "elementwise", "step"]

    func run() {
        BLASThreads.count = threads
        print("amber bench tensor")
        print("machine: \(MachineDescription.current)")
        print("OpenBLAS threads: \(BLASThreads.count); repetitions: \(repetitions) (median reported)\n")
        if parts.contains("sgemm") { matrixProducts() }
        if parts.contains("elementwise") { elementwise() }
        if parts.contains("step") { trainingStep() }
    }

    // MARK: sgemm

    func matrixProducts() {
        print("sgemm: Tensor.matmul vs direct cblas_sgemm (same shapes, interleaved)")
        print(pad("shape m×k·k×n", 22) + pad("direct GF/s", 13) + pad("Tensor GF/s", 13) + "Tensor/direct")
        let shapes = quick ? [(256, 256, 256)] : [(1024, 1024, 1024), (4608, 2048, 1024)]
        var generator = RandomGenerator(seed: 1)
        for (m, k, n) in shapes {
            let a = Tensor.randomNormal([m, k], using: &generator)
            let b = Tensor.randomNormal([k, n], using: &generator)
            var c = Tensor.zeros([m, n])
            let flops = 2.0 * Double(m) * Double(k) * Double(n)
            var direct: [Double] = [], wrapped: [Double] = []
            // Warm up both paths (thread pool start-up, page faults).
            _ = Tensor.matmul(a, b)
            for _ in 0..<repetitions {
                direct.append(seconds {
                    a.withUnsafeBufferPointer { pa in
                        b.withUnsafeBufferPointer { pb in
                            c.withUnsafeMutableBufferPointer { pc in
                                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(m), Int32(n), Int32(k),
                                            1, pa.baseAddress, Int32(k), pb.baseAddress, Int32(n), 0, pc.baseAddress, Int32(n))
                            }
                        }
                    }
                })
                wrapped.append(seconds { _ = Tensor.matmul(a, b) })
            }
            let directRate = flops / median(direct) / 1e9, tensorRate = flops / median(wrapped) / 1e9
            print(pad("\(m)×\(k)·\(k)×\(n)", 22) + pad(format(directRate, 1), 13) + pad(format(tensorRate, 1), 13)
                  + format(100 * tensorRate / directRate, 1) + " %")
        }
        print()
    }

    // MARK: Elementwise

    func elementwise() {
        let count = quick ? 1 << 20 : 1 << 24
        print("elementwise over \(count) floats (\((count * 4) >> 20) MiB per operand), one thread")
        print(pad("op", 22) + pad("GB/s", 10) + "bytes moved per element")
        var generator = RandomGenerator(seed: 2)
        let a = Tensor.randomUniform([count], lower: 0.5, upper: 1.5, using: &generator)
        let b = Tensor.randomUniform([count], lower: 0.5, upper: 1.5, using: &generator)
        let row = Tensor.randomUniform([1024], using: &generator)
        let cases: [(String, Int, () -> Tensor)] = [
            ("a + b", 12, { a + b }),
            ("a * b", 12, { a * b }),
            ("a + row (broadcast)", 8, { a.reshaped([-1, 1024]) + row }),
            ("a * 2 (scalar)", 8, { a * 2 }),
            ("exp(a)", 8, { a.exp() }),
            ("tanh(a)", 8, { a.tanh() }),
            ("gelu(a)", 8, { a.gelu() }),
            ("sum(a)", 4, { a.sum() }),
        ]
        for (name, bytesPerElement, body) in cases {
            _ = body()
            let times = (0..<repetitions).map { _ in seconds { _ = body() } }
            let rate = Double(bytesPerElement * count) / median(times) / 1e9
            print(pad(name, 22) + pad(format(rate, 2), 10) + "\(bytesPerElement)")
        }
        print()
    }

    // MARK: MLP training step

    func trainingStep() {
        let (batch, input, hidden, output) = quick ? (32, 256, 128, 128) : (128, 2048, 1024, 1024)
        print("training step: MLP \(input)→\(hidden)→\(output), ReLU, batch \(batch), MSE, forward + backward + AdamW")
        var generator = RandomGenerator(seed: 3)
        let w1 = Parameter(Tensor.randomNormal([input, hidden], standardDeviation: 0.02, using: &generator), name: "w1")
        let b1 = Parameter(Tensor.zeros([hidden]), name: "b1")
        let w2 = Parameter(Tensor.randomNormal([hidden, output], standardDeviation: 0.02, using: &generator), name: "w2")
        let b2 = Parameter(Tensor.zeros([output]), name: "b2")
        let optimizer = AdamW(parameters: [w1, b1, w2, b2])
        let x = Tensor.randomNormal([batch, input], using: &generator)
        let target = Tensor.randomNormal([batch, output], using: &generator)

        func step() -> Float {
            optimizer.zeroGradients()
            let h = (Tensor.matmul(x, w1.tensor) + b1.tensor).relu()
            let y = Tensor.matmul(h, w2.tensor) + b2.tensor
            let loss = (y - target).squared().mean()
            loss.backward()
            optimizer.step(learningRate: 1e-4)
            return loss.scalar
        }
        _ = step()
        // Forward: 2·B·(I·H + H·O). Backward: dW1 = xᵀ·dH (2·B·I·H), dW2 and dH (2 · 2·B·H·O).
        let flops = 2.0 * Double(batch) * (Double(input * hidden) + Double(hidden * output))
            + 2.0 * Double(batch) * Double(input * hidden) + 4.0 * Double(batch) * Double(hidden * output)
        var times: [Double] = [], blasShares: [Double] = []
        var lastLoss: Float = 0
        for _ in 0..<max(repetitions, 5) {
            BLASProfile.reset()
            BLASProfile.isEnabled = true
            let elapsed = seconds { lastLoss = step() }
            BLASProfile.isEnabled = false
            times.append(elapsed)
            blasShares.append(BLASProfile.seconds / elapsed)
        }
        let time = median(times)
        print("  step time \(format(time * 1000, 2)) ms, \(format(flops / 1e9, 3)) GFLOP per step, "
              + "\(format(flops / time / 1e9, 1)) GFLOP/s achieved")
        print("  time in BLAS calls: \(format(100 * median(blasShares), 1)) % (clock around every cblas call, summed)")
        print("  loss after \(times.count + 1) steps: \(lastLoss)")
    }

    // MARK: Helpers

    func seconds(_ body: () -> Void) -> Double {
        let clock = ContinuousClock()
        let elapsed = clock.measure(body)
        return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    }

    func median(_ values: [Double]) -> Double {
        let sorted = values.sorted()
        return sorted[sorted.count / 2]
    }

    func format(_ value: Double, _ decimals: Int) -> String { String(format: "%.\(decimals)f", value) }

    func pad(_ text: String, _ width: Int) -> String {
        text.count >= width ? text + " " : text + String(repeating: " ", count: width - text.count)
    }
}

/// CPU model and core count, for benchmark headers.
enum MachineDescription {
    static var current: String {
        let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let model = cpuinfo.split(separator: "\n").first { $0.hasPrefix("model name") }
            .map { $0.split(separator: ":", maxSplits: 1).last!.trimmingCharacters(in: .whitespaces) } ?? "unknown CPU"
        let memory = ProcessInfo.processInfo.physicalMemory >> 30
        return "\(model), \(ProcessInfo.processInfo.activeProcessorCount) cores, \(memory) GiB; OpenBLAS core \(BLASKernel.coreDescription)"
    }
}
