import SiloTensor

// B batch, T time (new tokens), S keys (cached + new), C hidden size, H query heads, KVH key/value
// heads, D head dimension, F intermediate size, V vocabulary, L layers.

/// Grouped-query self-attention with rotary positions (Hugging Face `LlamaAttention` / `Qwen2Attention`).
public final class LlamaAttention {
    /// q_proj (H·D, C), k_proj (KVH·D, C), v_proj (KVH·D, C), o_proj (C, H·D).
    public internal(set) var queryProjection: any LinearLayer
    public internal(set) var keyProjection: any LinearLayer
    public internal(set) var valueProjection: any LinearLayer
    public internal(set) var outputProjection: any LinearLayer
    public let heads: Int
    public let keyValueHeads: Int
    public let headDimension: Int

    init(queryProjection: any LinearLayer, keyProjection: any LinearLayer, valueProjection: any LinearLayer,
         outputProjection: any LinearLayer, heads: Int, keyValueHeads: Int, headDimension: Int) {
        self.queryProjection = queryProjection
        self.keyProjection = keyProjection
        self.valueProjection = valueProjection
        self.outputProjection = outputProjection
        self.heads = heads
        self.keyValueHeads = keyValueHeads
        self.headDimension = headDimension
    }

    /// out (B, T, C) for x (B, T, C) (already normalised) of block `layer`.
    ///
    /// q, k ← RoPE(x·W_qᵀ, x·W_kᵀ) (rotate-half, as transformers); v ← x·W_vᵀ; with a cache, k and v are
    /// appended and attention reads the whole cached sequence in place; causal softmax attention with
    /// grouped KV heads, the padding mask and this block's prefix; then o_proj.
    func callAsFunction(_ x: Tensor, layer: Int, context: ForwardContext) throws -> Tensor {
        let batch = context.batch, time = context.time
        guard let rotary = context.rotary else {
            throw ModelError(.invalidConfiguration, "LlamaAttention: the forward context has no RoPE tables (build it with the model's makeContext)")
        }
        let query = try queryProjection(x).splittingLastAxis([heads, headDimension])
            .applyingRoPE(cos: rotary.cos, sin: rotary.sin, style: .rotateHalf)
        var key = try keyProjection(x).splittingLastAxis([keyValueHeads, headDimension])
            .applyingRoPE(cos: rotary.cos, sin: rotary.sin, style: .rotateHalf)
        var value = try valueProjection(x).splittingLastAxis([keyValueHeads, headDimension])
        if let cache = context.cache {
            guard !Tensor.isRecordingGradients || !(x.requiresGrad || key.requiresGrad) else {
                throw ModelError(.invalidConfiguration, "the KV cache is for inference: run cached forward calls under Tensor.withoutGradients")
            }
            (key, value) = try cache.append(layer: layer, key: key, value: value)
        }
        let prefix = context.prefixes[layer]
        let attended = try Tensor.attention(query: query, key: key, value: value, causal: true,
                                            mask: context.attentionMask(prefixLength: prefix?.length ?? 0),
                                            prefixKey: prefix?.key, prefixValue: prefix?.value)
        return try outputProjection(attended.reshaped([batch, time, heads * headDimension]))
    }
}

/// The SwiGLU feed-forward network: down(silu(gate(x)) ⊙ up(x)) (Hugging Face `LlamaMLP`).
public final class LlamaMLP {
    /// gate_proj (F, C), up_proj (F, C), down_proj (C, F).
    public internal(set) var gateProjection: any LinearLayer
    public internal(set) var upProjection: any LinearLayer
    public internal(set) var downProjection: any LinearLayer

    init(gateProjection: any LinearLayer, upProjection: any LinearLayer, downProjection: any LinearLayer) {
        self.gateProjection = gateProjection
        self.upProjection = upProjection
        self.downProjection = downProjection
    }

    /// out (B, T, C) for x (B, T, C).
    func callAsFunction(_ x: Tensor) throws -> Tensor {
        try downProjection(Tensor.swiglu(gate: gateProjection(x), up: upProjection(x)))
    }
}

