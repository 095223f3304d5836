import Crypto
import _CryptoExtras
import Foundation

// The key schedule (both key exchanges), with lp(x) = u32 big-endian length of x, then x:
//
//   transcript = lp("silo/v1/session") | u8 version | u8 key exchange | u8 cipher | lp(client identity)
//              | lp(client key material) | lp(server key material) | lp(server static key)
//   salt       = SHA-256(transcript)
//   key c→s    = HKDF-SHA256(ikm, salt, info: "silo/v1/session client->server", 32 bytes)
//   key s→c    = HKDF-SHA256(ikm, salt, info: "silo/v1/session server->client", 32 bytes)
//
//   x25519:   ikm = X25519(client ephemeral, server ephemeral); client key material = the client's
//             ephemeral public key, server key material = the server's; server static key empty.
//   rsa-oaep: ikm = the client's random 32-byte secret; client key material = that secret wrapped with
//             RSA-OAEP-SHA-256 to the server's key, server key material = 32 random bytes of the server,
//             server static key = the server's RSA public key (DER SubjectPublicKeyInfo).
//
// The identity and both sides' fresh contributions are in the salt, so a hello replayed to the server
// or a hello for one client answered for another yields unrelated keys.

/// The key schedule shared by both sides.
enum SessionKeySchedule {
    static let label = "silo/v1/session"
    static let clientToServerInfo = Array("silo/v1/session client->server".utf8)
    static let serverToClientInfo = Array("silo/v1/session server->client".utf8)

    static func transcript(keyExchange: KeyExchange, cipher: SessionCipher, clientIdentity: String,
                           clientKeyMaterial: [UInt8], serverKeyMaterial: [UInt8], serverStaticKey: [UInt8]) -> [UInt8] {
        var bytes: [UInt8] = []
        SessionBytes.appendPrefixed(Array(label.utf8), to: &bytes)
        bytes += [PayloadHeader.currentVersion, keyExchange.wireCode, cipher.wireCode]
        SessionBytes.appendPrefixed(Array(clientIdentity.utf8), to: &bytes)
        SessionBytes.appendPrefixed(clientKeyMaterial, to: &bytes)
        SessionBytes.appendPrefixed(serverKeyMaterial, to: &bytes)
        SessionBytes.appendPrefixed(serverStaticKey, to: &bytes)
        return bytes
    }

    /// (client → server, server → client) keys of 256 bits.
    static func keys(inputKeyMaterial: SymmetricKey, transcript: [UInt8]) -> (clientToServer: SymmetricKey, serverToClient: SymmetricKey) {
        let salt = Array(SHA256.hash(data: transcript))
        let clientToServer = HKDF<SHA256>.deriveKey(inputKeyMaterial: inputKeyMaterial, salt: salt,
                                                    info: clientToServerInfo, outputByteCount: 32)
        let serverToClient = HKDF<SHA256>.deriveKey(inputKeyMaterial: inputKeyMaterial, salt: salt,
                                                    info: serverToClientInfo, outputByteCount: 32)
        return (clientToServer, serverToClient)
    }

    /// X25519 of our private key and the peer's public key. Rejects a shared secret of all zeros (a
    /// small-order public key, RFC 7748 section 6.1), which swift-crypto returns without checking.
    static func agree(_ privateKey: Curve25519.KeyAgreement.PrivateKey, with publicKey: [UInt8], peer: String,
                      clientIdentity: String) throws -> SymmetricKey {
        let shared: SharedSecret
        do {
            shared = try privateKey.sharedSecretFromKeyAgreement(with: Curve25519.KeyAgreement.PublicKey(rawRepresentation: publicKey))
        } catch {
            throw SessionError(.keyExchangeFailed, clientIdentity: clientIdentity, "X25519 with the \(peer)'s public key failed: \(error)")
        }
        let allZero = shared.withUnsafeBytes { bytes in bytes.reduce(UInt8(0)) { $0 | $1 } == 0 }
        guard !allZero else {
            throw SessionError(.keyExchangeFailed, clientIdentity: clientIdentity,
                               "the \(peer)'s X25519 public key is a small-order point (the shared secret is zero)")
        }
        return shared.withUnsafeBytes { SymmetricKey(data: $0) }
    }

    static func randomBytes(_ count: Int) -> [UInt8] {
        var generator = SystemRandomNumberGenerator()  // getrandom(2) / arc4random: a CSPRNG
        return (0..<count).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
    }
}

