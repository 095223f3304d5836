import Foundation
import SiloCompression
import SiloData
import SiloModels
import SiloPrivacy
import SiloTensor

/// What `silo simulate` writes to `results.json` (snake_case keys).
public struct SimulationResults: Codable, Sendable {
    public struct Run: Codable, Sendable {
        public var steps: Int
        /// Mean loss over each step's loss tokens.
        public var trainLoss: [Double]
        public var evalBefore: [String: Double]
        public var evalAfter: [String: Double]
        public var secondsPerStep: Double
        public var seconds: Double

        enum CodingKeys: String, CodingKey {
            case steps, trainLoss = "train_loss", evalBefore = "eval_before", evalAfter = "eval_after",
                 secondsPerStep = "seconds_per_step", seconds
        }
    }

    public struct Failure: Codable, Sendable {
        public var client: String
        public var error: String
    }

    public var mode: String
    public var clients: Int
    public var steps: Int
    public var model: String
    public var task: String
    public var plan: String
    public var trainLoss: [Double]
    public var evalBefore: [String: Double]
    public var evalAfter: [String: Double]
    public var centralized: Run?
    /// Sealed bytes by message type, as they crossed the (in-memory) wire.
    public var bytes: [String: Int]
    public var messages: [String: Int]
    /// "split" and "centralized".
    public var secondsPerStep: [String: Double]
    /// Split training seconds by part of the work: client_compute, server_compute, sealing, copying.
    public var timings: [String: Double]
    public var examplesPerClient: [String: Int]
    public var evaluationExamples: Int
    public var failures: [Failure]
    public var notes: [String]
    public var configuration: SimulationConfiguration
    public var seconds: Double
    /// Federated LoRA: rounds, privacy ledger, bytes (nil in split mode).
    public var federated: FederatedResults? = nil
    /// Split mode with activation noise: each client's ε for its activations (nil without noise).
    public var activationEpsilon: [String: Double]? = nil
    /// k-means-centroids mode: ratio, bytes, k-means time (nil otherwise).
    public var centroids: CentroidResults? = nil
    /// Split mode with `split.codec`: what ``bytes`` would have been uncompressed (nil without a codec).
    public var bytesUncompressed: [String: Int]? = nil

    enum CodingKeys: String, CodingKey {
        case federated, activationEpsilon = "activation_epsilon", centroids, bytesUncompressed = "bytes_uncompressed"
        case mode, clients, steps, model, task, plan, trainLoss = "train_loss", evalBefore = "eval_before",
             evalAfter = "eval_after", centralized, bytes, messages, secondsPerStep = "seconds_per_step", timings,
             examplesPerClient = "examples_per_client", evaluationExamples = "evaluation_examples", failures, notes,
             configuration, seconds
    }
}

/// Progress of a simulation, for a progress bar.
public enum SimulationEvent {
    /// A phase starts (loading, evaluating, training) with the number of steps it has (0: unknown).
    case phase(String, total: Int)
    /// A training step of the current phase finished.
    case step(completed: Int, loss: Double, seconds: Double)
    /// A line worth showing (a dropped client, a data note).
    case message(String)
}

