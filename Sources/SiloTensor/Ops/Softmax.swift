#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// Legend: N rows (every position the softmax is taken at: B·T for logits, B·H·T for attention
// scores), V the normalised axis (vocabulary, key positions). Matrices are dense, row-major (N, V).

/// Softmax and log-softmax over the last axis of a dense (N, V) matrix, row-parallel.
///
/// Every row is max-subtracted before exponentiation, so any finite input is safe; a row that is
/// entirely −∞ gives NaN (as in PyTorch). Exponentials go through ``FastMath/exp(_:)-(FastMath.Vector)``.
public enum SoftmaxKernel {
    /// out (N,V) = exp(inp − max) / Σ_V exp(inp − max), per row.
    public static func forward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, rows: Int, columns: Int) {
        Parallel.forEachChunk(rows, costPerItem: columns * 8) { range in
            for row in range {
                let x = inp + row * columns
                let y = out + row * columns
                let maximum = rowMaximum(x, count: columns)
                let sum = rowSumExp(x, count: columns, subtracting: maximum, storingInto: y)
                scaleRow(y, count: columns, by: 1 / sum)
            }
        }
    }

    /// dinp (N,V) = out ⊙ (dout − Σ_V dout ⊙ out), per row, from the forward's output `out`.
    public static func backward(dinp: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>, out: UnsafePointer<Float>,
                                rows: Int, columns: Int) {
        Parallel.forEachChunk(rows, costPerItem: columns * 4) { range in
            for row in range {
                let g = dout + row * columns
                let y = out + row * columns
                let dx = dinp + row * columns
                let dot = rowDot(g, y, count: columns)
                FastMath.map(g, y, dx, count: columns) { g, y in y * (g - dot) }
            }
        }
    }

    /// out (N,V) = inp − max − log Σ_V exp(inp − max), per row.
    public static func logForward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, rows: Int, columns: Int) {
        Parallel.forEachChunk(rows, costPerItem: columns * 8) { range in
            for row in range {
                let x = inp + row * columns
                let maximum = rowMaximum(x, count: columns)
                let sum = rowSumExp(x, count: columns, subtracting: maximum, storingInto: nil)
                let shift = maximum + logf(sum)
                FastMath.map(x, out + row * columns, count: columns) { $0 - shift }
            }
        }
    }

    /// dinp (N,V) = dout − exp(out) · Σ_V dout, per row, from the forward's output `out` (log-probabilities).
    public static func logBackward(dinp: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>, out: UnsafePointer<Float>,
                                   rows: Int, columns: Int) {
        Parallel.forEachChunk(rows, costPerItem: columns * 8) { range in
            for row in range {
                let g = dout + row * columns
                let total = rowSum(g, count: columns)
                FastMath.map(g, out + row * columns, dinp + row * columns, count: columns) { g, y in
                    g - FastMath.exp(y) * total
                }
            }
        }
    }

    // MARK: Row primitives (shared with the cross-entropy kernel)
    //
    // Out of line on purpose (called once per row): a kernel that inlined all of them could grow
    // past the SIL inliner's caller limit (400 blocks), after which FastMath.exp would become a
    // call per 16 elements.

    /// max_V x; −∞ for an empty row. NaN elements are skipped (they poison the sum that follows).
    @inline(never)
    static func rowMaximum(_ x: UnsafePointer<Float>, count: Int) -> Float {
        var a = FastMath.Vector(repeating: -.infinity)
        var b = a
        var i = 0
        while i + 32 <= count {
            a = FastMath.maximum(a, FastMath.load(x + i))
            b = FastMath.maximum(b, FastMath.load(x + i + 16))
            i += 32
        }
        while i + 16 <= count {
            a = FastMath.maximum(a, FastMath.load(x + i))
            i += 16
        }
        if i < count {
            b = FastMath.maximum(b, FastMath.loadPartial(x + i, count: count - i, padding: -.infinity))
        }
        return FastMath.maximum(a, b).max()
    }

    /// Σ_V exp(x − shift), also storing each exp(x − shift) into `y` when given.
    @inline(never)
    static func rowSumExp(_ x: UnsafePointer<Float>, count: Int, subtracting shift: Float,
                          storingInto y: UnsafeMutablePointer<Float>?) -> Float {
        var a = FastMath.Vector(repeating: 0)
        var b = a
        var i = 0
        if let y {
            while i + 32 <= count {
                let e0 = FastMath.exp(FastMath.load(x + i) - shift)
                let e1 = FastMath.exp(FastMath.load(x + i + 16) - shift)
                FastMath.store(e0, y + i)
                FastMath.store(e1, y + i + 16)
                a += e0
                b += e1
                i += 32
            }
            while i + 16 <= count {
                let e = FastMath.exp(FastMath.load(x + i) - shift)
                FastMath.store(e, y + i)
                a += e
                i += 16
            }
            if i < count {
                let e = FastMath.exp(FastMath.loadPartial(x + i, count: count - i, padding: -.infinity) - shift)
                FastMath.storePartial(e, y + i, count: count - i)
                b += e
            }
        } else {
            while i + 32 <= count {
                a += FastMath.exp(FastMath.load(x + i) - shift)
                b += FastMath.exp(FastMath.load(x + i + 16) - shift)
                i += 32
            }
            while i + 16 <= count {
                a += FastMath.exp(FastMath.load(x + i) - shift)
                i += 16
            }
            if i < count {
                b += FastMath.exp(FastMath.loadPartial(x + i, count: count - i, padding: -.infinity) - shift)
            }
        }
        return (a + b).sum()
    }

    /// Σ_V x.
    @inline(never)
    static func rowSum(_ x: UnsafePointer<Float>, count: Int) -> Float {
        var a = FastMath.Vector(repeating: 0)
        var i = 0
        while i + 16 <= count {
            a += FastMath.load(x + i)
            i += 16
        }
        if i < count { a += FastMath.loadPartial(x + i, count: count - i) }
        return a.sum()
    }

    /// Σ_V x ⊙ y.
    @inline(never)
    static func rowDot(_ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, count: Int) -> Float {
        var a = FastMath.Vector(repeating: 0)
        var i = 0
        while i + 16 <= count {
            a += FastMath.load(x + i) * FastMath.load(y + i)
            i += 16
        }
        if i < count { a += FastMath.loadPartial(x + i, count: count - i) * FastMath.loadPartial(y + i, count: count - i) }
        return a.sum()
    }

    /// y ← y · factor.
    @inline(never)
    static func scaleRow(_ y: UnsafeMutablePointer<Float>, count: Int, by factor: Float) {
        FastMath.map(y, y, count: count) { $0 * factor }
    }
}

