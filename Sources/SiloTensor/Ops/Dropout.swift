// Legend: N elements; p the drop probability; element i is dropped when key.uniform(i) < p.

/// Inverted dropout. The mask is never stored: element i's fate depends only on the key and i, so the
/// backward regenerates it (and any split of the work gives the same mask).
public enum DropoutKernel {
    /// out (N) = inp (N) / (1 − p) where key.uniform(i) ≥ p, else 0.
    ///
    /// The test runs on the integer bits, with no float conversion: uniform(i) = (bits(i) >> 40) · 2⁻²⁴,
    /// so uniform(i) < p ⇔ bits(i) >> 40 < ⌈p · 2²⁴⌉ ⇔ bits(i) < ⌈p · 2²⁴⌉ << 40.
    public static func forward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, count: Int,
                               probability p: Float, key: RandomKey) {
        precondition(p >= 0 && p <= 1, "DropoutKernel: probability \(p) outside [0, 1]")
        if p == 1 {
            Parallel.forEachChunk(count) { range in (out + range.lowerBound).update(repeating: 0, count: range.count) }
            return
        }
        let scale = 1 / (1 - p)
        let threshold = UInt64((p * 0x1p24).rounded(.up)) << 40
        Parallel.forEachChunk(count, costPerItem: 8) { range in
            for i in range {
                out[i] = key.bits(UInt64(i)) < threshold ? 0 : inp[i] * scale
            }
        }
    }

    /// dinp (N) = dout (N) / (1 − p) where key.uniform(i) ≥ p, else 0 — the forward's mask, regenerated.
    public static func backward(dinp: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>, count: Int,
                                probability p: Float, key: RandomKey) {
        forward(out: dinp, inp: dout, count: count, probability: p, key: key)
    }
}

extension Tensor {
    /// Inverted dropout: each element is zeroed with probability `probability` and the kept ones are
    /// scaled by 1 / (1 − probability), so the expected value is unchanged. Element i (row-major) is
    /// dropped when `key.uniform(i) < probability`. A probability of 0 returns `self`; 1 gives zeros.
    /// - Throws: ``TensorError`` if `probability` is not in [0, 1].
    public func dropout(probability: Float, key: RandomKey) throws -> Tensor {
        guard probability >= 0 && probability <= 1 else {
            throw TensorError(.invalidArgument, "dropout: probability \(probability) is not in [0, 1] (shape \(shape))")
        }
        if probability == 0 { return self }
        let input = densified()
        let out = Tensor.empty(shape)
        DropoutKernel.forward(out: out.pointer, inp: input.pointer, count: count, probability: probability, key: key)
        return out.recorded("dropout", inputs: [self]) { gradOut, _ in
            let dinp = Tensor.empty(gradOut.shape)
            DropoutKernel.backward(dinp: dinp.pointer, dout: gradOut.pointer, count: gradOut.count,
                                   probability: probability, key: key)
            return [dinp]
        }
    }
}
