import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import NIOCore
import NIOSSL
import SiloFederation

/// One client's channel as the server sees it: its sealed session, the stream it opened, and the
/// answers that arrived on it.
final class ClientLink: @unchecked Sendable {
    enum Outgoing: Sendable {
        case payload([UInt8])
        case finish(String)
    }

    let clientID: String
    private let condition = NSCondition()
    private var protection: SessionProtection?
    private var outbound: AsyncStream<Outgoing>.Continuation?
    private var inbox: [Result<[UInt8], any Error>] = []
    private var closedReason: String?
    /// Dropped by the coordinator and not joined again since: not offered for rejoining.
    private var retired = false
    /// Joins so far; `admitted` is the join the coordinator trains with (0: none yet). A client that
    /// joins again (it restarted, or its connection broke) is a new party until it is admitted again.
    private(set) var generation = 0
    var admitted = 0

    init(clientID: String) {
        self.clientID = clientID
    }

    /// A fresh session from Join; refused while a stream is open (one connection per client).
    func join(_ session: SessionProtection) throws {
        condition.lock(); defer { condition.unlock() }
        guard outbound == nil else { throw TransportError(.refused, "\(clientID) is connected already; a second connection under its name is refused") }
        protection = session
        closedReason = nil
        retired = false
        generation += 1
        inbox = []
    }

    /// Attaches the client's Exchange stream.
    func attach(_ continuation: AsyncStream<Outgoing>.Continuation) throws {
        condition.lock(); defer { condition.unlock() }
        guard protection != nil else { throw TransportError(.refused, "\(clientID) opened its stream before joining: call Join first") }
        guard outbound == nil else { throw TransportError(.refused, "\(clientID) has a stream open already") }
        outbound = continuation
        condition.broadcast()
    }

    /// The stream ended (the client left, or the run is over for it).
    func detach(_ reason: String) {
        condition.lock(); defer { condition.unlock() }
        outbound?.finish()
        outbound = nil
        protection = nil
        if closedReason == nil { closedReason = reason }
        inbox.append(.failure(TransportError(.closed, "\(clientID): \(reason)")))
        condition.broadcast()
    }

    var isAttached: Bool {
        condition.lock(); defer { condition.unlock() }
        return outbound != nil
    }

    /// Joined, with its stream open, and not dropped since it joined: it may take part.
    var isAvailable: Bool {
        condition.lock(); defer { condition.unlock() }
        return outbound != nil && !retired
    }

    /// Joined again since the coordinator admitted it: the party it trained with is gone.
    var hasRejoined: Bool {
        condition.lock(); defer { condition.unlock() }
        return admitted != 0 && generation != admitted
    }

    /// Marks the current join as the one the coordinator trains with; false when it was another.
    func admit() {
        condition.lock(); defer { condition.unlock() }
        admitted = generation
    }

    /// An answer (or the reason none will come) from the stream.
    func deliver(_ result: Result<[UInt8], any Error>) {
        condition.lock(); defer { condition.unlock() }
        inbox.append(result)
        condition.broadcast()
    }

    func session() throws -> SessionProtection {
        condition.lock(); defer { condition.unlock() }
        guard let protection, outbound != nil else {
            throw TransportError(.closed, "\(clientID) is not connected\(closedReason.map { " (\($0))" } ?? "")")
        }
        return protection
    }

    func send(_ payload: [UInt8]) throws {
        condition.lock(); defer { condition.unlock() }
        guard let outbound else { throw TransportError(.closed, "\(clientID) is not connected\(closedReason.map { " (\($0))" } ?? "")") }
        inbox.removeAll()
        outbound.yield(.payload(payload))
    }

