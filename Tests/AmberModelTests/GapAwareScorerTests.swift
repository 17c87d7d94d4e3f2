@testable import AmberModel
import AmberTensor
import AmberTestSupport
import Foundation
import Testing

@Suite("GARE: gap-aware increments, scores and regularisers")
struct GapAwareScorerTests {
    static let T = 2, I = 3, n = 4, D = 5
    static let counts = [4, 2, 3]

    /// A scorer with every parameter random (the head too, so Δ ≠ 0).
    static func scorer(seed: UInt64 = 1, width: Int = 3) -> GapAwareScorer {
        var generator = RandomGenerator(seed: seed)
        let scorer = GapAwareScorer(dimension: D, configuration: .init(width: width, poolingTemperature: 0.5, dropout: 0.3), generator: &generator)
        for (k, parameter) in scorer.parameters.enumerated() {
            parameter.assign(randomTensor(parameter.shape, seed: seed &+ UInt64(k) &+ 100, lower: -0.6, upper: 0.6)
                             + (parameter.name.hasSuffix("gain") ? 1 : 0))
        }
        return scorer
    }

    static func inputs(seed: UInt64 = 2) -> (texts: Tensor, fragments: Tensor) {
        var generator = RandomGenerator(seed: seed)
        return (Tensor.randomNormal([T, D], using: &generator).l2Normalized(axis: -1), Tensor.randomNormal([I, n, D], using: &generator))
    }

    // MARK: A naive reference in Double

    typealias Vector = [Double]
    static func values(_ t: Tensor) -> [Double] { t.scalars.map(Double.init) }
    static func matrix(_ p: Parameter) -> [[Double]] {
        let (r, c) = (p.shape[0], p.shape[1])
        return (0..<r).map { i in (0..<c).map { Double(p.value.scalars[i * c + $0]) } }
    }
    static func linear(_ x: Vector, _ layer: Linear) -> Vector {
        let w = matrix(layer.weight), b = values(layer.bias.value)
        return b.indices.map { j in b[j] + x.indices.map { x[$0] * w[$0][j] }.reduce(0, +) }
    }
    static func layerNorm(_ x: Vector, _ gain: Parameter, _ bias: Parameter) -> Vector {
        let mean = x.reduce(0, +) / Double(x.count)
        let variance = x.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(x.count)
        let g = values(gain.value), b = values(bias.value)
        return x.indices.map { g[$0] * (x[$0] - mean) / (variance + 1e-5).squareRoot() + b[$0] }
    }
    static func softmax(_ x: Vector) -> Vector {
        let peak = x.max() ?? 0
        let e = x.map { Foundation.exp($0 - peak) }
        let total = e.reduce(0, +)
        return e.map { $0 / total }
    }
    static func dot(_ a: Vector, _ b: Vector) -> Double { zip(a, b).map { $0 * $1 }.reduce(0, +) }
    static func unit(_ a: Vector) -> Vector { let norm = dot(a, a).squareRoot(); return a.map { $0 / norm } }

