import CSiloKernels
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// N input rows (all leading axes folded), C input features (columns of the weight), O output
// features (rows of the weight), NB = C / 32 blocks per weight row.
//
// A block-quantised weight (O, C) in llama.cpp's legacy block formats, stored structure-of-arrays so
// the kernel reads aligned 16-byte quant vectors and Float32 scales (ggml's half scales are widened
// once, exactly, at load). Within a block the quants are re-ordered at load so that each 16-byte
// vector is four UInt32 lanes and lane k holds the elements k, k+4, k+8, ... (4 bits or 8 bits
// each): one shift and mask give four elements in Int32 lanes, ready for `cvtdq2ps`, whose inputs
// x[4p..<4p+4] are contiguous (baseline x86-64 has only SSE2: no byte shuffles, no widening loads).
// Values:
//   Q4_0  w = d·(q − 8)   q ∈ 0...15    (a block of 32: 16 bytes, low nibbles elements 0..<16,
//   Q4_1  w = d·q + m     q ∈ 0...15     high nibbles elements 16..<32, as ggml)
//   Q8_0  w = d·q         q ∈ −128...127 (32 signed bytes)
// The fused product never expands the weight: per block b of a row,
//   Σ_i w_i·x_i = d_b·Σ_i q_i·x_i + m_b·Σ_i x_i
// with m_b = −8·d_b for Q4_0 (exact: a power-of-two multiple) and no second term for Q8_0; the block
// sums S_b = Σ_i x_i are computed once per input row and shared by every output row.

/// The block formats of a ``QuantizedMatrix`` (ggml's legacy quantisation types, 32 elements a block).
public enum BlockQuantization: String, Sendable, CaseIterable, CustomStringConvertible {
    /// w = d·(q − 8), 4-bit q, one scale d per block (ggml Q4_0).
    case q4_0
    /// w = d·q + m, 4-bit q, a scale d and an offset m per block (ggml Q4_1).
    case q4_1
    /// w = d·q, signed 8-bit q, one scale d per block (ggml Q8_0).
    case q8_0

    /// Elements per block: 32.
    public static let blockSize = 32

    /// Bytes of quants per block in memory: 16 for the 4-bit formats, 32 for Q8_0.
    public var quantBytesPerBlock: Int { self == .q8_0 ? 32 : 16 }

    public var description: String { rawValue.uppercased() }
}

/// A weight matrix (O, C) held in 32-element quantised blocks along each row, multiplied without
/// expanding it (``multiply(_:rows:into:bias:)``) or expanded on demand (``dequantize(rows:into:)``).
///
/// Memory: per block, the quants (16 or 32 bytes) plus a Float32 scale (and, for Q4_0/Q4_1, a Float32
/// offset): 24 bytes per 32 weights for Q4_1 against 128 as Float32. The matrix is immutable and is
/// shared freely across threads.
public final class QuantizedMatrix: @unchecked Sendable {
    /// How the blocks are stored.
    public let format: BlockQuantization
    /// O: rows (output features).
    public let rows: Int
    /// C: columns (input features), a multiple of 32.
    public let columns: Int
    /// NB = C / 32.
    public let blocksPerRow: Int
    /// d per block, (O, NB) row-major.
    let scales: UnsafeMutablePointer<Float>
    /// m per block (Q4_1), −8·d (Q4_0); nil for Q8_0. (O, NB) row-major.
    let offsets: UnsafeMutablePointer<Float>?
    /// Quants, (O, NB, 16 or 32) bytes, 64-byte aligned.
    let quants: UnsafeMutableRawPointer

    /// An uninitialised matrix: fill it through ``fill(_:)`` before use.
    /// - Precondition: rows ≥ 0 and columns a non-negative multiple of 32.
    public init(format: BlockQuantization, rows: Int, columns: Int) {
        precondition(rows >= 0 && columns >= 0 && columns % BlockQuantization.blockSize == 0,
                     "QuantizedMatrix: (\(rows), \(columns)) needs a column count that is a multiple of 32")
        self.format = format
        self.rows = rows
        self.columns = columns
        blocksPerRow = columns / BlockQuantization.blockSize
        let blockCount = max(1, rows * blocksPerRow)
        scales = .allocate(capacity: blockCount)
        offsets = format == .q8_0 ? nil : .allocate(capacity: blockCount)
        quants = .allocate(byteCount: blockCount * format.quantBytesPerBlock, alignment: 64)
    }

