import SiloTensor

// H heads, D head dimension (rows per head), R = D/2, I input features (columns).

extension GGUFFile {
    /// Undoes the row permutation llama.cpp's converter applies to Llama `attn_q` / `attn_k` weights,
    /// giving back the Hugging Face layout (rotate-half RoPE).
    ///
    /// convert_hf_to_gguf.py stores `permute(w, n_head)`:
    /// `w.reshape(H, 2, R, I).swapaxes(1, 2).reshape(H·D, I)`, so that interleaved RoPE (pairs of
    /// adjacent rows) rotates the same pairs as Hugging Face's rotate-half (row r with row r + R of
    /// each head). This is the inverse, `reshape(H, R, 2, I).swapaxes(1, 2)`:
    /// `out[h·D + j·R + i] = w[h·D + 2i + j]` for j in {0, 1}, i in 0..<R.
    ///
    /// - Parameters:
    ///   - w: the stored weight, (H·D, I) row-major as ``tensor(_:)`` returns it, or a (H·D) bias.
    ///   - heads: H: `llama.attention.head_count` for `attn_q`, `llama.attention.head_count_kv` for
    ///     `attn_k` (the converter permutes K with the KV head count).
    /// - Returns: a dense (H·D, I) (or (H·D)) tensor without a gradient node.
    /// - Precondition: `heads > 0` and the row count is a multiple of `2 · heads` (callers validate the
    ///   shape against the model configuration first).
    public static func unpermuteLlamaQK(_ w: Tensor, heads: Int) -> Tensor {
        precondition(w.rank == 1 || w.rank == 2, "unpermuteLlamaQK: expected a (rows, in) weight or a (rows) bias, got shape \(w.shape)")
        let rows = w.shape[0]
        precondition(heads > 0 && rows % (2 * heads) == 0,
                     "unpermuteLlamaQK: \(rows) rows are not \(heads) heads of an even head dimension (shape \(w.shape))")
        let columns = w.rank == 2 ? w.shape[1] : 1
        let headDimension = rows / heads
        let half = headDimension / 2
        let result = Tensor.empty(w.shape)
        let out = result.pointer
        w.withUnsafeBufferPointer { input in
            guard let source = input.baseAddress else { return }
            Parallel.forEachChunk(rows, costPerItem: columns) { range in
                for row in range {
                    // row = h·D + j·R + i  <-  stored row h·D + 2i + j
                    let head = row / headDimension
                    let within = row % headDimension
                    let j = within / half
                    let i = within % half
                    let storedRow = head * headDimension + 2 * i + j
                    (out + row * columns).update(from: source + storedRow * columns, count: columns)
                }
            }
        }
        return result
    }
}
