import CBLAS
import Synchronization

// B batch, T queries, S keys (causal: query i sits at absolute position S − T + i), P prefix keys
// (p-tuning v2, always visible, placed before the keys), L = P + S key positions, H query heads,
// KVH key/value heads (grouped-query: G = H / KVH query heads share kv head h / G), D head dimension.
//
// Per (b, h), with K̃ = [prefixKey; key] (L, D) and Ṽ = [prefixValue; value] (L, D):
//   scores = scale · q · K̃ᵀ + mask, −∞ where causal hides a key
//   probabilities = softmax(scores) row-wise (a row with every key hidden is all zeros)
//   out = probabilities · Ṽ
// and backward
//   dṼ = probabilitiesᵀ · dout
//   dS = probabilities ⊙ (dout·Ṽᵀ − rowsum(dout·Ṽᵀ ⊙ probabilities)) · scale
//   dq = dS · K̃, dK̃ = dSᵀ · q.
//
// Query rows are processed in blocks of `blockRows`: a causal block only multiplies by the keys its
// last row can see, which skips 3/8 of the score and value GEMMs at T = 256 (→ 1/2 for long T).
//
// Threading: the (b, h) items (backward: (b, kv head), so each kv head's gradient is owned by one
// worker and summed over its query heads in a fixed order) run in parallel on `Parallel` workers, and
// every GEMM inside is single-threaded. OpenBLAS 0.3.21 (pthreads) serialises concurrent threaded
// level-3 calls with one mutex per transpose variant, so an NT and an NN GEMM entering its thread pool
// from two workers at once are not serialised against each other (OpenBLAS issue #5836); its
// single-threaded path uses no thread pool (buffers come from its thread-safe allocator) and may be
// called concurrently. So the kernels limit OpenBLAS to one thread while their workers run
// (``AttentionKernel/forEachItem(_:_:)``). Measured (release, B=4 T=256 H=12 D=64, causal,
// forward+backward, on the 2-core machine while other jobs ran): ~42 ms wall and ~45 ms of CPU time
// this way, against ~52 ms wall and 60–110 ms of CPU time (spin-waiting BLAS threads) for a serial
// (b, h) loop with threaded GEMMs and a parallel softmax.

/// Fused causal self-attention kernels with grouped-query heads, an additive mask and prefix keys.
public enum AttentionKernel {
    /// A (B, N, heads, D) operand in strided memory: element (b, n, h, d) is at
    /// `pointer[b·batchStride + n·rowStride + h·headStride + d]`. `rowStride ≥ D` (it is the BLAS
    /// leading dimension); `batchStride` may be 0 (shared by the batch).
    public struct Operand {
        public var pointer: UnsafeMutablePointer<Float>
        public var batchStride: Int
        public var rowStride: Int
        public var headStride: Int

        public init(pointer: UnsafeMutablePointer<Float>, batchStride: Int, rowStride: Int, headStride: Int) {
            self.pointer = pointer
            self.batchStride = batchStride
            self.rowStride = rowStride
            self.headStride = headStride
        }

        /// The (N, D) matrix of batch item `b`, head `h`.
        @inline(__always)
        func matrix(_ b: Int, _ h: Int) -> UnsafeMutablePointer<Float> {
            pointer + b * batchStride + h * headStride
        }
    }

    /// The sizes of one attention call.
    public struct Dimensions: Sendable, Equatable {
        /// B.
        public var batch: Int
        /// T.
        public var queries: Int
        /// S.
        public var keys: Int
        /// P (0 without prefix).
        public var prefix: Int
        /// H.
        public var heads: Int
        /// KVH.
        public var keyValueHeads: Int
        /// D.
        public var headSize: Int

        public init(batch: Int, queries: Int, keys: Int, prefix: Int, heads: Int, keyValueHeads: Int, headSize: Int) {
            self.batch = batch
            self.queries = queries
            self.keys = keys
            self.prefix = prefix
            self.heads = heads
            self.keyValueHeads = keyValueHeads
            self.headSize = headSize
        }

        /// L = P + S.
        public var keyPositions: Int { prefix + keys }
    }

    /// An additive mask over the L key positions: row (b, i) starts at
    /// `pointer[b·batchStride + i·rowStride]` (rowStride 0 for a (B, L) padding mask).
    public struct Mask {
        public var pointer: UnsafePointer<Float>
        public var batchStride: Int
        public var rowStride: Int

