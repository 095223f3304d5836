import Foundation
import SiloCompression
import SiloModels
import SiloPrivacy
import SiloTensor

// B batch, T time, C hidden size.

/// A batch of token ids and next-token labels: B rows of T tokens, right-padded, labels −100 where no
/// loss is taken (prompt, padding). Right padding keeps causal attention exact without a mask: a real
/// token never sees a later padding position.
public struct TrainingBatch: Sendable, Equatable {
    public var ids: [Int32]
    public var labels: [Int32]
    public var batch: Int
    public var time: Int

    public init(ids: [Int32], labels: [Int32], batch: Int, time: Int) {
        precondition(ids.count == batch * time && labels.count == batch * time, "TrainingBatch: \(ids.count) ids and \(labels.count) labels for \(batch) × \(time)")
        self.ids = ids
        self.labels = labels
        self.batch = batch
        self.time = time
    }

    /// The number of labelled positions.
    public var lossTokens: Int { labels.reduce(0) { $0 + ($1 == -100 ? 0 : 1) } }

    /// The rows of several batches stacked into one, right-padded (id `padding`, label −100) to the
    /// longest T — what the centralized baseline trains on when the split run batches clients together.
    public static func stacking(_ batches: [TrainingBatch], padding: Int32 = 0) -> TrainingBatch {
        let time = batches.map(\.time).max() ?? 0
        var ids: [Int32] = [], labels: [Int32] = []
        for part in batches {
            for row in 0..<part.batch {
                let range = (row * part.time)..<((row + 1) * part.time)
                ids += part.ids[range] + Array(repeating: padding, count: time - part.time)
                labels += part.labels[range] + Array(repeating: -100, count: time - part.time)
            }
        }
        return TrainingBatch(ids: ids, labels: labels, batch: batches.reduce(0) { $0 + $1.batch }, time: time)
    }
}

/// Where time goes, by part of the work, in seconds (accumulated).
public final class WorkTimer: @unchecked Sendable {
    public enum Part: String, CaseIterable, Sendable, Codable {
        case clientCompute = "client_compute", serverCompute = "server_compute", sealing, copying
    }

    private let lock = NSLock()
    private var seconds: [Part: Double] = [:]

    public init() {}

    /// Runs `body` and adds its duration to `part`.
    public func measure<R>(_ part: Part, _ body: () throws -> R) rethrows -> R {
        let start = DispatchTime.now().uptimeNanoseconds
        defer { add(part, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9) }
        return try body()
    }

    public func add(_ part: Part, _ value: Double) {
        lock.lock(); defer { lock.unlock() }
        seconds[part, default: 0] += value
    }

    /// Totals so far by part name.
    public var totals: [String: Double] {
        lock.lock(); defer { lock.unlock() }
        return Dictionary(uniqueKeysWithValues: Part.allCases.map { ($0.rawValue, seconds[$0] ?? 0) })
    }

    public func value(_ part: Part) -> Double {
        lock.lock(); defer { lock.unlock() }
        return seconds[part] ?? 0
    }
}

/// One data owner in split learning: keeps its data, its labels, the input part (embedding + blocks
/// 0 ..< k) and the output part (blocks L − j ..< L + head), with its own adapters and optimizer.
///
/// It answers the server's requests (``SplitClientEndpoint``) strictly in protocol order for the step
/// it is in: begin → ``SplitMessageKind/activations``; server output → output gradients; activation
/// gradients → optimizer step and result. A message out of place, for another step, or with a shape
/// that does not match what this client sent, is rejected and changes nothing.
public final class SplitClient: SplitClientEndpoint {
    public let clientID: String
    public let plan: SplitPlan
    public let part: ModelPart
    public let optimizer: (any Optimizer)?
    private let nextBatch: () throws -> TrainingBatch
    /// Moves the batch source so that the next batch is batch `n` (nil: it cannot rewind).
    private let seekBatches: ((Int) throws -> Void)?
    /// Batches taken so far (the data position a checkpoint records).
    public private(set) var batchesTaken = 0
    private let timer: WorkTimer
    /// Where ``SplitMessageKind/checkpoint`` requests are saved and ``SplitMessageKind/restore`` reads
    /// from (nil: this client refuses both). The two newest checkpoints are kept.
    public var checkpointDirectory: URL?

