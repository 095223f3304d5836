import Foundation
import SiloTensor

// B batch, T time, P prefix length (virtual tokens), L blocks, LP blocks with a prefix, KVH key/value
// heads, D head dimension, C hidden size, H the reparameterisation MLP's hidden size, V vocabulary.
// P-tuning v2 (Liu et al., "P-Tuning v2: Prompt Tuning Can Be Comparable to Fine-tuning Universally
// Across Scales and Tasks", 2022), a.k.a. prefix tuning (Li & Liang, 2021), as Hugging Face PEFT's
// PREFIX_TUNING runs it on a causal LM.

/// Hyperparameters of p-tuning v2 prefixes.
public struct PrefixTuningConfiguration: Codable, Sendable, Equatable {
    /// P: prefix keys/values per block (PEFT's `num_virtual_tokens`; FL-GLM uses 128).
    public var length: Int
    /// H: hidden size of the reparameterisation MLP, or nil to train the keys and values directly
    /// (PEFT's `prefix_projection` / `encoder_hidden_size`).
    public var projectionHiddenSize: Int?
    /// Block indices that get a prefix; nil: every block. A party of a split model gives its own blocks.
    public var layers: [Int]?
    /// Standard deviation of the initial values: of the keys and values (direct), or of the MLP's input
    /// embedding (1, as PEFT's `nn.Embedding`).
    public var initialStandardDeviation: Float

    enum CodingKeys: String, CodingKey {
        case length = "num_virtual_tokens"
        case projectionHiddenSize = "encoder_hidden_size"
        case layers
        case initialStandardDeviation = "initial_standard_deviation"
    }

    public init(length: Int, projectionHiddenSize: Int? = nil, layers: [Int]? = nil,
                initialStandardDeviation: Float = 1) {
        self.length = length
        self.projectionHiddenSize = projectionHiddenSize
        self.layers = layers
        self.initialStandardDeviation = initialStandardDeviation
    }

    /// - Throws: ``ModelError`` `.invalidConfiguration` naming the field.
    public func validate(layerCount: Int) throws {
        guard length > 0 else { throw ModelError(.invalidConfiguration, "prefix tuning: num_virtual_tokens must be positive, got \(length)") }
        if let hidden = projectionHiddenSize, hidden <= 0 {
            throw ModelError(.invalidConfiguration, "prefix tuning: encoder_hidden_size must be positive, got \(hidden)")
        }
        if let bad = layers?.first(where: { $0 < 0 || $0 >= layerCount }) {
            throw ModelError(.invalidConfiguration, "prefix tuning: block \(bad) is outside 0..<\(layerCount)")
        }
        if let layers, layers.isEmpty || Set(layers).count != layers.count {
            throw ModelError(.invalidConfiguration, "prefix tuning: layers \(layers) must be a non-empty list of distinct blocks")
        }
        guard initialStandardDeviation.isFinite, initialStandardDeviation >= 0 else {
            throw ModelError(.invalidConfiguration, "prefix tuning: initial standard deviation must be finite and ≥ 0, got \(initialStandardDeviation)")
        }
    }
}

/// Trainable prefix keys and values for some blocks of a model (p-tuning v2), fed to attention through
/// ``ForwardContext/prefixes``.
///
/// Each prefixed block attends to P extra keys and values, (P, KVH, D) shared by the batch, placed before
/// the sequence's keys and visible to every query. They are either leaves trained directly
/// (`prefix.layers.<l>.key` / `.value`) or the output of P-Tuning v2's reparameterisation MLP (PEFT's
/// `PrefixEncoder` with `prefix_projection`): embedding E (P, C) → Linear (C → H) → tanh → Linear
/// (H → 2·LP·KVH·D), read as (P, 2·LP, KVH, D) with the key of the j-th prefixed block at 2j and its value
/// at 2j + 1 (PEFT's layout). The MLP is recomputed by every ``prefixes()`` call, so its gradient flows.
///
/// **Positions.** As in Hugging Face, where prefix tuning passes the prefix as `past_key_values`: the
/// prefix keys are parameters used as they are — no rotary embedding is applied to them, so a query
/// sees the same prefix key whatever the distance — and the sequence's tokens take positions
/// P ..< P + T, as if they followed P cached tokens (RoPE angles of queries and keys, GPT-2's learned
/// positions, which therefore admit at most n_positions − P tokens). ``logits(model:ids:batch:time:paddingMask:)``
/// and ``positionOffset`` apply this; a KV cache filled by ``fill(cache:)`` then continues it, so
/// generation sees exactly what training saw, and PEFT computes the same logits from an export.
public final class PrefixTuning {
    public let configuration: PrefixTuningConfiguration
    /// The prefixed blocks, ascending.
    public let layers: [Int]
    /// KVH.
    public let keyValueHeads: Int
    /// D.
    public let headSize: Int
    /// C.
    public let hiddenSize: Int
    /// L of the model.
    public let layerCount: Int

