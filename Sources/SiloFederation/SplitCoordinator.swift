import Foundation
import SiloCompression
import SiloModels
import SiloTensor

/// How the server trains with several clients (FL-GLM's three modes).
public enum SplitMode: String, Codable, Sendable, CaseIterable {
    /// Clients take turns: each runs `localSteps` steps with the server, then the next.
    case serial
    /// One server pass over the stacked activations of all clients per step.
    case clientBatching = "client-batching"
    /// One replica of the server's trainables per client, averaged every round.
    case serverHierarchical = "server-hierarchical"
}

/// How the clients' own trainables (input and output parts) are kept in agreement.
public enum ClientAggregation: String, Codable, Sendable, CaseIterable {
    /// Every step: each client sends its gradients, the strategy combines them weighted by loss tokens,
    /// and every client steps its own optimizer on the combined gradient (FedSGD). All clients hold the
    /// same values and optimizer states, so client-batching equals centralized training on the stacked
    /// batch exactly, with any optimizer (Adam's moments included).
    case gradients
    /// Every round (R = `localSteps` batches): each client steps on its own gradients with its own
    /// optimizer state, then the strategy averages the values (FedAvg, weighted by examples). Fewer
    /// messages; the clients' Adam states drift apart between aggregations.
    case parameters
}

/// The rounds of a split run. A round: every client trains `localSteps` batches; then the clients'
/// trainables are aggregated by the strategy (and, server-hierarchical, the server's replicas averaged).
public struct SplitSchedule: Codable, Sendable, Equatable {
    public var mode: SplitMode
    public var rounds: Int
    /// R: batches per client per round.
    public var localSteps: Int
    /// When the clients' trainables are aggregated: every step as gradients, or every round as values.
    public var clientAggregation: ClientAggregation

    public init(mode: SplitMode = .clientBatching, rounds: Int = 1, localSteps: Int = 1,
                clientAggregation: ClientAggregation = .gradients) {
        self.mode = mode
        self.rounds = rounds
        self.localSteps = localSteps
        self.clientAggregation = clientAggregation
    }

    private enum CodingKeys: String, CodingKey {
        case mode, rounds, localSteps = "local_steps", clientAggregation = "client_aggregation"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        mode = try container.decode(SplitMode.self, forKey: .mode)
        rounds = try container.decode(Int.self, forKey: .rounds)
        localSteps = try container.decode(Int.self, forKey: .localSteps)
        clientAggregation = try container.decodeIfPresent(ClientAggregation.self, forKey: .clientAggregation) ?? .gradients
    }

    /// The steps recorded by a run (one per server pass in serial mode; one per batch of all clients
    /// in the other modes).
    public func recordedSteps(clients: Int) -> Int {
        mode == .serial ? rounds * localSteps * clients : rounds * localSteps
    }
}

/// One recorded training step.
public struct StepRecord: Codable, Sendable {
    public var round: Int
    public var step: Int
    /// The mean loss over every loss token of the step (all participating clients).
    public var loss: Double
    /// Each participating client's own loss.
    public var clientLosses: [String: Double]
    public var seconds: Double
}

/// Drives split training: sends each client its requests through the transport in protocol order,
/// runs the server's passes, and aggregates the clients' trainables every round.
///
/// A client that fails (its data is bad, its message is malformed, it vanished) is dropped with its
/// error recorded in ``failures``; the others carry on. The run fails only when no client is left.
public final class SplitCoordinator {
    public let server: SplitServer
    public let transport: any SplitTransport
    public let strategy: any AggregationStrategy
    public let schedule: SplitSchedule
    public let timer: WorkTimer
    /// Compresses the step's tensors both ways (`split.codec`; nil: none); the clients use the same.
    public let codec: (any TensorCodec)?
    /// Clients still taking part.
    public private(set) var activeClients: [String]
    /// Clients dropped, with why.
    public var failures: [(clientID: String, error: String)] { failuresDetail.map { ($0.clientID, $0.error) } }
    private var failuresDetail: [Failure] = []
    private let log: (String) -> Void