    private enum Phase {
        case idle
        case sentActivations(round: Int, step: Int, batch: TrainingBatch, output: Tensor)
        case sentOutputGradients(round: Int, step: Int, output: Tensor, loss: Double, tokens: Int, examples: Int)
        /// Gradients sent for aggregation; the optimizer steps when the combined gradient arrives.
        case sentGradients(round: Int, step: Int)
    }

    private var phase = Phase.idle
    /// Gaussian noise on the released activations (nil: none).
    public let activationNoise: ActivationNoise?
    /// Compresses the step's tensors both ways (`split.codec`; nil: none).
    public let codec: (any TensorCodec)?
    /// Per example of the step in flight, the clipping factor applied to its activations.
    private var activationScales: [Float] = []
    /// Batches whose activations this client released with ``activationNoise`` (restored from checkpoints).
    public private(set) var releases = 0
    /// The training examples this client's batches are drawn from (for its privacy report), when known.
    public var exampleCount: Int?
    /// Examples trained on since the last aggregation (the FedAvg weight).
    public private(set) var examplesSinceAggregation = 0

    /// - Parameters:
    ///   - model: a model instance holding `plan.clientStages`.
    ///   - optimizer: builds the optimizer over the client's trainable tensors (nil: none trainable).
    ///   - batches: the client's next training batch (its own data).
    ///   - seekBatches: makes batch `n` the next one (a restored checkpoint continues from its data
    ///     position); nil for a source that cannot rewind.
    public init(clientID: String, plan: SplitPlan, model: any LanguageModel, adapters: AdapterSpecification,
                key: RandomKey, optimizer makeOptimizer: ([Tensor]) throws -> any Optimizer,
                batches: @escaping () throws -> TrainingBatch, seekBatches: ((Int) throws -> Void)? = nil, timer: WorkTimer = WorkTimer(),
                activationNoise: ActivationNoise? = nil, codec: (any TensorCodec)? = nil) throws {
        let missing = plan.clientStages.subtracting(model.loadedStages)
        guard missing.isEmpty else {
            throw ModelError(.stageNotLoaded, "client \(clientID): the model instance lacks \(missing.sorted().map(\.description)) of \(plan)")
        }
        self.clientID = clientID
        self.plan = plan
        self.part = try ModelPart(model: model, adapters: adapters, key: key)
        let trainables = part.trainableTensors
        self.optimizer = trainables.isEmpty ? nil : try makeOptimizer(trainables)
        self.nextBatch = batches
        self.seekBatches = seekBatches
        self.timer = timer
        self.activationNoise = activationNoise
        self.codec = codec
    }

