import Foundation
import SiloTensor

// N total adapter elements (every trainable tensor, flattened in order).

/// The adapters attached to one model: LoRA layers or p-tuning v2 prefixes, and the list of their
/// trainable tensors under stable names, which optimizers, aggregation and serialisation share.
///
/// Names follow PEFT: `base_model.model.<Hugging Face path>.lora_A.weight` (GPT-2's paths start with
/// `transformer.`, as in `GPT2LMHeadModel`), `prefix.layers.<l>.key`, `prefix_encoder.…`. The order is
/// fixed by the model (blocks ascending, projections in the model's order, A before B), so two parties
/// that attach the same configuration list the same names in the same order, and a flattened vector
/// (``flattenedValues()``) means the same thing everywhere. (The model itself lists the LoRA tensors
/// under its own names, e.g. `model.layers.0.self_attn.q_proj.lora_A.weight` or `h.0.attn.c_attn.lora_A.weight`.)
///
/// Attaching freezes the model's own tensors (they are detached: no gradient, no optimizer state), so
/// `backward()` fills only the adapters' gradients. A party of a split model attaches to its own model
/// instance (the stages it loaded); ``restricted(to:)`` selects the adapters of some stages from a set.
///
/// Values are written in place (``assign(_:)``, ``load(contentsOf:)``): an optimizer built over
/// ``trainableTensors`` keeps seeing the same storage.
public final class AdapterSet {
    /// One LoRA layer of the set.
    public struct LoRAEntry {
        /// The projection's name in the model (``LanguageModel/linearLayerNames``).
        public let layerName: String
        /// Its Hugging Face path (PEFT names its tensors after it).
        public let path: String
        /// The stage holding the projection.
        public let stage: ModelStage
        public let layer: LoRALinear
    }

    /// The model's `model_type` (`llama`, `qwen2`, `gpt2`).
    public let modelType: String
    /// The LoRA configuration, if the set has LoRA layers.
    public let loraConfiguration: LoRAConfiguration?
    /// LoRA layers in the model's order.
    public let loraEntries: [LoRAEntry]
    /// The prefixes, if the set is prefix tuning.
    public let prefixTuning: PrefixTuning?
    /// The stages this set covers (nil: every stage of the model it was attached to).
    public let stages: Set<ModelStage>?

    init(modelType: String, loraConfiguration: LoRAConfiguration?, loraEntries: [LoRAEntry],
         prefixTuning: PrefixTuning?, stages: Set<ModelStage>?) {
        self.modelType = modelType
        self.loraConfiguration = loraConfiguration
        self.loraEntries = loraEntries
        self.prefixTuning = prefixTuning
        self.stages = stages
    }

    // MARK: Attaching

    /// Wraps every projection of `model` that `configuration` targets in a ``LoRALinear`` and returns
    /// the set of their adapters. The model's own tensors are frozen (detached) first.
    ///
    /// A projection matches when its Hugging Face path equals or ends with `.` + a target module
    /// (`q_proj` matches `model.layers.3.self_attn.q_proj`; GPT-2's `c_attn` matches
    /// `transformer.h.0.attn.c_attn`) and, with `configuration.layers`, lies in one of those blocks.
    /// Only the model's loaded blocks are visited (a party of a split model attaches to its own).
    /// Each A is drawn from `key.split(path)`, so it is the same on every party and in every run.
    /// - Throws: ``ModelError`` for an invalid configuration, when nothing matches (the error lists the
    ///   projections), or when a matching projection already carries an adapter.
    public static func attachLoRA(to model: any LanguageModel, configuration: LoRAConfiguration,
                                  key: RandomKey) throws -> AdapterSet {
        try configuration.validate()
        var matches: [(name: String, path: String, stage: ModelStage, linear: Linear)] = []
        for name in model.linearLayerNames {
            let path = huggingFacePath(of: name, modelType: model.modelType)
            guard configuration.targets(path) else { continue }
            let block = blockIndex(in: name)
            if let layers = configuration.layers {
                guard let block, layers.contains(block) else { continue }
            }
            guard let layer = model.linearLayer(named: name) else { continue }
            if layer is LoRALinear {
                throw ModelError(.invalidConfiguration, "LoRA: projection '\(name)' already carries a LoRA adapter; remove it first (AdapterSet.remove(from:merging:))")
            }
            guard let linear = layer as? Linear else {
                throw ModelError(.invalidConfiguration, "LoRA: projection '\(name)' is a \(type(of: layer)), not a plain Linear")
            }
            matches.append((name, path, block.map { .block($0) } ?? .head, linear))
        }
        guard !matches.isEmpty else {
            let available = Set(model.linearLayerNames.map { $0.split(separator: ".").last.map(String.init) ?? $0 }).sorted()
            throw ModelError(.invalidConfiguration, "LoRA: no loaded projection matches target_modules \(configuration.targetModules)\(configuration.layers.map { " in blocks \($0)" } ?? "") (this \(model.modelType) model has \(available.joined(separator: ", ")))")
        }
        try freezeBaseParameters(of: model)
        var entries: [LoRAEntry] = []
        for match in matches {
            let layer = try LoRALinear(wrapping: match.linear, rank: configuration.rank, alpha: configuration.alpha,
                                       dropout: configuration.dropout, key: key.split(match.path))
            try model.replaceLinearLayer(named: match.name, with: layer)
            entries.append(LoRAEntry(layerName: match.name, path: match.path, stage: match.stage, layer: layer))
        }
        return AdapterSet(modelType: model.modelType, loraConfiguration: configuration, loraEntries: entries,
                          prefixTuning: nil, stages: nil)
    }