        public init(pointer: UnsafePointer<Float>, batchStride: Int, rowStride: Int) {
            self.pointer = pointer
            self.batchStride = batchStride
            self.rowStride = rowStride
        }
    }

    /// Query rows per block.
    static let blockRows = 64

    /// Number of keys (of S) that query row `i` sees.
    @inline(__always)
    static func visibleKeys(row i: Int, T: Int, S: Int, causal: Bool) -> Int {
        causal ? min(S, max(0, S - T + i + 1)) : S
    }

    // MARK: Forward

    /// out (B,T,H,D) = probabilities (B,H,T,L) · [prefixValue; value] with
    /// probabilities = softmax(scale · query (B,T,H,D) · [prefixKey; key]ᵀ (B,L,KVH,D) + mask, causal).
    ///
    /// `out` and `probabilities` are dense; probabilities of hidden keys are 0. Parallel over (b, h).
    public static func forward(out: UnsafeMutablePointer<Float>, probabilities: UnsafeMutablePointer<Float>,
                               query: Operand, key: Operand, value: Operand,
                               prefixKey: Operand?, prefixValue: Operand?, mask: Mask?,
                               dimensions: Dimensions, scale: Float, causal: Bool) {
        let B = dimensions.batch, T = dimensions.queries, S = dimensions.keys, P = dimensions.prefix
        let H = dimensions.heads, KVH = dimensions.keyValueHeads, D = dimensions.headSize
        let L = P + S, G = H / KVH
        precondition(P == 0 || (prefixKey != nil && prefixValue != nil), "attention forward: P = \(P) without prefix operands")
        forEachItem(B * H) { item in
            let b = item / H, h = item % H, kvh = h / G
            let q = query.matrix(b, h), k = key.matrix(b, kvh), v = value.matrix(b, kvh)
            let pk = prefixKey?.matrix(b, kvh), pv = prefixValue?.matrix(b, kvh)
            let prob = probabilities + item * T * L
            let o = out + b * T * H * D + h * D
            var i0 = 0
            while i0 < T {
                let i1 = min(T, i0 + blockRows), m = i1 - i0
                let blockKeys = visibleKeys(row: i1 - 1, T: T, S: S, causal: causal)
                let probBlock = prob + i0 * L
                // scores = scale · q · K̃ᵀ over the keys this block can see.
                if let pk, P > 0 {
                    MatMulKernel.gemm(transposeA: false, transposeB: true, m: m, n: P, k: D, alpha: scale,
                                      a: q + i0 * query.rowStride, lda: query.rowStride,
                                      b: pk, ldb: prefixKey?.rowStride ?? D, out: probBlock, ldc: L)
                }
                if blockKeys > 0 {
                    MatMulKernel.gemm(transposeA: false, transposeB: true, m: m, n: blockKeys, k: D, alpha: scale,
                                      a: q + i0 * query.rowStride, lda: query.rowStride,
                                      b: k, ldb: key.rowStride, out: probBlock + P, ldc: L)
                }
                for i in i0..<i1 {
                    let maskRow = mask.map { $0.pointer + b * $0.batchStride + i * $0.rowStride }
                    softmaxRow(prob + i * L, mask: maskRow,
                               visible: P + visibleKeys(row: i, T: T, S: S, causal: causal), width: L)
                }
                // out = probabilities · Ṽ.
                if let pv, P > 0 {
                    MatMulKernel.gemm(transposeA: false, transposeB: false, m: m, n: D, k: P,
                                      a: probBlock, lda: L, b: pv, ldb: prefixValue?.rowStride ?? D,
                                      out: o + i0 * H * D, ldc: H * D)
                }
                if blockKeys > 0 {
                    MatMulKernel.gemm(transposeA: false, transposeB: false, m: m, n: D, k: blockKeys,
                                      a: probBlock + P, lda: L, b: v, ldb: value.rowStride,
                                      beta: P > 0 ? 1 : 0, out: o + i0 * H * D, ldc: H * D)
                }
                if P == 0 && blockKeys == 0 {
                    for i in i0..<i1 { (o + i * H * D).update(repeating: 0, count: D) }
                }
                i0 = i1
            }
        }
    }