    /// Waits for the next answer.
    /// - Throws: ``TransportError`` (`timeout`) after `timeout` seconds; the stream's error.
    func receive(timeout: TimeInterval, waitingFor what: String) throws -> [UInt8] {
        let deadline = Date().addingTimeInterval(timeout)
        condition.lock(); defer { condition.unlock() }
        while inbox.isEmpty {
            if !condition.wait(until: deadline) && inbox.isEmpty {
                throw TransportError(.timeout, "\(clientID) did not answer \(what) within \(timeout) s")
            }
        }
        return try inbox.removeFirst().get()
    }

    /// Ends the client's stream with a last frame saying why.
    func finish(_ reason: String) {
        condition.lock(); defer { condition.unlock() }
        retired = true
        if closedReason == nil { closedReason = reason }
        outbound?.yield(.finish(reason))
        outbound?.finish()
    }
}

/// The split protocol's transport between machines: the coordinator's requests go to each client as
/// sealed payloads over that client's gRPC stream (mutual TLS 1.3), chunked; its answers come back the
/// same way. The sessions are the ones from SiloFederation, bound at Join to the name in the client's
/// TLS certificate — the same sealing path as ``InMemoryTransport``.
///
/// ``exchange(_:with:)`` blocks its thread until the answer arrives or the timeout passes: run the
/// coordinator on a thread of its own (``NetworkSplitServer/runCoordinator(_:)``), never on Swift's
/// cooperative pool.
public final class GRPCSplitTransport: SplitTransport, @unchecked Sendable {
    public let clientIDs: [String]
    private let links: [String: ClientLink]
    private let settings: NetworkSettings
    private let timer: WorkTimer
    private let lock = NSLock()
    private var counter = TrafficCounter()
    private var frameBytes = 0
    private var payloadBytes = 0

    init(links: [ClientLink], settings: NetworkSettings, timer: WorkTimer) {
        self.clientIDs = links.map(\.clientID)
        self.links = Dictionary(uniqueKeysWithValues: links.map { ($0.clientID, $0) })
        self.settings = settings
        self.timer = timer
    }

    public var traffic: TrafficCounter {
        lock.lock(); defer { lock.unlock() }
        return counter
    }

    public var sealingSeconds: Double { timer.value(.sealing) }

    /// Sealed payload bytes and the bytes of the protobuf frames that carried them (both directions).
    public var wireBytes: (payload: Int, frames: Int) {
        lock.lock(); defer { lock.unlock() }
        return (payloadBytes, frameBytes)
    }

    private func record(_ message: SplitMessage, bytes: Int) {
        lock.lock(); defer { lock.unlock() }
        counter.record(message, sealedBytes: bytes)
        payloadBytes += bytes
        let chunks = (bytes + settings.chunkBytes - 1) / settings.chunkBytes
        // Each frame: the chunk (tag + length + bytes), `last`, and the size on the first.
        frameBytes += bytes + chunks * 8 + 11
    }

    public var acceptsRejoins: Bool { true }

    /// Blocks until the clients that may train number at least `minimum`, logging who is missing every
    /// 30 s; returns those that are not in `active` or joined again since they were admitted (they
    /// restarted, or their connection broke), and admits them.
    public func waitForClients(active: [String], minimum: Int, log: (String) -> Void) throws -> [String] {
        var lastReport = Date.distantPast
        while true {
            let returning = clientIDs.filter { id in
                guard let link = links[id], link.isAvailable else { return false }
                return !active.contains(id) || link.hasRejoined
            }
            let staying = active.filter { !returning.contains($0) }
            if staying.count + returning.count >= minimum {
                for id in returning { links[id]?.admit() }
                return returning
            }
            if Date().timeIntervalSince(lastReport) >= 30 {
                let missing = clientIDs.filter { !active.contains($0) && !returning.contains($0) }
                log("waiting for clients: \(active.count + returning.count) connected, at least \(minimum) needed (missing: \(missing.joined(separator: ", ")))")
                lastReport = Date()
            }
            Thread.sleep(forTimeInterval: 0.05)
        }
    }