    /// s_ij and Δ_ij by the definition, pair by pair.
    static func reference(_ scorer: GapAwareScorer, texts: Tensor, fragments: Tensor) -> (scores: [[Double]], increments: [[Vector]]) {
        let t = (0..<T).map { i in (0..<D).map { Double(texts.scalars[i * D + $0]) } }
        let frames = (0..<I).map { j in (0..<counts[j]).map { f in (0..<D).map { Double(fragments.scalars[(j * n + f) * D + $0]) } } }
        let d = scorer.configuration.width
        var scores = [[Double]](repeating: [Double](repeating: 0, count: I), count: T)
        var increments = [[Vector]](repeating: [Vector](repeating: [], count: I), count: T)
        for i in 0..<T {
            for j in 0..<I {
                let mean = (0..<D).map { k in frames[j].map { $0[k] }.reduce(0, +) / Double(frames[j].count) }
                let gap = (0..<D).map { mean[$0] - t[i][$0] }
                let q = linear(layerNorm(gap, scorer.normGain, scorer.normBias), scorer.query)
                let context = frames[j].map { layerNorm($0, scorer.normGain, scorer.normBias) }
                let keys = context.map { linear($0, scorer.key) }, vals = context.map { linear($0, scorer.value) }
                let a = softmax(keys.map { dot(q, $0) / Double(d).squareRoot() })
                let attended = (0..<d).map { k in zip(a, vals).map { $0 * $1[k] }.reduce(0, +) }
                let x = layerNorm(linear(attended, scorer.output), scorer.attentionNormGain, scorer.attentionNormBias)
                let r = linear(x, scorer.residual)
                let z = layerNorm(zip(x, r).map { $0 + $1 }, scorer.outputNormGain, scorer.outputNormBias)
                let delta = linear(z, scorer.head)
                let unitFrames = frames[j].map(unit)
                let w = softmax(unitFrames.map { dot(t[i], $0) / Double(scorer.configuration.poolingTemperature) })
                let pooled = (0..<D).map { k in zip(w, unitFrames).map { $0 * $1[k] }.reduce(0, +) }
                scores[i][j] = dot(unit(zip(t[i], delta).map { $0 + $1 }), unit(pooled))
                increments[i][j] = delta
            }
        }
        return (scores, increments)
    }

    @Test func scoresAndIncrementsMatchTheDefinitionPairByPair() {
        let scorer = Self.scorer()
        let (texts, fragments) = Self.inputs()
        let result = scorer(texts: texts, fragments: fragments, counts: Self.counts)
        let (scores, increments) = (result.scores, result.increments)
        let (expectedScores, expectedIncrements) = Self.reference(scorer, texts: texts, fragments: fragments)
        // ‖Δ‖² in factored form equals the formed increments' squared norms.
        expectClose(result.squaredNorms, expectedIncrements.flatMap { $0.map { Float(Self.dot($0, $0)) } }, tolerance: 1e-3)
        #expect(scores.shape == [Self.T, Self.I] && increments.shape == [Self.T, Self.I, Self.D])
        expectClose(scores, expectedScores.flatMap { $0.map(Float.init) }, tolerance: 1e-4)
        expectClose(increments, expectedIncrements.flatMap { $0.flatMap { $0.map(Float.init) } }, tolerance: 1e-4)
        // Padding fragments change nothing.
        var padded = fragments
        padded[1, 3, 0] = 50
        padded[2, 3, 4] = -50
        #expect(scorer(texts: texts, fragments: padded, counts: Self.counts).scores.isApproximatelyEqual(to: scores, tolerance: 1e-6))
        // A fresh scorer's head is zero: the score is the text-conditioned pooling alone.
        var generator = RandomGenerator(seed: 3)
        let fresh = GapAwareScorer(dimension: Self.D, configuration: .init(), generator: &generator)
        let untrained = fresh(texts: texts, fragments: fragments, counts: Self.counts)
        #expect(untrained.increments.abs().max(axis: 2).max(axis: 1).max(axis: 0).scalar == 0)
        #expect(untrained.scores.scalars.allSatisfy { $0.isFinite })
    }

    @Test func gradientsOfInputsMatchFiniteDifferences() {
        let scorer = Self.scorer()
        let (texts, fragments) = Self.inputs()
        expectGradients([texts, fragments], epsilon: 1e-3, absoluteTolerance: 3e-3) {
            let result = scorer(texts: $0[0], fragments: $0[1], counts: Self.counts)
            return Tensor.concatenate([result.scores.reshaped([-1]), result.increments.reshaped([-1]) * 0.1, result.squaredNorms.reshaped([-1]) * 0.1], axis: 0)
        }
    }