    /// Fresh p-tuning v2 prefixes for `model` (see ``PrefixTuning``); the model's own tensors are frozen.
    /// Run the model through ``logits(model:ids:batch:time:paddingMask:)`` or ``PrefixTuning/makeContext(model:batch:time:paddingMask:)``
    /// so the prefixes reach attention.
    /// - Throws: ``ModelError`` for an invalid configuration.
    public static func attachPrefixTuning(to model: any LanguageModel, configuration: PrefixTuningConfiguration,
                                          key: RandomKey) throws -> AdapterSet {
        let prefix = try PrefixTuning(model: model, configuration: configuration, key: key)
        try freezeBaseParameters(of: model)
        return AdapterSet(modelType: model.modelType, loraConfiguration: nil, loraEntries: [], prefixTuning: prefix, stages: nil)
    }

    /// Detaches every tensor of `model` that requires gradients, except LoRA tensors.
    static func freezeBaseParameters(of model: any LanguageModel) throws {
        for (name, tensor) in model.namedParameters() where tensor.requiresGrad && !isLoRAName(name) {
            try model.setParameter(name, to: tensor.detached())
        }
    }

    static func isLoRAName(_ name: String) -> Bool { name.contains(".lora_A.") || name.contains(".lora_B.") }

    /// Puts the wrapped projections back into `model`: the original ones, or with `merging` the fused
    /// W + (α/R)·B·A (to serve or export a merged model).
    /// - Throws: ``ModelError`` if a projection of this set is no longer in the model.
    public func remove(from model: any LanguageModel, merging: Bool) throws {
        for entry in loraEntries {
            guard model.linearLayer(named: entry.layerName) === entry.layer else {
                throw ModelError(.missingTensor, "LoRA: projection '\(entry.layerName)' of this adapter set is not in the model")
            }
            try model.replaceLinearLayer(named: entry.layerName, with: merging ? try entry.layer.fused() : entry.layer.base)
        }
    }

    // MARK: Trainable tensors

    /// Every trainable tensor with its stable name, in the set's fixed order.
    public var parameters: [(name: String, tensor: Tensor)] { entries.map { ($0.name, $0.tensor) } }

    /// The trainable tensors, for an optimizer (``parameterNames`` are their names).
    public var trainableTensors: [Tensor] { entries.map(\.tensor) }

    /// The stable names, in order.
    public var parameterNames: [String] { entries.map(\.name) }

    /// N: the number of trainable values.
    public var parameterCount: Int { entries.reduce(0) { $0 + $1.tensor.count } }

    /// The tensors in order with the stage each belongs to (nil for a prefix MLP shared by blocks).
    var entries: [(name: String, tensor: Tensor, stage: ModelStage?)] {
        var list: [(name: String, tensor: Tensor, stage: ModelStage?)] = []
        for entry in loraEntries {
            for (suffix, tensor) in entry.layer.trainableParameters {
                list.append((AdapterSet.peftName(path: entry.path, suffix: suffix), tensor, entry.stage))
            }
        }
        if let prefixTuning {
            for item in prefixTuning.trainableParameters where stages == nil || item.stage.map({ stages?.contains($0) ?? true }) ?? true {
                list.append(item)
            }
        }
        return list
    }

