import Foundation
import GRPCCore
import SiloFederation
import XCTest
@testable import SiloTransport

/// Split runs over gRPC on loopback with mutual TLS 1.3: the same losses as the in-memory transport,
/// and the refusals and faults a real deployment meets. Tiny model, a few steps each.
final class NetworkRunTests: XCTestCase {
    private var folder: URL!

    override func setUpWithError() throws {
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("silo-transport-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: folder)
    }

    /// A started TLS server for clients `client-1 … client-N`.
    private func startServer(clients: Int, pki: PKI, settings: NetworkSettings = NetworkSettings(),
                             log: LogLines) async throws -> (NetworkSplitServer, Int) {
        let server = try NetworkSplitServer(host: "127.0.0.1", port: 0, security: .mutualTLS(pki, name: "server"),
                                            clientIDs: (0..<clients).map(TinySplitRun.clientID), configurationJSON: "{}",
                                            settings: settings, log: { log.append($0) })
        let port = try await server.start()
        XCTAssertGreaterThan(port, 0)
        return (server, port)
    }

    /// Client `index` serving `endpoint` until the run ends for it.
    private func startClient(_ endpoint: any SplitClientEndpoint, name: String, port: Int, pki: PKI,
                             security: ConnectionSecurity? = nil) -> Task<NetworkSplitClient.Outcome, any Error> {
        let box = Unchecked(endpoint)
        return Task {
            try await NetworkSplitClient.run(host: "127.0.0.1", port: port, security: security ?? .mutualTLS(pki, name: name),
                                             name: name) { _ in box.value }
        }
    }

    private func train(_ server: NetworkSplitServer, steps: Int) async throws -> (records: [StepRecord], failures: [(clientID: String, error: String)]) {
        try await server.waitForClients(timeout: 60)
        let coordinator = SplitCoordinator(server: try TinySplitRun.server(), transport: server.transport,
                                           schedule: TinySplitRun.schedule(steps: steps))
        let records = try await server.runCoordinator(coordinator)
        await server.finish(failures: coordinator.failures)
        return (records, coordinator.failures)
    }

    func testMutualTLSRunGivesTheInMemoryLosses() async throws {
        let steps = 3
        let reference = try TinySplitRun.inMemoryLosses(clients: 3, steps: steps)
        let pki = try PKI.initialize(at: folder, clients: 3)
        let log = LogLines()
        let (server, port) = try await startServer(clients: 3, pki: pki, log: log)
        let clients = try (0..<3).map { startClient(try TinySplitRun.client($0, steps: steps), name: TinySplitRun.clientID($0), port: port, pki: pki) }
        let (records, failures) = try await train(server, steps: steps)
        XCTAssertTrue(failures.isEmpty, "\(failures)")
        XCTAssertEqual(records.map(\.loss), reference, "per-step losses over gRPC + mutual TLS vs in memory")
        XCTAssertEqual(records.first?.clientLosses.count, 3)
        for client in clients {
            let outcome = try await client.value
            XCTAssertTrue(outcome.completed, outcome.reason)
            XCTAssertEqual(outcome.requests, steps * 4)
        }
        let wire = server.transport.wireBytes
        XCTAssertEqual(wire.payload, server.transport.traffic.totalBytes)
        XCTAssertTrue(log.contains("client-2 joined from ipv4:127.0.0.1"), "\(log.all)")
    }

    func testInsecureModeTrainsOnlyWhenAskedAndWarns() async throws {
        let steps = 2
        let reference = try TinySplitRun.inMemoryLosses(clients: 2, steps: steps)
        let log = LogLines()
        let server = try NetworkSplitServer(host: "127.0.0.1", port: 0, security: .insecure, clientIDs: ["client-1", "client-2"],
                                            configurationJSON: "{}", log: { log.append($0) })
        let port = try await server.start()
        XCTAssertTrue(log.contains("WARNING: --insecure"), "\(log.all)")
        let clients = try (0..<2).map {
            startClient(try TinySplitRun.client($0, steps: steps), name: TinySplitRun.clientID($0), port: port,
                        pki: PKI(directory: folder), security: .insecure)
        }
        let (records, failures) = try await train(server, steps: steps)
        XCTAssertTrue(failures.isEmpty, "\(failures)")
        XCTAssertEqual(records.map(\.loss), reference)
        for client in clients {
            let outcome = try await client.value
            XCTAssertTrue(outcome.completed, outcome.reason)
        }
        XCTAssertTrue(log.contains("insecure: identity self-reported"), "\(log.all)")
    }

    func testCertificateFromAnotherCAIsRefused() async throws {
        let pki = try PKI.initialize(at: folder.appendingPathComponent("deployment"), clients: 1)
        let other = try PKI.initialize(at: folder.appendingPathComponent("other"), clients: 1)
        // The impostor trusts the real CA (so it gets past its own check of the server) but shows a
        // client-1 certificate from another CA.
        let impostor = folder.appendingPathComponent("impostor")
        try FileManager.default.createDirectory(at: impostor, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: pki.caCertificate, to: impostor.appendingPathComponent("ca.pem"))
        for file in ["client-1.pem", "client-1.key"] {
            try FileManager.default.copyItem(at: other.directory.appendingPathComponent(file), to: impostor.appendingPathComponent(file))
        }
        let log = LogLines()
        let (server, port) = try await startServer(clients: 1, pki: pki, log: log)
        let refused = startClient(try TinySplitRun.client(0, steps: 1), name: "client-1", port: port, pki: PKI(directory: impostor))
        await assertFails(refused, containing: nil)
        // The server logs the failed handshake on its own event loop, possibly after the client gave up.
        for _ in 0..<50 where !log.contains("TLS handshake failed") { try await Task.sleep(nanoseconds: 100_000_000) }
        XCTAssertTrue(log.contains("TLS handshake failed"), "\(log.all)")
        // The server still admits the real client-1 and trains.
        let real = startClient(try TinySplitRun.client(0, steps: 1), name: "client-1", port: port, pki: pki)
        let (records, _) = try await train(server, steps: 1)
        XCTAssertEqual(records.count, 1)
        let outcome = try await real.value
        XCTAssertTrue(outcome.completed)
    }

    func testNameNotOnTheAllowListIsRefused() async throws {
        let pki = try PKI.initialize(at: folder, clients: 1)
        try pki.issue(name: "client-9")
        let log = LogLines()
        let (server, port) = try await startServer(clients: 1, pki: pki, log: log)
        let refused = startClient(try TinySplitRun.client(0, steps: 1), name: "client-9", port: port, pki: pki)
        await assertFails(refused, containing: "allow-list")
        XCTAssertTrue(log.contains("client-9 is not on the allow-list"), "\(log.all)")
        // A client-9 certificate claiming to be client-1 in its session hello is refused too.
        let claimed = startClient(try TinySplitRun.client(0, steps: 1), name: "client-1", port: port, pki: pki,
                                  security: .mutualTLS(pki, name: "client-9"))
        await assertFails(claimed, containing: "allow-list")
        await server.finish()
    }

    func testSessionHelloMustNameTheCertificate() async throws {
        let pki = try PKI.initialize(at: folder, clients: 2)
        let log = LogLines()
        let (server, port) = try await startServer(clients: 2, pki: pki, log: log)
        // client-2's certificate, a hello for client-1: the session would be bound to another identity.
        let claimed = startClient(try TinySplitRun.client(0, steps: 1), name: "client-1", port: port, pki: pki,
                                  security: .mutualTLS(pki, name: "client-2"))
        await assertFails(claimed, containing: "the transport authenticated")
        await server.finish()
    }

    func testPlaintextConnectionToTheTLSServerIsRefused() async throws {
        let pki = try PKI.initialize(at: folder, clients: 1)
        let log = LogLines()
        let (server, port) = try await startServer(clients: 1, pki: pki, log: log)
        let plaintext = startClient(try TinySplitRun.client(0, steps: 1), name: "client-1", port: port, pki: pki, security: .insecure)
        await assertFails(plaintext, containing: nil)
        for _ in 0..<50 where !log.contains("TLS handshake failed") { try await Task.sleep(nanoseconds: 100_000_000) }
        XCTAssertTrue(log.contains("TLS handshake failed"), "\(log.all)")
        await server.finish()
    }

    func testGarbageBytesOnThePortDoNotStopTraining() async throws {
        let pki = try PKI.initialize(at: folder, clients: 2)
        let log = LogLines()
        let (server, port) = try await startServer(clients: 2, pki: pki, log: log)
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<5 {
            try sendRawBytes((0..<512).map { _ in UInt8.random(in: 0...255, using: &generator) }, port: port)
        }
        try sendRawBytes(Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8), port: port)
        let clients = try (0..<2).map { startClient(try TinySplitRun.client($0, steps: 2), name: TinySplitRun.clientID($0), port: port, pki: pki) }
        // Garbage keeps arriving while the clients join.
        try sendRawBytes((0..<4096).map { _ in UInt8.random(in: 0...255, using: &generator) }, port: port)
        let (records, failures) = try await train(server, steps: 2)
        XCTAssertEqual(records.count, 2)
        XCTAssertTrue(failures.isEmpty, "\(failures)")
        for client in clients {
            let outcome = try await client.value
            XCTAssertTrue(outcome.completed, outcome.reason)
        }
        XCTAssertTrue(log.contains("TLS handshake failed"), "\(log.all)")
    }

