#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// Legend: N positions (B·T), V vocabulary. logits (N, V) dense row-major, targets (N) class ids.

/// How a per-position loss is reduced to the value returned.
public enum LossReduction: Sendable, Hashable {
    /// The average over positions whose target is not ignored (0 if every target is ignored).
    case mean
    /// The sum over positions (ignored positions add 0).
    case sum
    /// One loss per position, with the leading shape of the logits (0 where the target is ignored).
    case none
}

/// Fused log-softmax + negative log-likelihood, forward and backward, row-parallel.
///
/// Memory: the forward keeps only the per-row log-sum-exp (N floats) besides the logits it was given;
/// the backward recomputes softmax from logits and lse while writing dlogits, so a (1024, 50257)
/// step holds one logits-sized buffer for the forward and one for the gradient, never a probability
/// matrix.
public enum CrossEntropyKernel {
    /// losses (N) = lse − logits[n, target[n]], lse (N) = log Σ_V exp(logits[n, :]).
    ///
    /// Rows whose target equals `ignoreIndex` are skipped: loss 0, lse 0. Targets must otherwise be
    /// in 0..<V (the caller validates).
    public static func forward(losses: UnsafeMutablePointer<Float>, logSumExp: UnsafeMutablePointer<Float>,
                               logits: UnsafePointer<Float>, targets: UnsafePointer<Int32>, ignoreIndex: Int32,
                               rows: Int, vocabulary: Int) {
        Parallel.forEachChunk(rows, costPerItem: vocabulary * 8) { range in
            for row in range {
                let target = targets[row]
                if target == ignoreIndex {
                    losses[row] = 0
                    logSumExp[row] = 0
                    continue
                }
                let x = logits + row * vocabulary
                let maximum = SoftmaxKernel.rowMaximum(x, count: vocabulary)
                let sum = SoftmaxKernel.rowSumExp(x, count: vocabulary, subtracting: maximum, storingInto: nil)
                let lse = maximum + logf(sum)
                logSumExp[row] = lse
                losses[row] = lse - x[Int(target)]
            }
        }
    }

    /// dlogits (N,V) = scale[n] · (exp(logits − lse[n]) − onehot(target[n])), written (not accumulated).
    ///
    /// `scale` (N) is dLoss/dloss[n]: gradOut / n_valid for a mean, gradOut for a sum, gradOut[n]
    /// for no reduction. Ignored rows get zeros.
    public static func backward(dlogits: UnsafeMutablePointer<Float>, logits: UnsafePointer<Float>,
                                logSumExp: UnsafePointer<Float>, targets: UnsafePointer<Int32>,
                                scale: UnsafePointer<Float>, ignoreIndex: Int32, rows: Int, vocabulary: Int) {
        Parallel.forEachChunk(rows, costPerItem: vocabulary * 8) { range in
            for row in range {
                let dx = dlogits + row * vocabulary
                let target = targets[row]
                if target == ignoreIndex {
                    dx.update(repeating: 0, count: vocabulary)
                    continue
                }
                let lse = logSumExp[row]
                let factor = scale[row]
                FastMath.map(logits + row * vocabulary, dx, count: vocabulary) { x in
                    FastMath.exp(x - lse) * factor
                }
                dx[Int(target)] -= factor
            }
        }
    }
}

