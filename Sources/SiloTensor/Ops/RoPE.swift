#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// B batch, T time, H heads, D head dimension (even), D/2 rotation pairs.
//
// Rotary position embedding rotates each pair of channels of a head by the angle θᵢ·position, with
// θᵢ = theta^(−2i/D). The two conventions pair the channels differently:
// - rotate-half (Hugging Face Llama, GPT-NeoX): pair i is (x[i], x[i + D/2]);
// - interleaved (GPT-J, llama.cpp "normal" RoPE): pair i is (x[2i], x[2i + 1]).
// Both rotate pair i by the same angle, so they share the tables cos/sin (T, D/2).

/// How rotary embedding pairs the channels of a head.
public enum RoPEStyle: Sendable, Hashable {
    /// Pair i is (x[i], x[i + D/2]) — Hugging Face Llama and GPT-NeoX.
    case rotateHalf
    /// Pair i is (x[2i], x[2i + 1]) — GPT-J and llama.cpp.
    case interleaved
}

/// Rotary position embedding kernels on raw pointers.
public enum RoPEKernel {
    /// out (B,T,H,D) = rotate(inp (B,T,H,D), cos (T,D/2), sin (T,D/2)).
    ///
    /// y₁ = x₁·cos − x₂·sin, y₂ = x₂·cos + x₁·sin for each pair (x₁, x₂) of `style`. `inp` may be strided:
    /// element (b, t, h, d) is at `inp[b·batchStride + t·timeStride + h·headStride + d]`; `out` is dense.
    public static func forward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>,
                               batchStride: Int, timeStride: Int, headStride: Int,
                               cos: UnsafePointer<Float>, sin: UnsafePointer<Float>,
                               B: Int, T: Int, H: Int, D: Int, style: RoPEStyle) {
        rotate(out: out, inp: inp, batchStride: batchStride, timeStride: timeStride, headStride: headStride,
               cos: cos, sin: sin, sinSign: 1, B: B, T: T, H: H, D: D, style: style)
    }

    /// dinp (B,T,H,D) = rotateᵀ(dout (B,T,H,D)): the inverse rotation (sin negated), both dense.
    public static func backward(dinp: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>,
                                cos: UnsafePointer<Float>, sin: UnsafePointer<Float>,
                                B: Int, T: Int, H: Int, D: Int, style: RoPEStyle) {
        rotate(out: dinp, inp: dout, batchStride: T * H * D, timeStride: H * D, headStride: D,
               cos: cos, sin: sin, sinSign: -1, B: B, T: T, H: H, D: D, style: style)
    }

    @inline(__always)
    private static func rotate(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>,
                               batchStride: Int, timeStride: Int, headStride: Int,
                               cos: UnsafePointer<Float>, sin: UnsafePointer<Float>, sinSign: Float,
                               B: Int, T: Int, H: Int, D: Int, style: RoPEStyle) {
        let half = D / 2
        Parallel.forEachChunk(B * T, costPerItem: H * D * 2) { rows in
            for row in rows {
                let b = row / T, t = row % T
                let c = cos + t * half, s = sin + t * half
                for h in 0..<H {
                    let x = inp + b * batchStride + t * timeStride + h * headStride
                    let y = out + (row * H + h) * D
                    switch style {
                    case .rotateHalf: rotateHalfPairs(y, x, c, s, sinSign, half)
                    case .interleaved: rotateInterleavedPairs(y, x, c, s, sinSign, half)
                    }
                }
            }
        }
    }

    /// Pairs (x[i], x[i + half]).
    @inline(__always)
    private static func rotateHalfPairs(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>,
                                        _ c: UnsafePointer<Float>, _ s: UnsafePointer<Float>,
                                        _ sinSign: Float, _ half: Int) {
        var i = 0
        while i + 8 <= half {
            let x1 = load8(x + i), x2 = load8(x + half + i)
            let cv = load8(c + i)
            let sv: SIMD8<Float> = load8(s + i) * sinSign
            let first: SIMD8<Float> = x1 * cv - x2 * sv
            let second: SIMD8<Float> = x2 * cv + x1 * sv
            store8(first, y + i)
            store8(second, y + half + i)
            i += 8
        }
        while i < half {
            let x1 = x[i], x2 = x[half + i], sv = s[i] * sinSign
            y[i] = x1 * c[i] - x2 * sv
            y[half + i] = x2 * c[i] + x1 * sv
            i += 1
        }
    }

    /// Pairs (x[2i], x[2i + 1]).
    @inline(__always)
    private static func rotateInterleavedPairs(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>,
                                               _ c: UnsafePointer<Float>, _ s: UnsafePointer<Float>,
                                               _ sinSign: Float, _ half: Int) {
        var i = 0
        while i + 8 <= half {
            let v = UnsafeRawPointer(x + 2 * i).loadUnaligned(as: SIMD16<Float>.self)
            let x1 = v.evenHalf, x2 = v.oddHalf
            let cv = load8(c + i)
            let sv: SIMD8<Float> = load8(s + i) * sinSign
            let first: SIMD8<Float> = x1 * cv - x2 * sv
            let second: SIMD8<Float> = x2 * cv + x1 * sv
            var rotated = SIMD16<Float>()
            rotated.evenHalf = first
            rotated.oddHalf = second
            UnsafeMutableRawPointer(y + 2 * i).storeBytes(of: rotated, as: SIMD16<Float>.self)
            i += 8
        }
        while i < half {
            let x1 = x[2 * i], x2 = x[2 * i + 1], sv = s[i] * sinSign
            y[2 * i] = x1 * c[i] - x2 * sv
            y[2 * i + 1] = x2 * c[i] + x1 * sv
            i += 1
        }
    }

    @inline(__always)
    private static func load8(_ pointer: UnsafePointer<Float>) -> SIMD8<Float> {
        UnsafeRawPointer(pointer).loadUnaligned(as: SIMD8<Float>.self)
    }

    @inline(__always)
    private static func store8(_ value: SIMD8<Float>, _ pointer: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(pointer).storeBytes(of: value, as: SIMD8<Float>.self)
    }
}

