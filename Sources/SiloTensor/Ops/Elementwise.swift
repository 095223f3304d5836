#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// Legend: N elements; a, b the operands of a binary operation and out its (broadcast) output.
// A broadcast layout walks out as rows × columns: columns is the innermost run of merged axes,
// rows everything outside it; aStride/bStride are the operands' steps along that run (1 dense,
// 0 broadcast, anything else strided).

// MARK: - Operations

/// One binary element operation, specialised into ``ElementwiseKernel/binaryForward(_:layout:a:b:out:)``.
protocol ElementwiseBinaryOperation {
    static func apply(_ a: Float, _ b: Float) -> Float
}

// MARK: - Layout

/// How to walk `out = a ∘ b` when out is dense and a, b are read through strides (0 on broadcast
/// axes, whatever their own strides are on the others): size-1 axes dropped, adjacent axes merged
/// wherever every operand stays linear across them.
///
/// The common cases come out as one or two axes: same-shape dense operands become one run (split
/// across workers in chunks); a scalar is a run with stride 0; a bias (C) against (B,T,C) becomes
/// (B·T) rows × C columns with the bias row stride 0; a per-row scale (R,1) against (R,C) becomes
/// R rows × C columns with the scale column stride 0. Anything else is walked row by row.
struct BroadcastLayout {
    /// Sizes of the merged axes, outermost first; empty when out has a single element.
    var shape: [Int]
    /// Strides of each operand along the merged axes (`strides[k][axis]` for operand k).
    var strides: [[Int]]
    /// Number of elements of out.
    var count: Int

    /// The layout of `outputShape`, with each operand given by its shape (right-aligned against
    /// `outputShape`, NumPy style) and strides.
    init(outputShape: [Int], operands: [(shape: [Int], strides: [Int])]) {
        let rank = outputShape.count
        var merged: [Int] = []
        var mergedStrides = [[Int]](repeating: [], count: operands.count)
        for axis in 0..<rank where outputShape[axis] != 1 {
            let size = outputShape[axis]
            let axisStrides = operands.map { operand -> Int in
                let own = axis - (rank - operand.shape.count)
                return own < 0 || operand.shape[own] == 1 ? 0 : operand.strides[own]
            }
            let last = merged.count - 1
            if last >= 0 && (0..<operands.count).allSatisfy({ mergedStrides[$0][last] == axisStrides[$0] * size }) {
                merged[last] *= size
                for k in 0..<operands.count { mergedStrides[k][last] = axisStrides[k] }
            } else {
                merged.append(size)
                for k in 0..<operands.count { mergedStrides[k].append(axisStrides[k]) }
            }
        }
        shape = merged
        strides = mergedStrides
        count = outputShape.reduce(1, *)
    }
}

/// Offsets of two strided operands at successive rows of a row-major walk over `shape`.
struct StridedCursor {
    let shape: [Int]
    let firstStrides: [Int]
    let secondStrides: [Int]
    private var index: [Int]
    private(set) var first = 0
    private(set) var second = 0

    /// A cursor positioned at row `row` (0-based, row-major over `shape`).
    init(shape: [Int], firstStrides: [Int], secondStrides: [Int], row: Int) {
        self.shape = shape
        self.firstStrides = firstStrides
        self.secondStrides = secondStrides
        index = [Int](repeating: 0, count: shape.count)
        var remaining = row
        for axis in stride(from: shape.count - 1, through: 0, by: -1) {
            let position = remaining % shape[axis]
            remaining /= shape[axis]
            index[axis] = position
            first += position * firstStrides[axis]
            second += position * secondStrides[axis]
        }
    }

    /// Moves to the next row (wrapping to row 0 after the last).
    @inline(__always)
    mutating func advance() {
        var axis = shape.count - 1
        while axis >= 0 {
            index[axis] += 1
            first += firstStrides[axis]
            second += secondStrides[axis]
            if index[axis] < shape[axis] { return }
            first -= firstStrides[axis] * shape[axis]
            second -= secondStrides[axis] * shape[axis]
            index[axis] = 0
            axis -= 1
        }
    }
}

// MARK: - Kernels