/// One pre-norm decoder block: x + attn(norm(x)), then + mlp(norm(·)) (Hugging Face `LlamaDecoderLayer`).
public final class LlamaBlock {
    public let inputNorm: RMSNorm
    public let attention: LlamaAttention
    public let postAttentionNorm: RMSNorm
    public let mlp: LlamaMLP

    init(inputNorm: RMSNorm, attention: LlamaAttention, postAttentionNorm: RMSNorm, mlp: LlamaMLP) {
        self.inputNorm = inputNorm
        self.attention = attention
        self.postAttentionNorm = postAttentionNorm
        self.mlp = mlp
    }

    func callAsFunction(_ x: Tensor, layer: Int, context: ForwardContext) throws -> Tensor {
        let h = try x + attention(inputNorm(x), layer: layer, context: context)
        return try h + mlp(postAttentionNorm(h))
    }

    /// Projections by their name relative to the block (`self_attn.q_proj`, ...).
    static let linearNames = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                              "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]

    func linear(named name: String) -> (any LinearLayer)? {
        switch name {
        case "self_attn.q_proj": return attention.queryProjection
        case "self_attn.k_proj": return attention.keyProjection
        case "self_attn.v_proj": return attention.valueProjection
        case "self_attn.o_proj": return attention.outputProjection
        case "mlp.gate_proj": return mlp.gateProjection
        case "mlp.up_proj": return mlp.upProjection
        case "mlp.down_proj": return mlp.downProjection
        default: return nil
        }
    }

    func setLinear(named name: String, to layer: any LinearLayer) {
        switch name {
        case "self_attn.q_proj": attention.queryProjection = layer
        case "self_attn.k_proj": attention.keyProjection = layer
        case "self_attn.v_proj": attention.valueProjection = layer
        case "self_attn.o_proj": attention.outputProjection = layer
        case "mlp.gate_proj": mlp.gateProjection = layer
        case "mlp.up_proj": mlp.upProjection = layer
        case "mlp.down_proj": mlp.downProjection = layer
        default: preconditionFailure("LlamaBlock: no projection \(name)")
        }
    }
}

/// A Llama-family causal language model (Llama 2/3, SmolLM/SmolLM2, Qwen2), numerically as Hugging
/// Face's `LlamaForCausalLM` / `Qwen2ForCausalLM` in Float32: RMSNorm, rotary positions (theta, linear
/// or llama3 scaling), grouped-query attention, SwiGLU MLP, optional q/k/v biases, tied or separate LM head.
///
/// An instance holds the weights of some stages (all by default; see ``LanguageModel``). Load one with
/// ``Checkpoint/load(_:stages:)`` or build it from named tensors with ``init(configuration:weights:stages:)``.
public final class LlamaModel: LanguageModel {
    public let configuration: LlamaConfiguration
    public let loadedStages: Set<ModelStage>
    /// The token table; present when the embedding stage is loaded, or the head is and is tied.
    public private(set) var embedTokens: Embedding?
    /// Blocks by index; nil where the block is not loaded.
    public private(set) var blocks: [LlamaBlock?]
    public private(set) var norm: RMSNorm?
    /// The separate LM head (V, C); nil when tied or not loaded.
    public private(set) var lmHead: (any LinearLayer)?
    /// RoPE inverse frequencies (D/2), computed once.
    public let inverseFrequencies: [Float]
    /// The tied head kept in the checkpoint's quantised blocks (``WeightPrecision/quantized``), used by
    /// ``head(_:)`` instead of the Float32 table; dropped when the table is replaced.
    public private(set) var quantizedTiedHead: QuantizedLinear?

