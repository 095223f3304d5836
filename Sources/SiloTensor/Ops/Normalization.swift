#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// Legend: N rows (B·T positions), C channels (the normalised last axis). inp/out/dinp/dout are dense
// (N, C); weight, bias and their gradients (C); mean and rstd (N) are saved by the forward.

/// LayerNorm over the last axis with PyTorch semantics (biased variance), row-parallel.
///
/// Weight and bias gradients are sums over rows. To make them independent of the thread count the
/// rows go in fixed blocks of ``rowsPerBlock``; each block sums into its own scratch row and the
/// blocks are then added in block order.
public enum LayerNormKernel {
    /// Rows summed together before block partial sums are combined (fixes the summation order).
    public static let rowsPerBlock = 32

    /// out (N,C) = (inp − mean) · rstd · weight + bias, with mean (N) and rstd (N) = 1/√(var + ε)
    /// written for the backward. `weight`/`bias` (C) may be nil (1 and 0).
    public static func forward(out: UnsafeMutablePointer<Float>, mean: UnsafeMutablePointer<Float>,
                               rstd: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>,
                               weight: UnsafePointer<Float>?, bias: UnsafePointer<Float>?,
                               rows: Int, channels: Int, epsilon: Float) {
        Parallel.forEachChunk(rows, costPerItem: channels * 4) { range in
            for row in range {
                let x = inp + row * channels
                let m = SoftmaxKernel.rowSum(x, count: channels) / Float(channels)
                // Two-pass variance: Σ (x − m)², the padded tail lanes hold m and add 0.
                var squares = FastMath.Vector(repeating: 0)
                var i = 0
                while i + 16 <= channels {
                    let d = FastMath.load(x + i) - m
                    squares += d * d
                    i += 16
                }
                if i < channels {
                    let d = FastMath.loadPartial(x + i, count: channels - i, padding: m) - m
                    squares += d * d
                }
                let s = 1 / sqrtf(squares.sum() / Float(channels) + epsilon)
                mean[row] = m
                rstd[row] = s
                affineRow(out + row * channels, x, mean: m, rstd: s, weight: weight, bias: bias, count: channels)
            }
        }
    }

    /// dinp (N,C) = rstd · (g − mean_C(g) − x̂ · mean_C(g ⊙ x̂)) with g = dout ⊙ weight and
    /// x̂ = (inp − mean) · rstd; dweight (C) = Σ_N dout ⊙ x̂; dbias (C) = Σ_N dout.
    ///
    /// Each output is written (not accumulated) and computed only when its pointer is non-nil.
    public static func backward(dinp: UnsafeMutablePointer<Float>?, dweight: UnsafeMutablePointer<Float>?,
                                dbias: UnsafeMutablePointer<Float>?, dout: UnsafePointer<Float>,
                                inp: UnsafePointer<Float>, weight: UnsafePointer<Float>?,
                                mean: UnsafePointer<Float>, rstd: UnsafePointer<Float>,
                                rows: Int, channels: Int) {
        let c = channels
        let inverseC = 1 / Float(c)
        blockedColumnSums(rows: rows, channels: c, first: dweight, second: dbias) { row, partialWeight, partialBias in
            let g = dout + row * c
            let x = inp + row * c
            let m = mean[row], s = rstd[row]
            if let dinp {
                // Pass 1: the two row means of the gradient.
                var sumG = FastMath.Vector(repeating: 0)
                var sumGX = FastMath.Vector(repeating: 0)
                var i = 0
                while i + 16 <= c {
                    var gw = FastMath.load(g + i)
                    if let weight { gw *= FastMath.load(weight + i) }
                    sumG += gw
                    sumGX += gw * ((FastMath.load(x + i) - m) * s)
                    i += 16
                }
                if i < c {
                    let rest = c - i
                    var gw = FastMath.loadPartial(g + i, count: rest)
                    if let weight { gw *= FastMath.loadPartial(weight + i, count: rest) }
                    sumG += gw
                    sumGX += gw * ((FastMath.loadPartial(x + i, count: rest, padding: m) - m) * s)
                }
                let meanG = sumG.sum() * inverseC
                let meanGX = sumGX.sum() * inverseC
                // Pass 2: dinp.
                let dx = dinp + row * c
                i = 0
                while i + 16 <= c {
                    var gw = FastMath.load(g + i)
                    if let weight { gw *= FastMath.load(weight + i) }
                    let normalised = (FastMath.load(x + i) - m) * s
                    FastMath.store((gw - meanG - normalised * meanGX) * s, dx + i)
                    i += 16
                }
                if i < c {
                    let rest = c - i
                    var gw = FastMath.loadPartial(g + i, count: rest)
                    if let weight { gw *= FastMath.loadPartial(weight + i, count: rest) }
                    let normalised = (FastMath.loadPartial(x + i, count: rest, padding: m) - m) * s
                    FastMath.storePartial((gw - meanG - normalised * meanGX) * s, dx + i, count: rest)
                }
            }
            if let partialWeight { accumulateNormalised(partialWeight, dout: g, inp: x, mean: m, rstd: s, count: c) }
            if let partialBias { accumulateNormalised(partialBias, dout: g, inp: nil, mean: 0, rstd: 1, count: c) }
        }
    }

