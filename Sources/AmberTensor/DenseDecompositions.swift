import CBLAS

/// A dense row-major matrix of Doubles, for the closed-form linear algebra of baselines (CCA)
/// where Float32 loses too much: covariance whitening and SVD go through LAPACK.
public struct DoubleMatrix: Sendable, Equatable {
    public let rows: Int
    public let columns: Int
    /// Row-major elements.
    public var values: [Double]

    public init(rows: Int, columns: Int, values: [Double]) {
        precondition(values.count == rows * columns, "DoubleMatrix: \(values.count) values for \(rows)×\(columns)")
        self.rows = rows
        self.columns = columns
        self.values = values
    }

    public init(rows: Int, columns: Int, repeating value: Double = 0) {
        self.init(rows: rows, columns: columns, values: [Double](repeating: value, count: rows * columns))
    }

    public init(_ tensor: Tensor) {
        precondition(tensor.rank == 2, "DoubleMatrix: needs a 2-D tensor, shape \(tensor.shape)")
        self.init(rows: tensor.shape[0], columns: tensor.shape[1], values: tensor.scalars.map(Double.init))
    }

    public static func identity(_ n: Int) -> DoubleMatrix {
        var m = DoubleMatrix(rows: n, columns: n)
        for i in 0..<n { m.values[i * n + i] = 1 }
        return m
    }

    public subscript(row: Int, column: Int) -> Double {
        get { values[row * columns + column] }
        set { values[row * columns + column] = newValue }
    }

    public var tensor: Tensor { Tensor(shape: [rows, columns], scalars: values.map(Float.init)) }

    public var transposed: DoubleMatrix {
        var t = DoubleMatrix(rows: columns, columns: rows)
        for r in 0..<rows { for c in 0..<columns { t.values[c * rows + r] = values[r * columns + c] } }
        return t
    }

    /// The first `count` columns.
    public func leadingColumns(_ count: Int) -> DoubleMatrix {
        precondition(count <= columns, "leadingColumns: \(count) of \(columns)")
        var out = DoubleMatrix(rows: rows, columns: count)
        for r in 0..<rows { for c in 0..<count { out.values[r * count + c] = values[r * columns + c] } }
        return out
    }

    /// `op(a) · op(b)` through `cblas_dgemm`.
    public static func product(_ a: DoubleMatrix, _ b: DoubleMatrix, transposeA: Bool = false, transposeB: Bool = false) -> DoubleMatrix {
        let m = transposeA ? a.columns : a.rows, k = transposeA ? a.rows : a.columns
        let n = transposeB ? b.rows : b.columns
        precondition(k == (transposeB ? b.columns : b.rows), "DoubleMatrix.product: \(a.rows)×\(a.columns) and \(b.rows)×\(b.columns) do not fit")
        var c = DoubleMatrix(rows: m, columns: n)
        guard m > 0, n > 0, k > 0 else { return c }
        a.values.withUnsafeBufferPointer { pa in
            b.values.withUnsafeBufferPointer { pb in
                c.values.withUnsafeMutableBufferPointer { pc in
                    cblas_dgemm(CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
                                Int32(m), Int32(n), Int32(k), 1, pa.baseAddress, Int32(a.columns),
                                pb.baseAddress, Int32(b.columns), 0, pc.baseAddress, Int32(n))
                }
            }
        }
        return c
    }

    /// A failure reported by LAPACK.
    public struct DecompositionError: Error, CustomStringConvertible {
        public let description: String
    }

    /// Eigen-decomposition of a symmetric matrix (LAPACK `dsyevd`): eigenvalues ascending and
    /// eigenvectors as the columns of `vectors`, so `A = V diag(λ) Vᵀ`.
    public func symmetricEigen() throws -> (values: [Double], vectors: DoubleMatrix) {
        precondition(rows == columns, "symmetricEigen: matrix is \(rows)×\(columns)")
        var n = Int32(rows), lda = Int32(rows)
        // Row-major A is column-major Aᵀ = A (symmetric), so pass it as is; the eigenvectors come
        // back column-major, i.e. as the rows of the row-major result: transpose afterwards.
        var a = values
        var w = [Double](repeating: 0, count: rows)
        var info: Int32 = 0
        var workSize = 0.0
        var iworkSize: Int32 = 0
        var query: Int32 = -1
        var jobz = CChar(UInt8(ascii: "V")), uplo = CChar(UInt8(ascii: "U"))
        dsyevd_(&jobz, &uplo, &n, &a, &lda, &w, &workSize, &query, &iworkSize, &query, &info, 1, 1)
        var lwork = Int32(workSize), liwork = iworkSize
        var work = [Double](repeating: 0, count: Int(lwork))
        var iwork = [Int32](repeating: 0, count: Int(liwork))
        dsyevd_(&jobz, &uplo, &n, &a, &lda, &w, &work, &lwork, &iwork, &liwork, &info, 1, 1)
        guard info == 0 else { throw DecompositionError(description: "dsyevd failed (info \(info))") }
        return (w, DoubleMatrix(rows: rows, columns: rows, values: a).transposed)
    }