    /// The adapters of `stages` only, sharing this set's layers and tensors (split learning: the client
    /// keeps blocks 0..<k and L−j..<L, the server the rest).
    /// - Throws: ``ModelError`` if a prefix reparameterisation MLP feeds blocks both inside and outside
    ///   `stages` (give each party its own prefixes with `layers` instead).
    public func restricted(to stages: Set<ModelStage>) throws -> AdapterSet {
        if let prefixTuning, prefixTuning.embedding != nil {
            let inside = prefixTuning.layers.filter { stages.contains(.block($0)) }
            guard inside.isEmpty || inside.count == prefixTuning.layers.count else {
                throw ModelError(.invalidConfiguration, "prefix tuning: the reparameterisation MLP feeds blocks \(prefixTuning.layers), which the stages split; build one PrefixTuning per party with configuration.layers")
            }
        }
        let keptPrefix = prefixTuning.flatMap { prefix in
            prefix.layers.contains(where: { stages.contains(.block($0)) }) ? prefix : nil
        }
        let combined = self.stages.map { $0.intersection(stages) } ?? stages
        return AdapterSet(modelType: modelType, loraConfiguration: loraConfiguration,
                          loraEntries: loraEntries.filter { stages.contains($0.stage) },
                          prefixTuning: keptPrefix, stages: combined)
    }

    /// Switches LoRA dropout on (training) or off (evaluation).
    public func setTraining(_ training: Bool) {
        for entry in loraEntries { entry.layer.isTraining = training }
    }

    /// Merges every LoRA update into its projection's weight (``LoRALinear/merge()``).
    public func merge() throws {
        for entry in loraEntries { try entry.layer.merge() }
    }

    /// Undoes ``merge()`` exactly.
    public func unmerge() {
        for entry in loraEntries { entry.layer.unmerge() }
    }

    // MARK: Running the model

    /// logits (B, T, V) of `model` with these adapters: LoRA acts inside the model already; prefixes
    /// are passed through the forward context (tokens at positions P ..< P + T, see ``PrefixTuning``).
    public func logits(model: any LanguageModel, ids: [Int32], batch: Int, time: Int,
                       paddingMask: Tensor? = nil) throws -> Tensor {
        if let prefixTuning {
            return try prefixTuning.logits(model: model, ids: ids, batch: batch, time: time, paddingMask: paddingMask)
        }
        return try model.logits(ids: ids, batch: batch, time: time, paddingMask: paddingMask)
    }

    /// Mean next-token cross-entropy of `model` with these adapters; `targets` (B·T) uses −100 to ignore.
    public func loss(model: any LanguageModel, ids: [Int32], targets: [Int32], batch: Int, time: Int,
                     paddingMask: Tensor? = nil) throws -> Tensor {
        try Tensor.crossEntropy(logits: logits(model: model, ids: ids, batch: batch, time: time, paddingMask: paddingMask),
                                targets: targets)
    }

    // MARK: Values

    /// Detached copies of the values, by name, in order (a snapshot later steps do not change).
    public func values() -> [(name: String, tensor: Tensor)] {
        entries.map { ($0.name, AdapterSet.copy($0.tensor)) }
    }

    /// Overwrites the values in place from `tensors` (e.g. averaged by a server), leaving gradients and
    /// optimizer references intact.
    /// - Parameter requireAll: whether every tensor of the set must be given (otherwise only the given
    ///   ones are written).
    /// - Throws: ``ModelError`` naming the key: `.missingTensor` for a name the set lacks (or, with
    ///   `requireAll`, a tensor not given), `.wrongShape` with the expected and actual shapes. Nothing is
    ///   written unless every check passes.
    public func assign(_ tensors: [String: Tensor], requireAll: Bool = true, source: String? = nil) throws {
        let current = entries
        let known = Dictionary(current.map { ($0.name, $0.tensor) }, uniquingKeysWith: { first, _ in first })
        if let unknown = tensors.keys.sorted().first(where: { known[$0] == nil }) {
            throw ModelError(.missingTensor, "\(source.map { "\($0): " } ?? "")tensor '\(unknown)' is not an adapter tensor of this set (it has \(current.count) tensors, e.g. '\(current.first?.name ?? "")')")
        }
        for entry in current {
            guard let given = tensors[entry.name] else {
                if requireAll { throw ModelError.missingTensor(entry.name, expected: entry.tensor.shape, file: source) }
                continue
            }
            guard given.shape == entry.tensor.shape else {
                throw ModelError.wrongShape(entry.name, expected: entry.tensor.shape, actual: given.shape, file: source)
            }
            for value in given.toArray() where !value.isFinite {
                throw ModelError(.invalidConfiguration, "\(source.map { "\($0): " } ?? "")tensor '\(entry.name)' holds \(value)")
            }
        }
        for entry in current {
            guard let given = tensors[entry.name] else { continue }
            AdapterSet.write(given, into: entry.tensor)
        }
        for entry in loraEntries where entry.layer.isMerged { try entry.layer.merge(refreshing: true) }
    }

