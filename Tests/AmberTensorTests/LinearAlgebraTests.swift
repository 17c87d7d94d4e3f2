@testable import AmberTensor
import AmberTestSupport
import Testing

/// Reference `op(A) · op(B)` for 2-D row-major arrays, in Double.
func naiveMatmul(_ a: [Float], _ aShape: [Int], transposeA: Bool,
                 _ b: [Float], _ bShape: [Int], transposeB: Bool) -> (values: [Float], shape: [Int]) {
    let m = transposeA ? aShape[1] : aShape[0], k = transposeA ? aShape[0] : aShape[1]
    let n = transposeB ? bShape[0] : bShape[1]
    var out = [Float](repeating: 0, count: m * n)
    for i in 0..<m {
        for j in 0..<n {
            var total = 0.0
            for p in 0..<k {
                let av = transposeA ? a[p * aShape[1] + i] : a[i * aShape[1] + p]
                let bv = transposeB ? b[j * bShape[1] + p] : b[p * bShape[1] + j]
                total += Double(av) * Double(bv)
            }
            out[i * n + j] = Float(total)
        }
    }
    return (out, [m, n])
}

@Suite("Matrix products")
struct LinearAlgebraTests {
    @Test("2-D products with every transpose combination", arguments: [(false, false), (true, false), (false, true), (true, true)])
    func matrixProduct(transposeA: Bool, transposeB: Bool) {
        let (m, k, n) = (37, 53, 29)
        let a = randomTensor(transposeA ? [k, m] : [m, k], seed: 1)
        let b = randomTensor(transposeB ? [n, k] : [k, n], seed: 2)
        let c = Tensor.matmul(a, b, transposeA: transposeA, transposeB: transposeB)
        let reference = naiveMatmul(a.scalars, a.shape, transposeA: transposeA, b.scalars, b.shape, transposeB: transposeB)
        expectClose(c, reference.values, shape: [m, n], tolerance: 1e-5)

        let small = (randomTensor(transposeA ? [4, 3] : [3, 4], seed: 3), randomTensor(transposeB ? [2, 4] : [4, 2], seed: 4))
        expectGradients([small.0, small.1], epsilon: 1e-3) {
            Tensor.matmul($0[0], $0[1], transposeA: transposeA, transposeB: transposeB)
        }
    }

    @Test("batched products", arguments: [(false, false), (true, false), (false, true), (true, true)])
    func batchedProduct(transposeA: Bool, transposeB: Bool) {
        let (batch, m, k, n) = (3, 4, 5, 2)
        let a = randomTensor(transposeA ? [batch, k, m] : [batch, m, k], seed: 5)
        let b = randomTensor(transposeB ? [batch, n, k] : [batch, k, n], seed: 6)
        let c = Tensor.matmul(a, b, transposeA: transposeA, transposeB: transposeB)
        #expect(c.shape == [batch, m, n])
        for i in 0..<batch {
            let ai = a.slice(axis: 0, i..<i + 1), bi = b.slice(axis: 0, i..<i + 1)
            let reference = naiveMatmul(ai.scalars, Array(a.shape.dropFirst()), transposeA: transposeA,
                                        bi.scalars, Array(b.shape.dropFirst()), transposeB: transposeB)
            expectClose(c.slice(axis: 0, i..<i + 1), reference.values, tolerance: 1e-5)
        }
        expectGradients([a, b], epsilon: 1e-3) {
            Tensor.matmul($0[0], $0[1], transposeA: transposeA, transposeB: transposeB)
        }
    }

    @Test("a 2-D weight shared by every batch (folded rows and per-batch)", arguments: [false, true])
    func sharedRightOperand(transposeB: Bool) {
        let x = randomTensor([2, 3, 4], seed: 7)            // [B, n, D_in]
        let w = randomTensor(transposeB ? [5, 4] : [4, 5], seed: 8)
        let y = Tensor.matmul(x, w, transposeB: transposeB)
        #expect(y.shape == [2, 3, 5])
        let reference = naiveMatmul(x.scalars, [6, 4], transposeA: false, w.scalars, w.shape, transposeB: transposeB)
        expectClose(y, reference.values, tolerance: 1e-5)
        expectGradients([x, w], epsilon: 1e-3) { Tensor.matmul($0[0], $0[1], transposeB: transposeB) }
        // Transposed batched left operand with a shared right operand: one GEMM per batch.
        let xt = randomTensor([2, 4, 3], seed: 9)
        expectGradients([xt, w], epsilon: 1e-3) { Tensor.matmul($0[0], $0[1], transposeA: true, transposeB: transposeB) }
    }

    @Test func sharedLeftOperand() {
        let w = randomTensor([3, 4], seed: 10)
        let x = randomTensor([2, 4, 5], seed: 11)
        let y = Tensor.matmul(w, x)
        #expect(y.shape == [2, 3, 5])
        for i in 0..<2 {
            let reference = naiveMatmul(w.scalars, [3, 4], transposeA: false,
                                        x.slice(axis: 0, i..<i + 1).scalars, [4, 5], transposeB: false)
            expectClose(y.slice(axis: 0, i..<i + 1), reference.values, tolerance: 1e-5)
        }
        expectGradients([w, x], epsilon: 1e-3) { Tensor.matmul($0[0], $0[1]) }
    }

    @Test("matrix–vector through sgemv", arguments: [false, true])
    func matrixVector(transposeA: Bool) {
        let a = randomTensor([6, 4], seed: 12)
        let v = randomTensor([transposeA ? 6 : 4], seed: 13)
        let y = Tensor.matmul(a, v, transposeA: transposeA)
        let reference = naiveMatmul(a.scalars, a.shape, transposeA: transposeA, v.scalars, [v.count, 1], transposeB: false)
        expectClose(y, reference.values, shape: [transposeA ? 4 : 6], tolerance: 1e-5)
        expectGradients([a, v], epsilon: 1e-3) { Tensor.matmul($0[0], $0[1], transposeA: transposeA) }
    }

    @Test func sizeOneAndEmptyInnerDimensions() {
        let a = randomTensor([3, 1], seed: 14), b = randomTensor([1, 2], seed: 15)
        let outer = Tensor.matmul(a, b)
        expectClose(outer, naiveMatmul(a.scalars, [3, 1], transposeA: false, b.scalars, [1, 2], transposeB: false).values)
        expectGradients([a, b], epsilon: 1e-3) { Tensor.matmul($0[0], $0[1]) }
        let empty = Tensor.matmul(Tensor.zeros([2, 0]), Tensor.zeros([0, 3]))
        expectClose(empty, [0, 0, 0, 0, 0, 0], shape: [2, 3])
    }

    @Test func mismatchedInnerDimensionsAreRejected() async {
        await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            _ = Tensor.matmul(Tensor.zeros([2, 3]), Tensor.zeros([4, 5]))
        }.map { result in
            #expect(String(decoding: result.standardErrorContent, as: UTF8.self).contains("inner dimensions differ, shapes [2, 3] and [4, 5]"))
        }
    }

    @Test func blasProfileCountsCalls() {
        BLASProfile.reset()
        BLASProfile.isEnabled = true
        _ = Tensor.matmul(randomTensor([8, 8], seed: 1), randomTensor([8, 8], seed: 2))
        BLASProfile.isEnabled = false
        #expect(BLASProfile.callCount >= 1)
        #expect(BLASProfile.seconds > 0)
    }
}
