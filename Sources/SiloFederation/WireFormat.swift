import Foundation
import SiloTensor

/// An error in a message received from another party: malformed bytes, a shape that does not fit, a
/// value that is not finite, or a message that breaks the protocol. The message says what and from whom.
public struct ProtocolError: Error, CustomStringConvertible, Sendable {
    public let message: String

    public init(_ message: String) { self.message = message }

    public var description: String { message }
}

/// The binary layout of the plaintext inside a sealed payload: a tensor (activations, gradients,
/// flattened adapter values) and a few scalars, little-endian, with explicit lengths.
///
/// ```
/// "SLW1" | u8 rank | rank × u32 dims | u32 scalar count | scalars × f64 | f32 × Π dims
/// ```
///
/// Decoding never trusts the sender: every length is checked against the bytes present and against a
/// limit, the shape against what the receiver expects, and every value for NaN/Inf, before anything
/// is applied. No token ids, labels or masks have a place in this format.
public struct WireTensor {
    public var tensor: Tensor
    /// Named scalars by position (e.g. the number of loss tokens, a loss value); meaning fixed by the message type.
    public var scalars: [Double]

    public init(tensor: Tensor, scalars: [Double] = []) {
        self.tensor = tensor
        self.scalars = scalars
    }

    static let magic: [UInt8] = Array("SLW1".utf8)
    /// The largest tensor a message may carry: 2^31 values (8 GiB); transports set tighter limits.
    public static let maximumElementCount = 1 << 31

    /// The encoded bytes.
    public func encoded() -> [UInt8] {
        let shape = tensor.shape
        let dense = tensor.isContiguous ? tensor : tensor.detached().contiguous()
        var bytes: [UInt8] = []
        bytes.reserveCapacity(4 + 1 + 4 * shape.count + 4 + 8 * scalars.count + 4 * dense.count)
        bytes += WireTensor.magic
        bytes.append(UInt8(shape.count))
        for dimension in shape { append(UInt32(dimension), to: &bytes) }
        append(UInt32(scalars.count), to: &bytes)
        for scalar in scalars { append(scalar.bitPattern, to: &bytes) }
        dense.withUnsafeBufferPointer { values in
            bytes += UnsafeRawBufferPointer(values)  // Float32, little-endian on every supported platform
        }
        return bytes
    }

    /// Decodes and validates `bytes`.
    /// - Parameters:
    ///   - expectedRank: the rank the receiver accepts.
    ///   - check: receives the decoded shape and throws if it does not fit (e.g. wrong hidden size).
    ///   - what: names the message in errors (`activations from client hospital-a, step 3`).
    /// - Throws: ``ProtocolError`` for truncated or trailing bytes, a bad magic, a wrong rank, a shape
    ///   over ``maximumElementCount``, a scalar count over 64, or a NaN/Inf value (with its index).
    public static func decode(_ bytes: [UInt8], expectedRank: Int, what: String,
                              check: ([Int]) throws -> Void = { _ in }) throws -> WireTensor {
        var reader = ByteReader(bytes: bytes, what: what)
        guard try reader.read(count: 4) == magic else { throw ProtocolError("\(what): not a Silo tensor message (bad magic)") }
        let rank = Int(try reader.readUInt8())
        guard rank == expectedRank else { throw ProtocolError("\(what): tensor of rank \(rank), expected rank \(expectedRank)") }
        var shape: [Int] = []
        var elements = 1
        for _ in 0..<rank {
            let dimension = Int(try reader.readUInt32())
            shape.append(dimension)
            elements = elements.multipliedReportingOverflow(by: dimension).partialValue
            guard elements <= maximumElementCount else {
                throw ProtocolError("\(what): shape \(shape)… exceeds the limit of \(maximumElementCount) values")
            }
        }
        try check(shape)
        let scalarCount = Int(try reader.readUInt32())
        guard scalarCount <= 64 else { throw ProtocolError("\(what): \(scalarCount) scalars (at most 64)") }
        var scalars: [Double] = []
        for index in 0..<scalarCount {
            let value = Double(bitPattern: try reader.readUInt64())
            guard value.isFinite else { throw ProtocolError("\(what): scalar \(index) is \(value)") }
            scalars.append(value)
        }
        guard reader.remaining == 4 * elements else {
            throw ProtocolError("\(what): shape \(shape) needs \(4 * elements) bytes of values, the message has \(reader.remaining)")
        }
        let tensor = Tensor.empty(shape)
        let raw = UnsafeMutableRawPointer(tensor.pointer)
        bytes.withUnsafeBytes { source in
            raw.copyMemory(from: source.baseAddress! + reader.offset, byteCount: 4 * elements)
        }
        if let index = (0..<elements).first(where: { !tensor.pointer[$0].isFinite }) {
            throw ProtocolError("\(what): value \(tensor.pointer[index]) at index \(index) of shape \(shape) is not finite")
        }
        return WireTensor(tensor: tensor, scalars: scalars)
    }

    private func append<T: FixedWidthInteger>(_ value: T, to bytes: inout [UInt8]) {
        withUnsafeBytes(of: value.littleEndian) { bytes += $0 }
    }
}

/// Bounds-checked little-endian reads from a byte array.
struct ByteReader {
    let bytes: [UInt8]
    let what: String
    var offset = 0

    init(bytes: [UInt8], what: String) {
        self.bytes = bytes
        self.what = what
    }

    var remaining: Int { bytes.count - offset }

    mutating func read(count: Int) throws -> [UInt8] {
        guard count >= 0, count <= remaining else {
            throw ProtocolError("\(what): message truncated at byte \(offset) (needed \(count) more, \(remaining) left)")
        }
        defer { offset += count }
        return Array(bytes[offset..<(offset + count)])
    }

    mutating func readUInt8() throws -> UInt8 { try read(count: 1)[0] }

    mutating func readUInt32() throws -> UInt32 {
        try read(count: 4).reversed().reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
    }

    mutating func readUInt64() throws -> UInt64 {
        try read(count: 8).reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
    }
}
