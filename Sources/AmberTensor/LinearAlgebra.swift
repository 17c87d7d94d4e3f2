import CBLAS
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

// Matrix products through OpenBLAS. Transposes are passed to BLAS as flags: no copies.
//
//   C[m×n] = op(A) · op(B),  op(A) is m×k, op(B) is k×n
//   backward:  dA = dC · op(B)ᵀ   (arranged per transpose flag, see `matmul` pullback)
//              dB = op(A)ᵀ · dC

/// Time spent inside BLAS calls, summed over all threads, while ``isEnabled`` is true.
/// Used by benchmarks to report the share of a step spent in BLAS.
public enum BLASProfile {
    static let enabledFlag = Atomic<Bool>(false)
    static let nanoseconds = Atomic<UInt64>(0)
    static let calls = Atomic<Int>(0)

    public static var isEnabled: Bool {
        get { enabledFlag.load(ordering: .relaxed) }
        set { enabledFlag.store(newValue, ordering: .relaxed) }
    }

    /// Seconds spent in BLAS since the last ``reset()``.
    public static var seconds: Double { Double(nanoseconds.load(ordering: .relaxed)) / 1e9 }
    /// BLAS calls since the last ``reset()``.
    public static var callCount: Int { calls.load(ordering: .relaxed) }

    public static func reset() {
        nanoseconds.store(0, ordering: .relaxed)
        calls.store(0, ordering: .relaxed)
    }

    @inline(__always)
    static func measure(_ body: () -> Void) {
        guard isEnabled else { body(); return }
        var start = timespec(), end = timespec()
        clock_gettime(CLOCK_MONOTONIC, &start)
        body()
        clock_gettime(CLOCK_MONOTONIC, &end)
        let elapsed = (end.tv_sec - start.tv_sec) * 1_000_000_000 + (end.tv_nsec - start.tv_nsec)
        nanoseconds.add(UInt64(Swift.max(elapsed, 0)), ordering: .relaxed)
        calls.add(1, ordering: .relaxed)
    }
}

/// OpenBLAS threading.
public enum BLASThreads {
    /// Threads OpenBLAS uses for one call.
    public static var count: Int {
        get { Int(openblas_get_num_threads()) }
        set { openblas_set_num_threads(Int32(Swift.max(newValue, 1))) }
    }
}

/// One operand of a (batched) product as BLAS sees it.
struct GEMMOperand {
    let pointer: UnsafeMutablePointer<Float>
    /// Rows and columns as stored (before the transpose flag).
    let rows: Int
    let columns: Int
    let transposed: Bool
    /// Elements between consecutive matrices of a batch; 0 when one matrix serves every batch.
    let batchStride: Int

    var logicalRows: Int { transposed ? columns : rows }
    var logicalColumns: Int { transposed ? rows : columns }
}

/// `C_b = op(A_b) · op(B_b) + β C_b` for every batch `b`. When `cBatchStride == 0` every batch
/// accumulates into the same `C` (the sum over the batch).
func batchedGEMM(
    batch: Int, a: GEMMOperand, b: GEMMOperand,
    c: UnsafeMutablePointer<Float>, cBatchStride: Int, beta: Float
) {
    let m = a.logicalRows, k = a.logicalColumns, n = b.logicalColumns
    precondition(b.logicalRows == k, "matmul: inner dimensions differ (\(m)×\(k) · \(b.logicalRows)×\(n))")
    guard m > 0 && n > 0 else { return }
    if k == 0 {
        // Empty inner dimension: C = β C.
        for i in 0..<batch where cBatchStride != 0 || i == 0 {
            let pc = c + i * cBatchStride
            for j in 0..<(m * n) { pc[j] = beta == 0 ? 0 : beta * pc[j] }
        }
        return
    }
    BLASProfile.measure {
        for i in 0..<batch {
            let effectiveBeta: Float = (cBatchStride == 0 && i > 0) ? 1 : beta
            cblas_sgemm(
                CblasRowMajor,
                a.transposed ? CblasTrans : CblasNoTrans,
                b.transposed ? CblasTrans : CblasNoTrans,
                Int32(m), Int32(n), Int32(k),
                1, a.pointer + i * a.batchStride, Int32(Swift.max(a.columns, 1)),
                b.pointer + i * b.batchStride, Int32(Swift.max(b.columns, 1)),
                effectiveBeta, c + i * cBatchStride, Int32(n)
            )
        }
    }
}

