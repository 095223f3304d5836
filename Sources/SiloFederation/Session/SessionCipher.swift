import Crypto
import Foundation

/// The AEAD that seals a session's payloads, both with 256-bit keys and 12-byte nonces.
///
/// AES-GCM-256 is the default: with AES-NI and carry-less multiplication it is several times faster
/// than ChaCha20-Poly1305 on x86-64 (see ``SecureSession``'s measurements); ChaCha20-Poly1305 is there
/// for machines without AES instructions. Config files name them `aes-gcm` and `chacha20-poly1305`.
public enum SessionCipher: String, Sendable, CaseIterable, Codable {
    case aesGCM = "aes-gcm"
    case chaChaPoly = "chacha20-poly1305"

    /// The byte that names the cipher in handshake messages and payload headers.
    public var wireCode: UInt8 {
        switch self {
        case .aesGCM: return 1
        case .chaChaPoly: return 2
        }
    }

    init?(wireCode: UInt8) {
        guard let cipher = SessionCipher.allCases.first(where: { $0.wireCode == wireCode }) else { return nil }
        self = cipher
    }
}

/// How the two sides agree on the session secret.
public enum KeyExchange: String, Sendable, CaseIterable, Codable {
    /// Ephemeral X25519: each side contributes a fresh key pair (forward secrecy). The default.
    case x25519
    /// RSA-OAEP (SHA-256, MGF1-SHA-256) key transport, for users who need the FL-GLM paper's RSA: the
    /// client wraps a random 256-bit secret to the server's RSA public key (2048 bits or more); the
    /// server contributes 32 random bytes. No forward secrecy: whoever later holds the server's RSA
    /// private key can unwrap recorded secrets.
    case rsaOAEP = "rsa-oaep"

    /// The byte that names the key exchange in handshake messages.
    public var wireCode: UInt8 {
        switch self {
        case .x25519: return 1
        case .rsaOAEP: return 2
        }
    }

    init?(wireCode: UInt8) {
        guard let exchange = KeyExchange.allCases.first(where: { $0.wireCode == wireCode }) else { return nil }
        self = exchange
    }
}

/// Which way a payload travels. Each direction has its own key, its own nonce prefix and its own
/// sequence numbers.
public enum SessionDirection: UInt8, Sendable, CaseIterable {
    case clientToServer = 1
    case serverToClient = 2

    /// The first 4 bytes of every nonce in this direction: 00 00 00 01 (client → server) or
    /// 00 00 00 02 (server → client); the last 8 bytes are the big-endian sequence number.
    var noncePrefix: [UInt8] { [0, 0, 0, rawValue] }

    /// The 12-byte nonce of sequence number `sequence` in this direction.
    func nonce(sequence: UInt64) -> [UInt8] {
        var bytes = noncePrefix
        bytes.reserveCapacity(12)
        SessionBytes.append(sequence, to: &bytes)
        return bytes
    }

    var name: String {
        switch self {
        case .clientToServer: return "client → server"
        case .serverToClient: return "server → client"
        }
    }
}

/// What a sealed payload carries. It travels in the authenticated header, so a payload cannot be
/// replayed as another type. An open set: new types are new constants (values 0–255, unique).
public struct MessageType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt8

    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// Control messages (start of a step, acknowledgements, errors).
    public static let control = MessageType(rawValue: 0)
    /// client → server: h_a (B, T, C), the output of the client's input block.
    public static let activations = MessageType(rawValue: 1)
    /// server → client: dL/dh_a (B, T, C).
    public static let activationGradients = MessageType(rawValue: 2)
    /// server → client: h_b (B, T, C), the output of the server's blocks.
    public static let serverOutput = MessageType(rawValue: 3)
    /// client → server: dL/dh_b (B, T, C).
    public static let outputGradients = MessageType(rawValue: 4)
    /// client → server: the client's trainable values for aggregation.
    public static let adapterUpdate = MessageType(rawValue: 5)
    /// server → client: the aggregated trainable values.
    public static let aggregate = MessageType(rawValue: 6)
    /// server → client: start a step.
    public static let stepBegin = MessageType(rawValue: 7)
    /// client → server: a step's loss and counts.
    public static let stepResult = MessageType(rawValue: 8)
    /// server → client: send your trainable values.
    public static let adapterRequest = MessageType(rawValue: 9)
    /// client → server: acknowledgement.
    public static let acknowledgement = MessageType(rawValue: 10)
    /// server → client: the combined gradient of the client-side trainables for this step.
    public static let gradientAggregate = MessageType(rawValue: 11)
    /// server → client: save a checkpoint of your state.
    public static let checkpoint = MessageType(rawValue: 12)
    /// server → client: roll back to a checkpoint.
    public static let restore = MessageType(rawValue: 13)
    /// server → client: send your trainables and optimizer state.
    public static let syncRequest = MessageType(rawValue: 14)
    /// both ways: a client's trainables and optimizer state (for a rejoining client).
    public static let syncState = MessageType(rawValue: 15)

    static let names: [UInt8: String] = [
        0: "control", 1: "activations", 2: "activation_gradients", 3: "server_output", 4: "output_gradients",
        5: "adapter_update", 6: "aggregate", 7: "step_begin", 8: "step_result", 9: "adapter_request",
        10: "acknowledgement", 11: "gradient_aggregate", 12: "checkpoint", 13: "restore",
        14: "sync_request", 15: "sync_state",
    ]

    public var description: String { MessageType.names[rawValue] ?? "message type \(rawValue)" }
}

/// Big-endian writes for the session's binary formats.
enum SessionBytes {
    static func append<T: FixedWidthInteger>(_ value: T, to bytes: inout [UInt8]) {
        withUnsafeBytes(of: value.bigEndian) { bytes.append(contentsOf: $0) }
    }

    /// A u32 length, then the bytes.
    static func appendPrefixed(_ field: [UInt8], to bytes: inout [UInt8]) {
        append(UInt32(field.count), to: &bytes)
        bytes.append(contentsOf: field)
    }
}

/// Bounds-checked big-endian reads; every failure is a ``SessionError/Code/malformed`` naming `what`
/// and the byte offset.
struct SessionReader {
    let bytes: UnsafeRawBufferPointer
    let what: String
    private(set) var offset = 0

    init(_ bytes: UnsafeRawBufferPointer, what: String) {
        self.bytes = bytes
        self.what = what
    }

    var remaining: Int { bytes.count - offset }

    func malformed(_ detail: String) -> SessionError {
        SessionError(.malformed, clientIdentity: nil, "\(what): \(detail)")
    }

    mutating func skip(_ count: Int) throws {
        guard count >= 0, count <= remaining else {
            throw malformed("truncated at byte \(offset) (needed \(count) more bytes, \(remaining) left)")
        }
        offset += count
    }

    mutating func read(count: Int) throws -> [UInt8] {
        let start = offset
        try skip(count)
        return Array(bytes[start..<(start + count)])
    }

    mutating func read<T: FixedWidthInteger>(_: T.Type) throws -> T {
        let start = offset
        try skip(MemoryLayout<T>.size)
        var value: T = 0
        for index in start..<offset { value = value << 8 | T(bytes[index]) }
        return value
    }

    mutating func readString(count: Int, field: String) throws -> String {
        let start = offset
        let raw = try read(count: count)
        guard let text = String(validating: raw, as: UTF8.self) else {
            throw malformed("\(field) at byte \(start) is not valid UTF-8")
        }
        return text
    }

    func expectEnd() throws {
        guard remaining == 0 else { throw malformed("\(remaining) trailing bytes after byte \(offset)") }
    }
}
