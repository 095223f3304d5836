import SiloTensor

// B batch, S cached tokens, T new tokens, KVH key/value heads, D head dimension, N capacity (S ≤ N).

/// Keys and values of the tokens seen so far, per block, so that generation runs each new token through
/// the model once.
///
/// Each block's keys and values live in one preallocated (B, N, KVH, D) buffer; a forward call writes
/// its T new rows in place after the S cached ones and attends over the (B, S + T, KVH, D) view of the
/// buffer — no per-token allocation or copy of the past. When a call would overflow the capacity N,
/// the buffers grow to twice the needed size (one copy). Buffers are allocated on a block's first
/// append, so a party that runs only some blocks (split learning) holds only theirs.
///
/// Each block keeps its own length; ``length`` is the number of tokens every block has seen. The cache
/// is for inference (`Tensor.withoutGradients`): what it stores carries no gradient.
public final class KVCache {
    /// L.
    public let layerCount: Int
    /// B.
    public let batch: Int
    /// KVH.
    public let keyValueHeads: Int
    /// D.
    public let headSize: Int
    /// N: tokens each buffer holds before it grows.
    public private(set) var capacity: Int

    private var keys: [Tensor?]
    private var values: [Tensor?]
    private var lengths: [Int]

    /// An empty cache.
    /// - Precondition: every size is positive (a model's geometry).
    public init(layerCount: Int, batch: Int, keyValueHeads: Int, headSize: Int, capacity: Int) {
        precondition(layerCount > 0 && batch > 0 && keyValueHeads > 0 && headSize > 0,
                     "KVCache: sizes must be positive (layers \(layerCount), batch \(batch), kv heads \(keyValueHeads), head size \(headSize))")
        self.layerCount = layerCount
        self.batch = batch
        self.keyValueHeads = keyValueHeads
        self.headSize = headSize
        self.capacity = max(capacity, 1)
        self.keys = Array(repeating: nil, count: layerCount)
        self.values = Array(repeating: nil, count: layerCount)
        self.lengths = Array(repeating: 0, count: layerCount)
    }

    /// S: tokens cached by the blocks that hold the most (all blocks agree after a full forward call).
    public var length: Int { lengths.max() ?? 0 }

    /// Tokens cached by block `layer`.
    public func length(ofLayer layer: Int) -> Int { lengths[layer] }

    /// Forgets every token (keeps the buffers for reuse).
    public func reset() {
        for index in lengths.indices { lengths[index] = 0 }
    }

    /// Keeps only the first `length` tokens of every block (e.g. to drop a rejected continuation).
    public func truncate(to length: Int) {
        precondition(length >= 0, "KVCache.truncate: negative length \(length)")
        for index in lengths.indices { lengths[index] = min(lengths[index], length) }
    }

    /// Appends the T new keys and values (B, T, KVH, D) of block `layer` and returns the keys and values of
    /// the whole sequence, (B, S + T, KVH, D) views of the cache buffers (valid until the next append).
    /// - Throws: ``TensorError`` naming the shapes if `key` or `value` is not (B, T, KVH, D) for this cache.
    public func append(layer: Int, key: Tensor, value: Tensor) throws -> (key: Tensor, value: Tensor) {
        precondition(layer >= 0 && layer < layerCount, "KVCache: block \(layer) out of 0..<\(layerCount)")
        let expected = [batch, key.rank == 4 ? key.shape[1] : -1, keyValueHeads, headSize]
        guard key.shape == expected, value.shape == key.shape else {
            throw TensorError.shapeMismatch("KVCache.append", key.shape, value.shape,
                                            detail: "keys and values must both be (B, T, KVH, D) = (\(batch), T, \(keyValueHeads), \(headSize))")
        }
        let time = key.shape[1]
        let start = lengths[layer]
        let total = start + time
        try reserve(layer: layer, tokens: total)
        guard let keyBuffer = keys[layer], let valueBuffer = values[layer] else {
            preconditionFailure("KVCache: buffers of block \(layer) missing after reserve")
        }
        KVCache.write(key, into: keyBuffer, at: start, capacity: capacity)
        KVCache.write(value, into: valueBuffer, at: start, capacity: capacity)
        lengths[layer] = total
        return (try keyBuffer.sliced(axis: 1, range: 0..<total), try valueBuffer.sliced(axis: 1, range: 0..<total))
    }

    /// Makes sure block `layer` has room for `tokens` tokens, growing every allocated buffer if needed.
    private func reserve(layer: Int, tokens: Int) throws {
        if tokens > capacity {
            let grown = max(tokens, 2 * capacity)
            for index in 0..<layerCount {
                keys[index] = keys[index].map { KVCache.resized($0, to: grown, keeping: lengths[index], from: capacity) }
                values[index] = values[index].map { KVCache.resized($0, to: grown, keeping: lengths[index], from: capacity) }
            }
            capacity = grown
        }
        if keys[layer] == nil {
            keys[layer] = Tensor.empty([batch, capacity, keyValueHeads, headSize])
            values[layer] = Tensor.empty([batch, capacity, keyValueHeads, headSize])
        }
    }

    /// A (B, newCapacity, KVH, D) buffer holding the first `kept` rows of `buffer` (B, oldCapacity, KVH, D).
    private static func resized(_ buffer: Tensor, to newCapacity: Int, keeping kept: Int, from oldCapacity: Int) -> Tensor {
        let batch = buffer.shape[0], row = buffer.shape[2] * buffer.shape[3]
        let grown = Tensor.empty([batch, newCapacity, buffer.shape[2], buffer.shape[3]])
        for b in 0..<batch {
            (grown.pointer + b * newCapacity * row).update(from: buffer.pointer + b * oldCapacity * row, count: kept * row)
        }
        return grown
    }

    /// Copies rows (B, T, KVH, D) into `buffer` (B, N, KVH, D) at row `start` of every batch item.
    private static func write(_ rows: Tensor, into buffer: Tensor, at start: Int, capacity: Int) {
        let batch = rows.shape[0], time = rows.shape[1], row = rows.shape[2] * rows.shape[3]
        let destination = buffer.pointer
        rows.withUnsafeBufferPointer { source in
            guard let base = source.baseAddress else { return }
            for b in 0..<batch {
                (destination + (b * capacity + start) * row).update(from: base + b * time * row, count: time * row)
            }
        }
    }
}
