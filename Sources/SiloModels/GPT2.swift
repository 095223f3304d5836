import SiloTensor

// B batch, T time (sequence), C channels (n_embd), H heads, D head size (C / H), V vocabulary,
// L layers. Weights use Hugging Face's GPT-2 layout: Conv1D weights are stored (in, out).

/// The configuration of a GPT-2 model, decoded from a Hugging Face `config.json`.
public struct GPT2Configuration: Codable, Sendable, Equatable {
    public var vocabularySize: Int
    public var maximumPositions: Int
    public var hiddenSize: Int
    public var layerCount: Int
    public var headCount: Int
    public var layerNormEpsilon: Float
    /// Inner size of the MLP; `nil` means 4 × hiddenSize.
    public var innerSize: Int?

    enum CodingKeys: String, CodingKey {
        case vocabularySize = "vocab_size"
        case maximumPositions = "n_positions"
        case hiddenSize = "n_embd"
        case layerCount = "n_layer"
        case headCount = "n_head"
        case layerNormEpsilon = "layer_norm_epsilon"
        case innerSize = "n_inner"
    }

    public init(vocabularySize: Int, maximumPositions: Int, hiddenSize: Int, layerCount: Int, headCount: Int,
                layerNormEpsilon: Float = 1e-5, innerSize: Int? = nil) {
        self.vocabularySize = vocabularySize
        self.maximumPositions = maximumPositions
        self.hiddenSize = hiddenSize
        self.layerCount = layerCount
        self.headCount = headCount
        self.layerNormEpsilon = layerNormEpsilon
        self.innerSize = innerSize
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        vocabularySize = try container.decode(Int.self, forKey: .vocabularySize)
        maximumPositions = try container.decode(Int.self, forKey: .maximumPositions)
        hiddenSize = try container.decode(Int.self, forKey: .hiddenSize)
        layerCount = try container.decode(Int.self, forKey: .layerCount)
        headCount = try container.decode(Int.self, forKey: .headCount)
        layerNormEpsilon = try container.decodeIfPresent(Float.self, forKey: .layerNormEpsilon) ?? 1e-5
        innerSize = try container.decodeIfPresent(Int.self, forKey: .innerSize)
    }

    /// The MLP's inner size.
    public var mlpSize: Int { innerSize ?? 4 * hiddenSize }

    /// Every weight of the model with its Hugging Face name and shape, in a fixed order.
    public var parameterShapes: [(name: String, shape: [Int])] {
        let c = hiddenSize, f = mlpSize
        var shapes: [(String, [Int])] = [("wte.weight", [vocabularySize, c]), ("wpe.weight", [maximumPositions, c])]
        for layer in 0..<layerCount {
            let p = "h.\(layer)."
            shapes += [
                (p + "ln_1.weight", [c]), (p + "ln_1.bias", [c]),
                (p + "attn.c_attn.weight", [c, 3 * c]), (p + "attn.c_attn.bias", [3 * c]),
                (p + "attn.c_proj.weight", [c, c]), (p + "attn.c_proj.bias", [c]),
                (p + "ln_2.weight", [c]), (p + "ln_2.bias", [c]),
                (p + "mlp.c_fc.weight", [c, f]), (p + "mlp.c_fc.bias", [f]),
                (p + "mlp.c_proj.weight", [f, c]), (p + "mlp.c_proj.bias", [c]),
            ]
        }
        shapes += [("ln_f.weight", [c]), ("ln_f.bias", [c])]
        return shapes
    }

    /// Number of parameters (the LM head is tied to `wte` and not counted twice).
    public var parameterCount: Int { parameterShapes.reduce(0) { $0 + $1.shape.reduce(1, *) } }
}

/// GPT-2 (learned positions, pre-LayerNorm blocks, GELU-tanh MLP, LM head tied to the token embedding),
/// numerically as Hugging Face's `GPT2LMHeadModel` with dropout off.
public final class GPT2Model {
    public let configuration: GPT2Configuration
    /// Weights by Hugging Face name. Trainable weights are gradient leaves.
    public private(set) var weights: [String: Tensor]

    /// Builds a model from named weights, checking every name and shape against the configuration.
    /// - Throws: ``ModelError`` naming the key, the expected and the actual shape.
    public init(configuration: GPT2Configuration, weights: [String: Tensor], trainable: Bool = true) throws {
        self.configuration = configuration
        var checked: [String: Tensor] = [:]
        for (name, shape) in configuration.parameterShapes {
            guard let tensor = weights[name] else { throw ModelError.missingTensor(name, expected: shape) }
            guard tensor.shape == shape else {
                throw ModelError.wrongShape(name, expected: shape, actual: tensor.shape)
            }
            let dense = tensor.contiguous().detached()
            checked[name] = trainable ? dense.requiringGrad() : dense
        }
        self.weights = checked
    }

