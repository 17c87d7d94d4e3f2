@testable import AmberTensor
import Testing

@Suite("OpenBLAS kernel selection")
struct BLASKernelTests {
    static let dynamic = "OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH NO_AFFINITY Haswell MAX_THREADS=64"
    static let avx512Flags: Set<String> = ["sse2", "avx", "avx2", "fma", "avx512f", "avx512dq", "avx512cd", "avx512bw", "avx512vl"]
    static let avx2Flags: Set<String> = ["sse2", "avx", "avx2", "fma"]

    @Test("A fallback core on an AVX-512 CPU is replaced by SkylakeX; on an AVX2 CPU by Haswell")
    func upgradesFallbacks() {
        #expect(BLASKernel.decide(chosenCore: "Prescott", configuration: Self.dynamic, cpuFlags: Self.avx512Flags,
                                  environment: [:])
                == .use(core: "SKYLAKEX", because: "OpenBLAS chose Prescott (SSE) on a CPU with AVX-512"))
        // Zen 5 under OpenBLAS 0.3.21: detected as Haswell although it runs AVX-512.
        guard case .use(core: "SKYLAKEX", _) = BLASKernel.decide(chosenCore: "Haswell", configuration: Self.dynamic,
                                                                 cpuFlags: Self.avx512Flags, environment: [:]) else {
            Issue.record("Haswell on an AVX-512 CPU was kept"); return
        }
        guard case .use(core: "HASWELL", _) = BLASKernel.decide(chosenCore: "Prescott", configuration: Self.dynamic,
                                                                cpuFlags: Self.avx2Flags, environment: [:]) else {
            Issue.record("Prescott on an AVX2 CPU was kept"); return
        }
        guard case .use(core: "SANDYBRIDGE", _) = BLASKernel.decide(chosenCore: "Nehalem", configuration: Self.dynamic,
                                                                    cpuFlags: ["sse2", "avx"], environment: [:]) else {
            Issue.record("Nehalem on an AVX CPU was kept"); return
        }
    }

    @Test("A core as wide as the CPU, a user's choice, a single-core build or an unknown core are left alone")
    func keeps() {
        let cases: [(String, String, Set<String>, [String: String])] = [
            ("SkylakeX", Self.dynamic, Self.avx512Flags, [:]),
            ("SapphireRapids", Self.dynamic, Self.avx512Flags, [:]),
            ("Zen", Self.dynamic, Self.avx2Flags, [:]),
            ("Haswell", Self.dynamic, Self.avx2Flags, [:]),
            // An AVX-512 CPU without BW/VL (Knights Landing) is not SkylakeX-capable.
            ("Haswell", Self.dynamic, Self.avx2Flags.union(["avx512f", "avx512cd"]), [:]),
            ("Prescott", Self.dynamic, Self.avx512Flags, ["OPENBLAS_CORETYPE": "Prescott"]),
            ("Prescott", "OpenBLAS 0.3.21 NO_LAPACKE Haswell MAX_THREADS=64", Self.avx512Flags, [:]),
            ("NeoverseN1", Self.dynamic, Self.avx512Flags, [:]),
            ("Prescott", Self.dynamic, ["sse2", "sse3"], [:]),
            ("Prescott", Self.dynamic, Self.avx512Flags, ["AMBER_BLAS_SELECTION": "off"]),
            ("Prescott", Self.dynamic, Self.avx512Flags, ["AMBER_BLAS_SELECTION": "OFF"]),
        ]
        for (core, configuration, flags, environment) in cases {
            let decision = BLASKernel.decide(chosenCore: core, configuration: configuration, cpuFlags: flags,
                                             environment: environment)
            guard case .keep = decision else {
                Issue.record("\(core) with \(flags.sorted()) and \(environment) → \(decision)"); continue
            }
        }
        // An empty OPENBLAS_CORETYPE is no choice.
        guard case .use = BLASKernel.decide(chosenCore: "Prescott", configuration: Self.dynamic, cpuFlags: Self.avx512Flags,
                                            environment: ["OPENBLAS_CORETYPE": ""]) else {
            Issue.record("an empty OPENBLAS_CORETYPE blocked the selection"); return
        }
    }

    @Test("Every core name of OpenBLAS's x86-64 table has a level; names are case-insensitive")
    func coreTable() {
        #expect(BLASInstructionLevel(openBLASCore: "prescott") == .baseline)
        #expect(BLASInstructionLevel(openBLASCore: "SANDYBRIDGE") == .avx)
        #expect(BLASInstructionLevel(openBLASCore: "Zen") == .avx2)
        #expect(BLASInstructionLevel(openBLASCore: "CooperLake") == .avx512)
        #expect(BLASInstructionLevel(openBLASCore: "armv8") == nil)
        // The running library's own core is one of them on x86-64.
        #if arch(x86_64)
        #expect(BLASInstructionLevel(openBLASCore: BLASKernel.currentCore) != nil)
        #endif
    }

    @Test("The flags line of /proc/cpuinfo is read from the first processor")
    func parsesCPUInfo() {
        let text = """
        processor\t: 0
        vendor_id\t: AuthenticAMD
        flags\t\t: fpu sse2 avx avx2 fma avx512f avx512dq avx512cd avx512bw avx512vl
        bugs\t\t: sysret_ss_attrs

        processor\t: 1
        flags\t\t: fpu sse2
        """
        let flags = BLASKernel.cpuFlags(cpuinfo: text)
        #expect(flags.contains("avx512vl") && flags.contains("fpu") && flags.count == 10)
        #expect(BLASInstructionLevel(cpuFlags: flags) == .avx512)
        #expect(BLASKernel.cpuFlags(cpuinfo: "processor: 0\n").isEmpty)
        #expect(BLASInstructionLevel(cpuFlags: []) == .baseline)
    }

    @Test("The self-check passes the installed sgemm and fails a product that drops a term, has the wrong size or is NaN")
    func selfCheck() {
        #expect(BLASKernel.selfCheckError() < 1)
        // A product that drops the last term of every dot product (an edge-handling bug).
        let dropsLastTerm: (Int, Int, Int, [Float], [Float]) -> [Float] = { m, k, n, a, b in
            var c = [Float](repeating: 0, count: m * n)
            for i in 0..<m { for j in 0..<n { for p in 0..<(k - 1) { c[i * n + j] += a[i * k + p] * b[p * n + j] } } }
            return c
        }
        #expect(BLASKernel.selfCheckError(product: dropsLastTerm) > 10)
        // A product of the wrong size, or one that yields NaN.
        #expect(BLASKernel.selfCheckError(product: { _, _, _, _, _ in [] }) == .infinity)
        #expect(BLASKernel.selfCheckError(product: { m, _, n, _, _ in [Float](repeating: .nan, count: m * n) }) == .infinity)
        // A naive float product is within the bound.
        let naive: (Int, Int, Int, [Float], [Float]) -> [Float] = { m, k, n, a, b in
            var c = [Float](repeating: 0, count: m * n)
            for i in 0..<m { for j in 0..<n { for p in 0..<k { c[i * n + j] += a[i * k + p] * b[p * n + j] } } }
            return c
        }
        #expect(BLASKernel.selfCheckError(product: naive) < 1)
    }
}