    func testStalledClientIsDroppedAndTheOthersFinish() async throws {
        let steps = 3
        let pki = try PKI.initialize(at: folder, clients: 2)
        var settings = NetworkSettings()
        settings.responseTimeout = 1
        let log = LogLines()
        let (server, port) = try await startServer(clients: 2, pki: pki, settings: settings, log: log)
        let healthy = startClient(try TinySplitRun.client(0, steps: steps), name: "client-1", port: port, pki: pki)
        let stalling = startClient(Stalling(try TinySplitRun.client(1, steps: steps), after: 5, seconds: 3),
                                   name: "client-2", port: port, pki: pki)
        let started = Date()
        let (records, failures) = try await train(server, steps: steps)
        XCTAssertLessThan(Date().timeIntervalSince(started), 30, "a stalled client must not hang the run")
        XCTAssertEqual(records.count, steps)
        XCTAssertEqual(failures.map(\.clientID), ["client-2"])
        XCTAssertTrue(failures.first?.error.contains("did not answer") == true, "\(failures)")
        XCTAssertEqual(records.last?.clientLosses.keys.sorted(), ["client-1"])
        let outcome = try await healthy.value
        XCTAssertTrue(outcome.completed, outcome.reason)
        let dropped = try? await stalling.value
        XCTAssertFalse(dropped?.completed ?? false)
    }