    /// A model with GPT-2's initialisation: normal(0, 0.02) weights, residual projections scaled by
    /// 1/sqrt(2L), zero biases, unit LayerNorm weights.
    public convenience init(configuration: GPT2Configuration, key: RandomKey, trainable: Bool = true) throws {
        var weights: [String: Tensor] = [:]
        let residualScale = 0.02 / Float(2 * configuration.layerCount).squareRoot()
        for (index, (name, shape)) in configuration.parameterShapes.enumerated() {
            if name.hasSuffix(".bias") {
                weights[name] = Tensor.zeros(shape)
            } else if name.contains("ln_") {
                weights[name] = Tensor.ones(shape)
            } else {
                let std = name.hasSuffix("c_proj.weight") ? residualScale : 0.02
                weights[name] = Tensor.randomNormal(shape, standardDeviation: std, key: key.split(UInt64(index)))
            }
        }
        try self.init(configuration: configuration, weights: weights, trainable: trainable)
    }

    /// The trainable weights in a fixed order (for optimizers).
    public var parameters: [Tensor] { configuration.parameterShapes.compactMap { weights[$0.name] } }

    private func weight(_ name: String) -> Tensor {
        guard let tensor = weights[name] else { preconditionFailure("GPT2Model: no weight named \(name)") }
        return tensor
    }

    /// logits (B, T, V) for token ids (B·T, row-major).
    /// - Throws: ``TensorError`` for ids outside the vocabulary or a sequence longer than n_positions.
    public func logits(ids: [Int32], batch: Int, time: Int) throws -> Tensor {
        let hidden = try hiddenStates(ids: ids, batch: batch, time: time)
        return try hidden.matmul(weight("wte.weight"), transposeB: true)
    }

    /// Mean cross-entropy of next-token prediction; `targets` uses -100 for positions to ignore.
    public func loss(ids: [Int32], targets: [Int32], batch: Int, time: Int) throws -> Tensor {
        let logits = try logits(ids: ids, batch: batch, time: time)
        return try Tensor.crossEntropy(logits: logits, targets: targets)
    }

    /// Final hidden states (B, T, C) after ln_f.
    public func hiddenStates(ids: [Int32], batch: Int, time: Int) throws -> Tensor {
        let c = configuration
        guard ids.count == batch * time else {
            throw TensorError(.invalidArgument, "GPT2Model: \(ids.count) ids for batch \(batch) × time \(time)")
        }
        guard time <= c.maximumPositions else {
            throw TensorError(.invalidArgument,
                              "GPT2Model: sequence of \(time) tokens is longer than n_positions \(c.maximumPositions)")
        }
        let tokens = try Tensor.embedding(weight: weight("wte.weight"), ids: ids, shape: [batch, time])
        let positions = try weight("wpe.weight").sliced(axis: 0, range: 0..<time)
        var x = try tokens + positions
        for layer in 0..<c.layerCount {
            x = try block(x, layer: layer, batch: batch, time: time)
        }
        return try x.layerNorm(weight: weight("ln_f.weight"), bias: weight("ln_f.bias"), epsilon: c.layerNormEpsilon)
    }

    private func block(_ x: Tensor, layer: Int, batch: Int, time: Int) throws -> Tensor {
        let c = configuration
        let p = "h.\(layer)."
        let headSize = c.hiddenSize / c.headCount
        let h1 = try x.layerNorm(weight: weight(p + "ln_1.weight"), bias: weight(p + "ln_1.bias"), epsilon: c.layerNormEpsilon)
        let qkv = try h1.matmul(weight(p + "attn.c_attn.weight")) + weight(p + "attn.c_attn.bias")
        let parts = try qkv.split(axis: -1, sizes: [c.hiddenSize, c.hiddenSize, c.hiddenSize])
        let q = try parts[0].splittingLastAxis([c.headCount, headSize])
        let k = try parts[1].splittingLastAxis([c.headCount, headSize])
        let v = try parts[2].splittingLastAxis([c.headCount, headSize])
        let attended = try Tensor.attention(query: q, key: k, value: v, causal: true)
            .reshaped([batch, time, c.hiddenSize])
        let projected = try attended.matmul(weight(p + "attn.c_proj.weight")) + weight(p + "attn.c_proj.bias")
        let x1 = try x + projected
        let h2 = try x1.layerNorm(weight: weight(p + "ln_2.weight"), bias: weight(p + "ln_2.bias"), epsilon: c.layerNormEpsilon)
        let up = try h2.matmul(weight(p + "mlp.c_fc.weight")) + weight(p + "mlp.c_fc.bias")
        let down = try up.gelu(.tanh).matmul(weight(p + "mlp.c_proj.weight")) + weight(p + "mlp.c_proj.bias")
        return try x1 + down
    }
}
