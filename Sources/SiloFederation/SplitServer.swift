import Foundation
import SiloModels
import SiloTensor

// M clients in one server pass, B_i rows of client i, T_i its tokens, C hidden size.

/// The server of split learning: holds blocks k ..< L − j only (never the embedding or the head), their
/// adapters and optimizer, and — in server-hierarchical mode — one replica of its trainable values and
/// optimizer state per client.
public final class SplitServer {
    public let plan: SplitPlan
    public let part: ModelPart
    public let optimizer: (any Optimizer)?

    /// One client's copy of the server's trainables (server-hierarchical mode).
    struct Replica {
        var values: Tensor
        var optimizerState: [String: Tensor]
        /// Examples behind the replica's updates since the last averaging.
        var examples: Int
    }

    private var replicas: [String: Replica] = [:]
    private var activeReplica: String?

    /// - Parameters:
    ///   - model: a model instance holding exactly `plan.serverStages` (a server never loads the
    ///     embedding or the head).
    /// - Throws: ``ModelError`` if the model holds a client stage or lacks a server block.
    public init(plan: SplitPlan, model: any LanguageModel, adapters: AdapterSpecification, key: RandomKey,
                optimizer makeOptimizer: ([Tensor]) throws -> any Optimizer) throws {
        guard !model.loadedStages.contains(.embedding), !model.loadedStages.contains(.head) else {
            throw ModelError(.invalidConfiguration, "split server: the model instance holds the embedding or the head (\(model.loadedStages.sorted().map(\.description))); load only \(plan.serverStages.sorted().map(\.description))")
        }
        let missing = plan.serverStages.subtracting(model.loadedStages)
        guard missing.isEmpty else {
            throw ModelError(.stageNotLoaded, "split server: the model instance lacks \(missing.sorted().map(\.description))")
        }
        self.plan = plan
        self.part = try ModelPart(model: model, adapters: adapters, key: key)
        let trainables = part.trainableTensors
        self.optimizer = trainables.isEmpty ? nil : try makeOptimizer(trainables)
    }

    /// The activations of one server pass, kept for its backward.
    public struct Pass {
        let leaves: [Tensor]
        let output: Tensor
        let rows: [Range<Int>]
        let times: [Int]
    }

    /// Runs the server's blocks once over the stacked activations of M clients.
    ///
    /// Each h_a[i] (B_i, T_i, C) becomes a gradient leaf, is right-padded with zeros to the longest T and
    /// stacked along the batch; h_b is sliced back per client to (B_i, T_i, C). Right padding leaves every
    /// real position exact under causal attention.
    /// - Throws: ``ProtocolError`` if the hidden sizes differ from the model's.
    public func forward(_ activations: [Tensor]) throws -> (outputs: [Tensor], pass: Pass) {
        let hidden = part.model.hiddenSize
        for (index, tensor) in activations.enumerated() where tensor.rank != 3 || tensor.shape[2] != hidden {
            throw ProtocolError("server: activations \(index) have shape \(tensor.shape), expected (B, T, \(hidden))")
        }
        let time = activations.map { $0.shape[1] }.max() ?? 0
        let leaves = activations.map { $0.requiringGrad() }
        let padded = try leaves.map { leaf -> Tensor in
            let missing = time - leaf.shape[1]
            return missing == 0 ? leaf : try Tensor.concatenate([leaf, Tensor.zeros([leaf.shape[0], missing, hidden])], axis: 1)
        }
        let stacked = padded.count == 1 ? padded[0] : try Tensor.concatenate(padded, axis: 0)
        let output = try part.run(stacked, blocks: plan.serverBlockRange)
        var rows: [Range<Int>] = []
        var start = 0
        var outputs: [Tensor] = []
        for leaf in leaves {
            let range = start..<(start + leaf.shape[0])
            rows.append(range)
            start = range.upperBound
            let slice = try output.detached().sliced(axis: 0, range: range).sliced(axis: 1, range: 0..<leaf.shape[1])
            outputs.append(slice.contiguous())
        }
        return (outputs, Pass(leaves: leaves, output: output, rows: rows, times: leaves.map { $0.shape[1] }))
    }

    /// Back-propagates the clients' dL/dh_b through the pass and returns each client's dL/dh_a.
    ///
    /// The server's loss is Σ w_i L_i (w_i: client i's share of the loss tokens), which is the mean loss of
    /// the stacked batch, so the server's gradient equals centralized training on the concatenated batch.
    /// Client i's own gradient dL_i/dh_a is returned (divided by w_i again), so each client steps on its
    /// own loss.
    /// - Throws: ``ProtocolError`` if a gradient's shape differs from the client's output.
    public func backward(_ pass: Pass, outputGradients: [Tensor], weights: [Double]) throws -> [Tensor] {
        precondition(outputGradients.count == pass.leaves.count && weights.count == pass.leaves.count)
        let seed = Tensor.zeros(pass.output.shape)
        let (time, hidden) = (pass.output.shape[1], pass.output.shape[2])
        for (index, gradient) in outputGradients.enumerated() {
            let expected = [pass.rows[index].count, pass.times[index], hidden]
            guard gradient.shape == expected else {
                throw ProtocolError("server: output gradient \(index) has shape \(gradient.shape), expected \(expected)")
            }
            let weight = Float(weights[index])
            let dense = gradient.isContiguous ? gradient : gradient.contiguous()
            for row in 0..<expected[0] {
                let target = seed.pointer + ((pass.rows[index].lowerBound + row) * time) * hidden
                let source = dense.pointer + row * pass.times[index] * hidden
                for offset in 0..<(pass.times[index] * hidden) { target[offset] = weight * source[offset] }
            }
        }
        try pass.output.backward(seed: seed)
        return zip(pass.leaves, weights).map { leaf, weight in
            guard let gradient = leaf.grad else { return Tensor.zeros(leaf.shape) }
            return weight > 0 ? gradient.scaled(by: Float(1 / weight)) : Tensor.zeros(leaf.shape)
        }
    }