    public func dropped(_ clientID: String, reason: String) {
        // A client that joined again is a new party, admitted at the next pass: its new stream stays.
        guard let link = links[clientID], !link.hasRejoined else { return }
        link.finish("dropped from the run: \(reason)")
    }

    public func exchange(_ request: SplitMessage, with clientID: String) throws -> SplitMessage {
        guard let link = links[clientID] else { throw ProtocolError("no client \(clientID) on this server") }
        // A client that joined again mid-run is a new party (fresh process or lost step): it sits out
        // until the coordinator admits it again at the next pass, and its new stream stays open.
        if link.hasRejoined {
            throw ClientFailure(clientID: clientID, underlying: TransportError(.closed, "\(clientID) reconnected during the run; it rejoins at the next step"))
        }
        if link.admitted == 0 { link.admit() }
        do {
            let session = try link.session()
            let requestBytes = try timer.measure(.sealing) { try session.seal(request) }
            record(request, bytes: requestBytes.count)
            try link.send(requestBytes)
            let responseBytes = try link.receive(timeout: settings.responseTimeout,
                                                 waitingFor: "\(request.kind.rawValue) (round \(request.round), step \(request.step))")
            let response = try timer.measure(.sealing) { try session.open(responseBytes) }
            record(response, bytes: responseBytes.count)
            return response
        } catch {
            // The client is dropped by the coordinator: end its stream so it does not wait for more.
            link.finish("dropped from the run: \(error)")
            throw ClientFailure(clientID: clientID, underlying: error)
        }
    }
}

/// The gRPC service: Join (session handshake, bound to the TLS identity) and Exchange (the stream of
/// sealed payloads).
final class SplitService: Silo_V1_Split.SimpleServiceProtocol {
    let links: [String: ClientLink]
    let allowList: [String]
    let insecure: Bool
    let registry: PeerRegistry
    let settings: NetworkSettings
    let configurationJSON: String
    let handshake: ServerHandshake
    let log: @Sendable (String) -> Void

    init(links: [ClientLink], insecure: Bool, registry: PeerRegistry, settings: NetworkSettings, configurationJSON: String,
         log: @escaping @Sendable (String) -> Void) throws {
        self.links = Dictionary(uniqueKeysWithValues: links.map { ($0.clientID, $0) })
        self.allowList = links.map(\.clientID)
        self.insecure = insecure
        self.registry = registry
        self.settings = settings
        self.configurationJSON = configurationJSON
        self.handshake = try ServerHandshake()
        self.log = log
    }

    /// The allow-listed name the peer's TLS certificate proves.
    /// - Throws: `RPCError` `unauthenticated` without a verified certificate, `permissionDenied` for a
    ///   certificate whose names are not on the allow-list.
    private func authenticatedName(_ context: ServerContext, method: String) throws -> String? {
        if insecure { return nil }
        guard let peer = registry.peer(at: context.remotePeer) else {
            log("\(method) from \(context.remotePeer) refused: no verified TLS client certificate")
            throw RPCError(code: .unauthenticated, message: "no verified TLS client certificate on this connection")
        }
        guard peer.tlsVersion == .tlsv13 else {
            log("\(method) from \(context.remotePeer) refused: TLS version \(peer.tlsVersion.map { "\($0)" } ?? "unknown"), 1.3 required")
            throw RPCError(code: .unauthenticated, message: "TLS 1.3 required")
        }
        guard let name = peer.names.first(where: { allowList.contains($0) }) else {
            let names = peer.names.joined(separator: ", ")
            log("\(method) from \(context.remotePeer) refused: certificate \(names.isEmpty ? "without a name" : "for \(names)") is not on the allow-list (\(allowList.joined(separator: ", ")))")
            throw RPCError(code: .permissionDenied, message: "certificate \(names.isEmpty ? "without a name" : "for \(names)") is not on this server's allow-list (\(allowList.joined(separator: ", ")))")
        }
        return name
    }