/// The client's first handshake message: who it is, the cipher it asks for, and its key material.
///
/// Binary layout (big-endian): `"SLCH" | u8 version (1) | u8 key exchange | u8 cipher |
/// u8 identity length (1–255) | identity (UTF-8) | u16 key material length | key material`, the key
/// material being an X25519 public key (32 bytes) or an RSA-OAEP-wrapped secret (256–1024 bytes).
public struct ClientHello: Sendable, Equatable {
    static let magic: [UInt8] = Array("SLCH".utf8)

    public var keyExchange: KeyExchange
    public var cipher: SessionCipher
    /// The client's name; the server accepts it only if it equals the identity the transport
    /// authenticated (the TLS certificate's name).
    public var clientIdentity: String
    public var keyMaterial: [UInt8]

    public init(keyExchange: KeyExchange, cipher: SessionCipher, clientIdentity: String, keyMaterial: [UInt8]) {
        self.keyExchange = keyExchange
        self.cipher = cipher
        self.clientIdentity = clientIdentity
        self.keyMaterial = keyMaterial
    }

    public func serialized() -> [UInt8] {
        HandshakeCoding.encode(magic: ClientHello.magic, keyExchange: keyExchange, cipher: cipher,
                               clientIdentity: clientIdentity, keyMaterial: keyMaterial)
    }

    /// - Throws: ``SessionError`` (`malformed`, `unsupported`) for bytes that are not a valid hello.
    public init(serialized bytes: some ContiguousBytes) throws {
        let fields = try HandshakeCoding.decode(bytes, magic: ClientHello.magic, what: "client hello")
        self.init(keyExchange: fields.keyExchange, cipher: fields.cipher, clientIdentity: fields.clientIdentity,
                  keyMaterial: fields.keyMaterial)
    }
}

/// The server's answer: the key exchange and cipher it accepted for this client, and its fresh key
/// material (an X25519 public key, or 32 random bytes with RSA-OAEP).
///
/// Binary layout: as ``ClientHello`` with the magic `"SLSH"`; the key material is 32 bytes.
public struct ServerHello: Sendable, Equatable {
    static let magic: [UInt8] = Array("SLSH".utf8)

    public var keyExchange: KeyExchange
    public var cipher: SessionCipher
    public var clientIdentity: String
    public var keyMaterial: [UInt8]

    public init(keyExchange: KeyExchange, cipher: SessionCipher, clientIdentity: String, keyMaterial: [UInt8]) {
        self.keyExchange = keyExchange
        self.cipher = cipher
        self.clientIdentity = clientIdentity
        self.keyMaterial = keyMaterial
    }

    public func serialized() -> [UInt8] {
        HandshakeCoding.encode(magic: ServerHello.magic, keyExchange: keyExchange, cipher: cipher,
                               clientIdentity: clientIdentity, keyMaterial: keyMaterial)
    }

    /// - Throws: ``SessionError`` (`malformed`, `unsupported`) for bytes that are not a valid hello.
    public init(serialized bytes: some ContiguousBytes) throws {
        let fields = try HandshakeCoding.decode(bytes, magic: ServerHello.magic, what: "server hello")
        guard fields.keyMaterial.count == 32 else {
            throw SessionError(.malformed, clientIdentity: nil, "server hello: key material of \(fields.keyMaterial.count) bytes, expected 32")
        }
        self.init(keyExchange: fields.keyExchange, cipher: fields.cipher, clientIdentity: fields.clientIdentity,
                  keyMaterial: fields.keyMaterial)
    }
}

enum HandshakeCoding {
    static func encode(magic: [UInt8], keyExchange: KeyExchange, cipher: SessionCipher, clientIdentity: String,
                       keyMaterial: [UInt8]) -> [UInt8] {
        let identity = Array(clientIdentity.utf8)
        precondition((1...255).contains(identity.count), "hello: client identity of \(identity.count) bytes")
        precondition(keyMaterial.count <= Int(UInt16.max), "hello: key material of \(keyMaterial.count) bytes")
        var bytes = magic + [PayloadHeader.currentVersion, keyExchange.wireCode, cipher.wireCode, UInt8(identity.count)]
        bytes += identity
        SessionBytes.append(UInt16(keyMaterial.count), to: &bytes)
        bytes += keyMaterial
        return bytes
    }

