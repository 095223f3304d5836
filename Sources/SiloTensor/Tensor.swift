#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An n-dimensional array of Float32 values, row-major, with copy-on-write storage.
///
/// A `Tensor` is a view: a shape, strides (in elements) and an offset into a shared
/// ``TensorStorage``. Reshaping a contiguous tensor, transposing and slicing make views without
/// copying; ``contiguous()`` copies when a kernel needs dense memory. Mutating a tensor whose storage
/// is shared copies it first (value semantics).
///
/// A tensor that ``requiresGrad`` carries a node of the reverse-mode graph: every operation on it
/// records how to send gradients back, and ``backward()`` / ``backward(seed:)`` runs them.
/// Tensors are `Sendable` as values; the gradient graph itself is not meant to be shared across
/// threads while it is being built — send ``detached()`` tensors between tasks.
public struct Tensor: @unchecked Sendable {
    public internal(set) var storage: TensorStorage
    public internal(set) var shape: [Int]
    public internal(set) var strides: [Int]
    public internal(set) var offset: Int
    /// The gradient-graph node, if this tensor requires gradients.
    var node: GradNode?

    // MARK: Creation

    init(storage: TensorStorage, shape: [Int], strides: [Int], offset: Int, node: GradNode? = nil) {
        self.storage = storage
        self.shape = shape
        self.strides = strides
        self.offset = offset
        self.node = node
    }

    /// A tensor of the given shape whose contents are undefined; kernels fill it.
    public static func empty(_ shape: [Int]) -> Tensor {
        precondition(shape.allSatisfy { $0 >= 0 }, "Tensor: negative dimension in shape \(shape)")
        let count = shape.reduce(1, *)
        return Tensor(storage: TensorStorage(uninitializedCount: count), shape: shape,
                      strides: Tensor.contiguousStrides(shape), offset: 0)
    }

    /// A tensor of the given shape filled with `value`.
    public init(shape: [Int], repeating value: Float) {
        precondition(shape.allSatisfy { $0 >= 0 }, "Tensor: negative dimension in shape \(shape)")
        let count = shape.reduce(1, *)
        self.init(storage: TensorStorage(count: count, repeating: value), shape: shape,
                  strides: Tensor.contiguousStrides(shape), offset: 0)
    }

    /// A tensor of zeros.
    public static func zeros(_ shape: [Int]) -> Tensor { Tensor(shape: shape, repeating: 0) }

    /// A tensor of ones.
    public static func ones(_ shape: [Int]) -> Tensor { Tensor(shape: shape, repeating: 1) }

    /// A tensor holding `values` in row-major order.
    /// - Throws: ``TensorError`` if `values.count` is not the product of `shape`.
    public init(shape: [Int], values: [Float]) throws {
        guard shape.allSatisfy({ $0 >= 0 }), shape.reduce(1, *) == values.count else {
            throw TensorError(.shapeMismatch,
                              "Tensor(shape:values:): shape \(shape) holds \(shape.reduce(1, *)) values, got \(values.count)")
        }
        self = Tensor.empty(shape)
        values.withUnsafeBufferPointer { source in
            if let base = source.baseAddress { storage.pointer.update(from: base, count: values.count) }
        }
    }

    /// A tensor holding `values` as a 1-D array.
    public init(_ values: [Float]) {
        self = Tensor.empty([values.count])
        values.withUnsafeBufferPointer { source in
            if let base = source.baseAddress { storage.pointer.update(from: base, count: values.count) }
        }
    }

    /// A rank-0 tensor holding one value.
    public init(scalar: Float) {
        self = Tensor.empty([])
        storage.pointer.pointee = scalar
    }

    // MARK: Shape

    /// Number of elements.
    public var count: Int { shape.reduce(1, *) }
    /// Number of dimensions.
    public var rank: Int { shape.count }

    /// Whether the elements are dense in row-major order (a kernel may use the raw pointer).
    public var isContiguous: Bool {
        var expected = 1
        for axis in stride(from: shape.count - 1, through: 0, by: -1) {
            if shape[axis] != 1 && strides[axis] != expected { return false }
            expected *= shape[axis]
        }
        return true
    }

    /// Row-major strides for `shape`.
    public static func contiguousStrides(_ shape: [Int]) -> [Int] {
        var strides = [Int](repeating: 1, count: shape.count)
        var running = 1
        for axis in stride(from: shape.count - 1, through: 0, by: -1) {
            strides[axis] = running
            running *= shape[axis]
        }
        return strides
    }