    /// Builds a model from tensors named as in Hugging Face checkpoints, verifying every one.
    /// - Parameters:
    ///   - weights: where the tensors come from (a checkpoint, or a dictionary).
    ///   - stages: the stages to load (default: all); the others stay empty and throw if called.
    ///   - inverseFrequencies: RoPE inverse frequencies overriding the configuration's (a GGUF's
    ///     `rope_freqs` factors).
    /// - Throws: ``ModelError`` for an invalid configuration, or naming the key, the expected and the
    ///   actual shape of a missing or mis-shaped tensor.
    public init(configuration: LlamaConfiguration, weights: any WeightSource, stages: Set<ModelStage>? = nil,
                inverseFrequencies: [Float]? = nil) throws {
        try configuration.validate()
        let all: Set<ModelStage> = Set([.embedding, .head] + (0..<configuration.layerCount).map { .block($0) })
        let selected = stages ?? all
        if let outside = selected.subtracting(all).sorted().first {
            throw ModelError(.invalidConfiguration, "stage '\(outside)' does not exist in a model of \(configuration.layerCount) blocks")
        }
        self.configuration = configuration
        self.loadedStages = selected
        self.inverseFrequencies = try inverseFrequencies ?? configuration.ropeInverseFrequencies()
        guard self.inverseFrequencies.count == configuration.headDimension / 2 else {
            throw ModelError(.invalidConfiguration, "\(self.inverseFrequencies.count) RoPE frequencies for head_dim \(configuration.headDimension) (expected \(configuration.headDimension / 2))")
        }

        func load(_ name: String, _ shape: [Int]) throws -> Tensor { try weights.tensor(name, shape: shape) }
        func linear(_ name: String, out: Int, in inputs: Int, bias: Bool) throws -> any LinearLayer {
            let biasTensor = bias ? try load(name + ".bias", [out]) : nil
            if let source = weights as? any QuantizedWeightSource,
               let layer = try source.quantizedLinear(name + ".weight", shape: [out, inputs], bias: biasTensor) {
                return layer
            }
            return Linear(weight: try load(name + ".weight", [out, inputs]), bias: biasTensor)
        }
        let c = configuration.hiddenSize, v = configuration.vocabularySize, d = configuration.headDimension
        let eps = configuration.rmsNormEpsilon
        if selected.contains(.embedding) || (selected.contains(.head) && configuration.tieWordEmbeddings) {
            embedTokens = Embedding(weight: try load("model.embed_tokens.weight", [v, c]))
        }
        if selected.contains(.head) && configuration.tieWordEmbeddings, let source = weights as? any QuantizedWeightSource {
            quantizedTiedHead = try source.quantizedLinear("model.embed_tokens.weight", shape: [v, c], bias: nil)
        }
        blocks = Array(repeating: nil, count: configuration.layerCount)
        for index in 0..<configuration.layerCount where selected.contains(.block(index)) {
            let p = LlamaConfiguration.blockPrefix(index)
            let h = configuration.attentionHeads, kvh = configuration.keyValueHeads, f = configuration.intermediateSize
            let qkvBias = configuration.queryKeyValueBias, mlpBias = configuration.mlpBias
            let attention = LlamaAttention(
                queryProjection: try linear(p + "self_attn.q_proj", out: h * d, in: c, bias: qkvBias),
                keyProjection: try linear(p + "self_attn.k_proj", out: kvh * d, in: c, bias: qkvBias),
                valueProjection: try linear(p + "self_attn.v_proj", out: kvh * d, in: c, bias: qkvBias),
                outputProjection: try linear(p + "self_attn.o_proj", out: c, in: h * d, bias: configuration.outputBias),
                heads: h, keyValueHeads: kvh, headDimension: d)
            let mlp = LlamaMLP(gateProjection: try linear(p + "mlp.gate_proj", out: f, in: c, bias: mlpBias),
                               upProjection: try linear(p + "mlp.up_proj", out: f, in: c, bias: mlpBias),
                               downProjection: try linear(p + "mlp.down_proj", out: c, in: f, bias: mlpBias))
            blocks[index] = LlamaBlock(inputNorm: RMSNorm(weight: try load(p + "input_layernorm.weight", [c]), epsilon: eps),
                                       attention: attention,
                                       postAttentionNorm: RMSNorm(weight: try load(p + "post_attention_layernorm.weight", [c]), epsilon: eps),
                                       mlp: mlp)
        }
        if selected.contains(.head) {
            norm = RMSNorm(weight: try load("model.norm.weight", [c]), epsilon: eps)
            if !configuration.tieWordEmbeddings {
                lmHead = try linear("lm_head", out: v, in: c, bias: false)
            }
        }
    }

    // MARK: LanguageModel