@Suite("Growing rows")
struct GrowingRowsTests {
    @Test func appendedRowsEqualOneTensorAndEarlierViewsKeepTheirRows() {
        var rows = GrowingRows(rowShape: [2, 3], capacity: 2)
        var expected: [Float] = []
        var views: [(Tensor, [Float])] = []
        for batch in 1...7 {
            let values = (0..<(batch * 6)).map { Float(expected.count + $0) }
            rows.append(values)
            expected += values
            views.append((rows.tensor, expected))
        }
        #expect(rows.count == expected.count / 6 && rows.tensor.shape == [rows.count, 2, 3])
        #expect(rows.capacity >= rows.count)
        for (view, values) in views { #expect(view.scalars == values, "a view keeps the rows it had") }
        // Writing to a view goes to a copy.
        var view = views[0].0
        view.withUnsafeMutableBufferPointer { $0[0] = -1 }
        #expect(rows.tensor.scalars[0] == 0 && views[0].0.scalars[0] == 0)
    }

    @Test func twoCopiesThatBothAppendDoNotShareRows() {
        var a = GrowingRows(rowShape: [1], capacity: 8)
        a.append([1, 2])
        var b = a
        a.append([3])
        b.append([9, 9])
        #expect(a.tensor.scalars == [1, 2, 3])
        #expect(b.tensor.scalars == [1, 2, 9, 9])
        a.append([4])
        #expect(a.tensor.scalars == [1, 2, 3, 4] && b.tensor.scalars == [1, 2, 9, 9])
    }
}
