import Foundation
import SiloData
import SiloModels
import SiloTensor

/// The parties of a split run that spans machines (`silo server`, `silo client`), built from the run's
/// configuration exactly as ``Simulation/run(_:modelStore:dataStore:onEvent:)`` builds them in one
/// process — the same batches, adapters, seeds and optimizer — so the same configuration gives the
/// same per-step losses over a network as in the simulation.
public enum SplitDeployment {
    /// The client names of a run: `client-1` … `client-N` (the names in their certificates).
    public static func clientIDs(_ configuration: SimulationConfiguration) -> [String] {
        (0..<configuration.clients).map { "client-\($0 + 1)" }
    }

    /// The schedule the coordinator runs.
    public static func schedule(_ configuration: SimulationConfiguration) -> SplitSchedule {
        SplitSchedule(mode: configuration.split.mode, rounds: configuration.split.rounds,
                      localSteps: configuration.split.localSteps, clientAggregation: configuration.split.clientAggregation)
    }

    /// Checks that `configuration` describes a split run.
    /// - Throws: ``ConfigurationError`` for another mode or an invalid configuration.
    public static func validate(_ configuration: SimulationConfiguration) throws {
        try configuration.validate()
        guard configuration.mode == "split" else {
            throw ConfigurationError("mode: a networked run trains split learning; '\(configuration.mode)' runs only in `silo simulate`")
        }
    }

    /// The server's part: the middle blocks of the model only (never the embedding's use or the head),
    /// their adapters and optimizer.
    /// - Throws: model errors (missing file, bad checkpoint); ``ConfigurationError``.
    public static func makeServer(_ configuration: SimulationConfiguration, modelStore: ModelStore = ModelStore()) throws -> (server: SplitServer, plan: SplitPlan) {
        try validate(configuration)
        let modelURL = try modelStore.resolve(configuration.model)
        let plan = try SplitPlan(layerCount: Checkpoint.load(modelURL, stages: [.embedding]).layerCount,
                                 inputBlocks: configuration.split.k, outputBlocks: configuration.split.j,
                                 allowingUnsafeCut: configuration.split.allowUnsafeCut)
        return (try Simulation.makeServer(plan: plan, modelURL: modelURL, configuration: configuration), plan)
    }

    /// One data owner: its shard of the task data (the same partition as the simulation), its input
    /// and output blocks, adapters, optimizer and batches.
    /// - Throws: ``ProtocolError`` when `clientID` is not a client of this configuration or has no
    ///   usable data; model and data errors.
    public static func makeClient(_ configuration: SimulationConfiguration, clientID: String, modelStore: ModelStore = ModelStore(),
                                  dataStore: DataStore = DataStore(), timer: WorkTimer = WorkTimer(),
                                  onEvent: (SimulationEvent) -> Void = { _ in }) throws -> SplitClient {
        try validate(configuration)
        guard clientIDs(configuration).contains(clientID) else {
            throw ProtocolError("\(clientID) is not a client of this run (clients: \(clientIDs(configuration).joined(separator: ", ")))")
        }
        let prepared = try Simulation.prepare(configuration, modelStore: modelStore, dataStore: dataStore, onEvent: onEvent)
        guard prepared.clientExamples[clientID] != nil else {
            let reason = prepared.failures.first { $0.client == clientID }?.error ?? "no training example"
            throw ProtocolError("\(clientID) has no usable data: \(reason)")
        }
        let plan = try SplitPlan(layerCount: prepared.layerCount, inputBlocks: configuration.split.k, outputBlocks: configuration.split.j,
                                 allowingUnsafeCut: configuration.split.allowUnsafeCut)
        let batches = Simulation.trainingBatches(prepared, configuration: configuration)[clientID] ?? []
        let client = try Simulation.makeClient(clientID, batches: batches, plan: plan, modelURL: prepared.modelURL,
                                               configuration: configuration, timer: timer)
        client.exampleCount = prepared.clientExamples[clientID]?.count
        return client
    }

    /// What a data owner's activations cost in privacy so far (nil without `split.activation_noise`):
    /// one line for its log, from the batches it actually released.
    public static func activationPrivacyReport(_ client: SplitClient, configuration: SimulationConfiguration) throws -> String? {
        guard let noise = configuration.split.activationNoise, let examples = client.exampleCount else { return nil }
        let delta = configuration.privacy.delta
        let (epsilon, releases) = try ActivationNoise.epsilon(noiseMultiplier: noise.noiseMultiplier, batches: client.releases,
                                                              batchSize: configuration.data.batchSize, examples: examples, delta: delta)
        return String(format: "activation noise (z = %g, clip %g): ε = %.3f at δ = %g for this client's examples released most often (%d times, %d batches of %d from %d examples); the label-side traffic and the adapters are not covered",
                      noise.noiseMultiplier, noise.clip, epsilon, delta, releases, client.releases, configuration.data.batchSize, examples)
    }

    /// The server's `results.json` of a networked run: the same keys as `silo simulate` writes. The
    /// server holds neither the embedding nor the head, so it evaluates nothing (`eval_before` and
    /// `eval_after` are empty; `silo simulate` of the same configuration measures them).
    public static func results(_ configuration: SimulationConfiguration, plan: SplitPlan, records: [StepRecord],
                               traffic: TrafficCounter, timings: [String: Double], failures: [(clientID: String, error: String)],
                               trainingSeconds: Double, seconds: Double, notes: [String]) -> SimulationResults {
        SimulationResults(
            mode: configuration.split.mode.rawValue, clients: configuration.clients, steps: records.count, model: configuration.model,
            task: configuration.task, plan: plan.description, trainLoss: records.map(\.loss), evalBefore: [:], evalAfter: [:],
            centralized: nil, bytes: traffic.bytes, messages: traffic.messages,
            secondsPerStep: ["split": trainingSeconds / Double(max(1, records.count))], timings: timings,
            examplesPerClient: [:], evaluationExamples: 0,
            failures: failures.map { .init(client: $0.clientID, error: $0.error) },
            notes: ["split: \(plan)"] + notes, configuration: configuration, seconds: seconds)
    }
}
