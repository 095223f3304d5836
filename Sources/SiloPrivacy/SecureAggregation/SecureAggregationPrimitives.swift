// Secure aggregation primitives (Bonawitz et al. 2017): fixed-point ring encoding, the ChaCha20 mask PRG,
// X25519 + HKDF-SHA256 seed agreement and Shamir t-of-n sharing over GF(2^61 - 1).
import Crypto
import _CryptoExtras
import Foundation

/// An error of the secure aggregation protocol; the message says what went wrong and where.
public struct SecureAggregationError: Error, Sendable, CustomStringConvertible, Equatable {
    /// The kind of failure.
    public enum Code: String, Sendable {
        case invalidConfiguration, wrongRound, unknownClient, duplicateMessage, tooFewSurvivors
        case tamperedShare, replayedMessage, conflictingReveal, malformedMessage
    }
    /// The kind of failure.
    public let code: Code
    /// A human-readable explanation.
    public let message: String
    /// Creates an error with a code and an explanation.
    public init(_ code: Code, _ message: String) { self.code = code; self.message = message }
    public var description: String { "secure aggregation (\(code.rawValue)): \(message)" }
}

/// Fixed-point encoding of Float vectors into the ring Z_{2^32} (UInt32 wrapping arithmetic).
///
/// A value x is clipped to [-clippingRange, clippingRange] and encoded as round(x * scale) in two's complement.
/// The sum of up to `maximumClients` encoded vectors stays in (-2^31, 2^31) as long as
/// maximumClients * round(clippingRange * scale) <= 2^31 - 1, which `init` checks; decoding reads the summed
/// word as an Int32 and divides by `scale`. The quantisation error of one value is at most 0.5 / scale,
/// of a sum of n values n * 0.5 / scale.
public struct SecureAggregationEncoding: Sendable, Equatable {
    /// Multiplier applied before rounding (units per 1.0).
    public let scale: Float
    /// Inputs are clipped to [-clippingRange, clippingRange].
    public let clippingRange: Float
    /// The largest number of vectors that may be summed without wrapping.
    public let maximumClients: Int

    /// Creates an encoding, refusing one whose sum of `maximumClients` extreme values would wrap.
    /// - Throws: `SecureAggregationError.invalidConfiguration` naming the offending fields.
    public init(scale: Float, clippingRange: Float, maximumClients: Int) throws {
        guard scale > 0, scale.isFinite, clippingRange > 0, clippingRange.isFinite, maximumClients >= 1 else {
            throw SecureAggregationError(.invalidConfiguration,
                "scale (\(scale)) and clippingRange (\(clippingRange)) must be positive and finite, maximumClients (\(maximumClients)) at least 1")
        }
        let extreme = (Double(clippingRange) * Double(scale)).rounded()
        let worst = Double(maximumClients) * extreme
        guard worst <= Double(Int32.max) else {
            throw SecureAggregationError(.invalidConfiguration,
                "maximumClients (\(maximumClients)) x clippingRange (\(clippingRange)) x scale (\(scale)) = \(worst) exceeds 2^31 - 1: the sum would wrap in Z_2^32; lower the scale or the clipping range")
        }
        self.scale = scale; self.clippingRange = clippingRange; self.maximumClients = maximumClients
    }

    /// Encodes values (any length) into ring words.
    public func encode(_ values: [Float]) -> [UInt32] {
        values.map { value in
            let clipped = Swift.min(Swift.max(value.isNaN ? 0 : value, -clippingRange), clippingRange)
            let q = Int64((Double(clipped) * Double(scale)).rounded())
            return UInt32(truncatingIfNeeded: q)
        }
    }

    /// The signed integers of summed words (two's complement).
    public func decodeIntegers(_ words: [UInt32]) -> [Int32] { words.map { Int32(bitPattern: $0) } }

    /// Decodes summed words back to floats: Int32(bitPattern: word) / scale.
    public func decode(_ words: [UInt32]) -> [Float] { words.map { Float(Double(Int32(bitPattern: $0)) / Double(scale)) } }
}

/// The mask generator: seeds from X25519 + HKDF-SHA256, words from the ChaCha20 keystream.
public enum SecureAggregationPseudorandom {
    /// `count` UInt32 words (little-endian) of the ChaCha20 keystream under a 32-byte seed, nonce 0, counter 0.
    public static func words(seed: SymmetricKey, count: Int) -> [UInt32] {
        precondition(seed.bitCount == 256, "mask seeds are 32 bytes")
        if count == 0 { return [] }
        let zeros = Data(count: count * 4)
        // Nonce of 12 zero bytes: each seed is used for exactly one stream.
        guard let nonce = try? Insecure.ChaCha20CTR.Nonce(data: Data(count: 12)),
              let stream = try? Insecure.ChaCha20CTR.encrypt(zeros, using: seed, nonce: nonce) else {
            preconditionFailure("ChaCha20 with a 32-byte key and 12-byte nonce cannot fail")
        }
        var out = [UInt32](repeating: 0, count: count)
        stream.withUnsafeBytes { raw in
            for i in 0..<count { out[i] = UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: i * 4, as: UInt32.self)) }
        }
        return out
    }

    /// The info string of a pairwise mask seed: "silo-secagg-mask" | round (8 bytes big-endian) | min id | max id (4 bytes big-endian each).
    public static func maskInfo(round: UInt64, _ a: UInt32, _ b: UInt32) -> Data {
        var info = Data("silo-secagg-mask".utf8)
        appendBigEndian(&info, round)
        appendBigEndian(&info, Swift.min(a, b)); appendBigEndian(&info, Swift.max(a, b))
        return info
    }

    /// HKDF-SHA256 (empty salt) of an X25519 shared secret into a 32-byte seed.
    public static func seed(privateKey: Curve25519.KeyAgreement.PrivateKey, peerPublicKey: Curve25519.KeyAgreement.PublicKey, info: Data) throws -> SymmetricKey {
        let secret = try privateKey.sharedSecretFromKeyAgreement(with: peerPublicKey)
        return secret.hkdfDerivedSymmetricKey(using: SHA256.self, salt: Data(), sharedInfo: info, outputByteCount: 32)
    }

    static func appendBigEndian<T: FixedWidthInteger>(_ data: inout Data, _ value: T) {
        withUnsafeBytes(of: value.bigEndian) { data.append(contentsOf: $0) }
    }
}

