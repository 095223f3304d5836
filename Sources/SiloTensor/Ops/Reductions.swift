// Legend: the input is dense with some axes marked "reduced". After dropping size-1 axes and merging
// neighbours of the same kind, it is a sequence of groups. out is dense over the kept groups in order.
// When the innermost group is reduced, each output is a sum of rows of L contiguous values
// ("row sums"); when it is kept, each output row of C values is a sum of input rows ("column sums").

/// Sum and mean over axes, forward and backward.
public enum ReductionKernel {
    /// Elements per block of a full reduction: fixed, so the result never depends on the thread count.
    static let blockSize = 16_384

    /// Σ p[0..<n] with 16 independent partial sums (vectorised, and more accurate than one running sum).
    @inline(__always)
    static func rowSum(_ p: UnsafePointer<Float>, _ n: Int) -> Float {
        var accumulator = SIMD16<Float>()
        var i = 0
        let raw = UnsafeRawPointer(p)
        while i + 16 <= n {
            accumulator += raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
            i += 16
        }
        var total = accumulator.sum()
        while i < n {
            total += p[i]
            i += 1
        }
        return total
    }

    /// out (kept axes of `shape`, dense) = scale · Σ over the `reduced` axes of inp (`shape`, dense).
    ///
    /// Each output element is summed in a fixed order that depends only on the shape, so the result is
    /// the same whatever the thread count.
    public static func sumForward(inp: UnsafePointer<Float>, shape: [Int], reduced: [Bool], scale: Float,
                                  out: UnsafeMutablePointer<Float>) {
        precondition(shape.count == reduced.count, "sumForward: \(reduced.count) flags for shape \(shape)")
        let inputCount = shape.reduce(1, *)
        let outputCount = zip(shape, reduced).reduce(1) { $1.1 ? $0 : $0 * $1.0 }
        if inputCount == 0 {
            // Σ of nothing is 0 (and the mean of nothing is 0 · ∞ = NaN, as in PyTorch).
            out.update(repeating: 0 * scale, count: outputCount)
            return
        }
        // Groups: size-1 axes dropped, neighbours of the same kind merged.
        var sizes: [Int] = []
        var isReduced: [Bool] = []
        for (size, flag) in zip(shape, reduced) where size != 1 {
            if let last = sizes.indices.last, isReduced[last] == flag {
                sizes[last] *= size
            } else {
                sizes.append(size)
                isReduced.append(flag)
            }
        }
        guard let innermost = sizes.last else {
            out.pointee = inp.pointee * scale
            return
        }
        let strides = Tensor.contiguousStrides(sizes)
        let last = sizes.count - 1
        let keptSizes = (0..<last).filter { !isReduced[$0] }.map { sizes[$0] }
        let keptStrides = (0..<last).filter { !isReduced[$0] }.map { strides[$0] }
        let reducedSizes = (0..<last).filter { isReduced[$0] }.map { sizes[$0] }
        let reducedStrides = (0..<last).filter { isReduced[$0] }.map { strides[$0] }
        let reducedRows = reducedSizes.reduce(1, *)

        if isReduced[last] {
            // Row sums: out[o] = Σ over the outer reduced groups of rowSum(L values).
            let run = innermost
            if keptSizes.isEmpty && reducedSizes.isEmpty {
                out.pointee = blockedSum(inp, count: run) * scale
                return
            }
            Parallel.forEachChunk(outputCount, costPerItem: run * reducedRows) { range in
                var kept = StridedCursor(shape: keptSizes, firstStrides: keptStrides, secondStrides: keptStrides,
                                         row: range.lowerBound)
                var inner = StridedCursor(shape: reducedSizes, firstStrides: reducedStrides,
                                          secondStrides: reducedStrides, row: 0)
                for o in range {
                    var total: Float = 0
                    for _ in 0..<reducedRows {
                        total += rowSum(inp + kept.first + inner.first, run)
                        inner.advance()
                    }
                    out[o] = total * scale
                    kept.advance()
                }
            }
        } else {
            // Column sums: out[o, c] = Σ over the reduced groups of inp[…, c], in blocks of columns.
            let columns = innermost
            let rows = outputCount / columns
            let blockWidth = rows >= Parallel.threadCount ? columns : min(columns, 128)
            let blocksPerRow = (columns + blockWidth - 1) / blockWidth
            Parallel.forEachChunk(rows * blocksPerRow, costPerItem: reducedRows * blockWidth) { range in
                var inner = StridedCursor(shape: reducedSizes, firstStrides: reducedStrides,
                                          secondStrides: reducedStrides, row: 0)
                for item in range {
                    let row = item / blocksPerRow
                    let start = (item % blocksPerRow) * blockWidth
                    let width = min(blockWidth, columns - start)
                    // Offset of kept row `row` in the input.
                    var base = 0
                    var remaining = row
                    for axis in stride(from: keptSizes.count - 1, through: 0, by: -1) {
                        base += (remaining % keptSizes[axis]) * keptStrides[axis]
                        remaining /= keptSizes[axis]
                    }
                    let target = out + row * columns + start
                    target.update(repeating: 0, count: width)
                    for _ in 0..<reducedRows {
                        let source = inp + base + inner.first + start
                        for j in 0..<width { target[j] += source[j] }
                        inner.advance()
                    }
                    if scale != 1 {
                        for j in 0..<width { target[j] *= scale }
                    }
                }
            }
        }
    }

