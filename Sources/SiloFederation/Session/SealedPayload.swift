import Crypto
import Foundation

/// The header of a sealed payload: sent in the clear and authenticated as the AEAD's associated
/// data, so changing any field makes the payload fail to open.
///
/// Binary layout (big-endian), which is also exactly the associated data:
///
/// ```
/// "SLSP" | u8 version (1) | u8 cipher | u8 direction | u8 message type
///        | u64 sequence | u64 round | u64 step | u8 identity length (1–255) | identity (UTF-8)
/// ```
public struct PayloadHeader: Sendable, Equatable {
    /// The version of the payload format (and of the session protocol) this build speaks.
    public static let currentVersion: UInt8 = 1
    static let magic: [UInt8] = Array("SLSP".utf8)

    public var version: UInt8
    public var cipher: SessionCipher
    public var direction: SessionDirection
    public var type: MessageType
    /// The per-direction sequence number: 0 for the first payload a side seals, then 1, 2, …
    public var sequence: UInt64
    /// The federated round (≥ 0).
    public var round: Int
    /// The training step (≥ 0).
    public var step: Int
    /// The client whose session sealed the payload (both directions name the client).
    public var clientIdentity: String

    public init(version: UInt8 = PayloadHeader.currentVersion, cipher: SessionCipher, direction: SessionDirection,
                type: MessageType, sequence: UInt64, round: Int, step: Int, clientIdentity: String) {
        precondition(round >= 0 && step >= 0, "PayloadHeader: round \(round) and step \(step) must be ≥ 0")
        self.version = version
        self.cipher = cipher
        self.direction = direction
        self.type = type
        self.sequence = sequence
        self.round = round
        self.step = step
        self.clientIdentity = clientIdentity
    }

    /// The encoded header: the associated data of the AEAD. 33 bytes + the identity.
    public func encoded() -> [UInt8] {
        var bytes: [UInt8] = []
        encode(into: &bytes)
        return bytes
    }

    func encode(into bytes: inout [UInt8]) {
        let identity = Array(clientIdentity.utf8)
        precondition((1...255).contains(identity.count), "PayloadHeader: client identity of \(identity.count) bytes")
        bytes.reserveCapacity(bytes.count + 33 + identity.count)
        bytes += PayloadHeader.magic
        bytes += [version, cipher.wireCode, direction.rawValue, type.rawValue]
        SessionBytes.append(sequence, to: &bytes)
        SessionBytes.append(UInt64(round), to: &bytes)
        SessionBytes.append(UInt64(step), to: &bytes)
        bytes.append(UInt8(identity.count))
        bytes += identity
    }

    static func decode(_ reader: inout SessionReader) throws -> PayloadHeader {
        guard try reader.read(count: 4) == magic else { throw reader.malformed("not a sealed Silo payload (bad magic)") }
        let version = try reader.read(UInt8.self)
        guard version == currentVersion else {
            throw SessionError(.unsupported, clientIdentity: nil,
                               "\(reader.what): payload version \(version), this build speaks version \(currentVersion)")
        }
        let cipherCode = try reader.read(UInt8.self)
        guard let cipher = SessionCipher(wireCode: cipherCode) else { throw reader.malformed("unknown cipher \(cipherCode)") }
        let directionCode = try reader.read(UInt8.self)
        guard let direction = SessionDirection(rawValue: directionCode) else {
            throw reader.malformed("unknown direction \(directionCode)")
        }
        let type = MessageType(rawValue: try reader.read(UInt8.self))
        let sequence = try reader.read(UInt64.self)
        let round = try reader.read(UInt64.self)
        let step = try reader.read(UInt64.self)
        guard round <= UInt64(Int.max), step <= UInt64(Int.max) else {
            throw reader.malformed("round \(round) or step \(step) out of range")
        }
        let length = Int(try reader.read(UInt8.self))
        guard length > 0 else { throw reader.malformed("empty client identity") }
        let identity = try reader.readString(count: length, field: "client identity")
        return PayloadHeader(version: version, cipher: cipher, direction: direction, type: type, sequence: sequence,
                             round: Int(round), step: Int(step), clientIdentity: identity)
    }

    /// Throws unless `identity` is 1–255 bytes of UTF-8.
    static func validate(identity: String) throws {
        let count = identity.utf8.count
        guard (1...255).contains(count) else {
            throw SessionError(.invalidIdentity, clientIdentity: nil,
                               "client identity \(SessionError.quoted(identity)) has \(count) UTF-8 bytes (1–255 allowed)")
        }
    }
}