    /// y (C) = (x − mean) · rstd · weight + bias, with nil weight/bias meaning 1/0.
    @inline(__always)
    static func affineRow(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, mean m: Float, rstd s: Float,
                          weight: UnsafePointer<Float>?, bias: UnsafePointer<Float>?, count: Int) {
        var i = 0
        while i + 16 <= count {
            var v = (FastMath.load(x + i) - m) * s
            if let weight { v *= FastMath.load(weight + i) }
            if let bias { v += FastMath.load(bias + i) }
            FastMath.store(v, y + i)
            i += 16
        }
        if i < count {
            let rest = count - i
            var v = (FastMath.loadPartial(x + i, count: rest) - m) * s
            if let weight { v *= FastMath.loadPartial(weight + i, count: rest) }
            if let bias { v += FastMath.loadPartial(bias + i, count: rest) }
            FastMath.storePartial(v, y + i, count: rest)
        }
    }

    /// partial (C) += dout ⊙ (inp − mean) · rstd, or += dout when `inp` is nil.
    @inline(__always)
    static func accumulateNormalised(_ partial: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>,
                                     inp: UnsafePointer<Float>?, mean m: Float, rstd s: Float, count: Int) {
        var i = 0
        while i + 16 <= count {
            var term = FastMath.load(dout + i)
            if let inp { term *= (FastMath.load(inp + i) - m) * s }
            FastMath.store(FastMath.load(partial + i) + term, partial + i)
            i += 16
        }
        if i < count {
            let rest = count - i
            var term = FastMath.loadPartial(dout + i, count: rest)
            if let inp { term *= (FastMath.loadPartial(inp + i, count: rest) - m) * s }
            FastMath.storePartial(FastMath.loadPartial(partial + i, count: rest) + term, partial + i, count: rest)
        }
    }

    /// Runs `body(row, partialFirst, partialSecond)` for every row, in parallel over fixed blocks of
    /// ``rowsPerBlock`` rows, where the partial pointers are the (C) scratch rows of the row's block
    /// (nil when the matching output is nil); then writes first/second (C) = Σ over blocks in order.
    static func blockedColumnSums(
        rows: Int, channels: Int, first: UnsafeMutablePointer<Float>?, second: UnsafeMutablePointer<Float>?,
        _ body: (Int, UnsafeMutablePointer<Float>?, UnsafeMutablePointer<Float>?) -> Void
    ) {
        let blocks = (rows + rowsPerBlock - 1) / rowsPerBlock
        let outputs = [first, second]
        let sums = outputs.compactMap { $0 }.count
        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: max(1, blocks * channels * sums))
        defer { scratch.deallocate() }
        // Scratch layout: output k of block b at (b · sums + k) · C.
        let slots: [Int?] = {
            var next = 0
            return outputs.map { output in
                guard output != nil else { return nil }
                defer { next += 1 }
                return next
            }
        }()
        let firstSlot = slots[0], secondSlot = slots[1]
        Parallel.forEachChunk(blocks, costPerItem: rowsPerBlock * channels * 8) { range in
            for block in range {
                let base = scratch + block * sums * channels
                base.update(repeating: 0, count: sums * channels)
                let partialFirst = firstSlot.map { base + $0 * channels }
                let partialSecond = secondSlot.map { base + $0 * channels }
                for row in (block * rowsPerBlock)..<min(rows, (block + 1) * rowsPerBlock) {
                    body(row, partialFirst, partialSecond)
                }
            }
        }
        for (output, slot) in zip(outputs, slots) {
            guard let output, let slot else { continue }
            Parallel.forEachChunk(channels, costPerItem: blocks) { range in
                output.advanced(by: range.lowerBound).update(repeating: 0, count: range.count)
                for block in 0..<blocks {
                    let partial = scratch + (block * sums + slot) * channels
                    for j in range { output[j] += partial[j] }
                }
            }
        }
    }
}