    func join(request: Silo_V1_JoinRequest, context: ServerContext) async throws -> Silo_V1_JoinReply {
        let certified = try authenticatedName(context, method: "Join")
        let hello: ClientHello
        do {
            hello = try ClientHello(serialized: [UInt8](request.clientHello))
        } catch {
            log("Join from \(context.remotePeer) refused: \(error)")
            throw RPCError(code: .invalidArgument, message: "malformed client hello: \(error)")
        }
        let identity = certified ?? hello.clientIdentity
        guard let link = links[identity] else {
            log("Join from \(context.remotePeer) refused: \(identity) is not on the allow-list (insecure mode)")
            throw RPCError(code: .permissionDenied, message: "\(identity) is not on this server's allow-list (\(allowList.joined(separator: ", ")))")
        }
        do {
            // The hello must name the certificate's identity: the session keys are bound to it.
            let (reply, session) = try handshake.respond(to: hello, authenticatedIdentity: identity)
            try link.join(SessionProtection(session: session))
            if insecure { insecurePeers.withLock { $0[context.remotePeer] = identity } }
            log("\(identity) joined from \(context.remotePeer)\(insecure ? " (insecure: identity self-reported)" : "")")
            var answer = Silo_V1_JoinReply()
            answer.serverHello = Data(reply.serialized())
            answer.configurationJson = configurationJSON
            answer.maxPayloadBytes = UInt64(settings.maxPayloadBytes)
            answer.chunkBytes = UInt64(settings.chunkBytes)
            return answer
        } catch let error as TransportError {
            log("Join of \(identity) refused: \(error)")
            throw RPCError(code: .alreadyExists, message: error.message)
        } catch {
            log("Join of \(identity) from \(context.remotePeer) refused: \(error)")
            throw RPCError(code: .permissionDenied, message: "\(error)")
        }
    }

    func exchange(request: RPCAsyncSequence<Silo_V1_Frame, any Error>, response: RPCWriter<Silo_V1_Frame>,
                  context: ServerContext) async throws {
        // Insecure mode: the name the client joined with over this connection.
        let identity = try authenticatedName(context, method: "Exchange") ?? insecurePeers.withLock { $0[context.remotePeer] }
        guard let identity, let link = links[identity] else {
            log("Exchange from \(context.remotePeer) refused: no client joined over this connection")
            throw RPCError(code: .failedPrecondition, message: "no client joined over this connection: call Join first")
        }
        let (outgoing, continuation) = AsyncStream.makeStream(of: ClientLink.Outgoing.self)
        do {
            try link.attach(continuation)
        } catch {
            log("Exchange of \(link.clientID) refused: \(error)")
            throw RPCError(code: .failedPrecondition, message: "\(error)")
        }
        log("\(link.clientID) opened its stream")
        let settings = self.settings
        let log = self.log
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    for await item in outgoing {
                        switch item {
                        case .payload(let bytes):
                            for frame in PayloadAssembler.frames(for: bytes, chunkBytes: settings.chunkBytes) {
                                try await response.write(frame)
                            }
                        case .finish(let reason):
                            var frame = Silo_V1_Frame()
                            frame.finished = true
                            frame.reason = reason
                            try await response.write(frame)
                            return
                        }
                    }
                }
                group.addTask {
                    var assembler = PayloadAssembler(chunkBytes: settings.chunkBytes, maxPayloadBytes: settings.maxPayloadBytes,
                                                     sender: "client \(link.clientID)")
                    for try await frame in request {
                        if let payload = try assembler.add(frame) { link.deliver(.success(payload)) }
                    }
                    throw TransportError(.closed, "\(link.clientID) closed its stream")
                }
                // Either side ending ends the stream: the run is over for this client, or it left.
                try await group.next()
                group.cancelAll()
            }
            link.detach("the run ended for it")
        } catch let error as TransportError {
            link.detach(error.message)
            if error.code == .closed {
                log("\(link.clientID): \(error.message)")
                return
            }
            log("\(link.clientID) sent bad frames, its stream is closed: \(error.message)")
            throw RPCError(code: error.code == .tooLarge ? .resourceExhausted : .invalidArgument, message: error.message)
        } catch {
            link.detach("stream failed: \(error)")
            log("\(link.clientID): stream failed: \(error)")
            throw RPCError(code: .invalidArgument, message: "stream failed: \(error)")
        }
    }

    /// Insecure mode: connection address → the name joined over it.
    let insecurePeers = LockedDictionary()
}