    public init(server: SplitServer, transport: any SplitTransport, strategy: any AggregationStrategy = FedAvg(),
                schedule: SplitSchedule, timer: WorkTimer = WorkTimer(), codec: (any TensorCodec)? = nil,
                log: @escaping (String) -> Void = { _ in }) {
        self.codec = codec
        self.server = server
        self.transport = transport
        self.strategy = strategy
        self.schedule = schedule
        self.timer = timer
        self.activeClients = transport.clientIDs
        self.log = log
    }

    /// Where a run stands between two passes: what a checkpoint records and a resumed run continues from.
    public struct Position: Codable, Sendable, Equatable {
        /// The round in progress.
        public var round: Int
        /// Passes of that round already done (serial: client index × local steps + local step).
        public var pass: Int
        /// The number the next recorded step gets.
        public var step: Int

        public init(round: Int = 0, pass: Int = 0, step: Int = 0) {
            self.round = round
            self.pass = pass
            self.step = step
        }
    }

    /// What the server's checkpoint holds besides its tensors: the position, the steps so far, the
    /// clients taking part and those dropped.
    public struct Snapshot: Codable, Sendable {
        public var position: Position
        public var records: [StepRecord]
        public var activeClients: [String]
        public var failures: [Failure]
        public var rejoins: [Rejoin]
    }

    /// A client dropped from the run, and why.
    public struct Failure: Codable, Sendable, Equatable {
        public var clientID: String
        public var error: String
        public var step: Int
    }

    /// A client that came back after it was dropped, and the step it joined again at.
    public struct Rejoin: Codable, Sendable, Equatable {
        public var clientID: String
        public var step: Int
    }

    /// Every `checkpointEvery` recorded steps (0: never) the coordinator asks each client to save its
    /// state (``SplitMessageKind/checkpoint``), then calls `saveCheckpoint` with its own snapshot: the
    /// caller writes the server's state next to it, atomically.
    public var checkpointEvery = 0
    public var saveCheckpoint: ((Snapshot) throws -> Void)?
    /// Below this many clients the run waits for clients to (re)join, when the transport accepts
    /// rejoins; without rejoins the run fails when no client is left.
    public var minimumClients = 1
    /// Clients that rejoined, and when.
    public private(set) var rejoins: [Rejoin] = []

    /// Set from another thread (a signal handler) to stop at the next pass: the coordinator then
    /// checkpoints (when a checkpoint writer is set) and throws ``Stopped``.
    public let stopRequest = StopRequest()

    /// Thrown by ``run(onStep:)`` after ``stopRequest`` was set; `step` is where a resumed run continues
    /// (nil: no checkpoint was written).
    public struct Stopped: Error, CustomStringConvertible {
        public var step: Int?
        public var description: String {
            step.map { "stopped; checkpoint at step \($0): continue with --resume" } ?? "stopped without a checkpoint"
        }
    }

    private var position = Position()
    private var records: [StepRecord] = []
    private var resumedFrom: Int?
    private var lastCheckpoint: Int?

    /// Continues from a checkpoint: the server's state must already be restored from it; each client is
    /// asked to roll back to its own checkpoint of the same step before the next pass (a client that
    /// cannot is dropped).
    public func resume(from snapshot: Snapshot) {
        position = snapshot.position
        records = snapshot.records
        failuresDetail = snapshot.failures
        rejoins = snapshot.rejoins
        activeClients = transport.clientIDs.filter(snapshot.activeClients.contains)
        resumedFrom = snapshot.position.step
        lastCheckpoint = snapshot.position.step
    }

