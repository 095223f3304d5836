import Foundation
import SiloCompression
import SiloData
import SiloModels
import SiloPrivacy
import SiloTensor

// d: trainable values (the flattened LoRA adapters); E: local steps; m: clients in a round.

/// One round of federated LoRA, as recorded in `results.json` (`federated.rounds`).
public struct FederatedRoundRecord: Codable, Sendable {
    public var round: Int
    /// Clients whose update was aggregated.
    public var clients: [String]
    /// Clients sampled but left out (budget spent).
    public var excluded: [String]
    /// Mean over the round's clients of their mean local training loss.
    public var loss: Double
    public var clientLosses: [String: Double]
    public var aggregation: AggregationRecord
    /// Each client's total ε after the round (empty without DP).
    public var epsilon: [String: Double]
    /// Bytes each client uploaded this round (its update, or its secure-aggregation messages).
    public var uploadBytes: [String: Int]
    /// Seconds each client spent encoding its update with `federated.codec` (empty without a codec).
    public var compressionSeconds: [String: Double] = [:]
    public var seconds: Double

    enum CodingKeys: String, CodingKey {
        case round, clients, excluded, loss, clientLosses = "client_losses", aggregation, epsilon, uploadBytes = "upload_bytes",
             compressionSeconds = "compression_seconds", seconds
    }
}

/// The federated-LoRA part of `results.json`.
public struct FederatedResults: Codable, Sendable {
    public var strategy: String
    public var loraAggregation: String
    public var secureAggregation: Bool
    public var rounds: [FederatedRoundRecord]
    /// Per client: total ε and ε by mechanism, at δ below (absent without DP).
    public var epsilon: [String: [String: Double]]
    public var delta: Double
    /// The ledger itself (entries by client), for resuming and auditing.
    public var ledger: PrivacyLedger
    /// Example-level DP-SGD noise multiplier of each client (calibrated to the target ε when one is given).
    public var exampleNoiseMultipliers: [String: Double]
    /// Trainable adapter values d and the frozen model's parameters.
    public var adapterParameters: Int
    public var modelParameters: Int
    /// Per round per client: adapters down and up (Float32), and what full-model FedAvg would move each way.
    public var bytesPerRoundPerClient: [String: Int]

    enum CodingKeys: String, CodingKey {
        case strategy, loraAggregation = "lora_aggregation", secureAggregation = "secure_aggregation", rounds, epsilon, delta, ledger,
             exampleNoiseMultipliers = "example_noise_multipliers", adapterParameters = "adapter_parameters",
             modelParameters = "model_parameters", bytesPerRoundPerClient = "bytes_per_round_per_client"
    }
}

