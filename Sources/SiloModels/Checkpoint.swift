#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import SiloTensor

// MARK: Weight sources

/// Where a model's tensors come from, by Hugging Face name: a checkpoint on disk or tensors in memory.
///
/// Models read every tensor through ``tensor(_:shape:)``, the one verification step: a missing tensor
/// or one of another shape throws a ``ModelError`` naming the key, the expected and the actual shape,
/// and the file, before any data is converted.
public protocol WeightSource {
    /// The file or folder the tensors come from, for messages.
    var location: String { get }
    /// The row-major shape tensor `name` will have once read, or nil if there is no such tensor.
    func shape(of name: String) -> [Int]?
    /// Tensor `name` as Float32 (converted or dequantised), unverified: call ``tensor(_:shape:)``.
    func read(_ name: String) throws -> Tensor
    /// The key `name` is stored under, for messages (`blk.0.attn_q.weight` in a GGUF file).
    func storedName(of name: String) -> String
}

extension WeightSource {
    public func storedName(of name: String) -> String { name }

    /// Tensor `name`, verified to have shape `expected`.
    /// - Throws: ``ModelError`` `.missingTensor` or `.wrongShape` naming the key (as stored, and its Hugging
    ///   Face name when they differ), the expected and the actual shape, and ``location``; errors of the
    ///   file format (``TensorError``) as they are.
    public func tensor(_ name: String, shape expected: [Int]) throws -> Tensor {
        let stored = storedName(of: name)
        let key = stored == name ? name : "\(stored)' (Hugging Face '\(name))"
        guard let actual = shape(of: name) else {
            throw ModelError.missingTensor(key, expected: expected, file: location)
        }
        guard actual == expected else {
            throw ModelError.wrongShape(key, expected: expected, actual: actual, file: location)
        }
        let tensor = try read(name)
        guard tensor.shape == expected else {
            throw ModelError.wrongShape(key, expected: expected, actual: tensor.shape, file: location)
        }
        return tensor
    }
}

/// Tensors in memory, by name.
public struct TensorDictionary: WeightSource {
    public var tensors: [String: Tensor]
    public var location: String

    public init(_ tensors: [String: Tensor], location: String = "tensors in memory") {
        self.tensors = tensors
        self.location = location
    }

    public func shape(of name: String) -> [Int]? { tensors[name]?.shape }

    public func read(_ name: String) throws -> Tensor {
        guard let tensor = tensors[name] else { throw ModelError.missingTensor(name, expected: [], file: location) }
        return tensor
    }
}

/// The safetensors files of a Hugging Face model folder: `model.safetensors`, or the shards listed by
/// `model.safetensors.index.json` (`weight_map`: tensor name → file). F32, F16 and BF16 (and the other
/// types ``SafeTensorsFile`` reads) convert to Float32.
public final class SafeTensorsWeights: WeightSource {
    public let folder: URL
    private let files: [String: SafeTensorsFile]
    private let fileOfTensor: [String: String]
    /// Tried before each name when the name itself is absent (GPT-2 checkpoints saved from
    /// `GPT2LMHeadModel` prefix every key with `transformer.`).
    public let fallbackPrefixes: [String]

    /// Opens the weights of `folder` (every shard is mapped and its header validated).
    /// - Throws: ``ModelError`` `.missingFile` naming the folder if it has no safetensors weights (saying
    ///   what to do about `pytorch_model.bin`) or the index names a missing shard; `.invalidConfiguration`
    ///   for an unreadable index; ``TensorError`` naming the file for a corrupt shard.
    public init(folder: URL, fallbackPrefixes: [String] = []) throws {
        self.folder = folder
        self.fallbackPrefixes = fallbackPrefixes
        let manager = FileManager.default
        let index = folder.appendingPathComponent("model.safetensors.index.json")
        let single = folder.appendingPathComponent("model.safetensors")
        var files: [String: SafeTensorsFile] = [:]
        var fileOfTensor: [String: String] = [:]
        if manager.fileExists(atPath: index.path) {
            let map: [String: String]
            do {
                let data = try Data(contentsOf: index)
                guard let root = try JSONSerialization.jsonObject(with: data) as? [String: Any],
                      let weightMap = root["weight_map"] as? [String: String] else {
                    throw ModelError(.invalidConfiguration, "\(index.path): no \"weight_map\" object of tensor name → file name")
                }
                map = weightMap
            } catch let error as ModelError {
                throw error
            } catch {
                throw ModelError(.invalidConfiguration, "\(index.path): not valid JSON (\(error.localizedDescription))")
            }
            for shard in Set(map.values).sorted() {
                let url = folder.appendingPathComponent(shard)
                guard manager.fileExists(atPath: url.path) else {
                    throw ModelError(.missingFile, "\(url.path) is listed in \(index.lastPathComponent) but missing")
                }
                files[shard] = try SafeTensorsFile(contentsOf: url)
            }
            fileOfTensor = map
        } else {
            guard manager.fileExists(atPath: single.path) else {
                let hasPickle = manager.fileExists(atPath: folder.appendingPathComponent("pytorch_model.bin").path)
                throw ModelError(.missingFile, "\(folder.path) has no model.safetensors (nor model.safetensors.index.json)" +
                                 (hasPickle ? "; it has pytorch_model.bin, which Silo does not read: convert it with transformers (model.save_pretrained(dir, safe_serialization=True))" : ""))
            }
            let file = try SafeTensorsFile(contentsOf: single)
            files[single.lastPathComponent] = file
            for name in file.names { fileOfTensor[name] = single.lastPathComponent }
        }
        self.files = files
        self.fileOfTensor = fileOfTensor
    }

