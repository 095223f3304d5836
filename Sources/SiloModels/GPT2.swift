import SiloTensor

// B batch, T time (sequence), C channels (n_embd), H heads, D head size (C / H), V vocabulary,
// L layers, F MLP size. Checkpoints use Hugging Face's GPT-2 layout: Conv1D weights are stored (in, out);
// the model holds them as ``Linear`` layers, (out, in), transposed once at load.

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
    /// `eos_token_id` (GPT-2: 50256).
    public var eosTokenId: Int?

    enum CodingKeys: String, CodingKey {
        case vocabularySize = "vocab_size"
        case maximumPositions = "n_positions"
        case hiddenSize = "n_embd"
        case layerCount = "n_layer"
        case headCount = "n_head"
        case layerNormEpsilon = "layer_norm_epsilon"
        case innerSize = "n_inner"
        case eosTokenId = "eos_token_id"
    }

    public init(vocabularySize: Int, maximumPositions: Int, hiddenSize: Int, layerCount: Int, headCount: Int,
                layerNormEpsilon: Float = 1e-5, innerSize: Int? = nil, eosTokenId: Int? = nil) {
        self.vocabularySize = vocabularySize
        self.maximumPositions = maximumPositions
        self.hiddenSize = hiddenSize
        self.layerCount = layerCount
        self.headCount = headCount
        self.layerNormEpsilon = layerNormEpsilon
        self.innerSize = innerSize
        self.eosTokenId = eosTokenId
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
        eosTokenId = try? container.decodeIfPresent(Int.self, forKey: .eosTokenId)
    }

    /// The MLP's inner size.
    public var mlpSize: Int { innerSize ?? 4 * hiddenSize }

    /// Every weight of the model with its Hugging Face name and checkpoint shape (Conv1D (in, out)), in a
    /// fixed order.
    public var parameterShapes: [(name: String, shape: [Int])] {
        var seen = Set<String>()
        var list: [(name: String, shape: [Int])] = []
        for stage in [.embedding] + (0..<layerCount).map({ ModelStage.block($0) }) + [.head] {
            for entry in checkpointShapes(of: stage) where seen.insert(entry.name).inserted { list.append(entry) }
        }
        return list
    }

    /// The tensors stage `stage` reads, with Hugging Face names and checkpoint shapes (Conv1D (in, out)).
    func checkpointShapes(of stage: ModelStage) -> [(name: String, shape: [Int])] {
        let c = hiddenSize, f = mlpSize
        switch stage {
        case .embedding:
            return [("wte.weight", [vocabularySize, c]), ("wpe.weight", [maximumPositions, c])]
        case .block(let layer):
            let p = "h.\(layer)."
            return [
                (p + "ln_1.weight", [c]), (p + "ln_1.bias", [c]),
                (p + "attn.c_attn.weight", [c, 3 * c]), (p + "attn.c_attn.bias", [3 * c]),
                (p + "attn.c_proj.weight", [c, c]), (p + "attn.c_proj.bias", [c]),
                (p + "ln_2.weight", [c]), (p + "ln_2.bias", [c]),
                (p + "mlp.c_fc.weight", [c, f]), (p + "mlp.c_fc.bias", [f]),
                (p + "mlp.c_proj.weight", [f, c]), (p + "mlp.c_proj.bias", [c]),
            ]
        case .head:
            return [("ln_f.weight", [c]), ("ln_f.bias", [c]), ("wte.weight", [vocabularySize, c])]
        }
    }

    /// Number of parameters (the LM head is tied to `wte` and not counted twice).
    public var parameterCount: Int { parameterShapes.reduce(0) { $0 + $1.shape.reduce(1, *) } }

    /// Whether `name` is a Conv1D weight (stored (in, out) in checkpoints, (out, in) in the model).
    static func isConv1DWeight(_ name: String) -> Bool {
        name.hasSuffix("c_attn.weight") || name.hasSuffix("c_proj.weight") || name.hasSuffix("c_fc.weight")
    }
}

