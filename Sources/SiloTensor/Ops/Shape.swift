// Legend: a view is (shape, strides, offset) over shared storage. Copies walk rows × columns after
// merging axes (see BroadcastLayout): columns is the innermost merged run, rows everything outside it.

/// Copies between strided views: the one data-moving kernel behind `contiguous()`, `concatenate`
/// and the backward of `sliced`/`split`/`transposed`/`permuted`.
public enum ShapeKernel {
    /// destination (shape) = source (shape), each addressed through its own strides (a source stride
    /// of 0 repeats a value). Rows are split across workers; a single run is split in chunks.
    public static func copy(shape: [Int], source: UnsafePointer<Float>, sourceStrides: [Int],
                            destination: UnsafeMutablePointer<Float>, destinationStrides: [Int]) {
        let layout = BroadcastLayout(outputShape: shape,
                                     operands: [(shape, sourceStrides), (shape, destinationStrides)])
        if layout.count == 0 { return }
        guard let columns = layout.shape.last else {
            destination.pointee = source.pointee
            return
        }
        let last = layout.shape.count - 1
        let sourceStride = layout.strides[0][last], destinationStride = layout.strides[1][last]
        let rows = layout.count / columns
        if rows == 1 {
            Parallel.forEachChunk(columns) { range in
                copyRow(count: range.count, source: source + range.lowerBound * sourceStride, sourceStride: sourceStride,
                        destination: destination + range.lowerBound * destinationStride,
                        destinationStride: destinationStride)
            }
            return
        }
        let outerShape = Array(layout.shape.dropLast())
        let outerSource = Array(layout.strides[0].dropLast()), outerDestination = Array(layout.strides[1].dropLast())
        Parallel.forEachChunk(rows, costPerItem: columns) { range in
            var cursor = StridedCursor(shape: outerShape, firstStrides: outerSource, secondStrides: outerDestination,
                                       row: range.lowerBound)
            for _ in range {
                copyRow(count: columns, source: source + cursor.first, sourceStride: sourceStride,
                        destination: destination + cursor.second, destinationStride: destinationStride)
                cursor.advance()
            }
        }
    }

    /// destination (n, step destinationStride) = source (n, step sourceStride).
    @inline(__always)
    static func copyRow(count n: Int, source: UnsafePointer<Float>, sourceStride: Int,
                        destination: UnsafeMutablePointer<Float>, destinationStride: Int) {
        if sourceStride == 1 && destinationStride == 1 {
            destination.update(from: source, count: n)
        } else if sourceStride == 0 && destinationStride == 1 {
            destination.update(repeating: source.pointee, count: n)
        } else {
            for i in 0..<n { destination[i * destinationStride] = source[i * sourceStride] }
        }
    }

    /// `axis` resolved against `rank` (negative counts from the end).
    /// - Throws: ``TensorError`` naming `op` and `shape` if it is out of range.
    static func resolvedAxis(_ axis: Int, shape: [Int], op: String) throws -> Int {
        let resolved = axis < 0 ? axis + shape.count : axis
        guard resolved >= 0 && resolved < shape.count else {
            throw TensorError(.invalidArgument, "\(op): axis \(axis) is out of range for shape \(shape)")
        }
        return resolved
    }

    /// Strides that view memory laid out as (`shape`, `strides`) with `newShape` (same element count)
    /// without copying, or nil when no such strides exist (PyTorch's `computeStride`).
    static func viewStrides(shape: [Int], strides: [Int], newShape: [Int]) -> [Int]? {
        let count = shape.reduce(1, *)
        if count == 0 || shape.isEmpty { return Tensor.contiguousStrides(newShape) }
        var newStrides = [Int](repeating: 0, count: newShape.count)
        var viewAxis = newShape.count - 1
        var chunkBaseStride = strides[shape.count - 1]
        var tensorCount = 1
        var viewCount = 1
        for axis in stride(from: shape.count - 1, through: 0, by: -1) {
            tensorCount *= shape[axis]
            // End of a chunk of axes that are linear in memory.
            if axis == 0 || (shape[axis - 1] != 1 && strides[axis - 1] != tensorCount * chunkBaseStride) {
                while viewAxis >= 0 && (viewCount < tensorCount || newShape[viewAxis] == 1) {
                    newStrides[viewAxis] = viewCount * chunkBaseStride
                    viewCount *= newShape[viewAxis]
                    viewAxis -= 1
                }
                if viewCount != tensorCount { return nil }
                if axis > 0 {
                    chunkBaseStride = strides[axis - 1]
                    tensorCount = 1
                    viewCount = 1
                }
            }
        }
        return viewAxis == -1 ? newStrides : nil
    }
}

