// Vectorised transcendental functions for the elementwise ops, 8 lanes at a time.
//
// exp: Cephes `expf` — range reduction e^x = 2^n · e^r with n = round(x / ln 2) and
// |r| ≤ ln 2 / 2 (ln 2 split in two parts for exactness), a degree-6 polynomial for e^r, and 2^n
// built in the exponent bits. Relative error ≤ 2 ulp on [−87.3, 88.7]; 0 below, +∞ above.
// erf: Abramowitz & Stegun 7.1.26, erf(x) = 1 − t(a₁ + t(a₂ + t(a₃ + t(a₄ + t a₅)))) e^{−x²},
// t = 1 / (1 + p|x|), odd symmetry; absolute error ≤ 1.5·10⁻⁷ in exact arithmetic, ≈ 3·10⁻⁷ in Float32.

typealias Lanes = SIMD8<Float>

public enum VectorMath {
    @inline(__always)
    static func exp(_ x: Lanes) -> Lanes {
        // Written with masks and `replacing`, which compile to compare + blend; `clamped`,
        // `pointwiseMin` and `rounded` on SIMD types were lowered lane by lane (5× slower).
        let low = Lanes(repeating: -87.33654), high = Lanes(repeating: 88.72283)
        let clamped = x.replacing(with: low, where: x .< low).replacing(with: high, where: x .> high)
        // Round to nearest by adding and subtracting 1.5 · 2²³.
        let n = (clamped * 1.44269504088896341 + 12_582_912) - 12_582_912
        var r = clamped - n * 0.693359375
        r = r - n * -2.12194440e-4
        let r2 = r * r
        var p = Lanes(repeating: 1.9875691500e-4)
        p = p * r + 1.3981999507e-3
        p = p * r + 8.3334519073e-3
        p = p * r + 4.1665795894e-2
        p = p * r + 1.6666665459e-1
        p = p * r + 5.0000001201e-1
        let er = p * r2 + r + 1
        // 2ⁿ from the bits of n + 1.5 · 2²³, whose low mantissa bits hold n.
        let integer = unsafeBitCast(n + 12_582_912, to: SIMD8<UInt32>.self) &- 0x4B40_0000
        var result = er * unsafeBitCast((integer &+ 127) &<< 23, to: Lanes.self)
        result.replace(with: 0, where: x .< -87.33654)
        result.replace(with: .infinity, where: x .> 88.72283)
        result.replace(with: x, where: x .!= x)       // NaN stays NaN
        return result
    }

    @inline(__always)
    static func erf(_ x: Lanes) -> Lanes {
        let a = x.replacing(with: -x, where: x .< 0)
        let t = 1 / (1 + 0.3275911 * a)
        var poly = Lanes(repeating: 1.061405429)
        poly = poly * t - 1.453152027
        poly = poly * t + 1.421413741
        poly = poly * t - 0.284496736
        poly = poly * t + 0.254829592
        let y = 1 - poly * t * exp(-(a * a))
        return y.replacing(with: -y, where: x .< 0)
    }

    /// `tanh x = sign(x) (1 − 2 / (e^{2|x|} + 1))`: absolute error ≈ 1e-7.
    @inline(__always)
    static func tanh(_ x: Lanes) -> Lanes {
        let a = x.replacing(with: -x, where: x .< 0)
        let y = 1 - 2 / (exp(2 * a) + 1)
        return y.replacing(with: -y, where: x .< 0).replacing(with: x, where: x .!= x)
    }

    /// `1 / (1 + e⁻ˣ)`; e⁻ˣ = +∞ for very negative x gives 0.
    @inline(__always)
    static func sigmoid(_ x: Lanes) -> Lanes {
        1 / (1 + exp(-x))
    }

    /// `Σ a_i b_i` with two 8-lane accumulators (so the sum is not one serial chain).
    @inline(__always)
    public static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) -> Float {
        var low = Lanes(), high = Lanes()
        var i = 0
        while i + 16 <= count {
            low += UnsafeRawPointer(a + i).loadUnaligned(as: Lanes.self) * UnsafeRawPointer(b + i).loadUnaligned(as: Lanes.self)
            high += UnsafeRawPointer(a + i + 8).loadUnaligned(as: Lanes.self) * UnsafeRawPointer(b + i + 8).loadUnaligned(as: Lanes.self)
            i += 16
        }
        if i + 8 <= count {
            low += UnsafeRawPointer(a + i).loadUnaligned(as: Lanes.self) * UnsafeRawPointer(b + i).loadUnaligned(as: Lanes.self)
            i += 8
        }
        var total = (low + high).sum()
        while i < count {
            total += a[i] * b[i]
            i += 1
        }
        return total
    }

    /// `Σ (a_i − b_i)²`, as ``dot(_:_:count:)``.
    @inline(__always)
    public static func squaredDistance(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) -> Float {
        var low = Lanes(), high = Lanes()
        var i = 0
        while i + 16 <= count {
            let d0 = UnsafeRawPointer(a + i).loadUnaligned(as: Lanes.self) - UnsafeRawPointer(b + i).loadUnaligned(as: Lanes.self)
            let d1 = UnsafeRawPointer(a + i + 8).loadUnaligned(as: Lanes.self) - UnsafeRawPointer(b + i + 8).loadUnaligned(as: Lanes.self)
            low += d0 * d0
            high += d1 * d1
            i += 16
        }
        if i + 8 <= count {
            let d = UnsafeRawPointer(a + i).loadUnaligned(as: Lanes.self) - UnsafeRawPointer(b + i).loadUnaligned(as: Lanes.self)
            low += d * d
            i += 8
        }
        var total = (low + high).sum()
        while i < count {
            let d = a[i] - b[i]
            total += d * d
            i += 1
        }
        return total
    }

    /// Applies `lanes` to 8 elements at a time and `scalar` to the tail.
    @inline(__always)
    static func map(
        _ input: UnsafePointer<Float>, _ output: UnsafeMutablePointer<Float>, count: Int,
        lanes: (Lanes) -> Lanes, scalar: (Float) -> Float
    ) {
        var i = 0
        while i + 8 <= count {
            let v = UnsafeRawPointer(input + i).loadUnaligned(as: Lanes.self)
            UnsafeMutableRawPointer(output + i).storeBytes(of: lanes(v), as: Lanes.self)
            i += 8
        }
        while i < count {
            output[i] = scalar(input[i])
            i += 1
        }
    }
}