    deinit {
        scales.deallocate()
        offsets?.deallocate()
        quants.deallocate()
    }

    /// The writable storage of one matrix, handed to ``QuantizedMatrix/fill(_:)``.
    public struct Storage {
        /// d per block, (O, NB).
        public let scales: UnsafeMutablePointer<Float>
        /// For Q4_1 the offset m per block, (O, NB); nil otherwise (Q4_0's offsets are derived).
        public let offsets: UnsafeMutablePointer<Float>?
        /// Quants, (O, NB, ``BlockQuantization/quantBytesPerBlock``) bytes in ggml's in-block order.
        public let quants: UnsafeMutableRawPointer
    }

    /// Writes the matrix's blocks through `body` (run once, at construction). Afterwards the quants
    /// are re-ordered for the kernel and Q4_0 offsets are derived from the scales.
    public func fill(_ body: (Storage) throws -> Void) rethrows {
        try body(Storage(scales: scales, offsets: format == .q4_1 ? offsets : nil, quants: quants))
        if format == .q4_0, let offsets {
            for index in 0..<(rows * blocksPerRow) { offsets[index] = -8 * scales[index] }
        }
        let format = format, quants = quants
        Parallel.forEachChunk(rows * blocksPerRow, costPerItem: 64) { blocks in
            var ggml = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
            withUnsafeMutableBytes(of: &ggml) { scratch in
                for block in blocks {
                    let bytes = format.quantBytesPerBlock
                    let target = quants + block * bytes
                    scratch.baseAddress.unsafelyUnwrapped.copyMemory(from: target, byteCount: bytes)
                    for element in 0..<32 {
                        let (byte, shift) = QuantizedMatrix.location(of: element, format: format)
                        let value: UInt8
                        if format == .q8_0 {
                            value = scratch[element]
                        } else {
                            value = element < 16 ? scratch[element] & 0x0F : scratch[element - 16] >> 4
                        }
                        let current = target.load(fromByteOffset: byte, as: UInt8.self)
                        let cleared = format == .q8_0 ? 0 : current & ~(UInt8(0x0F) << shift)
                        target.storeBytes(of: cleared | (value << shift), toByteOffset: byte, as: UInt8.self)
                    }
                }
            }
        }
    }

    /// Where element `element` (0..<32) of a block lives in the kernel's order: the byte within the
    /// block's quants and the bit shift within that byte. Q4: lane k = element % 4 (bytes 4k..<4k+4,
    /// little-endian), nibble p = element / 4 (bits 4p..<4p+4 of the lane). Q8: half c = element / 16
    /// (16 bytes each), lane k = element % 4, byte p = (element % 16) / 4 of the lane.
    @inline(__always)
    static func location(of element: Int, format: BlockQuantization) -> (byte: Int, shift: UInt8) {
        let lane = element & 3
        if format == .q8_0 {
            return ((element >> 4) << 4 + lane << 2 + (element & 15) >> 2, 0)
        }
        let nibble = element >> 2
        return (lane << 2 + nibble >> 1, UInt8((nibble & 1) << 2))
    }

    /// Bytes held: quants, scales and offsets.
    public var byteCount: Int {
        rows * blocksPerRow * (format.quantBytesPerBlock + (offsets == nil ? 4 : 8))
    }

    // MARK: Dequantisation

    /// out (rows.count, C) = the Float32 values of `rows`, computed as ggml's reference
    /// `dequantize_row_*` does (same arithmetic, so bit-identical to it). Parallel over rows.
    public func dequantize(rows range: Range<Int>, into out: UnsafeMutablePointer<Float>) {
        precondition(range.lowerBound >= 0 && range.upperBound <= rows, "QuantizedMatrix: rows \(range) outside 0..<\(rows)")
        let columns = columns
        Parallel.forEachChunk(range.count, costPerItem: columns) { chunk in
            for local in chunk {
                self.dequantizeRow(range.lowerBound + local, into: out + local * columns)
            }
        }
    }

    /// The whole matrix as a dense (O, C) tensor without gradient history.
    public func dequantized() -> Tensor {
        let result = Tensor.empty([rows, columns])
        dequantize(rows: 0..<rows, into: result.pointer)
        return result
    }