/// Federated LoRA (DP-LoRA, PAPERS.md §2) in one process: each round, sampled clients start from the
/// global adapters on the (shared, frozen) model, train E local steps on their own data, and upload
/// Δ = trained − global; the server aggregates (FedAvg or the product rule, optional client-level DP,
/// optional secure aggregation) and steps its optimizer. Local DP and example-level DP-SGD happen on the
/// client. Every release is recorded in a per-client ``PrivacyLedger``.
public enum FederatedLoRASimulation {
    public static func run(_ configuration: SimulationConfiguration, modelStore: ModelStore = ModelStore(),
                           dataStore: DataStore = DataStore(), onEvent: @escaping (SimulationEvent) -> Void = { _ in }) throws -> SimulationResults {
        let started = DispatchTime.now().uptimeNanoseconds
        let settings = configuration.federated, privacy = configuration.privacy
        let key = RandomKey(seed: configuration.seed)
        let prepared = try Simulation.prepare(configuration, modelStore: modelStore, dataStore: dataStore, onEvent: onEvent)
        var notes = prepared.notes
        var failures = prepared.failures
        let clientIDs = prepared.clientIDs.filter { prepared.clientExamples[$0] != nil }

        onEvent(.phase("loading \(configuration.model) (every client holds the whole frozen model)", total: 0))
        let model = try Checkpoint.load(prepared.modelURL)
        let part = try ModelPart(model: model, adapters: AdapterSpecification(lora: configuration.adapters.specification.lora),
                                 key: key.split("adapters"))
        let layers = model.layerCount
        let d = part.trainableCount
        let modelParameters = model.namedParameters().filter { !$0.name.contains("lora_") }.reduce(0) { $0 + $1.tensor.count }
        let shapes = part.trainableTensors.map(\.shape)
        let layout = try LoRALayout(names: part.trainableNames, shapes: shapes)
        let codec = try makeCodec(settings.codec, seed: configuration.seed)
        if codec.name != "none" {
            notes.append("updates compressed with \(codec.name) before upload (each adapter matrix on its own; k-means clusters the rows of the longer axis); the server aggregates the decoded updates")
        }
        if configuration.adapters.prefix != nil {
            notes.append("federated-lora trains LoRA only; the prefix section is ignored")
        }

        onEvent(.phase("evaluating before training (\(prepared.evaluationCount) examples)", total: 0))
        part.setTraining(false)
        let before = try prepared.evaluate(CentralizedScorer(part: part))

        // Privacy setup.
        var ledger = try PrivacyLedger(delta: privacy.delta, budget: privacy.epsilonBudget)
        let batchSize = configuration.data.batchSize
        var exampleNoise: [String: Double] = [:]
        if let dp = privacy.exampleDP {
            for id in clientIDs {
                let q = min(1, Double(batchSize) / Double(prepared.clientExamples[id]?.count ?? 1))
                exampleNoise[id] = try dp.noiseMultiplier ?? RDPAccountant.noiseMultiplier(
                    epsilon: dp.targetEpsilon ?? 1, sampleRate: q, steps: settings.rounds * settings.localSteps, delta: privacy.delta)
            }
            notes.append("example-level DP-SGD: Poisson sampling q = batch_size / client examples, per-example clipping to \(dp.clip), noise multiplier " +
                         (dp.targetEpsilon.map { "calibrated per client to ε = \($0) over all \(settings.rounds * settings.localSteps) local steps (δ = \(privacy.delta))" } ?? "\(dp.noiseMultiplier ?? 0)"))
        }
        let clientDP = try privacy.clientDP.map { dp -> ClientLevelDP in
            let perRound = settings.clientsPerRound ?? max(1, Int((settings.fraction * Double(clientIDs.count)).rounded()))
            let clipping: ClientLevelDP.Clipping = dp.clipping == "adaptive"
                ? .adaptive(targetQuantile: dp.targetQuantile, learningRate: dp.clipLearningRate,
                            countStandardDeviation: dp.clippedCountStddev ?? Double(perRound) / 20)
                : .fixed
            let result = ClientLevelDP(noiseMultiplier: dp.noiseMultiplier, clip: dp.clip, clipping: clipping)
            _ = try result.updateNoiseMultiplier()
            return result
        }
        let aggregator = UpdateAggregator(clientDP: clientDP, secureAggregation: settings.secureAggregation)
        let strategyKind: ServerOptimizer.Kind = ServerOptimizer.Kind(rawValue: settings.strategy) ?? .fedavg
        let defaults = ServerOptimizer.defaults(strategyKind)
        let server = ServerOptimizer(kind: strategyKind, learningRate: settings.serverLearningRate ?? defaults.learningRate,
                                     beta1: settings.beta1, beta2: settings.beta2, tau: settings.tau ?? defaults.tau)
        let proximalMu = settings.strategy == "fedprox" ? settings.proximalMu : 0
        if settings.secureAggregation {
            notes.append("secure aggregation: the server learns only the sum of the round's payloads; clients clip (client-level DP) and weight their own updates, and the server adds DP noise after unmasking (central DP)")
        }
        notes.append("lora_aggregation \(settings.loraAggregation.rawValue): " + (settings.loraAggregation == .factors
            ? "A and B averaged separately (as DP-LoRA); mean(B)·mean(A) is not the mean of B·A"
            : "ΔW = Σ p_i B_i A_i re-factored to rank r by SVD (best rank-r approximation of the true mean)"))

        // Each client's batches cycle through its data across rounds.
        var iterators: [String: BatchIterator] = [:]
        for (index, id) in clientIDs.enumerated() {
            let examples = prepared.clientExamples[id] ?? []
            let perEpoch = max(1, examples.count / batchSize)
            iterators[id] = BatchIterator(examples: examples, batchSize: batchSize,
                                          epochs: (settings.rounds * settings.localSteps + perEpoch - 1) / perEpoch,
                                          seed: configuration.seed &+ UInt64(index + 1))
        }
        let makeOptimizer = Simulation.makeOptimizer(configuration.optimizer)

        var global = part.flattenedValues().toArray()
        var rounds: [FederatedRoundRecord] = []
        var retired = Set<String>()
        var trainLoss: [Double] = []
        let perRound = settings.clientsPerRound ?? max(1, Int((settings.fraction * Double(clientIDs.count)).rounded()))
        onEvent(.phase("federated LoRA, \(settings.strategy), \(clientIDs.count) clients, \(perRound) per round", total: settings.rounds))
        let trainStart = DispatchTime.now().uptimeNanoseconds
        for round in 1...settings.rounds {
            let roundStart = DispatchTime.now().uptimeNanoseconds
            let roundKey = key.split("round").split(UInt64(round))
            let available = clientIDs.filter { !retired.contains($0) }
            guard !available.isEmpty else {
                notes.append("round \(round): every client has spent its privacy budget; training stopped")
                break
            }
            let order = seededPermutation(count: available.count, key: roundKey.split("sample"))
            let sampled = order.prefix(min(perRound, available.count)).map { available[$0] }.sorted()
            let q = Double(sampled.count) / Double(clientIDs.count)

            // Budget: what this round would cost each sampled client.
            var participants: [String] = [], excluded: [String] = []
            for id in sampled {
                var pending: [PrivacyLedger.Entry] = []
                if let z = exampleNoise[id] {
                    let sampleRate = min(1, Double(batchSize) / Double(prepared.clientExamples[id]?.count ?? 1))
                    pending.append(.init(mechanism: "dp-sgd", event: try .init(noiseMultiplier: z, sampleRate: sampleRate, steps: settings.localSteps)))
                }
                if let local = privacy.localDP {
                    pending.append(.init(mechanism: "local-dp", event: try .init(noiseMultiplier: local.noiseMultiplier, sampleRate: 1, steps: 1)))
                }
                if let clientDP, clientDP.noiseMultiplier > 0 {
                    pending.append(.init(mechanism: "client-dp", event: try .init(noiseMultiplier: clientDP.noiseMultiplier, sampleRate: q, steps: 1)))
                }
                if try ledger.allows(client: id, pending) {
                    participants.append(id)
                } else if privacy.stopWhenSpent {
                    excluded.append(id)
                    retired.insert(id)
                    let spent = try ledger.epsilon(client: id)
                    onEvent(.message("round \(round): \(id) has spent ε = \(String(format: "%.3f", spent)) of \(privacy.epsilonBudget ?? 0); it trains no more"))
                    failures.append(.init(client: id, error: "privacy budget spent after round \(round - 1): ε = \(spent)"))
                } else {
                    throw PrivacyParameterError("\(id): round \(round) would exceed the privacy budget ε = \(privacy.epsilonBudget ?? 0) (privacy.stop_when_spent is false)")
                }
            }
            guard !participants.isEmpty else {
                notes.append("round \(round): no sampled client has budget left; training stopped")
                break
            }

            // Local training.
            var updates: [AdapterUpdate] = [], clientLosses: [String: Double] = [:], trained: [[Float]] = []
            var compressedBytes: [String: Int] = [:]
            var compressionSeconds: [String: Double] = [:]
            let globalTensor = try Tensor(shape: [d], values: global)
            for id in participants {
                let clientKey = roundKey.split(id)
                var iterator = iterators[id]!
                let (values, loss) = try trainLocally(part: part, global: globalTensor, layers: layers, steps: settings.localSteps,
                                                      batches: &iterator, examples: prepared.clientExamples[id] ?? [],
                                                      exampleDP: exampleNoise[id].map { ($0, privacy.exampleDP?.clip ?? 1, batchSize) },
                                                      proximalMu: proximalMu, makeOptimizer: makeOptimizer, key: clientKey)
                iterators[id] = iterator
                var delta = zip(values, global).map { $0 - $1 }
                if let local = privacy.localDP {
                    delta = GaussianMechanism.clipped(delta, to: local.clip)
                    let noise = Tensor.randomNormal([d], standardDeviation: Float(local.noiseMultiplier * local.clip), key: clientKey.split("local-dp")).toArray()
                    for index in 0..<d { delta[index] += noise[index] }
                    try ledger.record(client: id, mechanism: "local-dp", noiseMultiplier: local.noiseMultiplier, sampleRate: 1)
                }
                if let z = exampleNoise[id] {
                    let sampleRate = min(1, Double(batchSize) / Double(prepared.clientExamples[id]?.count ?? 1))
                    try ledger.record(client: id, mechanism: "dp-sgd", noiseMultiplier: z, sampleRate: sampleRate, steps: settings.localSteps)
                }
                guard delta.allSatisfy(\.isFinite) else { throw ProtocolError("\(id): round \(round): the local update is not finite") }
                if codec.name != "none" {
                    let encodeStart = DispatchTime.now().uptimeNanoseconds
                    let (decoded, bytes) = try UpdateCompression.roundTrip(delta, shapes: shapes, codec: codec)
                    compressionSeconds[id] = Double(DispatchTime.now().uptimeNanoseconds - encodeStart) / 1e9
                    delta = decoded
                    compressedBytes[id] = bytes
                }
                updates.append(AdapterUpdate(clientID: id, delta: delta, examples: prepared.clientExamples[id]?.count ?? 0))
                trained.append(zip(global, delta).map { $0 + $1 })
                clientLosses[id] = loss
            }

            // Aggregation.
            var uploadBytes: [String: Int] = [:]
            var record: AggregationRecord
            if settings.loraAggregation == .product {
                global = try layout.productAverage(trained, weights: updates.map { Double($0.examples) })
                record = AggregationRecord(updateNorms: Dictionary(uniqueKeysWithValues: updates.map { ($0.clientID, UpdateAggregator.norm($0.delta)) }))
                for update in updates { uploadBytes[update.clientID] = (compressedBytes[update.clientID] ?? d * 4) + 8 }
            } else {
                let result: (delta: [Float], record: AggregationRecord)
                if settings.secureAggregation {
                    let secure = try SecureUpdateSum.sum(updates: updates, aggregator: aggregator, round: UInt64(round),
                                                         dropouts: settings.secureAggregationDropouts)
                    result = try aggregator.finish(sum: secure.sum, clients: updates.count, norms: [:], key: roundKey.split("aggregate"))
                    uploadBytes = secure.uploadBytes
                    var withClamps = result.record
                    withClamps.clampedValues = secure.clampedValues
                    try server.apply(result.delta, to: &global)
                    record = withClamps
                } else {
                    result = try aggregator.aggregate(updates, key: roundKey.split("aggregate"))
                    for update in updates { uploadBytes[update.clientID] = (compressedBytes[update.clientID] ?? d * 4) + 8 }
                    try server.apply(result.delta, to: &global)
                    record = result.record
                }
            }
            if let clientDP, clientDP.noiseMultiplier > 0 {
                for id in clientIDs where !retired.contains(id) || participants.contains(id) {
                    try ledger.record(client: id, mechanism: "client-dp", noiseMultiplier: clientDP.noiseMultiplier, sampleRate: q)
                }
            }
            let loss = clientLosses.values.reduce(0, +) / Double(max(1, clientLosses.count))
            trainLoss.append(loss)
            var epsilon: [String: Double] = [:]
            for id in ledger.entries.keys { epsilon[id] = try ledger.epsilon(client: id) }
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - roundStart) / 1e9
            rounds.append(FederatedRoundRecord(round: round, clients: participants, excluded: excluded, loss: loss, clientLosses: clientLosses,
                                               aggregation: record, epsilon: epsilon, uploadBytes: uploadBytes,
                                               compressionSeconds: compressionSeconds, seconds: seconds))
            onEvent(.step(completed: round, loss: loss, seconds: seconds))
        }
        let trainSeconds = Double(DispatchTime.now().uptimeNanoseconds - trainStart) / 1e9