extension Tensor {
    /// Splits a tensor of rank ≥ 2 into `(batch, rows, columns)` of its trailing matrices.
    private var matrixLayout: (batch: Int, rows: Int, columns: Int) {
        let rows = shape[rank - 2], columns = shape[rank - 1]
        return (count / Swift.max(rows * columns, 1), rows, columns)
    }

    /// Matrix product `op(a) · op(b)`, through `cblas_sgemm` (or `cblas_sgemv` when `b` is a
    /// vector).
    ///
    /// Shapes:
    /// - `[m, k] · [k, n] → [m, n]`;
    /// - `[…, m, k] · [k, n] → […, m, n]` (leading axes of `a` fold into rows: one call);
    /// - `[B…, m, k] · [B…, k, n] → [B…, m, n]` (batched; the same leading axes on both, or a
    ///   2-D operand shared by every batch);
    /// - `[…, m, k] · [k] → […, m]`.
    /// `transposeA`/`transposeB` swap the last two axes of that operand, without copying.
    public static func matmul(_ a: Tensor, _ b: Tensor, transposeA: Bool = false, transposeB: Bool = false) -> Tensor {
        precondition(a.rank >= 2, "matmul: left operand needs rank ≥ 2, shape \(a.shape)")
        if b.rank == 1 {
            precondition(!transposeB, "matmul: transposeB has no meaning for a vector")
            return matrixVector(a, b, transposeA: transposeA)
        }
        precondition(b.rank >= 2, "matmul: right operand needs rank ≥ 2, shape \(b.shape)")
        let leadingA = Array(a.shape.dropLast(2)), leadingB = Array(b.shape.dropLast(2))
        precondition(a.rank == 2 || b.rank == 2 || leadingA == leadingB,
                     "matmul: batch axes differ, shapes \(a.shape) and \(b.shape)")
        let m = transposeA ? a.shape[a.rank - 1] : a.shape[a.rank - 2]
        let n = transposeB ? b.shape[b.rank - 2] : b.shape[b.rank - 1]
        let outShape = (a.rank > 2 ? leadingA : leadingB) + [m, n]
        let result = product(a, b, transposeA: transposeA, transposeB: transposeB, resultShape: outShape)

        let savedA = a.detached, savedB = b.detached
        let needA = a.node != nil, needB = b.node != nil
        return record(result, inputs: [a, b]) { g in
            var gradA: Tensor?, gradB: Tensor?
            if needA {
                // dA = dC · op(B)ᵀ, or op(B) · dCᵀ when A was transposed.
                gradA = transposeA
                    ? product(savedB, g, transposeA: transposeB, transposeB: true, resultShape: savedA.shape)
                    : product(g, savedB, transposeA: false, transposeB: !transposeB, resultShape: savedA.shape)
            }
            if needB {
                // dB = op(A)ᵀ · dC, or dCᵀ · op(A) when B was transposed.
                gradB = transposeB
                    ? product(g, savedA, transposeA: true, transposeB: transposeA, resultShape: savedB.shape)
                    : product(savedA, g, transposeA: !transposeA, transposeB: false, resultShape: savedB.shape)
            }
            return [gradA, gradB]
        }
    }

