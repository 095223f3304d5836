import Crypto
import Foundation
import Synchronization

/// Which end of a session this side is.
public enum SessionRole: String, Sendable {
    case client, server

    var sendDirection: SessionDirection { self == .client ? .clientToServer : .serverToClient }
    var receiveDirection: SessionDirection { self == .client ? .serverToClient : .clientToServer }
}

/// One end of an established session between one client and the server: seals what this side sends
/// and opens what it receives, with one key per direction (from ``ClientHandshake`` /
/// ``ServerHandshake``).
///
/// - Nonce: the direction's 4-byte prefix, then the 8-byte big-endian sequence number of the payload in
///   that direction (0, 1, 2, …; never reused; sealing past 2^64 − 1 throws).
/// - Associated data: the encoded ``PayloadHeader`` (version, cipher, direction, message type,
///   sequence, round, step, client identity).
/// - ``open(_:type:round:step:)`` accepts only the next payload of the other direction, for this
///   client, of the type, round and step the caller expects; anything else throws a ``SessionError``
///   and changes nothing.
///
/// Thread safety: a `Sendable` class. Each direction has its own lock, held for the whole seal (or open),
/// so one task may seal while another opens, concurrently; two tasks sealing at once are serialised
/// and get consecutive sequence numbers in the order they take the lock.
public final class SecureSession: Sendable {
    public let clientIdentity: String
    public let role: SessionRole
    public let cipher: SessionCipher
    let sendKey: SymmetricKey
    let receiveKey: SymmetricKey
    private let sending: Mutex<SequenceState>
    private let receiving: Mutex<SequenceState>

    struct SequenceState: Sendable {
        /// The sequence number of the next payload; nil once 2^64 − 1 has been used.
        var next: UInt64? = 0

        mutating func advance() {
            if let current = next { next = current == .max ? nil : current + 1 }
        }
    }

    init(clientIdentity: String, role: SessionRole, cipher: SessionCipher, sendKey: SymmetricKey, receiveKey: SymmetricKey) {
        self.clientIdentity = clientIdentity
        self.role = role
        self.cipher = cipher
        self.sendKey = sendKey
        self.receiveKey = receiveKey
        sending = Mutex(SequenceState())
        receiving = Mutex(SequenceState())
    }

    /// The sequence number the next ``seal(_:type:round:step:)`` will use (nil: exhausted).
    public var nextSendSequence: UInt64? { sending.withLock { $0.next } }
    /// The sequence number the next accepted payload must carry (nil: exhausted).
    public var nextReceiveSequence: UInt64? { receiving.withLock { $0.next } }

    /// Test hook: jump the sending counter (to test exhaustion without 2^64 seals).
    func setNextSendSequence(_ value: UInt64) { sending.withLock { $0.next = value } }

    /// Seals `bytes` (e.g. Float32 activations (B, T, C), read in place) as the next payload of this
    /// side's direction.
    /// - Parameters:
    ///   - bytes: the plaintext; any contiguous bytes (`[UInt8]`, `Data`, `UnsafeRawBufferPointer`).
    ///   - type: what the payload carries; authenticated.
    ///   - round, step: the federated round and training step (≥ 0); authenticated.
    /// - Returns: the header, ciphertext and tag; ``SealedPayload/byteCount`` is its size on the wire.
    /// - Throws: ``SessionError`` (`sequenceExhausted`) after 2^64 payloads in this direction.
    public func seal(_ bytes: some ContiguousBytes, type: MessageType, round: Int, step: Int) throws -> SealedPayload {
        precondition(round >= 0 && step >= 0, "seal: round \(round) and step \(step) must be ≥ 0")
        return try sending.withLock { state throws -> SealedPayload in
            guard let sequence = state.next else {
                throw SessionError(.sequenceExhausted, clientIdentity: clientIdentity,
                                   "round \(round), step \(step), \(type): the \(role.sendDirection.name) sequence number passed 2^64 − 1; run a new handshake")
            }
            let header = PayloadHeader(cipher: cipher, direction: role.sendDirection, type: type, sequence: sequence,
                                       round: round, step: step, clientIdentity: clientIdentity)
            let associated = header.encoded()
            let nonce = role.sendDirection.nonce(sequence: sequence)
            let combined: Data?
            do {
                combined = try bytes.withUnsafeBytes { plaintext -> Data? in
                    switch cipher {
                    case .aesGCM:
                        return try AES.GCM.seal(plaintext, using: sendKey, nonce: AES.GCM.Nonce(data: nonce),
                                                authenticating: associated).combined
                    case .chaChaPoly:
                        return try ChaChaPoly.seal(plaintext, using: sendKey, nonce: ChaChaPoly.Nonce(data: nonce),
                                                   authenticating: associated).combined
                    }
                }
            } catch {
                throw SessionError(.sealingFailed, clientIdentity: clientIdentity, "round \(round), step \(step), \(type): \(error)")
            }
            guard let combined else {
                throw SessionError(.sealingFailed, clientIdentity: clientIdentity, "round \(round), step \(step), \(type): no combined representation")
            }
            state.advance()
            return SealedPayload(header: header, combined: combined)
        }
    }