    @inline(__always)
    func dequantizeRow(_ row: Int, into y: UnsafeMutablePointer<Float>) {
        let blocks = blocksPerRow
        let bytes = format.quantBytesPerBlock
        for b in 0..<blocks {
            let index = row &* blocks &+ b
            let d = scales[index]
            let q = quants + index &* bytes
            let out = y + b &* 32
            switch format {
            case .q4_0:
                for j in 0..<32 {
                    let (byte, shift) = QuantizedMatrix.location(of: j, format: .q4_0)
                    let value = (q.load(fromByteOffset: byte, as: UInt8.self) >> shift) & 0x0F
                    out[j] = Float(Int32(value) - 8) * d
                }
            case .q4_1:
                let m = offsets.unsafelyUnwrapped[index]
                for j in 0..<32 {
                    let (byte, shift) = QuantizedMatrix.location(of: j, format: .q4_1)
                    let value = (q.load(fromByteOffset: byte, as: UInt8.self) >> shift) & 0x0F
                    out[j] = Float(value) * d + m
                }
            case .q8_0:
                for j in 0..<32 {
                    let (byte, _) = QuantizedMatrix.location(of: j, format: .q8_0)
                    out[j] = Float(q.load(fromByteOffset: byte, as: Int8.self)) * d
                }
            }
        }
    }

    // MARK: Fused product

    /// Input rows up to which ``Tensor/quantizedLinear(weight:bias:)`` uses the fused kernel; above it,
    /// blocks of rows are dequantised into a Float32 scratch and multiplied by `sgemm`.
    public static let fusedRowLimit = 4

    /// Whether one-row products may use the hand-vectorised AVX2 kernel (on CPUs that have it); tests
    /// switch it off to check the portable path against it.
    nonisolated(unsafe) public static var useVectorKernels = true

    /// Whether one-row products run the AVX2 + FMA kernel on this CPU (and `SILO_KERNELS_ISA` allows it):
    /// where they do, decoding from quantised blocks beats Float32 `sgemv` (BENCHMARKS.md, "Generation").
    public static var hasVectorKernels: Bool { useVectorKernels && silo_kernels_isa() >= 1 }

    /// out (N, O) = x (N, C) · Wᵀ (+ bias (O)), with the blocks unpacked in registers: no Float32 copy
    /// of the weight is made. Parallel over output rows; each weight row is read once per call and
    /// used for every input row.
    ///
    /// The result equals `x · dequantize(W)ᵀ` up to summation order (about 1e-6 relative).
    public func multiply(_ x: UnsafePointer<Float>, rows inputRows: Int, into out: UnsafeMutablePointer<Float>,
                         bias: UnsafePointer<Float>?) {
        let blocks = blocksPerRow, columns = columns, outputs = rows
        guard inputRows > 0, outputs > 0 else { return }
        // Block sums S (N, NB) of the input, for the offset term.
        let sums = UnsafeMutablePointer<Float>.allocate(capacity: max(1, inputRows * blocks))
        defer { sums.deallocate() }
        if offsets != nil {
            for n in 0..<inputRows {
                for b in 0..<blocks {
                    sums[n &* blocks &+ b] = QuantizedMatrix.sum(x + (n &* columns &+ b &* 32), count: 32)
                }
            }
        }
        let format = format, scales = UnsafePointer(scales), offsets = offsets.map { UnsafePointer($0) }
        let quants = UnsafeRawPointer(quants), readOnlySums = UnsafePointer(sums)
        if inputRows == 1 && QuantizedMatrix.useVectorKernels && silo_kernels_isa() >= 1 {
            // Decoding: the AVX2 + FMA kernel of CSiloKernels (same arithmetic per block, 8 lanes wide).
            let code: Int32 = format == .q4_0 ? 0 : format == .q4_1 ? 1 : 2
            Parallel.forEachChunk(outputs, costPerItem: columns) { chunk in
                _ = silo_quantized_gemv(code, quants.assumingMemoryBound(to: UInt8.self), scales, offsets, readOnlySums, Int32(blocks), x,
                                        Int32(chunk.lowerBound), Int32(chunk.upperBound), out, bias)
            }
            return
        }
        Parallel.forEachChunk(outputs, costPerItem: columns &* inputRows) { chunk in
            for row in chunk {
                let rowScales = scales + row &* blocks
                var n = 0
                while n < inputRows {
                    let count = min(4, inputRows - n)
                    let xs = x + n &* columns
                    var dots = SIMD4<Float>()
                    switch format {
                    case .q4_0, .q4_1:
                        let rowQuants = quants + row &* blocks &* 16
                        dots = QuantizedMatrix.dotQ4(rowQuants, rowScales, blocks: blocks, x: xs, columns: columns, count: count)
                        if let offsets {
                            let rowOffsets = offsets + row &* blocks
                            for t in 0..<count {
                                dots[t] += QuantizedMatrix.dot(rowOffsets, readOnlySums + (n &+ t) &* blocks, count: blocks)
                            }
                        }
                    case .q8_0:
                        let rowQuants = quants + row &* blocks &* 32
                        dots = QuantizedMatrix.dotQ8(rowQuants, rowScales, blocks: blocks, x: xs, columns: columns, count: count)
                    }
                    let b = bias?[row] ?? 0
                    for t in 0..<count { out[(n &+ t) &* outputs &+ row] = dots[t] + b }
                    n += count
                }
            }
        }
    }