    /// All values flattened in order (N).
    public func flattenedValues() -> Tensor {
        let out = Tensor.empty([parameterCount])
        var offset = 0
        for entry in entries {
            entry.tensor.withUnsafeBufferPointer { source in
                if let base = source.baseAddress { (out.pointer + offset).update(from: base, count: source.count) }
            }
            offset += entry.tensor.count
        }
        return out
    }

    /// All gradients flattened in order (N); zeros where a tensor has no gradient yet.
    public func flattenedGradients() -> Tensor {
        let out = Tensor.zeros([parameterCount])
        var offset = 0
        for entry in entries {
            entry.tensor.grad?.withUnsafeBufferPointer { source in
                if let base = source.baseAddress { (out.pointer + offset).update(from: base, count: source.count) }
            }
            offset += entry.tensor.count
        }
        return out
    }

    /// Overwrites every value in place from a vector in ``flattenedValues()`` order.
    /// - Throws: ``ModelError`` `.wrongShape` if `values` is not (N).
    public func assign(flattenedValues values: Tensor) throws {
        guard values.shape == [parameterCount] else {
            throw ModelError.wrongShape("flattened adapter values", expected: [parameterCount], actual: values.shape)
        }
        var offset = 0
        var tensors: [String: Tensor] = [:]
        for entry in entries {
            tensors[entry.name] = try values.sliced(axis: 0, range: offset..<(offset + entry.tensor.count)).reshaped(entry.tensor.shape)
            offset += entry.tensor.count
        }
        try assign(tensors)
    }

    /// A dense copy of `tensor`'s values with no gradient history.
    static func copy(_ tensor: Tensor) -> Tensor {
        let out = Tensor.empty(tensor.shape)
        write(tensor, into: out)
        return out
    }

    /// Copies `source`'s values into `target`'s storage (dense, same shape).
    static func write(_ source: Tensor, into target: Tensor) {
        precondition(target.isContiguous && source.shape == target.shape, "AdapterSet: cannot write \(source.shape) into \(target.shape)")
        source.withUnsafeBufferPointer { values in
            if let base = values.baseAddress { target.pointer.update(from: base, count: values.count) }
        }
    }

    // MARK: Saving and loading

    /// What the metadata of a saved adapter file records (JSON under the key `silo.adapter`).
    struct Description: Codable, Equatable {
        var modelType: String
        var lora: LoRAConfiguration?
        var prefixTuning: PrefixTuningConfiguration?

        enum CodingKeys: String, CodingKey {
            case modelType = "model_type"
            case lora
            case prefixTuning = "prefix_tuning"
        }
    }

    static let metadataKey = "silo.adapter"

    var adapterDescription: Description {
        Description(modelType: modelType, lora: loraConfiguration, prefixTuning: prefixTuning?.configuration)
    }

    /// Writes the trainable tensors (F32) and the configuration (safetensors metadata `silo.adapter`, JSON)
    /// to a safetensors file, atomically.
    /// - Throws: ``TensorError`` if the file cannot be written.
    public func save(to url: URL) throws {
        let json = try String(decoding: AdapterSet.encoder.encode(adapterDescription), as: UTF8.self)
        try SafeTensorsFile.write(parameters, metadata: ["format": "pt", AdapterSet.metadataKey: json], to: url)
    }

    /// Reads values saved by ``save(to:)`` into this set, in place.
    /// - Throws: ``ModelError`` naming the file and the key: a configuration that differs from this
    ///   set's (naming the field), a missing or unexpected tensor, a shape mismatch (expected and actual);
    ///   ``TensorError`` for an unreadable file.
    public func load(contentsOf url: URL) throws {
        let file = try SafeTensorsFile(contentsOf: url)
        if let saved = try AdapterSet.savedDescription(file) {
            try AdapterSet.checkCompatible(saved, with: adapterDescription, file: url.path)
        }
        var tensors: [String: Tensor] = [:]
        for name in file.names { tensors[name] = try file.tensor(name) }
        try assign(tensors, source: url.path)
    }

