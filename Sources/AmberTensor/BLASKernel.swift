import CBLAS
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

// OpenBLAS kernel selection.
//
// A DYNAMIC_ARCH OpenBLAS picks its kernels ("core") from CPUID once, when the library loads. An
// OpenBLAS older than the CPU does not know the CPU and falls back to an older core: Debian's 0.3.21
// runs Sapphire Rapids on "Prescott" (SSE3) and Zen 5 on "Haswell" (AVX2), 2–6× below the kernels
// the CPU can run (docs/benchmarks.md). The library reads `OPENBLAS_CORETYPE` at load, so the one
// reliable remedy is to set it and re-execute the process before any work is done; that is what
// `BLASKernel.selectAtStartup` does. A value the user set is never overridden.

/// The kernel families of an x86-64 OpenBLAS, by the widest vector instructions they use.
public enum BLASInstructionLevel: Int, Comparable, Sendable, CustomStringConvertible {
    case baseline = 0   // SSE2/SSE3 kernels (Prescott, Core2, Nehalem, Opteron, …)
    case avx = 1        // Sandybridge, Bulldozer family
    case avx2 = 2       // Haswell, Zen
    case avx512 = 3     // SkylakeX, Cooperlake, SapphireRapids

    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }

    public var description: String {
        switch self {
        case .baseline: "SSE"
        case .avx: "AVX"
        case .avx2: "AVX2"
        case .avx512: "AVX-512"
        }
    }

    /// The level of one of OpenBLAS's x86-64 core names (`openblas_get_corename()`, any case);
    /// nil for a name this table does not know (another architecture, a newer core).
    public init?(openBLASCore name: String) {
        switch name.lowercased() {
        case "prescott", "core2", "penryn", "dunnington", "nehalem", "atom", "athlon", "opteron",
             "opteron_sse3", "barcelona", "bobcat", "katmai", "coppermine", "northwood", "banias":
            self = .baseline
        case "sandybridge", "bulldozer", "piledriver", "steamroller", "excavator":
            self = .avx
        case "haswell", "zen":
            self = .avx2
        case "skylakex", "cooperlake", "sapphirerapids":
            self = .avx512
        default:
            return nil
        }
    }

    /// The widest level the CPU (and the kernel, which clears the flags of state it does not
    /// save) supports, from the flag names of `/proc/cpuinfo`.
    public init(cpuFlags flags: Set<String>) {
        if ["avx512f", "avx512dq", "avx512cd", "avx512bw", "avx512vl"].allSatisfy(flags.contains) {
            self = .avx512
        } else if flags.contains("avx2") && flags.contains("fma") {
            self = .avx2
        } else if flags.contains("avx") {
            self = .avx
        } else {
            self = .baseline
        }
    }

    /// The OpenBLAS core to ask for at this level; nil where the installed choice is as good as any.
    var preferredCore: String? {
        switch self {
        case .avx512: "SKYLAKEX"
        case .avx2: "HASWELL"
        case .avx: "SANDYBRIDGE"
        case .baseline: nil
        }
    }
}

/// What to do about OpenBLAS's choice of kernels.
public enum BLASKernelDecision: Equatable, Sendable {
    /// Leave it; the reason says why.
    case keep(reason: String)
    /// Re-execute with `OPENBLAS_CORETYPE` set to this core.
    case use(core: String, because: String)
}

public enum BLASKernel {
    /// The variable OpenBLAS reads when it loads.
    public static let coreTypeVariable = "OPENBLAS_CORETYPE"
    /// `AMBER_BLAS_SELECTION=off` keeps OpenBLAS's own choice (to measure it, or to rule Amber's
    /// switch out when debugging).
    public static let selectionVariable = "AMBER_BLAS_SELECTION"
    /// Set by the process that re-executes itself: the core OpenBLAS had chosen. The new process
    /// reads it (to log and self-check the switch) and removes it.
    static let switchedFromVariable = "AMBER_BLAS_SWITCHED_FROM"