    /// row[0..<visible] = softmax(row + mask), row[visible..<width] = 0. A row whose visible entries
    /// are all −∞ becomes all zeros.
    @inline(__always)
    static func softmaxRow(_ row: UnsafeMutablePointer<Float>, mask: UnsafePointer<Float>?, visible: Int, width: Int) {
        typealias V = SIMD16<Float>
        let negativeInfinity = -Float.infinity
        // Pass 1: add the mask, find the maximum.
        var maxima = V(repeating: negativeInfinity)
        var j = 0
        if let mask {
            while j + 16 <= visible {
                let x = FastMath.load(row + j) + FastMath.load(mask + j)
                FastMath.store(x, row + j)
                maxima = pointwiseMax(maxima, x)
                j += 16
            }
            while j < visible {
                row[j] += mask[j]
                maxima[0] = Swift.max(maxima[0], row[j])
                j += 1
            }
        } else {
            while j + 16 <= visible {
                maxima = pointwiseMax(maxima, FastMath.load(row + j))
                j += 16
            }
            while j < visible {
                maxima[0] = Swift.max(maxima[0], row[j])
                j += 1
            }
        }
        let maximum = maxima.max()
        guard maximum > negativeInfinity else {
            row.update(repeating: 0, count: width)
            return
        }
        // Pass 2: e = exp(x − max) and its sum (lane-wise, then reduced: order fixed by the row length).
        let shift = V(repeating: maximum)
        var sums = V(repeating: 0)
        j = 0
        while j + 16 <= visible {
            let e = FastMath.exp(FastMath.load(row + j) - shift)
            FastMath.store(e, row + j)
            sums += e
            j += 16
        }
        if j < visible {
            var x = V(repeating: negativeInfinity)
            for lane in 0..<(visible - j) { x[lane] = row[j + lane] }
            let e = FastMath.exp(x - shift)
            for lane in 0..<(visible - j) { row[j + lane] = e[lane] }
            sums += e
        }
        let inverse = V(repeating: 1 / sums.sum())
        // Pass 3: normalise, zero the hidden tail.
        j = 0
        while j + 16 <= visible {
            FastMath.store(FastMath.load(row + j) * inverse, row + j)
            j += 16
        }
        while j < visible {
            row[j] *= inverse[0]
            j += 1
        }
        if visible < width { (row + visible).update(repeating: 0, count: width - visible) }
    }

    // MARK: Backward