extension Tensor {
    /// `self` when dense, else a dense copy made by the parallel copy kernel. Not recorded.
    func densified() -> Tensor {
        if isContiguous { return self }
        let out = Tensor.empty(shape)
        ShapeKernel.copy(shape: shape, source: pointer, sourceStrides: strides,
                         destination: out.pointer, destinationStrides: out.strides)
        return out
    }

    /// The same elements, densely laid out; `self` unchanged when already contiguous. Recorded (the
    /// gradient passes through), so it may sit between a strided view and a kernel that needs dense memory.
    public func contiguous() -> Tensor {
        if isContiguous { return self }
        return densified().recorded("contiguous", inputs: [self]) { gradOut, _ in [gradOut] }
    }

    /// The elements in row-major order with a new shape of the same element count; one dimension may be
    /// −1 (inferred). A view sharing storage when the layout allows it (always when contiguous), else a
    /// dense copy.
    /// - Throws: ``TensorError`` naming both shapes if the counts differ or the shape is malformed.
    public func reshaped(_ newShape: [Int]) throws -> Tensor {
        let inferred = newShape.indices.filter { newShape[$0] == -1 }
        guard inferred.count <= 1, newShape.allSatisfy({ $0 >= -1 }) else {
            throw TensorError.shapeMismatch("reshaped", shape, newShape,
                                            detail: "dimensions must be non-negative, with at most one -1")
        }
        var resolved = newShape
        if let unknown = inferred.first {
            let known = newShape.enumerated().reduce(1) { $1.offset == unknown ? $0 : $0 * $1.element }
            guard known > 0, count % known == 0 else {
                throw TensorError.shapeMismatch("reshaped", shape, newShape,
                                                detail: "\(count) elements do not divide into the known dimensions (\(known))")
            }
            resolved[unknown] = count / known
        }
        guard resolved.reduce(1, *) == count else {
            throw TensorError.shapeMismatch("reshaped", shape, newShape,
                                            detail: "\(count) elements cannot take a shape of \(resolved.reduce(1, *))")
        }
        var view: Tensor
        if let viewStrides = isContiguous
            ? Tensor.contiguousStrides(resolved)
            : ShapeKernel.viewStrides(shape: shape, strides: strides, newShape: resolved) {
            view = detached()
            view.strides = viewStrides
        } else {
            view = densified().detached()
            view.strides = Tensor.contiguousStrides(resolved)
        }
        view.shape = resolved
        let originalShape = shape
        return view.recorded("reshaped", inputs: [self]) { gradOut, _ in
            var gradient = gradOut
            gradient.shape = originalShape
            gradient.strides = Tensor.contiguousStrides(originalShape)
            return [gradient]
        }
    }

    /// A view with axes `axis0` and `axis1` swapped (negative axes count from the end).
    /// - Throws: ``TensorError`` if an axis is out of range.
    public func transposed(_ axis0: Int, _ axis1: Int) throws -> Tensor {
        let first = try ShapeKernel.resolvedAxis(axis0, shape: shape, op: "transposed")
        let second = try ShapeKernel.resolvedAxis(axis1, shape: shape, op: "transposed")
        var view = detached()
        view.shape.swapAt(first, second)
        view.strides.swapAt(first, second)
        return view.recorded("transposed", inputs: [self]) { gradOut, _ in
            var gradient = gradOut
            gradient.shape.swapAt(first, second)
            gradient.strides.swapAt(first, second)
            return [gradient.densified()]
        }
    }

    /// A view whose axis i is axis `axes[i]` of `self` (negative axes count from the end).
    /// - Throws: ``TensorError`` if `axes` is not a permutation of the axes.
    public func permuted(_ axes: [Int]) throws -> Tensor {
        let resolved = axes.map { $0 < 0 ? $0 + rank : $0 }
        guard resolved.count == rank, Set(resolved) == Set(0..<rank) else {
            throw TensorError(.invalidArgument, "permuted: \(axes) is not a permutation of the axes of shape \(shape)")
        }
        var view = detached()
        view.shape = resolved.map { shape[$0] }
        view.strides = resolved.map { strides[$0] }
        var inverse = [Int](repeating: 0, count: rank)
        for (position, axis) in resolved.enumerated() { inverse[axis] = position }
        return view.recorded("permuted", inputs: [self]) { gradOut, _ in
            var gradient = gradOut
            gradient.shape = inverse.map { gradOut.shape[$0] }
            gradient.strides = inverse.map { gradOut.strides[$0] }
            return [gradient.densified()]
        }
    }

    /// A view of `range` along `axis` (negative axes count from the end); the other axes are whole.
    /// - Throws: ``TensorError`` if the axis or range is out of bounds.
    public func sliced(axis: Int, range: Range<Int>) throws -> Tensor {
        let resolved = try ShapeKernel.resolvedAxis(axis, shape: shape, op: "sliced")
        guard range.lowerBound >= 0 && range.upperBound <= shape[resolved] else {
            throw TensorError(.invalidArgument,
                              "sliced: range \(range) is outside 0..<\(shape[resolved]) on axis \(axis) of shape \(shape)")
        }
        return slice(axis: resolved, range: range, op: "sliced")
    }

