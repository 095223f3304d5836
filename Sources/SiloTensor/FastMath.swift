// Vectorised transcendental functions for the softmax, cross-entropy and activation kernels.
//
// Calling libm per element costs ~10 ns; the cross-entropy of one GPT-2 step needs two exps of
// 51M logits. These run 16 lanes at a time on plain SIMD arithmetic (the compiler lowers
// SIMD16<Float> to whatever vector width the target has) with the Cephes single-precision
// polynomials, and stay within 1–3 ulp of the correctly rounded result over the whole Float range
// (measured against Foundation in ActivationTests.testFast…AgainstFoundation).

/// Vectorised `exp`, `tanh`, `erf`, `erfc` and `sigmoid` on 16 Float lanes, plus the raw load/store helpers the
/// kernels use.
///
/// Every function is branch-free: lanes never influence each other, so a kernel gets bit-identical
/// results whatever way it splits its work (including the padded tail of a row). NaN inputs give NaN.
public enum FastMath {
    /// The vector type of the kernels: 16 Float lanes.
    public typealias Vector = SIMD16<Float>
    typealias Bits = SIMD16<Int32>

    // MARK: exp

    /// e^x per lane, within 1 ulp of the correctly rounded value wherever that is a normal number.
    ///
    /// Range reduction x = n·ln2 + r with |r| ≤ ln2/2 (Cody–Waite: ln2 split in two so n·ln2_hi is
    /// exact), e^r by the Cephes `expf` polynomial, then scaling by 2ⁿ built in the exponent bits, as
    /// 2^⌊n/2⌋ · 2^(n−⌊n/2⌋) so that both factors stay normal up to the overflow threshold.
    /// x > 88.72 gives +∞. Results below the smallest normal Float (x < −87.336) are flushed to 0, as
    /// under FTZ: subnormal arithmetic costs a ~100-cycle microcode assist per vector on x86, and
    /// softmax over masked (−∞) positions would hit it on every element.
    @inline(__always)
    public static func exp(_ x: Vector) -> Vector {
        // Lanes whose result is below the smallest normal Float compute e^0 instead and are set to 0
        // at the end (so no intermediate is subnormal); above 89 the result is +inf anyway. NaN fails
        // every comparison and stays NaN.
        let input = x
        var x = select(x, lessThan: underflowThreshold, Vector(repeating: 0), otherwise: x)
        x = minimum(x, 89)
        // n = round(x · log2(e)): adding 1.5·2²³ leaves the integer in the low mantissa bits.
        let shifter: Float = 12_582_912
        let shifted = x * 1.442_695_040_888_963_4 + shifter
        let n = shifted - shifter
        // r = x − n·ln2, with ln2 = 0.693359375 (exact in 9 bits) − 2.12194440e-4.
        var r = x - n * 0.693_359_375
        r = r + n * 2.121_944_40e-4
        // e^r = 1 + r + r²·P(r) on |r| ≤ 0.35 (Cephes expf).
        var p = Vector(repeating: 1.987_569_150_0e-4)
        p = p * r + 1.398_199_950_7e-3
        p = p * r + 8.333_451_907_3e-3
        p = p * r + 4.166_579_589_4e-2
        p = p * r + 1.666_666_545_9e-1
        p = p * r + 5.000_000_120_1e-1
        p = p * (r * r) + r + 1
        // 2ⁿ in two normal halves (n ∈ [-126, 129] after the clamp).
        let integer = unsafeBitCast(shifted, to: Bits.self) &- Bits(repeating: 0x4B40_0000)
        let half = integer &>> 1
        let scale1 = unsafeBitCast((half &+ 127) &<< 23, to: Vector.self)
        let scale2 = unsafeBitCast((integer &- half &+ 127) &<< 23, to: Vector.self)
        return select(input, lessThan: underflowThreshold, Vector(repeating: 0), otherwise: p * scale1 * scale2)
    }

    /// ln(smallest normal Float): below it ``exp(_:)-(Vector)`` returns 0.
    static let underflowThreshold: Float = -87.336_544