/// A small locked dictionary (insecure mode's address → joined name).
final class LockedDictionary: @unchecked Sendable {
    private let lock = NSLock()
    private var values: [String: String] = [:]
    func withLock<R>(_ body: (inout [String: String]) -> R) -> R {
        lock.lock(); defer { lock.unlock() }
        return body(&values)
    }
}

/// The server of a networked split run: listens, admits the allow-listed clients (mutual TLS 1.3), and
/// gives the coordinator a ``GRPCSplitTransport`` to them.
///
/// ```swift
/// let server = try NetworkSplitServer(port: 7443, security: .mutualTLS(pki, name: "server"),
///                                     clientIDs: ["client-1", "client-2"], configurationJSON: json)
/// try await server.start()
/// try await server.waitForClients(timeout: 600)
/// let records = try await server.runCoordinator(SplitCoordinator(server: part, transport: server.transport, schedule: schedule))
/// await server.finish()
/// ```
public final class NetworkSplitServer: @unchecked Sendable {
    public let transport: GRPCSplitTransport
    public let settings: NetworkSettings
    private let links: [ClientLink]
    private let service: SplitService
    private let grpcServer: GRPCServer<HTTP2ServerTransport.Custom<SiloListenerFactory>>
    private let serverTransport: HTTP2ServerTransport.Custom<SiloListenerFactory>
    private var serveTask: Task<Void, any Error>?
    private let log: @Sendable (String) -> Void

    /// - Parameters:
    ///   - host: the address to listen on (`0.0.0.0` for every interface).
    ///   - port: the port (0: any free port; see ``start()``).
    ///   - clientIDs: the allow-list: the certificate names admitted, in the coordinator's order.
    ///   - configurationJSON: the run's configuration, sent to each client at Join.
    /// - Throws: ``PKIError`` for missing or unusable certificate files.
    public init(host: String = "0.0.0.0", port: Int, security: ConnectionSecurity, clientIDs: [String],
                configurationJSON: String, settings: NetworkSettings = NetworkSettings(), timer: WorkTimer = WorkTimer(),
                log: @escaping @Sendable (String) -> Void = { _ in }) throws {
        let sslContext: NIOSSLContext?
        switch security {
        case .insecure:
            sslContext = nil
            log("WARNING: --insecure: plaintext HTTP/2, no TLS; client identities are self-reported. Use only on a trusted test network.")
        case .mutualTLS(let pki, let name):
            sslContext = try TLSSetup.serverContext(pki, name: name)
        }
        let registry = PeerRegistry()
        self.links = clientIDs.map(ClientLink.init(clientID:))
        self.settings = settings
        self.log = log
        self.transport = GRPCSplitTransport(links: links, settings: settings, timer: timer)
        self.service = try SplitService(links: links, insecure: security.isInsecure, registry: registry, settings: settings,
                                        configurationJSON: configurationJSON, log: log)
        var config = HTTP2ServerTransport.Custom<SiloListenerFactory>.Config.defaults
        config.http2.targetWindowSize = settings.http2TargetWindow
        config.http2.maxFrameSize = settings.http2MaxFrame
        config.rpc.maxRequestPayloadSize = settings.maxMessageBytes
        let heartbeat = Duration.milliseconds(Int64(settings.heartbeat * 1000))
        config.connection.keepalive = .init(time: heartbeat, timeout: heartbeat,
                                            clientBehavior: .init(minPingIntervalWithoutCalls: heartbeat / 2, allowWithoutCalls: true))
        self.serverTransport = HTTP2ServerTransport.Custom(
            listenerFactory: SiloListenerFactory(host: host, port: port, sslContext: sslContext, registry: registry, log: log),
            config: config)
        self.grpcServer = GRPCServer(transport: serverTransport, services: [service])
    }

