import Foundation
import SiloModels
import SiloTensor

// B batch, T time, C hidden size, V vocabulary, N loss positions (labels ≠ −100), P prefix length.

/// Which adapters a party trains: LoRA, p-tuning v2 prefixes, or both. Every party attaches the same
/// specification to its own stages; LoRA matrices and prefixes are drawn from the same key by name, so a
/// split model starts exactly where the centralized model starts.
public struct AdapterSpecification: Codable, Sendable, Equatable {
    public var lora: LoRAConfiguration?
    public var prefix: PrefixTuningConfiguration?

    public init(lora: LoRAConfiguration? = LoRAConfiguration(), prefix: PrefixTuningConfiguration? = nil) {
        self.lora = lora
        self.prefix = prefix
    }
}

/// A model instance holding some stages, the adapters on them, and the one forward context every
/// party must agree on (positions P ..< P + T when prefixes are trained). Clients, the server and the
/// centralized baseline all run their stages through this type, so they compute the same thing.
public final class ModelPart {
    public let model: any LanguageModel
    /// The adapter sets attached to this part (LoRA and/or prefixes), in a fixed order.
    public let adapterSets: [AdapterSet]
    /// P: every party shifts positions by the prefix length when prefix tuning is on.
    public let positionOffset: Int

    /// Attaches `specification`'s adapters to the loaded stages of `model`.
    /// - Parameter key: the adapters' initialisation key (the same for every party of one run).
    /// - Throws: ``ModelError`` for an invalid adapter configuration (e.g. LoRA targets that match no
    ///   projection of these stages).
    public init(model: any LanguageModel, adapters specification: AdapterSpecification, key: RandomKey) throws {
        self.model = model
        var sets: [AdapterSet] = []
        if let lora = specification.lora {
            sets.append(try AdapterSet.attachLoRA(to: model, configuration: lora, key: key.split("lora")))
        }
        if var prefix = specification.prefix {
            let blocks = model.loadedStages.compactMap { stage -> Int? in
                if case .block(let index) = stage { return index } else { return nil }
            }
            let layers = (prefix.layers ?? Array(0..<model.layerCount)).filter(blocks.contains).sorted()
            if !layers.isEmpty {
                prefix.layers = layers
                sets.append(try AdapterSet.attachPrefixTuning(to: model, configuration: prefix, key: key.split("prefix")))
            } else {
                try model.freeze()
            }
        }
        if sets.isEmpty { try model.freeze() }
        adapterSets = sets
        positionOffset = specification.prefix?.length ?? 0
    }

    /// The trainable tensors, in order.
    public var trainableTensors: [Tensor] { adapterSets.flatMap(\.trainableTensors) }
    /// Their names, in order.
    public var trainableNames: [String] { adapterSets.flatMap(\.parameterNames) }
    /// The number of trainable values.
    public var trainableCount: Int { adapterSets.reduce(0) { $0 + $1.parameterCount } }

    /// All trainable values flattened in order.
    public func flattenedValues() -> Tensor {
        concatenated(adapterSets.map { $0.flattenedValues() })
    }

    /// One vector of the adapter sets' vectors, in order.
    private func concatenated(_ parts: [Tensor]) -> Tensor {
        if parts.count == 1 { return parts[0] }
        let out = Tensor.empty([trainableCount])
        var offset = 0
        for part in parts {
            (out.pointer + offset).update(from: part.pointer, count: part.count)
            offset += part.count
        }
        return out
    }

    /// All trainable gradients flattened in ``flattenedValues()`` order; zeros where none arrived.
    public func flattenedGradients() -> Tensor {
        concatenated(adapterSets.map { $0.flattenedGradients() })
    }

    /// Replaces every trainable tensor's gradient from a vector in ``flattenedValues()`` order.
    /// - Throws: ``ModelError`` if the length differs or a value is not finite.
    public func assign(flattenedGradients gradients: Tensor) throws {
        guard gradients.shape == [trainableCount] else {
            throw ModelError.wrongShape("flattened trainable gradients", expected: [trainableCount], actual: gradients.shape)
        }
        let dense = gradients.isContiguous ? gradients : gradients.contiguous()
        for index in 0..<dense.count where !dense.pointer[index].isFinite {
            throw ModelError(.invalidConfiguration, "flattened trainable gradients: value \(dense.pointer[index]) at index \(index)")
        }
        var offset = 0
        for tensor in trainableTensors {
            let piece = Tensor.empty(tensor.shape)
            piece.pointer.update(from: dense.pointer + offset, count: tensor.count)
            tensor.setGrad(piece)
            offset += tensor.count
        }
    }

    /// Overwrites every trainable value in place from a vector in ``flattenedValues()`` order.
    /// - Throws: ``ModelError`` if the length differs or a value is not finite.
    public func assign(flattenedValues values: Tensor) throws {
        guard values.shape == [trainableCount] else {
            throw ModelError.wrongShape("flattened trainable values", expected: [trainableCount], actual: values.shape)
        }
        var offset = 0
        for set in adapterSets {
            try set.assign(flattenedValues: try values.sliced(axis: 0, range: offset..<(offset + set.parameterCount)).contiguous())
            offset += set.parameterCount
        }
    }

    /// Each LoRA layer's count of dropout masks drawn (a checkpoint's dropout state: a resumed run draws
    /// the masks the uninterrupted run would have drawn).
    public var dropoutCalls: [UInt64] {
        adapterSets.flatMap { $0.loraEntries.map(\.layer.dropoutCalls) }
    }