    static func decode(_ bytes: some ContiguousBytes, magic: [UInt8], what: String) throws
        -> (keyExchange: KeyExchange, cipher: SessionCipher, clientIdentity: String, keyMaterial: [UInt8]) {
        try bytes.withUnsafeBytes { raw in
            var reader = SessionReader(raw, what: what)
            guard try reader.read(count: 4) == magic else { throw reader.malformed("bad magic") }
            let version = try reader.read(UInt8.self)
            guard version == PayloadHeader.currentVersion else {
                throw SessionError(.unsupported, clientIdentity: nil, "\(what): version \(version), this build speaks version \(PayloadHeader.currentVersion)")
            }
            let exchangeCode = try reader.read(UInt8.self)
            guard let keyExchange = KeyExchange(wireCode: exchangeCode) else { throw reader.malformed("unknown key exchange \(exchangeCode)") }
            let cipherCode = try reader.read(UInt8.self)
            guard let cipher = SessionCipher(wireCode: cipherCode) else { throw reader.malformed("unknown cipher \(cipherCode)") }
            let identityLength = Int(try reader.read(UInt8.self))
            guard identityLength > 0 else { throw reader.malformed("empty client identity") }
            let identity = try reader.readString(count: identityLength, field: "client identity")
            let materialLength = Int(try reader.read(UInt16.self))
            let allowed = keyExchange == .x25519 ? 32...32 : 256...1024
            guard magic == ServerHello.magic || allowed.contains(materialLength) else {
                throw reader.malformed("\(keyExchange.rawValue) key material of \(materialLength) bytes (allowed: \(allowed))")
            }
            let material = try reader.read(count: materialLength)
            try reader.expectEnd()
            return (keyExchange, cipher, identity, material)
        }
    }
}

/// The client side of the handshake: makes the ``ClientHello`` to send, then turns the server's
/// ``ServerHello`` into the client's ``SecureSession``.
///
/// ```swift
/// let handshake = try ClientHandshake(clientIdentity: "hospital-a")          // X25519, AES-GCM
/// send(handshake.hello.serialized())
/// let session = try handshake.finish(with: ServerHello(serialized: receive()))
/// ```
///
/// Use each handshake once: it holds a fresh secret.
public struct ClientHandshake: Sendable {
    public let hello: ClientHello

    private enum Secret: Sendable {
        case x25519(Curve25519.KeyAgreement.PrivateKey)
        case rsa(secret: SymmetricKey, serverPublicKey: [UInt8])
    }

    private let secret: Secret

    /// An X25519 handshake with a fresh ephemeral key pair.
    /// - Throws: ``SessionError`` (`invalidIdentity`) unless the identity is 1–255 bytes of UTF-8.
    public init(clientIdentity: String, cipher: SessionCipher = .aesGCM) throws {
        try self.init(clientIdentity: clientIdentity, cipher: cipher, privateKey: Curve25519.KeyAgreement.PrivateKey())
    }

    /// An X25519 handshake with a given ephemeral key (reference tests only: a key must never be reused).
    init(clientIdentity: String, cipher: SessionCipher, privateKey: Curve25519.KeyAgreement.PrivateKey) throws {
        try PayloadHeader.validate(identity: clientIdentity)
        hello = ClientHello(keyExchange: .x25519, cipher: cipher, clientIdentity: clientIdentity,
                            keyMaterial: Array(privateKey.publicKey.rawRepresentation))
        secret = .x25519(privateKey)
    }

    /// An RSA-OAEP handshake: draws a random 256-bit secret and wraps it (OAEP, SHA-256) to the server's
    /// RSA public key, which the client must already trust (e.g. from the server's certificate).
    /// - Throws: ``SessionError`` (`keyExchangeFailed`) for a key under 2048 bits; (`invalidIdentity`).
    public init(clientIdentity: String, cipher: SessionCipher = .aesGCM, serverRSAPublicKey: _RSA.Encryption.PublicKey) throws {
        try PayloadHeader.validate(identity: clientIdentity)
        guard serverRSAPublicKey.keySizeInBits >= 2048 else {
            throw SessionError(.keyExchangeFailed, clientIdentity: clientIdentity,
                               "the server's RSA key has \(serverRSAPublicKey.keySizeInBits) bits; at least 2048 are required")
        }
        let secretKey = SymmetricKey(size: .bits256)
        let wrapped: Data
        do {
            wrapped = try secretKey.withUnsafeBytes { try serverRSAPublicKey.encrypt($0, padding: .PKCS1_OAEP_SHA256) }
        } catch {
            throw SessionError(.keyExchangeFailed, clientIdentity: clientIdentity, "RSA-OAEP wrapping failed: \(error)")
        }
        hello = ClientHello(keyExchange: .rsaOAEP, cipher: cipher, clientIdentity: clientIdentity, keyMaterial: Array(wrapped))
        secret = .rsa(secret: secretKey, serverPublicKey: Array(serverRSAPublicKey.derRepresentation))
    }