    /// Gradients of ``forward(out:probabilities:query:key:value:prefixKey:prefixValue:mask:dimensions:scale:causal:)``
    /// from dout (B,T,H,D, dense) and the saved probabilities (B,H,T,L).
    ///
    /// Writes (each only when its pointer is given; all dense): dquery (B,T,H,D), dkey and dvalue
    /// (B,S,KVH,D), dprefixKey and dprefixValue (B,P,KVH,D) — one slice per batch item, which the caller
    /// sums over the batch when the prefix is shared. Parallel over (b, kv head): a kv head's gradient
    /// sums over its G query heads in order h = kvh·G, kvh·G + 1, … inside one worker.
    public static func backward(dquery: UnsafeMutablePointer<Float>?, dkey: UnsafeMutablePointer<Float>?,
                                dvalue: UnsafeMutablePointer<Float>?,
                                dprefixKey: UnsafeMutablePointer<Float>?, dprefixValue: UnsafeMutablePointer<Float>?,
                                dout: UnsafePointer<Float>, probabilities: UnsafePointer<Float>,
                                query: Operand, key: Operand, value: Operand,
                                prefixKey: Operand?, prefixValue: Operand?,
                                dimensions: Dimensions, scale: Float, causal: Bool) {
        let B = dimensions.batch, T = dimensions.queries, S = dimensions.keys, P = dimensions.prefix
        let H = dimensions.heads, KVH = dimensions.keyValueHeads, D = dimensions.headSize
        let L = P + S, G = H / KVH
        let needScores = dquery != nil || dkey != nil || (dprefixKey != nil && P > 0)
        let kvRow = KVH * D  // row stride of the dense kv gradients
        forEachItem(B * KVH) { item in
            let b = item / KVH, kvh = item % KVH
            let k = key.matrix(b, kvh), v = value.matrix(b, kvh)
            let pk = prefixKey?.matrix(b, kvh), pv = prefixValue?.matrix(b, kvh)
            let dk = dkey.map { $0 + b * S * kvRow + kvh * D }
            let dv = dvalue.map { $0 + b * S * kvRow + kvh * D }
            let dpk = P > 0 ? dprefixKey.map { $0 + b * P * kvRow + kvh * D } : nil
            let dpv = P > 0 ? dprefixValue.map { $0 + b * P * kvRow + kvh * D } : nil
            if let dk { zeroRows(dk, rows: S, columns: D, stride: kvRow) }
            if let dv { zeroRows(dv, rows: S, columns: D, stride: kvRow) }
            if let dpk { zeroRows(dpk, rows: P, columns: D, stride: kvRow) }
            if let dpv { zeroRows(dpv, rows: P, columns: D, stride: kvRow) }
            // dS scratch for one block of rows (pool memory, reused across calls).
            let scratchTensor = Tensor.empty([needScores ? min(blockRows, T) * L : 0])
            let ds = scratchTensor.pointer
            for h in (kvh * G)..<(kvh * G + G) {
                let q = query.matrix(b, h)
                let prob = probabilities + (b * H + h) * T * L
                let gradOut = dout + b * T * H * D + h * D
                let dq = dquery.map { $0 + b * T * H * D + h * D }
                var i0 = 0
                while i0 < T {
                    let i1 = min(T, i0 + blockRows), m = i1 - i0
                    let blockKeys = visibleKeys(row: i1 - 1, T: T, S: S, causal: causal)
                    let probBlock = prob + i0 * L
                    let doBlock = gradOut + i0 * H * D
                    // dṼ += probabilitiesᵀ · dout.
                    if let dv, blockKeys > 0 {
                        MatMulKernel.gemm(transposeA: true, transposeB: false, m: blockKeys, n: D, k: m,
                                          a: probBlock + P, lda: L, b: doBlock, ldb: H * D,
                                          beta: 1, out: dv, ldc: kvRow)
                    }
                    if let dpv {
                        MatMulKernel.gemm(transposeA: true, transposeB: false, m: P, n: D, k: m,
                                          a: probBlock, lda: L, b: doBlock, ldb: H * D,
                                          beta: 1, out: dpv, ldc: kvRow)
                    }
                    if needScores {
                        // dP = dout · Ṽᵀ over the visible keys, then dS in place.
                        if let pv, P > 0 {
                            MatMulKernel.gemm(transposeA: false, transposeB: true, m: m, n: P, k: D,
                                              a: doBlock, lda: H * D, b: pv, ldb: prefixValue?.rowStride ?? D,
                                              out: ds, ldc: L)
                        }
                        if blockKeys > 0 {
                            MatMulKernel.gemm(transposeA: false, transposeB: true, m: m, n: blockKeys, k: D,
                                              a: doBlock, lda: H * D, b: v, ldb: value.rowStride,
                                              out: ds + P, ldc: L)
                        }
                        let width = P + blockKeys
                        for r in 0..<m {
                            scoreGradientRow(ds + r * L, probabilities: probBlock + r * L, width: width, scale: scale)
                        }
                        // dq = dS · K̃.
                        if let dq {
                            let dqBlock = dq + i0 * H * D
                            if let pk, P > 0 {
                                MatMulKernel.gemm(transposeA: false, transposeB: false, m: m, n: D, k: P,
                                                  a: ds, lda: L, b: pk, ldb: prefixKey?.rowStride ?? D,
                                                  out: dqBlock, ldc: H * D)
                            }
                            if blockKeys > 0 {
                                MatMulKernel.gemm(transposeA: false, transposeB: false, m: m, n: D, k: blockKeys,
                                                  a: ds + P, lda: L, b: k, ldb: key.rowStride,
                                                  beta: P > 0 ? 1 : 0, out: dqBlock, ldc: H * D)
                            }
                            if width == 0 { zeroRows(dqBlock, rows: m, columns: D, stride: H * D) }
                        }
                        // dK̃ += dSᵀ · q.
                        let qBlock = q + i0 * query.rowStride
                        if let dk, blockKeys > 0 {
                            MatMulKernel.gemm(transposeA: true, transposeB: false, m: blockKeys, n: D, k: m,
                                              a: ds + P, lda: L, b: qBlock, ldb: query.rowStride,
                                              beta: 1, out: dk, ldc: kvRow)
                        }
                        if let dpk {
                            MatMulKernel.gemm(transposeA: true, transposeB: false, m: P, n: D, k: m,
                                              a: ds, lda: L, b: qBlock, ldb: query.rowStride,
                                              beta: 1, out: dpk, ldc: kvRow)
                        }
                    }
                    i0 = i1
                }
            }
            withExtendedLifetime(scratchTensor) {}
        }
    }