    /// Every parameter's gradient against central differences of `L = Σ s ⊙ R₁ + Σ Δ ⊙ R₂`.
    @Test func gradientsOfParametersMatchFiniteDifferences() {
        let scorer = Self.scorer(seed: 4)
        let (texts, fragments) = Self.inputs(seed: 5)
        let r1 = randomTensor([Self.T, Self.I], seed: 6), r2 = randomTensor([Self.T, Self.I, Self.D], seed: 7)
        func loss() -> Tensor {
            let result = scorer(texts: texts, fragments: fragments, counts: Self.counts)
            // The factored regularisers' gradients reach the parameters too (the information term's
            // log σ over two texts is too curved for central differences; its factored gradient is
            // checked in regularisersMatchTheirFormulasAndGradients).
            let regularisers = GapAwareLoss().direction(result) + GapAwareLoss(normBound: 100).normSpread(result)
            return (result.scores * r1).sum() + (result.increments * r2).sum() * 0.1 + regularisers * 0.1
        }
        for parameter in scorer.parameters { parameter.zeroGradient() }
        loss().backward()
        var worst: (error: Float, name: String) = (0, "")
        for parameter in scorer.parameters {
            let analytic = parameter.gradient?.scalars ?? [Float](repeating: 0, count: parameter.value.count)
            let original = parameter.value
            for element in stride(from: 0, to: original.count, by: max(1, original.count / 7)) {
                func at(_ delta: Float) -> Double {
                    var changed = original
                    changed.withUnsafeMutableBufferPointer { $0[element] += delta }
                    parameter.assign(changed)
                    return Double(withoutGradients { loss() }.scalar)
                }
                let numeric = Float((at(1e-3) - at(-1e-3)) / 2e-3)
                parameter.assign(original)
                let error = abs(analytic[element] - numeric) / (3e-3 + 1e-2 * abs(numeric))
                if error > worst.error { worst = (error, "\(parameter.name)[\(element)]: \(analytic[element]) vs \(numeric)") }
            }
        }
        #expect(worst.error <= 1, "worst: \(worst.name)")
    }

    @Test func dropoutIsSeededAndOnlyInTraining() {
        let scorer = Self.scorer()
        let (texts, fragments) = Self.inputs()
        var a = RandomGenerator(seed: 9), b = RandomGenerator(seed: 9)
        let first = scorer(texts: texts, fragments: fragments, counts: Self.counts, dropoutUsing: &a).scores
        let second = scorer(texts: texts, fragments: fragments, counts: Self.counts, dropoutUsing: &b).scores
        #expect(first.scalars == second.scalars)
        #expect(!first.isApproximatelyEqual(to: scorer.scores(texts: texts, fragments: fragments, counts: Self.counts), tolerance: 1e-6))
    }

    // MARK: The objective

    @Test func contrastSkipsPairsOfTheSameImageAndMatchesItsFormula() {
        let scores = randomTensor([4, 4], seed: 11, lower: -1, upper: 1)
        let imageIDs = [7, 3, 7, 5]
        let loss = GapAwareLoss(temperature: 0.2)
        let s = Self.values(scores)
        func logSumExp(_ x: [Double]) -> Double { let m = x.max()!; return m + Foundation.log(x.map { Foundation.exp($0 - m) }.reduce(0, +)) }
        var total = 0.0
        for i in 0..<4 {
            let row = (0..<4).filter { $0 == i || imageIDs[$0] != imageIDs[i] }.map { s[i * 4 + $0] / 0.2 }
            let column = (0..<4).filter { $0 == i || imageIDs[$0] != imageIDs[i] }.map { s[$0 * 4 + i] / 0.2 }
            total += (logSumExp(row) - s[i * 4 + i] / 0.2) + (logSumExp(column) - s[i * 4 + i] / 0.2)
        }
        #expect(abs(Double(loss.contrastive(scores: scores, imageIDs: imageIDs).scalar) - total / 8) < 1e-4)
        expectGradients([scores], epsilon: 1e-3) { loss.contrastive(scores: $0[0], imageIDs: imageIDs) }
    }