    /// Σ a_i over `count` Floats (a multiple of 4).
    @inline(__always)
    static func sum(_ a: UnsafePointer<Float>, count: Int) -> Float {
        var acc = SIMD4<Float>()
        var i = 0
        while i < count {
            acc += UnsafeRawPointer(a + i).loadUnaligned(as: SIMD4<Float>.self)
            i &+= 4
        }
        return acc.sum()
    }

    /// Σ a_i·b_i over `count` Floats.
    @inline(__always)
    static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) -> Float {
        var acc = SIMD4<Float>()
        var i = 0
        while i &+ 4 <= count {
            acc += UnsafeRawPointer(a + i).loadUnaligned(as: SIMD4<Float>.self)
                * UnsafeRawPointer(b + i).loadUnaligned(as: SIMD4<Float>.self)
            i &+= 4
        }
        var total = acc.sum()
        while i < count {
            total += a[i] * b[i]
            i &+= 1
        }
        return total
    }

    /// The 32 weights of a 4-bit block (without scale and offset) as Float, in the kernel's order:
    /// group p holds elements 4p..<4p+4. (Masking nibbles in place and pre-scaling x by 16^−p saves a
    /// shift per group but measured 3x slower: LLVM no longer emits a plain `cvtdq2ps`.)
    @inline(__always)
    static func unpackQ4(_ v: SIMD4<Int32>) -> (SIMD4<Float>, SIMD4<Float>, SIMD4<Float>, SIMD4<Float>,
                                                 SIMD4<Float>, SIMD4<Float>, SIMD4<Float>, SIMD4<Float>) {
        (SIMD4<Float>(v & 0xF), SIMD4<Float>((v &>> 4) & 0xF), SIMD4<Float>((v &>> 8) & 0xF),
         SIMD4<Float>((v &>> 12) & 0xF), SIMD4<Float>((v &>> 16) & 0xF), SIMD4<Float>((v &>> 20) & 0xF),
         SIMD4<Float>((v &>> 24) & 0xF), SIMD4<Float>((v &>> 28) & 0xF))
    }

    /// 16 signed 8-bit weights as Float, group p holding elements 4p..<4p+4 of the half block.
    @inline(__always)
    static func unpackQ8(_ v: SIMD4<Int32>) -> (SIMD4<Float>, SIMD4<Float>, SIMD4<Float>, SIMD4<Float>) {
        (SIMD4<Float>((v &<< 24) &>> 24), SIMD4<Float>((v &<< 16) &>> 24),
         SIMD4<Float>((v &<< 8) &>> 24), SIMD4<Float>(v &>> 24))
    }

    /// Σ over a block of 32: Σ_p w_p ⊙ x[4p..<4p+4] (four lanes, not yet added).
    @inline(__always)
    static func blockDot(_ w: (SIMD4<Float>, SIMD4<Float>, SIMD4<Float>, SIMD4<Float>,
                               SIMD4<Float>, SIMD4<Float>, SIMD4<Float>, SIMD4<Float>),
                         _ x: UnsafeRawPointer) -> SIMD4<Float> {
        var even = w.0 * x.loadUnaligned(as: SIMD4<Float>.self)
        var odd = w.1 * x.loadUnaligned(fromByteOffset: 16, as: SIMD4<Float>.self)
        even += w.2 * x.loadUnaligned(fromByteOffset: 32, as: SIMD4<Float>.self)
        odd += w.3 * x.loadUnaligned(fromByteOffset: 48, as: SIMD4<Float>.self)
        even += w.4 * x.loadUnaligned(fromByteOffset: 64, as: SIMD4<Float>.self)
        odd += w.5 * x.loadUnaligned(fromByteOffset: 80, as: SIMD4<Float>.self)
        even += w.6 * x.loadUnaligned(fromByteOffset: 96, as: SIMD4<Float>.self)
        odd += w.7 * x.loadUnaligned(fromByteOffset: 112, as: SIMD4<Float>.self)
        return even + odd
    }

    /// For t < count (≤ 4): Σ_b d_b·Σ_i q_bi·x_t,bi over the 4-bit quants of one row (offsets excluded).
    @inline(__always)
    static func dotQ4(_ q: UnsafeRawPointer, _ d: UnsafePointer<Float>, blocks: Int, x: UnsafePointer<Float>,
                      columns: Int, count: Int) -> SIMD4<Float> {
        if count == 1 {
            var acc = SIMD4<Float>()
            let xr = UnsafeRawPointer(x)
            for b in 0..<blocks {
                let w = unpackQ4(q.load(fromByteOffset: b &* 16, as: SIMD4<Int32>.self))
                acc += blockDot(w, xr + b &* 128) * d[b]
            }
            return SIMD4(acc.sum(), 0, 0, 0)
        }
        var acc = (SIMD4<Float>(), SIMD4<Float>(), SIMD4<Float>(), SIMD4<Float>())
        let stride = columns &* 4
        for b in 0..<blocks {
            let w = unpackQ4(q.load(fromByteOffset: b &* 16, as: SIMD4<Int32>.self))
            let scale = d[b]
            let xr = UnsafeRawPointer(x) + b &* 128
            acc.0 += blockDot(w, xr) * scale
            acc.1 += blockDot(w, xr + stride) * scale
            if count > 2 { acc.2 += blockDot(w, xr + 2 &* stride) * scale }
            if count > 3 { acc.3 += blockDot(w, xr + 3 &* stride) * scale }
        }
        return SIMD4(acc.0.sum(), acc.1.sum(), acc.2.sum(), acc.3.sum())
    }

    /// For t < count (≤ 4): Σ_b d_b·Σ_i q_bi·x_t,bi over the signed 8-bit quants of one row.
    @inline(__always)
    static func dotQ8(_ q: UnsafeRawPointer, _ d: UnsafePointer<Float>, blocks: Int, x: UnsafePointer<Float>,
                      columns: Int, count: Int) -> SIMD4<Float> {
        @inline(__always)
        func unpack(_ block: UnsafeRawPointer) -> (SIMD4<Float>, SIMD4<Float>, SIMD4<Float>, SIMD4<Float>,
                                                    SIMD4<Float>, SIMD4<Float>, SIMD4<Float>, SIMD4<Float>) {
            let first = unpackQ8(block.load(as: SIMD4<Int32>.self))
            let second = unpackQ8(block.load(fromByteOffset: 16, as: SIMD4<Int32>.self))
            return (first.0, first.1, first.2, first.3, second.0, second.1, second.2, second.3)
        }
        if count == 1 {
            var acc = SIMD4<Float>()
            let xr = UnsafeRawPointer(x)
            for b in 0..<blocks {
                acc += blockDot(unpack(q + b &* 32), xr + b &* 128) * d[b]
            }
            return SIMD4(acc.sum(), 0, 0, 0)
        }
        var acc = (SIMD4<Float>(), SIMD4<Float>(), SIMD4<Float>(), SIMD4<Float>())
        let stride = columns &* 4
        for b in 0..<blocks {
            let w = unpack(q + b &* 32)
            let scale = d[b]
            let xr = UnsafeRawPointer(x) + b &* 128
            acc.0 += blockDot(w, xr) * scale
            acc.1 += blockDot(w, xr + stride) * scale
            if count > 2 { acc.2 += blockDot(w, xr + 2 &* stride) * scale }
            if count > 3 { acc.3 += blockDot(w, xr + 3 &* stride) * scale }
        }
        return SIMD4(acc.0.sum(), acc.1.sum(), acc.2.sum(), acc.3.sum())
    }

    // MARK: Dequantise-and-GEMM

    /// Output rows dequantised at a time on the GEMM path: about 4 MiB of Float32 scratch.
    static func gemmRowChunk(columns: Int) -> Int { max(1, (1 << 20) / max(1, columns)) }

    /// out (N, O) = x (N, C) · Wᵀ (+ bias) through `sgemm`, the weight dequantised one chunk of output
    /// rows at a time into a pooled scratch: `chunkRows` rows (default about 4 MiB of Float32).
    public func multiplyDequantizing(_ x: UnsafePointer<Float>, rows inputRows: Int,
                                     into out: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>?,
                                     chunkRows: Int? = nil) {
        let chunk = max(1, chunkRows ?? QuantizedMatrix.gemmRowChunk(columns: columns))
        let scratch = Tensor.empty([min(chunk, rows), columns])
        var start = 0
        while start < rows {
            let end = min(rows, start + chunk)
            dequantize(rows: start..<end, into: scratch.pointer)
            if let bias {
                for n in 0..<inputRows { (out + n * rows + start).update(from: bias + start, count: end - start) }
            }
            MatMulKernel.gemm(transposeA: false, transposeB: true, m: inputRows, n: end - start, k: columns,
                              a: x, lda: columns, b: scratch.pointer, ldb: columns,
                              beta: bias == nil ? 0 : 1, out: out + start, ldc: rows)
            start = end
        }
    }

    /// dx (N, C) = dout (N, O) · W, the weight dequantised one chunk of rows at a time (accumulating
    /// over chunks of `chunkRows` rows, default about 4 MiB of Float32).
    public func multiplyTransposedDequantizing(_ gradient: UnsafePointer<Float>, rows inputRows: Int,
                                               into out: UnsafeMutablePointer<Float>, chunkRows: Int? = nil) {
        let chunk = max(1, chunkRows ?? QuantizedMatrix.gemmRowChunk(columns: columns))
        let scratch = Tensor.empty([min(chunk, rows), columns])
        var start = 0
        if rows == 0 { out.update(repeating: 0, count: inputRows * columns) }
        while start < rows {
            let end = min(rows, start + chunk)
            dequantize(rows: start..<end, into: scratch.pointer)
            MatMulKernel.gemm(transposeA: false, transposeB: false, m: inputRows, n: columns, k: end - start,
                              a: gradient + start, lda: rows, b: scratch.pointer, ldb: columns,
                              beta: start == 0 ? 0 : 1, out: out, ldc: columns)
            start = end
        }
    }
}

