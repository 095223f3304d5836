import SiloTensor

// B batch, T time, C input features, O output features, V vocabulary. Layers hold tensors and call
// SiloTensor ops; they never touch storage. Parameter names relative to a layer are Hugging Face's
// ("weight", "bias"); a model prefixes them with the layer's path ("model.layers.3.self_attn.q_proj").

/// A layer that maps (…, in) to (…, out): a ``Linear``, or an adapter wrapping one (LoRA).
///
/// Models hold their projections as `any LinearLayer`, so an adapter can replace a ``Linear`` in place
/// (``LanguageModel/replaceLinearLayer(named:with:)``) without the model knowing about adapters.
public protocol LinearLayer: AnyObject {
    /// in: the size of the last axis of the input.
    var inputSize: Int { get }
    /// out: the size of the last axis of the output.
    var outputSize: Int { get }
    /// The layer's tensors, named relative to the layer (`weight`, `bias`; an adapter adds its own).
    var namedParameters: [(name: String, tensor: Tensor)] { get }
    /// Replaces the tensor `name` (relative to the layer) by `tensor` of the same shape.
    /// - Throws: ``ModelError`` `.missingTensor` for an unknown name, `.wrongShape` for another shape.
    func setParameter(_ name: String, to tensor: Tensor) throws
    /// y (…, out) for x (…, in).
    func callAsFunction(_ x: Tensor) throws -> Tensor
}

/// A fully connected layer, `y = x·Wᵀ + b`, with Hugging Face's `nn.Linear` layout: weight (O, C) and an
/// optional bias (O).
///
/// This is the one place where a model multiplies activations by a projection matrix: adapters wrap
/// it. GPT-2's `Conv1D` stores its weight as (C, O); ``init(conv1DWeight:bias:)`` transposes it once, at
/// load, so every projection here has the same layout.
public final class Linear: LinearLayer {
    /// W (O, C), dense.
    public private(set) var weight: Tensor
    /// b (O), or nil.
    public private(set) var bias: Tensor?

    /// A layer with `weight` (O, C) and `bias` (O).
    /// - Precondition: `weight` is 2-D and `bias`, when given, is (O) (loaders verify shapes first and
    ///   throw ``ModelError``).
    public init(weight: Tensor, bias: Tensor? = nil) {
        precondition(weight.rank == 2, "Linear: weight must be (out, in), got \(weight.shape)")
        precondition(bias == nil || bias?.shape == [weight.shape[0]],
                     "Linear: bias \(bias?.shape ?? []) does not match weight \(weight.shape)")
        self.weight = weight.contiguous()
        self.bias = bias?.contiguous()
    }

    /// A layer from a Hugging Face `Conv1D` weight (C, O) (GPT-2), transposed once to a dense (O, C)
    /// without gradient history.
    /// - Throws: ``TensorError`` if the weight is not 2-D.
    public convenience init(conv1DWeight: Tensor, bias: Tensor? = nil) throws {
        let transposed = try Tensor.withoutGradients { try conv1DWeight.transposed(0, 1).contiguous() }
        self.init(weight: transposed, bias: bias?.detached())
    }

    public var inputSize: Int { weight.shape[1] }
    public var outputSize: Int { weight.shape[0] }

    public var namedParameters: [(name: String, tensor: Tensor)] {
        var list: [(name: String, tensor: Tensor)] = [("weight", weight)]
        if let bias { list.append(("bias", bias)) }
        return list
    }

    public func setParameter(_ name: String, to tensor: Tensor) throws {
        switch name {
        case "weight":
            guard tensor.shape == weight.shape else {
                throw ModelError.wrongShape(name, expected: weight.shape, actual: tensor.shape)
            }
            weight = tensor.contiguous()
        case "bias":
            guard let current = bias else { throw ModelError.missingTensor(name, expected: [outputSize]) }
            guard tensor.shape == current.shape else {
                throw ModelError.wrongShape(name, expected: current.shape, actual: tensor.shape)
            }
            bias = tensor.contiguous()
        default:
            throw ModelError(.missingTensor, "Linear has no parameter '\(name)' (it has weight\(bias == nil ? "" : " and bias"))")
        }
    }

