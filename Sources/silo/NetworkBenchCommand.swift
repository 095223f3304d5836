import ArgumentParser
import Foundation
import SiloFederation
import SiloTransport

/// `silo bench network`: the same split run in memory and over gRPC on loopback with mutual TLS 1.3, in
/// one process, back to back: seconds per step of each, and bytes on the wire against payload bytes.
struct NetworkBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "network",
        abstract: "Seconds per split step in memory vs over loopback gRPC with mutual TLS 1.3 (same configuration, same process).",
        discussion: "Both runs build fresh parties from the configuration and seal every payload; their losses must be equal. The first step of each run is a warm-up and left out of the mean."
    )

    @OptionGroup var run: RunOptions

    @Flag(help: "Print one JSON object instead of text.")
    var json = false

    struct Report: Encodable {
        var inMemorySecondsPerStep: Double
        var networkSecondsPerStep: Double
        var ratio: Double
        var payloadBytesPerStep: Double
        var frameBytesPerStep: Double
        var lossesEqual: Bool
        var steps: Int
        var clients: Int
        var loadAverage: String
        enum CodingKeys: String, CodingKey {
            case inMemorySecondsPerStep = "in_memory_seconds_per_step", networkSecondsPerStep = "network_seconds_per_step", ratio
            case payloadBytesPerStep = "payload_bytes_per_step", frameBytesPerStep = "frame_bytes_per_step", lossesEqual = "losses_equal"
            case steps, clients, loadAverage = "load_average"
        }
    }

    func run() async throws {
        let configuration = try run.configuration()
        let log: @Sendable (String) -> Void = { standardError("» \($0)") }
        let ids = SplitDeployment.clientIDs(configuration)
        let schedule = SplitDeployment.schedule(configuration)
        func parties() throws -> (SplitServer, [SplitClient]) {
            log("building the server and \(ids.count) clients")
            let server = try SplitDeployment.makeServer(configuration).server
            return (server, try ids.map { try SplitDeployment.makeClient(configuration, clientID: $0) })
        }
        func meanAfterWarmUp(_ records: [StepRecord]) -> Double {
            let timed = records.count > 1 ? Array(records.dropFirst()) : records
            return timed.map(\.seconds).reduce(0, +) / Double(max(1, timed.count))
        }

        let (memoryServer, memoryClients) = try parties()
        let transport = InMemoryTransport(links: try memoryClients.map { try SessionProtection.link(for: $0) })
        log("in memory: \(schedule.recordedSteps(clients: ids.count)) steps")
        let codec = try Simulation.stepCodec(configuration)
        let memoryRecords = try SplitCoordinator(server: memoryServer, transport: transport, schedule: schedule, codec: codec).run()

        let (networkServer, networkClients) = try parties()
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("silo-bench-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: folder) }
        let pki = try PKI.initialize(at: folder, clients: ids.count)
        let server = try NetworkSplitServer(host: "127.0.0.1", port: 0, security: .mutualTLS(pki, name: "server"), clientIDs: ids,
                                            configurationJSON: try ConfigurationJSON.encode(configuration))
        let port = try await server.start()
        var tasks: [Task<NetworkSplitClient.Outcome, any Error>] = []
        for client in networkClients {
            let box = SendableBox(client)
            let name = client.clientID
            tasks.append(Task {
                try await NetworkSplitClient.run(host: "127.0.0.1", port: port, security: .mutualTLS(pki, name: name), name: name) { _ in box.value }
            })
        }
        try await server.waitForClients(timeout: 60)
        log("loopback gRPC + mutual TLS 1.3: \(schedule.recordedSteps(clients: ids.count)) steps")
        let networkRecords = try await server.runCoordinator(SplitCoordinator(server: networkServer, transport: server.transport, schedule: schedule, codec: codec))
        await server.finish()
        for task in tasks { _ = try await task.value }

        let wire = server.transport.wireBytes
        let memory = meanAfterWarmUp(memoryRecords), network = meanAfterWarmUp(networkRecords)
        let load = (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8))?.split(separator: " ").prefix(3).joined(separator: " ") ?? "?"
        let report = Report(inMemorySecondsPerStep: memory, networkSecondsPerStep: network, ratio: network / memory,
                            payloadBytesPerStep: Double(wire.payload) / Double(max(1, networkRecords.count)),
                            frameBytesPerStep: Double(wire.frames) / Double(max(1, networkRecords.count)),
                            lossesEqual: memoryRecords.map(\.loss) == networkRecords.map(\.loss),
                            steps: networkRecords.count, clients: ids.count, loadAverage: load)
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
        } else {
            print(String(format: "in memory:        %.3f s/step", memory))
            print(String(format: "loopback TLS:     %.3f s/step (%.2fx)", network, network / memory))
            print(String(format: "sealed payloads:  %.0f bytes/step; protobuf frames %.0f bytes/step (+%.3f%%)", report.payloadBytesPerStep,
                         report.frameBytesPerStep, 100 * (report.frameBytesPerStep / max(1, report.payloadBytesPerStep) - 1)))
            print("losses equal:     \(report.lossesEqual); load average \(load)")
        }
    }
}

/// Hands a party to the one task that uses it.
final class SendableBox<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}