    func testOversizedPayloadIsRefusedAndTheOthersFinish() async throws {
        let pki = try PKI.initialize(at: folder, clients: 2)
        var settings = NetworkSettings()
        settings.maxPayloadBytes = 2048  // an activation payload of the tiny model is ~800 bytes
        settings.chunkBytes = 256
        let log = LogLines()
        let (server, port) = try await startServer(clients: 2, pki: pki, settings: settings, log: log)
        let healthy = startClient(try TinySplitRun.client(0, steps: 2), name: "client-1", port: port, pki: pki)
        let oversized = startClient(Oversized(try TinySplitRun.client(1, steps: 2), bytes: 4096), name: "client-2", port: port, pki: pki)
        let (records, failures) = try await train(server, steps: 2)
        XCTAssertEqual(records.count, 2)
        XCTAssertEqual(failures.map(\.clientID), ["client-2"])
        XCTAssertTrue(log.contains("exceeds the limit of 2048 bytes"), "\(log.all)")
        let outcome = try await healthy.value
        XCTAssertTrue(outcome.completed, outcome.reason)
        _ = try? await oversized.value
    }

    func testWrongStepAndNaNAreRefusedAndTheOthersFinish() async throws {
        let pki = try PKI.initialize(at: folder, clients: 3)
        let log = LogLines()
        let (server, port) = try await startServer(clients: 3, pki: pki, log: log)
        let healthy = startClient(try TinySplitRun.client(0, steps: 2), name: "client-1", port: port, pki: pki)
        let wrongStep = startClient(Rewriting(try TinySplitRun.client(1, steps: 2)) { $0.step += 1 }, name: "client-2", port: port, pki: pki)
        let notANumber = startClient(Rewriting(try TinySplitRun.client(2, steps: 2)) { message in
            // The first activation value (after the 4-byte magic, rank, 3 dims and the scalar count) → NaN.
            let offset = 4 + 1 + 12 + 4
            withUnsafeBytes(of: Float.nan.bitPattern.littleEndian) { message.body.replaceSubrange(offset..<(offset + 4), with: $0) }
        }, name: "client-3", port: port, pki: pki)
        let (records, failures) = try await train(server, steps: 2)
        XCTAssertEqual(records.count, 2)
        XCTAssertEqual(records.last?.clientLosses.keys.sorted(), ["client-1"])
        XCTAssertEqual(failures.map(\.clientID).sorted(), ["client-2", "client-3"])
        XCTAssertTrue(failures.first { $0.clientID == "client-2" }?.error.contains("expected activations") == true, "\(failures)")
        XCTAssertTrue(failures.first { $0.clientID == "client-3" }?.error.lowercased().contains("nan") == true, "\(failures)")
        let outcome = try await healthy.value
        XCTAssertTrue(outcome.completed, outcome.reason)
        for dropped in [wrongStep, notANumber] {
            let outcome = try await dropped.value
            XCTAssertTrue(outcome.reason.hasPrefix("dropped from the run"), outcome.reason)
        }
    }