        try part.assign(flattenedValues: try Tensor(shape: [d], values: global))
        part.setTraining(false)
        onEvent(.phase("evaluating the global adapters", total: 0))
        let after = try prepared.evaluate(CentralizedScorer(part: part))

        let federated = FederatedResults(
            strategy: settings.strategy, loraAggregation: settings.loraAggregation.rawValue, secureAggregation: settings.secureAggregation,
            rounds: rounds, epsilon: try ledger.summary(), delta: privacy.delta, ledger: ledger, exampleNoiseMultipliers: exampleNoise,
            adapterParameters: d, modelParameters: modelParameters,
            bytesPerRoundPerClient: ["adapters_download": d * 4, "adapters_upload": (d + 2) * 4,
                                     "full_model_download": modelParameters * 4, "full_model_upload": modelParameters * 4])
        var bytes: [String: Int] = [:], messages: [String: Int] = [:]
        for round in rounds {
            bytes["update", default: 0] += round.uploadBytes.values.reduce(0, +)
            bytes["global_adapters", default: 0] += round.clients.count * d * 4
            messages["update", default: 0] += round.clients.count
            messages["global_adapters", default: 0] += round.clients.count
        }
        var results = SimulationResults(
            mode: "federated-lora", clients: configuration.clients, steps: rounds.count, model: configuration.model, task: prepared.task.rawValue,
            plan: "every client holds all \(layers) blocks; LoRA r = \(configuration.adapters.lora?.rank ?? 0) on \(configuration.adapters.lora?.targetModules.joined(separator: ", ") ?? "")",
            trainLoss: trainLoss, evalBefore: before, evalAfter: after, centralized: nil, bytes: bytes, messages: messages,
            secondsPerStep: ["round": trainSeconds / Double(max(1, rounds.count))], timings: ["training": trainSeconds],
            examplesPerClient: prepared.examplesPerClient, evaluationExamples: prepared.evaluationCount, failures: failures, notes: notes,
            configuration: configuration, seconds: Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9)
        results.federated = federated
        return results
    }

    /// E local steps from the global adapters; returns the trained values and the mean loss.
    /// Without DP a step is one batch from the client's iterator; with DP-SGD each example joins the
    /// step's batch with probability q = batch / n, its gradient is computed alone and clipped, and
    /// noise is added to the sum (``GaussianMechanism/privateGradient``). FedProx adds μ·(w − w_global).
    static func trainLocally(part: ModelPart, global: Tensor, layers: Int, steps: Int, batches: inout BatchIterator,
                             examples: [EncodedExample], exampleDP: (noiseMultiplier: Double, clip: Double, batchSize: Int)?,
                             proximalMu: Double, makeOptimizer: ([Tensor]) throws -> any Optimizer, key: RandomKey) throws -> ([Float], Double) {
        try part.assign(flattenedValues: global)
        part.setTraining(true)
        let optimizer = try makeOptimizer(part.trainableTensors)
        let globalValues = proximalMu > 0 ? global.toArray() : []
        var losses: [Double] = []
        func proximal(_ gradient: [Float]) throws -> [Float] {
            guard proximalMu > 0 else { return gradient }
            let values = part.flattenedValues().toArray()
            return (0..<gradient.count).map { gradient[$0] + Float(proximalMu) * (values[$0] - globalValues[$0]) }
        }
        for step in 0..<steps {
            let stepKey = key.split(UInt64(step))
            if let dp = exampleDP {
                let q = min(1, Double(dp.batchSize) / Double(max(1, examples.count)))
                let chosen = examples.indices.filter { stepKey.split("poisson").uniform(UInt64($0)) < Float(q) }
                var perExample: [[Float]] = []
                for index in chosen {
                    let example = examples[index]
                    let hidden = try part.embedAndRun(ids: example.ids, batch: 1, time: example.ids.count, blocks: 0..<0)
                    let (loss, _) = try part.loss(hidden: hidden, labels: example.labels, blocks: 0..<layers)
                    losses.append(Double(loss.toArray()[0]))
                    try loss.backward()
                    perExample.append(part.flattenedGradients().toArray())
                    optimizer.zeroGrad()
                }
                let gradient = GaussianMechanism.privateGradient(perExample: perExample, count: part.trainableCount, clip: dp.clip,
                                                                 noiseMultiplier: dp.noiseMultiplier,
                                                                 expectedBatchSize: q * Double(examples.count), key: stepKey.split("noise"))
                try part.assign(flattenedGradients: try Tensor(shape: [gradient.count], values: try proximal(gradient)))
            } else {
                guard let batch = batches.next() else { throw ProtocolError("local training: the client's batches ran out") }
                let hidden = try part.embedAndRun(ids: batch.ids, batch: batch.batch, time: batch.time, blocks: 0..<0)
                let (loss, _) = try part.loss(hidden: hidden, labels: batch.labels, blocks: 0..<layers)
                let value = Double(loss.toArray()[0])
                guard value.isFinite else { throw ProtocolError("local training: loss is \(value)") }
                losses.append(value)
                try loss.backward()
                if proximalMu > 0 {
                    let gradient = try proximal(part.flattenedGradients().toArray())
                    try part.assign(flattenedGradients: try Tensor(shape: [gradient.count], values: gradient))
                }
            }
            try optimizer.step()
            optimizer.zeroGrad()
        }
        part.setTraining(false)
        return (part.flattenedValues().toArray(), losses.isEmpty ? .nan : losses.reduce(0, +) / Double(losses.count))
    }
}