    /// Direct mode: key and value (P, KVH, D) of each prefixed block, in ``layers`` order.
    public private(set) var keys: [Tensor]
    public private(set) var values: [Tensor]
    /// Reparameterised mode: E (P, C), and the MLP's two layers.
    public private(set) var embedding: Tensor?
    public private(set) var transform: (hidden: Linear, output: Linear)?

    /// Fresh prefixes for `model`'s geometry (KVH, D, C, L); values drawn from `key` by parameter name,
    /// so every party of a split model draws the same values for the same block.
    /// - Throws: ``ModelError`` `.invalidConfiguration` for an invalid configuration.
    public init(model: any LanguageModel, configuration: PrefixTuningConfiguration, key: RandomKey) throws {
        try configuration.validate(layerCount: model.layerCount)
        self.configuration = configuration
        self.layers = (configuration.layers ?? Array(0..<model.layerCount)).sorted()
        self.keyValueHeads = model.keyValueHeads
        self.headSize = model.headSize
        self.hiddenSize = model.hiddenSize
        self.layerCount = model.layerCount
        let p = configuration.length, std = configuration.initialStandardDeviation
        let shape = [p, keyValueHeads, headSize]
        if let hidden = configuration.projectionHiddenSize {
            keys = []
            values = []
            let outputs = 2 * layers.count * keyValueHeads * headSize
            embedding = Tensor.randomNormal([p, hiddenSize], standardDeviation: std,
                                            key: key.split(PrefixTuning.embeddingName)).requiringGrad()
            func linear(_ name: String, in inputs: Int, out: Int) -> Linear {
                // PyTorch's nn.Linear initialisation: weight and bias uniform in ±1/√in.
                let bound = 1 / Float(inputs).squareRoot()
                return Linear(weight: Tensor.randomUniform([out, inputs], low: -bound, high: bound, key: key.split(name + ".weight")).requiringGrad(),
                              bias: Tensor.randomUniform([out], low: -bound, high: bound, key: key.split(name + ".bias")).requiringGrad())
            }
            transform = (linear(PrefixTuning.transformName(0), in: hiddenSize, out: hidden),
                         linear(PrefixTuning.transformName(2), in: hidden, out: outputs))
        } else {
            keys = layers.map { Tensor.randomNormal(shape, standardDeviation: std, key: key.split(PrefixTuning.keyName($0))).requiringGrad() }
            values = layers.map { Tensor.randomNormal(shape, standardDeviation: std, key: key.split(PrefixTuning.valueName($0))).requiringGrad() }
        }
    }

    /// P: the positions the sequence's tokens are shifted by.
    public var positionOffset: Int { configuration.length }

    static let embeddingName = "prefix_encoder.embedding.weight"
    static func transformName(_ index: Int) -> String { "prefix_encoder.transform.\(index)" }
    static func keyName(_ layer: Int) -> String { "prefix.layers.\(layer).key" }
    static func valueName(_ layer: Int) -> String { "prefix.layers.\(layer).value" }

