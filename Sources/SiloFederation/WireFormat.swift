import Foundation
import SiloCompression
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
///
/// With a codec (`split.codec`), the values travel compressed (compress, then seal):
///
/// ```
/// "SLC1" | u8 rank | rank × u32 dims | u32 scalar count | scalars × f64 | u8 name length | codec name | codec bytes
/// ```
///
/// The codec sees the tensor as rows × columns with columns = the last dimension; the receiver accepts
/// only the codec it was configured with.
public struct WireTensor {
    public var tensor: Tensor
    /// Named scalars by position (e.g. the number of loss tokens, a loss value); meaning fixed by the message type.
    public var scalars: [Double]

    public init(tensor: Tensor, scalars: [Double] = []) {
        self.tensor = tensor
        self.scalars = scalars
    }

    static let magic: [UInt8] = Array("SLW1".utf8)
    static let codedMagic: [UInt8] = Array("SLC1".utf8)
    /// The largest tensor a message may carry: 2^31 values (8 GiB); transports set tighter limits.
    public static let maximumElementCount = 1 << 31

    /// The encoded bytes.
    public func encoded() -> [UInt8] {
        let shape = tensor.shape
        let dense = tensor.isContiguous ? tensor : tensor.detached().contiguous()
        var bytes = header(magic: WireTensor.magic)
        bytes.reserveCapacity(4 + 1 + 4 * shape.count + 4 + 8 * scalars.count + 4 * dense.count)
        dense.withUnsafeBufferPointer { values in
            bytes += UnsafeRawBufferPointer(values)  // Float32, little-endian on every supported platform
        }
        return bytes
    }

    /// The encoded bytes, the values compressed with `codec` (plain ``encoded()`` for nil or the identity).
    public func encoded(codec: (any TensorCodec)?) throws -> [UInt8] {
        guard let codec, codec.name != "none" else { return encoded() }
        let shape = tensor.shape
        let columns = shape.last ?? 1
        let rows = columns == 0 ? 0 : tensor.count / columns
        let payload = try codec.encode(tensor.detached().contiguous().toArray(), rows: rows, columns: columns)
        var bytes = header(magic: WireTensor.codedMagic)
        let name = Array(codec.name.utf8)
        bytes.append(UInt8(name.count))
        bytes += name
        bytes += payload
        return bytes
    }

    private func header(magic: [UInt8]) -> [UInt8] {
        var bytes = magic
        bytes.append(UInt8(tensor.shape.count))
        for dimension in tensor.shape { append(UInt32(dimension), to: &bytes) }
        append(UInt32(scalars.count), to: &bytes)
        for scalar in scalars { append(scalar.bitPattern, to: &bytes) }
        return bytes
    }

    /// What `bytes` would take uncompressed: its own size for a plain message, the plain layout's size
    /// for a compressed one (nil when the header does not parse; byte accounting only, not validation).
    public static func uncompressedSize(of bytes: [UInt8]) -> Int? {
        var reader = ByteReader(bytes: bytes, what: "size")
        guard let head = try? reader.read(count: 4) else { return nil }
        if head == magic { return bytes.count }
        guard head == codedMagic, let rank = try? reader.readUInt8() else { return nil }
        var elements = 1
        for _ in 0..<rank {
            guard let dimension = try? reader.readUInt32() else { return nil }
            elements = elements.multipliedReportingOverflow(by: Int(dimension)).partialValue
        }
        guard let scalars = try? reader.readUInt32() else { return nil }
        return 4 + 1 + 4 * Int(rank) + 4 + 8 * Int(scalars) + 4 * elements
    }

    /// Decodes and validates `bytes`; a compressed message is accepted only when `codec` is the codec
    /// that encoded it.
    public static func decode(_ bytes: [UInt8], expectedRank: Int, what: String, codec: (any TensorCodec)?,
                              check: ([Int]) throws -> Void = { _ in }) throws -> WireTensor {
        guard bytes.starts(with: codedMagic) else { return try decode(bytes, expectedRank: expectedRank, what: what, check: check) }
        guard let codec, codec.name != "none" else {
            throw ProtocolError("\(what): the values are compressed, but this party was configured without a codec (split.codec)")
        }
        var reader = ByteReader(bytes: bytes, what: what)
        _ = try reader.read(count: 4)
        let (shape, elements, scalars) = try readHeader(&reader, expectedRank: expectedRank, what: what, check: check)
        let nameLength = Int(try reader.readUInt8())
        let name = String(decoding: try reader.read(count: nameLength), as: UTF8.self)
        guard name == codec.name else {
            throw ProtocolError("\(what): compressed with codec '\(name)', this party expects '\(codec.name)'")
        }
        let decoded: (values: [Float], rows: Int, columns: Int)
        do {
            decoded = try codec.decode(Array(bytes[reader.offset...]))
        } catch {
            throw ProtocolError("\(what): \(error)")
        }
        let columns = shape.last ?? 1
        guard decoded.values.count == elements, decoded.columns == columns || elements == 0 else {
            throw ProtocolError("\(what): the codec gave \(decoded.rows) × \(decoded.columns) values for shape \(shape)")
        }
        if let index = decoded.values.firstIndex(where: { !$0.isFinite }) {
            throw ProtocolError("\(what): value \(decoded.values[index]) at index \(index) of shape \(shape) is not finite")
        }
        return WireTensor(tensor: try Tensor(shape: shape, values: decoded.values), scalars: scalars)
    }

