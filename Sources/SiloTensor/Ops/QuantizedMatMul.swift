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
// once, exactly, at load):
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

    /// Writes the matrix's blocks through `body` (run once, at construction). Q4_0 offsets are derived
    /// from the scales afterwards.
    public func fill(_ body: (Storage) throws -> Void) rethrows {
        try body(Storage(scales: scales, offsets: format == .q4_1 ? offsets : nil, quants: quants))
        if format == .q4_0, let offsets {
            for index in 0..<(rows * blocksPerRow) { offsets[index] = -8 * scales[index] }
        }
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
                for j in 0..<16 {
                    let byte = q.load(fromByteOffset: j, as: UInt8.self)
                    out[j] = Float(Int32(byte & 0x0F) - 8) * d
                    out[j + 16] = Float(Int32(byte >> 4) - 8) * d
                }
            case .q4_1:
                let m = offsets.unsafelyUnwrapped[index]
                for j in 0..<16 {
                    let byte = q.load(fromByteOffset: j, as: UInt8.self)
                    out[j] = Float(byte & 0x0F) * d + m
                    out[j + 16] = Float(byte >> 4) * d + m
                }
            case .q8_0:
                for j in 0..<32 { out[j] = Float(q.load(fromByteOffset: j, as: Int8.self)) * d }
            }
        }
    }

    // MARK: Fused product

    /// Input rows up to which ``Tensor/quantizedLinear(weight:bias:)`` uses the fused kernel; above it,
    /// blocks of rows are dequantised into a Float32 scratch and multiplied by `sgemm`.
    public static let fusedRowLimit = 4

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
                    let v = UnsafeRawPointer(x + (n &* columns &+ b &* 32))
                    let first = QuantizedMatrix.load16(v, 0), second = QuantizedMatrix.load16(v, 64)
                    sums[n &* blocks &+ b] = (first + second).sum()
                }
            }
        }
        let format = format, scales = UnsafePointer(scales), offsets = offsets.map { UnsafePointer($0) }
        let quants = UnsafeRawPointer(quants), readOnlySums = UnsafePointer(sums)
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

    /// 16 Floats at `byteOffset` (unaligned).
    @inline(__always)
    static func load16(_ pointer: UnsafeRawPointer, _ byteOffset: Int) -> SIMD16<Float> {
        pointer.loadUnaligned(fromByteOffset: byteOffset, as: SIMD16<Float>.self)
    }

    /// The four quarters of `s` added: lane i = s[i] + s[i+4] + s[i+8] + s[i+12].
    @inline(__always)
    static func fold(_ s: SIMD16<Float>) -> SIMD4<Float> {
        let half: SIMD8<Float> = s.lowHalf + s.highHalf
        return half.lowHalf + half.highHalf
    }

    /// 16 bytes (zero-extended) as Float.
    @inline(__always)
    static func floats(_ bytes: SIMD16<UInt8>) -> SIMD16<Float> {
        // Magic-number conversion: 2²³ + q has q in the low mantissa bits, exact for q < 2²³.
        let widened = SIMD16<UInt32>(truncatingIfNeeded: bytes) | 0x4B00_0000
        return unsafeBitCast(widened, to: SIMD16<Float>.self) - 8_388_608
    }

    /// 16 signed bytes as Float.
    @inline(__always)
    static func floats(_ bytes: SIMD16<Int8>) -> SIMD16<Float> {
        SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: bytes))
    }

    /// For t < count (≤ 4): Σ_b d_b·Σ_i q_bi·x_t,bi over the 4-bit quants of one row (offsets excluded).
    @inline(__always)
    static func dotQ4(_ q: UnsafeRawPointer, _ d: UnsafePointer<Float>, blocks: Int, x: UnsafePointer<Float>,
                      columns: Int, count: Int) -> SIMD4<Float> {
        if count == 1 {
            var acc = SIMD4<Float>()
            let xr = UnsafeRawPointer(x)
            for b in 0..<blocks {
                let packed = q.load(fromByteOffset: b &* 16, as: SIMD16<UInt8>.self)
                let low = floats(packed & 0x0F), high = floats(packed &>> 4)
                let v = xr + b &* 128
                let s: SIMD16<Float> = low * load16(v, 0) + high * load16(v, 64)
                acc += fold(s) * d[b]
            }
            return SIMD4(acc.sum(), 0, 0, 0)
        }
        var acc = (SIMD4<Float>(), SIMD4<Float>(), SIMD4<Float>(), SIMD4<Float>())
        for b in 0..<blocks {
            let packed = q.load(fromByteOffset: b &* 16, as: SIMD16<UInt8>.self)
            let low = floats(packed & 0x0F), high = floats(packed &>> 4)
            let scale = d[b]
            for t in 0..<count {
                let v = UnsafeRawPointer(x + t &* columns) + b &* 128
                let s: SIMD16<Float> = low * load16(v, 0) + high * load16(v, 64)
                let partial = fold(s) * scale
                switch t {
                case 0: acc.0 += partial
                case 1: acc.1 += partial
                case 2: acc.2 += partial
                default: acc.3 += partial
                }
            }
        }
        return SIMD4(acc.0.sum(), acc.1.sum(), acc.2.sum(), acc.3.sum())
    }

    /// For t < count (≤ 4): Σ_b d_b·Σ_i q_bi·x_t,bi over the signed 8-bit quants of one row.
    @inline(__always)
    static func dotQ8(_ q: UnsafeRawPointer, _ d: UnsafePointer<Float>, blocks: Int, x: UnsafePointer<Float>,
                      columns: Int, count: Int) -> SIMD4<Float> {
        if count == 1 {
            var acc = SIMD4<Float>()
            let xr = UnsafeRawPointer(x)
            for b in 0..<blocks {
                let first = floats(q.load(fromByteOffset: b &* 32, as: SIMD16<Int8>.self))
                let second = floats(q.load(fromByteOffset: b &* 32 &+ 16, as: SIMD16<Int8>.self))
                let v = xr + b &* 128
                let s: SIMD16<Float> = first * load16(v, 0) + second * load16(v, 64)
                acc += fold(s) * d[b]
            }
            return SIMD4(acc.sum(), 0, 0, 0)
        }
        var acc = (SIMD4<Float>(), SIMD4<Float>(), SIMD4<Float>(), SIMD4<Float>())
        for b in 0..<blocks {
            let first = floats(q.load(fromByteOffset: b &* 32, as: SIMD16<Int8>.self))
            let second = floats(q.load(fromByteOffset: b &* 32 &+ 16, as: SIMD16<Int8>.self))
            let scale = d[b]
            for t in 0..<count {
                let v = UnsafeRawPointer(x + t &* columns) + b &* 128
                let s: SIMD16<Float> = first * load16(v, 0) + second * load16(v, 64)
                let partial = fold(s) * scale
                switch t {
                case 0: acc.0 += partial
                case 1: acc.1 += partial
                case 2: acc.2 += partial
                default: acc.3 += partial
                }
            }
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
