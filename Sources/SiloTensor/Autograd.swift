import CBLAS

/// The backward rule of one recorded operation: given the gradient of its output (dense, with the
/// output's shape) and which inputs need a gradient, it returns one gradient per input (`nil` where
/// an input needs none). Rules never compute gradients nobody asked for: a frozen weight costs no
/// gradient memory and no GEMM.
public typealias BackwardRule = (_ gradOutput: Tensor, _ needsGradient: [Bool]) -> [Tensor?]

/// A node of the reverse-mode graph. Leaves are tensors created with ``Tensor/requiringGrad()``;
/// interior nodes hold the backward rule of the operation that made them and, through its closure,
/// the tensors it saved. The graph is the tape: ``Tensor/backward(seed:)`` orders it topologically.
final class GradNode {
    let op: String
    let shape: [Int]
    let inputs: [GradNode?]
    var rule: BackwardRule?
    var grad: Tensor?
    var isLeaf: Bool { rule == nil && inputs.isEmpty }

    init(op: String, shape: [Int], inputs: [GradNode?], rule: BackwardRule?) {
        self.op = op
        self.shape = shape
        self.inputs = inputs
        self.rule = rule
    }

    /// Adds `gradient` into this node's accumulated gradient (in place when possible).
    func accumulate(_ gradient: Tensor) {
        let dense = gradient.isContiguous ? gradient : gradient.contiguousCopy()
        if var existing = grad {
            grad = nil
            existing.makeUniqueContiguous()
            cblas_saxpy(Int32(existing.count), 1, dense.pointer, 1, existing.pointer, 1)
            grad = existing
        } else {
            var stored = dense
            stored.node = nil
            grad = stored
        }
    }
}

/// Whether operations record gradient nodes in the current task (see ``Tensor/withoutGradients(_:)``).
enum GradientMode {
    @TaskLocal static var isEnabled = true
}

extension Tensor {
    // MARK: Gradient state

    /// Whether gradients flow to this tensor (it is a leaf that requires them, or depends on one).
    public var requiresGrad: Bool { node != nil }

    /// This tensor as a leaf of the gradient graph: ``backward()`` accumulates into its ``grad``.
    public func requiringGrad() -> Tensor {
        var leaf = self
        leaf.node = GradNode(op: "leaf", shape: shape, inputs: [], rule: nil)
        return leaf
    }

    /// The same values with no gradient history.
    public func detached() -> Tensor {
        var copy = self
        copy.node = nil
        return copy
    }

    /// The gradient accumulated by ``backward()`` for a leaf, or `nil` if none arrived yet.
    public var grad: Tensor? { node?.grad }

    /// Drops the accumulated gradient of a leaf.
    public func zeroGrad() { node?.grad = nil }

    /// Replaces the accumulated gradient of a leaf (used by clipping, noise and aggregation).
    public func setGrad(_ gradient: Tensor?) {
        precondition(gradient == nil || gradient!.shape == shape,
                     "setGrad: gradient shape \(gradient!.shape) does not match tensor shape \(shape)")
        node?.grad = gradient.map { $0.isContiguous ? $0.detached() : $0.contiguousCopy() }
    }

    /// Runs `body` without recording gradient nodes (evaluation, generation, optimizer updates).
    public static func withoutGradients<R>(_ body: () throws -> R) rethrows -> R {
        try GradientMode.$isEnabled.withValue(false, operation: body)
    }

    /// Whether operations currently record gradient nodes.
    public static var isRecordingGradients: Bool { GradientMode.isEnabled }

    // MARK: Recording

    /// Returns `self` as the output of operation `op` on `inputs`, recording `rule` when gradients are
    /// being recorded and at least one input requires them.
    public func recorded(_ op: String, inputs: [Tensor], rule: @escaping BackwardRule) -> Tensor {
        guard GradientMode.isEnabled, inputs.contains(where: { $0.node != nil }) else {
            return detached()
        }
        var output = self
        output.node = GradNode(op: op, shape: shape, inputs: inputs.map(\.node), rule: rule)
        return output
    }

    // MARK: Backward

    /// Back-propagates from a scalar loss (its gradient is 1).
    /// - Throws: ``TensorError`` if the tensor has more than one element or does not require gradients.
    public func backward() throws {
        guard count == 1 else {
            throw TensorError(.invalidArgument,
                              "backward(): needs a scalar loss, got shape \(shape); use backward(seed:) with a gradient of that shape")
        }
        try backward(seed: Tensor(shape: shape, repeating: 1))
    }

    /// Back-propagates `seed` as the gradient of this tensor — for split learning, where the gradient of
    /// an activation arrives from another party.
    /// - Throws: ``TensorError`` if `seed`'s shape differs, or if this tensor does not require gradients.
    public func backward(seed: Tensor) throws {
        guard let root = node else {
            throw TensorError(.invalidArgument,
                              "backward: tensor of shape \(shape) does not require gradients (no trainable tensor led to it)")
        }
        guard seed.shape == shape else {
            throw TensorError.shapeMismatch("backward(seed:)", shape, seed.shape, detail: "seed must match the tensor")
        }
        if let bad = seed.withUnsafeBufferPointer({ $0.first(where: { !$0.isFinite }) }) {
            throw TensorError(.nonFinite, "backward(seed:): the seed gradient holds \(bad)")
        }
        let order = GradNode.topologicalOrder(from: root)
        root.accumulate(seed)
        for node in order.reversed() {
            guard let rule = node.rule else { continue }  // leaf: keep its gradient
            guard let gradient = node.grad else { node.rule = nil; continue }
            let needs = node.inputs.map { $0 != nil }
            let inputGradients = rule(gradient, needs)
            precondition(inputGradients.count == node.inputs.count,
                         "\(node.op) backward returned \(inputGradients.count) gradients for \(node.inputs.count) inputs")
            for (input, inputGradient) in zip(node.inputs, inputGradients) {
                guard let input, let inputGradient else { continue }
                precondition(inputGradient.shape == input.shape,
                             "\(node.op) backward: gradient shape \(inputGradient.shape) for an input of shape \(input.shape)")
                input.accumulate(inputGradient)
            }
            // Free what the step no longer needs: the interior gradient and the saved tensors.
            node.grad = nil
            node.rule = nil
        }
    }
}

extension GradNode {
    /// Nodes reachable from `root`, each after all of its inputs (iterative DFS: no recursion limit).
    static func topologicalOrder(from root: GradNode) -> [GradNode] {
        var order: [GradNode] = []
        var visited = Set<ObjectIdentifier>()
        var stack: [(GradNode, Int)] = [(root, 0)]
        visited.insert(ObjectIdentifier(root))
        while let (node, next) = stack.popLast() {
            if next < node.inputs.count {
                stack.append((node, next + 1))
                if let input = node.inputs[next], node.rule != nil || !node.inputs.isEmpty,
                   visited.insert(ObjectIdentifier(input)).inserted {
                    stack.append((input, 0))
                }
            } else {
                order.append(node)
            }
        }
        return order
    }
}