    public func handle(_ request: SplitMessage) throws -> SplitMessage {
        switch (request.kind, phase) {
        case (.stepBegin, .idle):
            return try beginStep(round: request.round, step: request.step)
        case (.serverOutput, .sentActivations(let round, let step, let batch, let output))
            where round == request.round && step == request.step:
            return try outputPart(request, batch: batch, inputOutput: output)
        case (.activationGradients, .sentOutputGradients(let round, let step, let output, let loss, let tokens, let examples))
            where round == request.round && step == request.step:
            return try finishStep(request, inputOutput: output, loss: loss, tokens: tokens, examples: examples)
        case (.gradientAggregate, .sentGradients(let round, let step)) where round == request.round && step == request.step:
            return try applyGradient(request)
        case (.gradientAggregate, .idle):
            // A client that sat out this pass (serial mode) applies the combined gradient too.
            return try applyGradient(request)
        case (.adapterRequest, .idle):
            let values = part.flattenedValues()
            let body = timer.measure(.copying) {
                WireTensor(tensor: values, scalars: [Double(examplesSinceAggregation)]).encoded()
            }
            return SplitMessage(kind: .adapterUpdate, round: request.round, step: request.step, body: body)
        case (.aggregate, .idle):
            let count = part.trainableCount
            let message = try timer.measure(.copying) {
                try WireTensor.decode(request.body, expectedRank: 1, what: "aggregate for client \(clientID), round \(request.round)") { shape in
                    guard shape == [count] else { throw ProtocolError("aggregate for client \(clientID): \(shape[0]) values, this client trains \(count)") }
                }
            }
            try part.assign(flattenedValues: message.tensor)
            examplesSinceAggregation = 0
            return SplitMessage(kind: .acknowledgement, round: request.round, step: request.step)
        case (.syncRequest, .idle):
            let body = timer.measure(.copying) { WireTensorBundle.encode(synchronizationState()) }
            return SplitMessage(kind: .syncState, round: request.round, step: request.step, body: body)
        case (.syncState, .idle):
            let state = try timer.measure(.copying) {
                try WireTensorBundle.decode(request.body, what: "state for rejoining client \(clientID), step \(request.step)")
            }
            try takeSynchronizationState(state)
            return SplitMessage(kind: .acknowledgement, round: request.round, step: request.step)
        case (.checkpoint, .idle):
            try saveCheckpoint(round: request.round, step: request.step)
            return SplitMessage(kind: .acknowledgement, round: request.round, step: request.step)
        case (.restore, _):
            try restoreCheckpoint(step: request.step)
            return SplitMessage(kind: .acknowledgement, round: request.round, step: request.step)
        default:
            throw ProtocolError("client \(clientID): unexpected \(request.kind.rawValue) for round \(request.round) step \(request.step) while \(phaseDescription)")
        }
    }

    private var phaseDescription: String {
        switch phase {
        case .idle: return "idle"
        case .sentActivations(let round, let step, _, _): return "waiting for the server output of round \(round) step \(step)"
        case .sentOutputGradients(let round, let step, _, _, _, _): return "waiting for the activation gradients of round \(round) step \(step)"
        case .sentGradients(let round, let step): return "waiting for the combined gradient of round \(round) step \(step)"
        }
    }

    /// Takes the next batch and runs the input part: h_a (B, T, C).
    private func beginStep(round: Int, step: Int) throws -> SplitMessage {
        let batch = try nextBatch()
        batchesTaken += 1
        part.setTraining(true)
        let output = try timer.measure(.clientCompute) {
            try part.embedAndRun(ids: batch.ids, batch: batch.batch, time: batch.time, blocks: plan.inputBlockRange)
        }
        var released = output
        if let activationNoise {
            (released, activationScales) = activationNoise.release(output, key: activationNoise.key.split(UInt64(releases)))
            releases += 1
        }
        let body = try timer.measure(.copying) { try WireTensor(tensor: released).encoded(codec: codec) }
        phase = .sentActivations(round: round, step: step, batch: batch, output: output)
        return SplitMessage(kind: .activations, round: round, step: step, body: body)
    }

    /// Runs the output part on h_b, takes the loss on the client's own labels, back-propagates to h_b.
    private func outputPart(_ request: SplitMessage, batch: TrainingBatch, inputOutput: Tensor) throws -> SplitMessage {
        let expected = inputOutput.shape
        let received = try timer.measure(.copying) {
            try WireTensor.decode(request.body, expectedRank: 3, what: "server output for client \(clientID), step \(request.step)", codec: codec) { shape in
                guard shape == expected else { throw ProtocolError("server output for client \(clientID), step \(request.step): shape \(shape), expected \(expected)") }
            }
        }
        let (gradient, loss, tokens) = try timer.measure(.clientCompute) { () throws -> (Tensor, Double, Int) in
            let hidden = received.tensor.requiringGrad()
            let (loss, tokens) = try part.loss(hidden: hidden, labels: batch.labels, blocks: plan.outputBlockRange)
            let value = Double(loss.toArray()[0])
            guard value.isFinite else { throw ProtocolError("client \(clientID): loss is \(value) at step \(request.step)") }
            try loss.backward()
            return (hidden.grad ?? Tensor.zeros(expected), value, tokens)
        }
        let body = try timer.measure(.copying) { try WireTensor(tensor: gradient, scalars: [Double(tokens)]).encoded(codec: codec) }
        phase = .sentOutputGradients(round: request.round, step: request.step, output: inputOutput, loss: loss,
                                     tokens: tokens, examples: batch.batch)
        return SplitMessage(kind: .outputGradients, round: request.round, step: request.step, body: body)
    }