extension Tensor {
    /// The rotation frequencies θᵢ = theta^(−2i/D) for i in 0..<D/2, computed in Float32 as Hugging Face
    /// does (`1 / theta ** (arange(0, D, 2) / D)`).
    /// - Parameters:
    ///   - dimension: the head dimension D (even, positive).
    ///   - theta: the RoPE base (10000 for Llama 2, 500000 for Llama 3, 100000 for SmolLM2).
    public static func ropeInverseFrequencies(dimension: Int, theta: Float) -> [Float] {
        precondition(dimension > 0 && dimension % 2 == 0,
                     "ropeInverseFrequencies: dimension \(dimension) must be even and positive")
        return (0..<dimension / 2).map { i in
            1 / powf(theta, Float(2 * i) / Float(dimension))
        }
    }

    /// The cos/sin tables (T, D/2) of `positions` (T) for ``applyingRoPE(cos:sin:style:)``.
    ///
    /// The angle positionₜ·θᵢ is formed in Float32 (as Hugging Face does); its cosine and sine are
    /// correctly rounded from Float64. The tables carry no gradient.
    public static func ropeTables(positions: [Int], inverseFrequencies: [Float]) -> (cos: Tensor, sin: Tensor) {
        let half = inverseFrequencies.count
        var cosTable = Tensor.empty([positions.count, half])
        var sinTable = Tensor.empty([positions.count, half])
        let c = cosTable.pointer, s = sinTable.pointer
        for (t, position) in positions.enumerated() {
            for i in 0..<half {
                let angle = Double(Float(position) * inverseFrequencies[i])
                c[t * half + i] = Float(libmCosine(angle))
                s[t * half + i] = Float(libmSine(angle))
            }
        }
        cosTable.node = nil
        sinTable.node = nil
        return (cosTable, sinTable)
    }

    /// Rotary position embedding of `self` (B, T, H, D).
    ///
    /// `self` may be a strided view (e.g. the query slice of a fused projection) as long as its last
    /// stride is 1; the result is dense (B, T, H, D). `cos`/`sin` are constants of shape (T, D/2) from
    /// ``ropeTables(positions:inverseFrequencies:)``: no gradient flows to them.
    /// - Throws: ``TensorError`` naming `applyingRoPE` and the shapes if `self` is not rank 4, D is odd,
    ///   or the tables are not (T, D/2).
    public func applyingRoPE(cos: Tensor, sin: Tensor, style: RoPEStyle) throws -> Tensor {
        let op = "applyingRoPE"
        guard rank == 4 else {
            throw TensorError.shapeMismatch(op, shape, cos.shape, detail: "input must be (B, T, H, D)")
        }
        let B = shape[0], T = shape[1], H = shape[2], D = shape[3]
        guard D % 2 == 0 else {
            throw TensorError(.invalidArgument, "\(op): head dimension D = \(D) of input \(shape) must be even")
        }
        guard cos.shape == [T, D / 2], sin.shape == [T, D / 2] else {
            throw TensorError.shapeMismatch(op, shape, cos.shape, sin.shape,
                                            detail: "cos and sin must be (T, D/2) = [\(T), \(D / 2)]")
        }
        let source = (strides[3] == 1 || D <= 1) ? self : contiguousCopy()
        let cosDense = cos.isContiguous ? cos.detached() : cos.contiguousCopy()
        let sinDense = sin.isContiguous ? sin.detached() : sin.contiguousCopy()
        let out = Tensor.empty(shape)
        RoPEKernel.forward(out: out.pointer, inp: source.pointer,
                           batchStride: source.strides[0], timeStride: source.strides[1], headStride: source.strides[2],
                           cos: cosDense.pointer, sin: sinDense.pointer, B: B, T: T, H: H, D: D, style: style)
        return out.recorded(op, inputs: [self]) { gradOut, needs in
            guard needs[0] else { return [nil] }
            let dinp = Tensor.empty([B, T, H, D])
            RoPEKernel.backward(dinp: dinp.pointer, dout: gradOut.pointer, cos: cosDense.pointer, sin: sinDense.pointer,
                                B: B, T: T, H: H, D: D, style: style)
            return [dinp]
        }
    }
}

@inline(__always) private func libmCosine(_ x: Double) -> Double { cos(x) }
@inline(__always) private func libmSine(_ x: Double) -> Double { sin(x) }
