import SiloTensor

// B batch, T time (new tokens of this call), S keys (cached + new), P prefix keys, C hidden size,
// V vocabulary, L layers (blocks).

/// One stage of a decoder-only transformer: the token embedding, one block, or the head (final norm +
/// LM head). A split plan assigns stages to parties; each party loads and trains only its stages.
///
/// Written as `embedding`, `block.3`, `head` (``description``, ``init(_:)``, `Codable`).
public enum ModelStage: Hashable, Sendable, Comparable, CustomStringConvertible, Codable {
    case embedding
    case block(Int)
    case head

    public var description: String {
        switch self {
        case .embedding: return "embedding"
        case .block(let index): return "block.\(index)"
        case .head: return "head"
        }
    }

    /// Parses `embedding`, `block.N` or `head`.
    /// - Throws: ``ModelError`` `.invalidConfiguration` for anything else.
    public init(_ name: String) throws {
        switch name {
        case "embedding": self = .embedding
        case "head": self = .head
        default:
            guard name.hasPrefix("block."), let index = Int(name.dropFirst("block.".count)), index >= 0 else {
                throw ModelError(.invalidConfiguration, "unknown model stage '\(name)' (expected 'embedding', 'block.N' or 'head')")
            }
            self = .block(index)
        }
    }

    public init(from decoder: any Decoder) throws {
        try self.init(try decoder.singleValueContainer().decode(String.self))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }

    private var order: Int {
        switch self {
        case .embedding: return -1
        case .block(let index): return index
        case .head: return Int.max
        }
    }

    public static func < (lhs: ModelStage, rhs: ModelStage) -> Bool { lhs.order < rhs.order }
}

/// The (T, D/2) cosine and sine tables of rotary position embedding for one forward call.
public struct RotaryTables {
    public var cos: Tensor
    public var sin: Tensor

    public init(cos: Tensor, sin: Tensor) {
        self.cos = cos
        self.sin = sin
    }
}

/// Prefix keys and values of one block (p-tuning v2): (P, KVH, D) shared by the batch, or (B, P, KVH, D).
/// Always visible to every query, placed before the sequence's keys.
public struct PrefixKeyValues {
    public var key: Tensor
    public var value: Tensor

    public init(key: Tensor, value: Tensor) {
        self.key = key
        self.value = value
    }

    /// P.
    public var length: Int { key.rank == 4 ? key.shape[1] : key.shape[0] }
}

/// What a block needs besides its input: the positions of the T tokens (and their RoPE tables), the
/// padding mask, the KV cache, and per-block prefix keys/values.
///
/// Built once per forward call by ``LanguageModel/makeContext(batch:time:positionOffset:paddingMask:cache:)``
/// and shared by every block, so RoPE tables and masks are computed once. A party that runs only some
/// blocks (split learning) builds its own context from the same sizes.
public struct ForwardContext {
    /// B.
    public let batch: Int
    /// T: the tokens of this call.
    public let time: Int
    /// Position of the first of the T tokens (the number of cached tokens before them).
    public let positionOffset: Int
    /// Rotary tables for positions `positionOffset ..< positionOffset + T`; nil for models without RoPE.
    public var rotary: RotaryTables?
    /// Additive mask over the sequence's S keys (cached + new), (B, S) or (B, T, S): 0 to attend, −∞
    /// (or a large negative number) to hide a padding position. Nil: every key is visible (causally).
    public var paddingMask: Tensor?
    /// The KV cache blocks append their keys and values to; nil for a plain (training) forward.
    public var cache: KVCache?
    /// Prefix keys/values by block index (p-tuning v2).
    public var prefixes: [Int: PrefixKeyValues]

    public init(batch: Int, time: Int, positionOffset: Int = 0, rotary: RotaryTables? = nil,
                paddingMask: Tensor? = nil, cache: KVCache? = nil, prefixes: [Int: PrefixKeyValues] = [:]) {
        self.batch = batch
        self.time = time
        self.positionOffset = positionOffset
        self.rotary = rotary
        self.paddingMask = paddingMask
        self.cache = cache
        self.prefixes = prefixes
    }

    /// The absolute positions of the T tokens.
    public var positions: [Int] { Array(positionOffset..<(positionOffset + time)) }

    /// An additive (B, S) padding mask from Hugging Face's `attention_mask` (1 = token, 0 = padding),
    /// given row-major for B rows of S keys: 0 where kept, −∞ where padded.
    /// - Throws: ``ModelError`` `.invalidConfiguration` if the count is not B·S or a value is not 0 or 1.
    public static func paddingMask(attentionMask: [Int32], batch: Int) throws -> Tensor {
        guard batch > 0, attentionMask.count % batch == 0 else {
            throw ModelError(.invalidConfiguration, "paddingMask: \(attentionMask.count) mask values do not split into \(batch) rows")
        }
        var values = [Float](repeating: 0, count: attentionMask.count)
        for (index, keep) in attentionMask.enumerated() {
            switch keep {
            case 1: values[index] = 0
            case 0: values[index] = -Float.infinity
            default:
                throw ModelError(.invalidConfiguration, "paddingMask: attention mask value \(keep) at index \(index) is neither 0 nor 1")
            }
        }
        return try Tensor(shape: [batch, attentionMask.count / batch], values: values)
    }