    /// ds[j] = p[j] · (ds[j] − Σₖ ds[k]·p[k]) · scale for j < width, where `ds` holds dP on entry.
    @inline(__always)
    static func scoreGradientRow(_ ds: UnsafeMutablePointer<Float>, probabilities p: UnsafePointer<Float>,
                                 width: Int, scale: Float) {
        typealias V = SIMD16<Float>
        var dots = V(repeating: 0)
        var j = 0
        while j + 16 <= width {
            dots += FastMath.load(ds + j) * FastMath.load(p + j)
            j += 16
        }
        var tail: Float = 0
        while j < width {
            tail += ds[j] * p[j]
            j += 1
        }
        let dot = dots.sum() + tail
        let shift = V(repeating: dot), factor = V(repeating: scale)
        j = 0
        while j + 16 <= width {
            FastMath.store(FastMath.load(p + j) * (FastMath.load(ds + j) - shift) * factor, ds + j)
            j += 16
        }
        while j < width {
            ds[j] = p[j] * (ds[j] - dot) * scale
            j += 1
        }
    }

    @inline(__always)
    static func zeroRows(_ pointer: UnsafeMutablePointer<Float>, rows: Int, columns: Int, stride: Int) {
        for row in 0..<rows { (pointer + row * stride).update(repeating: 0, count: columns) }
    }

    // MARK: Threading

    /// Nesting depth of ``forEachItem(_:_:)`` across threads, and the OpenBLAS thread count to restore.
    private static let blasLimit = Mutex<(depth: Int, saved: Int32)>((0, 1))

    /// Runs `body(item)` for every item on the `Parallel` workers, with OpenBLAS limited to one thread
    /// meanwhile so that the GEMMs the workers call concurrently all take OpenBLAS's single-threaded
    /// path. Nested and concurrent calls are counted; the last one out restores the thread count. A
    /// single item (or a single worker) runs on the caller and leaves OpenBLAS its threads.
    static func forEachItem(_ count: Int, _ body: (Int) -> Void) {
        if count <= 1 || Parallel.threadCount <= 1 {
            for item in 0..<count { body(item) }
            return
        }
        blasLimit.withLock { state in
            if state.depth == 0 {
                state.saved = openblas_get_num_threads()
                if state.saved > 1 { openblas_set_num_threads(1) }
            }
            state.depth += 1
        }
        Parallel.forEach(count, body)
        blasLimit.withLock { state in
            state.depth -= 1
            if state.depth == 0 && state.saved > 1 { openblas_set_num_threads(state.saved) }
        }
    }
}

@inline(__always)
private func pointwiseMax(_ a: SIMD16<Float>, _ b: SIMD16<Float>) -> SIMD16<Float> {
    a.replacing(with: b, where: b .> a)
}