    /// Thin singular value decomposition (LAPACK `dgesdd`): `A = U diag(s) Vᵀ`, singular values
    /// descending, `U` is `rows × r`, `Vᵀ` is `r × columns`, `r = min(rows, columns)`.
    public func singularValueDecomposition() throws -> (u: DoubleMatrix, s: [Double], vt: DoubleMatrix) {
        // Column-major view of row-major A is Aᵀ (columns × rows). Decompose Aᵀ = U' S V'ᵀ; then
        // A = V' S U'ᵀ, so U = V' and Vᵀ = U'ᵀ.
        var m = Int32(columns), n = Int32(rows)
        let r = min(rows, columns)
        var a = values
        var lda = m
        var s = [Double](repeating: 0, count: r)
        var uPrime = [Double](repeating: 0, count: columns * r)       // column-major m × r
        var vtPrime = [Double](repeating: 0, count: r * rows)         // column-major r × n
        var ldu = m, ldvt = Int32(r)
        var info: Int32 = 0
        var jobz = CChar(UInt8(ascii: "S"))
        var iwork = [Int32](repeating: 0, count: 8 * r)
        var workSize = 0.0
        var query: Int32 = -1
        dgesdd_(&jobz, &m, &n, &a, &lda, &s, &uPrime, &ldu, &vtPrime, &ldvt, &workSize, &query, &iwork, &info, 1)
        var lwork = Int32(workSize)
        var work = [Double](repeating: 0, count: Int(lwork))
        dgesdd_(&jobz, &m, &n, &a, &lda, &s, &uPrime, &ldu, &vtPrime, &ldvt, &work, &lwork, &iwork, &info, 1)
        guard info == 0 else { throw DecompositionError(description: "dgesdd failed (info \(info))") }
        // U = V': U[i, j] = V'ᵀ[j, i], stored column-major (r × rows) at j + i·r.
        var u = DoubleMatrix(rows: rows, columns: r)
        for i in 0..<rows { for j in 0..<r { u.values[i * r + j] = vtPrime[j + i * r] } }
        // U' column-major columns × r: U'[c, j] = uPrime[c + j·columns]; Vᵀ (r × columns) = U'ᵀ.
        var vt = DoubleMatrix(rows: r, columns: columns)
        for j in 0..<r { for c in 0..<columns { vt.values[j * columns + c] = uPrime[c + j * columns] } }
        return (u, s, vt)
    }
}

extension DoubleMatrix {
    /// Moore–Penrose pseudo-inverse `A⁺ = V diag(1/s) Uᵀ` from the thin SVD, with singular values
    /// at or below `relativeCutoff · s_max` treated as zero (as `numpy.linalg.pinv`'s `rcond`).
    /// `A` is `rows × columns`; `A⁺` is `columns × rows`.
    public func pseudoInverse(relativeCutoff: Double = 1e-12) throws -> DoubleMatrix {
        let (u, s, vt) = try singularValueDecomposition()
        let r = s.count, cutoff = relativeCutoff * (s.first ?? 0)
        var inverse = DoubleMatrix(rows: columns, columns: rows)
        for k in 0..<r where s[k] > cutoff {
            let w = 1 / s[k]
            for i in 0..<columns {
                let v = vt[k, i] * w
                guard v != 0 else { continue }
                for j in 0..<rows { inverse.values[i * rows + j] += v * u[j, k] }
            }
        }
        return inverse
    }

    /// A `rows × columns` matrix with orthonormal columns (`rows ≥ columns`), as PyTorch's
    /// `orthogonal_` makes one: Gaussian entries from `generator`, orthonormalised by modified
    /// Gram–Schmidt (re-drawn in the measure-zero case of a dependent column).
    public static func orthonormalColumns(rows: Int, columns: Int, using generator: inout RandomGenerator) -> DoubleMatrix {
        precondition(rows >= columns && columns >= 1, "orthonormalColumns: needs rows ≥ columns ≥ 1, got \(rows)×\(columns)")
        var m = DoubleMatrix(rows: rows, columns: columns)
        var j = 0
        while j < columns {
            for i in 0..<rows { m[i, j] = Double(generator.nextNormal()) }
            for k in 0..<j {
                var dot = 0.0
                for i in 0..<rows { dot += m[i, j] * m[i, k] }
                for i in 0..<rows { m[i, j] -= dot * m[i, k] }
            }
            var norm = 0.0
            for i in 0..<rows { norm += m[i, j] * m[i, j] }
            norm = norm.squareRoot()
            guard norm > 1e-8 else { continue }
            for i in 0..<rows { m[i, j] /= norm }
            j += 1
        }
        return m
    }
}