    private static let switchedFrom = Mutex<String?>(nil)

    /// The core OpenBLAS had chosen itself when `selectAtStartup` replaced it in this process.
    public static var replacedCore: String? { switchedFrom.withLock { $0 } }

    /// "SkylakeX (chosen by Amber; OpenBLAS chose Haswell)", "Haswell (OpenBLAS's own choice)", …
    public static var coreDescription: String {
        let core = currentCore
        if let replaced = replacedCore { return "\(core) (chosen by Amber; OpenBLAS chose \(replaced))" }
        if let requested = getenv(coreTypeVariable) { return "\(core) (\(coreTypeVariable)=\(String(cString: requested)))" }
        return "\(core) (OpenBLAS's own choice)"
    }

    /// The core OpenBLAS runs now (e.g. "Haswell").
    public static var currentCore: String { String(cString: openblas_get_corename()) }
    /// OpenBLAS's build configuration (version, DYNAMIC_ARCH, …).
    public static var configuration: String { String(cString: openblas_get_config()) }

    /// The decision for one OpenBLAS, CPU and environment. Pure: tested on made-up inputs.
    public static func decide(chosenCore: String, configuration: String, cpuFlags: Set<String>,
                              environment: [String: String]) -> BLASKernelDecision {
        if let requested = environment[coreTypeVariable], !requested.isEmpty {
            return .keep(reason: "\(coreTypeVariable)=\(requested) is set")
        }
        if let selection = environment[selectionVariable], selection.lowercased() == "off" {
            return .keep(reason: "\(selectionVariable)=off")
        }
        guard configuration.contains("DYNAMIC_ARCH") else {
            return .keep(reason: "this OpenBLAS is built for one core (no DYNAMIC_ARCH)")
        }
        guard let chosen = BLASInstructionLevel(openBLASCore: chosenCore) else {
            return .keep(reason: "core \(chosenCore) is not one this table knows")
        }
        let supported = BLASInstructionLevel(cpuFlags: cpuFlags)
        guard chosen < supported, let core = supported.preferredCore else {
            return .keep(reason: "core \(chosenCore) uses the CPU's widest vectors (\(supported))")
        }
        return .use(core: core, because: "OpenBLAS chose \(chosenCore) (\(chosen)) on a CPU with \(supported)")
    }

