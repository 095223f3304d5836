import Foundation

/// What a message between the server and a client is for. The type, the round and the step travel in
/// the sealed payload's header and are authenticated as associated data, so a message cannot be replayed
/// as another type or into another step.
public enum SplitMessageKind: String, Sendable, CaseIterable, Codable {
    /// server → client: start step (round, step); the client answers with ``activations``.
    case stepBegin = "step_begin"
    /// client → server: h_a (B, T, C), the output of the client's input part.
    case activations
    /// server → client: h_b (B, T, C), the output of the server's blocks.
    case serverOutput = "server_output"
    /// client → server: dL/dh_b (B, T, C) and the number of loss tokens behind it.
    case outputGradients = "output_gradients"
    /// server → client: dL/dh_a (B, T, C); one scalar, 1 when the client must hold its optimizer step
    /// and send its gradients (per-step gradient aggregation), 0 when it steps on its own.
    case activationGradients = "activation_gradients"
    /// client → server: the step's loss and counts, after the client's optimizer step; with per-step
    /// gradient aggregation, also the client's gradients of its trainables (flattened).
    case stepResult = "step_result"
    /// server → client: send your trainable values for aggregation.
    case adapterRequest = "adapter_request"
    /// client → server: the client's trainable values (flattened) and its weight.
    case adapterUpdate = "adapter_update"
    /// server → client: the aggregated trainable values.
    case aggregate
    /// client → server: acknowledgement.
    case acknowledgement
    /// server → client: the clients' gradients combined (loss-token weighted); every client applies it
    /// with its own optimizer, so their client-side trainables stay identical.
    case gradientAggregate = "gradient_aggregate"
    /// server → client: save your state (trainables, optimizer, data position) as checkpoint `step`;
    /// the server writes its own checkpoint once every client has acknowledged.
    case checkpoint
    /// server → client: roll back to your checkpoint `step` (the server resumed from its checkpoint of
    /// that step).
    case restore
    /// server → client: send your trainables and optimizer state (for a client that rejoins).
    case syncRequest = "sync_request"
    /// client → server: the trainables and optimizer state (a ``WireTensorBundle``); server → a
    /// rejoining client: take them as yours (it answers ``acknowledgement``).
    case syncState = "sync_state"
}

/// One plaintext message of the split protocol (what is sealed). The body is a ``WireTensor`` encoding.
public struct SplitMessage: Sendable {
    public var kind: SplitMessageKind
    public var round: Int
    public var step: Int
    public var body: [UInt8]

    public init(kind: SplitMessageKind, round: Int, step: Int, body: [UInt8] = []) {
        self.kind = kind
        self.round = round
        self.step = step
        self.body = body
    }
}

/// The client side of the protocol: answers one request message with one response message.
/// ``SplitClient`` implements it; a transport delivers requests to it.
public protocol SplitClientEndpoint: AnyObject {
    /// The client's identity (its certificate name in a real deployment).
    var clientID: String { get }
    /// Handles one request from the server and returns the response.
    /// - Throws: ``ProtocolError`` for a message out of place; data or model errors of the client.
    func handle(_ request: SplitMessage) throws -> SplitMessage
    /// The connection to the server broke: forget the step in flight (the server drops it, or rolls back).
    func connectionLost()
}

extension SplitClientEndpoint {
    public func connectionLost() {}
}

/// How the coordinator reaches the clients: a request/response exchange with one client at a time.
/// The in-memory transport (``InMemoryTransport``) runs every party in one process through the same
/// sealing path as a networked transport; the gRPC transport (SiloTransport) carries the same sealed
/// payloads over mutual TLS.
public protocol SplitTransport: AnyObject {
    /// The clients reachable through this transport, in a fixed order.
    var clientIDs: [String] { get }
    /// Sends `request` to `clientID` and returns its response, both sealed with that client's session.
    /// - Throws: ``ProtocolError`` for a response of the wrong kind, round or step; the session's error for
    ///   a payload that fails to open; the client's error (wrapped with its identity).
    func exchange(_ request: SplitMessage, with clientID: String) throws -> SplitMessage
    /// Bytes and messages so far, by message kind (sealed sizes, as they cross the wire).
    var traffic: TrafficCounter { get }
    /// Seconds spent sealing and opening payloads so far.
    var sealingSeconds: Double { get }
    /// Whether a client that left can come back during the run (a networked transport); the coordinator
    /// then waits for clients instead of failing when fewer than its minimum are left.
    var acceptsRejoins: Bool { get }
    /// The clients connected now that are not in `active` (they rejoined), once `active` plus them number
    /// at least `minimum`; blocks until then. A transport without rejoins returns [] at once.
    func waitForClients(active: [String], minimum: Int, log: (String) -> Void) throws -> [String]
    /// The coordinator dropped `clientID` from the run: a networked transport tells the client why and
    /// closes its stream (it may join again later as a new party).
    func dropped(_ clientID: String, reason: String)
}

extension SplitTransport {
    public var acceptsRejoins: Bool { false }
    public func waitForClients(active: [String], minimum: Int, log: (String) -> Void) throws -> [String] { [] }
    public func dropped(_ clientID: String, reason: String) {}
}

/// Bytes and message counts by message kind.
public struct TrafficCounter: Sendable, Codable, Equatable {
    public private(set) var bytes: [String: Int] = [:]
    public private(set) var messages: [String: Int] = [:]

    public init() {}

    /// Bytes by message kind had every tensor travelled uncompressed (equal to ``bytes`` without a codec).
    public private(set) var uncompressedBytes: [String: Int] = [:]

    /// Records one message of `count` bytes on the wire; `uncompressed`: its size without the codec.
    public mutating func record(_ kind: SplitMessageKind, bytes count: Int, uncompressed: Int? = nil) {
        bytes[kind.rawValue, default: 0] += count
        uncompressedBytes[kind.rawValue, default: 0] += uncompressed ?? count
        messages[kind.rawValue, default: 0] += 1
    }

    /// Records a sealed message whose plaintext body is `body`: the uncompressed size replaces the body's
    /// compressed length by its plain length.
    public mutating func record(_ message: SplitMessage, sealedBytes count: Int) {
        let plain = WireTensor.uncompressedSize(of: message.body).map { count - message.body.count + $0 }
        record(message.kind, bytes: count, uncompressed: plain)
    }

    /// All bytes.
    public var totalBytes: Int { bytes.values.reduce(0, +) }
}

/// An error raised by one client, with the client's identity, so the coordinator can drop that client
/// and carry on with the others.
public struct ClientFailure: Error, CustomStringConvertible {
    public let clientID: String
    public let underlying: any Error

    public init(clientID: String, underlying: any Error) {
        self.clientID = clientID
        self.underlying = underlying
    }

    public var description: String { "client \(clientID): \(underlying)" }
}