    /// The additive mask over P + S key positions for a block with `prefixLength` prefix keys: the
    /// padding mask with zeros (always visible) prepended for the prefix.
    func attentionMask(prefixLength: Int) throws -> Tensor? {
        guard let paddingMask else { return nil }
        guard prefixLength > 0 else { return paddingMask }
        var shape = paddingMask.shape
        shape[shape.count - 1] = prefixLength
        return try Tensor.concatenate([Tensor.zeros(shape), paddingMask], axis: -1)
    }
}

/// A decoder-only transformer language model cut into stages: `embed` → `block` × L → `head`.
///
/// A protocol rather than one class with an architecture switch: each family (``LlamaModel`` for
/// Llama/SmolLM/Qwen2, ``GPT2Model``) lives in its own file with its own `Codable` configuration, and code
/// that splits a model between parties, attaches adapters or generates text is written once against
/// the three stages. The stages are the seams of split learning: a client runs ``embed(ids:batch:time:positionOffset:)``
/// and its first blocks, a server the middle blocks, the client the last blocks and ``head(_:)``;
/// activations (B, T, C) cross between them.
///
/// Every parameter has its Hugging Face name (`model.layers.3.self_attn.q_proj.weight`,
/// `h.0.attn.c_attn.weight`); ``parameterShapes(of:)`` lists the tensors a stage reads, so a party can
/// load and own only its stages (``Checkpoint/load(_:stages:)``). Projections are ``LinearLayer``s that
/// adapters may replace (``replaceLinearLayer(named:with:)``).
public protocol LanguageModel: AnyObject {
    /// Hugging Face `model_type` (`llama`, `qwen2`, `gpt2`).
    var modelType: String { get }
    /// V.
    var vocabularySize: Int { get }
    /// C.
    var hiddenSize: Int { get }
    /// L.
    var layerCount: Int { get }
    /// KVH: key/value heads per block (the KV cache's geometry).
    var keyValueHeads: Int { get }
    /// D: the head dimension.
    var headSize: Int { get }
    /// The longest sequence the model can take (GPT-2's learned positions), or nil if positions are
    /// not bounded by the weights (RoPE).
    var maximumPositions: Int? { get }
    /// End-of-sequence token ids from the configuration (generation stops on them by default).
    var endOfSequenceTokenIds: [Int32] { get }
    /// The stages whose weights this instance holds.
    var loadedStages: Set<ModelStage> { get }

    /// The tensors stage `stage` reads, with Hugging Face names and shapes, in a fixed order. A tied LM
    /// head lists the embedding table it reads.
    func parameterShapes(of stage: ModelStage) -> [(name: String, shape: [Int])]
    /// The tensors of a loaded stage, in ``parameterShapes(of:)`` order (adapters included, under
    /// their own names).
    /// - Throws: ``ModelError`` if the stage is not loaded.
    func parameters(of stage: ModelStage) throws -> [(name: String, tensor: Tensor)]
    /// Replaces the tensor called `name` (a Hugging Face name) by `tensor` of the same shape, e.g. to
    /// make it a trainable leaf or to load averaged weights.
    /// - Throws: ``ModelError`` naming the key (and both shapes) if no loaded stage has it or the shape differs.
    func setParameter(_ name: String, to tensor: Tensor) throws

    /// Names of the projections an adapter may wrap (`model.layers.0.self_attn.q_proj`, ...), in order.
    var linearLayerNames: [String] { get }
    /// The projection called `name`, or nil.
    func linearLayer(named name: String) -> (any LinearLayer)?
    /// Puts `layer` in place of the projection called `name` (same input and output sizes).
    /// - Throws: ``ModelError`` if there is no such projection or the sizes differ.
    func replaceLinearLayer(named name: String, with layer: any LinearLayer) throws

    /// The context of a forward call over T tokens at positions `positionOffset ..< positionOffset + T`.
    /// - Throws: ``ModelError`` if the positions exceed ``maximumPositions``.
    func makeContext(batch: Int, time: Int, positionOffset: Int, paddingMask: Tensor?, cache: KVCache?) throws -> ForwardContext
    /// Stage "embedding": hidden (B, T, C) for token ids (B·T, row-major) at positions
    /// `positionOffset ..< positionOffset + T`.
    func embed(ids: [Int32], batch: Int, time: Int, positionOffset: Int) throws -> Tensor
    /// Stage "block.`index`": hidden (B, T, C) → hidden (B, T, C). Appends this block's keys and values
    /// to `context.cache` when there is one.
    func block(_ index: Int, hidden: Tensor, context: ForwardContext) throws -> Tensor
    /// Stage "head": logits (B, T, V) for hidden (B, T, C): final norm, then the LM head.
    func head(_ hidden: Tensor) throws -> Tensor
}

