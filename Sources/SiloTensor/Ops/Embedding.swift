// Legend: N positions (the product of the ids' shape, e.g. B·T), V vocabulary rows, C channels.

/// Embedding lookup: a gather of rows forward, a scatter-add of rows backward.
public enum EmbeddingKernel {
    /// out (N,C) = weight (V,C)[ids (N)]. Every id must be in 0..<V (checked by the caller).
    public static func forward(out: UnsafeMutablePointer<Float>, weight: UnsafePointer<Float>,
                               ids: UnsafePointer<Int32>, positions n: Int, channels c: Int) {
        Parallel.forEachChunk(n, costPerItem: c) { range in
            for position in range {
                (out + position * c).update(from: weight + Int(ids[position]) * c, count: c)
            }
        }
    }

    /// dweight (V,C) += dout (N,C) scattered by ids (N): dweight[ids[n]] += dout[n].
    ///
    /// Workers split the C columns, and each walks every position in order, so repeated ids
    /// accumulate in the same order whatever the thread count: deterministic and race-free.
    public static func backward(dweight: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>,
                                ids: UnsafePointer<Int32>, positions n: Int, channels c: Int) {
        Parallel.forEachChunk(c, costPerItem: n) { columns in
            let start = columns.lowerBound, width = columns.count
            for position in 0..<n {
                let target = dweight + Int(ids[position]) * c + start
                let source = dout + position * c + start
                for j in 0..<width { target[j] += source[j] }
            }
        }
    }

    /// out (N) = 0, filled in parallel (the (V,C) gradient of a large vocabulary is hundreds of MB).
    static func zero(_ out: UnsafeMutablePointer<Float>, count: Int) {
        Parallel.forEachChunk(count) { range in
            (out + range.lowerBound).update(repeating: 0, count: range.count)
        }
    }
}

extension Tensor {
    /// Rows of `weight` (V, C) picked by `ids`, laid out row-major with `shape` (e.g. [B, T]); the result
    /// has shape `shape + [C]`. The gradient of `weight` adds each position's gradient into its id's row.
    /// - Throws: ``TensorError`` if `weight` is not 2-D, `ids.count` is not the product of `shape`, or an
    ///   id lies outside 0..<V (naming its position and V).
    public static func embedding(weight: Tensor, ids: [Int32], shape: [Int]) throws -> Tensor {
        guard weight.rank == 2 else {
            throw TensorError.shapeMismatch("embedding", weight.shape, detail: "the weight must be (vocabulary, channels)")
        }
        guard shape.allSatisfy({ $0 >= 0 }), shape.reduce(1, *) == ids.count else {
            throw TensorError(.shapeMismatch,
                              "embedding: \(ids.count) ids do not fill the shape \(shape) (\(shape.reduce(1, *)) positions)")
        }
        let vocabulary = weight.shape[0], channels = weight.shape[1]
        for (position, id) in ids.enumerated() where id < 0 || Int(id) >= vocabulary {
            var index = [Int](repeating: 0, count: shape.count)
            var remaining = position
            for axis in stride(from: shape.count - 1, through: 0, by: -1) {
                index[axis] = remaining % shape[axis]
                remaining /= shape[axis]
            }
            throw TensorError(.invalidArgument,
                              "embedding: id \(id) at position \(index) (flat index \(position)) is outside the vocabulary 0..<\(vocabulary)")
        }
        let table = weight.densified()
        let out = Tensor.empty(shape + [channels])
        ids.withUnsafeBufferPointer { buffer in
            guard let base = buffer.baseAddress else { return }
            EmbeddingKernel.forward(out: out.pointer, weight: table.pointer, ids: base, positions: ids.count,
                                    channels: channels)
        }
        return out.recorded("embedding", inputs: [weight]) { gradOut, _ in
            let dweight = Tensor.empty([vocabulary, channels])
            EmbeddingKernel.zero(dweight.pointer, count: dweight.count)
            ids.withUnsafeBufferPointer { buffer in
                guard let base = buffer.baseAddress else { return }
                EmbeddingKernel.backward(dweight: dweight.pointer, dout: gradOut.pointer, ids: base,
                                         positions: ids.count, channels: channels)
            }
            return [dweight]
        }
    }
}