/// Runs a whole federated experiment in one process: data owners with their shards, split training
/// through sealed sessions, evaluation before and after, and the same fine-tuning centralized.
public enum Simulation {
    public static func run(_ configuration: SimulationConfiguration, modelStore: ModelStore = ModelStore(),
                           dataStore: DataStore = DataStore(), onEvent: @escaping (SimulationEvent) -> Void = { _ in }) throws -> SimulationResults {
        try configuration.validate()
        if configuration.mode == "federated-lora" {
            return try FederatedLoRASimulation.run(configuration, modelStore: modelStore, dataStore: dataStore, onEvent: onEvent)
        }
        if configuration.mode == "kmeans-centroids" {
            return try CentroidExchangeSimulation.run(configuration, modelStore: modelStore, dataStore: dataStore, onEvent: onEvent)
        }
        let started = DispatchTime.now().uptimeNanoseconds
        let seed = configuration.seed
        let key = RandomKey(seed: seed)
        let prepared = try prepare(configuration, modelStore: modelStore, dataStore: dataStore, onEvent: onEvent)
        let modelURL = prepared.modelURL, task = prepared.task, evaluate = prepared.evaluate
        let evaluationExamples = prepared.evaluationCount
        let plan = try SplitPlan(layerCount: prepared.layerCount, inputBlocks: configuration.split.k, outputBlocks: configuration.split.j,
                                 allowingUnsafeCut: configuration.split.allowUnsafeCut)
        var notes: [String] = ["split: \(plan)"] + prepared.notes
        if plan.isUnsafe { notes.append("UNSAFE cut: k = 0 leaves only the embedding on the client (attack experiments only)") }
        let stepsPerClient = configuration.split.rounds * configuration.split.localSteps
        var failures = prepared.failures
        let clientBatches = trainingBatches(prepared, configuration: configuration)
        let activeIDs = prepared.clientIDs.filter { clientBatches[$0] != nil }
        let examplesPerClient = prepared.examplesPerClient

        // Split parties.
        onEvent(.phase("loading \(activeIDs.count) clients and the server", total: 0))
        let adapters = configuration.adapters.specification
        let optimizerFactory = makeOptimizer(configuration.optimizer)
        let timer = WorkTimer()
        let splitCodec = try stepCodec(configuration)
        var clients: [SplitClient] = []
        for id in activeIDs {
            clients.append(try makeClient(id, batches: clientBatches[id] ?? [], plan: plan, modelURL: modelURL,
                                          configuration: configuration, timer: timer))
        }
        let server = try makeServer(plan: plan, modelURL: modelURL, configuration: configuration)
        let scorer = SplitScorer(plan: plan, client: clients[0].part, server: server.part)

        onEvent(.phase("evaluating before training (\(evaluationExamples) examples)", total: 0))
        let before = try evaluate(scorer)

        let schedule = SplitSchedule(mode: configuration.split.mode, rounds: configuration.split.rounds,
                                     localSteps: configuration.split.localSteps,
                                     clientAggregation: configuration.split.clientAggregation)
        let transport = InMemoryTransport(links: try clients.map { try SessionProtection.link(for: $0) }, timer: timer)
        let coordinator = SplitCoordinator(server: server, transport: transport, schedule: schedule, timer: timer,
                                           codec: splitCodec, log: { onEvent(.message($0)) })
        onEvent(.phase("split training, \(schedule.mode.rawValue), \(activeIDs.count) clients", total: schedule.recordedSteps(clients: activeIDs.count)))
        let splitStart = DispatchTime.now().uptimeNanoseconds
        var completed = 0
        let records = try coordinator.run { record in
            completed += 1
            onEvent(.step(completed: completed, loss: record.loss, seconds: record.seconds))
        }
        let splitSeconds = Double(DispatchTime.now().uptimeNanoseconds - splitStart) / 1e9
        failures += coordinator.failures.map { .init(client: $0.clientID, error: $0.error) }

        onEvent(.phase("evaluating after split training", total: 0))
        let evaluationClient = clients.first { coordinator.activeClients.contains($0.clientID) } ?? clients[0]
        let after = try evaluate(SplitScorer(plan: plan, client: evaluationClient.part, server: server.part))

        // The same fine-tuning, centralized.
        var centralizedRun: SimulationResults.Run?
        if configuration.centralized {
            onEvent(.phase("loading the whole model for the centralized run", total: 0))
            let trainer = try CentralizedTrainer(model: Checkpoint.load(modelURL), adapters: adapters,
                                                 key: key.split("adapters"), optimizer: optimizerFactory)
            let sequence = centralizedBatches(clientBatches: activeIDs.map { clientBatches[$0] ?? [] }, schedule: schedule)
            onEvent(.phase("centralized training", total: sequence.count))
            let start = DispatchTime.now().uptimeNanoseconds
            var losses: [Double] = []
            for batch in sequence {
                let stepStart = DispatchTime.now().uptimeNanoseconds
                losses.append(try trainer.step(batch))
                onEvent(.step(completed: losses.count, loss: losses.last ?? .nan, seconds: Double(DispatchTime.now().uptimeNanoseconds - stepStart) / 1e9))
            }
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            onEvent(.phase("evaluating after centralized training", total: 0))
            let centralAfter = try evaluate(CentralizedScorer(part: trainer.part))
            centralizedRun = .init(steps: losses.count, trainLoss: losses, evalBefore: before, evalAfter: centralAfter,
                                   secondsPerStep: seconds / Double(max(1, losses.count)), seconds: seconds)
            notes.append("centralized: the same adapters and optimizer on the whole model, trained on the same batches (\(schedule.mode == .serial ? "in the serial order" : "the clients' batches of each step stacked")); it starts from the same initial model, so eval_before is shared")
        }

        var activationEpsilon: [String: Double]?
        if let noise = configuration.split.activationNoise {
            // An example's activations are released once per epoch it is in (batches go through the data
            // without repetition within an epoch): compose the Gaussian mechanism over that many releases.
            var epsilons: [String: Double] = [:]
            for id in activeIDs {
                epsilons[id] = try ActivationNoise.epsilon(noiseMultiplier: noise.noiseMultiplier, batches: stepsPerClient,
                                                           batchSize: configuration.data.batchSize,
                                                           examples: prepared.clientExamples[id]?.count ?? 1,
                                                           delta: configuration.privacy.delta).epsilon
            }
            activationEpsilon = epsilons
            notes.append("activation noise: each example's activations clipped to \(noise.clip) and N(0, (\(noise.noiseMultiplier)·\(noise.clip))²) added before they leave the client; activation_epsilon is each client's ε at δ = \(configuration.privacy.delta) for the examples released most often (the label-side traffic and the adapters are not covered)")
        }
        var secondsPerStep = ["split": splitSeconds / Double(max(1, records.count))]
        if let centralizedRun { secondsPerStep["centralized"] = centralizedRun.secondsPerStep }
        return SimulationResults(
            mode: schedule.mode.rawValue, clients: configuration.clients, steps: records.count, model: configuration.model,
            task: task.rawValue, plan: plan.description, trainLoss: records.map(\.loss), evalBefore: before, evalAfter: after,
            centralized: centralizedRun, bytes: transport.traffic.bytes, messages: transport.traffic.messages,
            secondsPerStep: secondsPerStep, timings: timer.totals, examplesPerClient: examplesPerClient,
            evaluationExamples: evaluationExamples, failures: failures, notes: notes, configuration: configuration,
            seconds: Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9, activationEpsilon: activationEpsilon,
            bytesUncompressed: splitCodec == nil ? nil : transport.traffic.uncompressedBytes)
    }

    /// What every mode needs before training: the model file, the task, each client's encoded examples,
    /// and the held-out evaluation.
    struct PreparedRun {
        var modelURL: URL
        var tokenizer: Tokenizer
        var layerCount: Int
        var task: TaskName
        var clientIDs: [String]
        /// Encoded training examples of each client with usable data.
        var clientExamples: [String: [EncodedExample]]
        var examplesPerClient: [String: Int]
        var failures: [SimulationResults.Failure]
        var notes: [String]
        var evaluationCount: Int
        var evaluate: (any LogProbabilityModel) throws -> [String: Double]
    }

    static func prepare(_ configuration: SimulationConfiguration, modelStore: ModelStore, dataStore: DataStore,
                        onEvent: (SimulationEvent) -> Void) throws -> PreparedRun {
        let seed = configuration.seed
        let key = RandomKey(seed: seed)
        let task = try TaskName(rawValue: configuration.task).unwrap(or: ConfigurationError("task: unknown task '\(configuration.task)'"))
        let template = task.template
        let generation = !template.isClassification

        onEvent(.phase("loading \(configuration.model)", total: 0))
        let modelURL = try modelStore.resolve(configuration.model)
        let tokenizer = modelURL.pathExtension.lowercased() == "gguf"
            ? try Tokenizer(ggufFile: GGUFFile(contentsOf: modelURL)) : try Tokenizer(directory: modelURL)
        let layerCount = try Checkpoint.load(modelURL, stages: [.embedding]).layerCount

        // Data: the task's training pool shared out among clients, or each client's own file.
        onEvent(.phase("preparing \(task) data", total: 0))
        let taskData = try dataStore.load(task)
        let clientIDs = (0..<configuration.clients).map { "client-\($0 + 1)" }
        var clientExamples: [Result<[Example], any Error>]
        if let files = configuration.data.clientFiles {
            clientExamples = files.map { path in Result { try Dataset.load(file: URL(fileURLWithPath: path), task: task) } }
        } else {
            let order = seededPermutation(count: taskData.train.count, key: key.split("train-pool"))
            let pool = order.prefix(configuration.data.trainExamples).map { taskData.train[$0] }
            let partition: Partition
            switch configuration.partition.kind {
            case "label-skew": partition = .labelSkew(classesPerClient: configuration.partition.classesPerClient)
            case "dirichlet": partition = .dirichlet(alpha: configuration.partition.alpha)
            default: partition = .iid
            }
            clientExamples = try partition.assign(Array(pool), clients: configuration.clients, seed: seed).map { .success($0) }
        }
        var failures: [SimulationResults.Failure] = []
        var encodedByClient: [String: [EncodedExample]] = [:]
        var examplesPerClient: [String: Int] = [:]
        for (index, id) in clientIDs.enumerated() {
            do {
                let examples = try clientExamples[index].get()
                guard !examples.isEmpty else {
                    throw DataError(.invalidArgument, "\(id) has no training example\(configuration.data.clientFiles.map { " (file \($0[index]) is empty)" } ?? " (its shard is empty: use fewer clients or a larger alpha)")")
                }
                encodedByClient[id] = try examples.map {
                    try template.encode($0, tokenizer: tokenizer, maxLength: configuration.data.maxLength,
                                        truncatingTarget: generation, appendingEndOfSequence: generation)
                }
                examplesPerClient[id] = examples.count
            } catch {
                failures.append(.init(client: id, error: "\(error)"))
                onEvent(.message("\(id) left out: \(error)"))
            }
        }
        guard !encodedByClient.isEmpty else {
            throw ProtocolError("no client has usable data: " + failures.map { "\($0.client): \($0.error)" }.joined(separator: "; "))
        }

        // Held-out evaluation set.
        let evaluationOrder = seededPermutation(count: taskData.evaluation.count, key: key.split("evaluation"))
        let evaluationExamples = evaluationOrder.prefix(configuration.evaluation.examples).map { taskData.evaluation[$0] }
        let evaluate: (any LogProbabilityModel) throws -> [String: Double]
        if evaluationExamples.isEmpty {
            evaluate = { _ in [:] }
        } else if generation {
            let budget = configuration.data.maxLength
            let prompts = try evaluationExamples.map { try template.encodePrompt($0, tokenizer: tokenizer, maxLength: budget) }
            let references = evaluationExamples.map { template.target(for: $0).trimmingCharacters(in: .whitespacesAndNewlines) }
            let stop = Set((tokenizer.eosTokenID.map { [Int32($0)] } ?? []))
            evaluate = { model in
                let outputs = try Evaluator.greedy(prompts, model: model, maxNewTokens: configuration.evaluation.maxNewTokens, stop: stop)
                let texts = outputs.map { tokenizer.decode($0.map(Int.init)).trimmingCharacters(in: .whitespacesAndNewlines) }
                return Metrics.evaluate(task, predictions: texts, references: references)
            }
        } else {
            let encodings = try evaluationExamples.map { try template.encodeChoices($0, tokenizer: tokenizer, maxLength: configuration.data.maxLength) }
            evaluate = { model in
                ["accuracy": try Evaluator.classification(encodings, model: model, batchSize: configuration.evaluation.batchSize).accuracy]
            }
        }
        return PreparedRun(modelURL: modelURL, tokenizer: tokenizer, layerCount: layerCount, task: task, clientIDs: clientIDs,
                           clientExamples: encodedByClient, examplesPerClient: examplesPerClient, failures: failures,
                           notes: taskData.notes, evaluationCount: evaluationExamples.count, evaluate: evaluate)
    }

    /// The centralized run's batches: each step's client batches stacked (client-batching and
    /// server-hierarchical), or one client batch at a time in the serial order.
    static func centralizedBatches(clientBatches: [[TrainingBatch]], schedule: SplitSchedule) -> [TrainingBatch] {
        var sequence: [TrainingBatch] = []
        for round in 0..<schedule.rounds {
            let range = (round * schedule.localSteps)..<((round + 1) * schedule.localSteps)
            if schedule.mode == .serial {
                for batches in clientBatches { sequence += batches[range] }
            } else {
                for step in range { sequence.append(TrainingBatch.stacking(clientBatches.map { $0[step] })) }
            }
        }
        return sequence
    }

    /// Each client's training batches for the whole run, in order (seeded per client by its position).
    static func trainingBatches(_ prepared: PreparedRun, configuration: SimulationConfiguration) -> [String: [TrainingBatch]] {
        let stepsPerClient = configuration.split.rounds * configuration.split.localSteps
        var clientBatches: [String: [TrainingBatch]] = [:]
        for (index, id) in prepared.clientIDs.enumerated() {
            guard let encoded = prepared.clientExamples[id] else { continue }
            let perEpoch = max(1, encoded.count / configuration.data.batchSize)
            let epochs = (stepsPerClient + perEpoch - 1) / perEpoch
            let iterator = BatchIterator(examples: encoded, batchSize: configuration.data.batchSize, epochs: epochs,
                                         seed: configuration.seed &+ UInt64(index + 1))
            clientBatches[id] = iterator.prefix(stepsPerClient).map {
                TrainingBatch(ids: $0.ids, labels: $0.labels, batch: $0.batch, time: $0.time)
            }
        }
        return clientBatches
    }

    /// One data owner of a split run: its input and output blocks, adapters, optimizer and batches.
    static func makeClient(_ id: String, batches: [TrainingBatch], plan: SplitPlan, modelURL: URL,
                           configuration: SimulationConfiguration, timer: WorkTimer) throws -> SplitClient {
        let key = RandomKey(seed: configuration.seed)
        var cursor = 0
        return try SplitClient(clientID: id, plan: plan, model: Checkpoint.load(modelURL, stages: plan.clientStages),
                               adapters: configuration.adapters.specification, key: key.split("adapters"),
                               optimizer: makeOptimizer(configuration.optimizer), batches: {
            guard cursor < batches.count else { throw ProtocolError("\(id): no batch left") }
            defer { cursor += 1 }
            return batches[cursor]
        }, seekBatches: { position in
            guard (0...batches.count).contains(position) else { throw ProtocolError("\(id): batch \(position) of \(batches.count)") }
            cursor = position
        }, timer: timer, activationNoise: configuration.split.activationNoise.map {
            ActivationNoise(noiseMultiplier: $0.noiseMultiplier, clip: $0.clip, key: key.split("activation-noise").split(id))
        }, codec: try stepCodec(configuration))
    }

    /// The codec of the split step's tensors (`split.codec`; nil for `none`), the same on every party.
    public static func stepCodec(_ configuration: SimulationConfiguration) throws -> (any TensorCodec)? {
        configuration.split.codec == "none" ? nil : try makeCodec(configuration.split.codec, seed: configuration.seed)
    }

    /// The server of a split run: the middle blocks only, their adapters and optimizer.
    static func makeServer(plan: SplitPlan, modelURL: URL, configuration: SimulationConfiguration) throws -> SplitServer {
        try SplitServer(plan: plan, model: Checkpoint.load(modelURL, stages: plan.serverStages),
                        adapters: configuration.adapters.specification, key: RandomKey(seed: configuration.seed).split("adapters"),
                        optimizer: makeOptimizer(configuration.optimizer))
    }

    static func makeOptimizer(_ settings: SimulationConfiguration.OptimizerSettings) -> ([Tensor]) throws -> any Optimizer {
        switch settings.name {
        case "sgd":
            return { try SGD(parameters: $0, learningRate: settings.learningRate, weightDecay: settings.weightDecay) }
        default:
            return { try AdamW(parameters: $0, learningRate: settings.learningRate, weightDecay: settings.weightDecay) }
        }
    }
}

extension Optional {
    func unwrap(or error: @autoclosure () -> any Error) throws -> Wrapped {
        guard let self else { throw error() }
        return self
    }
}
