/// Reverse-mode automatic differentiation.
///
/// Every op whose inputs require gradients records a ``GraphNode``: the input nodes and a
/// pullback closure that maps the gradient of the op's output to the gradients of its inputs.
/// The nodes form the tape. `backward()` on a scalar orders the tape topologically, runs the
/// pullbacks in reverse, adds each leaf's gradient into its ``Parameter``, and then releases
/// every pullback, so the intermediates they captured are freed.
final class GraphNode {
    /// Nodes of the op's inputs, in the order the pullback returns their gradients
    /// (`nil` for inputs that do not require gradients).
    var inputs: [GraphNode?]
    /// Maps the output gradient to one gradient per input (`nil` where none is needed).
    var pullback: ((Tensor) -> [Tensor?])?
    /// Gradient accumulated so far during a backward pass.
    var gradient: Tensor?
    /// For a leaf: the parameter that receives the gradient.
    let parameter: Parameter?

    init(inputs: [GraphNode?], pullback: @escaping (Tensor) -> [Tensor?]) {
        self.inputs = inputs
        self.pullback = pullback
        self.parameter = nil
    }

    init(parameter: Parameter) {
        self.inputs = []
        self.pullback = nil
        self.parameter = parameter
    }

    func accumulate(_ incoming: Tensor) {
        if gradient == nil {
            gradient = incoming
        } else {
            gradient!.addInPlace(incoming)
        }
    }
}

/// Whether ops record the autodiff graph (see ``withoutGradients(_:)``).
public enum GradientRecording {
    @TaskLocal public static var isEnabled: Bool = true
}

/// Runs `body` without recording the autodiff graph (inference, momentum updates, metrics).
public func withoutGradients<R>(_ body: () throws -> R) rethrows -> R {
    try GradientRecording.$isEnabled.withValue(false, operation: body)
}

extension Tensor {
    /// Attaches a graph node to `result` when any of `inputs` requires gradients and recording
    /// is on. `pullback` receives the output gradient and returns one gradient per input.
    @inline(__always)
    static func record(_ result: Tensor, inputs: [Tensor], pullback: @escaping (Tensor) -> [Tensor?]) -> Tensor {
        guard inputs.contains(where: { $0.node != nil }), GradientRecording.isEnabled else { return result }
        var out = result
        out.node = GraphNode(inputs: inputs.map(\.node), pullback: pullback)
        return out
    }

    /// Back-propagates from this scalar: every ``Parameter`` it depends on has the gradient of
    /// this value added to its `gradient`. The graph is released afterwards.
    public func backward() {
        precondition(count == 1, "backward() needs a scalar, shape is \(shape)")
        backward(seed: Tensor(shape: shape, repeating: 1))
    }

    /// Back-propagates `seed` (the gradient of some scalar with respect to this tensor).
    public func backward(seed: Tensor) {
        precondition(seed.shape == shape, "backward(seed:): seed shape \(seed.shape) differs from \(shape)")
        guard let root = node else { return }
        let order = GraphNode.topologicalOrder(from: root)
        root.accumulate(seed.detached)
        withoutGradients {
            for current in order.reversed() {
                guard let gradient = current.gradient else {
                    current.release()
                    continue
                }
                if let parameter = current.parameter {
                    parameter.accumulateGradient(gradient)
                } else if let pullback = current.pullback {
                    let inputGradients = pullback(gradient)
                    precondition(inputGradients.count == current.inputs.count,
                                 "pullback returned \(inputGradients.count) gradients for \(current.inputs.count) inputs")
                    for (input, inputGradient) in zip(current.inputs, inputGradients) {
                        if let input, let inputGradient { input.accumulate(inputGradient) }
                    }
                }
                current.release()
            }
        }
    }
}

extension GraphNode {
    /// Frees the pullback (and everything it captured) and the gradient.
    func release() {
        pullback = nil
        inputs = []
        gradient = nil
    }

    /// Nodes reachable from `root`, each after all of its inputs (iterative depth-first search).
    static func topologicalOrder(from root: GraphNode) -> [GraphNode] {
        var order: [GraphNode] = []
        var visited = Set<ObjectIdentifier>()
        var stack: [(GraphNode, Int)] = [(root, 0)]
        visited.insert(ObjectIdentifier(root))
        while let (current, next) = stack.popLast() {
            if next < current.inputs.count {
                stack.append((current, next + 1))
                if let child = current.inputs[next], visited.insert(ObjectIdentifier(child)).inserted {
                    stack.append((child, 0))
                }
            } else {
                order.append(current)
            }
        }
        return order
    }
}

/// A trainable tensor: its value, and the gradient accumulated by `backward()` calls.
///
/// A parameter is confined to one task at a time (the trainer's); it is a class so that layers,
/// optimizers and checkpoints share it.
public final class Parameter: @unchecked Sendable {
    /// Stable name used in checkpoints (`"image.fragment.weight"`).
    public let name: String
    /// Current value (no graph attached).
    public private(set) var value: Tensor
    /// Sum of the gradients of every `backward()` since the last ``zeroGradient()``.
    public private(set) var gradient: Tensor?

    public init(_ value: Tensor, name: String = "") {
        self.value = value.detached
        self.name = name
    }

    /// Replaces the value (same shape).
    public func assign(_ newValue: Tensor) {
        precondition(newValue.shape == value.shape,
                     "Parameter \(name): new value shape \(newValue.shape) differs from \(value.shape)")
        value = newValue.detached
    }

    /// Changes the value in place (optimizers; copies first only if the value is shared).
    public func updateValue(_ body: (UnsafeMutableBufferPointer<Float>) throws -> Void) rethrows {
        try value.withUnsafeMutableBufferPointer(body)
    }

    /// The value as a leaf of the autodiff graph: use it in the forward pass.
    public var tensor: Tensor {
        guard GradientRecording.isEnabled else { return value }
        var leaf = value
        leaf.node = GraphNode(parameter: self)
        return leaf
    }

    public var shape: [Int] { value.shape }

    func accumulateGradient(_ incoming: Tensor) {
        precondition(incoming.shape == value.shape,
                     "Parameter \(name): gradient shape \(incoming.shape) differs from \(value.shape)")
        if gradient == nil {
            gradient = incoming.detached
        } else {
            gradient!.addInPlace(incoming)
        }
    }

    /// Multiplies the accumulated gradient by `factor` (gradient clipping).
    public func scaleGradient(by factor: Float) {
        gradient?.scaleInPlace(by: factor)
    }

    /// Replaces the accumulated gradient.
    public func setGradient(_ newGradient: Tensor?) {
        if let newGradient {
            precondition(newGradient.shape == value.shape,
                         "Parameter \(name): gradient shape \(newGradient.shape) differs from \(value.shape)")
        }
        gradient = newGradient?.detached
    }

    /// Forgets the accumulated gradient.
    public func zeroGradient() { gradient = nil }
}
