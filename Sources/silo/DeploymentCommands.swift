import ArgumentParser
import Foundation
import SiloFederation
import SiloReport
import SiloTransport

/// `silo pki init` and `silo pki issue`: the certificates of a deployment.
struct PKICommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pki",
        abstract: "Create the certificates of a deployment: a CA, the server's and the clients' (mutual TLS 1.3).",
        subcommands: [Init.self, Issue.self]
    )

    struct Init: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create DIR/ca.pem (+ ca.key), DIR/server.pem/.key (valid for localhost, 127.0.0.1 and each --host) and DIR/client-1..N.pem/.key.",
            discussion: "Keep ca.key on the server's machine; give each client its own client-I.pem, client-I.key and ca.pem."
        )

        @Argument(help: "The folder to create the certificates in.")
        var directory: String

        @Option(help: "How many client certificates (client-1 … client-N).")
        var clients = 4

        @Option(name: .customLong("host"), help: "A host name or IP address the server is reached by (repeatable).")
        var hosts: [String] = []

        func validate() throws {
            guard clients >= 0 else { throw ValidationError("--clients must be at least 0 (got \(clients))") }
        }

        func run() throws {
            let pki = try PKI.initialize(at: URL(fileURLWithPath: directory), clients: clients, hosts: hosts)
            standardError("wrote \(pki.caCertificate.path), server.pem (localhost, 127.0.0.1\(hosts.map { ", " + $0 }.joined())) and \(clients) client certificate\(clients == 1 ? "" : "s") in \(pki.directory.path)")
        }
    }

    struct Issue: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Issue DIR/NAME.pem and DIR/NAME.key signed by the CA of DIR (made by `silo pki init`)."
        )

        @Option(help: "The folder holding ca.pem and ca.key.")
        var pki: String

        @Option(help: "The certificate's name (its common name and DNS name), e.g. client-5 or server-2.")
        var name: String

        @Option(name: .customLong("host"), help: "A further host name or IP address for the certificate (repeatable).")
        var hosts: [String] = []

        func run() throws {
            let folder = PKI(directory: URL(fileURLWithPath: pki))
            try folder.issue(name: name, hosts: hosts)
            standardError("wrote \(folder.certificate(name).path) and \(folder.key(name).path)")
        }
    }
}

/// Options shared by `silo server` and `silo client`: the run's configuration and its overrides.
struct RunOptions: ParsableArguments {
    @Option(help: "A YAML or JSON configuration file (the keys of `silo simulate --print-default-config`).")
    var config: String?

    @Option(help: "Override: the number of clients.")
    var clients: Int?

    @Option(help: "Override: the number of training steps (split.rounds × split.local_steps).")
    var steps: Int?

    @Option(help: "Override: split.mode (serial, client-batching, server-hierarchical).")
    var mode: String?

    @Option(help: "Override: the run's seed.")
    var seed: UInt64?

    @Flag(help: "Plaintext HTTP/2 without TLS (a warning is printed). Trusted test networks only.")
    var insecure = false

    var hasOverrides: Bool { config != nil || clients != nil || steps != nil || mode != nil || seed != nil }