    /// y (…, O) = x (…, C) · Wᵀ + b: one GEMM with the leading axes folded into its rows (W is used
    /// transposed in place, never copied) and the bias fused into it (``Tensor/linear(weight:bias:)``).
    /// - Throws: ``TensorError`` if the last axis of `x` is not C.
    public func callAsFunction(_ x: Tensor) throws -> Tensor {
        try x.linear(weight: weight, bias: bias)
    }
}

/// A token embedding table, weight (V, C) (Hugging Face `nn.Embedding`).
public final class Embedding {
    /// (V, C), dense.
    public private(set) var weight: Tensor

    /// - Precondition: `weight` is 2-D.
    public init(weight: Tensor) {
        precondition(weight.rank == 2, "Embedding: weight must be (vocabulary, channels), got \(weight.shape)")
        self.weight = weight.contiguous()
    }

    /// V.
    public var vocabularySize: Int { weight.shape[0] }
    /// C.
    public var dimension: Int { weight.shape[1] }

    /// out (B, T, C) = rows of the table for ids (B·T, row-major).
    /// - Throws: ``TensorError`` for an id outside 0..<V (naming its position).
    public func callAsFunction(ids: [Int32], batch: Int, time: Int) throws -> Tensor {
        try Tensor.embedding(weight: weight, ids: ids, shape: [batch, time])
    }

    /// logits (…, V) = hidden (…, C) · weightᵀ: the table used as a tied output projection, without a copy.
    public func asLinear(_ hidden: Tensor) throws -> Tensor {
        try hidden.matmul(weight, transposeB: true)
    }

    func setWeight(_ tensor: Tensor, name: String) throws {
        guard tensor.shape == weight.shape else {
            throw ModelError.wrongShape(name, expected: weight.shape, actual: tensor.shape)
        }
        weight = tensor.contiguous()
    }
}

/// Root-mean-square normalisation over the last axis with a learned scale (Llama's `LlamaRMSNorm`):
/// y = x / √(mean(x²) + ε) · weight, in Float32.
public final class RMSNorm {
    /// (C).
    public private(set) var weight: Tensor
    public let epsilon: Float

    public init(weight: Tensor, epsilon: Float) {
        precondition(weight.rank == 1, "RMSNorm: weight must be (C), got \(weight.shape)")
        self.weight = weight.contiguous()
        self.epsilon = epsilon
    }

    /// y (…, C) for x (…, C).
    public func callAsFunction(_ x: Tensor) throws -> Tensor {
        try x.rmsNorm(weight: weight, epsilon: epsilon)
    }

    func setWeight(_ tensor: Tensor, name: String) throws {
        guard tensor.shape == weight.shape else {
            throw ModelError.wrongShape(name, expected: weight.shape, actual: tensor.shape)
        }
        weight = tensor.contiguous()
    }
}

/// Layer normalisation over the last axis with PyTorch semantics (GPT-2's `ln_1`, `ln_2`, `ln_f`):
/// y = (x − mean) / √(var + ε) · weight + bias.
public final class LayerNorm {
    /// (C).
    public private(set) var weight: Tensor
    /// (C).
    public private(set) var bias: Tensor
    public let epsilon: Float

    public init(weight: Tensor, bias: Tensor, epsilon: Float) {
        precondition(weight.rank == 1 && bias.shape == weight.shape,
                     "LayerNorm: weight \(weight.shape) and bias \(bias.shape) must both be (C)")
        self.weight = weight.contiguous()
        self.bias = bias.contiguous()
        self.epsilon = epsilon
    }

    /// y (…, C) for x (…, C).
    public func callAsFunction(_ x: Tensor) throws -> Tensor {
        try x.layerNorm(weight: weight, bias: bias, epsilon: epsilon)
    }

    func setParameter(_ name: String, to tensor: Tensor, fullName: String) throws {
        guard tensor.shape == weight.shape else {
            throw ModelError.wrongShape(fullName, expected: weight.shape, actual: tensor.shape)
        }
        switch name {
        case "weight": weight = tensor.contiguous()
        case "bias": bias = tensor.contiguous()
        default: throw ModelError(.missingTensor, "LayerNorm has no parameter '\(fullName)'")
        }
    }
}
