// Dequantisation of ggml tensor blocks to Float32, ported from ggml's reference functions
// (ggml/src/ggml-quants.c: dequantize_row_q4_0 ... dequantize_row_q8_K; ggml.c: fp16/bf16 to fp32),
// with the same arithmetic in the same order, so results match ggml and gguf-py bit for bit.
//
// QK elements per block (32 for the legacy quants, QK_K = 256 for the k-quants, 1 for plain types),
// TS bytes per block. Every kernel reads blocks `blocks` of `source` (block b starts at byte b·TS) and
// writes elements [b·QK, (b+1)·QK) of `out`. All multi-byte fields are little-endian and unaligned.

/// Dequantisation kernels: ggml blocks -> Float32. Each function converts a range of blocks.
enum GGMLDequantizeKernel {
    /// out (blocks·QK) = dequantize(source blocks of `type`) for the blocks in `blocks`.
    static func dequantize(_ type: GGMLType, source: UnsafeRawPointer, out: UnsafeMutablePointer<Float>,
                           blocks: Range<Int>) {
        switch type {
        case .f32: f32(source, out, blocks)
        case .f16: f16(source, out, blocks)
        case .bf16: bf16(source, out, blocks)
        case .f64: f64(source, out, blocks)
        case .i8: i8(source, out, blocks)
        case .i16: i16(source, out, blocks)
        case .i32: i32(source, out, blocks)
        case .q4_0: q4_0(source, out, blocks)
        case .q4_1: q4_1(source, out, blocks)
        case .q5_0: q5_0(source, out, blocks)
        case .q5_1: q5_1(source, out, blocks)
        case .q8_0: q8_0(source, out, blocks)
        case .q4_K: q4_K(source, out, blocks)
        case .q5_K: q5_K(source, out, blocks)
        case .q6_K: q6_K(source, out, blocks)
        case .q8_K: q8_K(source, out, blocks)
        default: preconditionFailure("GGMLDequantizeKernel: \(type) is not dequantizable (checked by the caller)")
        }
    }

    // MARK: Scalars

    /// IEEE half (binary16) bits -> Float32, exact for every value (±0, subnormals, ±inf, NaN).
    @inline(__always)
    static func halfToFloat(_ bits: UInt16) -> Float {
        let sign = UInt32(bits & 0x8000) << 16
        let exponent = UInt32(bits >> 10) & 0x1F
        let mantissa = UInt32(bits & 0x3FF)
        if exponent == 0x1F { return Float(bitPattern: sign | 0x7F80_0000 | (mantissa << 13)) }
        if exponent == 0 {
            let magnitude = Float(mantissa) * 0x1p-24  // subnormal: mantissa · 2⁻²⁴, exact
            return sign != 0 ? -magnitude : magnitude
        }
        return Float(bitPattern: sign | ((exponent + 112) << 23) | (mantissa << 13))
    }

    @inline(__always)
    static func half(_ pointer: UnsafeRawPointer, _ byteOffset: Int) -> Float {
        halfToFloat(UInt16(littleEndian: pointer.loadUnaligned(fromByteOffset: byteOffset, as: UInt16.self)))
    }

    @inline(__always)
    static func byte(_ pointer: UnsafeRawPointer, _ byteOffset: Int) -> UInt8 {
        pointer.load(fromByteOffset: byteOffset, as: UInt8.self)
    }

    // MARK: Plain types (QK = 1)