    /// Runs every round; `onStep` sees each step as it completes.
    /// - Throws: ``ProtocolError`` when every client has failed and the transport takes no rejoins; a
    ///   server-side error; the checkpoint writer's error.
    @discardableResult
    public func run(onStep: (StepRecord) -> Void = { _ in }) throws -> [StepRecord] {
        if let step = resumedFrom {
            for client in activeClients {
                _ = call(client, SplitMessage(kind: .restore, round: position.round, step: step), expecting: .acknowledgement)
            }
            log("resumed at round \(position.round), step \(step) with \(activeClients.joined(separator: ", "))")
            resumedFrom = nil
        }
        let ids = transport.clientIDs
        let passes = schedule.mode == .serial ? ids.count * schedule.localSteps : schedule.localSteps
        while position.round < schedule.rounds {
            let round = position.round
            while position.pass < passes {
                try stopIfRequested()
                try admitClients(round: round, pass: position.pass)
                let record: StepRecord?
                let gradients: [ClientUpdate]
                switch schedule.mode {
                case .clientBatching:
                    (record, gradients) = try trainStep(clients: activeClients, round: round, step: position.step) ?? (nil, [])
                case .serial:
                    let client = ids[position.pass / schedule.localSteps]
                    (record, gradients) = activeClients.contains(client)
                        ? try trainStep(clients: [client], round: round, step: position.step) ?? (nil, []) : (nil, [])
                case .serverHierarchical:
                    (record, gradients) = try hierarchicalStep(round: round, step: position.step)
                }
                if let record {
                    try synchronizeGradients(gradients, round: round, step: position.step)
                    records.append(record); onStep(record)
                    position.step += 1
                }
                position.pass += 1
                if position.pass < passes, record != nil { try checkpointIfDue() }
            }
            if schedule.mode == .serverHierarchical { try timer.measure(.serverCompute) { try server.averageReplicas() } }
            if schedule.clientAggregation == .parameters { try aggregateClients(round: round, step: position.step) }
            position = Position(round: round + 1, pass: 0, step: position.step)
            if position.round < schedule.rounds { try checkpointIfDue() }
        }
        return records
    }

    /// One pass of server-hierarchical mode: each client with its own replica of the server's trainables.
    private func hierarchicalStep(round: Int, step: Int) throws -> (StepRecord?, [ClientUpdate]) {
        let start = DispatchTime.now().uptimeNanoseconds
        var parts: [StepRecord] = []
        var gradients: [ClientUpdate] = []
        for client in activeClients {
            try server.activateReplica(for: client)
            if let (part, clientGradients) = try trainStep(clients: [client], round: round, step: step) {
                parts.append(part)
                gradients += clientGradients
            }
        }
        guard !parts.isEmpty else { return (nil, []) }
        return (StepRecord.combining(parts, round: round, step: step, seconds: Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9),
                gradients)
    }

    /// Between two passes, after a stop request: checkpoint here, then stop.
    private func stopIfRequested() throws {
        guard stopRequest.isSet else { return }
        if saveCheckpoint != nil, lastCheckpoint != position.step { try checkpoint() }
        throw Stopped(step: saveCheckpoint == nil ? nil : position.step)
    }

    /// Checkpoints when `checkpointEvery` steps have passed since the last one.
    private func checkpointIfDue() throws {
        guard checkpointEvery > 0, position.step > 0, position.step % checkpointEvery == 0, lastCheckpoint != position.step else { return }
        try checkpoint()
    }

    /// Every active client saves its state, then the server's snapshot goes to ``saveCheckpoint``.
    private func checkpoint() throws {
        guard let saveCheckpoint else { return }
        for client in activeClients {
            _ = call(client, SplitMessage(kind: .checkpoint, round: position.round, step: position.step), expecting: .acknowledgement)
        }
        try saveCheckpoint(Snapshot(position: position, records: records, activeClients: activeClients,
                                    failures: failuresDetail, rejoins: rejoins))
        lastCheckpoint = position.step
        log("checkpoint at step \(position.step) (round \(position.round), \(activeClients.count) clients)")
    }

    /// Before a pass: waits while fewer than ``minimumClients`` take part (networked runs), and brings
    /// back clients that reconnected. A returning client gets the current client-side trainables from a
    /// client still in the run (with per-step gradient aggregation all clients hold the same values) —
    /// with value aggregation it returns at the start of a round, after everyone has the aggregate.
    private func admitClients(round: Int, pass: Int) throws {
        guard transport.acceptsRejoins else { return }
        let minimum = max(1, min(minimumClients, transport.clientIDs.count))
        let returning = try transport.waitForClients(active: activeClients, minimum: minimum, log: log)
        for client in returning where activeClients.contains(client) {
            // It joined again without being dropped first (restarted between two requests): a new party.
            activeClients.removeAll { $0 == client }
            server.removeReplica(for: client)
        }
        // Value aggregation: the others' values differ until the round's aggregate; come back then.
        if schedule.clientAggregation == .parameters, pass != 0, activeClients.count >= minimum { return }
        for client in returning {
            if let reference = activeClients.first {
                guard let message = synchronizationMessage(from: reference, round: round) else { continue }
                activeClients.append(client)
                guard call(client, message, expecting: .acknowledgement) != nil else { continue }
            } else {
                activeClients.append(client)
                log("client \(client) rejoins with its own trainables (no client left to copy them from)")
            }
            activeClients = transport.clientIDs.filter(activeClients.contains)
            rejoins.append(Rejoin(clientID: client, step: position.step))
            log("client \(client) rejoined at round \(round), step \(position.step)")
        }
    }