/// RMSNorm over the last axis, Llama convention: normalise in Float32, then multiply by the weight.
///
/// Row-parallel; the weight gradient uses the fixed row blocks of ``LayerNormKernel``.
public enum RMSNormKernel {
    /// out (N,C) = (inp · rstd) · weight with rstd (N) = 1/√(mean_C(inp²) + ε) written for the
    /// backward; `weight` (C) may be nil (1).
    public static func forward(out: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>,
                               inp: UnsafePointer<Float>, weight: UnsafePointer<Float>?,
                               rows: Int, channels: Int, epsilon: Float) {
        Parallel.forEachChunk(rows, costPerItem: channels * 3) { range in
            for row in range {
                let x = inp + row * channels
                let s = 1 / sqrtf(SoftmaxKernel.rowDot(x, x, count: channels) / Float(channels) + epsilon)
                rstd[row] = s
                LayerNormKernel.affineRow(out + row * channels, x, mean: 0, rstd: s, weight: weight, bias: nil,
                                          count: channels)
            }
        }
    }

    /// dinp (N,C) = rstd · (g − x̂ · mean_C(g ⊙ x̂)) with g = dout ⊙ weight and x̂ = inp · rstd;
    /// dweight (C) = Σ_N dout ⊙ x̂. Outputs are written (not accumulated), only when non-nil.
    public static func backward(dinp: UnsafeMutablePointer<Float>?, dweight: UnsafeMutablePointer<Float>?,
                                dout: UnsafePointer<Float>, inp: UnsafePointer<Float>, weight: UnsafePointer<Float>?,
                                rstd: UnsafePointer<Float>, rows: Int, channels: Int) {
        let c = channels
        let inverseC = 1 / Float(c)
        LayerNormKernel.blockedColumnSums(rows: rows, channels: c, first: dweight, second: nil) { row, partialWeight, _ in
            let g = dout + row * c
            let x = inp + row * c
            let s = rstd[row]
            if let dinp {
                var sumGX = FastMath.Vector(repeating: 0)
                var i = 0
                while i + 16 <= c {
                    var gw = FastMath.load(g + i)
                    if let weight { gw *= FastMath.load(weight + i) }
                    sumGX += gw * (FastMath.load(x + i) * s)
                    i += 16
                }
                if i < c {
                    let rest = c - i
                    var gw = FastMath.loadPartial(g + i, count: rest)
                    if let weight { gw *= FastMath.loadPartial(weight + i, count: rest) }
                    sumGX += gw * (FastMath.loadPartial(x + i, count: rest) * s)
                }
                let meanGX = sumGX.sum() * inverseC
                let dx = dinp + row * c
                i = 0
                while i + 16 <= c {
                    var gw = FastMath.load(g + i)
                    if let weight { gw *= FastMath.load(weight + i) }
                    FastMath.store((gw - FastMath.load(x + i) * s * meanGX) * s, dx + i)
                    i += 16
                }
                if i < c {
                    let rest = c - i
                    var gw = FastMath.loadPartial(g + i, count: rest)
                    if let weight { gw *= FastMath.loadPartial(weight + i, count: rest) }
                    FastMath.storePartial((gw - FastMath.loadPartial(x + i, count: rest) * s * meanGX) * s, dx + i, count: rest)
                }
            }
            if let partialWeight {
                LayerNormKernel.accumulateNormalised(partialWeight, dout: g, inp: x, mean: 0, rstd: s, count: c)
            }
        }
    }
}