    public var location: String { folder.path }

    /// Every tensor name in the checkpoint.
    public var names: [String] { fileOfTensor.keys.sorted() }

    private func resolve(_ name: String) -> (file: SafeTensorsFile, name: String)? {
        for candidate in [name] + fallbackPrefixes.map({ $0 + name }) {
            if let fileName = fileOfTensor[candidate], let file = files[fileName], file.contains(candidate) {
                return (file, candidate)
            }
        }
        return nil
    }

    public func shape(of name: String) -> [Int]? { resolve(name).flatMap { $0.file.info($0.name)?.shape } }

    public func read(_ name: String) throws -> Tensor {
        guard let (file, stored) = resolve(name) else {
            throw ModelError.missingTensor(name, expected: [], file: location)
        }
        return try file.tensor(stored)
    }

    public func storedName(of name: String) -> String {
        resolve(name)?.name ?? name
    }
}

/// The tensors of a llama-architecture GGUF file under Hugging Face names, dequantised to Float32.
///
/// `model.embed_tokens.weight` ← `token_embd.weight`, `model.layers.N.self_attn.q_proj.weight` ←
/// `blk.N.attn_q.weight` (rows un-permuted from llama.cpp's interleaved-RoPE order with
/// ``GGUFFile/unpermuteLlamaQK(_:heads:)``, heads H; `k_proj` with KVH), `v_proj` ← `attn_v`, `o_proj` ←
/// `attn_output`, `input_layernorm` ← `attn_norm`, `post_attention_layernorm` ← `ffn_norm`, `mlp.gate_proj`
/// / `up_proj` / `down_proj` ← `ffn_gate` / `ffn_up` / `ffn_down`, `model.norm.weight` ← `output_norm.weight`,
/// `lm_head.weight` ← `output.weight` (absent when the head is tied).
///
/// With ``WeightPrecision/quantized``, projections stored as Q4_0 / Q4_1 / Q8_0 are handed out in their
/// blocks instead (``QuantizedWeightSource/quantizedLinear(_:shape:bias:)``).
public final class GGUFLlamaWeights: WeightSource {
    public let file: GGUFFile
    public let heads: Int
    public let keyValueHeads: Int
    /// Whether projections keep their quantised blocks (default: Float32).
    public let weightPrecision: WeightPrecision

    public init(file: GGUFFile, heads: Int, keyValueHeads: Int, weightPrecision: WeightPrecision = .float32) {
        self.file = file
        self.heads = heads
        self.keyValueHeads = keyValueHeads
        self.weightPrecision = weightPrecision
    }

    public var location: String { file.url.path }

    static let blockNames: [String: String] = [
        "input_layernorm.weight": "attn_norm.weight",
        "self_attn.q_proj.weight": "attn_q.weight", "self_attn.q_proj.bias": "attn_q.bias",
        "self_attn.k_proj.weight": "attn_k.weight", "self_attn.k_proj.bias": "attn_k.bias",
        "self_attn.v_proj.weight": "attn_v.weight", "self_attn.v_proj.bias": "attn_v.bias",
        "self_attn.o_proj.weight": "attn_output.weight", "self_attn.o_proj.bias": "attn_output.bias",
        "post_attention_layernorm.weight": "ffn_norm.weight",
        "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
        "mlp.down_proj.weight": "ffn_down.weight",
    ]

