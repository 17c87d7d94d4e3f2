import AmberCatalog
import AmberTensor
import AmberTrain
import Testing

@Suite("Optimizers and schedules")
struct OptimizerTests {
    @Test func adamWMatchesHandComputedSteps() {
        // θ₀ = 1, g = 0.5 then −0.25, η = 0.1, λ = 0.01, β = (0.9, 0.999):
        // step 1: θ = 1·(1 − 0.001) − 0.1 · (0.05/0.1) / √(0.00025/0.001) = 0.899
        // step 2: m = 0.02, v = 0.00031225, m̂ = 0.105263, v̂ = 0.156203
        //         θ = 0.899 · 0.999 − 0.1 · 0.105263 / 0.395225 = 0.871467
        let p = Parameter(Tensor(shape: [1], scalars: [1]), name: "theta")
        let optimizer = AdamW(parameters: [p], configuration: .init(weightDecay: 0.01))
        p.setGradient(Tensor(shape: [1], scalars: [0.5]))
        optimizer.step(learningRate: 0.1)
        #expect(abs(p.value.scalar - 0.899) < 1e-6)
        p.setGradient(Tensor(shape: [1], scalars: [-0.25]))
        optimizer.step(learningRate: 0.1)
        #expect(abs(p.value.scalar - 0.871_467_4) < 1e-5)
        #expect(optimizer.stepCount == 2)
    }

    @Test func adamWSkipsParametersWithoutGradientsAndRestoresState() throws {
        let a = Parameter(Tensor(shape: [2], scalars: [1, 2]), name: "a")
        let b = Parameter(Tensor(shape: [1], scalars: [3]), name: "b")
        let optimizer = AdamW(parameters: [a, b])
        a.setGradient(Tensor(shape: [2], scalars: [0.1, -0.2]))
        optimizer.step(learningRate: 0.01)
        #expect(b.value.scalar == 3)
        #expect(a.value.scalars != [1, 2])

        // Restoring the state into a fresh optimizer continues identically.
        let a2 = Parameter(a.value, name: "a"), b2 = Parameter(b.value, name: "b")
        let resumed = AdamW(parameters: [a2, b2])
        try resumed.loadState(optimizer.stateTensors())
        #expect(resumed.stepCount == 1)
        for p in [a, a2] { p.setGradient(Tensor(shape: [2], scalars: [0.3, 0.1])) }
        optimizer.step(learningRate: 0.01)
        resumed.step(learningRate: 0.01)
        #expect(a.value.scalars == a2.value.scalars)

        let wrong = AdamW(parameters: [Parameter(Tensor.zeros([3]), name: "a"), b2])
        #expect(throws: OptimizerStateError.self) { try wrong.loadState(optimizer.stateTensors()) }
    }

    @Test func sgdWithMomentumMatchesHandComputedSteps() {
        // b₁ = g₁ = 1 → θ = 1 − 0.1 = 0.9;  b₂ = 0.9·1 + 0.5 = 1.4 → θ = 0.9 − 0.14 = 0.76
        let p = Parameter(Tensor(shape: [1], scalars: [1]), name: "theta")
        let optimizer = SGD(parameters: [p], momentum: 0.9)
        p.setGradient(Tensor(shape: [1], scalars: [1]))
        optimizer.step(learningRate: 0.1)
        #expect(abs(p.value.scalar - 0.9) < 1e-6)
        p.setGradient(Tensor(shape: [1], scalars: [0.5]))
        optimizer.step(learningRate: 0.1)
        #expect(abs(p.value.scalar - 0.76) < 1e-6)
        // With weight decay 0.1: g = 1 + 0.1·2 = 1.2 → θ = 2 − 0.12 = 1.88.
        let q = Parameter(Tensor(shape: [1], scalars: [2]), name: "q")
        let decayed = SGD(parameters: [q], momentum: 0, weightDecay: 0.1)
        q.setGradient(Tensor(shape: [1], scalars: [1]))
        decayed.step(learningRate: 0.1)
        #expect(abs(q.value.scalar - 1.88) < 1e-6)
    }

