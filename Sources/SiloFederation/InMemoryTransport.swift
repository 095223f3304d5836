import Foundation

/// Seals and opens the messages of one side of one client's channel. The session types
/// (``SessionProtection``) implement it; every transport goes through it, so a simulation pays the
/// real cost of sealing and a test exercises the real checks.
public protocol PayloadProtection: AnyObject {
    /// The sealed, serialised bytes of `message` (its kind, round and step authenticated).
    func seal(_ message: SplitMessage) throws -> [UInt8]
    /// The message in `bytes`, after checking that it was sealed by this channel's peer, in order, unchanged.
    func open(_ bytes: [UInt8]) throws -> SplitMessage
}

/// Runs the server and every client in one process: each request is sealed with the server's session of
/// that client, handed over as bytes, opened with the client's session, handled, and the response goes
/// back the same way. Bytes are counted by message kind as they would cross a network.
public final class InMemoryTransport: SplitTransport {
    /// One client as the transport sees it: its endpoint and both ends of its channel.
    public struct Link {
        public let endpoint: any SplitClientEndpoint
        /// The server's end of the channel (seals requests, opens responses).
        public let serverSide: any PayloadProtection
        /// The client's end (opens requests, seals responses).
        public let clientSide: any PayloadProtection

        public init(endpoint: any SplitClientEndpoint, serverSide: any PayloadProtection, clientSide: any PayloadProtection) {
            self.endpoint = endpoint
            self.serverSide = serverSide
            self.clientSide = clientSide
        }
    }

    private var links: [String: Link] = [:]
    public let clientIDs: [String]
    public private(set) var traffic = TrafficCounter()
    private let timer: WorkTimer
    /// Client IDs whose next response is replaced by `bytes` (fault injection for tests of a client
    /// that sends garbage).
    private var injected: [String: [UInt8]] = [:]

    public var sealingSeconds: Double { timer.value(.sealing) }

    public init(links: [Link], timer: WorkTimer = WorkTimer()) {
        self.clientIDs = links.map(\.endpoint.clientID)
        for link in links { self.links[link.endpoint.clientID] = link }
        self.timer = timer
    }

    public func exchange(_ request: SplitMessage, with clientID: String) throws -> SplitMessage {
        guard let link = links[clientID] else { throw ProtocolError("no client \(clientID) on this transport") }
        let requestBytes = try timer.measure(.sealing) { try link.serverSide.seal(request) }
        traffic.record(request, sealedBytes: requestBytes.count)
        let responseBytes: [UInt8]
        do {
            let opened = try timer.measure(.sealing) { try link.clientSide.open(requestBytes) }
            let response = try link.endpoint.handle(opened)
            responseBytes = try timer.measure(.sealing) { try link.clientSide.seal(response) }
            traffic.record(response, sealedBytes: responseBytes.count)
        } catch {
            throw ClientFailure(clientID: clientID, underlying: error)
        }
        let delivered = injected.removeValue(forKey: clientID) ?? responseBytes
        return try timer.measure(.sealing) { try link.serverSide.open(delivered) }
    }

    /// Replaces `clientID`'s next response on the wire by `bytes` (for fault-injection tests).
    public func injectResponse(_ bytes: [UInt8], for clientID: String) {
        injected[clientID] = bytes
    }
}