    /// What a rejoining client takes from `reference`, a client still in the run. With per-step gradient
    /// aggregation every client holds the same values and optimizer state, both functions of the
    /// combined gradients the server has seen, so the rejoiner takes both (``SplitMessageKind/syncState``)
    /// and stays identical to the others. With value aggregation the optimizer state is the reference's
    /// own (a statistic of its private gradients): the rejoiner takes only the values, at a round start,
    /// and its optimizer starts afresh. Nil when the reference dropped or sent something malformed.
    private func synchronizationMessage(from reference: String, round: Int) -> SplitMessage? {
        let step = position.step
        if schedule.clientAggregation == .gradients {
            guard let state = call(reference, SplitMessage(kind: .syncRequest, round: round, step: step), expecting: .syncState) else { return nil }
            do {
                _ = try WireTensorBundle.decode(state.body, what: "state of client \(reference), step \(step)")
            } catch {
                drop(reference, error)
                return nil
            }
            return SplitMessage(kind: .syncState, round: round, step: step, body: state.body)
        }
        guard let values = call(reference, SplitMessage(kind: .adapterRequest, round: round, step: step), expecting: .adapterUpdate) else { return nil }
        do {
            let message = try WireTensor.decode(values.body, expectedRank: 1, what: "values of client \(reference), step \(step)")
            return SplitMessage(kind: .aggregate, round: round, step: step, body: WireTensor(tensor: message.tensor).encoded())
        } catch {
            drop(reference, error)
            return nil
        }
    }

