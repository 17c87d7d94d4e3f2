@testable import AmberTensor
import Foundation
import AmberTestSupport
import Testing

/// Reference reduction along `axis` of a row-major array: visits each output position with the
/// list of values along the axis.
func referenceAlongAxis(_ x: Tensor, axis: Int, _ reduce: ([Double]) -> [Double]) -> [Float] {
    let shape = x.shape
    let values = x.scalars
    var outer = 1, inner = 1
    for a in 0..<axis { outer *= shape[a] }
    for a in (axis + 1)..<shape.count { inner *= shape[a] }
    let extent = shape[axis]
    var firstOut: [[Double]] = []
    for o in 0..<outer {
        for j in 0..<inner {
            let lane = (0..<extent).map { Double(values[(o * extent + $0) * inner + j]) }
            firstOut.append(reduce(lane))
        }
    }
    // Output layout [outer, k, inner].
    let k = firstOut.first?.count ?? 0
    var result = [Float](repeating: 0, count: outer * k * inner)
    for o in 0..<outer {
        for j in 0..<inner {
            for r in 0..<k { result[(o * k + r) * inner + j] = Float(firstOut[o * inner + j][r]) }
        }
    }
    return result
}

@Suite("Reductions")
struct ReductionTests {
    let x = randomTensor([2, 3, 4], seed: 11, lower: -2, upper: 2)

    @Test func sumAndMeanOfAll() {
        let total = x.scalars.reduce(0.0) { $0 + Double($1) }
        #expect(x.sum().shape == [])
        #expect(abs(x.sum().scalar - Float(total)) < 1e-5)
        #expect(abs(x.mean().scalar - Float(total / 24)) < 1e-6)
        expectGradients([x]) { $0[0].sum() }
        expectGradients([x]) { $0[0].mean() }
    }

    @Test("sum, mean along every axis", arguments: [0, 1, 2, -1])
    func sumAlongAxis(axis: Int) {
        let a = axis < 0 ? axis + 3 : axis
        var reduced = x.shape
        reduced.remove(at: a)
        expectClose(x.sum(axis: axis), referenceAlongAxis(x, axis: a) { [$0.reduce(0, +)] }, shape: reduced)
        expectClose(x.mean(axis: axis), referenceAlongAxis(x, axis: a) { [$0.reduce(0, +) / Double($0.count)] })
        var kept = x.shape
        kept[a] = 1
        #expect(x.sum(axis: axis, keepingDimension: true).shape == kept)
        expectGradients([x]) { $0[0].sum(axis: axis) }
        expectGradients([x]) { $0[0].mean(axis: axis, keepingDimension: true) }
    }

    @Test("max and argmax along every axis", arguments: [0, 1, 2])
    func maxAlongAxis(axis: Int) {
        let s = separatedTensor([2, 3, 4], seed: 4)
        expectClose(s.max(axis: axis), referenceAlongAxis(s, axis: axis) { [$0.max()!] })
        let expectedArgmax = referenceAlongAxis(s, axis: axis) { lane in [Double(lane.firstIndex(of: lane.max()!)!)] }
        #expect(s.argmax(axis: axis) == expectedArgmax.map { Int($0) })
        expectGradients([s], epsilon: 1e-3) { $0[0].max(axis: axis) }
    }

    @Test("logSumExp along every axis", arguments: [0, 1, 2])
    func logSumExpAlongAxis(axis: Int) {
        expectClose(x.logSumExp(axis: axis),
                    referenceAlongAxis(x, axis: axis) { lane in [Foundation.log(lane.map { Foundation.exp($0) }.reduce(0, +))] })
        expectGradients([x]) { $0[0].logSumExp(axis: axis) }
        // Stable for large values.
        let big = Tensor(shape: [3], scalars: [1000, 1000, 999])
        #expect(abs(big.logSumExp(axis: 0).scalar - Float(1000 + Foundation.log(2 + Foundation.exp(-1.0)))) < 1e-3)
    }

    @Test("softmax and logSoftmax along every axis", arguments: [0, 1, 2])
    func softmaxAlongAxis(axis: Int) {
        let reference: ([Double]) -> [Double] = { lane in
            let peak = lane.max()!
            let e = lane.map { Foundation.exp($0 - peak) }
            let total = e.reduce(0, +)
            return e.map { $0 / total }
        }
        expectClose(x.softmax(axis: axis), referenceAlongAxis(x, axis: axis, reference))
        expectClose(x.logSoftmax(axis: axis), referenceAlongAxis(x, axis: axis) { reference($0).map { Foundation.log($0) } })
        expectGradients([x]) { $0[0].softmax(axis: axis) }
        expectGradients([x]) { $0[0].logSoftmax(axis: axis) }
        let large = Tensor(shape: [2], scalars: [500, 0]).softmax()
        #expect(large.isFinite)
    }