extension Tensor {
    /// Causal self-attention with grouped-query heads, an additive mask and optional prefix keys/values,
    /// fused (scores, mask, softmax and the weighted sum in one kernel; forward and backward).
    ///
    /// - Parameters:
    ///   - query: (B, T, H, D).
    ///   - key: (B, S, KVH, D) with H % KVH == 0: query head h reads kv head h / (H / KVH).
    ///   - value: (B, S, KVH, D).
    ///   - causal: query i (absolute position S − T + i) sees keys j ≤ S − T + i (needs S ≥ T).
    ///   - mask: additive over the P + S key positions, (B, P + S) (padding) or (B, T, P + S); broadcast
    ///     over heads; use −∞ (or a large negative number) to hide a key. A constant: no gradient.
    ///   - prefixKey: (P, KVH, D) shared by the batch, or (B, P, KVH, D); always visible, before the keys.
    ///   - prefixValue: same shape as `prefixKey`.
    ///   - scale: the score scale, 1/√D by default.
    /// - Returns: dense (B, T, H, D), so that reshaping to (B, T, H·D) is free. A query that sees no key
    ///   at all (every position masked with −∞) gets zeros.
    ///
    /// Query, key, value and prefix may be strided views with a unit last stride (e.g. slices of a fused
    /// qkv projection (B, T, 3C)): their strides are used as BLAS leading dimensions, without a copy.
    /// Probabilities (B, H, T, P + S) are kept for the backward pass. Gradients flow to query, key,
    /// value, prefixKey and prefixValue.
    /// - Throws: ``TensorError`` naming `attention` and the shapes when ranks, batch, head dimension or
    ///   head counts disagree, or the mask has the wrong shape.
    public static func attention(query: Tensor, key: Tensor, value: Tensor, causal: Bool = true,
                                 mask: Tensor? = nil, prefixKey: Tensor? = nil, prefixValue: Tensor? = nil,
                                 scale: Float? = nil) throws -> Tensor {
        let op = "attention"
        guard query.rank == 4, key.rank == 4 else {
            throw TensorError.shapeMismatch(op, query.shape, key.shape,
                                            detail: "query must be (B, T, H, D) and key (B, S, KVH, D)")
        }
        guard value.shape == key.shape else {
            throw TensorError.shapeMismatch(op, key.shape, value.shape, detail: "key and value must have the same shape (B, S, KVH, D)")
        }
        let B = query.shape[0], T = query.shape[1], H = query.shape[2], D = query.shape[3]
        let S = key.shape[1], KVH = key.shape[2]
        guard key.shape[0] == B else {
            throw TensorError.shapeMismatch(op, query.shape, key.shape, detail: "batch sizes \(B) and \(key.shape[0]) differ")
        }
        guard key.shape[3] == D else {
            throw TensorError.shapeMismatch(op, query.shape, key.shape, detail: "head dimensions D = \(D) and \(key.shape[3]) differ")
        }
        guard D > 0 else {
            throw TensorError(.invalidArgument, "\(op): head dimension D of query \(query.shape) must be positive")
        }
        guard KVH > 0, H % KVH == 0 else {
            throw TensorError(.invalidArgument,
                              "\(op): query heads H = \(H) must be a multiple of key/value heads KVH = \(KVH) (query \(query.shape), key \(key.shape))")
        }
        guard !causal || S >= T else {
            throw TensorError(.invalidArgument,
                              "\(op): causal attention needs at least as many keys as queries, got S = \(S) < T = \(T) (query \(query.shape), key \(key.shape))")
        }
        // Prefix keys/values.
        var P = 0
        var prefixBatched = false
        switch (prefixKey, prefixValue) {
        case (nil, nil):
            break
        case let (pk?, pv?):
            guard pk.shape == pv.shape else {
                throw TensorError.shapeMismatch(op, pk.shape, pv.shape, detail: "prefixKey and prefixValue must have the same shape")
            }
            if pk.rank == 3 && pk.shape[1] == KVH && pk.shape[2] == D {
                P = pk.shape[0]
            } else if pk.rank == 4 && pk.shape[0] == B && pk.shape[2] == KVH && pk.shape[3] == D {
                P = pk.shape[1]
                prefixBatched = true
            } else {
                throw TensorError.shapeMismatch(op, pk.shape, key.shape,
                                                detail: "prefixKey must be (P, KVH, D) = (P, \(KVH), \(D)) or (B, P, KVH, D) = (\(B), P, \(KVH), \(D))")
            }
        case let (pk?, nil), let (nil, pk?):
            throw TensorError(.invalidArgument, "\(op): prefixKey and prefixValue go together; got only one, of shape \(pk.shape)")
        }
        let L = P + S
        // Mask.
        var maskOperand: (tensor: Tensor, rowStride: Int)? = nil
        if let mask {
            let dense = mask.isContiguous ? mask.detached() : mask.contiguousCopy()
            if mask.shape == [B, L] {
                maskOperand = (dense, 0)
            } else if mask.shape == [B, T, L] {
                maskOperand = (dense, L)
            } else {
                throw TensorError.shapeMismatch(op, mask.shape, query.shape, key.shape,
                                                detail: "mask must be (B, P + S) = [\(B), \(L)] or (B, T, P + S) = [\(B), \(T), \(L)]")
            }
        }

        let q = attentionOperand(query)
        let k = attentionOperand(key)
        let v = attentionOperand(value)
        let pk = prefixKey.map { attentionOperand($0) }
        let pv = prefixValue.map { attentionOperand($0) }
        let dimensions = AttentionKernel.Dimensions(batch: B, queries: T, keys: S, prefix: P, heads: H,
                                                    keyValueHeads: KVH, headSize: D)
        let resolvedScale = scale ?? 1 / Float(D).squareRoot()
        let out = Tensor.empty([B, T, H, D])
        let probabilities = Tensor.empty([B, H, T, L])
        let isEmpty = out.count == 0
        if !isEmpty {
            withExtendedLifetime((q, k, v, pk, pv, maskOperand)) {
                AttentionKernel.forward(out: out.pointer, probabilities: probabilities.pointer,
                                        query: q.operand, key: k.operand, value: v.operand,
                                        prefixKey: pk?.operand, prefixValue: pv?.operand,
                                        mask: maskOperand.map { .init(pointer: $0.tensor.pointer, batchStride: $0.rowStride == 0 ? L : T * L,
                                                                      rowStride: $0.rowStride) },
                                        dimensions: dimensions, scale: resolvedScale, causal: causal)
            }
        }

        var inputs = [query, key, value]
        if let prefixKey, let prefixValue { inputs += [prefixKey, prefixValue] }
        let hasPrefix = inputs.count == 5
        return out.recorded(op, inputs: inputs) { gradOut, needs in
            precondition(gradOut.isContiguous, "attention backward: gradOut must be dense")
            let dquery = needs[0] ? Tensor.empty(query.shape) : nil
            let dkey = needs[1] ? Tensor.empty(key.shape) : nil
            let dvalue = needs[2] ? Tensor.empty(key.shape) : nil
            let wantPrefixKey = needs.count > 3 && needs[3]
            let wantPrefixValue = needs.count > 4 && needs[4]
            let dprefixKey = wantPrefixKey ? Tensor.empty([B, P, KVH, D]) : nil
            let dprefixValue = wantPrefixValue ? Tensor.empty([B, P, KVH, D]) : nil
            if !isEmpty {
                withExtendedLifetime((q, k, v, pk, pv, probabilities)) {
                    AttentionKernel.backward(dquery: dquery?.pointer, dkey: dkey?.pointer, dvalue: dvalue?.pointer,
                                             dprefixKey: dprefixKey?.pointer, dprefixValue: dprefixValue?.pointer,
                                             dout: gradOut.pointer, probabilities: probabilities.pointer,
                                             query: q.operand, key: k.operand, value: v.operand,
                                             prefixKey: pk?.operand, prefixValue: pv?.operand,
                                             dimensions: dimensions, scale: resolvedScale, causal: causal)
                }
            } else {
                for gradient in [dquery, dkey, dvalue, dprefixKey, dprefixValue] {
                    if let gradient { gradient.pointer.update(repeating: 0, count: gradient.count) }
                }
            }
            var gradients: [Tensor?] = [dquery, dkey, dvalue]
            if hasPrefix {
                gradients.append(prefixBatched ? dprefixKey : dprefixKey.map { sumOverBatch($0) })
                gradients.append(prefixBatched ? dprefixValue : dprefixValue.map { sumOverBatch($0) })
            }
            return gradients
        }
    }