    /// A client killed mid-step (its connection cut) is dropped; the run waits for its minimum of three
    /// clients; the client, restarted as a new party, joins again, gets the others' trainables and
    /// trains to the end.
    func testKilledClientThatRestartsRejoins() async throws {
        let steps = 8
        let pki = try PKI.initialize(at: folder, clients: 3)
        let log = LogLines()
        let (server, port) = try await startServer(clients: 3, pki: pki, log: log)
        let frozen = Freezing(try TinySplitRun.client(1, steps: steps), at: 9)
        let first = Recording(try TinySplitRun.client(0, steps: steps))
        let others = [startClient(first, name: "client-1", port: port, pki: pki),
                      startClient(try TinySplitRun.client(2, steps: steps), name: "client-3", port: port, pki: pki)]
        let doomed = startClient(frozen, name: "client-2", port: port, pki: pki)
        try await server.waitForClients(timeout: 60)
        let coordinator = SplitCoordinator(server: try TinySplitRun.server(), transport: server.transport,
                                           schedule: TinySplitRun.schedule(steps: steps), log: { log.append($0) })
        coordinator.minimumClients = 3
        let run = Task { [coordinator = Unchecked(coordinator)] in try await server.runCoordinator(coordinator.value) }
        // The client freezes in its 9th request (step 2); kill it: its connection goes down mid-step.
        while !frozen.isFrozen { try await Task.sleep(nanoseconds: 10_000_000) }
        doomed.cancel()
        for _ in 0..<100 where !log.contains("client client-2 dropped") { try await Task.sleep(nanoseconds: 50_000_000) }
        XCTAssertTrue(log.contains("client client-2 dropped"), "\(log.all)")
        frozen.release()
        // Below the minimum of 3 the run waits; the restarted client (a fresh party) joins again.
        let party = Recording(try TinySplitRun.client(1, steps: steps))
        let restarted = startClient(party, name: "client-2", port: port, pki: pki)
        let records = try await run.value
        await server.finish(failures: coordinator.failures)
        XCTAssertEqual(records.count, steps, "the step client-2 died in goes on with the others")
        XCTAssertEqual(coordinator.rejoins.map(\.clientID), ["client-2"])
        XCTAssertEqual(records.last?.clientLosses.keys.sorted(), ["client-1", "client-2", "client-3"])
        XCTAssertTrue(log.contains("client client-2 rejoined"), "\(log.all)")
        for client in others + [restarted] {
            let outcome = try await client.value
            XCTAssertTrue(outcome.completed, outcome.reason)
        }
        // It took client-1's trainables and AdamW state when it came back, so the two stay identical.
        let given = try XCTUnwrap(party.valuesAt[.syncState])
        XCTAssertEqual(given, try XCTUnwrap(first.valuesAt[.syncRequest]))
        XCTAssertNotEqual(given, try TinySplitRun.client(1, steps: 1).part.flattenedValues().toArray())
        XCTAssertEqual(party.inner.part.flattenedValues().toArray(), first.inner.part.flattenedValues().toArray())
        let (theirs, ours) = (try XCTUnwrap(first.inner.optimizer?.state()), try XCTUnwrap(party.inner.optimizer?.state()))
        XCTAssertEqual(ours.keys.sorted(), theirs.keys.sorted())
        for (name, tensor) in theirs { XCTAssertEqual(ours[name]?.toArray(), tensor.toArray(), name) }
    }