    @Test("top-k values and indices along every axis", arguments: [0, 1, 2])
    func topKAlongAxis(axis: Int) {
        let s = separatedTensor([3, 4, 5], seed: 8)
        let k = 2
        let top = s.topK(k, axis: axis)
        var expectedShape = s.shape
        expectedShape[axis] = k
        #expect(top.values.shape == expectedShape)
        expectClose(top.values, referenceAlongAxis(s, axis: axis) { Array($0.sorted(by: >).prefix(k)) })
        let expectedIndices = referenceAlongAxis(s, axis: axis) { lane in
            Array(lane.indices.sorted { lane[$0] > lane[$1] }.prefix(k).map(Double.init))
        }
        #expect(top.indices == expectedIndices.map { Int($0) })
        expectGradients([s], epsilon: 1e-3) { $0[0].topK(k, axis: axis).values }
    }

    @Test("top-1 and top-2 over an axis with ≥ 8 positions after it (the vectorised pass) match the insertion rule: ties, NaN, −∞", arguments: [1, 2])
    func topOneOrTwoWithManyInnerPositions(k: Int) {
        let (outer, extent, inner) = (3, 6, 21)
        var generator = RandomGenerator(seed: 12)
        let choices: [Float] = [0, 1, 1, 2, 2, 2, -.infinity, .nan, -1, 3]
        let values = (0..<(outer * extent * inner)).map { _ in choices[Int(generator.nextUniform() * Float(choices.count)) % choices.count] }
        let x = Tensor(shape: [outer, extent, inner], scalars: values)
        let top = x.topK(k, axis: 1)
        for o in 0..<outer {
            for j in 0..<inner {
                // The rule: the first k fill the buffer; a later value enters when strictly
                // larger than the last kept one, and moves up past strictly smaller ones.
                var kept: [Int] = []
                for e in 0..<extent {
                    let v = values[(o * extent + e) * inner + j]
                    if kept.count == k && !(v > values[(o * extent + kept[k - 1]) * inner + j]) { continue }
                    if kept.count == k { kept.removeLast() }
                    var position = kept.count
                    while position > 0 && v > values[(o * extent + kept[position - 1]) * inner + j] { position -= 1 }
                    kept.insert(e, at: position)
                }
                for r in 0..<k {
                    let at = (o * k + r) * inner + j
                    #expect(top.indices[at] == kept[r], "o \(o) j \(j) rank \(r)")
                    let expected = values[(o * extent + kept[r]) * inner + j]
                    #expect(top.values.scalars[at] == expected || (expected.isNaN && top.values.scalars[at].isNaN))
                }
            }
        }
        let smooth = separatedTensor([2, 5, 9], seed: 3)
        expectGradients([smooth], epsilon: 1e-3) { $0[0].topK(k, axis: 1).values }
    }

    @Test func topKBreaksTiesByLowerIndex() {
        let t = Tensor(shape: [5], scalars: [1, 3, 3, 0, 3])
        let top = t.topK(3, axis: 0)
        #expect(top.indices == [1, 2, 4])
        expectClose(top.values, [3, 3, 3])
        #expect(t.topK(5, axis: 0).indices == [1, 2, 4, 0, 3])
    }

    @Test func sizeOneAxes() {
        let column = randomTensor([4, 1], seed: 2)
        expectClose(column.sum(axis: 1), column.scalars)
        expectClose(column.softmax(axis: 1), [1, 1, 1, 1])
        expectClose(column.max(axis: 1), column.scalars)
        expectGradients([column]) { $0[0].logSumExp(axis: 1) }
    }

    @Test func emptyAxisIsRejected() async {
        await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            _ = Tensor.zeros([0, 3]).mean(axis: 0)
        }.map { result in
            #expect(String(decoding: result.standardErrorContent, as: UTF8.self).contains("empty axis, shape [0, 3]"))
        }
        await #expect(processExitsWith: .failure) {
            _ = Tensor.zeros([3, 0]).topK(1, axis: 1)
        }
        await #expect(processExitsWith: .failure) {
            _ = Tensor.zeros([0]).mean()
        }
    }
}