    /// The trainable tensors with stable names, in a fixed order, each with the stage it belongs to:
    /// `.block(l)` for a directly trained key or value; nil for the MLP's tensors, which feed every
    /// prefixed block.
    public var trainableParameters: [(name: String, tensor: Tensor, stage: ModelStage?)] {
        if let embedding, let transform {
            return [(PrefixTuning.embeddingName, embedding, nil)]
                + [(0, transform.hidden), (2, transform.output)].flatMap { index, layer in
                    layer.namedParameters.map { (PrefixTuning.transformName(index) + "." + $0.name, $0.tensor, nil as ModelStage?) }
                }
        }
        return layers.indices.flatMap { index in
            [(PrefixTuning.keyName(layers[index]), keys[index], ModelStage.block(layers[index]) as ModelStage?),
             (PrefixTuning.valueName(layers[index]), values[index], .block(layers[index]))]
        }
    }

    /// Replaces the tensor `name` (a ``trainableParameters`` name) by `tensor` of the same shape.
    /// - Throws: ``ModelError`` `.missingTensor` for an unknown name, `.wrongShape` naming both shapes.
    func setParameter(_ name: String, to tensor: Tensor) throws {
        func checked(_ current: Tensor) throws -> Tensor {
            guard tensor.shape == current.shape else { throw ModelError.wrongShape(name, expected: current.shape, actual: tensor.shape) }
            return tensor.contiguous()
        }
        if let current = embedding, name == PrefixTuning.embeddingName {
            embedding = try checked(current)
            return
        }
        if let transform {
            for (index, layer) in [(0, transform.hidden), (2, transform.output)] where name.hasPrefix(PrefixTuning.transformName(index) + ".") {
                return try rethrowingWithName(name) { try layer.setParameter(String(name.dropFirst(PrefixTuning.transformName(index).count + 1)), to: tensor) }
            }
        }
        for (index, layer) in layers.enumerated() {
            if name == PrefixTuning.keyName(layer) { keys[index] = try checked(keys[index]); return }
            if name == PrefixTuning.valueName(layer) { values[index] = try checked(values[index]); return }
        }
        throw ModelError(.missingTensor, "prefix tuning has no parameter '\(name)' (it has \(trainableParameters.prefix(2).map(\.name).joined(separator: ", ")), …)")
    }

    /// Prefix keys and values by block, (P, KVH, D) each, for ``ForwardContext/prefixes``; through the
    /// MLP when reparameterised (recorded, so gradients reach its weights).
    /// - Throws: ``TensorError`` only on an internal shape error.
    public func prefixes() throws -> [Int: PrefixKeyValues] {
        var result: [Int: PrefixKeyValues] = [:]
        if let embedding, let transform {
            let p = configuration.length
            let hidden = try transform.hidden(embedding).tanh()
            let projected = try transform.output(hidden).reshaped([p, 2 * layers.count, keyValueHeads, headSize])
            let parts = try projected.split(axis: 1, sizes: Array(repeating: 1, count: 2 * layers.count))
            for (index, layer) in layers.enumerated() {
                result[layer] = PrefixKeyValues(key: try parts[2 * index].reshaped([p, keyValueHeads, headSize]),
                                                value: try parts[2 * index + 1].reshaped([p, keyValueHeads, headSize]))
            }
        } else {
            for (index, layer) in layers.enumerated() {
                result[layer] = PrefixKeyValues(key: keys[index], value: values[index])
            }
        }
        return result
    }

    /// The context of a forward call of `model` over T tokens with these prefixes: positions
    /// P ..< P + T (see the type's note on positions).
    /// - Throws: ``ModelError`` if P + T exceeds the model's positions.
    public func makeContext(model: any LanguageModel, batch: Int, time: Int, paddingMask: Tensor? = nil) throws -> ForwardContext {
        try checkGeometry(model)
        var context = try model.makeContext(batch: batch, time: time, positionOffset: positionOffset,
                                            paddingMask: paddingMask, cache: nil)
        context.prefixes = try prefixes()
        return context
    }