    /// e^x on 8 lanes (the 16-lane kernel on a padded vector).
    @inline(__always)
    public static func exp(_ x: SIMD8<Float>) -> SIMD8<Float> {
        exp(Vector(lowHalf: x, highHalf: x)).lowHalf
    }

    // MARK: sigmoid, tanh

    /// 1 / (1 + e^−x) per lane (within ~3 ulp; exactly 0 or 1 where the exponential under- or overflows).
    @inline(__always)
    public static func sigmoid(_ x: Vector) -> Vector {
        1 / (1 + exp(-x))
    }

    /// tanh(x) per lane, within 2 ulp.
    ///
    /// |x| < 0.625: the Cephes `tanhf` odd polynomial x + x³·P(x²) (no cancellation near 0);
    /// otherwise sign(x)·(1 − 2 / (e^{2|x|} + 1)), which is ±1 once e^{2|x|} overflows.
    @inline(__always)
    public static func tanh(_ x: Vector) -> Vector {
        let signBits = unsafeBitCast(x, to: Bits.self) & Bits(repeating: Int32(bitPattern: 0x8000_0000))
        let magnitude = unsafeBitCast(unsafeBitCast(x, to: Bits.self) & Bits(repeating: 0x7FFF_FFFF), to: Vector.self)
        let z = x * x
        var p = Vector(repeating: -5.704_988_727_45e-3)
        p = p * z + 2.063_908_879_54e-2
        p = p * z - 5.373_971_555_31e-2
        p = p * z + 1.333_144_220_36e-1
        p = p * z - 3.333_328_194_22e-1
        let small = p * z * x + x
        let large = 1 - 2 / (exp(magnitude + magnitude) + 1)
        let signedLarge = unsafeBitCast(unsafeBitCast(large, to: Bits.self) | signBits, to: Vector.self)
        return select(magnitude, lessThan: 0.625, small, otherwise: signedLarge)
    }

    // MARK: erf

    /// erf(x) per lane, within 3 ulp.
    ///
    /// |x| < 1: x·T(x²); otherwise sign(x)·(1 − erfc|x|) with erfc(a) = e^{−a²}·(1/a)·P(1/a²)
    /// (P for 1 ≤ a < 2, R beyond) — the Cephes `erff`/`erfcf` polynomials.
    @inline(__always)
    public static func erf(_ x: Vector) -> Vector {
        let (small, complement, magnitude) = erfPieces(x)
        let signBits = unsafeBitCast(x, to: Bits.self) & Bits(repeating: Int32(bitPattern: 0x8000_0000))
        let signedLarge = unsafeBitCast(unsafeBitCast(1 - complement, to: Bits.self) | signBits, to: Vector.self)
        return select(magnitude, lessThan: 1, small, otherwise: signedLarge)
    }

    /// erfc(x) = 1 − erf(x) per lane, without the cancellation of 1 − erf for large x.
    ///
    /// |x| < 1: 1 − x·T(x²); x ≥ 1: the Cephes e^{−x²}·(1/x)·P(1/x²) directly, so the tail keeps its
    /// relative accuracy down to the underflow of e^{−x²} (x ≈ 9.3); x ≤ −1: 2 − erfc(|x|).
    /// Measured: within 3.1 ulp for x ≤ 0.5, 5 ulp for x ≥ 1, 11 ulp on (0.5, 1) where 1 − erf(x) cancels.
    @inline(__always)
    public static func erfc(_ x: Vector) -> Vector {
        let (small, complement, magnitude) = erfPieces(x)
        let large = select(x, lessThan: 0, 2 - complement, otherwise: complement)
        return select(magnitude, lessThan: 1, 1 - small, otherwise: large)
    }