    func validate() throws {
        if let mode, SplitMode(rawValue: mode) == nil {
            throw ValidationError("--mode '\(mode)': one of \(SplitMode.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        if let steps, steps < 1 { throw ValidationError("--steps must be at least 1 (got \(steps))") }
        if let clients, clients < 1 { throw ValidationError("--clients must be at least 1 (got \(clients))") }
    }

    /// The configuration file (or the embedded default) with the flags applied.
    func configuration() throws -> SimulationConfiguration {
        var configuration: SimulationConfiguration = try config.map { try loadConfigurationFile($0) } ?? SimulationConfiguration()
        if let clients { configuration.clients = clients }
        if let seed { configuration.seed = seed }
        if let mode, let parsed = SplitMode(rawValue: mode) { configuration.split.mode = parsed }
        if let steps {
            let local = configuration.split.localSteps
            guard steps % local == 0 else {
                throw ValidationError("--steps \(steps) is not a multiple of split.local_steps (\(local))")
            }
            configuration.split.rounds = steps / local
        }
        try SplitDeployment.validate(configuration)
        return configuration
    }
}

/// The JSON form of a configuration exchanged at Join.
enum ConfigurationJSON {
    static func encode(_ configuration: SimulationConfiguration) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return String(decoding: try encoder.encode(configuration), as: UTF8.self)
    }

    static func decode(_ text: String) throws -> SimulationConfiguration {
        do {
            return try JSONDecoder().decode(SimulationConfiguration.self, from: Data(text.utf8))
        } catch {
            throw ProtocolError("the server sent a configuration this client cannot read: \(error)")
        }
    }
}

func writeResults(_ results: SimulationResults, to output: String) throws -> URL {
    let outputURL = URL(fileURLWithPath: output, isDirectory: true)
    try FileManager.default.createDirectory(at: outputURL, withIntermediateDirectories: true)
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
    let resultsURL = outputURL.appendingPathComponent("results.json")
    try encoder.encode(results).write(to: resultsURL, options: .atomic)
    try SimulationReport.make(results).write(to: outputURL.appendingPathComponent("report.html"))
    return resultsURL
}

/// `silo server`: the server of a real deployment.
struct ServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "server",
        abstract: "Serve one split run: wait for the clients (mutual TLS 1.3), train the middle blocks with them, write results.json.",
        discussion: """
        The server holds the middle blocks only; each client holds its data, the input and the output blocks. \
        Admits only certificates signed by DIR/ca.pem whose name is client-1 … client-N. Exits 0 after writing \
        OUTPUT/results.json (the keys of `silo simulate`; no evaluation: the server has no embedding or head).
        """
    )

    @Option(help: "The certificate folder (from `silo pki init`): ca.pem, server.pem, server.key.")
    var pki: String?

    @Option(help: "The port to listen on.")
    var port = 7443

    @Option(help: "The address to listen on.")
    var host = "0.0.0.0"

    @Option(help: "Folder for results.json and report.html.")
    var output = "silo-results"

    @Option(help: "Seconds to wait for every client to connect.")
    var joinTimeout: Double = 3600

    @Option(help: "Seconds to wait for a client's answer before it is dropped from the run.")
    var timeout: Double = 600

    @Option(help: "Checkpoint every N steps (the clients save theirs first); 0: never.")
    var checkpointEvery = 10

    @Option(help: "The server's checkpoint file (default: OUTPUT/checkpoint/server.safetensors).")
    var checkpoint: String?

    @Flag(help: "Continue from the checkpoint: the clients roll back to their checkpoints of the same step.")
    var resume = false

    @Option(help: "Below this many clients the run waits for clients to (re)join instead of failing; after --join-timeout the run starts with this many.")
    var minClients = 1

    @Option(help: "Seconds between heartbeats (HTTP/2 PINGs) on idle connections; a peer silent for twice this is cut off.")
    var heartbeat: Double = 10

    @OptionGroup var run: RunOptions

    func validate() throws {
        if pki == nil && !run.insecure { throw ValidationError("--pki DIR is required (or --insecure for plaintext)") }
        guard checkpointEvery >= 0 else { throw ValidationError("--checkpoint-every must be at least 0 (got \(checkpointEvery))") }
        guard minClients >= 1 else { throw ValidationError("--min-clients must be at least 1 (got \(minClients))") }
        guard heartbeat >= 1 else { throw ValidationError("--heartbeat must be at least 1 s (got \(heartbeat))") }
    }

    func run() async throws {
        let started = DispatchTime.now().uptimeNanoseconds
        let configuration = try run.configuration()
        let log: @Sendable (String) -> Void = { standardError("» \($0)") }
        let security: ConnectionSecurity = run.insecure ? .insecure : .mutualTLS(PKI(directory: URL(fileURLWithPath: pki ?? "")), name: "server")
        var settings = NetworkSettings()
        settings.responseTimeout = timeout
        settings.heartbeat = heartbeat
        log("loading the server's blocks of \(configuration.model)")
        let (part, plan) = try SplitDeployment.makeServer(configuration)
        let configurationJSON = try ConfigurationJSON.encode(configuration)
        let checkpointURL = URL(fileURLWithPath: checkpoint ?? "\(output)/checkpoint/server.safetensors")
        var snapshot: SplitCoordinator.Snapshot?
        if resume {
            guard FileManager.default.fileExists(atPath: checkpointURL.path) else {
                throw ValidationError("--resume: no checkpoint at \(checkpointURL.path)")
            }
            let restored = try SplitCheckpoint.restore(part, from: checkpointURL, configurationJSON: configurationJSON)
            log("resuming from \(checkpointURL.path): step \(restored.position.step), round \(restored.position.round)")
            snapshot = restored
        }
        let timer = WorkTimer()
        let server = try NetworkSplitServer(host: host, port: port, security: security, clientIDs: SplitDeployment.clientIDs(configuration),
                                            configurationJSON: configurationJSON, settings: settings,
                                            timer: timer, log: log)
        try await server.start()
        let schedule = SplitDeployment.schedule(configuration)
        let coordinator = SplitCoordinator(server: part, transport: server.transport, schedule: schedule, timer: timer,
                                           codec: try Simulation.stepCodec(configuration), log: { log($0) })
        coordinator.minimumClients = minClients
        coordinator.checkpointEvery = checkpointEvery
        if checkpointEvery > 0 || resume {
            coordinator.saveCheckpoint = { snapshot in
                try SplitCheckpoint.write(snapshot, server: part, configurationJSON: configurationJSON, to: checkpointURL)
            }
        }
        if let snapshot { coordinator.resume(from: snapshot) }
        let signals = stopOnSignals(server, coordinator: coordinator, log: log)
        defer { signals.forEach { $0.cancel() } }
        try await server.waitForClients(timeout: joinTimeout, minimum: minClients)
        log("split training, \(schedule.mode.rawValue), \(configuration.clients) clients, \(schedule.recordedSteps(clients: configuration.clients)) steps")
        let trainingStart = DispatchTime.now().uptimeNanoseconds
        let records: [StepRecord]
        trainingStarted.value = true
        do {
            records = try await server.runCoordinator(coordinator) { record in
                log(String(format: "step %d: loss %.4f (%.2fs)", record.step, record.loss, record.seconds))
            }
        } catch let stopped as SplitCoordinator.Stopped {
            log("\(stopped)")
            await server.finish(reason: "the server was stopped; \(stopped)")
            throw ExitCode(Int32(128 + (stopSignalNumber.value ?? SIGTERM)))
        } catch {
            await server.finish(reason: "the run failed: \(error)")
            throw error
        }
        let trainingSeconds = Double(DispatchTime.now().uptimeNanoseconds - trainingStart) / 1e9
        await server.finish(failures: coordinator.failures)
        let wire = server.transport.wireBytes
        let results = SplitDeployment.results(
            configuration, plan: plan, records: records, traffic: server.transport.traffic, timings: timer.totals,
            failures: coordinator.failures, trainingSeconds: trainingSeconds,
            seconds: Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9,
            notes: ["networked run over gRPC (\(run.insecure ? "INSECURE plaintext" : "mutual TLS 1.3")): \(wire.payload) sealed payload bytes in \(wire.frames) bytes of protobuf frames",
                    "no evaluation: the server holds neither the embedding nor the head (`silo simulate` of the same configuration evaluates)"]
                + (snapshot.map { ["resumed from the checkpoint of step \($0.position.step)"] } ?? [])
                + coordinator.rejoins.map { "\($0.clientID) rejoined at step \($0.step)" })
        let url = try writeResults(results, to: output)
        standardError(SimulationReport.summaryTable(results))
        standardError("results: \(url.path)")
    }
}