extension Tensor {
    /// Softmax along `axis`: exp(x − max) / Σ exp(x − max), same shape as `self`.
    ///
    /// The last axis is the fast path (row-parallel, no copy for dense input); another axis is moved
    /// last through a dense copy and the result is returned as a view in the original order.
    /// - Throws: ``TensorError`` if `self` is a scalar or `axis` is out of range.
    public func softmax(axis: Int = -1) throws -> Tensor {
        try exponentialNormalised("softmax", axis: axis, logarithmic: false)
    }

    /// Log-softmax along `axis`: x − max − log Σ exp(x − max), same shape as `self`.
    /// - Throws: ``TensorError`` if `self` is a scalar or `axis` is out of range.
    public func logSoftmax(axis: Int = -1) throws -> Tensor {
        try exponentialNormalised("logSoftmax", axis: axis, logarithmic: true)
    }

    private func exponentialNormalised(_ op: String, axis: Int, logarithmic: Bool) throws -> Tensor {
        guard rank >= 1 else {
            throw TensorError(.invalidArgument, "\(op): needs at least one dimension, got a scalar (shape [])")
        }
        let resolved = try self.axis(axis, op: op)
        let order = Array(0..<rank).filter { $0 != resolved } + [resolved]
        let moved = resolved == rank - 1 ? self : axesReordered(order)
        let input = moved.isContiguous ? moved : moved.contiguousCopy()
        let columns = shape[resolved]
        let rows = columns == 0 ? 0 : count / columns
        let out = Tensor.empty(input.shape)
        if logarithmic {
            SoftmaxKernel.logForward(out: out.pointer, inp: input.pointer, rows: rows, columns: columns)
        } else {
            SoftmaxKernel.forward(out: out.pointer, inp: input.pointer, rows: rows, columns: columns)
        }
        let result = resolved == rank - 1 ? out : out.axesRestored(order)
        return result.recorded(op, inputs: [self]) { gradOut, needs in
            guard needs[0] else { return [nil] }
            let reordered = resolved == gradOut.rank - 1 ? gradOut : gradOut.axesReordered(order)
            let dout = reordered.isContiguous ? reordered : reordered.contiguousCopy()
            let dinp = Tensor.empty(out.shape)
            if logarithmic {
                SoftmaxKernel.logBackward(dinp: dinp.pointer, dout: dout.pointer, out: out.pointer, rows: rows, columns: columns)
            } else {
                SoftmaxKernel.backward(dinp: dinp.pointer, dout: dout.pointer, out: out.pointer, rows: rows, columns: columns)
            }
            return [resolved == dinp.rank - 1 ? dinp : dinp.axesRestored(order)]
        }
    }

    /// A view whose axis i is axis `order[i]` of `self` (no copy, no gradient node).
    fileprivate func axesReordered(_ order: [Int]) -> Tensor {
        Tensor(storage: storage, shape: order.map { shape[$0] }, strides: order.map { strides[$0] }, offset: offset)
    }

    /// The inverse of ``axesReordered(_:)``: a view whose axis `order[i]` is axis i of `self`.
    fileprivate func axesRestored(_ order: [Int]) -> Tensor {
        var restoredShape = shape
        var restoredStrides = strides
        for (index, axis) in order.enumerated() {
            restoredShape[axis] = shape[index]
            restoredStrides[axis] = strides[index]
        }
        return Tensor(storage: storage, shape: restoredShape, strides: restoredStrides, offset: offset)
    }
}
