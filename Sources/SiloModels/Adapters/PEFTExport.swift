import Foundation
import SiloTensor

// R rank, C input features, O output features, P virtual tokens, L blocks, KVH key/value heads,
// D head dimension. The Hugging Face PEFT adapter layout (written against peft 0.21): a folder with
// `adapter_config.json` and `adapter_model.safetensors`, loaded by `PeftModel.from_pretrained(model, folder)`.

extension AdapterSet {
    /// The files of a PEFT adapter folder.
    public static let peftConfigurationFile = "adapter_config.json"
    public static let peftWeightsFile = "adapter_model.safetensors"

    /// Writes the adapters in Hugging Face PEFT's layout into `folder` (created if needed), so that
    /// `PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), folder)` runs the same model.
    ///
    /// - LoRA: `adapter_config.json` with peft_type "LORA", r, lora_alpha, lora_dropout, target_modules,
    ///   layers_to_transform, bias "none", task_type "CAUSAL_LM", and fan_in_fan_out true for GPT-2 (whose
    ///   `Conv1D` stores W as (in, out); PEFT's A (R, in) and B (out, R) keep nn.Linear's orientation
    ///   either way, so the tensors are written as they are). Tensors keep their names
    ///   (`base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`).
    /// - Prefix tuning: peft_type "PREFIX_TUNING" with num_virtual_tokens P, num_layers L,
    ///   num_attention_heads KVH, token_dim KVH·D (PEFT's settings for grouped-query models), and one
    ///   tensor `prompt_embeddings` (P, 2·L·KVH·D) holding the final keys and values (a reparameterised
    ///   prefix is exported as its MLP's output, as PEFT does for inference). Every block must be prefixed.
    ///
    /// - Parameter baseModelNameOrPath: recorded as `base_model_name_or_path` (a hub id or folder).
    /// - Throws: ``ModelError`` if the set cannot be expressed in PEFT's layout; ``TensorError`` or a
    ///   Foundation error if a file cannot be written.
    public func exportPEFT(to folder: URL, baseModelNameOrPath: String) throws {
        var configuration: [String: Any] = [
            "base_model_name_or_path": baseModelNameOrPath,
            "task_type": "CAUSAL_LM",
            "inference_mode": true,
            "revision": NSNull(),
            "auto_mapping": NSNull(),
        ]
        let tensors: [(name: String, tensor: Tensor)]
        if let lora = loraConfiguration, prefixTuning == nil {
            configuration.merge([
                "peft_type": "LORA",
                "r": lora.rank,
                "lora_alpha": AdapterSet.jsonNumber(lora.alpha),
                "lora_dropout": AdapterSet.jsonNumber(lora.dropout),
                "target_modules": Array(Set(lora.targetModules)).sorted(),
                "layers_to_transform": lora.layers.map { $0.sorted() as Any } ?? NSNull(),
                "layers_pattern": NSNull(),
                "bias": "none",
                "fan_in_fan_out": modelType == "gpt2",
                "init_lora_weights": true,
                "use_rslora": false,
                "use_dora": false,
                "modules_to_save": NSNull(),
                "rank_pattern": [String: Any](),
                "alpha_pattern": [String: Any](),
            ]) { _, new in new }
            tensors = parameters.map { ($0.name, $0.tensor) }
        } else if let prefix = prefixTuning, loraConfiguration == nil {
            let tokenDimension = prefix.keyValueHeads * prefix.headSize
            configuration.merge([
                "peft_type": "PREFIX_TUNING",
                "num_virtual_tokens": prefix.configuration.length,
                "num_layers": prefix.layerCount,
                "num_attention_heads": prefix.keyValueHeads,
                "token_dim": tokenDimension,
                "encoder_hidden_size": tokenDimension,
                "prefix_projection": false,
                "num_transformer_submodules": 1,
                "modules_to_save": NSNull(),
            ]) { _, new in new }
            tensors = [("prompt_embeddings", try prefix.promptEmbeddings())]
        } else {
            throw ModelError(.invalidConfiguration, "PEFT export: the set must hold exactly one kind of adapter (LoRA or prefix tuning)")
        }
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        var json = try JSONSerialization.data(withJSONObject: configuration, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
        json.append(UInt8(ascii: "\n"))
        try json.write(to: folder.appendingPathComponent(AdapterSet.peftConfigurationFile), options: .atomic)
        try SafeTensorsFile.write(tensors, metadata: ["format": "pt"],
                                  to: folder.appendingPathComponent(AdapterSet.peftWeightsFile))
    }

    /// Attaches the adapters of a PEFT folder (`adapter_config.json` + `adapter_model.safetensors`) to
    /// `model`: LoRA (plain: no DoRA, no rsLoRA, no per-module rank or alpha patterns, bias "none",
    /// target_modules a list) or PREFIX_TUNING (PEFT saves `prompt_embeddings`, the final keys and values
    /// even when trained through a projection; they become directly trained prefixes). Pickled `adapter_model.bin` files are
    /// refused (loading them can run arbitrary code): convert them to safetensors first.
    /// - Throws: ``ModelError`` naming the file and the field for an unsupported setting, and the key and
    ///   shapes for a tensor that does not fit the model.
    public static func importPEFT(from folder: URL, into model: any LanguageModel) throws -> AdapterSet {
        let configurationURL = folder.appendingPathComponent(peftConfigurationFile)
        let weightsURL = folder.appendingPathComponent(peftWeightsFile)
        guard FileManager.default.fileExists(atPath: configurationURL.path) else {
            throw ModelError(.missingFile, "\(configurationURL.path) does not exist: not a PEFT adapter folder")
        }
        guard FileManager.default.fileExists(atPath: weightsURL.path) else {
            let pickled = FileManager.default.fileExists(atPath: folder.appendingPathComponent("adapter_model.bin").path)
            throw ModelError(.missingFile, "\(weightsURL.path) does not exist\(pickled ? " (adapter_model.bin is a pickle, which Silo does not load: save the adapter with safe_serialization=True)" : "")")
        }
        let object = try JSONSerialization.jsonObject(with: Data(contentsOf: configurationURL))
        guard let fields = object as? [String: Any] else {
            throw ModelError(.invalidConfiguration, "\(configurationURL.path): not a JSON object")
        }
        func fail(_ message: String) -> ModelError { ModelError(.invalidConfiguration, "\(configurationURL.path): \(message)") }
        func number(_ key: String) throws -> Double {
            guard let value = fields[key] as? NSNumber else { throw fail("field '\(key)' is missing or not a number") }
            return value.doubleValue
        }
        func isSet(_ key: String) -> Bool {
            guard let value = fields[key], !(value is NSNull) else { return false }
            if let flag = value as? Bool { return flag }
            if let dictionary = value as? [String: Any] { return !dictionary.isEmpty }
            return true
        }
        let weights = try SafeTensorsFile(contentsOf: weightsURL)
        let set: AdapterSet
        switch fields["peft_type"] as? String {
        case "LORA":
            for unsupported in ["use_dora", "use_rslora", "rank_pattern", "alpha_pattern", "layer_replication", "modules_to_save"] where isSet(unsupported) {
                throw fail("'\(unsupported)' is set; Silo imports plain LoRA only")
            }
            if let bias = fields["bias"] as? String, bias != "none" { throw fail("bias '\(bias)' is not supported (only \"none\")") }
            guard let targets = fields["target_modules"] as? [String] else {
                throw fail("target_modules must be a list of module names (a regular expression string is not supported)")
            }
            let layers: [Int]?
            switch fields["layers_to_transform"] {
            case let list as [Int]: layers = list
            case let single as Int: layers = [single]
            default: layers = nil
            }
            let configuration = LoRAConfiguration(rank: Int(try number("r")), alpha: Float(try number("lora_alpha")),
                                                  dropout: Float((fields["lora_dropout"] as? NSNumber)?.doubleValue ?? 0),
                                                  targetModules: targets, layers: layers)
            set = try attachLoRA(to: model, configuration: configuration, key: RandomKey(seed: 0))
            var tensors: [String: Tensor] = [:]
            for name in weights.names { tensors[name] = try weights.tensor(name) }
            try set.assign(tensors, source: weightsURL.path)
        case "PREFIX_TUNING":
            let length = Int(try number("num_virtual_tokens"))
            guard Int(try number("num_layers")) == model.layerCount,
                  Int(try number("token_dim")) == model.keyValueHeads * model.headSize else {
                throw fail("num_layers \(fields["num_layers"] ?? "?") and token_dim \(fields["token_dim"] ?? "?") do not fit this model (\(model.layerCount) blocks, KVH·D = \(model.keyValueHeads * model.headSize))")
            }
            set = try attachPrefixTuning(to: model, configuration: PrefixTuningConfiguration(length: length), key: RandomKey(seed: 0))
            guard let prefix = set.prefixTuning else { preconditionFailure("prefix set without prefixes") }
            let expected = [length, 2 * model.layerCount * model.keyValueHeads * model.headSize]
            guard weights.contains("prompt_embeddings") else {
                throw ModelError.missingTensor("prompt_embeddings", expected: expected, file: weightsURL.path)
            }
            let embeddings = try weights.tensor("prompt_embeddings")
            guard embeddings.shape == expected else {
                throw ModelError.wrongShape("prompt_embeddings", expected: expected, actual: embeddings.shape, file: weightsURL.path)
            }
            let perLayer = try embeddings.reshaped([length, 2 * model.layerCount, model.keyValueHeads, model.headSize])
            var tensors: [String: Tensor] = [:]
            for layer in prefix.layers {
                for (k, name) in [(0, PrefixTuning.keyName(layer)), (1, PrefixTuning.valueName(layer))] {
                    tensors[name] = try perLayer.sliced(axis: 1, range: (2 * layer + k)..<(2 * layer + k + 1))
                        .reshaped([length, model.keyValueHeads, model.headSize])
                }
            }
            try set.assign(tensors, source: weightsURL.path)
        case let other:
            throw fail("peft_type \(other.map { "'\($0)'" } ?? "missing") is not supported (LORA or PREFIX_TUNING)")
        }
        return set
    }

    /// `value` as the JSON number its shortest decimal spelling denotes (0.05, not 0.0500000007).
    static func jsonNumber(_ value: Float) -> Any {
        if value == value.rounded(), abs(value) < 1e9 { return Int(value) }
        return Double("\(value)") ?? Double(value)
    }
}