    /// logits (B, T, V) of `model` on token ids (B·T, row-major) with these prefixes, tokens at positions
    /// P ..< P + T.
    /// - Parameters:
    ///   - paddingMask: additive (B, T) over the sequence's keys (the prefix is always visible).
    /// - Throws: ``ModelError`` if the model's geometry differs from the one the prefixes were made for,
    ///   or a stage is not loaded.
    public func logits(model: any LanguageModel, ids: [Int32], batch: Int, time: Int,
                       paddingMask: Tensor? = nil) throws -> Tensor {
        let context = try makeContext(model: model, batch: batch, time: time, paddingMask: paddingMask)
        var hidden = try model.embed(ids: ids, batch: batch, time: time, positionOffset: positionOffset)
        for index in 0..<model.layerCount {
            hidden = try model.block(index, hidden: hidden, context: context)
        }
        return try model.head(hidden)
    }

    /// Mean next-token cross-entropy with these prefixes; `targets` (B·T) uses −100 to ignore a position.
    public func loss(model: any LanguageModel, ids: [Int32], targets: [Int32], batch: Int, time: Int,
                     paddingMask: Tensor? = nil) throws -> Tensor {
        try Tensor.crossEntropy(logits: logits(model: model, ids: ids, batch: batch, time: time, paddingMask: paddingMask),
                                targets: targets)
    }

    /// Writes the prefixes into an empty KV cache as the first P cached tokens of every prefixed block
    /// (what Hugging Face's prefix tuning does with `past_key_values`), so that cached forward calls and
    /// generation continue from position P with the prefix visible. Runs without gradients.
    /// - Throws: ``ModelError`` if the cache already holds tokens or does not fit the model.
    public func fill(cache: KVCache) throws {
        guard cache.keyValueHeads == keyValueHeads, cache.headSize == headSize, cache.layerCount == layerCount else {
            throw ModelError(.invalidConfiguration, "prefix tuning: a cache of \(cache.layerCount) blocks × \(cache.keyValueHeads) KV heads × \(cache.headSize) does not fit prefixes for \(layerCount) × \(keyValueHeads) × \(headSize)")
        }
        guard cache.length == 0 else {
            throw ModelError(.invalidConfiguration, "prefix tuning: the cache already holds \(cache.length) tokens; fill an empty cache")
        }
        try Tensor.withoutGradients {
            for (layer, prefix) in try prefixes() {
                let shape = [cache.batch, configuration.length, keyValueHeads, headSize]
                _ = try cache.append(layer: layer, key: prefix.key.broadcast(to: shape), value: prefix.value.broadcast(to: shape))
            }
        }
    }

    /// The prefixes as PEFT's `prompt_embeddings` (P, 2·L·KVH·D): at [p, (2l + k)·KVH·D + h·D + d] the key
    /// (k = 0) or value (k = 1) of block l. Needs every block prefixed.
    /// - Throws: ``ModelError`` if some block has no prefix (PEFT prefixes all of them).
    public func promptEmbeddings() throws -> Tensor {
        guard layers == Array(0..<layerCount) else {
            throw ModelError(.invalidConfiguration, "prefix tuning: PEFT's layout needs a prefix on every block; these prefixes cover blocks \(layers) of \(layerCount)")
        }
        return try Tensor.withoutGradients {
            let byLayer = try prefixes()
            var parts: [Tensor] = []
            for layer in layers {
                guard let prefix = byLayer[layer] else { continue }
                parts.append(try prefix.key.reshaped([configuration.length, 1, keyValueHeads, headSize]))
                parts.append(try prefix.value.reshaped([configuration.length, 1, keyValueHeads, headSize]))
            }
            return try Tensor.concatenate(parts, axis: 1).reshaped([configuration.length, -1]).contiguous()
        }
    }

    func checkGeometry(_ model: any LanguageModel) throws {
        guard model.keyValueHeads == keyValueHeads, model.headSize == headSize, model.layerCount == layerCount else {
            throw ModelError(.invalidConfiguration, "prefix tuning: prefixes made for \(layerCount) blocks × \(keyValueHeads) KV heads × head size \(headSize) do not fit a model with \(model.layerCount) × \(model.keyValueHeads) × \(model.headSize)")
        }
    }
}