/// One GPT-2 block: x + c_proj(attn(ln_1(x))), then + mlp(ln_2(·)) with a GELU-tanh MLP.
public final class GPT2Block {
    public let layerNorm1: LayerNorm
    /// attn.c_attn (3C, C): fused q, k, v.
    public internal(set) var attentionProjection: any LinearLayer
    /// attn.c_proj (C, C).
    public internal(set) var attentionOutput: any LinearLayer
    public let layerNorm2: LayerNorm
    /// mlp.c_fc (F, C).
    public internal(set) var mlpInput: any LinearLayer
    /// mlp.c_proj (C, F).
    public internal(set) var mlpOutput: any LinearLayer

    init(layerNorm1: LayerNorm, attentionProjection: any LinearLayer, attentionOutput: any LinearLayer,
         layerNorm2: LayerNorm, mlpInput: any LinearLayer, mlpOutput: any LinearLayer) {
        self.layerNorm1 = layerNorm1
        self.attentionProjection = attentionProjection
        self.attentionOutput = attentionOutput
        self.layerNorm2 = layerNorm2
        self.mlpInput = mlpInput
        self.mlpOutput = mlpOutput
    }

    static let linearNames = ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"]

    func linear(named name: String) -> (any LinearLayer)? {
        switch name {
        case "attn.c_attn": return attentionProjection
        case "attn.c_proj": return attentionOutput
        case "mlp.c_fc": return mlpInput
        case "mlp.c_proj": return mlpOutput
        default: return nil
        }
    }

    func setLinear(named name: String, to layer: any LinearLayer) {
        switch name {
        case "attn.c_attn": attentionProjection = layer
        case "attn.c_proj": attentionOutput = layer
        case "mlp.c_fc": mlpInput = layer
        case "mlp.c_proj": mlpOutput = layer
        default: preconditionFailure("GPT2Block: no projection \(name)")
        }
    }
}

/// GPT-2 (learned positions, pre-LayerNorm blocks, GELU-tanh MLP, LM head tied to the token embedding),
/// numerically as Hugging Face's `GPT2LMHeadModel` with dropout off.
public final class GPT2Model: LanguageModel {
    public let configuration: GPT2Configuration
    public let loadedStages: Set<ModelStage>
    /// wte (V, C): the token table, also the tied LM head.
    public private(set) var tokenEmbedding: Embedding?
    /// wpe (n_positions, C).
    public private(set) var positionEmbedding: Tensor?
    public private(set) var blocks: [GPT2Block?]
    public private(set) var finalNorm: LayerNorm?

    /// Builds a model from tensors in Hugging Face's layout (Conv1D (in, out)), verifying every name and
    /// shape against the configuration; Conv1D weights become ``Linear`` layers (out, in).
    /// - Parameters:
    ///   - stages: the stages to load (default: all).
    ///   - trainable: make every tensor a gradient leaf.
    /// - Throws: ``ModelError`` naming the key, the expected and the actual shape.
    public init(configuration: GPT2Configuration, weights: any WeightSource, stages: Set<ModelStage>? = nil,
                trainable: Bool = false) throws {
        let c = configuration
        guard c.hiddenSize > 0, c.headCount > 0, c.hiddenSize % c.headCount == 0, c.layerCount > 0,
              c.vocabularySize > 0, c.maximumPositions > 0 else {
            throw ModelError(.invalidConfiguration, "GPT-2: n_embd \(c.hiddenSize) must be a positive multiple of n_head \(c.headCount), and n_layer, vocab_size, n_positions positive")
        }
        let all: Set<ModelStage> = Set([.embedding, .head] + (0..<c.layerCount).map { .block($0) })
        let selected = stages ?? all
        if let outside = selected.subtracting(all).sorted().first {
            throw ModelError(.invalidConfiguration, "stage '\(outside)' does not exist in a model of \(c.layerCount) blocks")
        }
        self.configuration = configuration
        self.loadedStages = selected
        func load(_ name: String, _ shape: [Int]) throws -> Tensor {
            let tensor = try weights.tensor(name, shape: shape).detached()
            return trainable ? tensor.contiguous().requiringGrad() : tensor
        }
        func linear(_ name: String, in inputs: Int, out: Int) throws -> Linear {
            let weight = try Linear(conv1DWeight: weights.tensor(name + ".weight", shape: [inputs, out]))
            let bias = try load(name + ".bias", [out])
            return Linear(weight: trainable ? weight.weight.requiringGrad() : weight.weight, bias: bias)
        }
        let eps = c.layerNormEpsilon, hidden = c.hiddenSize, f = c.mlpSize
        if selected.contains(.embedding) || selected.contains(.head) {
            tokenEmbedding = Embedding(weight: try load("wte.weight", [c.vocabularySize, hidden]))
        }
        if selected.contains(.embedding) {
            positionEmbedding = try load("wpe.weight", [c.maximumPositions, hidden])
        }
        blocks = Array(repeating: nil, count: c.layerCount)
        for layer in 0..<c.layerCount where selected.contains(.block(layer)) {
            let p = "h.\(layer)."
            blocks[layer] = GPT2Block(
                layerNorm1: LayerNorm(weight: try load(p + "ln_1.weight", [hidden]), bias: try load(p + "ln_1.bias", [hidden]), epsilon: eps),
                attentionProjection: try linear(p + "attn.c_attn", in: hidden, out: 3 * hidden),
                attentionOutput: try linear(p + "attn.c_proj", in: hidden, out: hidden),
                layerNorm2: LayerNorm(weight: try load(p + "ln_2.weight", [hidden]), bias: try load(p + "ln_2.bias", [hidden]), epsilon: eps),
                mlpInput: try linear(p + "mlp.c_fc", in: hidden, out: f),
                mlpOutput: try linear(p + "mlp.c_proj", in: f, out: hidden))
        }
        if selected.contains(.head) {
            finalNorm = LayerNorm(weight: try load("ln_f.weight", [hidden]), bias: try load("ln_f.bias", [hidden]), epsilon: eps)
        }
    }