/// One sealed message: the header in the clear (authenticated), the ciphertext (as long as the
/// plaintext) and the 16-byte tag. The nonce is not sent: both sides derive it from the direction
/// and the header's sequence number.
///
/// Serialised layout (big-endian): `header | u64 ciphertext length | ciphertext | tag (16 bytes)`,
/// so ``byteCount`` = 33 + identity bytes + 8 + plaintext bytes + 16.
public struct SealedPayload: Sendable, Equatable {
    /// The tag length of both ciphers.
    public static let tagByteCount = 16
    /// The largest ciphertext a serialised payload may declare: 2^34 bytes (16 GiB); AES-GCM's own
    /// limit is 2^36 − 32 bytes per message.
    public static let maximumCiphertextByteCount = 1 << 34

    public let header: PayloadHeader
    /// nonce (12) | ciphertext | tag (16): swift-crypto's combined form, kept to open without copying.
    let combined: Data

    init(header: PayloadHeader, combined: Data) {
        self.header = header
        self.combined = combined
    }

    /// A payload from its parts (as another framing, e.g. a protocol buffer, carries them).
    /// - Throws: ``SessionError`` (`malformed`) if the tag is not 16 bytes or the ciphertext too long.
    public init(header: PayloadHeader, ciphertext: some DataProtocol, tag: some DataProtocol) throws {
        guard tag.count == SealedPayload.tagByteCount else {
            throw SessionError(.malformed, clientIdentity: nil, "sealed payload: tag of \(tag.count) bytes, expected 16")
        }
        guard ciphertext.count <= SealedPayload.maximumCiphertextByteCount else {
            throw SessionError(.malformed, clientIdentity: nil, "sealed payload: ciphertext of \(ciphertext.count) bytes exceeds the limit")
        }
        var combined = Data(capacity: 12 + ciphertext.count + SealedPayload.tagByteCount)
        combined.append(contentsOf: header.direction.nonce(sequence: header.sequence))
        combined.append(contentsOf: ciphertext)
        combined.append(contentsOf: tag)
        self.init(header: header, combined: combined)
    }

    /// The encrypted bytes (as many as the plaintext).
    public var ciphertext: Data { combined.dropFirst(12).dropLast(SealedPayload.tagByteCount) }
    /// The 16-byte authentication tag.
    public var tag: Data { combined.suffix(SealedPayload.tagByteCount) }

    /// Bytes on the wire: the length of ``serialized()``.
    public var byteCount: Int { 33 + header.clientIdentity.utf8.count + 8 + combined.count - 12 }

    /// The payload as bytes for a transport.
    public func serialized() -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(byteCount)
        header.encode(into: &bytes)
        SessionBytes.append(UInt64(combined.count - 12 - SealedPayload.tagByteCount), to: &bytes)
        combined.withUnsafeBytes { bytes.append(contentsOf: $0[12...]) }
        return bytes
    }

    /// Decodes a payload received from a transport. Only the layout is checked here; the session's
    /// ``SecureSession/open(_:type:round:step:)`` checks everything else.
    /// - Throws: ``SessionError`` (`malformed`) for a bad magic, truncated or trailing bytes, a declared
    ///   ciphertext length that does not match or exceeds ``maximumCiphertextByteCount``, an unknown
    ///   cipher or direction, an identity that is empty or not UTF-8; (`unsupported`) for another version.
    public init(serialized bytes: some ContiguousBytes) throws {
        self = try bytes.withUnsafeBytes { raw in
            var reader = SessionReader(raw, what: "sealed payload")
            let header = try PayloadHeader.decode(&reader)
            let length = try reader.read(UInt64.self)
            guard length <= UInt64(SealedPayload.maximumCiphertextByteCount) else {
                throw reader.malformed("declared ciphertext of \(length) bytes exceeds the limit of \(SealedPayload.maximumCiphertextByteCount)")
            }
            guard Int(length) + SealedPayload.tagByteCount == reader.remaining else {
                throw reader.malformed("declares \(length) bytes of ciphertext + 16 of tag, \(reader.remaining) bytes follow the header")
            }
            var combined = Data(capacity: 12 + reader.remaining)
            combined.append(contentsOf: header.direction.nonce(sequence: header.sequence))
            combined.append(contentsOf: UnsafeRawBufferPointer(rebasing: raw[reader.offset...]))
            return SealedPayload(header: header, combined: combined)
        }
    }
}