    /// The GGUF name of a Hugging Face tensor name (itself when there is no mapping).
    public func storedName(of name: String) -> String {
        switch name {
        case "model.embed_tokens.weight": return "token_embd.weight"
        case "model.norm.weight": return "output_norm.weight"
        case "lm_head.weight": return "output.weight"
        default:
            guard let (index, rest) = LlamaModel.splitBlockName(name), let mapped = GGUFLlamaWeights.blockNames[rest] else {
                return name
            }
            return "blk.\(index).\(mapped)"
        }
    }

    public func shape(of name: String) -> [Int]? { file.tensorInfo(storedName(of: name))?.shape }

    public func read(_ name: String) throws -> Tensor {
        let stored = storedName(of: name)
        let tensor = try file.tensor(stored)
        if stored.hasSuffix(".attn_q.weight") || stored.hasSuffix(".attn_q.bias") {
            return GGUFFile.unpermuteLlamaQK(tensor, heads: heads)
        }
        if stored.hasSuffix(".attn_k.weight") || stored.hasSuffix(".attn_k.bias") {
            return GGUFFile.unpermuteLlamaQK(tensor, heads: keyValueHeads)
        }
        return tensor
    }
}

// MARK: Checkpoint

/// Loads models from checkpoints: Hugging Face folders (`config.json` + safetensors) and GGUF files.
public enum Checkpoint {
    /// The model families Silo builds, by Hugging Face `model_type`.
    public static let supportedModelTypes = LlamaConfiguration.supportedModelTypes + ["gpt2"]

    /// Loads a known model name (`smollm2-135m`, from the ``ModelStore`` cache), a `.gguf` file or a
    /// Hugging Face folder.
    public static func load(_ nameOrPath: String, stages: Set<ModelStage>? = nil,
                            store: ModelStore = ModelStore(),
                            weightPrecision: WeightPrecision = .float32) throws -> any LanguageModel {
        try load(store.resolve(nameOrPath), stages: stages, weightPrecision: weightPrecision)
    }

