// Legend: N elements of one gradient.

/// Scales the gradients of `parameters` so that their global L2 norm is at most `maxNorm`, as
/// PyTorch's `torch.nn.utils.clip_grad_norm_`.
///
/// The norm is ‖(g₁, …, gₖ)‖₂ over every element of every gradient (parameters without a gradient are
/// skipped), accumulated in Float64. When it exceeds `maxNorm`, every gradient is multiplied by
/// maxNorm / (norm + 1e-6), in place (a gradient whose storage is shared is copied first).
///
/// A non-finite norm is reported by throwing, never by scaling the gradients by NaN.
/// - Parameters:
///   - parameters: Leaf tensors whose ``Tensor/grad`` to clip.
///   - maxNorm: The largest norm allowed; finite and > 0.
/// - Returns: The global norm before clipping.
/// - Throws: ``TensorError`` (`.nonFinite`) naming the first parameter whose gradient holds NaN or an
///   infinity (the gradients are left unchanged); `.invalidArgument` if `maxNorm` is not finite and > 0.
@discardableResult
public func clipGradientNorm(_ parameters: [Tensor], maxNorm: Float) throws -> Float {
    guard maxNorm.isFinite && maxNorm > 0 else {
        throw TensorError(.invalidArgument, "clipGradientNorm: maxNorm must be finite and > 0, got \(maxNorm)")
    }
    var total = 0.0
    for (index, parameter) in parameters.enumerated() {
        guard let gradient = parameter.grad else { continue }
        let dense = gradient.isContiguous ? gradient : gradient.contiguousCopy()
        let squares = OptimizerKernel.sumOfSquares(dense.pointer, count: dense.count)
        guard squares.isFinite else {
            throw TensorError(.nonFinite,
                              "clipGradientNorm: the gradient norm is not finite: the gradient of parameter \(index) (shape \(parameter.shape)) holds NaN or an infinity; the gradients were left unchanged")
        }
        total += squares
    }
    let norm = total.squareRoot()
    if norm > Double(maxNorm) {
        let factor = Float(Double(maxNorm) / (norm + 1e-6))
        for parameter in parameters {
            guard let node = parameter.node, var gradient = node.grad else { continue }
            node.grad = nil  // so that the gradient is uniquely referenced unless someone else holds it
            gradient.makeUniqueContiguous()
            OptimizerKernel.scale(gradient.pointer, count: gradient.count, by: factor)
            node.grad = gradient
        }
    }
    return Float(norm)
}