    /// One server pass with `clients`: activations in, server output out, output gradients in,
    /// activation gradients out, results in.
    /// Returns the step's record and, with per-step gradient aggregation, each client's gradients
    /// (weighted by its loss tokens); nil when every client of the pass dropped out (others remain for
    /// later passes).
    private func trainStep(clients: [String], round: Int, step: Int) throws -> (StepRecord, [ClientUpdate])? {
        let start = DispatchTime.now().uptimeNanoseconds
        let hidden = server.part.model.hiddenSize
        var participants: [String] = []
        var activations: [Tensor] = []
        for client in clients {
            guard let response = call(client, SplitMessage(kind: .stepBegin, round: round, step: step), expecting: .activations) else { continue }
            do {
                let message = try timer.measure(.copying) {
                    try WireTensor.decode(response.body, expectedRank: 3, what: "activations from client \(client), step \(step)", codec: codec) { shape in
                        guard shape[0] > 0, shape[1] > 0, shape[2] == hidden else {
                            throw ProtocolError("activations from client \(client), step \(step): shape \(shape), expected (B, T, \(hidden))")
                        }
                    }
                }
                participants.append(client)
                activations.append(message.tensor)
            } catch {
                drop(client, error)
            }
        }
        guard !participants.isEmpty else { return try skipped(round: round, step: step) }

        let (outputs, pass) = try timer.measure(.serverCompute) { try server.forward(activations) }
        var gradients: [Tensor] = []
        var tokens: [Double] = []
        var survivors: [Bool] = []
        for (index, client) in participants.enumerated() {
            let body = try timer.measure(.copying) { try WireTensor(tensor: outputs[index]).encoded(codec: codec) }
            var gradient = Tensor.zeros(outputs[index].shape)
            var count = 0.0
            var ok = false
            if let response = call(client, SplitMessage(kind: .serverOutput, round: round, step: step, body: body), expecting: .outputGradients) {
                do {
                    let expected = outputs[index].shape
                    let message = try timer.measure(.copying) {
                        try WireTensor.decode(response.body, expectedRank: 3, what: "output gradients from client \(client), step \(step)", codec: codec) { shape in
                            guard shape == expected else { throw ProtocolError("output gradients from client \(client), step \(step): shape \(shape), expected \(expected)") }
                        }
                    }
                    guard message.scalars.count == 1, message.scalars[0] >= 1 else {
                        throw ProtocolError("output gradients from client \(client), step \(step): expected one positive loss-token count, got \(message.scalars)")
                    }
                    gradient = message.tensor
                    count = message.scalars[0]
                    ok = true
                } catch {
                    drop(client, error)
                }
            }
            gradients.append(gradient)
            tokens.append(count)
            survivors.append(ok)
        }
        let totalTokens = tokens.reduce(0, +)
        guard totalTokens > 0 else { return try skipped(round: round, step: step) }
        let weights = tokens.map { $0 / totalTokens }
        let inputGradients = try timer.measure(.serverCompute) { () throws -> [Tensor] in
            let result = try server.backward(pass, outputGradients: gradients, weights: weights)
            try server.step()
            return result
        }

        var losses: [String: Double] = [:]
        var weightedLoss = 0.0
        var clientGradients: [ClientUpdate] = []
        let holdStep: Double = schedule.clientAggregation == .gradients ? 1 : 0
        for (index, client) in participants.enumerated() where survivors[index] {
            let body = try timer.measure(.copying) { try WireTensor(tensor: inputGradients[index], scalars: [holdStep]).encoded(codec: codec) }
            guard let response = call(client, SplitMessage(kind: .activationGradients, round: round, step: step, body: body), expecting: .stepResult) else { continue }
            do {
                let message = try timer.measure(.copying) {
                    try WireTensor.decode(response.body, expectedRank: 1, what: "step result from client \(client), step \(step)")
                }
                guard message.scalars.count == 3 else { throw ProtocolError("step result from client \(client): \(message.scalars.count) scalars, expected 3") }
                guard message.scalars[0].isFinite, message.scalars[1] == tokens[index] else {
                    throw ProtocolError("step result from client \(client), step \(step): loss \(message.scalars[0]) over \(message.scalars[1]) tokens, the client announced \(tokens[index]) tokens")
                }
                losses[client] = message.scalars[0]
                weightedLoss += weights[index] * message.scalars[0]
                if schedule.mode == .serverHierarchical { server.recordExamples(Int(message.scalars[2])) }
                if holdStep == 1 { clientGradients.append(ClientUpdate(clientID: client, values: message.tensor, weight: tokens[index])) }
            } catch {
                drop(client, error)
            }
        }
        let record = StepRecord(round: round, step: step, loss: weightedLoss, clientLosses: losses,
                                seconds: Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        return (record, clientGradients)
    }

    /// Per-step gradient aggregation: combines the clients' gradients with the strategy (weighted by
    /// loss tokens: the gradient of the stacked batch's mean loss) and sends the result to every active
    /// client, each of which steps its own optimizer on it. Does nothing with value aggregation.
    private func synchronizeGradients(_ gradients: [ClientUpdate], round: Int, step: Int) throws {
        guard schedule.clientAggregation == .gradients else { return }
        // Every client trains the same adapters: the usual length is the right one; a client that sent
        // another length, or a non-finite value, is dropped rather than failing the run.
        var lengths: [Int: Int] = [:]
        for update in gradients { lengths[update.values.count, default: 0] += 1 }
        let expected = lengths.max { $0.value == $1.value ? $0.key > $1.key : $0.value < $1.value }?.key ?? 0
        var received: [ClientUpdate] = []
        for update in gradients where activeClients.contains(update.clientID) {
            if update.values.shape != [expected] {
                drop(update.clientID, ProtocolError("gradients from client \(update.clientID), step \(step): \(update.values.count) values, the other clients sent \(expected)"))
            } else if let bad = update.values.toArray().firstIndex(where: { !$0.isFinite }) {
                drop(update.clientID, ProtocolError("gradients from client \(update.clientID), step \(step): value \(update.values.toArray()[bad]) at index \(bad)"))
            } else {
                received.append(update)
            }
        }
        guard !received.isEmpty else { _ = try skipped(round: round, step: step); return }
        let combined = try timer.measure(.serverCompute) { try strategy.aggregate(received, previous: nil) }
        let body = timer.measure(.copying) { WireTensor(tensor: combined).encoded() }
        for client in activeClients {
            _ = call(client, SplitMessage(kind: .gradientAggregate, round: round, step: step, body: body), expecting: .acknowledgement)
        }
    }

    /// Collects every active client's trainables, aggregates them with the strategy and sends the result back.
    private func aggregateClients(round: Int, step: Int) throws {
        var updates: [ClientUpdate] = []
        for client in activeClients {
            guard let response = call(client, SplitMessage(kind: .adapterRequest, round: round, step: step), expecting: .adapterUpdate) else { continue }
            do {
                let message = try timer.measure(.copying) {
                    try WireTensor.decode(response.body, expectedRank: 1, what: "adapter update from client \(client), round \(round)")
                }
                guard message.scalars.count == 1, message.scalars[0] >= 0 else {
                    throw ProtocolError("adapter update from client \(client), round \(round): expected one example count, got \(message.scalars)")
                }
                updates.append(ClientUpdate(clientID: client, values: message.tensor, weight: message.scalars[0]))
            } catch {
                drop(client, error)
            }
        }
        guard !updates.isEmpty else {
            if !transport.acceptsRejoins { _ = try noClientLeft(round: round, step: step) }
            return
        }
        let aggregate = try timer.measure(.serverCompute) { try strategy.aggregate(updates, previous: nil) }
        let body = timer.measure(.copying) { WireTensor(tensor: aggregate).encoded() }
        for update in updates {
            _ = call(update.clientID, SplitMessage(kind: .aggregate, round: round, step: step, body: body), expecting: .acknowledgement)
        }
    }

    /// One exchange; on failure the client is dropped and nil returned.
    private func call(_ client: String, _ request: SplitMessage, expecting kind: SplitMessageKind) -> SplitMessage? {
        guard activeClients.contains(client) else { return nil }
        do {
            let response = try transport.exchange(request, with: client)
            guard response.kind == kind, response.round == request.round, response.step == request.step else {
                throw ProtocolError("client \(client) answered \(request.kind.rawValue) (round \(request.round), step \(request.step)) with \(response.kind.rawValue) (round \(response.round), step \(response.step)), expected \(kind.rawValue)")
            }
            return response
        } catch {
            drop(client, error)
            return nil
        }
    }

    private func drop(_ client: String, _ error: any Error) {
        guard let index = activeClients.firstIndex(of: client) else { return }
        activeClients.remove(at: index)
        let text = (error as? ClientFailure).map { "\($0.underlying)" } ?? "\(error)"
        failuresDetail.append(Failure(clientID: client, error: text, step: position.step))
        server.removeReplica(for: client)
        transport.dropped(client, reason: text)
        log("client \(client) dropped: \(text)")
    }

    /// A pass none of whose clients answered: nil while other clients remain, else the run fails.
    private func skipped(round: Int, step: Int) throws -> (StepRecord, [ClientUpdate])? {
        guard activeClients.isEmpty, !transport.acceptsRejoins else { return nil }
        _ = try noClientLeft(round: round, step: step)
        return nil
    }

    private func noClientLeft(round: Int, step: Int) throws -> StepRecord {
        let reasons = failures.map { "\($0.clientID): \($0.error)" }.joined(separator: "; ")
        throw ProtocolError("split training: no client left at round \(round), step \(step) (\(reasons))")
    }
}

/// A flag one thread sets and another polls.
public final class StopRequest: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    public init() {}
    public func set() { lock.lock(); value = true; lock.unlock() }
    public var isSet: Bool { lock.lock(); defer { lock.unlock() }; return value }
}

extension StepRecord {
    /// Several one-client records of one step as one: losses combined by their clients' loss shares
    /// are not known here, so by equal weight per client.
    static func combining(_ parts: [StepRecord], round: Int, step: Int, seconds: Double) -> StepRecord {
        var losses: [String: Double] = [:]
        for part in parts { losses.merge(part.clientLosses) { first, _ in first } }
        let mean = losses.isEmpty ? .nan : losses.values.reduce(0, +) / Double(losses.count)
        return StepRecord(round: round, step: step, loss: mean, clientLosses: losses, seconds: seconds)
    }
}