    /// Back-propagates dL/dh_a through the input part, then either steps the optimizer (values are
    /// aggregated at the end of the round) or, when the server asks for per-step gradient aggregation,
    /// sends the gradients and holds the step until the combined gradient arrives.
    private func finishStep(_ request: SplitMessage, inputOutput: Tensor, loss: Double, tokens: Int, examples: Int) throws -> SplitMessage {
        let expected = inputOutput.shape
        let received = try timer.measure(.copying) {
            try WireTensor.decode(request.body, expectedRank: 3, what: "activation gradients for client \(clientID), step \(request.step)", codec: codec) { shape in
                guard shape == expected else { throw ProtocolError("activation gradients for client \(clientID), step \(request.step): shape \(shape), expected \(expected)") }
            }
        }
        guard received.scalars.count <= 1, received.scalars.allSatisfy({ $0 == 0 || $0 == 1 }) else {
            throw ProtocolError("activation gradients for client \(clientID), step \(request.step): expected at most one 0/1 flag, got \(received.scalars)")
        }
        let holdStep = received.scalars.first == 1
        try timer.measure(.clientCompute) {
            if inputOutput.requiresGrad {
                // h' = s_b·h_b + noise: the gradient reaching h_b is s_b·dL/dh' (s_b held constant).
                let seed = activationNoise == nil ? received.tensor : ActivationNoise.scaled(received.tensor, by: activationScales)
                try inputOutput.backward(seed: seed)
            }
            if !holdStep {
                try optimizer?.step()
                optimizer?.zeroGrad()
            }
        }
        examplesSinceAggregation += examples
        let scalars = [loss, Double(tokens), Double(examples)]
        if holdStep {
            phase = .sentGradients(round: request.round, step: request.step)
            let gradients = part.flattenedGradients()
            optimizer?.zeroGrad()
            let body = timer.measure(.copying) { WireTensor(tensor: gradients, scalars: scalars).encoded() }
            return SplitMessage(kind: .stepResult, round: request.round, step: request.step, body: body)
        }
        phase = .idle
        let body = WireTensor(tensor: Tensor.zeros([0]), scalars: scalars).encoded()
        return SplitMessage(kind: .stepResult, round: request.round, step: request.step, body: body)
    }

    /// Applies the combined gradient of the step with this client's own optimizer.
    private func applyGradient(_ request: SplitMessage) throws -> SplitMessage {
        let count = part.trainableCount
        let message = try timer.measure(.copying) {
            try WireTensor.decode(request.body, expectedRank: 1, what: "combined gradient for client \(clientID), step \(request.step)") { shape in
                guard shape == [count] else { throw ProtocolError("combined gradient for client \(clientID), step \(request.step): \(shape[0]) values, this client trains \(count)") }
            }
        }
        try timer.measure(.clientCompute) {
            try part.assign(flattenedGradients: message.tensor)
            try optimizer?.step()
            optimizer?.zeroGrad()
        }
        phase = .idle
        return SplitMessage(kind: .acknowledgement, round: request.round, step: request.step)
    }
}

// MARK: - Checkpoints

extension SplitClient {
    /// The connection broke mid-step: the step in flight is abandoned (the server dropped this client
    /// from it, or rolls everyone back to a checkpoint).
    public func connectionLost() {
        phase = .idle
        optimizer?.zeroGrad()
    }

    static let checkpointFormat = "silo-split-client-checkpoint-1"

    /// What a rejoining client takes from one still in the run: the trainables (`values`) and the
    /// optimizer state (`optimizer/…`). Not the data position, the dropout or noise counters: those
    /// are this client's own.
    func synchronizationState() -> [String: Tensor] { part.trainableState(optimizer: optimizer) }