    /// Derives the client's session from the server's answer.
    /// - Throws: ``SessionError``: (`unsupported`) if the answer names another key exchange or cipher,
    ///   (`invalidIdentity`) another client, (`keyExchangeFailed`) an invalid X25519 public key.
    public func finish(with reply: ServerHello) throws -> SecureSession {
        let identity = hello.clientIdentity
        guard reply.clientIdentity == identity else {
            throw SessionError(.invalidIdentity, clientIdentity: identity, "the server hello names client \(SessionError.quoted(reply.clientIdentity))")
        }
        guard reply.keyExchange == hello.keyExchange, reply.cipher == hello.cipher else {
            throw SessionError(.unsupported, clientIdentity: identity,
                               "the server answered \(reply.keyExchange.rawValue)/\(reply.cipher.rawValue) to \(hello.keyExchange.rawValue)/\(hello.cipher.rawValue)")
        }
        guard reply.keyMaterial.count == 32 else {
            throw SessionError(.malformed, clientIdentity: identity, "server hello: key material of \(reply.keyMaterial.count) bytes, expected 32")
        }
        let inputKeyMaterial: SymmetricKey
        let serverStaticKey: [UInt8]
        switch secret {
        case .x25519(let privateKey):
            inputKeyMaterial = try SessionKeySchedule.agree(privateKey, with: reply.keyMaterial, peer: "server", clientIdentity: identity)
            serverStaticKey = []
        case .rsa(let secretKey, let serverPublicKey):
            inputKeyMaterial = secretKey
            serverStaticKey = serverPublicKey
        }
        let transcript = SessionKeySchedule.transcript(
            keyExchange: hello.keyExchange, cipher: hello.cipher, clientIdentity: identity,
            clientKeyMaterial: hello.keyMaterial, serverKeyMaterial: reply.keyMaterial, serverStaticKey: serverStaticKey)
        let keys = SessionKeySchedule.keys(inputKeyMaterial: inputKeyMaterial, transcript: transcript)
        return SecureSession(clientIdentity: identity, role: .client, cipher: hello.cipher,
                             sendKey: keys.clientToServer, receiveKey: keys.serverToClient)
    }
}

/// The server side of the handshake: answers a ``ClientHello`` with a ``ServerHello`` and the
/// server's ``SecureSession`` for that client. One `ServerHandshake` serves every client.
///
/// ```swift
/// let server = try ServerHandshake()
/// let (reply, session) = try server.respond(to: ClientHello(serialized: received),
///                                           authenticatedIdentity: peerCertificateName)
/// send(reply.serialized())
/// ```
public struct ServerHandshake: Sendable {
    /// The ciphers the server agrees to.
    public let acceptedCiphers: Set<SessionCipher>
    /// The RSA private key (DER) for RSA-OAEP hellos; nil: RSA-OAEP refused.
    private let rsaPrivateKey: Data?
    private let rsaPublicKey: [UInt8]

    /// - Parameters:
    ///   - acceptedCiphers: the ciphers a client may ask for (default: both).
    ///   - rsaPrivateKey: the server's RSA key (2048 bits or more) to accept RSA-OAEP hellos; nil: X25519 only.
    /// - Throws: ``SessionError`` (`keyExchangeFailed`) for an RSA key under 2048 bits.
    public init(acceptedCiphers: Set<SessionCipher> = Set(SessionCipher.allCases),
                rsaPrivateKey: _RSA.Encryption.PrivateKey? = nil) throws {
        precondition(!acceptedCiphers.isEmpty, "ServerHandshake: no accepted cipher")
        self.acceptedCiphers = acceptedCiphers
        if let rsaPrivateKey {
            guard rsaPrivateKey.keySizeInBits >= 2048 else {
                throw SessionError(.keyExchangeFailed, clientIdentity: nil, "the server's RSA key has \(rsaPrivateKey.keySizeInBits) bits; at least 2048 are required")
            }
            self.rsaPrivateKey = rsaPrivateKey.derRepresentation
            self.rsaPublicKey = Array(rsaPrivateKey.publicKey.derRepresentation)
        } else {
            self.rsaPrivateKey = nil
            self.rsaPublicKey = []
        }
    }