extension Tensor {
    /// Cross-entropy between `logits` (N…, V) and integer `targets`, PyTorch semantics.
    ///
    /// loss[n] = log Σ_v exp(logits[n, v]) − logits[n, targets[n]]. Positions whose target equals
    /// `ignoreIndex` contribute nothing; `.mean` divides by the number of the others. When every
    /// target is ignored, `.mean` returns 0 with a zero gradient (PyTorch returns NaN): a batch made
    /// only of padding leaves the model untouched instead of poisoning it.
    ///
    /// The gradient for the logits is written straight into a fresh buffer; the forward saves the
    /// logits themselves (no copy when they are dense) and one log-sum-exp per position.
    /// - Parameters:
    ///   - logits: unnormalised scores, shape (N…, V) with V ≥ 1.
    ///   - targets: one class id per position, row-major over the leading dimensions N….
    ///   - ignoreIndex: the target value that marks a position to skip (default −100).
    ///   - reduction: `.mean` and `.sum` return a scalar (shape []), `.none` the shape N….
    /// - Throws: ``TensorError`` if `targets.count` differs from the number of positions, or a target
    ///   is outside 0..<V and is not `ignoreIndex` (the message names its position and V).
    public static func crossEntropy(logits: Tensor, targets: [Int32], ignoreIndex: Int32 = -100,
                                    reduction: LossReduction = .mean) throws -> Tensor {
        guard logits.rank >= 1, let vocabulary = logits.shape.last, vocabulary >= 1 else {
            throw TensorError(.invalidArgument,
                              "crossEntropy: logits of shape \(logits.shape) need a last (vocabulary) axis of size at least 1")
        }
        let leadingShape = Array(logits.shape.dropLast())
        let rows = leadingShape.reduce(1, *)
        guard targets.count == rows else {
            throw TensorError.shapeMismatch("crossEntropy", logits.shape, [targets.count],
                                            detail: "logits have \(rows) positions (N = \(leadingShape)) but \(targets.count) targets were given")
        }
        var validCount = 0
        for (position, target) in targets.enumerated() {
            if target == ignoreIndex { continue }
            guard target >= 0 && Int(target) < vocabulary else {
                throw TensorError(.invalidArgument,
                                  "crossEntropy: target \(target) at position \(position) is outside 0..<\(vocabulary) (V = \(vocabulary), logits shape \(logits.shape)) and is not the ignore index \(ignoreIndex)")
            }
            validCount += 1
        }

        let dense = logits.isContiguous ? logits : logits.contiguousCopy()
        let logSumExp = Tensor.empty([rows])
        let losses = Tensor.empty(leadingShape)
        targets.withUnsafeBufferPointer { ids in
            guard let ids = ids.baseAddress else { return }
            CrossEntropyKernel.forward(losses: losses.pointer, logSumExp: logSumExp.pointer, logits: dense.pointer,
                                       targets: ids, ignoreIndex: ignoreIndex, rows: rows, vocabulary: vocabulary)
        }

        let output: Tensor
        switch reduction {
        case .none:
            output = losses
        case .sum, .mean:
            // Fixed order, in Double: the same loss whatever the thread count.
            var total = 0.0
            for row in 0..<rows { total += Double(losses.pointer[row]) }
            if reduction == .mean { total = validCount == 0 ? 0 : total / Double(validCount) }
            output = Tensor(scalar: Float(total))
        }

        return output.recorded("crossEntropy", inputs: [logits]) { gradOut, needs in
            guard needs[0] else { return [nil] }
            var scale = [Float](repeating: 0, count: rows)
            switch reduction {
            case .none:
                for row in 0..<rows { scale[row] = gradOut.pointer[row] }
            case .sum:
                scale = [Float](repeating: gradOut.scalar, count: rows)
            case .mean:
                let factor = validCount == 0 ? 0 : gradOut.scalar / Float(validCount)
                scale = [Float](repeating: factor, count: rows)
            }
            let dlogits = Tensor.empty(dense.shape)
            targets.withUnsafeBufferPointer { ids in
                scale.withUnsafeBufferPointer { scale in
                    guard let ids = ids.baseAddress, let scale = scale.baseAddress else { return }
                    CrossEntropyKernel.backward(dlogits: dlogits.pointer, logits: dense.pointer,
                                                logSumExp: logSumExp.pointer, targets: ids, scale: scale,
                                                ignoreIndex: ignoreIndex, rows: rows, vocabulary: vocabulary)
                }
            }
            return [dlogits]
        }
    }
}