    /// Builds a model from named weights in Hugging Face's layout, checking every name and shape against
    /// the configuration.
    /// - Throws: ``ModelError`` naming the key, the expected and the actual shape.
    public convenience init(configuration: GPT2Configuration, weights: [String: Tensor], trainable: Bool = true) throws {
        try self.init(configuration: configuration, weights: TensorDictionary(weights), trainable: trainable)
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

    /// The weights in a fixed order (for optimizers), Conv1D weights as the model holds them, (out, in).
    public var parameters: [Tensor] { namedParameters().map(\.tensor) }

    /// The weights by Hugging Face name in Hugging Face's layout, as snapshots for export and comparison:
    /// a Conv1D entry is a transposed (in, out) copy that carries the transposed gradient. Train through
    /// ``parameters``, not these.
    public var weights: [String: Tensor] {
        var result: [String: Tensor] = [:]
        for (name, tensor) in namedParameters() {
            guard GPT2Configuration.isConv1DWeight(name),
                  let transposed = try? Tensor.withoutGradients({ try tensor.transposed(0, 1).contiguous().detached() }) else {
                result[name] = tensor
                continue
            }
            if let gradient = tensor.grad, let gradientT = try? gradient.transposed(0, 1).contiguous().detached() {
                let leaf = transposed.requiringGrad()
                leaf.setGrad(gradientT)
                result[name] = leaf
            } else {
                result[name] = transposed
            }
        }
        return result
    }

    // MARK: LanguageModel

    public var modelType: String { "gpt2" }
    public var vocabularySize: Int { configuration.vocabularySize }
    public var hiddenSize: Int { configuration.hiddenSize }
    public var layerCount: Int { configuration.layerCount }
    public var keyValueHeads: Int { configuration.headCount }
    public var headSize: Int { configuration.hiddenSize / configuration.headCount }
    public var maximumPositions: Int? { configuration.maximumPositions }
    public var endOfSequenceTokenIds: [Int32] { configuration.eosTokenId.map { [Int32(truncatingIfNeeded: $0)] } ?? [] }

    /// Names and shapes as the model holds them: Conv1D weights (out, in).
    public func parameterShapes(of stage: ModelStage) -> [(name: String, shape: [Int])] {
        configuration.checkpointShapes(of: stage).map { entry in
            GPT2Configuration.isConv1DWeight(entry.name) ? (entry.name, [entry.shape[1], entry.shape[0]]) : entry
        }
    }

    public func parameters(of stage: ModelStage) throws -> [(name: String, tensor: Tensor)] {
        guard loadedStages.contains(stage) else { throw ModelError.stageNotLoaded(stage, loaded: loadedStages) }
        switch stage {
        case .embedding:
            guard let tokenEmbedding, let positionEmbedding else { return [] }
            return [("wte.weight", tokenEmbedding.weight), ("wpe.weight", positionEmbedding)]
        case .head:
            guard let finalNorm, let tokenEmbedding else { return [] }
            return [("ln_f.weight", finalNorm.weight), ("ln_f.bias", finalNorm.bias), ("wte.weight", tokenEmbedding.weight)]
        case .block(let layer):
            guard let block = blocks[layer] else { throw ModelError.stageNotLoaded(stage, loaded: loadedStages) }
            let p = "h.\(layer)."
            func linear(_ name: String) -> [(name: String, tensor: Tensor)] {
                (block.linear(named: name)?.namedParameters ?? []).map { (p + name + "." + $0.name, $0.tensor) }
            }
            return [(p + "ln_1.weight", block.layerNorm1.weight), (p + "ln_1.bias", block.layerNorm1.bias)]
                + linear("attn.c_attn") + linear("attn.c_proj")
                + [(p + "ln_2.weight", block.layerNorm2.weight), (p + "ln_2.bias", block.layerNorm2.bias)]
                + linear("mlp.c_fc") + linear("mlp.c_proj")
        }
    }

    public func setParameter(_ name: String, to tensor: Tensor) throws {
        let notFound = ModelError(.missingTensor, "no loaded parameter named '\(name)'")
        switch name {
        case "wte.weight":
            guard let tokenEmbedding else { throw notFound }
            try tokenEmbedding.setWeight(tensor, name: name)
        case "wpe.weight":
            guard let positionEmbedding else { throw notFound }
            guard tensor.shape == positionEmbedding.shape else {
                throw ModelError.wrongShape(name, expected: positionEmbedding.shape, actual: tensor.shape)
            }
            self.positionEmbedding = tensor.contiguous()
        case "ln_f.weight", "ln_f.bias":
            guard let finalNorm else { throw notFound }
            try finalNorm.setParameter(String(name.dropFirst(5)), to: tensor, fullName: name)
        default:
            guard let (layer, rest) = GPT2Model.splitBlockName(name), layer < blocks.count, let block = blocks[layer] else {
                throw notFound
            }
            if rest.hasPrefix("ln_1.") { return try block.layerNorm1.setParameter(String(rest.dropFirst(5)), to: tensor, fullName: name) }
            if rest.hasPrefix("ln_2.") { return try block.layerNorm2.setParameter(String(rest.dropFirst(5)), to: tensor, fullName: name) }
            for linearName in GPT2Block.linearNames where rest.hasPrefix(linearName + ".") {
                guard let layer = block.linear(named: linearName) else { break }
                return try rethrowingWithName(name) {
                    try layer.setParameter(String(rest.dropFirst(linearName.count + 1)), to: tensor)
                }
            }
            throw notFound
        }
    }

    public var linearLayerNames: [String] {
        blocks.enumerated().flatMap { layer, block in
            block == nil ? [] : GPT2Block.linearNames.map { "h.\(layer)." + $0 }
        }
    }

    public func linearLayer(named name: String) -> (any LinearLayer)? {
        guard let (layer, rest) = GPT2Model.splitBlockName(name), layer < blocks.count else { return nil }
        return blocks[layer]?.linear(named: rest)
    }

    public func replaceLinearLayer(named name: String, with layer: any LinearLayer) throws {
        guard let current = linearLayer(named: name), let (index, rest) = GPT2Model.splitBlockName(name),
              let block = blocks[index] else {
            throw ModelError(.missingTensor, "no loaded projection named '\(name)' (e.g. \(linearLayerNames.prefix(2).joined(separator: ", ")))")
        }
        guard current.inputSize == layer.inputSize, current.outputSize == layer.outputSize else {
            throw ModelError.wrongShape(name, expected: [current.outputSize, current.inputSize],
                                        actual: [layer.outputSize, layer.inputSize])
        }
        block.setLinear(named: rest, to: layer)
    }

    public func makeContext(batch: Int, time: Int, positionOffset: Int, paddingMask: Tensor?,
                            cache: KVCache?) throws -> ForwardContext {
        guard batch > 0, time > 0, positionOffset >= 0 else {
            throw ModelError(.invalidConfiguration, "a forward call needs batch > 0 and time > 0 tokens at a position ≥ 0 (got batch \(batch), time \(time), position \(positionOffset))")
        }
        guard positionOffset + time <= configuration.maximumPositions else {
            throw ModelError(.invalidConfiguration, "GPT-2: positions up to \(positionOffset + time) exceed n_positions \(configuration.maximumPositions)")
        }
        return ForwardContext(batch: batch, time: time, positionOffset: positionOffset, paddingMask: paddingMask, cache: cache)
    }

    public func embed(ids: [Int32], batch: Int, time: Int, positionOffset: Int = 0) throws -> Tensor {
        guard let tokenEmbedding, let positionEmbedding else { throw ModelError.stageNotLoaded(.embedding, loaded: loadedStages) }
        guard ids.count == batch * time else {
            throw TensorError(.invalidArgument, "GPT2Model: \(ids.count) ids for batch \(batch) × time \(time)")
        }
        guard positionOffset >= 0, positionOffset + time <= configuration.maximumPositions else {
            throw TensorError(.invalidArgument,
                              "GPT2Model: positions \(positionOffset)..<\(positionOffset + time) exceed n_positions \(configuration.maximumPositions)")
        }
        let tokens = try tokenEmbedding(ids: ids, batch: batch, time: time)
        return try tokens + positionEmbedding.sliced(axis: 0, range: positionOffset..<(positionOffset + time))
    }

    public func block(_ index: Int, hidden x: Tensor, context: ForwardContext) throws -> Tensor {
        guard index >= 0, index < blocks.count, let block = blocks[index] else {
            throw ModelError.stageNotLoaded(.block(index), loaded: loadedStages)
        }
        let c = configuration
        let batch = context.batch, time = context.time, heads = c.headCount, headSize = c.hiddenSize / c.headCount
        guard x.shape == [batch, time, c.hiddenSize] else {
            throw ModelError.wrongShape("hidden states entering block \(index)", expected: [batch, time, c.hiddenSize], actual: x.shape)
        }
        let qkv = try block.attentionProjection(block.layerNorm1(x))
        let parts = try qkv.split(axis: -1, sizes: [c.hiddenSize, c.hiddenSize, c.hiddenSize])
        let q = try parts[0].splittingLastAxis([heads, headSize])
        var k = try parts[1].splittingLastAxis([heads, headSize])
        var v = try parts[2].splittingLastAxis([heads, headSize])
        if let cache = context.cache {
            guard !Tensor.isRecordingGradients || !qkv.requiresGrad else {
                throw ModelError(.invalidConfiguration, "the KV cache is for inference: run cached forward calls under Tensor.withoutGradients")
            }
            (k, v) = try cache.append(layer: index, key: k, value: v)
        }
        let prefix = context.prefixes[index]
        let attended = try Tensor.attention(query: q, key: k, value: v, causal: true,
                                            mask: context.attentionMask(prefixLength: prefix?.length ?? 0),
                                            prefixKey: prefix?.key, prefixValue: prefix?.value)
            .reshaped([batch, time, c.hiddenSize])
        let x1 = try x + block.attentionOutput(attended)
        let up = try block.mlpInput(block.layerNorm2(x1))
        return try x1 + block.mlpOutput(up.gelu(.tanh))
    }

    public func head(_ hidden: Tensor) throws -> Tensor {
        guard let finalNorm, let tokenEmbedding else { throw ModelError.stageNotLoaded(.head, loaded: loadedStages) }
        return try tokenEmbedding.asLinear(finalNorm(hidden))
    }

    /// (3, "attn.c_attn.weight") for "h.3.attn.c_attn.weight".
    static func splitBlockName(_ name: String) -> (Int, String)? {
        guard name.hasPrefix("h.") else { return nil }
        let rest = name.dropFirst(2)
        guard let dot = rest.firstIndex(of: "."), let index = Int(rest[..<dot]) else { return nil }
        return (index, String(rest[rest.index(after: dot)...]))
    }
}