    /// Takes the trainables and optimizer state of another client (``synchronizationState()``).
    /// - Throws: ``ProtocolError`` when a tensor is unknown or does not fit this client's model or
    ///   optimizer; nothing is changed then.
    func takeSynchronizationState(_ tensors: [String: Tensor]) throws {
        let what = "state for rejoining client \(clientID)"
        if let unknown = tensors.keys.sorted().first(where: { $0 != "values" && !$0.hasPrefix("optimizer/") }) {
            throw ProtocolError("\(what): unexpected tensor '\(unknown)'")
        }
        let values = tensors["values"]
        guard values?.shape ?? [0] == [part.trainableCount] else {
            throw ProtocolError("\(what): \(values?.count ?? 0) trainable values, this client trains \(part.trainableCount)")
        }
        let state = tensors.tensors(under: "optimizer/")
        if let optimizer {
            do { try optimizer.load(state: state) } catch { throw ProtocolError("\(what): \(error)") }
            optimizer.zeroGrad()
        } else if !state.isEmpty {
            throw ProtocolError("\(what): optimizer state for a client that trains nothing")
        }
        if let values { try part.assign(flattenedValues: values) }
        examplesSinceAggregation = 0
    }

    /// The file of checkpoint `step` of this client.
    public func checkpointURL(step: Int) throws -> URL {
        guard let checkpointDirectory else {
            throw ProtocolError("client \(clientID): the server asked for a checkpoint, but this client has no checkpoint folder")
        }
        return checkpointDirectory.appendingPathComponent("\(clientID)-step-\(step).safetensors")
    }

    /// Saves the trainables, the optimizer state and the data position as checkpoint `step` (atomically),
    /// then deletes all but the two newest checkpoints (the server may resume from the older one if it
    /// dies before writing its own checkpoint of this step).
    func saveCheckpoint(round: Int, step: Int) throws {
        let url = try checkpointURL(step: step)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        let tensors = synchronizationState()
        let dropout = part.dropoutCalls.map(String.init)
        let metadata = ["format": Self.checkpointFormat, "client": clientID, "round": String(round), "step": String(step),
                        "batches_taken": String(batchesTaken), "releases": String(releases),
                        "examples_since_aggregation": String(examplesSinceAggregation), "dropout_calls": dropout.joined(separator: ",")]
        try timer.measure(.copying) { try SafeTensorsFile.write(tensors, metadata: metadata, to: url) }
        let prefix = "\(clientID)-step-"
        let steps = (try? FileManager.default.contentsOfDirectory(atPath: url.deletingLastPathComponent().path))?.compactMap { name -> Int? in
            guard name.hasPrefix(prefix), name.hasSuffix(".safetensors") else { return nil }
            return Int(name.dropFirst(prefix.count).dropLast(".safetensors".count))
        } ?? []
        for old in steps.sorted().dropLast(2) { try? FileManager.default.removeItem(at: try checkpointURL(step: old)) }
    }