    private func assertFails(_ task: Task<NetworkSplitClient.Outcome, any Error>, containing text: String?,
                             file: StaticString = #filePath, line: UInt = #line) async {
        do {
            let outcome = try await task.value
            XCTFail("the client was admitted: \(outcome)", file: file, line: line)
        } catch {
            if let text { XCTAssertTrue("\(error)".contains(text), "\(error)", file: file, line: line) }
            XCTAssertFalse("\(error)".contains("\n"), "one line: \(error)", file: file, line: line)
        }
    }

    private func sendRawBytes(_ bytes: [UInt8], port: Int) throws {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw POSIXError(.EIO) }
        defer { close(descriptor) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw POSIXError(.ECONNREFUSED) }
        _ = bytes.withUnsafeBytes { send(descriptor, $0.baseAddress, $0.count, 0) }
    }
}

/// A real client that stops answering for `seconds` at its `after`-th request (fault injection).
final class Stalling: SplitClientEndpoint {
    let inner: SplitClient
    let after: Int
    let seconds: Double
    private var count = 0
    var clientID: String { inner.clientID }

    init(_ inner: SplitClient, after: Int, seconds: Double) {
        self.inner = inner
        self.after = after
        self.seconds = seconds
    }

    func handle(_ request: SplitMessage) throws -> SplitMessage {
        count += 1
        if count == after { Thread.sleep(forTimeInterval: seconds) }
        return try inner.handle(request)
    }
}

/// A real client that keeps its trainable values as they were after the last request of each kind.
final class Recording: SplitClientEndpoint, @unchecked Sendable {
    let inner: SplitClient
    private(set) var valuesAt: [SplitMessageKind: [Float]] = [:]
    var clientID: String { inner.clientID }

    init(_ inner: SplitClient) { self.inner = inner }

    func handle(_ request: SplitMessage) throws -> SplitMessage {
        let response = try inner.handle(request)
        valuesAt[request.kind] = inner.part.flattenedValues().toArray()
        return response
    }
}

/// A real client that freezes in request `at` until released (its process hangs, then is killed).
final class Freezing: SplitClientEndpoint, @unchecked Sendable {
    let inner: SplitClient
    let at: Int
    private var count = 0
    private let gate = DispatchSemaphore(value: 0)
    private let lock = NSLock()
    private var frozen = false
    var clientID: String { inner.clientID }

    init(_ inner: SplitClient, at: Int) {
        self.inner = inner
        self.at = at
    }

    var isFrozen: Bool { lock.lock(); defer { lock.unlock() }; return frozen }
    func release() { gate.signal() }

    func handle(_ request: SplitMessage) throws -> SplitMessage {
        count += 1
        if count == at {
            lock.lock(); frozen = true; lock.unlock()
            _ = gate.wait(timeout: .now() + 10)
            throw ProtocolError("killed")
        }
        return try inner.handle(request)
    }
}

/// A real client whose activations are padded past the server's payload limit (fault injection).
final class Oversized: SplitClientEndpoint {
    let inner: SplitClient
    let bytes: Int
    var clientID: String { inner.clientID }

    init(_ inner: SplitClient, bytes: Int) {
        self.inner = inner
        self.bytes = bytes
    }

    func handle(_ request: SplitMessage) throws -> SplitMessage {
        var response = try inner.handle(request)
        if response.kind == .activations { response.body += [UInt8](repeating: 0, count: bytes) }
        return response
    }
}

/// A real client whose activations message is rewritten on its way out (fault injection).
final class Rewriting: SplitClientEndpoint {
    let inner: SplitClient
    let rewrite: (inout SplitMessage) -> Void
    var clientID: String { inner.clientID }

    init(_ inner: SplitClient, _ rewrite: @escaping (inout SplitMessage) -> Void) {
        self.inner = inner
        self.rewrite = rewrite
    }

    func handle(_ request: SplitMessage) throws -> SplitMessage {
        var response = try inner.handle(request)
        if response.kind == .activations { rewrite(&response) }
        return response
    }
}
