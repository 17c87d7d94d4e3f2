import AmberCatalog
import AmberTensor
import AmberTrain
import Testing

/// The README's example, kept compiling and meaningful.
@Test func readmeExampleTrainsAndLowersItsLoss() {
    var generator = RandomGenerator(seed: 7)
    let weight = Parameter(Tensor.randomNormal([384, 1024], standardDeviation: 0.02, using: &generator), name: "w")
    let optimizer = AdamW(parameters: [weight])
    let features = Tensor.randomNormal([128, 384], using: &generator)
    var losses: [Float] = []
    for _ in 0..<5 {
        optimizer.zeroGradients()
        let embeddings = Tensor.matmul(features, weight.tensor).l2Normalized(axis: -1)    // [128, 1024]
        let loss = Tensor.matmul(embeddings, embeddings, transposeB: true).logSoftmax(axis: -1).mean() * -1
        loss.backward()
        clipGradientNorm([weight], maximumNorm: 2)
        optimizer.step(learningRate: 5e-4)
        losses.append(loss.scalar)
    }
    #expect(weight.gradient != nil)
    #expect(losses.last! < losses.first!)
}
