@testable import AmberModel
import AmberTensor
import AmberTestSupport
import Foundation
import Testing

@Suite("Sinkhorn prototypes")
struct PrototypeLossTests {
    @Test func sinkhornCodesAreBalancedAndFollowTheScores() {
        var generator = RandomGenerator(seed: 1)
        let scores = Tensor.randomUniform([12, 4], lower: -1, upper: 1, using: &generator)
        let codes = SinkhornKnopp.codes(scores, epsilon: 0.1, iterations: 50)
        for b in 0..<12 { #expect(abs(codes.slice(axis: 0, b..<b + 1).sum().scalar - 1) < 1e-4) }
        for k in 0..<4 { #expect(abs(codes.slice(axis: 1, k..<k + 1).sum().scalar - 3) < 1e-3) }   // B / K each
        // With few iterations rows still sum to 1 (the last normalisation is over rows).
        let rough = SinkhornKnopp.codes(scores, epsilon: 0.1, iterations: 3)
        for b in 0..<12 { #expect(abs(rough.slice(axis: 0, b..<b + 1).sum().scalar - 1) < 1e-4) }
        // An item whose score is far higher on one prototype is coded to it.
        var peaked = Tensor.zeros([4, 4])
        for b in 0..<4 { peaked[b, (b + 1) % 4] = 1 }
        #expect(SinkhornKnopp.codes(peaked).argmax(axis: 1) == [1, 2, 3, 0])
    }

    @Test func lossMatchesTheFormulaAndItsGradient() {
        var generator = RandomGenerator(seed: 2)
        let loss = PrototypeLoss(count: 3, dimension: 4, generator: &generator)
        let images = Tensor.randomNormal([5, 4], using: &generator).l2Normalized()
        let texts = Tensor.randomNormal([5, 4], using: &generator).l2Normalized()
        let (value, imageAssignments, _) = loss(images: images, texts: texts)
        // Reference in Double.
        let c = loss.prototypes.value.l2Normalized()
        func logSoftmaxRows(_ s: Tensor) -> [[Double]] {
            (0..<s.shape[0]).map { b in
                let row = (0..<s.shape[1]).map { Double(s[b, $0]) / 0.1 }
                let peak = row.max()!
                let lse = peak + Foundation.log(row.map { Foundation.exp($0 - peak) }.reduce(0, +))
                return row.map { $0 - lse }
            }
        }
        let si = Tensor.matmul(images, c, transposeB: true), st = Tensor.matmul(texts, c, transposeB: true)
        let qi = SinkhornKnopp.codes(si), qt = SinkhornKnopp.codes(st)
        let li = logSoftmaxRows(si), lt = logSoftmaxRows(st)
        var total = 0.0
        for b in 0..<5 { for k in 0..<3 { total += Double(qt[b, k]) * li[b][k] + Double(qi[b, k]) * lt[b][k] } }
        #expect(abs(Double(value.scalar) - (-0.5 * total / 5)) < 1e-4)
        #expect(imageAssignments == qi.argmax(axis: 1))
        // Gradients with respect to the embeddings (codes are constants).
        expectGradients([images, texts], epsilon: 1e-3, absoluteTolerance: 5e-3) { x in
            let scoresI = Tensor.matmul(x[0], c, transposeB: true), scoresT = Tensor.matmul(x[1], c, transposeB: true)
            let fixedI = qi, fixedT = qt
            return ((fixedT * (scoresI * 10).logSoftmax(axis: 1)).sum() + (fixedI * (scoresT * 10).logSoftmax(axis: 1)).sum()) * (-0.1)
        }
        // The prototypes receive a gradient.
        loss.prototypes.zeroGradient()
        loss(images: images, texts: texts).loss.backward()
        #expect(loss.prototypes.gradient != nil && loss.prototypes.gradient!.abs().sum().scalar > 0)
    }

    /// Paired embeddings in 16 well-separated clusters of a 1024-wide space, as a trained joint
    /// space has them: image and caption of a pair near the same cluster centre.
    static func clusteredPairs(count: Int, clusters: Int, dimension: Int, seed: UInt64) -> (images: Tensor, texts: Tensor) {
        var generator = RandomGenerator(seed: seed)
        let centres = Tensor.randomNormal([clusters, dimension], using: &generator).l2Normalized()
        var images: [Float] = [], texts: [Float] = []
        for b in 0..<count {
            let centre = centres.slice(axis: 0, (b % clusters)..<(b % clusters + 1))
            images += (centre + Tensor.randomNormal([1, dimension], using: &generator) * 0.01).scalars
            texts += (centre + Tensor.randomNormal([1, dimension], using: &generator) * 0.01).scalars
        }
        return (Tensor(shape: [count, dimension], scalars: images).l2Normalized(),
                Tensor(shape: [count, dimension], scalars: texts).l2Normalized())
    }

    @Test func seedingPutsPrototypesOnDistinctCandidatesReproducibly() {
        var generator = RandomGenerator(seed: 3)
        let loss = PrototypeLoss(count: 6, dimension: 8, generator: &generator)
        let candidates = Tensor.randomNormal([20, 8], using: &generator).l2Normalized()
        var seeding = RandomGenerator(seed: 9)
        loss.seed(from: candidates, generator: &seeding)
        let placed = loss.prototypes.value
        var rows: [Int] = []
        for k in 0..<6 {
            let prototype = placed.slice(axis: 0, k..<k + 1)
            let match = (0..<20).first { candidates.slice(axis: 0, $0..<$0 + 1).maxAbsoluteDifference(to: prototype) < 1e-6 }
            #expect(match != nil, "prototype \(k) is not a candidate row")
            if let match { rows.append(match) }
        }
        #expect(Set(rows).count == 6)
        // The same generator seed, the same prototypes.
        var again = RandomGenerator(seed: 3)
        let other = PrototypeLoss(count: 6, dimension: 8, generator: &again)
        var seedingAgain = RandomGenerator(seed: 9)
        other.seed(from: candidates, generator: &seedingAgain)
        #expect(other.prototypes.value.maxAbsoluteDifference(to: placed) == 0)
        // Fewer candidates than prototypes: those placed are distinct, the rest keep their values.
        let before = other.prototypes.value
        other.seed(from: candidates.slice(axis: 0, 0..<2), generator: &seedingAgain)
        #expect(other.prototypes.value.slice(axis: 0, 2..<6).maxAbsoluteDifference(to: before.slice(axis: 0, 2..<6)) == 0)
        #expect(other.prototypes.value.slice(axis: 0, 0..<1).maxAbsoluteDifference(to: other.prototypes.value.slice(axis: 0, 1..<2)) > 0.1)
        // k-means++ reaches every cluster: 16 prototypes on 16 tight clusters cover them all.
        let (images, texts) = Self.clusteredPairs(count: 64, clusters: 16, dimension: 32, seed: 4)
        let clusterLoss = PrototypeLoss(count: 16, dimension: 32, generator: &generator)
        clusterLoss.seed(from: Tensor.concatenate([images, texts], axis: 0), generator: &seeding)
        #expect(Set(clusterLoss.assign(images)).count == 16)
    }

    @Test func randomPrototypesInAWideSpaceGiveNoSignalSeededOnesDo() {
        let (images, texts) = Self.clusteredPairs(count: 128, clusters: 16, dimension: 1024, seed: 5)
        var generator = RandomGenerator(seed: 6)
        let loss = PrototypeLoss(count: 64, dimension: 1024, generator: &generator)
        let uniform = Float(Foundation.log(64.0))
        // Random unit prototypes: scores ≈ ±0.03, codes and predictions ≈ uniform, loss ≈ ln K.
        let random = loss(images: images, texts: texts).loss.scalar
        #expect(abs(random - uniform) < 0.01 * uniform)
        // On the data: the loss starts well below ln K, and each pair's image and caption are coded
        // to prototypes of their own cluster — nearly all: equipartition spreads every cluster over
        // the prototypes k-means++ gave it, and moves a few items of a crowded cluster elsewhere.
        var seeding = RandomGenerator(seed: 7)
        loss.seed(from: Tensor.concatenate([images, texts], axis: 0), generator: &seeding)
        let seeded = loss(images: images, texts: texts)
        #expect(seeded.loss.scalar < 0.8 * uniform)
        let c = loss.prototypes.value.l2Normalized()
        let onCluster = (0..<128).filter { b in
            let (i, t) = (seeded.imagePrototypes[b], seeded.textPrototypes[b])
            let imageSide = Tensor.matmul(images.slice(axis: 0, b..<b + 1), c.slice(axis: 0, i..<i + 1), transposeB: true).scalar
            let textSide = Tensor.matmul(texts.slice(axis: 0, b..<b + 1), c.slice(axis: 0, t..<t + 1), transposeB: true).scalar
            return imageSide > 0.9 && textSide > 0.9
        }.count
        #expect(onCluster >= 115, "\(onCluster) of 128 pairs coded to prototypes of their cluster")
    }

    @Test func followingMovesEachPrototypeTowardsItsMembers() {
        var generator = RandomGenerator(seed: 11)
        let loss = PrototypeLoss(count: 3, dimension: 4, generator: &generator)
        let before = loss.prototypes.value.l2Normalized()
        let embeddings = Tensor.randomNormal([5, 4], using: &generator)
        let assignments = [0, 2, 0, 7, -1]              // prototype 1 has no members; 7 and −1 are ignored
        loss.follow(embeddings, assignments: assignments, momentum: 0.9)
        // Naive reference in Double.
        let x = embeddings.l2Normalized()
        for k in 0..<3 {
            let members = assignments.indices.filter { assignments[$0] == k }
            var expected = (0..<4).map { Double(before[k, $0]) }
            if !members.isEmpty {
                let mean = (0..<4).map { j in members.map { Double(x[$0, j]) }.reduce(0, +) / Double(members.count) }
                expected = (0..<4).map { 0.9 * expected[$0] + 0.1 * mean[$0] }
                let norm = expected.map { $0 * $0 }.reduce(0, +).squareRoot()
                expected = expected.map { $0 / norm }
            }
            for j in 0..<4 { #expect(abs(Double(loss.prototypes.value[k, j]) - expected[j]) < 1e-6, "prototype \(k)") }
        }
        // Momentum 0 puts a prototype on its members' mean direction.
        loss.follow(embeddings, assignments: [1, 1, 1, 1, 1], momentum: 0)
        let mean = x.mean(axis: 0).l2Normalized()
        #expect(loss.prototypes.value.slice(axis: 0, 1..<2).reshaped([4]).maxAbsoluteDifference(to: mean) < 1e-6)
    }
}