    /// Normalises a possibly negative axis.
    func axis(_ axis: Int, op: String) throws -> Int {
        let resolved = axis < 0 ? axis + rank : axis
        guard resolved >= 0 && resolved < max(rank, 1) else {
            throw TensorError(.invalidArgument, "\(op): axis \(axis) is out of range for shape \(shape)")
        }
        return resolved
    }

    // MARK: Raw access (kernels)

    /// Pointer to the first element. Only meaningful as dense memory when ``isContiguous``.
    public var pointer: UnsafeMutablePointer<Float> { storage.pointer + offset }

    /// Makes the storage unique (copying if shared) and contiguous, so it may be written in place.
    public mutating func makeUniqueContiguous() {
        if !isContiguous || !isKnownUniquelyReferenced(&storage) || storage.count != count {
            let copy = contiguousCopy()
            storage = copy.storage
            strides = copy.strides
            offset = 0
        }
    }

    /// Calls `body` with the elements as a dense buffer, copying first if the tensor is a strided view.
    public func withUnsafeBufferPointer<R>(_ body: (UnsafeBufferPointer<Float>) throws -> R) rethrows -> R {
        let dense = isContiguous ? self : contiguousCopy()
        return try body(UnsafeBufferPointer(start: dense.pointer, count: dense.count))
    }

    /// Calls `body` with writable dense elements; copies first if the storage is shared or strided.
    public mutating func withUnsafeMutableBufferPointer<R>(
        _ body: (UnsafeMutableBufferPointer<Float>) throws -> R
    ) rethrows -> R {
        makeUniqueContiguous()
        return try body(UnsafeMutableBufferPointer(start: pointer, count: count))
    }

    /// The elements in row-major order.
    public func toArray() -> [Float] {
        withUnsafeBufferPointer { Array($0) }
    }

    /// The single value of a one-element tensor.
    public var scalar: Float {
        precondition(count == 1, "Tensor.scalar: tensor of shape \(shape) has \(count) elements, not 1")
        return storage.pointer[offset]
    }

    /// Element at a multi-dimensional index.
    public subscript(_ indices: Int...) -> Float {
        precondition(indices.count == rank, "Tensor subscript: \(indices.count) indices for shape \(shape)")
        var position = offset
        for (axis, index) in indices.enumerated() {
            precondition(index >= 0 && index < shape[axis], "Tensor subscript: index \(indices) out of range for shape \(shape)")
            position += index * strides[axis]
        }
        return storage.pointer[position]
    }

    // MARK: Copies

    /// A dense copy (always copies). Does not record a gradient node.
    func contiguousCopy() -> Tensor {
        var result = Tensor.empty(shape)
        if isContiguous {
            result.storage.pointer.update(from: pointer, count: count)
        } else {
            Tensor.stridedCopy(from: storage.pointer + offset, shape: shape, strides: strides,
                               to: result.storage.pointer)
        }
        result.node = nil
        return result
    }

    /// Copies a strided view into dense row-major memory.
    static func stridedCopy(from source: UnsafePointer<Float>, shape: [Int], strides: [Int],
                            to destination: UnsafeMutablePointer<Float>) {
        let rank = shape.count
        if rank == 0 { destination.pointee = source.pointee; return }
        let total = shape.reduce(1, *)
        if total == 0 { return }
        let inner = shape[rank - 1]
        let innerStride = strides[rank - 1]
        let outer = total / inner
        var index = [Int](repeating: 0, count: rank)
        var sourceOffset = 0
        for row in 0..<outer {
            let out = destination + row * inner
            let base = source + sourceOffset
            if innerStride == 1 {
                out.update(from: base, count: inner)
            } else {
                for i in 0..<inner { out[i] = base[i * innerStride] }
            }
            // Advance the outer multi-index (all axes except the last).
            var axis = rank - 2
            while axis >= 0 {
                index[axis] += 1
                sourceOffset += strides[axis]
                if index[axis] < shape[axis] { break }
                sourceOffset -= strides[axis] * shape[axis]
                index[axis] = 0
                axis -= 1
            }
        }
    }
}

extension Tensor: CustomStringConvertible {
    public var description: String {
        let values = toArray()
        let shown = values.prefix(8).map { "\($0)" }.joined(separator: ", ")
        return "Tensor(shape: \(shape), [\(shown)\(values.count > 8 ? ", …" : "")]\(requiresGrad ? ", requiresGrad" : ""))"
    }
}