    /// Starts listening; returns the bound port.
    /// - Throws: `RuntimeError` when the address cannot be bound (port in use).
    @discardableResult
    public func start() async throws -> Int {
        let server = grpcServer
        serveTask = Task { try await server.serve() }
        guard let address = await serverTransport.listeningAddress else {
            if let serveTask, case .failure(let error) = await serveTask.result { throw error }
            throw TransportError(.closed, "the server did not start listening")
        }
        let port = address.ipv4?.port ?? address.ipv6?.port ?? 0
        log("listening on \(address)")
        return port
    }

    /// Waits until every allow-listed client has joined and opened its stream. After `timeout` seconds
    /// it returns once `minimum` (nil: all) have: the others may join later, during the run.
    /// - Throws: ``TransportError`` (`timeout`) naming the clients still missing, when `minimum` is nil.
    public func waitForClients(timeout: TimeInterval, minimum: Int? = nil) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        var reported = -1
        while true {
            let missing = links.filter { !$0.isAttached }.map(\.clientID)
            if missing.isEmpty { return }
            if missing.count != reported {
                log("waiting for \(missing.count) client\(missing.count == 1 ? "" : "s"): \(missing.joined(separator: ", "))")
                reported = missing.count
            }
            if Date() > deadline {
                guard let minimum else {
                    throw TransportError(.timeout, "clients \(missing.joined(separator: ", ")) did not connect within \(timeout) s")
                }
                if links.count - missing.count >= minimum {
                    log("starting with \(links.count - missing.count) clients after \(Int(timeout)) s; \(missing.joined(separator: ", ")) may join during the run")
                    return
                }
            }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// Runs `coordinator` on a thread of its own (its exchanges block while they wait for answers).
    public func runCoordinator(_ coordinator: SplitCoordinator,
                               onStep: @escaping @Sendable (StepRecord) -> Void = { _ in }) async throws -> [StepRecord] {
        let box = UncheckedBox(coordinator)
        return try await withCheckedThrowingContinuation { continuation in
            let thread = Thread {
                continuation.resume(with: Result { try box.value.run(onStep: onStep) })
            }
            thread.name = "silo-coordinator"
            thread.stackSize = 16 << 20
            thread.start()
        }
    }

    /// Tells every connected client the run is over — each client the coordinator dropped, why it was
    /// dropped — then stops serving.
    public func finish(reason: String = "run complete", failures: [(clientID: String, error: String)] = []) async {
        for link in links {
            // A client dropped earlier and back in the run since (it rejoined) completed the run.
            if let failure = failures.last(where: { $0.clientID == link.clientID }), !link.isAvailable {
                link.finish("dropped from the run: \(failure.error)")
            } else {
                link.finish(reason)
            }
        }
        // Give the streams a moment to deliver their last frame.
        let deadline = Date().addingTimeInterval(5)
        while links.contains(where: \.isAttached), Date() < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        grpcServer.beginGracefulShutdown()
        // A connection to a peer that vanished (a cut link) would hold a graceful shutdown until TCP
        // gives up (~15 min): after 10 s the server stops serving regardless.
        let task = serveTask
        let stopped = StopRequest()
        Task { _ = await task?.result; stopped.set() }
        let shutdownDeadline = Date().addingTimeInterval(10)
        while !stopped.isSet, Date() < shutdownDeadline { try? await Task.sleep(for: .milliseconds(20)) }
        if !stopped.isSet {
            log("connections still open after 10 s (a peer that vanished): stopping without them")
            task?.cancel()
        }
    }
}

/// Carries a non-Sendable value to the one thread that uses it.
final class UncheckedBox<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}