    @Test func regularisersMatchTheirFormulasAndGradients() {
        let increments = randomTensor([3, 4, 5], seed: 12, lower: -1, upper: 1)
        let x = Self.values(increments)
        func delta(_ i: Int, _ j: Int) -> [Double] { (0..<5).map { x[(i * 4 + j) * 5 + $0] } }
        let loss = GapAwareLoss()
        // Information bottleneck.
        var kl = 0.0
        for j in 0..<4 {
            for k in 0..<5 {
                let values = (0..<3).map { delta($0, j)[k] }
                let mean = values.reduce(0, +) / 3
                let sigma = (values.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / 2).squareRoot() + 1e-6
                kl += 0.5 * (sigma * sigma + mean * mean - 1) - Foundation.log(sigma)
            }
        }
        #expect(abs(Double(loss.information(increments).scalar) - kl / 20) < 1e-4)
        // Direction.
        var direction = 0.0
        for i in 0..<3 {
            var sum = 0.0
            for j in 0..<4 { for k in 0..<4 { sum += Foundation.exp(-2 * (1 - Self.dot(Self.unit(delta(i, j)), Self.unit(delta(i, k))))) } }
            direction += Foundation.log(sum / 16)
        }
        #expect(abs(Double(loss.direction(increments).scalar) - direction / 3) < 1e-4)
        // Norm spread.
        var spread = 0.0
        for i in 0..<3 {
            let norms = (0..<4).map { Self.dot(delta(i, $0), delta(i, $0)).squareRoot() }
            let mean = norms.reduce(0, +) / 4
            spread += norms.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / 3
        }
        let strict = GapAwareLoss(normBound: 100)
        #expect(abs(Double(strict.normSpread(increments).scalar) + spread / 3) < 1e-4)
        #expect(GapAwareLoss(normBound: 1e-6).normSpread(increments).scalar == 0, "off once the spread passes the bound")
        for function in [loss.information, loss.direction, strict.normSpread] as [(Tensor) -> Tensor] {
            expectGradients([increments], epsilon: 1e-3, absoluteTolerance: 3e-3) { function($0[0]) }
        }
        // In factored form (Δ = z W + b, as the scorer gives it) each term equals its formed value,
        // gradients included; the total is the contrast plus the weighted terms.
        let z = randomTensor([3, 4, 2], seed: 15), W = randomTensor([2, 5], seed: 16), b = randomTensor([5], seed: 17, lower: -0.3, upper: 0.3)
        func output(_ z: Tensor, _ W: Tensor, _ b: Tensor) -> GapAwareScorer.Output {
            let formed = Tensor.matmul(z, W) + b
            return GapAwareScorer.Output(scores: randomTensor([3, 4], seed: 18).slice(axis: 1, 0..<3), latent: z, headWeight: W, headBias: b,
                                         squaredNorms: formed.squared().sum(axis: 2))
        }
        let factored = output(z, W, b)
        for (formed, fast) in [(loss.information(factored.increments), loss.information(factored)), (loss.direction(factored.increments), loss.direction(factored)),
                               (strict.normSpread(factored.increments), strict.normSpread(factored))] {
            #expect(abs(formed.scalar - fast.scalar) < 1e-4, "\(formed.scalar) vs \(fast.scalar)")
        }
        expectGradients([z, W, b], epsilon: 1e-3, absoluteTolerance: 3e-3) { loss.direction(output($0[0], $0[1], $0[2])) + loss.information(output($0[0], $0[1], $0[2])) }
        let square = GapAwareScorer.Output(scores: randomTensor([3, 3], seed: 13), latent: z.slice(axis: 1, 0..<3), headWeight: W, headBias: b,
                                           squaredNorms: (Tensor.matmul(z.slice(axis: 1, 0..<3), W) + b).squared().sum(axis: 2))
        let (total, terms) = loss(square, imageIDs: [0, 1, 2])
        #expect(terms.map(\.0) == ["contrast", "information", "direction", "norm"])
        #expect(abs(total.scalar - terms.map(\.1.scalar).reduce(0, +)) < 1e-5)
    }
}