/// Shamir t-of-n secret sharing over the prime field GF(p), p = 2^61 - 1 (a Mersenne prime).
///
/// A 32-byte secret is split into five field elements of 7 bytes each (little-endian, last one 4 bytes);
/// each element gets its own random polynomial of degree t - 1; share i is the polynomial values at x = i.
public enum SecureAggregationShamir {
    /// The field prime 2^61 - 1.
    public static let prime: UInt64 = (1 << 61) - 1

    /// One share: the evaluation point x (1...) and one value per secret element.
    public struct Share: Sendable, Equatable, Codable {
        public let x: UInt64
        public let values: [UInt64]
        public init(x: UInt64, values: [UInt64]) { self.x = x; self.values = values }
    }

    /// a * b mod p.
    public static func multiply(_ a: UInt64, _ b: UInt64) -> UInt64 {
        let (high, low) = a.multipliedFullWidth(by: b)
        var r = (high << 3 | low >> 61) + (low & prime)
        while r >= prime { r -= prime }
        return r
    }
    static func add(_ a: UInt64, _ b: UInt64) -> UInt64 { let r = a + b; return r >= prime ? r - prime : r }
    static func subtract(_ a: UInt64, _ b: UInt64) -> UInt64 { a >= b ? a - b : a + prime - b }
    static func inverse(_ a: UInt64) -> UInt64 {
        var result: UInt64 = 1, base = a % prime, e = prime - 2
        while e > 0 { if e & 1 == 1 { result = multiply(result, base) }; base = multiply(base, base); e >>= 1 }
        return result
    }

    /// Splits field elements with explicit coefficients: coefficients[k] are the t - 1 non-constant coefficients of element k.
    /// - Returns: `shareCount` shares at x = 1...shareCount.
    public static func split(elements: [UInt64], threshold: Int, shareCount: Int, coefficients: [[UInt64]]) -> [Share] {
        precondition(threshold >= 1 && threshold <= shareCount, "need 1 <= threshold <= shareCount")
        precondition(coefficients.count == elements.count && coefficients.allSatisfy { $0.count == threshold - 1 })
        precondition(elements.allSatisfy { $0 < prime } && coefficients.allSatisfy { $0.allSatisfy { $0 < prime } })
        return (1...shareCount).map { i in
            let x = UInt64(i)
            let values = elements.indices.map { k -> UInt64 in
                var y: UInt64 = 0  // Horner from the highest coefficient.
                for c in coefficients[k].reversed() { y = add(multiply(y, x), c) }
                return add(multiply(y, x), elements[k])
            }
            return Share(x: x, values: values)
        }
    }

    /// Splits field elements with uniformly random coefficients.
    public static func split(elements: [UInt64], threshold: Int, shareCount: Int) -> [Share] {
        var generator = SystemRandomNumberGenerator()
        let coefficients = elements.map { _ in (0..<(threshold - 1)).map { _ in UInt64.random(in: 0..<prime, using: &generator) } }
        return split(elements: elements, threshold: threshold, shareCount: shareCount, coefficients: coefficients)
    }

    /// Lagrange interpolation at x = 0 from at least threshold shares with distinct x.
    public static func reconstruct(_ shares: [Share]) -> [UInt64] {
        precondition(!shares.isEmpty && Set(shares.map(\.x)).count == shares.count, "shares need distinct x")
        let width = shares[0].values.count
        var out = [UInt64](repeating: 0, count: width)
        for (i, share) in shares.enumerated() {
            var numerator: UInt64 = 1, denominator: UInt64 = 1
            for (j, other) in shares.enumerated() where j != i {
                numerator = multiply(numerator, other.x)
                denominator = multiply(denominator, subtract(other.x, share.x))
            }
            let basis = multiply(numerator, inverse(denominator))
            for k in 0..<width { out[k] = add(out[k], multiply(share.values[k], basis)) }
        }
        return out
    }

    /// 32 bytes -> five field elements (7-byte little-endian chunks).
    public static func elements(of bytes: [UInt8]) -> [UInt64] {
        stride(from: 0, to: bytes.count, by: 7).map { start in
            var v: UInt64 = 0
            for (k, b) in bytes[start..<Swift.min(start + 7, bytes.count)].enumerated() { v |= UInt64(b) << (8 * UInt64(k)) }
            return v
        }
    }

    /// Five field elements -> `byteCount` bytes (inverse of `elements(of:)`); nil if an element does not fit.
    public static func bytes(of elements: [UInt64], byteCount: Int) -> [UInt8]? {
        var out: [UInt8] = []
        for v in elements {
            let take = Swift.min(7, byteCount - out.count)
            guard take > 0, v >> (8 * UInt64(take)) == 0 else { return nil }
            for k in 0..<take { out.append(UInt8(truncatingIfNeeded: v >> (8 * UInt64(k)))) }
        }
        return out.count == byteCount ? out : nil
    }
}