/// A client's update through a codec, matrix by matrix: what the server decodes, and the bytes sent.
enum UpdateCompression {
    static func roundTrip(_ delta: [Float], shapes: [[Int]], codec: any TensorCodec) throws -> (values: [Float], bytes: Int) {
        var result: [Float] = [], bytes = 0, offset = 0
        result.reserveCapacity(delta.count)
        for shape in shapes {
            let count = shape.reduce(1, *)
            var rows = shape.first ?? 1, columns = count / max(1, rows)
            var piece = Array(delta[offset..<(offset + count)])
            let transpose = codec is KMeansCodec && rows < columns
            if transpose {
                piece = (0..<count).map { piece[($0 % rows) * columns + $0 / rows] }
                swap(&rows, &columns)
            }
            let encoded = try codec.encode(piece, rows: rows, columns: columns)
            bytes += encoded.count
            var decoded = try codec.decode(encoded).values
            if transpose {
                decoded = (0..<count).map { decoded[($0 % rows) * columns + $0 / rows] }
            }
            result += decoded
            offset += count
        }
        return (result, bytes)
    }
}

/// The round's payloads summed with secure aggregation (``SecureAggregationServer``): pairwise masks,
/// Shamir shares of the mask seeds (threshold m − dropouts), fixed-point words in Z_2^32.
enum SecureUpdateSum {
    /// Per-value range of the fixed-point encoding; values beyond it are clamped (and counted).
    static let range: Float = 2