    /// Rolls back to checkpoint `step`: trainables, optimizer state, data position and noise counters.
    /// - Throws: ``ProtocolError`` naming the file when it is missing, for another client, or does not
    ///   fit this client's model; nothing is changed then.
    func restoreCheckpoint(step: Int) throws {
        let url = try checkpointURL(step: step)
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw ProtocolError("client \(clientID): no checkpoint of step \(step) at \(url.path) to resume from")
        }
        let file = try SafeTensorsFile(contentsOf: url)
        let meta = file.metadata
        guard meta["format"] == Self.checkpointFormat, meta["client"] == clientID, meta["step"] == String(step),
              let taken = meta["batches_taken"].flatMap(Int.init), let released = meta["releases"].flatMap(Int.init),
              let examples = meta["examples_since_aggregation"].flatMap(Int.init) else {
            throw ProtocolError("\(url.path): not a checkpoint of step \(step) of \(clientID) (format \(meta["format"] ?? "none"), client \(meta["client"] ?? "none"), step \(meta["step"] ?? "none"))")
        }
        let dropout = (meta["dropout_calls"] ?? "").split(separator: ",").compactMap { UInt64($0) }
        guard dropout.count == part.dropoutCalls.count else {
            throw ProtocolError("\(url.path): \(dropout.count) LoRA dropout counters for \(part.dropoutCalls.count) LoRA layers")
        }
        let state = try file.tensors(under: "optimizer/")
        let values = part.trainableCount > 0 ? try file.tensor("values") : nil
        if let values, values.shape != [part.trainableCount] {
            throw ProtocolError("\(url.path): \(values.count) trainable values, this client trains \(part.trainableCount)")
        }
        guard batchesTaken == taken || seekBatches != nil else {
            throw ProtocolError("client \(clientID): checkpoint \(step) continues at batch \(taken), this client is at \(batchesTaken) and its data cannot rewind")
        }
        try optimizer?.load(state: state)
        optimizer?.zeroGrad()
        if let values { try part.assign(flattenedValues: values) }
        if batchesTaken != taken { try seekBatches?(taken) }
        try part.setDropoutCalls(dropout)
        batchesTaken = taken
        releases = released
        examplesSinceAggregation = examples
        phase = .idle
    }
}

/// Gaussian noise on the activations a split client releases (the smashed data): each example's (T, C)
/// block is clipped to L2 norm `clip` and N(0, (z·clip)²) is added to every value — a Gaussian mechanism
/// of noise multiplier z per release of an example, composed over the steps that example is in.
public struct ActivationNoise: Sendable {
    public var noiseMultiplier: Double
    public var clip: Double
    public var key: RandomKey

    public init(noiseMultiplier: Double, clip: Double, key: RandomKey) {
        self.noiseMultiplier = noiseMultiplier
        self.clip = clip
        self.key = key
    }

    /// The privacy of the activations of one data owner: `batches` batches of `batchSize` rows drawn
    /// from `examples` examples without repetition within an epoch release each example's activations
    /// at most ⌈batches·B / n⌉ times, and ε at δ composes the Gaussian mechanism of noise multiplier z
    /// that many times (RDP accountant, sampling rate 1). Covers the activations only: the label-side
    /// traffic and the adapters are not protected by this noise.
    public static func epsilon(noiseMultiplier: Double, batches: Int, batchSize: Int, examples: Int,
                               delta: Double) throws -> (epsilon: Double, releases: Int) {
        let examples = max(1, examples)
        let releases = max(1, (batches * batchSize + examples - 1) / examples)
        let epsilon = try RDPAccountant.epsilon(noiseMultiplier: noiseMultiplier, sampleRate: 1, steps: releases, delta: delta).epsilon
        return (epsilon, releases)
    }

    /// The released tensor and each example's clipping factor.
    func release(_ activations: Tensor, key: RandomKey) -> (Tensor, [Float]) {
        let values = activations.isContiguous ? activations : activations.contiguous()
        let batch = values.shape[0], size = values.count / max(1, batch)
        let out = Tensor.empty(values.shape)
        let noise = Tensor.randomNormal(values.shape, standardDeviation: Float(noiseMultiplier * clip), key: key).toArray()
        var scales: [Float] = []
        for row in 0..<batch {
            let base = row * size
            var norm = 0.0
            for index in 0..<size { norm += Double(values.pointer[base + index]) * Double(values.pointer[base + index]) }
            let scale = Float(min(1, clip / max(norm.squareRoot(), 1e-30)))
            scales.append(scale)
            for index in 0..<size { out.pointer[base + index] = values.pointer[base + index] * scale + noise[base + index] }
        }
        return (out, scales)
    }

    static func scaled(_ gradient: Tensor, by scales: [Float]) -> Tensor {
        let values = gradient.isContiguous ? gradient : gradient.contiguous()
        let size = values.count / max(1, scales.count)
        let out = Tensor.empty(values.shape)
        for (row, scale) in scales.enumerated() {
            for index in 0..<size { out.pointer[row * size + index] = values.pointer[row * size + index] * scale }
        }
        return out
    }
}
