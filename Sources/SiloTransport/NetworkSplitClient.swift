import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import SiloFederation

/// A data owner's side of a networked split run: connects to the server (mutual TLS 1.3), runs the
/// session handshake (Join), builds its party from the run's configuration, then answers the server's
/// sealed requests on its stream until the server says the run is over.
///
/// ```swift
/// let outcome = try await NetworkSplitClient.run(host: "server.example", port: 7443,
///                                                security: .mutualTLS(pki, name: "client-1"), name: "client-1") { json in
///     try SplitDeployment.makeClient(decode(json), clientID: "client-1")
/// }
/// ```
public enum NetworkSplitClient {
    /// How the run ended for this client.
    public struct Outcome: Sendable {
        /// The server's last word (`run complete`, or why it dropped this client).
        public var reason: String
        /// Requests answered.
        public var requests: Int
        /// Whether the run completed with this client in it.
        public var completed: Bool { reason == "run complete" }
    }

    /// What a client keeps across connections: its party (model, data, optimizer) and the run's
    /// configuration, made once at the first Join.
    final class Party: @unchecked Sendable {
        var endpoint: (any SplitClientEndpoint)?
        var configurationJSON: String?
        var requests = 0
        /// Set at each successful Join (a later loss of the connection starts a new reconnect window).
        var joined = false
    }

    /// Connects, joins and serves one run. When the connection breaks before the server ends the run
    /// (the server restarted, the network failed), the client keeps its model and data, reconnects and
    /// joins again for up to ``NetworkSettings/reconnectTimeout`` seconds; the server then rolls it back
    /// to its checkpoint (a resumed server) or brings it up to date (a running one).
    /// - Parameters:
    ///   - name: this client's name: its certificate's name, and the identity in its session hello.
    ///   - settings: the chunk size is the server's (from Join); the timeouts are local.
    ///   - makeEndpoint: builds the client's party from the run's configuration (JSON) the server sent.
    /// - Throws: ``TransportError`` (`refused`) with the server's reason when it refuses this client;
    ///   (`closed`) when the connection fails and cannot be made again; the endpoint's errors.
    public static func run(host: String, port: Int, security: ConnectionSecurity, name: String,
                           settings: NetworkSettings = NetworkSettings(),
                           log: @escaping @Sendable (String) -> Void = { _ in },
                           makeEndpoint: @escaping @Sendable (String) throws -> any SplitClientEndpoint) async throws -> Outcome {
        if security.isInsecure {
            log("WARNING: --insecure: plaintext HTTP/2, no TLS; anyone on the path sees who talks to whom and can cut the run.")
        }
        let party = Party()
        // The server may still be loading its blocks: retry a refused connection until the deadline.
        var deadline = Date().addingTimeInterval(settings.connectTimeout)
        var reconnecting = false
        var attempt = 0
        while true {
            do {
                switch security {
                case .insecure:
                    let transport = try ClientConnection.plaintext(host: host, port: port, settings: settings)
                    return try await serve(transport, host: host, port: port, name: name, settings: settings, party: party, log: log, makeEndpoint: makeEndpoint)
                case .mutualTLS(let pki, let certificate):
                    let transport = try await ClientConnection.mutualTLS(host: host, port: port, pki: pki, name: certificate, settings: settings)
                    return try await serve(transport, host: host, port: port, name: name, settings: settings, party: party, log: log, makeEndpoint: makeEndpoint)
                }
            } catch let error as TransportError {
                if party.joined, error.code == .closed {
                    // The connection broke after a Join: forget the step in flight and try to rejoin.
                    party.joined = false
                    guard settings.reconnectTimeout > 0 else { throw error }
                    party.endpoint?.connectionLost()
                    deadline = Date().addingTimeInterval(settings.reconnectTimeout)
                    reconnecting = true
                    attempt = 0
                    log("\(error.message); reconnecting for up to \(Int(settings.reconnectTimeout)) s")
                    continue
                }
                // Before the first Join only an unreachable server is worth waiting for; while
                // reconnecting, also a refusal (the server may not have noticed the old connection
                // is gone) and a broken stream.
                party.joined = false
                let retryable = error.code == .unreachable || (reconnecting && (error.code == .refused || error.code == .closed))
                guard retryable, Date() < deadline else {
                    if reconnecting { throw TransportError(error.code, "could not rejoin \(host):\(port) within \(Int(settings.reconnectTimeout)) s: \(error.message)") }
                    throw error
                }
                if attempt == 0, !reconnecting { log("\(error.message); retrying for up to \(Int(settings.connectTimeout)) s") }
                attempt += 1
                try await Task.sleep(for: .milliseconds(min(2000, 100 * (1 << min(attempt, 5)))))
            }
        }
    }