    /// The pieces of erf/erfc: x·T(x²) (valid for |x| < 1), erfc(|x|) (valid for |x| ≥ 1), |x|.
    @inline(__always)
    static func erfPieces(_ x: Vector) -> (small: Vector, complement: Vector, magnitude: Vector) {
        let a = unsafeBitCast(unsafeBitCast(x, to: Bits.self) & Bits(repeating: 0x7FFF_FFFF), to: Vector.self)
        let z = x * x
        var t = Vector(repeating: 7.853_861_353_153_693e-5)
        t = t * z - 8.010_193_625_184_903e-4
        t = t * z + 5.188_327_685_732_524e-3
        t = t * z - 2.685_381_193_529_856e-2
        t = t * z + 1.128_358_514_861_418e-1
        t = t * z - 3.761_262_582_423_300e-1
        t = t * z + 1.128_379_165_726_710
        let small = x * t

        let q = 1 / a
        let y = q * q
        var p = Vector(repeating: 2.326_819_970_068_386e-2)
        p = p * y - 1.387_039_388_740_657e-1
        p = p * y + 3.687_424_674_597_105e-1
        p = p * y - 5.824_733_027_278_666e-1
        p = p * y + 6.210_004_621_745_983e-1
        p = p * y - 4.944_515_323_274_145e-1
        p = p * y + 3.404_879_937_665_872e-1
        p = p * y - 2.741_127_028_184_656e-1
        p = p * y + 5.638_259_427_386_472e-1
        var r = Vector(repeating: -1.047_766_399_936_249e+1)
        r = r * y + 1.297_719_955_372_516e+1
        r = r * y - 7.495_518_717_768_503
        r = r * y + 2.921_019_019_210_786
        r = r * y - 1.015_265_279_202_700
        r = r * y + 4.218_463_358_204_948e-1
        r = r * y - 2.820_767_439_740_514e-1
        r = r * y + 5.641_895_067_754_075e-1
        let polynomial = select(a, lessThan: 2, p, otherwise: r)
        // e^{−x²} with the rounding error of x² put back (Dekker: a = high + low with 12-bit halves,
        // so the error of z = a·a is exact): e^{−(z + δ)} ≈ e^{−z}·(1 − δ). Without it the tail loses
        // x²·6e-8 of relative accuracy (10 ulp at x = 3).
        let high = unsafeBitCast(unsafeBitCast(a, to: Bits.self) & Bits(repeating: Int32(bitPattern: 0xFFFF_F000)),
                                 to: Vector.self)
        let low = a - high
        let squareError = ((high * high - z) + 2 * high * low) + low * low
        // Past x² = 104 the exponential is 0 anyway (and ∞ − ∞ would make the correction NaN).
        let correction = select(z, lessThan: 104, 1 - squareError, otherwise: Vector(repeating: 1))
        return (small, exp(-z) * correction * q * polynomial, a)
    }

    // MARK: Lane-wise selection
    //
    // Masks come from arithmetic on the bit patterns, not from SIMD comparisons: a SIMDMask cast to
    // integer lanes (or `replacing(with:where:)`) comes out as dozens of pack/unpack instructions,
    // and lane loops, which LLVM does turn into compare + blend, count as many SIL blocks — enough
    // to push a kernel over the SIL inliner's caller limit (400 blocks), after which even
    // `@inline(__always)` functions such as `exp` are called instead of inlined.

    /// All-ones lanes where `x` is not NaN: |bits| − (∞ bits + 1) is negative exactly for non-NaN.
    @inline(__always)
    static func notNaNMask(_ x: Vector) -> Bits {
        ((unsafeBitCast(x, to: Bits.self) & Bits(repeating: 0x7FFF_FFFF)) &- Bits(repeating: 0x7F80_0001)) &>> 31
    }

    /// All-ones lanes where `a < b` (the sign of a − b), zero where a ≥ b or `a` is NaN. `b` must not
    /// be NaN. (a − b is never subnormal for the thresholds used here.)
    @inline(__always)
    static func lessThanMask(_ a: Vector, _ b: Vector) -> Bits {
        (unsafeBitCast(a - b, to: Bits.self) &>> 31) & notNaNMask(a)
    }