    @Test func clippingScalesToTheGlobalNorm() {
        let a = Parameter(Tensor.zeros([2]), name: "a"), b = Parameter(Tensor.zeros([1]), name: "b")
        a.setGradient(Tensor(shape: [2], scalars: [3, 0]))
        b.setGradient(Tensor(shape: [1], scalars: [4]))
        let norm = clipGradientNorm([a, b], maximumNorm: 2)
        #expect(abs(norm - 5) < 1e-6)
        #expect(abs(a.gradient![0] - 1.2) < 1e-5 && abs(b.gradient![0] - 1.6) < 1e-5)
        let untouched = clipGradientNorm([a, b], maximumNorm: 10)
        #expect(abs(untouched - 2) < 1e-4)
        #expect(abs(a.gradient![0] - 1.2) < 1e-5)
    }

    @Test func warmupStepDecaySchedule() {
        let schedule = WarmupStepDecay(base: 1e-3, warmupSteps: 4, decayEvery: 10, factor: 0.1)
        let rates = [0, 1, 3, 4, 13, 14, 24].map { schedule.learningRate(atStep: $0) }
        let expected: [Float] = [2.5e-4, 5e-4, 1e-3, 1e-3, 1e-3, 1e-4, 1e-5]
        for (rate, value) in zip(rates, expected) { #expect(abs(rate - value) < 1e-9) }
        #expect(WarmupStepDecay(base: 0.5).learningRate(atStep: 1000) == 0.5)
    }

    @Test func warmupCosineSchedule() {
        let schedule = WarmupCosine(base: 1, warmupSteps: 2, totalSteps: 12, minimum: 0.1)
        #expect(abs(schedule.learningRate(atStep: 0) - 0.5) < 1e-6)
        #expect(abs(schedule.learningRate(atStep: 2) - 1) < 1e-6)
        #expect(abs(schedule.learningRate(atStep: 7) - 0.55) < 1e-6)     // halfway: 0.1 + 0.45
        #expect(abs(schedule.learningRate(atStep: 12) - 0.1) < 1e-6)
        #expect(abs(schedule.learningRate(atStep: 50) - 0.1) < 1e-6)
    }

    @Test func exponentialMovingAverageMovesTargetsTowardsSources() {
        let target = Parameter(Tensor(shape: [2], scalars: [0, 10]), name: "k")
        let source = Parameter(Tensor(shape: [2], scalars: [1, 0]), name: "q")
        ExponentialMovingAverage(momentum: 0.9).update(targets: [target], sources: [source])
        #expect(abs(target.value[0] - 0.1) < 1e-6 && abs(target.value[1] - 9) < 1e-6)
        #expect(source.value.scalars == [1, 0])
    }

    @Test func adamWFitsALinearRegression() {
        // y = 3x − 1 from 64 noisy points; AdamW must recover both within 0.05.
        var generator = RandomGenerator(seed: 1)
        let x = Tensor.randomUniform([64, 1], lower: -1, upper: 1, using: &generator)
        let y = x * 3 - 1 + Tensor.randomNormal([64, 1], standardDeviation: 0.01, using: &generator)
        let w = Parameter(Tensor.zeros([1, 1]), name: "w"), b = Parameter(Tensor.zeros([1]), name: "b")
        let optimizer = AdamW(parameters: [w, b], configuration: .init(weightDecay: 0))
        for _ in 0..<400 {
            optimizer.zeroGradients()
            let prediction = Tensor.matmul(x, w.tensor) + b.tensor
            (prediction - y).squared().mean().backward()
            optimizer.step(learningRate: 0.05)
        }
        #expect(abs(w.value.scalar - 3) < 0.05)
        #expect(abs(b.value.scalar + 1) < 0.05)
    }
}