    private static func serve<Transport: ClientTransport>(
        _ transport: Transport, host: String, port: Int, name: String, settings: NetworkSettings, party: Party,
        log: @escaping @Sendable (String) -> Void,
        makeEndpoint: @escaping @Sendable (String) throws -> any SplitClientEndpoint
    ) async throws -> Outcome {
        var options = CallOptions.defaults
        options.maxRequestMessageBytes = settings.maxMessageBytes
        options.maxResponseMessageBytes = settings.maxMessageBytes
        let callOptions = options
        return try await withGRPCClient(transport: transport) { client in
            let split = Silo_V1_Split.Client(wrapping: client)
            let handshake = try ClientHandshake(clientIdentity: name)
            var request = Silo_V1_JoinRequest()
            request.clientHello = Data(handshake.hello.serialized())
            let reply: Silo_V1_JoinReply
            do {
                reply = try await split.join(request, options: callOptions)
            } catch let error as RPCError {
                if error.code == .alreadyExists {
                    // The server has not yet noticed that this client's previous connection is gone.
                    throw TransportError(.unreachable, "the server at \(host):\(port) still holds \(name)'s previous connection: \(describe(error))")
                }
                let hint = error.code == .unavailable
                    ? " (the TLS handshake failed: check that this client's certificate is signed by the server's CA and that ca.pem is the server's CA)" : ""
                throw TransportError(.refused, "the server at \(host):\(port) refused \(name): \(describe(error))\(hint)")
            }
            let session = try handshake.finish(with: ServerHello(serialized: [UInt8](reply.serverHello)))
            let protection = UncheckedBox(SessionProtection(session: session))
            let chunkBytes = Int(clamping: reply.chunkBytes)
            guard chunkBytes > 0, chunkBytes <= 64 << 20 else {
                throw TransportError(.malformed, "the server announced chunks of \(reply.chunkBytes) bytes")
            }
            if let known = party.configurationJSON {
                guard known == reply.configurationJson else {
                    throw TransportError(.malformed, "the server at \(host):\(port) now runs another configuration than the one this client joined; start the client again to join the new run")
                }
                log("rejoined \(host):\(port) as \(name)")
            } else {
                log("joined \(host):\(port) as \(name); preparing the model and data")
                party.endpoint = try makeEndpoint(reply.configurationJson)
                party.configurationJSON = reply.configurationJson
            }
            guard let endpoint = party.endpoint else { throw TransportError(.closed, "no party") }
            let box = UncheckedBox(endpoint)
            let (answers, answersContinuation) = AsyncStream.makeStream(of: [UInt8].self)
            let maxPayload = Int(clamping: reply.maxPayloadBytes)
            do {
                return try await split.exchange(options: callOptions, requestProducer: { writer in
                    for await payload in answers {
                        for frame in PayloadAssembler.frames(for: payload, chunkBytes: chunkBytes) { try await writer.write(frame) }
                    }
                }, onResponse: { response in
                    defer { answersContinuation.finish() }
                    party.joined = true
                    var assembler = PayloadAssembler(chunkBytes: chunkBytes, maxPayloadBytes: maxPayload, sender: "the server")
                    for try await frame in response.messages {
                        if frame.finished {
                            log("the server ended the run: \(frame.reason)")
                            party.joined = false
                            return Outcome(reason: frame.reason, requests: party.requests)
                        }
                        guard let payload = try assembler.add(frame) else { continue }
                        let message = try protection.value.open(payload)
                        let answer = try box.value.handle(message)
                        answersContinuation.yield(try protection.value.seal(answer))
                        party.requests += 1
                    }
                    throw TransportError(.closed, "the server closed the stream without ending the run (after \(party.requests) requests)")
                })
            } catch let error as RPCError {
                // A broken connection may be made again; a stream the server closed for what this client
                // sent (malformed or oversized frames) is not retried.
                let broken: Set<RPCError.Code> = [.unavailable, .unknown, .cancelled, .deadlineExceeded, .aborted, .internalError]
                guard broken.contains(error.code) else {
                    throw TransportError(.refused, "the server at \(host):\(port) closed \(name)'s stream: \(describe(error))")
                }
                throw TransportError(.closed, "the connection to \(host):\(port) failed: \(describe(error))")
            }
        }
    }

    static func describe(_ error: RPCError) -> String {
        var text = "\(error.code): \(error.message)"
        if let cause = error.cause { text += " (\(cause))" }
        return text
    }
}