    /// Sets the counters of ``dropoutCalls``.
    /// - Throws: ``ProtocolError`` when the count differs from the number of LoRA layers.
    public func setDropoutCalls(_ calls: [UInt64]) throws {
        let entries = adapterSets.flatMap(\.loraEntries)
        guard calls.count == entries.count else {
            throw ProtocolError("\(calls.count) LoRA dropout counters for \(entries.count) LoRA layers")
        }
        for (entry, count) in zip(entries, calls) { entry.layer.dropoutCalls = count }
    }

    /// Switches LoRA dropout on or off.
    public func setTraining(_ training: Bool) {
        for set in adapterSets { set.setTraining(training) }
    }

    /// The forward context for B rows of T tokens: positions P ..< P + T, this part's prefixes.
    public func context(batch: Int, time: Int) throws -> ForwardContext {
        var context = try model.makeContext(batch: batch, time: time, positionOffset: positionOffset,
                                            paddingMask: nil, cache: nil)
        for set in adapterSets {
            if let prefix = set.prefixTuning {
                for (layer, values) in try prefix.prefixes() { context.prefixes[layer] = values }
            }
        }
        return context
    }

    /// hidden (B, T, C) of token ids (B·T) after the embedding and blocks `blocks`.
    public func embedAndRun(ids: [Int32], batch: Int, time: Int, blocks: Range<Int>) throws -> Tensor {
        let context = try self.context(batch: batch, time: time)
        var hidden = try model.embed(ids: ids, batch: batch, time: time, positionOffset: positionOffset)
        for index in blocks { hidden = try model.block(index, hidden: hidden, context: context) }
        return hidden
    }

    /// hidden (B, T, C) after blocks `blocks`.
    public func run(_ hidden: Tensor, blocks: Range<Int>) throws -> Tensor {
        let context = try self.context(batch: hidden.shape[0], time: hidden.shape[1])
        var hidden = hidden
        for index in blocks { hidden = try model.block(index, hidden: hidden, context: context) }
        return hidden
    }

    /// Whether this part can decode with a KV cache: not with p-tuning prefixes (they are not cached).
    public var decodesWithCache: Bool {
        positionOffset == 0 && adapterSets.allSatisfy { $0.prefixTuning == nil }
    }

    /// hidden (1, T, C) of T new token ids at positions `offset ..< offset + T` (cached decoding).
    public func embed(ids: [Int32], offset: Int) throws -> Tensor {
        try model.embed(ids: ids, batch: 1, time: ids.count, positionOffset: offset)
    }

    /// hidden (1, T, C) after blocks `blocks` for T new tokens at positions `offset ..< offset + T`,
    /// each block attending to its cached keys and values and appending the new ones (inference: call
    /// without gradients).
    public func run(_ hidden: Tensor, blocks: Range<Int>, cache: KVCache, offset: Int) throws -> Tensor {
        let context = try model.makeContext(batch: 1, time: hidden.shape[1], positionOffset: offset, paddingMask: nil, cache: cache)
        var hidden = hidden
        for index in blocks { hidden = try model.block(index, hidden: hidden, context: context) }
        return hidden
    }

    /// log-softmax (V) of the token after the last position of hidden (1, T, C), through the head.
    public func nextLogProbabilities(_ hidden: Tensor) throws -> Tensor {
        let time = hidden.shape[1]
        let last = time == 1 ? hidden : try hidden.sliced(axis: 1, range: (time - 1)..<time)
        return try model.head(last).logSoftmax(axis: -1).reshaped([model.vocabularySize])
    }

    /// Mean next-token cross-entropy over the positions whose label is not −100, running blocks
    /// `blocks` and then the head on those positions only (the head is the largest matrix; positions
    /// without a label never reach it).
    /// - Parameters:
    ///   - hidden: (B, T, C).
    ///   - labels: B·T, row-major, −100 where no loss is taken.
    /// - Returns: the loss (scalar) and N, the number of positions it averages.
    /// - Throws: ``ProtocolError`` if the label count does not match or no position has a label.
    public func loss(hidden: Tensor, labels: [Int32], blocks: Range<Int>) throws -> (loss: Tensor, tokens: Int) {
        let (batch, time) = (hidden.shape[0], hidden.shape[1])
        guard labels.count == batch * time else {
            throw ProtocolError("loss: \(labels.count) labels for \(batch) × \(time) positions")
        }
        var positions: [Int32] = []
        var targets: [Int32] = []
        for (index, label) in labels.enumerated() where label != -100 {
            positions.append(Int32(index))
            targets.append(label)
        }
        guard !positions.isEmpty else { throw ProtocolError("loss: the batch has no labelled position") }
        let output = try run(hidden, blocks: blocks)
        let rows = try output.reshaped([batch * time, output.shape[2]])
        let selected = try Tensor.embedding(weight: rows, ids: positions, shape: [1, positions.count])
        let logits = try model.head(selected)
        return (try Tensor.crossEntropy(logits: logits, targets: targets), positions.count)
    }

    /// log-softmax rows (N, V) at flat positions `positions` (indices into B·T) after blocks `blocks`
    /// and the head, without gradients (evaluation).
    public func logProbabilities(hidden: Tensor, at positions: [Int32], blocks: Range<Int>) throws -> Tensor {
        try Tensor.withoutGradients {
            let output = try run(hidden, blocks: blocks)
            let rows = try output.reshaped([output.shape[0] * output.shape[1], output.shape[2]])
            let selected = try Tensor.embedding(weight: rows, ids: positions, shape: [1, positions.count])
            return try model.head(selected).logSoftmax(axis: -1).reshaped([positions.count, model.vocabularySize])
        }
    }
}