extension Tensor {
    /// RMSNorm over the last axis: y = x / √(mean(x²) + ε) · weight (Llama: normalised in Float32,
    /// then scaled). Same shape as `self`.
    /// - Parameters:
    ///   - weight: per-channel scale of shape (C), or nil for none.
    ///   - epsilon: added to the mean square (≥ 0).
    /// - Throws: ``TensorError`` naming the op and shapes if `weight` is not (C), `self` has no
    ///   channels, or `epsilon` is negative.
    public func rmsNorm(weight: Tensor?, epsilon: Float) throws -> Tensor {
        let channels = try normalizationChannels("rmsNorm", weight: weight, bias: nil, epsilon: epsilon)
        let input = isContiguous ? self : contiguousCopy()
        let denseWeight = weight.map { $0.isContiguous ? $0 : $0.contiguousCopy() }
        let rows = count / channels
        let out = Tensor.empty(shape)
        let rstd = Tensor.empty([rows])
        RMSNormKernel.forward(out: out.pointer, rstd: rstd.pointer, inp: input.pointer,
                              weight: denseWeight?.pointer, rows: rows, channels: channels, epsilon: epsilon)
        let inputs = [self] + (weight.map { [$0] } ?? [])
        return out.recorded("rmsNorm", inputs: inputs) { gradOut, needs in
            let dinp = needs[0] ? Tensor.empty(input.shape) : nil
            let dweight = needs.count > 1 && needs[1] ? Tensor.empty([channels]) : nil
            RMSNormKernel.backward(dinp: dinp?.pointer, dweight: dweight?.pointer, dout: gradOut.pointer,
                                   inp: input.pointer, weight: denseWeight?.pointer, rstd: rstd.pointer,
                                   rows: rows, channels: channels)
            return needs.count > 1 ? [dinp, dweight] : [dinp]
        }
    }

    /// LayerNorm over the last axis with PyTorch semantics: y = (x − mean) / √(var + ε) · weight + bias,
    /// var the biased variance. Same shape as `self`.
    /// - Parameters:
    ///   - weight: per-channel scale of shape (C), or nil for none.
    ///   - bias: per-channel shift of shape (C), or nil for none.
    ///   - epsilon: added to the variance (≥ 0).
    /// - Throws: ``TensorError`` naming the op and shapes if `weight` or `bias` is not (C), `self`
    ///   has no channels, or `epsilon` is negative.
    public func layerNorm(weight: Tensor?, bias: Tensor?, epsilon: Float) throws -> Tensor {
        let channels = try normalizationChannels("layerNorm", weight: weight, bias: bias, epsilon: epsilon)
        let input = isContiguous ? self : contiguousCopy()
        let denseWeight = weight.map { $0.isContiguous ? $0 : $0.contiguousCopy() }
        let denseBias = bias.map { $0.isContiguous ? $0 : $0.contiguousCopy() }
        let rows = count / channels
        let out = Tensor.empty(shape)
        let mean = Tensor.empty([rows])
        let rstd = Tensor.empty([rows])
        LayerNormKernel.forward(out: out.pointer, mean: mean.pointer, rstd: rstd.pointer, inp: input.pointer,
                                weight: denseWeight?.pointer, bias: denseBias?.pointer,
                                rows: rows, channels: channels, epsilon: epsilon)
        var inputs = [self]
        let weightIndex = weight.map { inputs.append($0); return inputs.count - 1 }
        let biasIndex = bias.map { inputs.append($0); return inputs.count - 1 }
        return out.recorded("layerNorm", inputs: inputs) { gradOut, needs in
            let dinp = needs[0] ? Tensor.empty(input.shape) : nil
            let dweight = weightIndex.flatMap { needs[$0] ? Tensor.empty([channels]) : nil }
            let dbias = biasIndex.flatMap { needs[$0] ? Tensor.empty([channels]) : nil }
            LayerNormKernel.backward(dinp: dinp?.pointer, dweight: dweight?.pointer, dbias: dbias?.pointer,
                                     dout: gradOut.pointer, inp: input.pointer, weight: denseWeight?.pointer,
                                     mean: mean.pointer, rstd: rstd.pointer, rows: rows, channels: channels)
            var gradients: [Tensor?] = [dinp]
            if weightIndex != nil { gradients.append(dweight) }
            if biasIndex != nil { gradients.append(dbias) }
            return gradients
        }
    }

    /// Validates a last-axis normalisation and returns C.
    private func normalizationChannels(_ op: String, weight: Tensor?, bias: Tensor?, epsilon: Float) throws -> Int {
        guard rank >= 1, let channels = shape.last, channels >= 1 else {
            throw TensorError(.invalidArgument, "\(op): input of shape \(shape) needs a non-empty last (channel) axis")
        }
        if let weight, weight.shape != [channels] {
            throw TensorError.shapeMismatch(op, shape, weight.shape,
                                            detail: "weight must have shape [C] = [\(channels)] for an input of shape \(shape)")
        }
        if let bias, bias.shape != [channels] {
            throw TensorError.shapeMismatch(op, shape, bias.shape,
                                            detail: "bias must have shape [C] = [\(channels)] for an input of shape \(shape)")
        }
        guard epsilon >= 0, epsilon.isFinite else {
            throw TensorError(.invalidArgument, "\(op): epsilon must be a finite number ≥ 0, got \(epsilon)")
        }
        return channels
    }
}