    public var modelType: String { configuration.modelType }
    public var vocabularySize: Int { configuration.vocabularySize }
    public var hiddenSize: Int { configuration.hiddenSize }
    public var layerCount: Int { configuration.layerCount }
    public var keyValueHeads: Int { configuration.keyValueHeads }
    public var headSize: Int { configuration.headDimension }
    public var maximumPositions: Int? { nil }
    public var endOfSequenceTokenIds: [Int32] { configuration.eosTokenIds.map { Int32(truncatingIfNeeded: $0) } }

    public func parameterShapes(of stage: ModelStage) -> [(name: String, shape: [Int])] {
        configuration.parameterShapes(of: stage)
    }

    public func parameters(of stage: ModelStage) throws -> [(name: String, tensor: Tensor)] {
        guard loadedStages.contains(stage) else { throw ModelError.stageNotLoaded(stage, loaded: loadedStages) }
        switch stage {
        case .embedding:
            return embedTokens.map { [("model.embed_tokens.weight", $0.weight)] } ?? []
        case .head:
            var list: [(name: String, tensor: Tensor)] = norm.map { [("model.norm.weight", $0.weight)] } ?? []
            if configuration.tieWordEmbeddings {
                if let embedTokens { list.append(("model.embed_tokens.weight", embedTokens.weight)) }
            } else if let lmHead {
                list += lmHead.namedParameters.map { ("lm_head." + $0.name, $0.tensor) }
            }
            return list
        case .block(let index):
            guard let block = blocks[index] else { throw ModelError.stageNotLoaded(stage, loaded: loadedStages) }
            let p = LlamaConfiguration.blockPrefix(index)
            var list: [(name: String, tensor: Tensor)] = [(p + "input_layernorm.weight", block.inputNorm.weight)]
            for name in LlamaBlock.linearNames.prefix(4) {
                list += (block.linear(named: name)?.namedParameters ?? []).map { (p + name + "." + $0.name, $0.tensor) }
            }
            list.append((p + "post_attention_layernorm.weight", block.postAttentionNorm.weight))
            for name in LlamaBlock.linearNames.suffix(3) {
                list += (block.linear(named: name)?.namedParameters ?? []).map { (p + name + "." + $0.name, $0.tensor) }
            }
            return list
        }
    }

    public func setParameter(_ name: String, to tensor: Tensor) throws {
        func notFound() -> ModelError {
            ModelError(.missingTensor, "no loaded parameter named '\(name)' (loaded stages: \(loadedStages.sorted().map(\.description).joined(separator: ", ")))")
        }
        if name == "model.embed_tokens.weight" {
            guard let embedTokens else { throw notFound() }
            try embedTokens.setWeight(tensor, name: name)
            quantizedTiedHead = nil  // the head must follow the new table
            return
        }
        if name == "model.norm.weight" {
            guard let norm else { throw notFound() }
            return try norm.setWeight(tensor, name: name)
        }
        if name.hasPrefix("lm_head.") {
            guard let lmHead else { throw notFound() }
            return try rethrowingWithName(name) { try lmHead.setParameter(String(name.dropFirst("lm_head.".count)), to: tensor) }
        }
        guard let (index, rest) = LlamaModel.splitBlockName(name), index < blocks.count, let block = blocks[index] else {
            throw notFound()
        }
        switch rest {
        case "input_layernorm.weight": return try block.inputNorm.setWeight(tensor, name: name)
        case "post_attention_layernorm.weight": return try block.postAttentionNorm.setWeight(tensor, name: name)
        default:
            for linearName in LlamaBlock.linearNames where rest.hasPrefix(linearName + ".") {
                guard let layer = block.linear(named: linearName) else { break }
                return try rethrowingWithName(name) {
                    try layer.setParameter(String(rest.dropFirst(linearName.count + 1)), to: tensor)
                }
            }
            throw notFound()
        }
    }

    public var linearLayerNames: [String] {
        var names: [String] = []
        for (index, block) in blocks.enumerated() where block != nil {
            names += LlamaBlock.linearNames.map { LlamaConfiguration.blockPrefix(index) + $0 }
        }
        if lmHead != nil { names.append("lm_head") }
        return names
    }

