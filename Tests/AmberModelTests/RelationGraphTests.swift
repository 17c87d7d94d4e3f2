@testable import AmberModel
import AmberTensor
import AmberTestSupport
import Foundation
import Testing

@Suite("Relation graph")
struct RelationGraphTests {
    @Test func adjacencyKeepsTheStrongestNeighboursPerBlock() {
        let images = Tensor(shape: [3, 2], scalars: [0, 0, 1, 0, 5, 0])
        let texts = Tensor(shape: [3, 2], scalars: [1, 0, 0, 1, -1, 0])
        let a = RelationGraph.adjacency(images: images, texts: texts, neighbours: 1)
        #expect(a.shape == [6, 6])
        // Image 0's nearest image is image 1 (distance 1): weight e^-1, image 2 dropped.
        #expect(abs(a[0, 1] - Float(exp(-1.0))) < 1e-6 && a[0, 2] == 0 && a[0, 0] == 0)
        // Image 1's strongest text by cosine is text 0 (cos 1).
        #expect(abs(a[1, 3] - 1) < 1e-6 && a[1, 4] == 0 && a[1, 5] == 0)
        // Text 2 (pointing left) has negative cosines with images 1 and 2 and 0 with image 0
        // (a zero vector): no positive cross edge survives.
        #expect(a[5, 0] == 0 && a[5, 1] == 0 && a[5, 2] == 0)
        // Each row: at most one neighbour per block.
        for r in 0..<6 {
            #expect((0..<3).filter { a[r, $0] > 0 }.count <= 1)
            #expect((3..<6).filter { a[r, $0] > 0 }.count <= 1)
        }
    }

    @Test func theFastAdjacencyIsTheNaiveOne() {
        var generator = RandomGenerator(seed: 9)
        for (B, D) in [(5, 3), (16, 37), (32, 64)] {
            let images = Tensor.randomNormal([B, D], using: &generator) * 0.2, texts = Tensor.randomNormal([B, D], using: &generator) * 0.2
            for k in [1, B / 2, B - 1] {
                let fast = RelationGraph.adjacency(images: images, texts: texts, neighbours: k)
                let naive = RelationGraph.naiveAdjacency(images: images, texts: texts, neighbours: k)
                #expect(fast.shape == naive.shape)
                for (f, n) in zip(fast.scalars, naive.scalars) {
                    #expect((f == 0) == (n == 0) && abs(f - n) <= 1e-5 * max(1, abs(n)), "B \(B) D \(D) k \(k)")
                }
            }
        }
    }

    @Test func layersMatchTheFormulaAndGradients() {
        var generator = RandomGenerator(seed: 4)
        let graph = RelationGraph(dimension: 3, generator: &generator)
        let images = Tensor.randomNormal([4, 3], using: &generator), texts = Tensor.randomNormal([4, 3], using: &generator)
        let (gi, gt) = withoutGradients { graph(images: images, texts: texts) }
        // Reference with plain loops on the same adjacency.
        let a = RelationGraph.adjacency(images: images, texts: texts, neighbours: 2)
        func rows(_ t: Tensor) -> [[Double]] { (0..<t.shape[0]).map { r in (0..<t.shape[1]).map { Double(t[r, $0]) } } }
        func normalize(_ m: [[Double]]) -> [[Double]] { m.map { row in let s = row.reduce(0, +); return row.map { $0 / (s + 1e-12) } } }
        func mul(_ x: [[Double]], _ y: [[Double]]) -> [[Double]] {
            x.map { row in (0..<y[0].count).map { c in row.indices.reduce(0.0) { $0 + row[$1] * y[$1][c] } } }
        }
        func layer(_ adjacency: [[Double]], _ x: [[Double]], _ w: Tensor) -> [[Double]] {
            let y = mul(mul(normalize(adjacency), x), rows(w))
            return zip(x, y).map { zip($0, $1).map { $0 + max($1, 0) } }
        }
        let full = rows(a)
        let hi = layer(full[0..<4].map { Array($0[0..<4]) }, rows(images), graph.imageLayer.weight.value)
        let ht = layer(full[4..<8].map { Array($0[4..<8]) }, rows(texts), graph.textLayer.weight.value)
        let g = layer(full, hi + ht, graph.jointLayer.weight.value)
        for r in 0..<4 { for c in 0..<3 {
            #expect(abs(Double(gi[r, c]) - g[r][c]) < 1e-5)
            #expect(abs(Double(gt[r, c]) - g[r + 4][c]) < 1e-5)
        } }
        // Gradients through the layers, with the adjacency held fixed as in training (it is a
        // constant of the step: no gradient flows into the graph's weights or structure).
        expectGradients([images, texts], epsilon: 1e-3, absoluteTolerance: 5e-3) { x in
            let out = graph(images: x[0], texts: x[1], adjacency: a)
            return Tensor.concatenate([out.images, out.texts], axis: 0)
        }
    }
}
