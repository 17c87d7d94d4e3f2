@testable import AmberTensor
import AmberTestSupport
import Testing

@Suite("Shape ops")
struct ShapeOpsTests {
    let x = randomTensor([2, 3, 4], seed: 21)

    @Test func reshapeIsAViewWithValueSemantics() {
        var y = x.reshaped([6, -1])
        #expect(y.shape == [6, 4])
        #expect(y.scalars == x.scalars)
        #expect(y.storage === x.storage)
        y[0, 0] = 42
        #expect(x[0, 0, 0] != 42, "writing a view must not change the original (copy-on-write)")
        #expect(y[0, 0] == 42)
        expectGradients([x]) { $0[0].reshaped([4, 6]) }
    }

    @Test("transpose of any two axes", arguments: [(0, 1), (0, 2), (1, 2), (-1, -2)])
    func transpose(first: Int, second: Int) {
        let y = x.transposed(first, second)
        let a = first < 0 ? first + 3 : first, b = second < 0 ? second + 3 : second
        var shape = x.shape
        shape.swapAt(a, b)
        #expect(y.shape == shape)
        for flat in 0..<y.count {
            var index = multiIndex(flat, shape)
            let value = y.scalars[flat]
            index.swapAt(a, b)
            #expect(value == x[index[0], index[1], index[2]])
        }
        expectGradients([x]) { $0[0].transposed(first, second) }
    }

    @Test("concatenate and split along every axis", arguments: [0, 1, 2])
    func concatenateAndSplit(axis: Int) {
        var otherShape = x.shape
        otherShape[axis] = 2
        let other = randomTensor(otherShape, seed: 5)
        let joined = Tensor.concatenate([x, other], axis: axis)
        var expectedShape = x.shape
        expectedShape[axis] += 2
        #expect(joined.shape == expectedShape)
        for flat in 0..<joined.count {
            let index = multiIndex(flat, expectedShape)
            var source = index
            let fromX = index[axis] < x.shape[axis]
            if !fromX { source[axis] -= x.shape[axis] }
            let expected = fromX ? x[source[0], source[1], source[2]] : other[source[0], source[1], source[2]]
            #expect(joined.scalars[flat] == expected)
        }
        let parts = joined.split([x.shape[axis], 2], axis: axis)
        #expect(parts[0].scalars == x.scalars)
        #expect(parts[1].scalars == other.scalars)
        expectGradients([x, other]) { Tensor.concatenate([$0[0], $0[1]], axis: axis) }
        expectGradients([joined]) { $0[0].split([1, x.shape[axis] + 1], axis: axis)[1] }
    }

    @Test("slice along every axis", arguments: [0, 1, 2])
    func slice(axis: Int) {
        let y = x.slice(axis: axis, 1..<2)
        var shape = x.shape
        shape[axis] = 1
        #expect(y.shape == shape)
        for flat in 0..<y.count {
            var index = multiIndex(flat, shape)
            index[axis] += 1
            #expect(y.scalars[flat] == x[index[0], index[1], index[2]])
        }
        if axis == 0 { #expect(y.storage === x.storage, "a slice of the first axis is a view") }
        expectGradients([x]) { $0[0].slice(axis: axis, 1..<2) }
    }

    @Test func indexSelectRepeatsAndScatterAddAccumulates() {
        let table = randomTensor([5, 3], seed: 2)
        let rows = table.indexSelect([4, 0, 4])
        #expect(rows.shape == [3, 3])
        for c in 0..<3 {
            #expect(rows[0, c] == table[4, c])
            #expect(rows[1, c] == table[0, c])
            #expect(rows[2, c] == table[4, c])
        }
        let columns = table.indexSelect([2, 1], axis: 1)
        #expect(columns.shape == [5, 2])
        #expect(columns[3, 0] == table[3, 2])
        expectGradients([table]) { $0[0].indexSelect([4, 0, 4]) }
        expectGradients([table]) { $0[0].indexSelect([2, 2, 0], axis: 1) }

        let base = randomTensor([4, 2], seed: 3)
        let source = randomTensor([3, 2], seed: 4)
        let scattered = base.scatterAdding(source, at: [1, 3, 1])
        for c in 0..<2 {
            #expect(abs(scattered[1, c] - (base[1, c] + source[0, c] + source[2, c])) < 1e-6)
            #expect(abs(scattered[3, c] - (base[3, c] + source[1, c])) < 1e-6)
            #expect(scattered[0, c] == base[0, c])
        }
        #expect(base.scalars != scattered.scalars, "scatter-add returns a new tensor")
        expectGradients([base, source]) { $0[0].scatterAdding($0[1], at: [1, 3, 1]) }
    }

    @Test func gatherPicksPerPosition() {
        let scores = randomTensor([3, 4], seed: 6)
        let picked = scores.gather([3, 0, 2], axis: 1)
        #expect(picked.shape == [3, 1])
        #expect(picked.scalars == [scores[0, 3], scores[1, 0], scores[2, 2]])
        let columns = scores.gather([2, 0, 1, 1, 0, 2, 0, 0], axis: 0)
        #expect(columns.shape == [2, 4])
        #expect(columns[1, 1] == scores[2, 1])
        expectGradients([scores]) { $0[0].gather([3, 0, 2, 3, 3, 1], axis: 1) }
    }

    @Test func expandAndSqueeze() {
        let v = randomTensor([3], seed: 1)
        #expect(v.expandingDimension(at: 0).shape == [1, 3])
        #expect(v.expandingDimension(at: -1).shape == [3, 1])
        #expect(v.expandingDimension(at: 1).squeezing(axis: 1).shape == [3])
    }

    @Test func mismatchedConcatenateIsRejected() async {
        await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            _ = Tensor.concatenate([Tensor.zeros([2, 3]), Tensor.zeros([2, 4])], axis: 0)
        }.map { result in
            #expect(String(decoding: result.standardErrorContent, as: UTF8.self).contains("[2, 3] and [2, 4]"))
        }
        await #expect(processExitsWith: .failure) {
            _ = Tensor.zeros([2, 3]).indexSelect([2])
        }
    }

    @Test func paddedStacksItemsOfDifferentLengthsWithZeros() {
        let items: [[Float]] = [[1, 2, 3, 4], [5, 6], [], [7, 8, 9, 10, 11, 12]]     // rows of width 2: 2, 1, 0, 3
        let counts = items.map { $0.count / 2 }
        let padded = Tensor.padded(counts: counts, rowWidth: 2) { item, row in
            for (j, value) in items[item].enumerated() { row[j] = value }
        }
        #expect(padded.shape == [4, 3, 2])
        // Naive reference: each item's rows, then zero rows up to the longest.
        var expected: [Float] = []
        for item in items { expected += item + [Float](repeating: 0, count: 6 - item.count) }
        #expect(padded.scalars == expected)
        // A minimum length pads further; no items gives an empty batch.
        #expect(Tensor.padded(counts: [1], rowWidth: 2, minimumLength: 3) { _, row in row[0] = 1; row[1] = 2 }.scalars == [1, 2, 0, 0, 0, 0])
        #expect(Tensor.padded(counts: [], rowWidth: 4) { _, _ in }.shape == [0, 0, 4])
    }
}