    /// Answers `hello` with fresh server key material and derives the server's session for the client.
    /// - Parameters:
    ///   - authenticatedIdentity: who the transport says the peer is (the name in its TLS client
    ///     certificate; in memory, the endpoint's registered name). The hello must name the same client:
    ///     a self-reported identity alone never decides whose payloads are whose.
    /// - Throws: ``SessionError``: (`invalidIdentity`) for another identity, (`unsupported`) for a cipher
    ///   not accepted or RSA-OAEP without an RSA key, (`keyExchangeFailed`) for an invalid X25519 key or
    ///   a wrapped secret that does not unwrap to 32 bytes.
    public func respond(to hello: ClientHello, authenticatedIdentity: String) throws -> (reply: ServerHello, session: SecureSession) {
        switch hello.keyExchange {
        case .x25519:
            return try respond(to: hello, authenticatedIdentity: authenticatedIdentity,
                               ephemeralKey: Curve25519.KeyAgreement.PrivateKey(), serverRandom: [])
        case .rsaOAEP:
            return try respond(to: hello, authenticatedIdentity: authenticatedIdentity, ephemeralKey: nil,
                               serverRandom: SessionKeySchedule.randomBytes(32))
        }
    }

    /// ``respond(to:authenticatedIdentity:)`` with given fresh material (reference tests only).
    func respond(to hello: ClientHello, authenticatedIdentity: String, ephemeralKey: Curve25519.KeyAgreement.PrivateKey?,
                 serverRandom: [UInt8]) throws -> (reply: ServerHello, session: SecureSession) {
        let identity = hello.clientIdentity
        try PayloadHeader.validate(identity: identity)
        guard identity == authenticatedIdentity else {
            throw SessionError(.invalidIdentity, clientIdentity: authenticatedIdentity,
                               "the client hello names client \(SessionError.quoted(identity)), the transport authenticated \(SessionError.quoted(authenticatedIdentity))")
        }
        guard acceptedCiphers.contains(hello.cipher) else {
            throw SessionError(.unsupported, clientIdentity: identity,
                               "cipher \(hello.cipher.rawValue) is not accepted (accepted: \(acceptedCiphers.map(\.rawValue).sorted()))")
        }
        let inputKeyMaterial: SymmetricKey
        let serverKeyMaterial: [UInt8]
        let serverStaticKey: [UInt8]
        switch hello.keyExchange {
        case .x25519:
            guard let ephemeralKey else { preconditionFailure("respond: X25519 needs an ephemeral key") }
            inputKeyMaterial = try SessionKeySchedule.agree(ephemeralKey, with: hello.keyMaterial, peer: "client", clientIdentity: identity)
            serverKeyMaterial = Array(ephemeralKey.publicKey.rawRepresentation)
            serverStaticKey = []
        case .rsaOAEP:
            guard let rsaPrivateKey else {
                throw SessionError(.unsupported, clientIdentity: identity, "RSA-OAEP key exchange asked for, but the server has no RSA key")
            }
            precondition(serverRandom.count == 32, "respond: RSA-OAEP needs 32 random bytes")
            let secret: Data
            do {
                let key = try _RSA.Encryption.PrivateKey(derRepresentation: rsaPrivateKey)
                secret = try key.decrypt(hello.keyMaterial, padding: .PKCS1_OAEP_SHA256)
            } catch {
                throw SessionError(.keyExchangeFailed, clientIdentity: identity, "the RSA-OAEP wrapped secret does not unwrap with the server's key")
            }
            guard secret.count == 32 else {
                throw SessionError(.keyExchangeFailed, clientIdentity: identity, "the RSA-OAEP wrapped secret has \(secret.count) bytes, expected 32")
            }
            inputKeyMaterial = SymmetricKey(data: secret)
            serverKeyMaterial = serverRandom
            serverStaticKey = rsaPublicKey
        }
        let transcript = SessionKeySchedule.transcript(
            keyExchange: hello.keyExchange, cipher: hello.cipher, clientIdentity: identity,
            clientKeyMaterial: hello.keyMaterial, serverKeyMaterial: serverKeyMaterial, serverStaticKey: serverStaticKey)
        let keys = SessionKeySchedule.keys(inputKeyMaterial: inputKeyMaterial, transcript: transcript)
        let reply = ServerHello(keyExchange: hello.keyExchange, cipher: hello.cipher, clientIdentity: identity,
                                keyMaterial: serverKeyMaterial)
        let session = SecureSession(clientIdentity: identity, role: .server, cipher: hello.cipher,
                                    sendKey: keys.serverToClient, receiveKey: keys.clientToServer)
        return (reply, session)
    }
}
