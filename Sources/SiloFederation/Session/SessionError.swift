import Foundation

/// Why a handshake or a sealed payload was rejected. The message says what went wrong and for which
/// client, round and step; ``code`` lets a caller branch on the kind of failure.
///
/// A payload that fails to open changes nothing in the session: the next expected sequence number
/// advances only when a payload opens.
public struct SessionError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The kind of failure.
    public enum Code: String, Sendable, CaseIterable {
        /// Bytes that are not a well-formed handshake message or sealed payload (truncated, trailing
        /// bytes, bad magic, a length over its limit, invalid UTF-8).
        case malformed
        /// A protocol version, key exchange or cipher this side does not speak or did not agree to.
        case unsupported
        /// A client identity that is empty, too long, or not the one the transport authenticated.
        case invalidIdentity
        /// The key exchange failed (an invalid public key, an RSA key under 2048 bits, a wrapped
        /// secret that does not unwrap to 32 bytes).
        case keyExchangeFailed
        /// The payload's header names another client than this session's.
        case wrongClient
        /// The payload travels in the direction this side sends, not the one it receives (reflected).
        case wrongDirection
        /// The AEAD tag does not verify: ciphertext, tag or header changed, or sealed with another key.
        case authenticationFailed
        /// An authentic payload whose sequence number was already opened.
        case replay
        /// An authentic payload from ahead of the expected sequence number (reordered, or one missing).
        case outOfOrder
        /// An authentic, in-order payload of another message type, round or step than the caller expects.
        case unexpectedMessage
        /// The sending sequence number reached 2^64 − 1: the session must be replaced by a new handshake.
        case sequenceExhausted
        /// swift-crypto failed to seal (should not happen with valid keys).
        case sealingFailed
    }

    public let code: Code
    /// The identity of the session's client (nil while decoding bytes that belong to no session yet).
    public let clientIdentity: String?
    public let message: String

    public init(_ code: Code, clientIdentity: String?, _ message: String) {
        self.code = code
        self.clientIdentity = clientIdentity
        self.message = message
    }

    public var description: String {
        if let clientIdentity { return "session of client \(SessionError.quoted(clientIdentity)): \(message)" }
        return message
    }

    /// A string received from another party, quoted and cut to 64 characters for an error message.
    static func quoted(_ text: String) -> String {
        let cut = text.count > 64 ? String(text.prefix(64)) + "…" : text
        return String(reflecting: cut)
    }
}