/// Element-wise kernels: binary operations with broadcasting, and the unary maps with their backward.
///
/// The backward of a binary operation needs no kernel of its own: d(a+b) is dout itself,
/// d(a·b)/da = dout·b and d(a/b)/db = −dout·out/b are binary operations on dout, and the result is
/// summed back over broadcast axes by ``ReductionKernel/sumForward(inp:shape:reduced:scale:out:)``.
public enum ElementwiseKernel {
    enum Add: ElementwiseBinaryOperation {
        @inline(__always) static func apply(_ a: Float, _ b: Float) -> Float { a + b }
    }
    enum Subtract: ElementwiseBinaryOperation {
        @inline(__always) static func apply(_ a: Float, _ b: Float) -> Float { a - b }
    }
    enum Multiply: ElementwiseBinaryOperation {
        @inline(__always) static func apply(_ a: Float, _ b: Float) -> Float { a * b }
    }
    enum Divide: ElementwiseBinaryOperation {
        @inline(__always) static func apply(_ a: Float, _ b: Float) -> Float { a / b }
    }

    /// out (n) = a (n, step aStride) ∘ b (n, step bStride). Steps 1 and 0 get their own loops so the
    /// compiler vectorises the dense, vector-scalar and scalar-vector cases.
    @inline(__always)
    static func binaryRow<Op: ElementwiseBinaryOperation>(
        _: Op.Type, count n: Int, a: UnsafePointer<Float>, aStride: Int, b: UnsafePointer<Float>, bStride: Int,
        out: UnsafeMutablePointer<Float>
    ) {
        if aStride == 1 && bStride == 1 {
            for i in 0..<n { out[i] = Op.apply(a[i], b[i]) }
        } else if aStride == 1 && bStride == 0 {
            let scalar = b.pointee
            for i in 0..<n { out[i] = Op.apply(a[i], scalar) }
        } else if aStride == 0 && bStride == 1 {
            let scalar = a.pointee
            for i in 0..<n { out[i] = Op.apply(scalar, b[i]) }
        } else {
            for i in 0..<n { out[i] = Op.apply(a[i * aStride], b[i * bStride]) }
        }
    }

    /// out (layout.shape, dense) = a ∘ b, with a and b read through `layout.strides[0]` and
    /// `layout.strides[1]`. A single run is split into chunks across workers; otherwise rows are.
    static func binaryForward<Op: ElementwiseBinaryOperation>(
        _ op: Op.Type, layout: BroadcastLayout, a: UnsafePointer<Float>, b: UnsafePointer<Float>,
        out: UnsafeMutablePointer<Float>
    ) {
        precondition(layout.strides.count == 2, "binaryForward: layout of \(layout.strides.count) operands")
        if layout.count == 0 { return }
        guard let columns = layout.shape.last else {
            out.pointee = Op.apply(a.pointee, b.pointee)
            return
        }
        let last = layout.shape.count - 1
        let aStride = layout.strides[0][last], bStride = layout.strides[1][last]
        let rows = layout.count / columns
        if rows == 1 {
            Parallel.forEachChunk(columns, costPerItem: 2) { range in
                let start = range.lowerBound
                binaryRow(op, count: range.count, a: a + start * aStride, aStride: aStride,
                          b: b + start * bStride, bStride: bStride, out: out + start)
            }
            return
        }
        let outerShape = Array(layout.shape.dropLast())
        let outerA = Array(layout.strides[0].dropLast()), outerB = Array(layout.strides[1].dropLast())
        Parallel.forEachChunk(rows, costPerItem: 2 * columns) { range in
            var cursor = StridedCursor(shape: outerShape, firstStrides: outerA, secondStrides: outerB,
                                       row: range.lowerBound)
            for row in range {
                binaryRow(op, count: columns, a: a + cursor.first, aStride: aStride,
                          b: b + cursor.second, bStride: bStride, out: out + row * columns)
                cursor.advance()
            }
        }
    }

    /// out (N) = inp (N) · factor. Also the backward of scaling: dinp (N) = dout (N) · factor.
    public static func scale(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, factor: Float, count: Int) {
        Parallel.forEachChunk(count, costPerItem: 2) { range in
            for i in range { out[i] = inp[i] * factor }
        }
    }

    /// out (N) = inp (N) + value. (Its backward is the identity.)
    public static func addScalar(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, value: Float, count: Int) {
        Parallel.forEachChunk(count, costPerItem: 2) { range in
            for i in range { out[i] = inp[i] + value }
        }
    }

