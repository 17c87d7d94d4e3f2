import AmberTensor

// Shape legend: `B` batch, `Din` input features, `Dout` output features.

/// A fully connected layer `y = x W + b`, `W` `[Din, Dout]` (Xavier-uniform initialised),
/// `b` `[Dout]` zero.
public struct Linear: Sendable {
    public let weight: Parameter
    public let bias: Parameter

    public init(inputs: Int, outputs: Int, name: String, generator: inout RandomGenerator) {
        let limit = (6 / Float(inputs + outputs)).squareRoot()
        weight = Parameter(Tensor.randomUniform([inputs, outputs], lower: -limit, upper: limit, using: &generator), name: name + ".weight")
        bias = Parameter(Tensor.zeros([outputs]), name: name + ".bias")
    }

    /// `x` `[…, Din]` → `[…, Dout]`.
    public func callAsFunction(_ x: Tensor) -> Tensor {
        Tensor.matmul(x, weight.tensor) + bias.tensor
    }

    public var parameters: [Parameter] { [weight, bias] }
}
