import Foundation
import SiloFederation
import SiloModels
import SiloTensor

/// The parties of a tiny split run (Llama with V 40, C 16, 5 blocks, random weights), the same as
/// SiloFederationTests' split tests: every test builds fresh parties, so two runs start identical.
enum TinySplitRun {
    static let configuration = LlamaConfiguration(vocabularySize: 40, hiddenSize: 16, intermediateSize: 24, layerCount: 5,
                                                  attentionHeads: 4, keyValueHeads: 2, rmsNormEpsilon: 1e-5,
                                                  ropeTheta: 10000, tieWordEmbeddings: true)

    static let weights: [String: Tensor] = {
        let key = RandomKey(seed: 11)
        var tensors: [String: Tensor] = [:]
        let c = configuration.hiddenSize, f = configuration.intermediateSize, d = c / configuration.attentionHeads
        func add(_ name: String, _ shape: [Int]) { tensors[name] = Tensor.randomNormal(shape, standardDeviation: 0.2, key: key.split(name)) }
        add("model.embed_tokens.weight", [configuration.vocabularySize, c])
        tensors["model.norm.weight"] = Tensor.ones([c])
        for layer in 0..<configuration.layerCount {
            let p = "model.layers.\(layer)."
            tensors[p + "input_layernorm.weight"] = Tensor.ones([c])
            tensors[p + "post_attention_layernorm.weight"] = Tensor.ones([c])
            add(p + "self_attn.q_proj.weight", [c, c])
            add(p + "self_attn.k_proj.weight", [2 * d, c])
            add(p + "self_attn.v_proj.weight", [2 * d, c])
            add(p + "self_attn.o_proj.weight", [c, c])
            add(p + "mlp.gate_proj.weight", [f, c])
            add(p + "mlp.up_proj.weight", [f, c])
            add(p + "mlp.down_proj.weight", [c, f])
        }
        return tensors
    }()

    static let adapters = AdapterSpecification(lora: LoRAConfiguration(rank: 2, alpha: 4, targetModules: ["q_proj", "v_proj"]))
    static let plan = try! SplitPlan(layerCount: configuration.layerCount)

    static func model(stages: Set<ModelStage>) throws -> LlamaModel {
        try LlamaModel(configuration: configuration, weights: TensorDictionary(weights), stages: stages)
    }

    /// Two rows of `time` tokens, 3 labelled positions per row.
    static func batch(seed: UInt64, time: Int = 6) -> TrainingBatch {
        var generator = SeededGenerator(seed: seed)
        var ids: [Int32] = [], labels: [Int32] = []
        for _ in 0..<2 {
            let rowIds = (0..<time).map { _ in Int32.random(in: 1..<40, using: &generator) }
            ids += rowIds
            labels += (0..<time).map { position in position >= time - 4 && position < time - 1 ? rowIds[position + 1] : -100 }
        }
        return TrainingBatch(ids: ids, labels: labels, batch: 2, time: time)
    }

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
