@testable import AmberModel
import AmberTensor
import AmberTestSupport
import Foundation
import Testing

@Suite("CE-CLIP hard-negative caption losses")
struct HardNegativeCaptionLossTests {
    static let B = 4, K = 3, D = 5
    /// Unit embeddings and a validity pattern with a caption that has no negative at all.
    static func batch(seed: UInt64) -> (images: Tensor, texts: Tensor, negatives: Tensor, valid: [Bool]) {
        var generator = RandomGenerator(seed: seed)
        let images = Tensor.randomNormal([B, D], using: &generator).l2Normalized(axis: -1)
        let texts = Tensor.randomNormal([B, D], using: &generator).l2Normalized(axis: -1)
        let negatives = Tensor.randomNormal([B, K, D], using: &generator).l2Normalized(axis: -1)
        let valid = [true, true, false,  false, true, true,  false, false, false,  true, false, true]
        return (images, texts, negatives, valid)
    }

    static func dot(_ a: Tensor, _ i: Int, _ b: Tensor, _ j: Int) -> Double {
        (0..<D).map { Double(a.scalars[i * D + $0]) * Double(b.scalars[j * D + $0]) }.reduce(0, +)
    }

    /// log Σ eˣ of `terms`, in Double.
    static func logSumExp(_ terms: [Double]) -> Double {
        let peak = terms.max() ?? 0
        return peak + Foundation.log(terms.map { Foundation.exp($0 - peak) }.reduce(0, +))
    }

    /// s(I_b, T_b^k) and s(T_b, T_b^k) in Double.
    static func negative(_ a: Tensor, _ b: Int, _ negatives: Tensor, _ k: Int) -> Double {
        (0..<D).map { Double(a.scalars[b * D + $0]) * Double(negatives.scalars[(b * K + k) * D + $0]) }.reduce(0, +)
    }

    @Test func contrastiveMatchesTheFormulaAndItsGradient() {
        let (images, texts, negatives, valid) = Self.batch(seed: 1)
        let loss = HardNegativeCaptionLoss(temperature: 0.1)
        var expected = 0.0
        for b in 0..<Self.B {
            var terms = (0..<Self.B).map { Self.dot(images, b, texts, $0) / 0.1 }
            for k in 0..<Self.K where valid[b * Self.K + k] { terms.append(Self.negative(images, b, negatives, k) / 0.1) }
            expected += -(Self.dot(images, b, texts, b) / 0.1 - Self.logSumExp(terms))
        }
        expected /= Double(Self.B)
        #expect(abs(Double(loss.contrastive(images: images, texts: texts, negatives: negatives, valid: valid).scalar) - expected) < 1e-4)
        expectGradients([images, texts, negatives], epsilon: 1e-3, absoluteTolerance: 5e-3) {
            loss.contrastive(images: $0[0], texts: $0[1], negatives: $0[2], valid: valid)
        }
    }