    /// Lanes of `then` where `mask` is set, of `otherwise` elsewhere.
    @inline(__always)
    static func blend(_ mask: Bits, _ then: Vector, _ otherwise: Vector) -> Vector {
        let chosen = (unsafeBitCast(then, to: Bits.self) & mask) | (unsafeBitCast(otherwise, to: Bits.self) & ~mask)
        return unsafeBitCast(chosen, to: Vector.self)
    }

    /// Lanes of `then` where `x < threshold`, lanes of `otherwise` elsewhere (NaN lanes of `x` take `otherwise`).
    @inline(__always)
    static func select(_ x: Vector, lessThan threshold: Float, _ then: Vector, otherwise: Vector) -> Vector {
        blend(lessThanMask(x, Vector(repeating: threshold)), then, otherwise)
    }

    /// The lane-wise smaller of `x` and `bound`; NaN stays NaN.
    @inline(__always)
    static func minimum(_ x: Vector, _ bound: Float) -> Vector {
        let limit = Vector(repeating: bound)
        // bound < x: the sign of bound − x, cleared where x is NaN.
        let mask = (unsafeBitCast(limit - x, to: Bits.self) &>> 31) & notNaNMask(x)
        return blend(mask, limit, x)
    }

    /// The lane-wise larger of `a` and `b`; where `b` is NaN, `a`. `a` must not be NaN (a running
    /// maximum that starts at −∞).
    @inline(__always)
    static func maximum(_ a: Vector, _ b: Vector) -> Vector {
        let mask = (unsafeBitCast(a - b, to: Bits.self) &>> 31) & notNaNMask(b)
        return blend(mask, b, a)
    }

    // MARK: Memory helpers for kernels

    /// 16 floats from `pointer` (no alignment needed).
    @inline(__always)
    static func load(_ pointer: UnsafePointer<Float>) -> Vector {
        UnsafeRawPointer(pointer).loadUnaligned(as: Vector.self)
    }

    /// 16 floats from `pointer` (no alignment needed).
    @inline(__always)
    static func load(_ pointer: UnsafeMutablePointer<Float>) -> Vector {
        UnsafeRawPointer(pointer).loadUnaligned(as: Vector.self)
    }

    /// Stores 16 floats at `pointer` (no alignment needed).
    @inline(__always)
    static func store(_ value: Vector, _ pointer: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(pointer).storeBytes(of: value, as: Vector.self)
    }

    /// The first `count` (< 16) floats at `pointer`, the other lanes set to `padding`.
    @inline(__always)
    static func loadPartial(_ pointer: UnsafePointer<Float>, count: Int, padding: Float = 0) -> Vector {
        var value = Vector(repeating: padding)
        for lane in 0..<count { value[lane] = pointer[lane] }
        return value
    }

    /// Stores the first `count` (< 16) lanes of `value` at `pointer`.
    @inline(__always)
    static func storePartial(_ value: Vector, _ pointer: UnsafeMutablePointer<Float>, count: Int) {
        for lane in 0..<count { pointer[lane] = value[lane] }
    }

    /// out[i] = f(inp[i]) for `count` elements, 16 at a time (the tail through a padded vector, so
    /// every element goes through the same arithmetic).
    @inline(__always)
    static func map(_ inp: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, count: Int,
                    _ f: (Vector) -> Vector) {
        var i = 0
        while i + 16 <= count {
            store(f(load(inp + i)), out + i)
            i += 16
        }
        if i < count {
            storePartial(f(loadPartial(inp + i, count: count - i)), out + i, count: count - i)
        }
    }

    /// out[i] = f(a[i], b[i]) for `count` elements, 16 at a time.
    @inline(__always)
    static func map(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>,
                    count: Int, _ f: (Vector, Vector) -> Vector) {
        var i = 0
        while i + 16 <= count {
            store(f(load(a + i), load(b + i)), out + i)
            i += 16
        }
        if i < count {
            let rest = count - i
            storePartial(f(loadPartial(a + i, count: rest), loadPartial(b + i, count: rest)), out + i, count: rest)
        }
    }
}