    /// Σ p[0..<count] in fixed blocks summed in parallel, then combined in order in Float64.
    static func blockedSum(_ p: UnsafePointer<Float>, count: Int) -> Float {
        let blocks = (count + blockSize - 1) / blockSize
        if blocks <= 1 { return rowSum(p, count) }
        var partials = [Float](repeating: 0, count: blocks)
        partials.withUnsafeMutableBufferPointer { buffer in
            guard let partial = buffer.baseAddress else { return }
            Parallel.forEachChunk(blocks, costPerItem: blockSize) { range in
                for block in range {
                    let start = block * blockSize
                    partial[block] = rowSum(p + start, min(blockSize, count - start))
                }
            }
        }
        var total = 0.0
        for value in partials { total += Double(value) }
        return Float(total)
    }

    /// dinp (`shape`, dense) = scale · dout (kept axes of `shape`, dense) repeated along the reduced axes.
    public static func sumBackward(dinp: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>, shape: [Int],
                                   reduced: [Bool], scale: Float) {
        precondition(shape.count == reduced.count, "sumBackward: \(reduced.count) flags for shape \(shape)")
        // dout seen in the input's rank: dense strides over the kept axes, 0 on the reduced ones.
        var doutStrides = [Int](repeating: 0, count: shape.count)
        var running = 1
        for axis in stride(from: shape.count - 1, through: 0, by: -1) where !reduced[axis] {
            doutStrides[axis] = running
            running *= shape[axis]
        }
        let layout = BroadcastLayout(outputShape: shape,
                                     operands: [(shape, doutStrides), ([], [])])
        withUnsafePointer(to: scale) { factor in
            ElementwiseKernel.binaryForward(ElementwiseKernel.Multiply.self, layout: layout, a: dout, b: factor, out: dinp)
        }
    }
}

extension Tensor {
    /// Which axes `axes` names, validated: each in −rank..<rank, none twice.
    fileprivate func reducedFlags(_ axes: [Int], op: String) throws -> [Bool] {
        var flags = [Bool](repeating: false, count: rank)
        for axis in axes {
            let resolved = axis < 0 ? axis + rank : axis
            guard resolved >= 0 && resolved < rank else {
                throw TensorError(.invalidArgument, "\(op): axis \(axis) is out of range for shape \(shape)")
            }
            guard !flags[resolved] else {
                throw TensorError(.invalidArgument, "\(op): axis \(axis) is listed twice in \(axes) (shape \(shape))")
            }
            flags[resolved] = true
        }
        return flags
    }

    /// Σ (or mean) over the flagged axes into `outputShape` (whose element count is the product of the
    /// kept axes), recorded as `op`.
    fileprivate func reducingSum(_ reduced: [Bool], outputShape: [Int], mean: Bool, op: String) -> Tensor {
        let input = densified()
        let reducedCount = zip(shape, reduced).reduce(1) { $1.1 ? $0 * $1.0 : $0 }
        let scale: Float = mean ? 1 / Float(reducedCount) : 1
        let out = Tensor.empty(outputShape)
        ReductionKernel.sumForward(inp: input.pointer, shape: shape, reduced: reduced, scale: scale, out: out.pointer)
        let inputShape = shape
        return out.recorded(op, inputs: [self]) { gradOut, _ in
            // d Σx / dx = 1 (d mean / dx = 1/n) for every summed element.
            let dinp = Tensor.empty(inputShape)
            ReductionKernel.sumBackward(dinp: dinp.pointer, dout: gradOut.pointer, shape: inputShape,
                                        reduced: reduced, scale: scale)
            return [dinp]
        }
    }