    /// Loads the model at `url`: a `.gguf` file or a Hugging Face model folder.
    /// - Parameters:
    ///   - stages: the stages to load (default: all); a split-learning party loads only its own.
    ///   - weightPrecision: ``WeightPrecision/quantized`` keeps a GGUF's Q4_0/Q4_1/Q8_0 projections in
    ///     their blocks (frozen, for inference); Hugging Face folders always load as Float32.
    /// - Throws: ``ModelError`` naming the file: `.missingFile` (no config.json, no weights),
    ///   `.invalidConfiguration` (unreadable config), `.unknownArchitecture` (unsupported `model_type` or
    ///   GGUF architecture), `.missingTensor` / `.wrongShape` (naming the key and both shapes);
    ///   ``TensorError`` naming the file for a corrupt or truncated checkpoint.
    public static func load(_ url: URL, stages: Set<ModelStage>? = nil,
                            weightPrecision: WeightPrecision = .float32) throws -> any LanguageModel {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) else {
            throw ModelError(.missingFile, "no such file or folder: \(url.path)")
        }
        if isDirectory.boolValue { return try loadFolder(url, stages: stages) }
        guard url.pathExtension.lowercased() == "gguf" else {
            throw ModelError(.missingFile, "\(url.path) is neither a .gguf file nor a Hugging Face model folder (config.json + model.safetensors)")
        }
        return try loadLlama(gguf: url, stages: stages, weightPrecision: weightPrecision)
    }

    /// Loads a Hugging Face folder: `config.json` decides the family.
    public static func loadFolder(_ folder: URL, stages: Set<ModelStage>? = nil) throws -> any LanguageModel {
        let (data, configURL) = try readConfiguration(folder)
        let modelType = try Checkpoint.modelType(of: data, file: configURL)
        switch modelType {
        case let type where LlamaConfiguration.supportedModelTypes.contains(type):
            let configuration: LlamaConfiguration = try decode(data, file: configURL)
            return try LlamaModel(configuration: configuration, weights: SafeTensorsWeights(folder: folder), stages: stages)
        case "gpt2":
            let configuration: GPT2Configuration = try decode(data, file: configURL)
            return try GPT2Model(configuration: configuration,
                                 weights: SafeTensorsWeights(folder: folder, fallbackPrefixes: ["transformer."]),
                                 stages: stages)
        default:
            throw ModelError(.unknownArchitecture, "\(configURL.path): model_type '\(modelType)' is not supported (supported: \(supportedModelTypes.joined(separator: ", ")))")
        }
    }

    /// Loads a Llama-family Hugging Face folder.
    public static func loadLlama(folder: URL, stages: Set<ModelStage>? = nil) throws -> LlamaModel {
        let (data, configURL) = try readConfiguration(folder)
        let modelType = try Checkpoint.modelType(of: data, file: configURL)
        guard LlamaConfiguration.supportedModelTypes.contains(modelType) else {
            throw ModelError(.unknownArchitecture, "\(configURL.path): model_type '\(modelType)' is not a Llama-family model (supported: \(LlamaConfiguration.supportedModelTypes.joined(separator: ", ")))")
        }
        let configuration: LlamaConfiguration = try decode(data, file: configURL)
        return try LlamaModel(configuration: configuration, weights: SafeTensorsWeights(folder: folder), stages: stages)
    }

    /// Loads a llama-architecture GGUF file (configuration from its `llama.*` metadata, tensors
    /// dequantised and Q/K un-permuted; see ``GGUFLlamaWeights``), or with ``WeightPrecision/quantized``
    /// its Q4_0/Q4_1/Q8_0 projections and tied head kept in their blocks (``QuantizedLinear``).
    public static func loadLlama(gguf url: URL, stages: Set<ModelStage>? = nil,
                                 weightPrecision: WeightPrecision = .float32) throws -> LlamaModel {
        let file = try GGUFFile(contentsOf: url)
        let configuration = try llamaConfiguration(gguf: file)
        var frequencies: [Float]? = nil
        if file.tensorInfo("rope_freqs.weight") != nil {
            // Llama 3.1+ GGUFs carry their rope scaling as per-frequency divisors.
            let factors = try file.tensor("rope_freqs.weight").toArray()
            let base = Tensor.ropeInverseFrequencies(dimension: configuration.headDimension, theta: configuration.ropeTheta)
            guard factors.count == base.count else {
                throw ModelError.wrongShape("rope_freqs.weight", expected: [base.count], actual: [factors.count], file: url.path)
            }
            frequencies = zip(base, factors).map { $0 / $1 }
        }
        return try LlamaModel(configuration: configuration,
                              weights: GGUFLlamaWeights(file: file, heads: configuration.attentionHeads,
                                                        keyValueHeads: configuration.keyValueHeads,
                                                        weightPrecision: weightPrecision),
                              stages: stages, inverseFrequencies: frequencies)
    }

    /// The Llama configuration of a GGUF file, from `llama.*` metadata: `block_count`, `embedding_length`,
    /// `feed_forward_length`, `attention.head_count`, `attention.head_count_kv`, `attention.key_length`,
    /// `attention.layer_norm_rms_epsilon`, `rope.freq_base`, `rope.scaling.type`/`factor`,
    /// `context_length`, `vocab_size` (else the token table's rows); tied when `output.weight` is absent.
    /// - Throws: ``ModelError`` `.unknownArchitecture` naming the file unless `general.architecture` is
    ///   `llama`; ``TensorError`` naming the file and key for missing metadata.
    public static func llamaConfiguration(gguf file: GGUFFile) throws -> LlamaConfiguration {
        let path = file.url.path
        guard let architecture = file.architecture else {
            throw ModelError(.unknownArchitecture, "\(path): no general.architecture metadata key")
        }
        guard architecture == "llama" else {
            throw ModelError(.unknownArchitecture, "\(path): GGUF architecture '\(architecture)' is not supported (supported: llama)")
        }
        let hidden = try file.requiredInt("llama.embedding_length")
        let heads = try file.requiredInt("llama.attention.head_count")
        guard heads > 0 else {
            throw ModelError(.invalidConfiguration, "\(path): llama.attention.head_count is \(heads)")
        }
        let headDimension = file.int("llama.attention.key_length") ?? hidden / heads
        if let rotated = file.int("llama.rope.dimension_count"), rotated != headDimension {
            throw ModelError(.invalidConfiguration, "\(path): llama.rope.dimension_count \(rotated) differs from the head dimension \(headDimension) (partial rotary embedding is not supported)")
        }
        let vocabulary = file.int("llama.vocab_size") ?? file.tensorInfo("token_embd.weight")?.shape.first
            ?? file.stringArray("tokenizer.ggml.tokens")?.count
        guard let vocabulary else {
            throw ModelError(.invalidConfiguration, "\(path): no llama.vocab_size and no token_embd.weight to infer the vocabulary size from")
        }
        var scaling: LlamaConfiguration.RoPEScaling? = nil
        if let type = file.string("llama.rope.scaling.type"), type != "none" {
            guard type == "linear" else {
                throw ModelError(.invalidConfiguration, "\(path): llama.rope.scaling.type '\(type)' is not supported (supported: none, linear)")
            }
            scaling = .init(type: "linear", factor: Float(try file.requiredFloat("llama.rope.scaling.factor")))
        }
        var eos: [Int] = file.int("tokenizer.ggml.eos_token_id").map { [$0] } ?? []
        if let endOfTurn = file.int("tokenizer.ggml.eot_token_id"), !eos.contains(endOfTurn) { eos.append(endOfTurn) }
        return LlamaConfiguration(
            modelType: "llama",
            vocabularySize: vocabulary,
            hiddenSize: hidden,
            intermediateSize: try file.requiredInt("llama.feed_forward_length"),
            layerCount: try file.requiredInt("llama.block_count"),
            attentionHeads: heads,
            keyValueHeads: file.int("llama.attention.head_count_kv") ?? heads,
            headDimension: headDimension,
            rmsNormEpsilon: Float(try file.requiredFloat("llama.attention.layer_norm_rms_epsilon")),
            ropeTheta: Float(file.float("llama.rope.freq_base") ?? 10000),
            ropeScaling: scaling,
            maximumPositions: file.int("llama.context_length") ?? 2048,
            tieWordEmbeddings: file.tensorInfo("output.weight") == nil,
            bosTokenId: file.int("tokenizer.ggml.bos_token_id"),
            eosTokenIds: eos)
    }

    // MARK: config.json

    /// The bytes of `folder/config.json`.
    static func readConfiguration(_ folder: URL) throws -> (Data, URL) {
        let url = folder.appendingPathComponent("config.json")
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw ModelError(.missingFile, "\(folder.path) has no config.json (a Hugging Face model folder holds config.json and model.safetensors)")
        }
        do {
            return (try Data(contentsOf: url), url)
        } catch {
            throw ModelError(.missingFile, "\(url.path): cannot read (\(error.localizedDescription))")
        }
    }

    /// `model_type` of a config.json.
    static func modelType(of data: Data, file: URL) throws -> String {
        let root: Any
        do {
            root = try JSONSerialization.jsonObject(with: data)
        } catch {
            throw ModelError(.invalidConfiguration, "\(file.path): not valid JSON (\(error.localizedDescription))")
        }
        guard let object = root as? [String: Any] else {
            throw ModelError(.invalidConfiguration, "\(file.path): the top level is not a JSON object")
        }
        guard let type = object["model_type"] as? String else {
            let architectures = (object["architectures"] as? [String])?.joined(separator: ", ") ?? "none"
            throw ModelError(.invalidConfiguration, "\(file.path): no \"model_type\" key (architectures: \(architectures)); supported model types: \(supportedModelTypes.joined(separator: ", "))")
        }
        return type
    }

    /// Decodes a configuration, turning `DecodingError` into a message naming the file and the key.
    static func decode<C: Decodable>(_ data: Data, file: URL) throws -> C {
        do {
            return try JSONDecoder().decode(C.self, from: data)
        } catch let error as DecodingError {
            throw ModelError(.invalidConfiguration, "\(file.path): \(describe(error))")
        } catch {
            throw ModelError(.invalidConfiguration, "\(file.path): \(error)")
        }
    }

    private static func describe(_ error: DecodingError) -> String {
        func path(_ keys: [any CodingKey]) -> String { keys.map(\.stringValue).joined(separator: ".") }
        switch error {
        case .keyNotFound(let key, let context):
            return "missing key \"\(path(context.codingPath + [key]))\""
        case .typeMismatch(let type, let context):
            return "key \"\(path(context.codingPath))\" is not a \(type): \(context.debugDescription)"
        case .valueNotFound(let type, let context):
            return "key \"\(path(context.codingPath))\" is null, expected a \(type)"
        case .dataCorrupted(let context):
            return "invalid JSON at \"\(path(context.codingPath))\": \(context.debugDescription)"
        @unknown default:
            return "\(error)"
        }
    }
}