    /// The flag names of the first processor in a `/proc/cpuinfo` text.
    public static func cpuFlags(cpuinfo: String) -> Set<String> {
        for line in cpuinfo.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1)
            guard parts.count == 2, parts[0].split(whereSeparator: { $0 == " " || $0 == "\t" }) == ["flags"] else { continue }
            return Set(parts[1].split(separator: " ").map(String.init))
        }
        return []
    }

    /// This machine's CPU flags (empty where `/proc/cpuinfo` is not readable).
    public static func currentCPUFlags() -> Set<String> {
        #if os(Linux)
        guard let file = fopen("/proc/cpuinfo", "r") else { return [] }
        defer { fclose(file) }
        var text = ""
        var buffer = [CChar](repeating: 0, count: 4096)
        // The first processor's block is enough; stop at its end.
        while fgets(&buffer, Int32(buffer.count), file) != nil {
            let line = buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
            if line == "\n" && !text.isEmpty { break }
            text += line
        }
        return cpuFlags(cpuinfo: text)
        #else
        return []
        #endif
    }

    /// The largest error of `product` (row-major C = A·B, m×k·k×n) on fixed inputs, in units of
    /// the rounding-error bound of a k-term float dot product (Σ|a||b|·k·2⁻²⁴): a correct sgemm
    /// stays below 1, a kernel that computes something else is far above. The sizes are odd so
    /// that every edge path of a blocked kernel runs.
    public static func selfCheckError(
        product: (_ m: Int, _ k: Int, _ n: Int, _ a: [Float], _ b: [Float]) -> [Float] = sgemm
    ) -> Double {
        var worst = 0.0
        for (m, k, n) in [(37, 53, 29), (131, 257, 67)] {
            var state: UInt64 = 0x9E37_79B9_7F4A_7C15 &* UInt64(m * 1_000_003 + k * 1009 + n)
            func next() -> Float {
                state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                return Float(Int64(bitPattern: state >> 11) % 2001 - 1000) / 1000
            }
            let a = (0..<(m * k)).map { _ in next() }
            let b = (0..<(k * n)).map { _ in next() }
            let c = product(m, k, n, a, b)
            guard c.count == m * n else { return .infinity }
            let bound = Double(k) * 0x1p-24
            for i in 0..<m {
                for j in 0..<n {
                    var exact = 0.0, magnitude = 0.0
                    for p in 0..<k {
                        let term = Double(a[i * k + p]) * Double(b[p * n + j])
                        exact += term
                        magnitude += abs(term)
                    }
                    let error = abs(Double(c[i * n + j]) - exact)
                    guard error.isFinite else { return .infinity }
                    worst = Swift.max(worst, error / (bound * magnitude + 1e-30))
                }
            }
        }
        return worst
    }

    /// Row-major single-precision product through OpenBLAS.
    public static func sgemm(_ m: Int, _ k: Int, _ n: Int, _ a: [Float], _ b: [Float]) -> [Float] {
        var c = [Float](repeating: 0, count: m * n)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(m), Int32(n), Int32(k),
                    1, a, Int32(k), b, Int32(n), 0, &c, Int32(n))
        return c
    }

    /// Runs first thing in `amber`: when OpenBLAS runs kernels narrower than the CPU supports and
    /// nobody chose them, re-executes this process with `OPENBLAS_CORETYPE` set (this function then
    /// does not return); in the re-executed process, checks the new kernels against a naive
    /// product and logs one line (or, if they fail, re-executes once more with OpenBLAS's own
    /// choice). Returns the line to log, if any.
    @discardableResult
    public static func selectAtStartup(log: (String) -> Void) -> String? {
        #if os(Linux)
        if let previous = getenv(switchedFromVariable).map({ String(cString: $0) }) {
            unsetenv(switchedFromVariable)
            let core = currentCore
            let error = selfCheckError()
            if error < 1 {
                switchedFrom.withLock { $0 = previous }
                let line = "BLAS: OpenBLAS chose \(previous) for this CPU; running \(core) instead "
                    + "(self-check passed; set \(coreTypeVariable) to choose)"
                log(line)
                return line
            }
            log("BLAS: the \(core) kernels failed the self-check (error \(error) × the rounding bound); "
                + "going back to \(previous)")
            setenv(coreTypeVariable, previous, 1)
            reexecute(log: log)
            // Still here: the kernels loaded in this process compute wrong products, and the
            // process cannot replace them. Nothing it computed could be trusted: stop.
            log("BLAS: stopping rather than computing with kernels that failed the self-check; "
                + "set \(coreTypeVariable)=\(previous) and start again")
            exit(70)   // EX_SOFTWARE
        }
        var environment: [String: String] = [:]
        for name in [coreTypeVariable, selectionVariable] {
            if let value = getenv(name) { environment[name] = String(cString: value) }
        }
        let decision = decide(chosenCore: currentCore, configuration: configuration,
                              cpuFlags: currentCPUFlags(), environment: environment)
        guard case .use(let core, _) = decision else { return nil }
        setenv(switchedFromVariable, currentCore, 1)
        setenv(coreTypeVariable, core, 1)
        reexecute(log: log)
        // Still here: exec failed; carry on with the installed kernels.
        unsetenv(switchedFromVariable)
        unsetenv(coreTypeVariable)
        return nil
        #else
        return nil
        #endif
    }

    #if os(Linux)
    private static func reexecute(log: (String) -> Void) {
        execv("/proc/self/exe", CommandLine.unsafeArgv)
        log("BLAS: could not re-execute to switch kernels (\(String(cString: strerror(errno)))); "
            + "running \(currentCore)")
    }
    #endif
}