    /// out (N) = e^inp (N).
    public static func expForward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, count: Int) {
        Parallel.forEachChunk(count, costPerItem: 16) { range in
            for i in range { out[i] = expf(inp[i]) }
        }
    }

    /// dinp (N) = dout (N) · out (N), since d e^x / dx = e^x.
    public static func expBackward(dinp: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>,
                                   out: UnsafePointer<Float>, count: Int) {
        Parallel.forEachChunk(count, costPerItem: 2) { range in
            for i in range { dinp[i] = dout[i] * out[i] }
        }
    }

    /// out (N) = ln inp (N).
    public static func logForward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, count: Int) {
        Parallel.forEachChunk(count, costPerItem: 16) { range in
            for i in range { out[i] = logf(inp[i]) }
        }
    }

    /// dinp (N) = dout (N) / inp (N), since d ln x / dx = 1/x.
    public static func logBackward(dinp: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>,
                                   inp: UnsafePointer<Float>, count: Int) {
        Parallel.forEachChunk(count, costPerItem: 4) { range in
            for i in range { dinp[i] = dout[i] / inp[i] }
        }
    }

    /// out (N) = inp (N)².
    public static func squareForward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, count: Int) {
        Parallel.forEachChunk(count, costPerItem: 2) { range in
            for i in range { out[i] = inp[i] * inp[i] }
        }
    }

    /// dinp (N) = 2 · inp (N) · dout (N), since d x² / dx = 2x.
    public static func squareBackward(dinp: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>,
                                      inp: UnsafePointer<Float>, count: Int) {
        Parallel.forEachChunk(count, costPerItem: 2) { range in
            for i in range { dinp[i] = 2 * inp[i] * dout[i] }
        }
    }

    /// out (N) = √inp (N).
    public static func squareRootForward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, count: Int) {
        Parallel.forEachChunk(count, costPerItem: 4) { range in
            for i in range { out[i] = inp[i].squareRoot() }
        }
    }

    /// dinp (N) = dout (N) / (2 · out (N)), since d √x / dx = 1 / (2√x).
    public static func squareRootBackward(dinp: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>,
                                          out: UnsafePointer<Float>, count: Int) {
        Parallel.forEachChunk(count, costPerItem: 4) { range in
            for i in range { dinp[i] = dout[i] / (2 * out[i]) }
        }
    }
}

// MARK: - Tensor API

extension Tensor {
    /// The NumPy broadcast of two shapes: right-aligned, each pair of dimensions equal or one of them 1.
    /// - Throws: ``TensorError`` naming `op`, both shapes and the first pair that cannot broadcast.
    static func broadcastShape(_ a: [Int], _ b: [Int], op: String) throws -> [Int] {
        let rank = max(a.count, b.count)
        var result = [Int](repeating: 1, count: rank)
        for axis in 0..<rank {
            let ownA = axis - (rank - a.count), ownB = axis - (rank - b.count)
            let sizeA = ownA >= 0 ? a[ownA] : 1, sizeB = ownB >= 0 ? b[ownB] : 1
            if sizeA == sizeB || sizeB == 1 {
                result[axis] = sizeA
            } else if sizeA == 1 {
                result[axis] = sizeB
            } else {
                throw TensorError.shapeMismatch(
                    op, a, b, detail: "sizes \(sizeA) and \(sizeB) at axis \(axis) of the broadcast shape do not broadcast")
            }
        }
        return result
    }

    /// out = a ∘ b over `outputShape` (their broadcast shape); any strides. Not recorded.
    static func broadcastingApply<Op: ElementwiseBinaryOperation>(
        _ op: Op.Type, _ a: Tensor, _ b: Tensor, outputShape: [Int]
    ) -> Tensor {
        let out = Tensor.empty(outputShape)
        let layout = BroadcastLayout(outputShape: outputShape,
                                     operands: [(a.shape, a.strides), (b.shape, b.strides)])
        ElementwiseKernel.binaryForward(op, layout: layout, a: a.pointer, b: b.pointer, out: out.pointer)
        return out
    }

    /// −gradient as a new dense tensor. Not recorded.
    fileprivate static func negatedGradient(_ gradient: Tensor) -> Tensor {
        let dense = gradient.densified()
        let out = Tensor.empty(dense.shape)
        ElementwiseKernel.scale(out: out.pointer, inp: dense.pointer, factor: -1, count: dense.count)
        return out
    }

    // MARK: Binary