    static func sum(updates: [AdapterUpdate], aggregator: UpdateAggregator, round: UInt64, dropouts: Int)
        throws -> (sum: [Double], uploadBytes: [String: Int], clampedValues: Int) {
        let m = updates.count
        let total = updates.reduce(0) { $0 + $1.examples }
        let payloads = updates.map { aggregator.payload(for: $0, totalExamples: total) }
        guard m >= 2 else {
            // One client: there is nothing to hide it among.
            throw AggregationError("secure aggregation needs at least 2 clients in a round (got \(m))")
        }
        var scale: Float = 1
        while Double(m) * Double(range) * Double(scale) * 2 <= Double(Int32.max) { scale *= 2 }
        let encoding = try SecureAggregationEncoding(scale: scale, clippingRange: range, maximumClients: m)
        let threshold = max(1, m - dropouts)
        let configuration = try SecureAggregationConfiguration(round: round, threshold: threshold, clientCount: m, encoding: encoding,
                                                               vectorLength: payloads[0].count, allowMinorityThreshold: 2 * threshold <= m)
        var clients = (0..<m).map { SecureAggregationClient(clientID: UInt32($0), configuration: configuration) }
        var server = SecureAggregationServer(configuration: configuration)
        var bytes = [Int](repeating: 0, count: m)
        for index in 0..<m {
            let advertisement = try clients[index].advertise()
            bytes[index] += advertisement.maskPublicKey.count + advertisement.encryptionPublicKey.count + 12
            try server.receive(advertisement)
        }
        let roster = try server.finishAdvertising()
        for index in 0..<m {
            let shares = try clients[index].shareKeys(roster: roster)
            bytes[index] += shares.ciphertexts.values.reduce(0) { $0 + $1.count + 4 } + 12
            try server.receive(shares)
        }
        let inbox = try server.finishSharing()
        var clamped = 0
        for index in 0..<m {
            clamped += payloads[index].filter { abs($0) > range }.count
            let masked = try clients[index].maskedInput(shares: inbox[UInt32(index)] ?? [:], vector: payloads[index])
            bytes[index] += masked.words.count * 4 + 12
            try server.receive(masked)
        }
        let request = try server.finishCollection()
        for index in 0..<m where request.survivors.contains(UInt32(index)) {
            let response = try clients[index].unmask(request)
            bytes[index] += (response.selfMaskShares.values.map(\.values.count).reduce(0, +)
                + response.keyShares.values.map(\.values.count).reduce(0, +)) * 8 + 12
            try server.receive(response)
        }
        let words = try server.finish()
        let sum = encoding.decode(words).map(Double.init)
        var uploadBytes: [String: Int] = [:]
        for (index, update) in updates.enumerated() { uploadBytes[update.clientID] = bytes[index] }
        return (sum, uploadBytes, clamped)
    }
}
