#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import SiloTensor

/// The configuration of a Llama-family model (Llama 2/3, SmolLM/SmolLM2, Qwen2), decoded from a
/// Hugging Face `config.json` with its key names.
///
/// Reads both layouts transformers has written: top-level `rope_theta` / `rope_scaling` (transformers
/// 4, most checkpoints on the hub) and `rope_parameters` (transformers 5). Encodes the first.
public struct LlamaConfiguration: Codable, Sendable, Equatable {
    /// RoPE frequency scaling (`rope_scaling`), as transformers' `ROPE_INIT_FUNCTIONS`.
    public struct RoPEScaling: Codable, Sendable, Equatable {
        /// `rope_type` (or the older `type`): `default`, `linear` or `llama3` (others are rejected when
        /// the model is built).
        public var type: String
        /// `factor`.
        public var factor: Float?
        /// `low_freq_factor` (llama3).
        public var lowFrequencyFactor: Float?
        /// `high_freq_factor` (llama3).
        public var highFrequencyFactor: Float?
        /// `original_max_position_embeddings` (llama3).
        public var originalMaximumPositions: Int?

        enum CodingKeys: String, CodingKey {
            case type = "rope_type"
            case legacyType = "type"
            case factor
            case lowFrequencyFactor = "low_freq_factor"
            case highFrequencyFactor = "high_freq_factor"
            case originalMaximumPositions = "original_max_position_embeddings"
        }

        public init(type: String, factor: Float? = nil, lowFrequencyFactor: Float? = nil,
                    highFrequencyFactor: Float? = nil, originalMaximumPositions: Int? = nil) {
            self.type = type
            self.factor = factor
            self.lowFrequencyFactor = lowFrequencyFactor
            self.highFrequencyFactor = highFrequencyFactor
            self.originalMaximumPositions = originalMaximumPositions
        }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            if let type = try container.decodeIfPresent(String.self, forKey: .type) {
                self.type = type
            } else {
                self.type = try container.decodeIfPresent(String.self, forKey: .legacyType) ?? "default"
            }
            factor = try container.decodeIfPresent(Float.self, forKey: .factor)
            lowFrequencyFactor = try container.decodeIfPresent(Float.self, forKey: .lowFrequencyFactor)
            highFrequencyFactor = try container.decodeIfPresent(Float.self, forKey: .highFrequencyFactor)
            originalMaximumPositions = try container.decodeIfPresent(Int.self, forKey: .originalMaximumPositions)
        }

