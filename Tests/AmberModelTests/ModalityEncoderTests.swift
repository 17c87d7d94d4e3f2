@testable import AmberModel
import AmberCatalog
import AmberTensor
import AmberTestSupport
import Foundation
import Testing

@Suite("Modality encoder")
struct ModalityEncoderTests {
    static func setUp(fusion: ModalityEncoder.Fusion = .fused, temperature: Float = 3, normalizedGate: Bool = false) -> (ModalityEncoder, EncoderInput) {
        var generator = RandomGenerator(seed: 7)
        var configuration = ModalityEncoder.Configuration()
        configuration.normalizedGateInput = normalizedGate
        configuration.jointDimension = 5
        configuration.attentionTemperature = temperature
        configuration.fusion = fusion
        let encoder = ModalityEncoder(name: "t", globalDimension: 3, fragmentDimension: 4, configuration: configuration, generator: &generator)
        // Biases non-zero so they are exercised.
        for p in encoder.parameters where p.name.hasSuffix("bias") {
            p.assign(Tensor.randomUniform(p.shape, lower: -0.3, upper: 0.3, using: &generator))
        }
        let input = EncoderInput(global: Tensor.randomNormal([2, 3], using: &generator),
                                 fragments: Tensor.randomNormal([2, 4, 4], using: &generator),
                                 fragmentCounts: [4, 3])
        return (encoder, input)
    }

    /// The encoder's formula (its doc comment) in Double loops.
    static func reference(_ encoder: ModalityEncoder, _ input: EncoderInput) -> [[Double]] {
        func linear(_ layer: Linear, _ x: [Double]) -> [Double] {
            let w = layer.weight.value.scalars.map(Double.init), b = layer.bias.value.scalars.map(Double.init)
            let outputs = b.count
            return (0..<outputs).map { o in b[o] + x.indices.reduce(0.0) { $0 + x[$1] * w[$1 * outputs + o] } }
        }
        func norm(_ v: [Double]) -> [Double] { let n = v.map { $0 * $0 }.reduce(0, +).squareRoot(); return v.map { $0 / max(n, 1e-12) } }
        let c = encoder.configuration
        return (0..<input.count).map { b in
            let g = (0..<3).map { Double(input.global[b, $0]) }
            let h = linear(encoder.globalProjection, g)
            let frags = (0..<input.fragmentCounts[b]).map { i in linear(encoder.fragmentProjection, (0..<4).map { Double(input.fragments[b, i, $0]) }) }
            let maxTwo = (0..<h.count).map { d -> Double in let top = frags.map { $0[d] }.sorted(by: >); return (top[0] + top[1]) / 2 }
            let hn = norm(h)
            let logits = frags.map { f in Double(c.attentionTemperature) * zip(norm(f), hn).map { $0 * $1 }.reduce(0, +) }
            let peak = logits.max()!
            let weights = logits.map { Foundation.exp($0 - peak) }
            let total = weights.reduce(0, +)
            let attended = (0..<h.count).map { d in frags.indices.reduce(0.0) { $0 + weights[$1] / total * frags[$1][d] } }
            let local = (0..<h.count).map { Double(c.maxPoolWeight) * maxTwo[$0] + Double(1 - c.maxPoolWeight) * attended[$0] }
            switch c.fusion {
            case .localOnly: return norm(local)
            case .globalOnly: return norm(h)
            case .fused:
                let ln = norm(local)
                let gateInput = c.normalizedGateInput ? ln + hn : local + h
                let z = linear(encoder.gate, gateInput).map { 1 / (1 + Foundation.exp(-$0)) }
                return norm((0..<h.count).map { z[$0] * ln[$0] + (1 - z[$0]) * hn[$0] })
            }
        }
    }