    /// Attaches the adapters described by a file written by ``save(to:)`` to `model` and loads their values.
    /// - Throws: ``ModelError`` if the file has no `silo.adapter` metadata, was saved for another model
    ///   type, or does not match the model (naming the key and shapes).
    public static func load(contentsOf url: URL, attachingTo model: any LanguageModel) throws -> AdapterSet {
        let file = try SafeTensorsFile(contentsOf: url)
        guard let saved = try savedDescription(file) else {
            throw ModelError(.invalidConfiguration, "\(url.path): no '\(metadataKey)' metadata; not an adapter file saved by Silo")
        }
        guard saved.modelType == model.modelType else {
            throw ModelError(.invalidConfiguration, "\(url.path): adapters for a '\(saved.modelType)' model cannot attach to a '\(model.modelType)' model")
        }
        let set: AdapterSet
        if let lora = saved.lora {
            set = try attachLoRA(to: model, configuration: lora, key: RandomKey(seed: 0))
        } else if let prefix = saved.prefixTuning {
            set = try attachPrefixTuning(to: model, configuration: prefix, key: RandomKey(seed: 0))
        } else {
            throw ModelError(.invalidConfiguration, "\(url.path): the '\(metadataKey)' metadata describes no adapter")
        }
        try set.load(contentsOf: url)
        return set
    }

    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }()

    static func savedDescription(_ file: SafeTensorsFile) throws -> Description? {
        guard let json = file.metadata[metadataKey] else { return nil }
        do {
            return try JSONDecoder().decode(Description.self, from: Data(json.utf8))
        } catch {
            throw ModelError(.invalidConfiguration, "\(file.url.path): metadata '\(metadataKey)' is not a valid adapter description: \(error)")
        }
    }

    static func checkCompatible(_ saved: Description, with current: Description, file: String) throws {
        func mismatch(_ field: String, _ a: Any, _ b: Any) -> ModelError {
            ModelError(.invalidConfiguration, "\(file): saved adapters have \(field) \(a), this adapter set has \(b)")
        }
        if saved.modelType != current.modelType { throw mismatch("model_type", saved.modelType, current.modelType) }
        if (saved.lora == nil) != (current.lora == nil) || (saved.prefixTuning == nil) != (current.prefixTuning == nil) {
            throw mismatch("adapter kind", saved.lora == nil ? "prefix tuning" : "LoRA", current.lora == nil ? "prefix tuning" : "LoRA")
        }
        if let a = saved.lora, let b = current.lora {
            if a.rank != b.rank { throw mismatch("r", a.rank, b.rank) }
            if a.alpha != b.alpha { throw mismatch("lora_alpha", a.alpha, b.alpha) }
            if Set(a.targetModules) != Set(b.targetModules) { throw mismatch("target_modules", a.targetModules, b.targetModules) }
        }
        if let a = saved.prefixTuning, let b = current.prefixTuning {
            if a.length != b.length { throw mismatch("num_virtual_tokens", a.length, b.length) }
            if a.projectionHiddenSize != b.projectionHiddenSize {
                throw mismatch("encoder_hidden_size", a.projectionHiddenSize.map(String.init) ?? "none", b.projectionHiddenSize.map(String.init) ?? "none")
            }
        }
    }

    // MARK: Names

    /// `base_model.model.<path>.<suffix>`: PEFT's name of an adapter tensor.
    static func peftName(path: String, suffix: String) -> String { "base_model.model.\(path).\(suffix)" }

    /// The Hugging Face module path of a projection named `name` in a model of type `modelType`:
    /// GPT-2's blocks live under `transformer.` in `GPT2LMHeadModel`; Llama-family names are already paths.
    static func huggingFacePath(of name: String, modelType: String) -> String {
        modelType == "gpt2" && !name.hasPrefix("lm_head") && !name.hasPrefix("transformer.") ? "transformer." + name : name
    }

    /// N for a name with a `layers.N.` or `h.N.` component, else nil.
    static func blockIndex(in name: String) -> Int? {
        let parts = name.split(separator: ".")
        for (previous, next) in zip(parts, parts.dropFirst()) where previous == "layers" || previous == "h" {
            if let index = Int(next) { return index }
        }
        return nil
    }
}