    /// The operand view of a (B, N, heads, D) attention input (copied only if its last stride is not 1
    /// or its row stride cannot serve as a BLAS leading dimension). A rank-3 (N, heads, D) input is
    /// shared by the batch (batch stride 0).
    private static func attentionOperand(_ tensor: Tensor) -> (tensor: Tensor, operand: AttentionKernel.Operand) {
        let rank = tensor.rank
        let D = tensor.shape[rank - 1], rows = tensor.shape[rank - 3]
        var source = tensor.detached()
        let lastStrideOK = tensor.strides[rank - 1] == 1 || D <= 1
        let rowStrideOK = rows <= 1 || tensor.strides[rank - 3] >= D
        let nonNegative = tensor.strides.allSatisfy { $0 >= 0 }
        if !(lastStrideOK && rowStrideOK && nonNegative) { source = tensor.contiguousCopy() }
        let rowStride = rows <= 1 ? D : source.strides[rank - 3]
        let operand = AttentionKernel.Operand(pointer: source.pointer,
                                              batchStride: rank == 4 ? source.strides[0] : 0,
                                              rowStride: rowStride,
                                              headStride: source.strides[rank - 2])
        return (source, operand)
    }

    /// (B, rest…) → (rest…) summed over the batch in order b = 0, 1, … (deterministic).
    private static func sumOverBatch(_ tensor: Tensor) -> Tensor {
        let batch = tensor.shape[0], inner = tensor.count / max(batch, 1)
        let result = Tensor.zeros(Array(tensor.shape.dropFirst()))
        let source = tensor.pointer, destination = result.pointer
        for b in 0..<batch {
            let slice = source + b * inner
            for index in 0..<inner { destination[index] += slice[index] }
        }
        return result
    }
}