    /// `op(x) · op(y)` into a new tensor of `resultShape`, for every batch of the trailing
    /// matrices. A 2-D operand is shared by every batch; a 2-D result is the sum over batches.
    /// Batches are folded into one large GEMM where the memory layout allows it:
    /// - `[b, r, c] · [c, n]` (result batched): rows `b·r`;
    /// - `[b, r, c]ᵀ · [b, r, n]` (result shared): inner dimension `b·r`.
    private static func product(
        _ x: Tensor, _ y: Tensor, transposeA: Bool, transposeB: Bool, resultShape: [Int]
    ) -> Tensor {
        let lx = x.matrixLayout, ly = y.matrixLayout
        let resultBatched = resultShape.count > 2
        var batch = Swift.max(x.rank > 2 ? lx.batch : 1, y.rank > 2 ? ly.batch : 1)
        var ox = GEMMOperand(pointer: x.pointer, rows: lx.rows, columns: lx.columns, transposed: transposeA,
                             batchStride: x.rank > 2 ? lx.rows * lx.columns : 0)
        var oy = GEMMOperand(pointer: y.pointer, rows: ly.rows, columns: ly.columns, transposed: transposeB,
                             batchStride: y.rank > 2 ? ly.rows * ly.columns : 0)
        if x.rank > 2 && y.rank == 2 && !transposeA && resultBatched {
            ox = GEMMOperand(pointer: x.pointer, rows: lx.batch * lx.rows, columns: lx.columns,
                             transposed: false, batchStride: 0)
            batch = 1
        } else if x.rank > 2 && y.rank > 2 && transposeA && !transposeB && !resultBatched {
            ox = GEMMOperand(pointer: x.pointer, rows: lx.batch * lx.rows, columns: lx.columns,
                             transposed: true, batchStride: 0)
            oy = GEMMOperand(pointer: y.pointer, rows: ly.batch * ly.rows, columns: ly.columns,
                             transposed: false, batchStride: 0)
            batch = 1
        }
        precondition(ox.logicalColumns == oy.logicalRows,
                     "matmul: inner dimensions differ, shapes \(x.shape)\(transposeA ? "ᵀ" : "") and \(y.shape)\(transposeB ? "ᵀ" : "")")
        let m = ox.logicalRows, n = oy.logicalColumns
        let result = Tensor(uninitializedShape: resultShape)
        precondition(result.count == (resultBatched ? batch : 1) * m * n,
                     "matmul: result shape \(resultShape) does not hold \(batch) × \(m)×\(n)")
        batchedGEMM(batch: batch, a: ox, b: oy, c: result.pointer,
                    cBatchStride: resultBatched ? m * n : 0, beta: 0)
        return result
    }

    /// `op(A) · x` through `cblas_sgemv`; `A` is `[…, m, k]` (leading axes fold into rows).
    private static func matrixVector(_ a: Tensor, _ x: Tensor, transposeA: Bool) -> Tensor {
        let la = a.matrixLayout
        precondition(!transposeA || a.rank == 2, "matmul: transposeA with a vector needs a 2-D matrix, shape \(a.shape)")
        let rows = transposeA ? la.rows : la.batch * la.rows, columns = la.columns
        let outLength = transposeA ? columns : rows
        precondition(x.count == (transposeA ? rows : columns),
                     "matmul: matrix \(a.shape)\(transposeA ? "ᵀ" : "") and vector \(x.shape) do not fit")
        var outShape = Array(a.shape.dropLast(2))
        outShape.append(transposeA ? columns : la.rows)
        let result = Tensor(shape: outShape, repeating: 0)
        if outLength > 0 && x.count > 0 {
            BLASProfile.measure {
                cblas_sgemv(CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans,
                            Int32(rows), Int32(columns), 1, a.pointer, Int32(Swift.max(columns, 1)),
                            x.pointer, 1, 0, result.pointer, 1)
            }
        }
        let savedA = a.detached, savedX = x.detached
        let needA = a.node != nil, needX = x.node != nil
        return record(result, inputs: [a, x]) { g in
            var gradA: Tensor?, gradX: Tensor?
            if needA {
                // Outer product: dA = g xᵀ (or x gᵀ when A was transposed).
                let grad = Tensor(shape: savedA.shape, repeating: 0)
                BLASProfile.measure {
                    if transposeA {
                        cblas_sger(CblasRowMajor, Int32(rows), Int32(columns), 1, savedX.pointer, 1,
                                   g.pointer, 1, grad.pointer, Int32(Swift.max(columns, 1)))
                    } else {
                        cblas_sger(CblasRowMajor, Int32(rows), Int32(columns), 1, g.pointer, 1,
                                   savedX.pointer, 1, grad.pointer, Int32(Swift.max(columns, 1)))
                    }
                }
                gradA = grad
            }
            if needX {
                let grad = Tensor(shape: savedX.shape, repeating: 0)
                BLASProfile.measure {
                    cblas_sgemv(CblasRowMajor, transposeA ? CblasNoTrans : CblasTrans,
                                Int32(rows), Int32(columns), 1, savedA.pointer, Int32(Swift.max(columns, 1)),
                                g.pointer, 1, 0, grad.pointer, 1)
                }
                gradX = grad
            }
            return [gradA, gradX]
        }
    }
}
