#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A seeded, splittable source of randomness.
///
/// A key is a 64-bit value; ``split(_:)`` derives independent child keys (one per client, per layer,
/// per step), so that the stream one component draws never depends on how many numbers another drew.
/// Values are counter-based (SplitMix64 of key + counter): element `i` of a random tensor depends only
/// on the key and `i`, so parallel kernels give bit-identical results whatever the thread count.
public struct RandomKey: Hashable, Sendable, Codable, CustomStringConvertible {
    public let seed: UInt64

    public init(seed: UInt64) {
        self.seed = RandomKey.mix(seed &+ 0x9E37_79B9_7F4A_7C15)
    }

    init(raw: UInt64) { self.seed = raw }

    /// A child key, independent of this one and of every other index.
    public func split(_ index: UInt64) -> RandomKey {
        RandomKey(raw: RandomKey.mix(seed ^ RandomKey.mix(index &+ 0xD1B5_4A32_D192_ED03)))
    }

    /// `count` child keys.
    public func split(count: Int) -> [RandomKey] { (0..<count).map { split(UInt64($0)) } }

    /// A child key for a name ("layer.3.dropout"), stable across runs.
    public func split(_ name: String) -> RandomKey {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325  // FNV-1a
        for byte in name.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01B3
        }
        return split(hash)
    }

    /// The `counter`-th 64-bit value of this key's stream.
    @inline(__always)
    public func bits(_ counter: UInt64) -> UInt64 {
        RandomKey.mix(seed &+ (counter &+ 1) &* 0x9E37_79B9_7F4A_7C15)
    }

    /// Uniform in [0, 1) with 24 random bits.
    @inline(__always)
    public func uniform(_ counter: UInt64) -> Float {
        Float(bits(counter) >> 40) * 0x1p-24
    }

    /// A standard normal value (Box–Muller on two uniforms of this counter).
    @inline(__always)
    public func normal(_ counter: UInt64) -> Float {
        let value = bits(counter)
        let u1 = (Double(value >> 32) + 0.5) * 0x1p-32  // (0, 1)
        let u2 = Double(value & 0xFFFF_FFFF) * 0x1p-32
        return Float((-2 * Glibc.log(u1)).squareRoot() * Glibc.cos(2 * Double.pi * u2))
    }

    /// SplitMix64's finaliser.
    @inline(__always)
    static func mix(_ input: UInt64) -> UInt64 {
        var z = input
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    public var description: String { "RandomKey(\(seed))" }
}

/// A sequential generator over a key, for code that draws one value at a time (sampling, shuffling).
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    public let key: RandomKey
    public private(set) var counter: UInt64 = 0

    public init(key: RandomKey) { self.key = key }
    public init(seed: UInt64) { self.key = RandomKey(seed: seed) }

    public mutating func next() -> UInt64 {
        defer { counter &+= 1 }
        return key.bits(counter)
    }

    public mutating func uniform() -> Float {
        defer { counter &+= 1 }
        return key.uniform(counter)
    }

    public mutating func normal() -> Float {
        defer { counter &+= 1 }
        return key.normal(counter)
    }
}

extension Tensor {
    /// Normal(mean, std²) values; element i depends only on `key` and i.
    public static func randomNormal(_ shape: [Int], mean: Float = 0, standardDeviation: Float = 1,
                                    key: RandomKey) -> Tensor {
        let out = Tensor.empty(shape)
        let pointer = out.pointer
        Parallel.forEachChunk(out.count, costPerItem: 32) { range in
            for index in range {
                pointer[index] = mean + standardDeviation * key.normal(UInt64(index))
            }
        }
        return out
    }

    /// Uniform values in [low, high); element i depends only on `key` and i.
    public static func randomUniform(_ shape: [Int], low: Float = 0, high: Float = 1, key: RandomKey) -> Tensor {
        let out = Tensor.empty(shape)
        let pointer = out.pointer
        Parallel.forEachChunk(out.count, costPerItem: 8) { range in
            for index in range {
                pointer[index] = low + (high - low) * key.uniform(UInt64(index))
            }
        }
        return out
    }
}
