import Foundation

extension SplitMessageKind {
    /// The session layer's type code for this kind (authenticated in every sealed header).
    public var messageType: MessageType {
        switch self {
        case .stepBegin: return .stepBegin
        case .activations: return .activations
        case .serverOutput: return .serverOutput
        case .outputGradients: return .outputGradients
        case .activationGradients: return .activationGradients
        case .stepResult: return .stepResult
        case .adapterRequest: return .adapterRequest
        case .adapterUpdate: return .adapterUpdate
        case .aggregate: return .aggregate
        case .acknowledgement: return .acknowledgement
        case .gradientAggregate: return .gradientAggregate
        case .checkpoint: return .checkpoint
        case .restore: return .restore
        case .syncRequest: return .syncRequest
        case .syncState: return .syncState
        }
    }

    /// The kind of a session type code.
    /// - Throws: ``ProtocolError`` for a type this protocol does not use.
    public init(messageType: MessageType) throws {
        guard let kind = SplitMessageKind.allCases.first(where: { $0.messageType == messageType }) else {
            throw ProtocolError("message type \(messageType) is not part of the split protocol")
        }
        self = kind
    }
}

/// One end of a client's sealed channel: every message is sealed with that client's ``SecureSession``
/// (its kind, round and step in the authenticated header; the per-direction sequence number in the
/// nonce), so a payload for another client, replayed, reordered or changed fails to open.
public final class SessionProtection: PayloadProtection {
    public let session: SecureSession

    public init(session: SecureSession) {
        self.session = session
    }

    public func seal(_ message: SplitMessage) throws -> [UInt8] {
        try session.seal(message.body, type: message.kind.messageType, round: message.round, step: message.step).serialized()
    }

    public func open(_ bytes: [UInt8]) throws -> SplitMessage {
        let payload = try SealedPayload(serialized: bytes)
        let header = payload.header
        let kind = try SplitMessageKind(messageType: header.type)
        let body = try session.open(payload, type: header.type, round: header.round, step: header.step)
        return SplitMessage(kind: kind, round: header.round, step: header.step, body: body)
    }

    /// Both ends of a fresh session for `client`, by an X25519 handshake run in process (the identity
    /// stands for the one a TLS certificate proves in a real deployment).
    public static func link(for client: any SplitClientEndpoint, cipher: SessionCipher = .aesGCM) throws -> InMemoryTransport.Link {
        let handshake = try ClientHandshake(clientIdentity: client.clientID, cipher: cipher)
        let (reply, serverSession) = try ServerHandshake().respond(to: handshake.hello, authenticatedIdentity: client.clientID)
        let clientSession = try handshake.finish(with: reply)
        return InMemoryTransport.Link(endpoint: client, serverSide: SessionProtection(session: serverSession),
                                      clientSide: SessionProtection(session: clientSession))
    }
}