    /// out (n) = source F32 (n).
    static func f32(_ source: UnsafeRawPointer, _ out: UnsafeMutablePointer<Float>, _ blocks: Range<Int>) {
        for i in blocks {
            out[i] = Float(bitPattern: UInt32(littleEndian: source.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)))
        }
    }

    /// out (n) = source F16 (n) widened.
    static func f16(_ source: UnsafeRawPointer, _ out: UnsafeMutablePointer<Float>, _ blocks: Range<Int>) {
        for i in blocks { out[i] = half(source, 2 * i) }
    }

    /// out (n) = source BF16 (n) widened: the bits shifted into the top half of a Float32.
    static func bf16(_ source: UnsafeRawPointer, _ out: UnsafeMutablePointer<Float>, _ blocks: Range<Int>) {
        for i in blocks {
            let bits = UInt16(littleEndian: source.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
            out[i] = Float(bitPattern: UInt32(bits) << 16)
        }
    }

    /// out (n) = source F64 (n) rounded to Float32.
    static func f64(_ source: UnsafeRawPointer, _ out: UnsafeMutablePointer<Float>, _ blocks: Range<Int>) {
        for i in blocks {
            out[i] = Float(Double(bitPattern: UInt64(littleEndian: source.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self))))
        }
    }

    /// out (n) = source I8 (n) as Float32.
    static func i8(_ source: UnsafeRawPointer, _ out: UnsafeMutablePointer<Float>, _ blocks: Range<Int>) {
        for i in blocks { out[i] = Float(source.load(fromByteOffset: i, as: Int8.self)) }
    }

    /// out (n) = source I16 (n) as Float32.
    static func i16(_ source: UnsafeRawPointer, _ out: UnsafeMutablePointer<Float>, _ blocks: Range<Int>) {
        for i in blocks { out[i] = Float(Int16(littleEndian: source.loadUnaligned(fromByteOffset: 2 * i, as: Int16.self))) }
    }

    /// out (n) = source I32 (n) as Float32 (rounded above 2²⁴).
    static func i32(_ source: UnsafeRawPointer, _ out: UnsafeMutablePointer<Float>, _ blocks: Range<Int>) {
        for i in blocks { out[i] = Float(Int32(littleEndian: source.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self))) }
    }

    // MARK: Legacy quants (QK = 32)

    /// Q4_0, block {f16 d; u8 qs[16]} (18 bytes): y[j] = ((qs[j] & 15) - 8)·d, y[j+16] = ((qs[j] >> 4) - 8)·d.
    static func q4_0(_ source: UnsafeRawPointer, _ out: UnsafeMutablePointer<Float>, _ blocks: Range<Int>) {
        for b in blocks {
            let block = source + b * 18
            let y = out + b * 32
            let d = half(block, 0)
            for j in 0..<16 {
                let q = byte(block, 2 + j)
                y[j] = Float(Int32(q & 0x0F) - 8) * d
                y[j + 16] = Float(Int32(q >> 4) - 8) * d
            }
        }
    }

    /// Q4_1, block {f16 d; f16 m; u8 qs[16]} (20 bytes): y[j] = (qs[j] & 15)·d + m, y[j+16] = (qs[j] >> 4)·d + m.
    static func q4_1(_ source: UnsafeRawPointer, _ out: UnsafeMutablePointer<Float>, _ blocks: Range<Int>) {
        for b in blocks {
            let block = source + b * 20
            let y = out + b * 32
            let d = half(block, 0)
            let m = half(block, 2)
            for j in 0..<16 {
                let q = byte(block, 4 + j)
                y[j] = Float(q & 0x0F) * d + m
                y[j + 16] = Float(q >> 4) * d + m
            }
        }
    }

    /// Q5_0, block {f16 d; u32 qh; u8 qs[16]} (22 bytes): the fifth bit of element j is bit j of qh;
    /// y = (q - 16)·d.
    static func q5_0(_ source: UnsafeRawPointer, _ out: UnsafeMutablePointer<Float>, _ blocks: Range<Int>) {
        for b in blocks {
            let block = source + b * 22
            let y = out + b * 32
            let d = half(block, 0)
            let qh = UInt32(littleEndian: block.loadUnaligned(fromByteOffset: 2, as: UInt32.self))
            for j in 0..<16 {
                let q = byte(block, 6 + j)
                let high0 = ((qh >> UInt32(j)) << 4) & 0x10
                let high1 = (qh >> UInt32(j + 12)) & 0x10
                y[j] = Float(Int32(UInt32(q & 0x0F) | high0) - 16) * d
                y[j + 16] = Float(Int32(UInt32(q >> 4) | high1) - 16) * d
            }
        }
    }

    /// Q5_1, block {f16 d; f16 m; u32 qh; u8 qs[16]} (24 bytes): y = q·d + m with the fifth bit from qh.
    static func q5_1(_ source: UnsafeRawPointer, _ out: UnsafeMutablePointer<Float>, _ blocks: Range<Int>) {
        for b in blocks {
            let block = source + b * 24
            let y = out + b * 32
            let d = half(block, 0)
            let m = half(block, 2)
            let qh = UInt32(littleEndian: block.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
            for j in 0..<16 {
                let q = byte(block, 8 + j)
                let high0 = ((qh >> UInt32(j)) << 4) & 0x10
                let high1 = (qh >> UInt32(j + 12)) & 0x10
                y[j] = Float(UInt32(q & 0x0F) | high0) * d + m
                y[j + 16] = Float(UInt32(q >> 4) | high1) * d + m
            }
        }
    }

    /// Q8_0, block {f16 d; i8 qs[32]} (34 bytes): y[j] = qs[j]·d.
    static func q8_0(_ source: UnsafeRawPointer, _ out: UnsafeMutablePointer<Float>, _ blocks: Range<Int>) {
        for b in blocks {
            let block = source + b * 34
            let y = out + b * 32
            let d = half(block, 0)
            for j in 0..<32 {
                y[j] = Float(block.load(fromByteOffset: 2 + j, as: Int8.self)) * d
            }
        }
    }

    // MARK: k-quants (QK = QK_K = 256)

    /// The 6-bit scale and min of sub-block `j` (0..<8) from the 12 packed bytes (get_scale_min_k4).
    @inline(__always)
    static func scaleMinK4(_ j: Int, _ scales: UnsafeRawPointer) -> (scale: UInt8, min: UInt8) {
        if j < 4 {
            return (byte(scales, j) & 63, byte(scales, j + 4) & 63)
        }
        let scale = (byte(scales, j + 4) & 0x0F) | ((byte(scales, j - 4) >> 6) << 4)
        let min = (byte(scales, j + 4) >> 4) | ((byte(scales, j) >> 6) << 4)
        return (scale, min)
    }

    /// Q4_K, block {f16 d; f16 dmin; u8 scales[12]; u8 qs[128]} (144 bytes): 8 sub-blocks of 32 with
    /// 6-bit scale sc and min m each; y = (d·sc)·q - (dmin·m), q the 4-bit value.
    static func q4_K(_ source: UnsafeRawPointer, _ out: UnsafeMutablePointer<Float>, _ blocks: Range<Int>) {
        for b in blocks {
            let block = source + b * 144
            var y = out + b * 256
            let d = half(block, 0)
            let dmin = half(block, 2)
            let scales = block + 4
            var q = block + 16
            var sub = 0
            for _ in stride(from: 0, to: 256, by: 64) {
                let (sc1, m1) = scaleMinK4(sub, scales)
                let (sc2, m2) = scaleMinK4(sub + 1, scales)
                let d1 = d * Float(sc1), min1 = dmin * Float(m1)
                let d2 = d * Float(sc2), min2 = dmin * Float(m2)
                for l in 0..<32 { y[l] = d1 * Float(byte(q, l) & 0x0F) - min1 }
                for l in 0..<32 { y[32 + l] = d2 * Float(byte(q, l) >> 4) - min2 }
                y += 64
                q += 32
                sub += 2
            }
        }
    }

    /// Q5_K, block {f16 d; f16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]} (176 bytes): as Q4_K with
    /// a fifth bit per element from qh.
    static func q5_K(_ source: UnsafeRawPointer, _ out: UnsafeMutablePointer<Float>, _ blocks: Range<Int>) {
        for b in blocks {
            let block = source + b * 176
            var y = out + b * 256
            let d = half(block, 0)
            let dmin = half(block, 2)
            let scales = block + 4
            let qh = block + 16
            var ql = block + 48
            var sub = 0
            var u1: UInt8 = 1, u2: UInt8 = 2
            for _ in stride(from: 0, to: 256, by: 64) {
                let (sc1, m1) = scaleMinK4(sub, scales)
                let (sc2, m2) = scaleMinK4(sub + 1, scales)
                let d1 = d * Float(sc1), min1 = dmin * Float(m1)
                let d2 = d * Float(sc2), min2 = dmin * Float(m2)
                for l in 0..<32 {
                    let high: UInt8 = byte(qh, l) & u1 != 0 ? 16 : 0
                    y[l] = d1 * Float((byte(ql, l) & 0x0F) + high) - min1
                }
                for l in 0..<32 {
                    let high: UInt8 = byte(qh, l) & u2 != 0 ? 16 : 0
                    y[32 + l] = d2 * Float((byte(ql, l) >> 4) + high) - min2
                }
                y += 64
                ql += 32
                sub += 2
                u1 <<= 2
                u2 <<= 2
            }
        }
    }

    /// Q6_K, block {u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d} (210 bytes): 16 sub-blocks of 16 with
    /// an 8-bit scale each; y = (d·sc)·(q - 32), q the 6-bit value.
    static func q6_K(_ source: UnsafeRawPointer, _ out: UnsafeMutablePointer<Float>, _ blocks: Range<Int>) {
        for b in blocks {
            let block = source + b * 210
            var y = out + b * 256
            let d = half(block, 208)
            var ql = block
            var qh = block + 128
            var sc = block + 192
            for _ in stride(from: 0, to: 256, by: 128) {
                for l in 0..<32 {
                    let s = l / 16
                    let low0 = byte(ql, l), low32 = byte(ql, l + 32), high = byte(qh, l)
                    let q1 = Int32((low0 & 0x0F) | (((high >> 0) & 3) << 4)) - 32
                    let q2 = Int32((low32 & 0x0F) | (((high >> 2) & 3) << 4)) - 32
                    let q3 = Int32((low0 >> 4) | (((high >> 4) & 3) << 4)) - 32
                    let q4 = Int32((low32 >> 4) | (((high >> 6) & 3) << 4)) - 32
                    y[l] = d * Float(sc.load(fromByteOffset: s, as: Int8.self)) * Float(q1)
                    y[l + 32] = d * Float(sc.load(fromByteOffset: s + 2, as: Int8.self)) * Float(q2)
                    y[l + 64] = d * Float(sc.load(fromByteOffset: s + 4, as: Int8.self)) * Float(q3)
                    y[l + 96] = d * Float(sc.load(fromByteOffset: s + 6, as: Int8.self)) * Float(q4)
                }
                y += 128
                ql += 64
                qh += 32
                sc += 8
            }
        }
    }

    /// Q8_K, block {f32 d; i8 qs[256]; i16 bsums[16]} (292 bytes): y[j] = d·qs[j].
    static func q8_K(_ source: UnsafeRawPointer, _ out: UnsafeMutablePointer<Float>, _ blocks: Range<Int>) {
        for b in blocks {
            let block = source + b * 292
            let y = out + b * 256
            let d = Float(bitPattern: UInt32(littleEndian: block.loadUnaligned(fromByteOffset: 0, as: UInt32.self)))
            for j in 0..<256 {
                y[j] = d * Float(block.load(fromByteOffset: 4 + j, as: Int8.self))
            }
        }
    }
}