    @Test("fused embedding matches the formula", arguments: [ModalityEncoder.Fusion.fused, .localOnly, .globalOnly])
    func matchesReference(fusion: ModalityEncoder.Fusion) {
        let (encoder, input) = Self.setUp(fusion: fusion)
        let encoded = withoutGradients { encoder(input) }
        #expect(encoded.fused.shape == [2, 5])
        let expected = Self.reference(encoder, input)
        for b in 0..<2 { for d in 0..<5 { #expect(abs(Double(encoded.fused[b, d]) - expected[b][d]) < 1e-5) } }
    }

    @Test func theScaleFreeGateMatchesItsFormulaAndIgnoresScale() {
        let (encoder, input) = Self.setUp(normalizedGate: true)
        let encoded = withoutGradients { encoder(input) }
        let expected = Self.reference(encoder, input)
        for b in 0..<2 { for d in 0..<5 { #expect(abs(Double(encoded.fused[b, d]) - expected[b][d]) < 1e-5) } }
        // Scaling the projections (weights and biases) scales l and h, and changes nothing.
        let (plain, _) = Self.setUp(normalizedGate: false)
        for encoder in [encoder, plain] {
            let before = withoutGradients { encoder(input).fused }
            for p in encoder.fragmentProjection.parameters + encoder.globalProjection.parameters { p.assign(p.value * 10) }
            let difference = withoutGradients { encoder(input).fused.maxAbsoluteDifference(to: before) }
            if encoder.configuration.normalizedGateInput { #expect(difference < 1e-5) } else { #expect(difference > 1e-3) }
        }
        let report = gradientCheck([input.global, input.fragments], epsilon: 1e-3, absoluteTolerance: 3e-3) { x in
            encoder(EncoderInput(global: x[0], fragments: x[1], fragmentCounts: input.fragmentCounts)).fused
        }
        #expect(report.passed, "\(report.worstLocation)")
    }

    @Test func paddingDoesNotLeakIn() {
        let (encoder, input) = Self.setUp()
        var changed = input
        changed.fragments[1, 3, 0] = 1000      // item 1 has 3 fragments: row 3 is padding
        #expect(withoutGradients { encoder(changed).fused.maxAbsoluteDifference(to: encoder(input).fused) } == 0)
    }

    @Test func gradientsMatchFiniteDifferences() {
        let (encoder, input) = Self.setUp()
        // With respect to the inputs (every op's backward on the path)…
        let report = gradientCheck([input.global, input.fragments], epsilon: 1e-3, absoluteTolerance: 3e-3) { x in
            encoder(EncoderInput(global: x[0], fragments: x[1], fragmentCounts: input.fragmentCounts)).fused
        }
        #expect(report.passed, "\(report.worstLocation)")
        // …and with respect to every parameter, on sampled elements.
        var generator = RandomGenerator(seed: 3)
        let weights = Tensor.randomUniform([2, 5], lower: -1, upper: 1, using: &generator)
        func loss() -> Double { Double(withoutGradients { (encoder(input).fused * weights).sum().scalar }) }
        for p in encoder.parameters { p.zeroGradient() }
        (encoder(input).fused * weights).sum().backward()
        for p in encoder.parameters {
            let analytic = p.gradient!
            for _ in 0..<4 {
                let element = generator.nextInt(below: p.value.count)
                let original = p.value
                var plus = original, minus = original
                plus.withUnsafeMutableBufferPointer { $0[element] += 1e-3 }
                minus.withUnsafeMutableBufferPointer { $0[element] -= 1e-3 }
                p.assign(plus); let up = loss()
                p.assign(minus); let down = loss()
                p.assign(original)
                let numeric = (up - down) / 2e-3
                let a = Double(analytic.scalars[element])
                #expect(abs(a - numeric) <= 3e-3 + 2e-2 * abs(numeric), "\(p.name)[\(element)]: analytic \(a), numeric \(numeric)")
            }
        }
    }

    @Test func fragmentDropoutIsSeededAndKeepsTwo() {
        var (encoder, input) = Self.setUp()
        var configuration = encoder.configuration
        configuration.fragmentDropout = 0.9
        var generator = RandomGenerator(seed: 7)
        encoder = ModalityEncoder(name: "t", globalDimension: 3, fragmentDimension: 4, configuration: configuration, generator: &generator)
        var a = RandomGenerator(seed: 1), b = RandomGenerator(seed: 1)
        let first = withoutGradients { encoder(input, dropoutUsing: &a).fused }
        let second = withoutGradients { encoder(input, dropoutUsing: &b).fused }
        #expect(first.scalars == second.scalars)
        #expect(first.isFinite)
        #expect(first.maxAbsoluteDifference(to: withoutGradients { encoder(input).fused }) > 0)
        input = EncoderInput(global: input.global, fragments: input.fragments, fragmentCounts: [2, 2])
        #expect(withoutGradients { encoder(input, dropoutUsing: &a).fused.scalars == encoder(input).fused.scalars },
                "with two fragments nothing can be dropped")
    }
}

@Suite("Warm start from CCA")
struct WarmStartTests {
    @Test func globalPathStartsAtTheCCAEmbedding() throws {
        var generator = RandomGenerator(seed: 5)
        let n = 60
        let z = Tensor.randomNormal([n, 3], using: &generator)
        let x = Tensor.matmul(z, Tensor.randomNormal([3, 6], using: &generator)) + Tensor.randomNormal([n, 6], standardDeviation: 0.2, using: &generator)
        let y = Tensor.matmul(z, Tensor.randomNormal([3, 5], using: &generator)) + Tensor.randomNormal([n, 5], standardDeviation: 0.2, using: &generator)
        let cca = try LinearCCA.fit(x: x, y: y, configuration: .init(regularization: 0.1, components: 4, power: 1))
        var configuration = ModalityEncoder.Configuration()
        configuration.jointDimension = 4
        configuration.fusion = .globalOnly
        let model = MatchingModel(imageGlobal: 6, imageFragment: 6, textGlobal: 5, textFragment: 5, configuration: configuration, generator: &generator)
        model.warmStart(from: cca)
        let images = EncoderInput(global: x, fragments: Tensor.concatenate([x.reshaped([n, 1, 6]), x.reshaped([n, 1, 6])], axis: 1),
                                  fragmentCounts: Array(repeating: 2, count: n))
        let texts = EncoderInput(global: y, fragments: Tensor.concatenate([y.reshaped([n, 1, 5]), y.reshaped([n, 1, 5])], axis: 1),
                                 fragmentCounts: Array(repeating: 2, count: n))
        withoutGradients {
            #expect(model.imageEncoder(images).fused.maxAbsoluteDifference(to: cca.embedX(x)) < 1e-4)
            #expect(model.textEncoder(texts).fused.maxAbsoluteDifference(to: cca.embedY(y)) < 1e-4)
            // Fragments equal to the global vector: the fragment path starts in the same space.
            #expect(model.imageEncoder(images).local.l2Normalized().maxAbsoluteDifference(to: cca.embedX(x)) < 1e-3)
        }
    }
}
