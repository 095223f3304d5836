import Foundation
import SiloFederation
import SiloModels
import SiloSplitTestSupport
import SiloTensor

/// The parties of a tiny split run (``TinyLlama``, as in SiloFederationTests' split tests): every test
/// builds fresh parties, so two runs start identical.
enum TinySplitRun {
    static let adapters = TinyLlama.adapters
    static let plan = try! SplitPlan(layerCount: TinyLlama.configuration.layerCount)

    static func model(stages: Set<ModelStage>) throws -> LlamaModel { try TinyLlama.model(stages: stages) }

    static func batch(seed: UInt64, time: Int = 6) -> TrainingBatch { TinyLlama.batch(seed: seed, time: time) }

    static func optimizer(_ parameters: [Tensor]) throws -> any Optimizer {
        try AdamW(parameters: parameters, learningRate: 0.05, weightDecay: 0.01)
    }

    static func clientID(_ index: Int) -> String { "client-\(index + 1)" }

    /// Client `index` with its own batches (`steps` of them).
    static func client(_ index: Int, steps: Int) throws -> SplitClient {
        var batches = (0..<steps).map { batch(seed: UInt64(100 * index + $0)) }.makeIterator()
        let id = clientID(index)
        return try SplitClient(clientID: id, plan: plan, model: model(stages: plan.clientStages), adapters: adapters,
                               key: RandomKey(seed: 5), optimizer: optimizer, batches: {
            guard let next = batches.next() else { throw ProtocolError("\(id): out of batches") }
            return next
        })
    }

    static func server() throws -> SplitServer {
        try SplitServer(plan: plan, model: model(stages: plan.serverStages), adapters: adapters, key: RandomKey(seed: 5),
                        optimizer: optimizer)
    }

    static func schedule(steps: Int) -> SplitSchedule {
        SplitSchedule(mode: .clientBatching, rounds: steps, localSteps: 1, clientAggregation: .gradients)
    }

    /// The reference: the same run through the in-memory transport.
    static func inMemoryLosses(clients: Int, steps: Int) throws -> [Double] {
        let parties = try (0..<clients).map { try client($0, steps: steps) }
        let transport = try InMemoryTransport(links: parties.map { try SessionProtection.link(for: $0) })
        let coordinator = SplitCoordinator(server: try server(), transport: transport, schedule: schedule(steps: steps))
        return try coordinator.run().map(\.loss)
    }
}

/// Hands a value to the task that alone uses it.
final class Unchecked<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}

/// Collects log lines from any thread.
final class LogLines: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [String] = []

    func append(_ line: String) {
        lock.lock(); defer { lock.unlock() }
        lines.append(line)
    }

    var all: [String] {
        lock.lock(); defer { lock.unlock() }
        return lines
    }

    func contains(_ text: String) -> Bool { all.contains { $0.contains(text) } }
}