    /// Steps the server's optimizer (or the active replica's) and clears gradients.
    public func step() throws {
        try optimizer?.step()
        optimizer?.zeroGrad()
    }

    // MARK: Server-hierarchical replicas

    /// Makes `clientID`'s replica the active one: its values and optimizer state are loaded into the
    /// server's model and optimizer (a new client's replica starts from the current values).
    public func activateReplica(for clientID: String) throws {
        if let active = activeReplica { saveReplica(active) }
        if let replica = replicas[clientID] {
            try part.assign(flattenedValues: replica.values)
            if let optimizer { try optimizer.load(state: replica.optimizerState) }
        } else {
            replicas[clientID] = Replica(values: part.flattenedValues(), optimizerState: optimizer?.state() ?? [:], examples: 0)
        }
        activeReplica = clientID
    }

    /// Counts `examples` toward the active replica's averaging weight.
    public func recordExamples(_ examples: Int) {
        guard let active = activeReplica else { return }
        replicas[active]?.examples += examples
    }

    private func saveReplica(_ clientID: String) {
        replicas[clientID]?.values = part.flattenedValues()
        replicas[clientID]?.optimizerState = optimizer?.state() ?? [:]
    }

    /// Averages the replicas' trainable values, weighted by the examples behind each since the last
    /// averaging, and gives every replica (and the server's model) the average. Optimizer states stay
    /// per replica.
    public func averageReplicas() throws {
        if let active = activeReplica { saveReplica(active) }
        activeReplica = nil
        guard !replicas.isEmpty else { return }
        let total = replicas.values.reduce(0) { $0 + $1.examples }
        let count = part.trainableCount
        var sum = [Double](repeating: 0, count: count)
        for key in replicas.keys.sorted() {
            guard let replica = replicas[key] else { continue }
            let weight = total > 0 ? Double(replica.examples) / Double(total) : 1 / Double(replicas.count)
            for index in 0..<count { sum[index] += weight * Double(replica.values.pointer[index]) }
        }
        let average = try Tensor(shape: [count], values: sum.map { Float($0) })
        try part.assign(flattenedValues: average)
        for key in replicas.keys {
            replicas[key]?.values = part.flattenedValues()
            replicas[key]?.examples = 0
        }
    }

    // MARK: Checkpoints

    /// The server's state as named tensors — its trainable values (`values`), its optimizer state
    /// (`optimizer/…`) and, server-hierarchical, each replica's (`replica/ID/…`) — and each replica's
    /// example count.
    public func checkpointState() -> (tensors: [String: Tensor], replicaExamples: [String: Int]) {
        if let active = activeReplica { saveReplica(active) }
        var tensors = part.trainableState(optimizer: optimizer)
        var examples: [String: Int] = [:]
        for (id, replica) in replicas {
            tensors["replica/\(id)/values"] = replica.values
            tensors.insert(replica.optimizerState, under: "replica/\(id)/optimizer/")
            examples[id] = replica.examples
        }
        return (tensors, examples)
    }

    /// Loads a state written by ``checkpointState()``.
    /// - Throws: ``ProtocolError`` or the optimizer's error when a tensor is missing or does not fit this
    ///   server's model; nothing is changed then.
    public func restore(from file: SafeTensorsFile, replicaExamples: [String: Int]) throws {
        let count = part.trainableCount
        func vector(_ name: String) throws -> Tensor {
            let tensor = try file.tensor(name)
            guard tensor.shape == [count] else {
                throw ProtocolError("\(file.url.path): \(name) holds \(tensor.count) values, this server trains \(count)")
            }
            return tensor
        }
        let values = count > 0 ? try vector("values") : nil
        var restored: [String: Replica] = [:]
        for (id, examples) in replicaExamples {
            restored[id] = Replica(values: try vector("replica/\(id)/values"), optimizerState: try file.tensors(under: "replica/\(id)/optimizer/"),
                                   examples: examples)
        }
        try optimizer?.load(state: try file.tensors(under: "optimizer/"))
        optimizer?.zeroGrad()
        if let values { try part.assign(flattenedValues: values) }
        replicas = restored
        activeReplica = nil
    }

    /// Drops a client's replica (the client left).
    public func removeReplica(for clientID: String) {
        replicas[clientID] = nil
        if activeReplica == clientID { activeReplica = nil }
    }
}