    /// Reads rank, dims and scalars after the magic, with every limit of ``decode(_:expectedRank:what:check:)``.
    private static func readHeader(_ reader: inout ByteReader, expectedRank: Int, what: String,
                                   check: ([Int]) throws -> Void) throws -> (shape: [Int], elements: Int, scalars: [Double]) {
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
        return (shape, elements, scalars)
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
        let (shape, elements, scalars) = try readHeader(&reader, expectedRank: expectedRank, what: what, check: check)
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

    mutating func readUInt16() throws -> UInt16 {
        try read(count: 2).reversed().reduce(UInt16(0)) { $0 << 8 | UInt16($1) }
    }

    mutating func readUInt32() throws -> UInt32 {
        try read(count: 4).reversed().reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
    }

    mutating func readUInt64() throws -> UInt64 {
        try read(count: 8).reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
    }
}

/// Named tensors in one message (a client's trainables and optimizer state for a rejoining client):
///
/// ```
/// "SLB1" | u32 count | count × (u16 name length | UTF-8 name | u32 byte length | "SLW1" tensor)
/// ```
///
/// Every entry is a plain ``WireTensor`` (any rank up to 8, finite values); names are unique and
/// every length is checked against the bytes present, as for a single tensor.
public enum WireTensorBundle {
    static let magic: [UInt8] = Array("SLB1".utf8)
    /// The most entries a bundle may hold.
    public static let maximumCount = 1 << 16

    public static func encode(_ tensors: [String: Tensor]) -> [UInt8] {
        var bytes = magic
        withUnsafeBytes(of: UInt32(tensors.count).littleEndian) { bytes += $0 }
        for (name, tensor) in tensors.sorted(by: { $0.key < $1.key }) {
            let entry = WireTensor(tensor: tensor).encoded()
            let utf8 = Array(name.utf8)
            withUnsafeBytes(of: UInt16(utf8.count).littleEndian) { bytes += $0 }
            bytes += utf8
            withUnsafeBytes(of: UInt32(entry.count).littleEndian) { bytes += $0 }
            bytes += entry
        }
        return bytes
    }

    /// Decodes and validates `bytes`.
    /// - Throws: ``ProtocolError`` naming `what` for a bad magic, truncated or trailing bytes, a name
    ///   that is empty, not UTF-8 or repeated, or an entry that is not a valid tensor (with its name).
    public static func decode(_ bytes: [UInt8], what: String) throws -> [String: Tensor] {
        var reader = ByteReader(bytes: bytes, what: what)
        guard try reader.read(count: 4) == magic else {
            throw ProtocolError("\(what): not a Silo tensor bundle (bad magic)")
        }
        let count = Int(try reader.readUInt32())
        guard count <= maximumCount else { throw ProtocolError("\(what): \(count) tensors (at most \(maximumCount))") }
        var tensors: [String: Tensor] = [:]
        for index in 0..<count {
            let nameBytes = try reader.read(count: Int(try reader.readUInt16()))
            guard !nameBytes.isEmpty, let name = String(validating: nameBytes, as: UTF8.self) else {
                throw ProtocolError("\(what): tensor \(index) has an empty or malformed name")
            }
            guard tensors[name] == nil else { throw ProtocolError("\(what): tensor '\(name)' appears twice") }
            let entry = try reader.read(count: Int(try reader.readUInt32()))
            guard entry.count > 4 else { throw ProtocolError("\(what), tensor '\(name)': \(entry.count) bytes, too short") }
            let rank = Int(entry[4])
            guard rank <= 8 else { throw ProtocolError("\(what), tensor '\(name)': rank \(rank) (at most 8)") }
            tensors[name] = try WireTensor.decode(entry, expectedRank: rank, what: "\(what), tensor '\(name)'").tensor
        }
        guard reader.remaining == 0 else { throw ProtocolError("\(what): \(reader.remaining) bytes after the last tensor") }
        return tensors
    }
}