    /// The gradient of an operand broadcast from `shape` to `gradient.shape`, summed back over the
    /// broadcast axes (leading axes, and size-1 axes of `shape`). Returns `gradient` itself when the
    /// shapes agree. Not recorded.
    static func sumBroadcastGradient(_ gradient: Tensor, to shape: [Int]) -> Tensor {
        if gradient.shape == shape { return gradient }
        let rank = gradient.rank, leading = rank - shape.count
        precondition(leading >= 0, "sumBroadcastGradient: \(gradient.shape) is not a broadcast of \(shape)")
        let reduced = (0..<rank).map { axis in
            axis < leading || (shape[axis - leading] == 1 && gradient.shape[axis] != 1)
        }
        let dense = gradient.densified()
        let out = Tensor.empty(shape)
        ReductionKernel.sumForward(inp: dense.pointer, shape: dense.shape, reduced: reduced, scale: 1, out: out.pointer)
        return out
    }

    /// Σ over `axes` (negative axes count from the end). Without `keepingDimensions` the summed axes
    /// are removed; with it they stay as size 1. An empty `axes` sums nothing and returns `self`.
    /// - Throws: ``TensorError`` if an axis is out of range or listed twice.
    public func sum(axes: [Int], keepingDimensions: Bool = false) throws -> Tensor {
        let flags = try reducedFlags(axes, op: "sum")
        if axes.isEmpty { return self }
        return reducingSum(flags, outputShape: reducedShape(flags, keepingDimensions), mean: false, op: "sum")
    }

    /// Σ of every element, as a rank-0 tensor.
    public func sum() -> Tensor {
        reducingSum([Bool](repeating: true, count: rank), outputShape: [], mean: false, op: "sum")
    }

    /// Mean over `axes` (negative axes count from the end); see ``sum(axes:keepingDimensions:)``.
    /// An axis of size 0 gives NaN, as in PyTorch.
    /// - Throws: ``TensorError`` if an axis is out of range or listed twice.
    public func mean(axes: [Int], keepingDimensions: Bool = false) throws -> Tensor {
        let flags = try reducedFlags(axes, op: "mean")
        if axes.isEmpty { return self }
        return reducingSum(flags, outputShape: reducedShape(flags, keepingDimensions), mean: true, op: "mean")
    }

    /// Mean of every element, as a rank-0 tensor (NaN for an empty tensor).
    public func mean() -> Tensor {
        reducingSum([Bool](repeating: true, count: rank), outputShape: [], mean: true, op: "mean")
    }

    private func reducedShape(_ flags: [Bool], _ keepingDimensions: Bool) -> [Int] {
        keepingDimensions
            ? zip(shape, flags).map { $1 ? 1 : $0 }
            : zip(shape, flags).filter { !$1 }.map(\.0)
    }

    /// Σ over the axes along which `shape` was broadcast to reach this tensor's shape: the leading axes
    /// it lacks and the axes where it has size 1. The result has exactly `shape`; it is the gradient of a
    /// broadcast operand. Returns `self` when the shapes agree.
    /// - Throws: ``TensorError`` naming both shapes if `shape` does not broadcast to this tensor's shape.
    public func reduced(toShape target: [Int]) throws -> Tensor {
        if target == shape { return self }
        let leading = rank - target.count
        let compatible = leading >= 0 && target.enumerated().allSatisfy { axis, size in
            size == shape[axis + leading] || size == 1
        }
        guard compatible else {
            throw TensorError.shapeMismatch("reduced(toShape:)", shape, target,
                                            detail: "the target must broadcast to the tensor's shape")
        }
        let flags = (0..<rank).map { axis in
            axis < leading || (target[axis - leading] == 1 && shape[axis] != 1)
        }
        return reducingSum(flags, outputShape: target, mean: false, op: "reduced(toShape:)")
    }
}
