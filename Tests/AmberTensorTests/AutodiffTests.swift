@testable import AmberTensor
import AmberTestSupport
import Testing

@Suite("Autodiff")
struct AutodiffTests {
    @Test func gradientCheckerCatchesAWrongPullback() {
        // An op whose pullback is off by 10 %: the checker must flag it.
        let x = randomTensor([3], seed: 1)
        let report = gradientCheck([x]) { inputs in
            let input = inputs[0]
            let result = (input.detached * 2)
            return Tensor.record(result, inputs: [input]) { g in [g * 2.2] }
        }
        #expect(!report.passed)
        #expect(report.worstError > 5)
    }

    @Test func gradientsAccumulateAcrossBackwardCallsUntilZeroed() {
        let p = Parameter(Tensor(shape: [2], scalars: [1, 2]), name: "p")
        (p.tensor * 3).sum().backward()
        expectClose(p.gradient!, [3, 3])
        (p.tensor.squared()).sum().backward()
        expectClose(p.gradient!, [5, 7])
        p.zeroGradient()
        #expect(p.gradient == nil)
    }

    @Test func aParameterUsedTwiceGetsBothContributions() {
        let p = Parameter(Tensor(shape: [2], scalars: [1, -2]))
        let a = p.tensor, b = p.tensor
        (a * b + a).sum().backward()
        expectClose(p.gradient!, [3, -3])
    }

    @Test func noGradScopeRecordsNothing() {
        let p = Parameter(Tensor(shape: [2], scalars: [1, 2]))
        let y = withoutGradients { (p.tensor * 2).sum() }
        #expect(!y.requiresGradient)
        y.backward()
        #expect(p.gradient == nil)
        let z = (p.tensor * 2).sum()
        #expect(z.requiresGradient)
        #expect(!z.detached.requiresGradient)
    }

    @Test func constantsNeedNoGradient() {
        let c = Tensor(shape: [2], scalars: [1, 2])
        #expect(!(c * c).requiresGradient)
        (c * c).sum().backward()
    }

    @Test func intermediatesAreFreedAfterBackward() {
        let p = Parameter(randomTensor([64], seed: 1))
        weak var intermediate: TensorStorage?
        let loss: Tensor = {
            let hidden = p.tensor.tanh() * 3
            intermediate = hidden.storage
            return (hidden * hidden).sum()
        }()
        #expect(intermediate != nil, "the graph holds the intermediate before backward")
        loss.backward()
        #expect(intermediate == nil, "backward must release what the tape captured")
        #expect(p.gradient != nil)
        _ = loss
    }

    @Test func deepChainsDoNotOverflowTheStack() {
        let p = Parameter(Tensor(shape: [1], scalars: [0.5]))
        var y = p.tensor
        for _ in 0..<20_000 { y = y * 1.0 }
        y.sum().backward()
        expectClose(p.gradient!, [1])
    }

    @Test func backwardWithSeedMatchesWeightedSum() {
        let x = randomTensor([2, 3], seed: 3)
        let seed = randomTensor([2, 3], seed: 4)
        let p1 = Parameter(x), p2 = Parameter(x)
        p1.tensor.tanh().backward(seed: seed)
        (p2.tensor.tanh() * seed).sum().backward()
        #expect(p1.gradient!.maxAbsoluteDifference(to: p2.gradient!) < 1e-6)
    }

    @Test func copyOnWriteKeepsValueSemantics() {
        let a = Tensor(shape: [3], scalars: [1, 2, 3])
        var b = a
        b[1] = 9
        #expect(a.scalars == [1, 2, 3])
        #expect(b.scalars == [1, 9, 3])
        var c = Tensor(shape: [3], scalars: [1, 2, 3])
        let addressBefore = c.storage.base
        c[0] = 5
        #expect(c.storage.base == addressBefore, "a uniquely held tensor is written in place")
    }

    @Test func backwardFromNonScalarIsRejected() async {
        await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let p = Parameter(Tensor.ones([2]))
            (p.tensor * 2).backward()
        }.map { result in
            #expect(String(decoding: result.standardErrorContent, as: UTF8.self).contains("backward() needs a scalar, shape is [2]"))
        }
    }
}