    /// out = self + other, with NumPy broadcasting (shapes right-aligned; size-1 axes stretch).
    /// - Throws: ``TensorError`` naming both shapes if they do not broadcast.
    public func adding(_ other: Tensor) throws -> Tensor {
        let outputShape = try Tensor.broadcastShape(shape, other.shape, op: "adding")
        let out = Tensor.broadcastingApply(ElementwiseKernel.Add.self, self, other, outputShape: outputShape)
        let shapeA = shape, shapeB = other.shape
        return out.recorded("adding", inputs: [self, other]) { gradOut, needs in
            // d(a + b)/da = 1, d(a + b)/db = 1; broadcast operands sum the gradient back.
            [needs[0] ? Tensor.sumBroadcastGradient(gradOut, to: shapeA) : nil,
             needs[1] ? Tensor.sumBroadcastGradient(gradOut, to: shapeB) : nil]
        }
    }

    /// out = self − other, with NumPy broadcasting.
    /// - Throws: ``TensorError`` naming both shapes if they do not broadcast.
    public func subtracting(_ other: Tensor) throws -> Tensor {
        let outputShape = try Tensor.broadcastShape(shape, other.shape, op: "subtracting")
        let out = Tensor.broadcastingApply(ElementwiseKernel.Subtract.self, self, other, outputShape: outputShape)
        let shapeA = shape, shapeB = other.shape
        return out.recorded("subtracting", inputs: [self, other]) { gradOut, needs in
            // d(a − b)/da = 1, d(a − b)/db = −1.
            [needs[0] ? Tensor.sumBroadcastGradient(gradOut, to: shapeA) : nil,
             needs[1] ? Tensor.negatedGradient(Tensor.sumBroadcastGradient(gradOut, to: shapeB)) : nil]
        }
    }

    /// out = self ⊙ other (element-wise product), with NumPy broadcasting.
    /// - Throws: ``TensorError`` naming both shapes if they do not broadcast.
    public func multiplying(_ other: Tensor) throws -> Tensor {
        let outputShape = try Tensor.broadcastShape(shape, other.shape, op: "multiplying")
        let out = Tensor.broadcastingApply(ElementwiseKernel.Multiply.self, self, other, outputShape: outputShape)
        let a = detached(), b = other.detached()
        return out.recorded("multiplying", inputs: [self, other]) { gradOut, needs in
            // d(a·b)/da = b, d(a·b)/db = a.
            let multiply = ElementwiseKernel.Multiply.self
            let gradA = needs[0] ? Tensor.sumBroadcastGradient(
                Tensor.broadcastingApply(multiply, gradOut, b, outputShape: outputShape), to: a.shape) : nil
            let gradB = needs[1] ? Tensor.sumBroadcastGradient(
                Tensor.broadcastingApply(multiply, gradOut, a, outputShape: outputShape), to: b.shape) : nil
            return [gradA, gradB]
        }
    }

    /// out = self / other (element-wise quotient), with NumPy broadcasting.
    /// - Throws: ``TensorError`` naming both shapes if they do not broadcast.
    public func dividing(_ other: Tensor) throws -> Tensor {
        let outputShape = try Tensor.broadcastShape(shape, other.shape, op: "dividing")
        let out = Tensor.broadcastingApply(ElementwiseKernel.Divide.self, self, other, outputShape: outputShape)
        let shapeA = shape, b = other.detached(), savedOut = out.detached()
        return out.recorded("dividing", inputs: [self, other]) { gradOut, needs in
            // d(a/b)/da = 1/b, d(a/b)/db = −a/b² = −out/b.
            let divide = ElementwiseKernel.Divide.self
            let gradA = needs[0] ? Tensor.sumBroadcastGradient(
                Tensor.broadcastingApply(divide, gradOut, b, outputShape: outputShape), to: shapeA) : nil
            var gradB: Tensor? = nil
            if needs[1] {
                let product = Tensor.broadcastingApply(ElementwiseKernel.Multiply.self, gradOut, savedOut,
                                                       outputShape: outputShape)
                let quotient = Tensor.broadcastingApply(divide, product, b, outputShape: outputShape)
                gradB = Tensor.negatedGradient(Tensor.sumBroadcastGradient(quotient, to: b.shape))
            }
            return [gradA, gradB]
        }
    }