    @Test func thresholdsAreTheClampedMeanGapPerType() {
        let (images, texts, negatives, valid) = Self.batch(seed: 2)
        let thresholds = HardNegativeCaptionLoss.thresholds(images: images, texts: texts, negatives: negatives, valid: valid)
        for k in 0..<Self.K {
            let gaps = (0..<Self.B).filter { valid[$0 * Self.K + k] }.map { Self.dot(images, $0, texts, $0) - Self.negative(images, $0, negatives, k) }
            let mean = gaps.isEmpty ? 0 : gaps.reduce(0, +) / Double(gaps.count)
            #expect(abs(Double(thresholds[k]) - min(max(mean, 0), 10)) < 1e-5, "type \(k)")
        }
        // A type nobody has: 0. Far-apart pairs: clamped at 10 at most (cosines keep it ≤ 2 here, so ≥ 0 is the bound hit).
        let none = HardNegativeCaptionLoss.thresholds(images: images, texts: texts, negatives: negatives, valid: [Bool](repeating: false, count: Self.B * Self.K))
        #expect(none == [0, 0, 0])
        #expect(HardNegativeCaptionLoss.thresholds(images: images, texts: images * -1, negatives: negatives, valid: valid).allSatisfy { $0 == 0 },
                "a negative gap is clamped to 0")
    }

    @Test func rankMatchesTheFormulaAndItsGradient() {
        let (images, texts, negatives, valid) = Self.batch(seed: 3)
        let loss = HardNegativeCaptionLoss()
        let thresholds: [Float] = [0.3, 0.05, 0.5]
        var total = 0.0, count = 0
        for b in 0..<Self.B {
            for k in 0..<Self.K where valid[b * Self.K + k] {
                total += max(0, Double(thresholds[k]) + Self.negative(images, b, negatives, k) - Self.dot(images, b, texts, b))
                count += 1
            }
        }
        #expect(abs(Double(loss.rank(images: images, texts: texts, negatives: negatives, valid: valid, thresholds: thresholds).scalar) - total / Double(count)) < 1e-5)
        expectGradients([images, texts, negatives], epsilon: 1e-3, absoluteTolerance: 5e-3) {
            loss.rank(images: $0[0], texts: $0[1], negatives: $0[2], valid: valid, thresholds: thresholds)
        }
        #expect(loss.rank(images: images, texts: texts, negatives: negatives, valid: [Bool](repeating: false, count: 12), thresholds: thresholds).scalar == 0)
    }

    @Test func intraModalMatchesThePapersDefinitionAndItsGradient() {
        let (images, texts, negatives, valid) = Self.batch(seed: 4)
        let loss = HardNegativeCaptionLoss(temperature: 0.2)
        var expected = 0.0
        for b in 0..<Self.B {
            let positive = Self.dot(images, b, texts, b) / 0.2
            var terms = [positive]
            for k in 0..<Self.K where valid[b * Self.K + k] { terms.append(Self.negative(texts, b, negatives, k) / 0.2) }
            expected += -(positive - Self.logSumExp(terms))
        }
        expected /= Double(Self.B)
        #expect(abs(Double(loss.intraModal(images: images, texts: texts, negatives: negatives, valid: valid).scalar) - expected) < 1e-4)
        expectGradients([images, texts, negatives], epsilon: 1e-3, absoluteTolerance: 5e-3) {
            loss.intraModal(images: $0[0], texts: $0[1], negatives: $0[2], valid: valid)
        }
    }

    @Test func invalidNegativesChangeNothing() {
        let (images, texts, negatives, valid) = Self.batch(seed: 5)
        var scrambled = negatives.scalars
        for b in 0..<Self.B { for k in 0..<Self.K where !valid[b * Self.K + k] { for d in 0..<Self.D { scrambled[(b * Self.K + k) * Self.D + d] = 7 } } }
        let other = Tensor(shape: negatives.shape, scalars: scrambled)
        let loss = HardNegativeCaptionLoss()
        let thresholds = HardNegativeCaptionLoss.thresholds(images: images, texts: texts, negatives: negatives, valid: valid)
        #expect(thresholds == HardNegativeCaptionLoss.thresholds(images: images, texts: texts, negatives: other, valid: valid))
        #expect(loss.contrastive(images: images, texts: texts, negatives: negatives, valid: valid).scalar
                == loss.contrastive(images: images, texts: texts, negatives: other, valid: valid).scalar)
        #expect(loss.rank(images: images, texts: texts, negatives: negatives, valid: valid, thresholds: thresholds).scalar
                == loss.rank(images: images, texts: texts, negatives: other, valid: valid, thresholds: thresholds).scalar)
        #expect(loss.intraModal(images: images, texts: texts, negatives: negatives, valid: valid).scalar
                == loss.intraModal(images: images, texts: texts, negatives: other, valid: valid).scalar)
    }
}