/// The signal that stopped the server (for its exit status).
let stopSignalNumber = LockedValue<Int32>()
/// Whether training has begun (before it, a signal stops at once: there is nothing to checkpoint).
let trainingStarted = LockedValue<Bool>()

/// A value one thread sets and another reads.
final class LockedValue<Value: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: Value?
    var value: Value? {
        get { lock.lock(); defer { lock.unlock() }; return stored }
        set { lock.lock(); stored = newValue; lock.unlock() }
    }
}

/// SIGINT and SIGTERM: the coordinator finishes the step in flight, checkpoints, tells every client
/// the server stopped, and the server exits 128 + signal (continue with `--resume`). A second signal
/// stops at once, without a checkpoint.
func stopOnSignals(_ server: NetworkSplitServer, coordinator: SplitCoordinator, log: @escaping @Sendable (String) -> Void) -> [any DispatchSourceSignal] {
    let request = coordinator.stopRequest
    return [SIGINT, SIGTERM].map { number in
        signal(number, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
        source.setEventHandler {
            let name = number == SIGINT ? "SIGINT" : "SIGTERM"
            if stopSignalNumber.value == nil, trainingStarted.value == true {
                stopSignalNumber.value = number
                request.set()
                log("\(name): stopping after the step in flight (with a checkpoint); \(name) again stops at once")
                return
            }
            stopSignalNumber.value = number
            log("\(name): stopping now\(trainingStarted.value == true ? " (no checkpoint)" : ""); telling the clients")
            Task {
                await server.finish(reason: "the server was stopped (\(name))")
                exit(128 + number)
            }
        }
        source.resume()
        return source
    }
}

/// `silo client`: one data owner of a real deployment.
struct ClientCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "client",
        abstract: "Join a split run as one data owner: your data, input and output blocks stay here; sealed activations and gradients go to the server.",
        discussion: """
        Takes the run's configuration from the server. With --config or override flags it first checks that they \
        give the server's configuration, and refuses to train otherwise. Exits 0 when the run completes; \
        non-zero with a one-line reason when refused or dropped.
        """
    )

    @Option(help: "The certificate folder: ca.pem, NAME.pem, NAME.key.")
    var pki: String?

    @Option(help: "This client's name (its certificate's name): client-1 … client-N.")
    var name: String

    @Option(help: "The server, HOST:PORT.")
    var server: String

    @Option(help: "Seconds to keep retrying while the server refuses connections (it may still be loading).")
    var connectTimeout: Double = 120

    @Option(help: "Seconds to keep trying to rejoin after the connection breaks (the server restarted, the network failed); 0: give up at once.")
    var reconnectTimeout: Double = 600

    @Option(help: "Where this client keeps its checkpoints (the two newest), for a server that resumes (default: silo-checkpoints/NAME).")
    var checkpointDir: String?

    @Option(help: "Seconds between heartbeats (HTTP/2 PINGs) on an idle connection.")
    var heartbeat: Double = 10

    @OptionGroup var run: RunOptions

    func validate() throws {
        if pki == nil && !run.insecure { throw ValidationError("--pki DIR is required (or --insecure for plaintext)") }
        guard let colon = server.lastIndex(of: ":"), Int(server[server.index(after: colon)...]) != nil, colon != server.startIndex else {
            throw ValidationError("--server '\(server)': expected HOST:PORT")
        }
    }

    func run() async throws {
        let colon = server.lastIndex(of: ":") ?? server.endIndex
        var host = String(server[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        let port = Int(server[server.index(after: colon)...]) ?? 0
        let log: @Sendable (String) -> Void = { standardError("» \($0)") }
        let security: ConnectionSecurity = run.insecure ? .insecure : .mutualTLS(PKI(directory: URL(fileURLWithPath: pki ?? "")), name: name)
        let expected = run.hasOverrides ? try run.configuration() : nil
        let name = self.name
        var settings = NetworkSettings()
        settings.connectTimeout = connectTimeout
        settings.reconnectTimeout = reconnectTimeout
        settings.heartbeat = max(1, heartbeat)
        let checkpoints = URL(fileURLWithPath: checkpointDir ?? "silo-checkpoints/\(name)", isDirectory: true)
        let party = PartyBox()
        do {
            let outcome = try await NetworkSplitClient.run(host: host, port: port, security: security, name: name, settings: settings, log: log) { json in
                let configuration = try ConfigurationJSON.decode(json)
                if let expected, expected != configuration {
                    throw ProtocolError("this client's configuration differs from the server's (seed \(expected.seed) vs \(configuration.seed), clients \(expected.clients) vs \(configuration.clients), mode \(expected.split.mode.rawValue) vs \(configuration.split.mode.rawValue), rounds \(expected.split.rounds) vs \(configuration.split.rounds)); run without --config to take the server's")
                }
                let client = try SplitDeployment.makeClient(configuration, clientID: name, onEvent: { event in
                    if case .message(let text) = event { log(text) }
                })
                client.checkpointDirectory = checkpoints
                party.set(client, configuration)
                return client
            }
            if let (client, configuration) = party.get() {
                do {
                    if let report = try SplitDeployment.activationPrivacyReport(client, configuration: configuration) { log(report) }
                } catch {
                    log("activation noise: ε not computed: \(error)")
                }
            }
            guard outcome.completed else {
                standardError("error: \(name): \(outcome.reason)")
                throw ExitCode(2)
            }
            log("run complete (\(outcome.requests) requests answered)")
        } catch let error as TransportError {
            standardError("error: \(error.message)")
            throw ExitCode(1)
        } catch let error as ExitCode {
            throw error
        } catch {
            standardError("error: \(name): \("\(error)".replacingOccurrences(of: "\n", with: " "))")
            throw ExitCode(1)
        }
    }
}

/// The client a `silo client` run made (inside the transport's task), for its privacy report.
private final class PartyBox: @unchecked Sendable {
    private let lock = NSLock()
    private var value: (SplitClient, SimulationConfiguration)?

    func set(_ client: SplitClient, _ configuration: SimulationConfiguration) {
        lock.lock(); defer { lock.unlock() }
        value = (client, configuration)
    }

    func get() -> (SplitClient, SimulationConfiguration)? {
        lock.lock(); defer { lock.unlock() }
        return value
    }
}