    /// `lhs.adding(rhs)`: element-wise sum with broadcasting.
    public static func + (lhs: Tensor, rhs: Tensor) throws -> Tensor { try lhs.adding(rhs) }
    /// `lhs.subtracting(rhs)`: element-wise difference with broadcasting.
    public static func - (lhs: Tensor, rhs: Tensor) throws -> Tensor { try lhs.subtracting(rhs) }
    /// `lhs.multiplying(rhs)`: element-wise product with broadcasting.
    public static func * (lhs: Tensor, rhs: Tensor) throws -> Tensor { try lhs.multiplying(rhs) }
    /// `lhs.dividing(rhs)`: element-wise quotient with broadcasting.
    public static func / (lhs: Tensor, rhs: Tensor) throws -> Tensor { try lhs.dividing(rhs) }

    // MARK: Unary

    /// out = self · factor, same shape.
    public func scaled(by factor: Float) -> Tensor {
        let input = densified()
        let out = Tensor.empty(shape)
        ElementwiseKernel.scale(out: out.pointer, inp: input.pointer, factor: factor, count: count)
        return out.recorded("scaled", inputs: [self]) { gradOut, _ in
            let dinp = Tensor.empty(gradOut.shape)
            ElementwiseKernel.scale(out: dinp.pointer, inp: gradOut.pointer, factor: factor, count: gradOut.count)
            return [dinp]
        }
    }

    /// out = self + value, same shape.
    public func adding(scalar value: Float) -> Tensor {
        let input = densified()
        let out = Tensor.empty(shape)
        ElementwiseKernel.addScalar(out: out.pointer, inp: input.pointer, value: value, count: count)
        return out.recorded("adding(scalar:)", inputs: [self]) { gradOut, _ in [gradOut] }
    }

    /// out = −self, same shape.
    public func negated() -> Tensor {
        let input = densified()
        let out = Tensor.empty(shape)
        ElementwiseKernel.scale(out: out.pointer, inp: input.pointer, factor: -1, count: count)
        return out.recorded("negated", inputs: [self]) { gradOut, _ in [Tensor.negatedGradient(gradOut)] }
    }

    /// out = e^self, element-wise.
    public func exp() -> Tensor {
        let input = densified()
        let out = Tensor.empty(shape)
        ElementwiseKernel.expForward(out: out.pointer, inp: input.pointer, count: count)
        let saved = out.detached()
        return out.recorded("exp", inputs: [self]) { gradOut, _ in
            let dinp = Tensor.empty(saved.shape)
            ElementwiseKernel.expBackward(dinp: dinp.pointer, dout: gradOut.pointer, out: saved.pointer, count: saved.count)
            return [dinp]
        }
    }

    /// out = ln self, element-wise (NaN below 0, −∞ at 0).
    public func log() -> Tensor {
        let input = densified()
        let out = Tensor.empty(shape)
        ElementwiseKernel.logForward(out: out.pointer, inp: input.pointer, count: count)
        let saved = input.detached()
        return out.recorded("log", inputs: [self]) { gradOut, _ in
            let dinp = Tensor.empty(saved.shape)
            ElementwiseKernel.logBackward(dinp: dinp.pointer, dout: gradOut.pointer, inp: saved.pointer, count: saved.count)
            return [dinp]
        }
    }

    /// out = self², element-wise.
    public func squared() -> Tensor {
        let input = densified()
        let out = Tensor.empty(shape)
        ElementwiseKernel.squareForward(out: out.pointer, inp: input.pointer, count: count)
        let saved = input.detached()
        return out.recorded("squared", inputs: [self]) { gradOut, _ in
            let dinp = Tensor.empty(saved.shape)
            ElementwiseKernel.squareBackward(dinp: dinp.pointer, dout: gradOut.pointer, inp: saved.pointer, count: saved.count)
            return [dinp]
        }
    }

    /// out = √self, element-wise (NaN below 0; the gradient at 0 is +∞).
    public func squareRoot() -> Tensor {
        let input = densified()
        let out = Tensor.empty(shape)
        ElementwiseKernel.squareRootForward(out: out.pointer, inp: input.pointer, count: count)
        let saved = out.detached()
        return out.recorded("squareRoot", inputs: [self]) { gradOut, _ in
            let dinp = Tensor.empty(saved.shape)
            ElementwiseKernel.squareRootBackward(dinp: dinp.pointer, dout: gradOut.pointer, out: saved.pointer,
                                                 count: saved.count)
            return [dinp]
        }
    }
}