    public func linearLayer(named name: String) -> (any LinearLayer)? {
        if name == "lm_head" { return lmHead }
        guard let (index, rest) = LlamaModel.splitBlockName(name), index < blocks.count else { return nil }
        return blocks[index]?.linear(named: rest)
    }

    public func replaceLinearLayer(named name: String, with layer: any LinearLayer) throws {
        guard let current = linearLayer(named: name) else {
            throw ModelError(.missingTensor, "no loaded projection named '\(name)' (e.g. \(linearLayerNames.prefix(3).joined(separator: ", ")))")
        }
        guard current.inputSize == layer.inputSize, current.outputSize == layer.outputSize else {
            throw ModelError.wrongShape(name, expected: [current.outputSize, current.inputSize],
                                        actual: [layer.outputSize, layer.inputSize])
        }
        if name == "lm_head" {
            lmHead = layer
        } else if let (index, rest) = LlamaModel.splitBlockName(name), let block = blocks[index] {
            block.setLinear(named: rest, to: layer)
        }
    }

    public func makeContext(batch: Int, time: Int, positionOffset: Int, paddingMask: Tensor?,
                            cache: KVCache?) throws -> ForwardContext {
        guard batch > 0, time > 0, positionOffset >= 0 else {
            throw ModelError(.invalidConfiguration, "a forward call needs batch > 0 and time > 0 tokens at a position ≥ 0 (got batch \(batch), time \(time), position \(positionOffset))")
        }
        let tables = Tensor.ropeTables(positions: Array(positionOffset..<(positionOffset + time)),
                                       inverseFrequencies: inverseFrequencies)
        return ForwardContext(batch: batch, time: time, positionOffset: positionOffset,
                              rotary: RotaryTables(cos: tables.cos, sin: tables.sin),
                              paddingMask: paddingMask, cache: cache)
    }

    public func embed(ids: [Int32], batch: Int, time: Int, positionOffset: Int = 0) throws -> Tensor {
        guard loadedStages.contains(.embedding), let embedTokens else {
            throw ModelError.stageNotLoaded(.embedding, loaded: loadedStages)
        }
        guard ids.count == batch * time else {
            throw ModelError(.invalidConfiguration, "embed: \(ids.count) ids for batch \(batch) × time \(time)")
        }
        return try embedTokens(ids: ids, batch: batch, time: time)
    }

    public func block(_ index: Int, hidden: Tensor, context: ForwardContext) throws -> Tensor {
        guard index >= 0, index < blocks.count, let block = blocks[index] else {
            throw ModelError.stageNotLoaded(.block(index), loaded: loadedStages)
        }
        guard hidden.shape == [context.batch, context.time, hiddenSize] else {
            throw ModelError.wrongShape("hidden states entering block \(index)",
                                        expected: [context.batch, context.time, hiddenSize], actual: hidden.shape)
        }
        return try block(hidden, layer: index, context: context)
    }

    public func head(_ hidden: Tensor) throws -> Tensor {
        guard let norm else { throw ModelError.stageNotLoaded(.head, loaded: loadedStages) }
        let normalized = try norm(hidden)
        if let lmHead { return try lmHead(normalized) }
        if let quantizedTiedHead { return try quantizedTiedHead(normalized) }
        guard let embedTokens else { throw ModelError.stageNotLoaded(.head, loaded: loadedStages) }
        return try embedTokens.asLinear(normalized)
    }

    // MARK: Names

    /// (3, "self_attn.q_proj.weight") for "model.layers.3.self_attn.q_proj.weight".
    static func splitBlockName(_ name: String) -> (Int, String)? {
        let prefix = "model.layers."
        guard name.hasPrefix(prefix) else { return nil }
        let rest = name.dropFirst(prefix.count)
        guard let dot = rest.firstIndex(of: "."), let index = Int(rest[..<dot]) else { return nil }
        return (index, String(rest[rest.index(after: dot)...]))
    }
}

/// Runs `body`, replacing the relative name in a ``ModelError`` by the full parameter name.
func rethrowingWithName(_ name: String, _ body: () throws -> Void) throws {
    do {
        try body()
    } catch let error as ModelError {
        throw ModelError(error.code, "\(name): \(error.message)")
    }
}