    /// The view of `range` along resolved `axis`, recorded as `op`: its gradient is zero outside the range.
    fileprivate func slice(axis: Int, range: Range<Int>, op: String) -> Tensor {
        var view = detached()
        view.shape[axis] = range.count
        view.offset += range.lowerBound * strides[axis]
        let inputShape = shape
        return view.recorded(op, inputs: [self]) { gradOut, _ in
            let dinp = Tensor.zeros(inputShape)
            ShapeKernel.copy(shape: gradOut.shape, source: gradOut.pointer, sourceStrides: gradOut.strides,
                             destination: dinp.pointer + range.lowerBound * dinp.strides[axis],
                             destinationStrides: dinp.strides)
            return [dinp]
        }
    }

    /// Views of consecutive pieces of `axis` with the given sizes (which must add up to its length).
    /// - Throws: ``TensorError`` if the axis is out of range or the sizes do not add up.
    public func split(axis: Int, sizes: [Int]) throws -> [Tensor] {
        let resolved = try ShapeKernel.resolvedAxis(axis, shape: shape, op: "split")
        guard sizes.allSatisfy({ $0 >= 0 }), sizes.reduce(0, +) == shape[resolved] else {
            throw TensorError(.invalidArgument,
                              "split: sizes \(sizes) do not add up to \(shape[resolved]) on axis \(axis) of shape \(shape)")
        }
        var start = 0
        return sizes.map { size in
            defer { start += size }
            return slice(axis: resolved, range: start..<(start + size), op: "split")
        }
    }

    /// The tensors joined along `axis` (negative counts from the end); all other dimensions must agree.
    /// Always a new dense tensor.
    /// - Throws: ``TensorError`` if the list is empty, the axis is out of range, or shapes differ
    ///   outside `axis` (naming the first shape and the offending one).
    public static func concatenate(_ tensors: [Tensor], axis: Int) throws -> Tensor {
        guard let first = tensors.first else {
            throw TensorError(.invalidArgument, "concatenate: needs at least one tensor")
        }
        let resolved = try ShapeKernel.resolvedAxis(axis, shape: first.shape, op: "concatenate")
        for (index, tensor) in tensors.enumerated() {
            let agrees = tensor.rank == first.rank
                && (0..<first.rank).allSatisfy { $0 == resolved || tensor.shape[$0] == first.shape[$0] }
            guard agrees else {
                throw TensorError.shapeMismatch("concatenate", first.shape, tensor.shape,
                                                detail: "tensor \(index) differs outside axis \(resolved)")
            }
        }
        let sizes = tensors.map { $0.shape[resolved] }
        var outputShape = first.shape
        outputShape[resolved] = sizes.reduce(0, +)
        let out = Tensor.empty(outputShape)
        var start = 0
        for tensor in tensors {
            ShapeKernel.copy(shape: tensor.shape, source: tensor.pointer, sourceStrides: tensor.strides,
                             destination: out.pointer + start * out.strides[resolved], destinationStrides: out.strides)
            start += tensor.shape[resolved]
        }
        return out.recorded("concatenate", inputs: tensors) { gradOut, needs in
            var gradients: [Tensor?] = []
            var start = 0
            for (index, size) in sizes.enumerated() {
                defer { start += size }
                guard needs[index] else {
                    gradients.append(nil)
                    continue
                }
                var piece = gradOut
                piece.shape[resolved] = size
                piece.offset += start * gradOut.strides[resolved]
                gradients.append(piece.densified())
            }
            return gradients
        }
    }

    /// A view with `shape` whose missing leading axes and size-1 axes repeat the data (stride 0),
    /// NumPy style. Its gradient sums back over the repeated axes.
    /// - Throws: ``TensorError`` naming both shapes if this shape does not broadcast to `target`.
    public func broadcast(to target: [Int]) throws -> Tensor {
        let leading = target.count - rank
        let compatible = leading >= 0 && target.allSatisfy { $0 >= 0 } && shape.enumerated().allSatisfy { axis, size in
            size == target[axis + leading] || size == 1
        }
        guard compatible else {
            throw TensorError.shapeMismatch("broadcast(to:)", shape, target,
                                            detail: "each dimension must equal the target's or be 1")
        }
        if target == shape { return self }
        var view = detached()
        view.shape = target
        view.strides = (0..<target.count).map { axis in
            axis < leading || shape[axis - leading] != target[axis] ? 0 : strides[axis - leading]
        }
        let originalShape = shape
        return view.recorded("broadcast(to:)", inputs: [self]) { gradOut, _ in
            [Tensor.sumBroadcastGradient(gradOut, to: originalShape)]
        }
    }
}