extension LanguageModel {
    /// Every stage in order: embedding, blocks 0..<L, head.
    public var stages: [ModelStage] { [.embedding] + (0..<layerCount).map { .block($0) } + [.head] }

    /// The Hugging Face names of the tensors stage `stage` reads.
    public func parameterNames(of stage: ModelStage) -> [String] { parameterShapes(of: stage).map(\.name) }

    /// Every tensor of the loaded stages, each name once (a tied table appears under the embedding), in
    /// stage order.
    public func namedParameters() -> [(name: String, tensor: Tensor)] {
        var seen = Set<String>()
        var result: [(name: String, tensor: Tensor)] = []
        for stage in stages where loadedStages.contains(stage) {
            for entry in (try? parameters(of: stage)) ?? [] where seen.insert(entry.name).inserted {
                result.append(entry)
            }
        }
        return result
    }

    /// Makes the tensors of `stages` (default: every loaded stage) trainable gradient leaves, so
    /// `backward()` fills their `grad`. Returns them for an optimizer, in stage order.
    @discardableResult
    public func makeTrainable(stages selected: Set<ModelStage>? = nil) throws -> [(name: String, tensor: Tensor)] {
        var seen = Set<String>()
        var result: [(name: String, tensor: Tensor)] = []
        for stage in stages where loadedStages.contains(stage) && (selected?.contains(stage) ?? true) {
            for (name, tensor) in try parameters(of: stage) where seen.insert(name).inserted {
                let leaf = tensor.requiresGrad ? tensor : tensor.detached().requiringGrad()
                try setParameter(name, to: leaf)
                result.append((name, leaf))
            }
        }
        return result
    }

    /// Drops gradient tracking from every tensor (inference, or adapters-only training).
    public func freeze() throws {
        for (name, tensor) in namedParameters() where tensor.requiresGrad {
            try setParameter(name, to: tensor.detached())
        }
    }

    /// A KV cache sized for this model (every block), with room for `capacity` tokens before it grows.
    public func makeCache(batch: Int = 1, capacity: Int) -> KVCache {
        KVCache(layerCount: layerCount, batch: batch, keyValueHeads: keyValueHeads, headSize: headSize,
                capacity: capacity)
    }

    /// Final hidden states (B, T, C) before the head: embed, then every block.
    ///
    /// With a `cache`, the T tokens continue the cached sequence: positions start at `cache.length`,
    /// keys and values are appended, and `paddingMask` (if any) covers cached + new keys.
    public func hiddenStates(ids: [Int32], batch: Int, time: Int, paddingMask: Tensor? = nil,
                             cache: KVCache? = nil) throws -> Tensor {
        let offset = cache?.length ?? 0
        let context = try makeContext(batch: batch, time: time, positionOffset: offset,
                                      paddingMask: paddingMask, cache: cache)
        var hidden = try embed(ids: ids, batch: batch, time: time, positionOffset: offset)
        for index in 0..<layerCount {
            hidden = try block(index, hidden: hidden, context: context)
        }
        return hidden
    }

    /// logits (B, T, V) for token ids (B·T, row-major): the three stages composed.
    /// - Parameters:
    ///   - paddingMask: additive (B, S) over cached + new keys (see ``ForwardContext/paddingMask(attentionMask:batch:)``).
    ///   - cache: continue a cached sequence (inference only: call under `Tensor.withoutGradients`).
    public func logits(ids: [Int32], batch: Int, time: Int, paddingMask: Tensor? = nil,
                       cache: KVCache? = nil) throws -> Tensor {
        try head(hiddenStates(ids: ids, batch: batch, time: time, paddingMask: paddingMask, cache: cache))
    }

    /// Mean next-token cross-entropy; `targets` (B·T) uses −100 for positions to ignore.
    public func loss(ids: [Int32], targets: [Int32], batch: Int, time: Int, paddingMask: Tensor? = nil) throws -> Tensor {
        let logits = try logits(ids: ids, batch: batch, time: time, paddingMask: paddingMask)
        return try Tensor.crossEntropy(logits: logits, targets: targets)
    }
}

extension ModelError.Code {
    /// A stage was called on a model instance that did not load it (split plans).
    public static let stageNotLoaded = ModelError.Code(name: "stage not loaded")
}

extension ModelError {
    static func stageNotLoaded(_ stage: ModelStage, loaded: Set<ModelStage>) -> ModelError {
        let names = loaded.sorted().map(\.description)
        let shown = names.count > 6 ? names.prefix(6).joined(separator: ", ") + ", …" : names.joined(separator: ", ")
        return ModelError(.stageNotLoaded, "stage '\(stage)' is not loaded in this model instance (loaded: \(shown.isEmpty ? "none" : shown)); load it with Checkpoint.load(_:stages:)")
    }
}
