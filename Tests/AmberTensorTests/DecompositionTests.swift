import AmberTensor
import AmberTestSupport
import Testing

@Suite("LAPACK decompositions")
struct DecompositionTests {
    func random(_ rows: Int, _ columns: Int, seed: UInt64) -> DoubleMatrix {
        DoubleMatrix(randomTensor([rows, columns], seed: seed))
    }

    func maxDifference(_ a: DoubleMatrix, _ b: DoubleMatrix) -> Double {
        zip(a.values, b.values).map { abs($0 - $1) }.max() ?? 0
    }

    @Test func symmetricEigenReconstructsAndOrthonormal() throws {
        let x = random(7, 5, seed: 1)
        let a = DoubleMatrix.product(x, x, transposeB: true)          // 7×7 symmetric PSD
        let (values, vectors) = try a.symmetricEigen()
        #expect(values == values.sorted())
        var scaled = vectors
        for r in 0..<7 { for c in 0..<7 { scaled[r, c] *= values[c] } }
        #expect(maxDifference(DoubleMatrix.product(scaled, vectors, transposeB: true), a) < 1e-10)
        #expect(maxDifference(DoubleMatrix.product(vectors, vectors, transposeA: true), .identity(7)) < 1e-10)
        // Rank 5: two eigenvalues are (numerically) zero.
        #expect(abs(values[0]) < 1e-10 && abs(values[1]) < 1e-10 && values[2] > 1e-3)
    }

    @Test("thin SVD reconstructs tall and wide matrices", arguments: [(6, 4), (4, 6), (5, 5)])
    func singularValueDecomposition(rows: Int, columns: Int) throws {
        let a = random(rows, columns, seed: UInt64(rows * 10 + columns))
        let (u, s, vt) = try a.singularValueDecomposition()
        let r = min(rows, columns)
        #expect(u.rows == rows && u.columns == r && vt.rows == r && vt.columns == columns)
        #expect(s == s.sorted(by: >))
        var us = u
        for i in 0..<rows { for j in 0..<r { us[i, j] *= s[j] } }
        #expect(maxDifference(DoubleMatrix.product(us, vt), a) < 1e-10)
        #expect(maxDifference(DoubleMatrix.product(u, u, transposeA: true), .identity(r)) < 1e-10)
        #expect(maxDifference(DoubleMatrix.product(vt, vt, transposeB: true), .identity(r)) < 1e-10)
    }

    /// The four Penrose conditions, for tall, wide and rank-deficient matrices.
    @Test("pseudo-inverse satisfies the Penrose conditions", arguments: [(8, 3, false), (3, 8, false), (6, 6, true)])
    func pseudoInverse(rows: Int, columns: Int, deficient: Bool) throws {
        var a = random(rows, columns, seed: UInt64(rows * 7 + columns))
        if deficient { for i in 0..<rows { a[i, columns - 1] = a[i, 0] + 2 * a[i, 1] } }   // rank columns − 1
        let p = try a.pseudoInverse()
        #expect(p.rows == columns && p.columns == rows)
        let ap = DoubleMatrix.product(a, p), pa = DoubleMatrix.product(p, a)
        #expect(maxDifference(DoubleMatrix.product(ap, a), a) < 1e-9)
        #expect(maxDifference(DoubleMatrix.product(pa, p), p) < 1e-9)
        #expect(maxDifference(ap, ap.transposed) < 1e-9)
        #expect(maxDifference(pa, pa.transposed) < 1e-9)
        // Full column rank: a left inverse.
        if rows > columns && !deficient { #expect(maxDifference(pa, .identity(columns)) < 1e-9) }
    }

    @Test func orthonormalColumnsAreOrthonormalAndSeeded() {
        var g1 = RandomGenerator(seed: 5), g2 = RandomGenerator(seed: 5), g3 = RandomGenerator(seed: 6)
        let q = DoubleMatrix.orthonormalColumns(rows: 20, columns: 6, using: &g1)
        #expect(maxDifference(DoubleMatrix.product(q, q, transposeA: true), .identity(6)) < 1e-12)
        #expect(q == DoubleMatrix.orthonormalColumns(rows: 20, columns: 6, using: &g2))
        #expect(q != DoubleMatrix.orthonormalColumns(rows: 20, columns: 6, using: &g3))
        // Square: an orthogonal matrix.
        var g4 = RandomGenerator(seed: 7)
        let square = DoubleMatrix.orthonormalColumns(rows: 5, columns: 5, using: &g4)
        #expect(maxDifference(DoubleMatrix.product(square, square, transposeB: true), .identity(5)) < 1e-12)
    }
}