    /// Opens the next payload of the other direction and returns its plaintext.
    ///
    /// Checks, in order: the version and cipher; the client named in the header (`wrongClient`); the
    /// direction (`wrongDirection`); the tag over header and ciphertext (`authenticationFailed`); then,
    /// for an authentic payload, the sequence number (`replay` if already opened, `outOfOrder` if ahead)
    /// and the message type, round and step (`unexpectedMessage`). On any error nothing changes.
    /// - Parameters:
    ///   - type, round, step: what the caller expects at this point of the protocol.
    /// - Returns: the plaintext bytes.
    public func open(_ payload: SealedPayload, type: MessageType, round: Int, step: Int) throws -> [UInt8] {
        [UInt8](try openData(payload, type: type, round: round, step: step))
    }

    /// ``open(_:type:round:step:)`` returning swift-crypto's `Data` without copying it into an array.
    public func openData(_ payload: SealedPayload, type: MessageType, round: Int, step: Int) throws -> Data {
        let header = payload.header
        let expected = "round \(round), step \(step), \(type)"
        func failure(_ code: SessionError.Code, _ message: String) -> SessionError {
            SessionError(code, clientIdentity: clientIdentity, "\(expected): \(message)")
        }
        guard header.version == PayloadHeader.currentVersion else {
            throw failure(.unsupported, "payload version \(header.version), this session speaks \(PayloadHeader.currentVersion)")
        }
        guard header.cipher == cipher else {
            throw failure(.unsupported, "payload sealed with \(header.cipher.rawValue), this session uses \(cipher.rawValue)")
        }
        guard header.clientIdentity == clientIdentity else {
            throw failure(.wrongClient, "payload names client \(SessionError.quoted(header.clientIdentity)); it was sealed for another client's session")
        }
        guard header.direction == role.receiveDirection else {
            throw failure(.wrongDirection, "payload travels \(header.direction.name), this \(role.rawValue) receives \(role.receiveDirection.name) (reflected payload)")
        }
        return try receiving.withLock { state throws -> Data in
            let plaintext: Data
            do {
                let associated = header.encoded()
                switch cipher {
                case .aesGCM:
                    plaintext = try AES.GCM.open(AES.GCM.SealedBox(combined: payload.combined), using: receiveKey,
                                                 authenticating: associated)
                case .chaChaPoly:
                    plaintext = try ChaChaPoly.open(ChaChaPoly.SealedBox(combined: payload.combined), using: receiveKey,
                                                    authenticating: associated)
                }
            } catch {
                throw failure(.authenticationFailed, "authentication failed (payload \(header.sequence), \(header.type), round \(header.round), step \(header.step)): ciphertext, tag or header changed, or sealed with another key")
            }
            guard let next = state.next else {
                throw failure(.replay, "replayed payload \(header.sequence): every sequence number of this direction has been used")
            }
            guard header.sequence >= next else {
                throw failure(.replay, "replayed payload: sequence \(header.sequence) was already opened (expecting \(next))")
            }
            guard header.sequence == next else {
                throw failure(.outOfOrder, "payload \(header.sequence) arrived while expecting \(next) (reordered, or \(header.sequence - next) missing)")
            }
            guard header.type == type, header.round == round, header.step == step else {
                throw failure(.unexpectedMessage, "received \(header.type) of round \(header.round), step \(header.step)")
            }
            state.advance()
            return plaintext
        }
    }
}