extension Tensor {
    /// out (…, O) = self (…, C) · Wᵀ + bias (O) for a block-quantised weight W (O, C).
    ///
    /// Up to ``QuantizedMatrix/fusedRowLimit`` rows (decoding) use the fused kernel
    /// (``QuantizedMatrix/multiply(_:rows:into:bias:)``); more rows (a prompt, a training batch) use
    /// dequantise-and-`sgemm`. The weight is a constant: gradients flow to the input (dx = dout · W)
    /// and to the bias, never to W.
    /// - Throws: ``TensorError`` naming both shapes if C differs or the bias is not (O).
    public func quantizedLinear(weight: QuantizedMatrix, bias: Tensor? = nil) throws -> Tensor {
        let outputs = weight.rows, inputs = weight.columns
        guard rank >= 1, shape[rank - 1] == inputs else {
            throw TensorError.shapeMismatch("quantizedLinear", shape, [outputs, inputs], detail: "input (…, C) needs weight (O, C)")
        }
        if let bias, bias.shape != [outputs] {
            throw TensorError.shapeMismatch("quantizedLinear", [outputs, inputs], bias.shape, detail: "bias must be (O) = [\(outputs)]")
        }
        let x = isContiguous ? self : contiguousCopy()
        let b = bias.map { $0.isContiguous ? $0 : $0.contiguousCopy() }
        let rows = count / max(inputs, 1)
        let out = Tensor.empty(Array(shape.dropLast()) + [outputs])
        if rows <= QuantizedMatrix.fusedRowLimit {
            weight.multiply(x.pointer, rows: rows, into: out.pointer, bias: b?.pointer)
        } else {
            weight.multiplyDequantizing(x.pointer, rows: rows, into: out.pointer, bias: b?.pointer)
        }
        let inputsList: [Tensor] = bias.map { [self, $0] } ?? [self]
        return out.recorded("quantizedLinear", inputs: inputsList) { gradOut, needs in
            var gradients: [Tensor?] = [nil]
            if needs[0] {
                let dinp = Tensor.empty(x.shape)
                weight.multiplyTransposedDequantizing(gradOut.pointer, rows: rows, into: dinp.pointer)
                gradients[0] = dinp
            }
            if b != nil {
                var dbias: Tensor? = nil
                if needs[1] {
                    let column = Tensor.empty([outputs])
                    LinearKernel.backwardBias(dbias: column.pointer, dout: gradOut.pointer, rows: rows, outputs: outputs)
                    dbias = column
                }
                gradients.append(dbias)
            }
            return gradients
        }
    }
}