        public func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(type, forKey: .type)
            try container.encodeIfPresent(factor, forKey: .factor)
            try container.encodeIfPresent(lowFrequencyFactor, forKey: .lowFrequencyFactor)
            try container.encodeIfPresent(highFrequencyFactor, forKey: .highFrequencyFactor)
            try container.encodeIfPresent(originalMaximumPositions, forKey: .originalMaximumPositions)
        }
    }

    /// `model_type`: `llama` or `qwen2`.
    public var modelType: String
    /// V, `vocab_size`.
    public var vocabularySize: Int
    /// C, `hidden_size`.
    public var hiddenSize: Int
    /// `intermediate_size` of the SwiGLU MLP.
    public var intermediateSize: Int
    /// L, `num_hidden_layers`.
    public var layerCount: Int
    /// H, `num_attention_heads`.
    public var attentionHeads: Int
    /// KVH, `num_key_value_heads` (defaults to H: no grouping).
    public var keyValueHeads: Int
    /// D, `head_dim` (defaults to C / H).
    public var headDimension: Int
    /// `rms_norm_eps`.
    public var rmsNormEpsilon: Float
    /// `rope_theta`.
    public var ropeTheta: Float
    /// `rope_scaling`, nil for plain RoPE.
    public var ropeScaling: RoPEScaling?
    /// `max_position_embeddings`.
    public var maximumPositions: Int
    /// `tie_word_embeddings`: the LM head reuses the token embedding table.
    public var tieWordEmbeddings: Bool
    /// `attention_bias`: Llama puts biases on q, k, v and o when set.
    public var attentionBias: Bool
    /// `mlp_bias`.
    public var mlpBias: Bool
    /// `hidden_act` (only `silu` is supported).
    public var hiddenActivation: String
    /// `bos_token_id`.
    public var bosTokenId: Int?
    /// `eos_token_id` (a number or a list in config.json).
    public var eosTokenIds: [Int]

    enum CodingKeys: String, CodingKey {
        case modelType = "model_type"
        case vocabularySize = "vocab_size"
        case hiddenSize = "hidden_size"
        case intermediateSize = "intermediate_size"
        case layerCount = "num_hidden_layers"
        case attentionHeads = "num_attention_heads"
        case keyValueHeads = "num_key_value_heads"
        case headDimension = "head_dim"
        case rmsNormEpsilon = "rms_norm_eps"
        case ropeTheta = "rope_theta"
        case ropeScaling = "rope_scaling"
        case ropeParameters = "rope_parameters"
        case maximumPositions = "max_position_embeddings"
        case tieWordEmbeddings = "tie_word_embeddings"
        case attentionBias = "attention_bias"
        case mlpBias = "mlp_bias"
        case hiddenActivation = "hidden_act"
        case bosTokenId = "bos_token_id"
        case eosTokenIds = "eos_token_id"
    }

    /// The Llama family's model types.
    public static let supportedModelTypes = ["llama", "qwen2"]

    public init(modelType: String = "llama", vocabularySize: Int, hiddenSize: Int, intermediateSize: Int,
                layerCount: Int, attentionHeads: Int, keyValueHeads: Int? = nil, headDimension: Int? = nil,
                rmsNormEpsilon: Float = 1e-6, ropeTheta: Float = 10000, ropeScaling: RoPEScaling? = nil,
                maximumPositions: Int = 2048, tieWordEmbeddings: Bool = false, attentionBias: Bool = false,
                mlpBias: Bool = false, hiddenActivation: String = "silu", bosTokenId: Int? = nil,
                eosTokenIds: [Int] = []) {
        self.modelType = modelType
        self.vocabularySize = vocabularySize
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.layerCount = layerCount
        self.attentionHeads = attentionHeads
        self.keyValueHeads = keyValueHeads ?? attentionHeads
        self.headDimension = headDimension ?? (attentionHeads > 0 ? hiddenSize / attentionHeads : 0)
        self.rmsNormEpsilon = rmsNormEpsilon
        self.ropeTheta = ropeTheta
        self.ropeScaling = ropeScaling
        self.maximumPositions = maximumPositions
        self.tieWordEmbeddings = tieWordEmbeddings
        self.attentionBias = attentionBias
        self.mlpBias = mlpBias
        self.hiddenActivation = hiddenActivation
        self.bosTokenId = bosTokenId
        self.eosTokenIds = eosTokenIds
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        modelType = try container.decodeIfPresent(String.self, forKey: .modelType) ?? "llama"
        vocabularySize = try container.decode(Int.self, forKey: .vocabularySize)
        hiddenSize = try container.decode(Int.self, forKey: .hiddenSize)
        intermediateSize = try container.decode(Int.self, forKey: .intermediateSize)
        layerCount = try container.decode(Int.self, forKey: .layerCount)
        attentionHeads = try container.decode(Int.self, forKey: .attentionHeads)
        keyValueHeads = try container.decodeIfPresent(Int.self, forKey: .keyValueHeads) ?? attentionHeads
        headDimension = try container.decodeIfPresent(Int.self, forKey: .headDimension)
            ?? (attentionHeads > 0 ? hiddenSize / attentionHeads : 0)
        rmsNormEpsilon = try container.decodeIfPresent(Float.self, forKey: .rmsNormEpsilon) ?? 1e-6
        maximumPositions = try container.decodeIfPresent(Int.self, forKey: .maximumPositions) ?? 2048
        tieWordEmbeddings = try container.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings) ?? false
        attentionBias = try container.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
        mlpBias = try container.decodeIfPresent(Bool.self, forKey: .mlpBias) ?? false
        hiddenActivation = try container.decodeIfPresent(String.self, forKey: .hiddenActivation) ?? "silu"
        bosTokenId = try container.decodeIfPresent(Int.self, forKey: .bosTokenId)
        if let single = try? container.decodeIfPresent(Int.self, forKey: .eosTokenIds) {
            eosTokenIds = [single]
        } else {
            eosTokenIds = try container.decodeIfPresent([Int].self, forKey: .eosTokenIds) ?? []
        }
        // transformers 5: {"rope_theta": …, "rope_type": …, "factor": …} in rope_parameters.
        if container.contains(.ropeParameters), try !container.decodeNil(forKey: .ropeParameters) {
            let parameters = try container.nestedContainer(keyedBy: RoPEParameterKeys.self, forKey: .ropeParameters)
            ropeTheta = try parameters.decodeIfPresent(Float.self, forKey: .ropeTheta)
                ?? container.decodeIfPresent(Float.self, forKey: .ropeTheta) ?? 10000
            let scaling = try container.decode(RoPEScaling.self, forKey: .ropeParameters)
            ropeScaling = scaling.type == "default" ? nil : scaling
        } else {
            ropeTheta = try container.decodeIfPresent(Float.self, forKey: .ropeTheta) ?? 10000
            let scaling = try container.decodeIfPresent(RoPEScaling.self, forKey: .ropeScaling)
            ropeScaling = scaling?.type == "default" ? nil : scaling
        }
    }

    private enum RoPEParameterKeys: String, CodingKey {
        case ropeTheta = "rope_theta"
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(modelType, forKey: .modelType)
        try container.encode(vocabularySize, forKey: .vocabularySize)
        try container.encode(hiddenSize, forKey: .hiddenSize)
        try container.encode(intermediateSize, forKey: .intermediateSize)
        try container.encode(layerCount, forKey: .layerCount)
        try container.encode(attentionHeads, forKey: .attentionHeads)
        try container.encode(keyValueHeads, forKey: .keyValueHeads)
        try container.encode(headDimension, forKey: .headDimension)
        try container.encode(rmsNormEpsilon, forKey: .rmsNormEpsilon)
        try container.encode(ropeTheta, forKey: .ropeTheta)
        try container.encodeIfPresent(ropeScaling, forKey: .ropeScaling)
        try container.encode(maximumPositions, forKey: .maximumPositions)
        try container.encode(tieWordEmbeddings, forKey: .tieWordEmbeddings)
        try container.encode(attentionBias, forKey: .attentionBias)
        try container.encode(mlpBias, forKey: .mlpBias)
        try container.encode(hiddenActivation, forKey: .hiddenActivation)
        try container.encodeIfPresent(bosTokenId, forKey: .bosTokenId)
        if eosTokenIds.count == 1 {
            try container.encode(eosTokenIds[0], forKey: .eosTokenIds)
        } else if !eosTokenIds.isEmpty {
            try container.encode(eosTokenIds, forKey: .eosTokenIds)
        }
    }

    // MARK: Derived

    /// Whether q, k and v projections carry biases (Qwen2 always; Llama with `attention_bias`).
    public var queryKeyValueBias: Bool { modelType == "qwen2" || attentionBias }
    /// Whether the output projection carries a bias (Llama with `attention_bias`; never Qwen2).
    public var outputBias: Bool { modelType != "qwen2" && attentionBias }

    /// Checks the sizes agree and the features are supported.
    /// - Throws: ``ModelError`` `.invalidConfiguration` or `.unknownArchitecture` naming the key.
    public func validate() throws {
        guard LlamaConfiguration.supportedModelTypes.contains(modelType) else {
            throw ModelError(.unknownArchitecture, "model_type '\(modelType)' is not a Llama-family model (supported: \(LlamaConfiguration.supportedModelTypes.joined(separator: ", ")))")
        }
        for (key, value) in [("vocab_size", vocabularySize), ("hidden_size", hiddenSize),
                             ("intermediate_size", intermediateSize), ("num_hidden_layers", layerCount),
                             ("num_attention_heads", attentionHeads), ("num_key_value_heads", keyValueHeads),
                             ("head_dim", headDimension)] where value <= 0 {
            throw ModelError(.invalidConfiguration, "\(key) is \(value); it must be positive")
        }
        guard attentionHeads % keyValueHeads == 0 else {
            throw ModelError(.invalidConfiguration, "num_attention_heads \(attentionHeads) is not a multiple of num_key_value_heads \(keyValueHeads)")
        }
        guard headDimension % 2 == 0 else {
            throw ModelError(.invalidConfiguration, "head_dim \(headDimension) must be even for rotary embedding")
        }
        guard hiddenActivation == "silu" else {
            throw ModelError(.invalidConfiguration, "hidden_act '\(hiddenActivation)' is not supported (Llama-family models use 'silu')")
        }
        guard rmsNormEpsilon >= 0, ropeTheta > 0 else {
            throw ModelError(.invalidConfiguration, "rms_norm_eps \(rmsNormEpsilon) must be ≥ 0 and rope_theta \(ropeTheta) positive")
        }
        _ = try ropeInverseFrequencies()
    }

    /// The RoPE inverse frequencies (D/2) as transformers computes them for this configuration:
    /// `1 / theta^(2i/D)`, then `rope_scaling` — `linear` divides by `factor`; `llama3` follows
    /// `_compute_llama3_parameters` (low frequencies divided by `factor`, high ones kept, the band between
    /// smoothly interpolated), in Float32 like transformers.
    /// - Throws: ``ModelError`` `.invalidConfiguration` for another scaling type or a missing field.
    public func ropeInverseFrequencies() throws -> [Float] {
        let base = Tensor.ropeInverseFrequencies(dimension: headDimension, theta: ropeTheta)
        guard let scaling = ropeScaling else { return base }
        func field<T>(_ value: T?, _ key: String) throws -> T {
            guard let value else {
                throw ModelError(.invalidConfiguration, "rope_scaling of type '\(scaling.type)' needs '\(key)'")
            }
            return value
        }
        switch scaling.type {
        case "default":
            return base
        case "linear":
            let factor = try field(scaling.factor, "factor")
            return base.map { $0 / factor }
        case "llama3":
            let factor = try field(scaling.factor, "factor")
            let lowFactor = try field(scaling.lowFrequencyFactor, "low_freq_factor")
            let highFactor = try field(scaling.highFrequencyFactor, "high_freq_factor")
            let oldContext = Float(try field(scaling.originalMaximumPositions, "original_max_position_embeddings"))
            let lowWavelength = oldContext / lowFactor
            let highWavelength = oldContext / highFactor
            let twoPi = Float(2 * Double.pi)
            return base.map { frequency in
                let wavelength = twoPi / frequency
                // wavelength > low: divide by factor; < high: keep; between: interpolate.
                let scaled = wavelength > lowWavelength ? frequency / factor : frequency
                let isMedium = !(wavelength < highWavelength) && !(wavelength > lowWavelength)
                guard isMedium else { return scaled }
                let smooth = (oldContext / wavelength - lowFactor) / (highFactor - lowFactor)
                return (1 - smooth) * scaled / factor + smooth * scaled
            }
        default:
            throw ModelError(.invalidConfiguration, "rope_scaling type '\(scaling.type)' is not supported (supported: linear, llama3)")
        }
    }

    // MARK: Parameters

    /// The Hugging Face name prefix of block `index` (`model.layers.3.`).
    static func blockPrefix(_ index: Int) -> String { "model.layers.\(index)." }

    /// The tensors stage `stage` reads, with Hugging Face names and shapes.
    public func parameterShapes(of stage: ModelStage) -> [(name: String, shape: [Int])] {
        let c = hiddenSize, v = vocabularySize, d = headDimension
        switch stage {
        case .embedding:
            return [("model.embed_tokens.weight", [v, c])]
        case .head:
            return [("model.norm.weight", [c]),
                    (tieWordEmbeddings ? "model.embed_tokens.weight" : "lm_head.weight", [v, c])]
        case .block(let index):
            let p = LlamaConfiguration.blockPrefix(index)
            let q = attentionHeads * d, kv = keyValueHeads * d, f = intermediateSize
            var shapes: [(name: String, shape: [Int])] = [(p + "input_layernorm.weight", [c])]
            for (name, rows) in [("q_proj", q), ("k_proj", kv), ("v_proj", kv)] {
                shapes.append((p + "self_attn.\(name).weight", [rows, c]))
                if queryKeyValueBias { shapes.append((p + "self_attn.\(name).bias", [rows])) }
            }
            shapes.append((p + "self_attn.o_proj.weight", [c, q]))
            if outputBias { shapes.append((p + "self_attn.o_proj.bias", [c])) }
            shapes.append((p + "post_attention_layernorm.weight", [c]))
            for (name, shape) in [("gate_proj", [f, c]), ("up_proj", [f, c]), ("down_proj", [c, f])] {
                shapes.append((p + "mlp.\(name).weight", shape))
                if mlpBias { shapes.append((p + "mlp.\(name).bias", [shape[0]])) }
            }
            return shapes
        }
    }

    /// Number of distinct parameters (a tied head counted once).
    public var parameterCount: Int {
        var seen = Set<String>()
        var total = 0
        let all: [ModelStage] = [.embedding] + (0..<layerCount).map { .block($0) } + [.head]
        for stage in all {
            for (name, shape) in parameterShapes(of: stage) where seen.insert(name).inserted {
                total += shape.reduce(1, *)
            }
        }
        return total
    }
}
