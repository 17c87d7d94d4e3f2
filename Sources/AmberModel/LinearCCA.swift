import AmberTensor

/// Regularised linear canonical correlation analysis (Hotelling 1936), the closed-form
/// baseline on global vectors.
///
/// With centred `X` `[N, dx]`, `Y` `[N, dy]`, covariances `Cxx + r·(tr Cxx / dx)·I`,
/// `Cyy + r·(tr Cyy / dy)·I` and `Cxy`: whiten `Wx = Cxx^{-1/2}`, `Wy = Cyy^{-1/2}`; the SVD
/// `Wx Cxy Wy = U S Vᵀ` gives projections `A = Wx U_k`, `B = Wy V_k` onto the `k` most
/// correlated directions. Embeddings are `(x − μx) A diag(sᵖ)`, L2-normalised (`p` weights
/// directions by their correlation; Gong et al. 2014 use p = 4 on eigenvalues).
public struct LinearCCA: Sendable {
    public struct Configuration: Sendable, Equatable, Codable {
        /// `r`, ridge relative to the mean variance. Default 2 (best on flickr8k-800 dev).
        public var regularization: Double = 2
        /// `k`, directions kept. Default 256.
        public var components: Int = 256
        /// `p`, exponent of the correlation weights. Default 1.
        public var power: Double = 1

        public init(regularization: Double = 2, components: Int = 256, power: Double = 1) {
            self.regularization = regularization
            self.components = components
            self.power = power
        }
    }

    public let configuration: Configuration
    /// Canonical correlations, descending.
    public let correlations: [Double]
    /// Means of the two views, `[dx]`, `[dy]`.
    public let meanX: Tensor, meanY: Tensor
    /// Projections `A` `[dx, k]` and `B` `[dy, k]` (correlation-weighted).
    public let projectionX: Tensor, projectionY: Tensor

    /// Fits on paired rows of `x` and `y`.
    public static func fit(x: Tensor, y: Tensor, configuration: Configuration = Configuration()) throws -> LinearCCA {
        precondition(x.rank == 2 && y.rank == 2 && x.shape[0] == y.shape[0], "LinearCCA: \(x.shape) and \(y.shape)")
        let n = Double(x.shape[0])
        let meanX = x.mean(axis: 0), meanY = y.mean(axis: 0)
        let cx = DoubleMatrix((x - meanX).detached), cy = DoubleMatrix((y - meanY).detached)
        func covariance(_ a: DoubleMatrix, _ b: DoubleMatrix) -> DoubleMatrix {
            var c = DoubleMatrix.product(a, b, transposeA: true)
            for i in 0..<c.values.count { c.values[i] /= (n - 1) }
            return c
        }
        func inverseSquareRoot(_ c: DoubleMatrix) throws -> DoubleMatrix {
            var ridged = c
            let trace = (0..<c.rows).map { c[$0, $0] }.reduce(0, +) / Double(c.rows)
            for i in 0..<c.rows { ridged[i, i] += configuration.regularization * trace }
            let (values, vectors) = try ridged.symmetricEigen()
            var scaled = vectors
            for r in 0..<c.rows { for k in 0..<c.rows { scaled[r, k] /= max(values[k], 1e-12).squareRoot() } }
            return DoubleMatrix.product(scaled, vectors, transposeB: true)
        }
        let wx = try inverseSquareRoot(covariance(cx, cx)), wy = try inverseSquareRoot(covariance(cy, cy))
        let t = DoubleMatrix.product(DoubleMatrix.product(wx, covariance(cx, cy)), wy)
        let (u, s, vt) = try t.singularValueDecomposition()
        let k = min(configuration.components, s.count)
        var a = DoubleMatrix.product(wx, u.leadingColumns(k))
        var b = DoubleMatrix.product(wy, vt.transposed.leadingColumns(k))
        for j in 0..<k {
            let weight = pow(max(s[j], 0), configuration.power)
            for r in 0..<a.rows { a[r, j] *= weight }
            for r in 0..<b.rows { b[r, j] *= weight }
        }
        return LinearCCA(configuration: configuration, correlations: Array(s.prefix(k)), meanX: meanX, meanY: meanY,
                         projectionX: a.tensor, projectionY: b.tensor)
    }

    /// Embeddings of the first view, `[N, k]`, unit length.
    public func embedX(_ x: Tensor) -> Tensor {
        withoutGradients { Tensor.matmul(x - meanX, projectionX).l2Normalized(axis: -1) }
    }

    /// Embeddings of the second view, `[N, k]`, unit length.
    public func embedY(_ y: Tensor) -> Tensor {
        withoutGradients { Tensor.matmul(y - meanY, projectionY).l2Normalized(axis: -1) }
    }
}

#if canImport(Glibc)
import Glibc
#endif
