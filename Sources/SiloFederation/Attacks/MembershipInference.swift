import Foundation
import SiloData
import SiloModels
import SiloPrivacy
import SiloTensor

/// The loss-threshold membership-inference attack (Yeom et al. 2018): an example on which the trained
/// model's loss is low is guessed to be a training example. Its strength over all thresholds is the
/// ROC AUC of the negated loss as a member score: 0.5 is guessing, 1 is certainty.
public enum MembershipInference {
    /// The ROC AUC of "member" scores −loss: P(a member's loss < a non-member's) + ½ P(equal) (the
    /// Mann–Whitney statistic, as scikit-learn's `roc_auc_score`).
    /// - Precondition: both lists non-empty and finite.
    public static func auc(memberLosses: [Double], nonMemberLosses: [Double]) -> Double {
        precondition(!memberLosses.isEmpty && !nonMemberLosses.isEmpty, "auc: needs members and non-members")
        precondition((memberLosses + nonMemberLosses).allSatisfy(\.isFinite), "auc: losses must be finite")
        // Rank all losses (ascending, ties get their average rank); the members' rank sum gives U.
        let all = memberLosses.map { ($0, true) } + nonMemberLosses.map { ($0, false) }
        let order = all.indices.sorted { all[$0].0 < all[$1].0 }
        var ranks = [Double](repeating: 0, count: all.count)
        var start = 0
        while start < order.count {
            var end = start
            while end + 1 < order.count && all[order[end + 1]].0 == all[order[start]].0 { end += 1 }
            let rank = Double(start + end) / 2 + 1
            for position in start...end { ranks[order[position]] = rank }
            start = end + 1
        }
        let memberCount = Double(memberLosses.count), otherCount = Double(nonMemberLosses.count)
        // Members should have the *lower* losses: count pairs where the non-member's loss is higher.
        let otherRankSum = zip(all, ranks).filter { !$0.0.1 }.reduce(0.0) { $0 + $1.1 }
        let u = otherRankSum - otherCount * (otherCount + 1) / 2
        return u / (memberCount * otherCount)
    }

    /// Each example's mean next-token loss over its labelled positions under `model`, in batches.
    public static func losses(of examples: [EncodedExample], model: any LogProbabilityModel, batchSize: Int = 8) throws -> [Double] {
        var result: [Double] = []
        var start = 0
        while start < examples.count {
            let chunk = Array(examples[start..<min(start + batchSize, examples.count)])
            let time = chunk.map(\.ids.count).max() ?? 1
            var ids: [Int32] = [], positions: [Int32] = [], targets: [Int32] = [], owners: [Int] = []
            for (row, example) in chunk.enumerated() {
                ids += example.ids + Array(repeating: 0, count: time - example.ids.count)
                for (index, label) in example.labels.enumerated() where label != EncodedExample.ignoredLabel {
                    positions.append(Int32(row * time + index))
                    targets.append(label)
                    owners.append(row)
                }
            }
            let logProbabilities = try model.logProbabilities(ids: ids, batch: chunk.count, time: time, at: positions)
            let vocabulary = logProbabilities.shape[1]
            let values = logProbabilities.toArray()
            var sums = [Double](repeating: 0, count: chunk.count), counts = [Double](repeating: 0, count: chunk.count)
            for (index, target) in targets.enumerated() {
                sums[owners[index]] -= Double(values[index * vocabulary + Int(target)])
                counts[owners[index]] += 1
            }
            for row in 0..<chunk.count {
                guard counts[row] > 0 else {
                    throw DataError(.invalidArgument, "the example has no labelled token to score", at: chunk[row].source)
                }
                result.append(sums[row] / counts[row])
            }
            start += batchSize
        }
        return result
    }
}

/// Settings of `silo attack membership` (snake_case keys; unknown keys are errors).
public struct MembershipAttackConfiguration: Codable, Sendable, Equatable {
    public var model = "smollm2-135m"
    public var task = "boolq"
    /// Data owners in the federated-LoRA run; client-1 is the victim whose examples are the members.
    public var clients = 2
    /// Training examples per client (the victim's are the members), half of each answer.
    public var members = 16
    /// Held-out examples of the same distribution (non-members), half of each answer.
    public var nonMembers = 32
    public var maxLength = 96
    public var rounds = 6
    /// Local steps per round; with Poisson sampling each example joins a step with probability batch_size / members.
    public var localSteps = 4
    public var batchSize = 4
    public var learningRate: Float = 2e-3
    /// Target ε of each private run (δ below), example-level DP-SGD on every client; a run without DP is always included.
    public var epsilons: [Double] = [8, 4, 2]
    public var delta = 1e-5
    /// Per-example clipping norm of the adapters' gradient.
    public var clip = 1.0
    public var loraRank = 8
    public var seed: UInt64 = 0

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable {
        case model, task, clients, members, nonMembers = "non_members", maxLength = "max_length", rounds, localSteps = "local_steps",
             batchSize = "batch_size", learningRate = "learning_rate", epsilons, delta, clip, loraRank = "lora_rank", seed
    }

    public init(from decoder: any Decoder) throws {
        self.init()
        let c = try decoder.container(keyedBy: CodingKeys.self)
        try rejectUnknownKeys(decoder, known: CodingKeys.allCases.map(\.stringValue))
        model = try c.decodeIfPresent(String.self, forKey: .model) ?? model
        task = try c.decodeIfPresent(String.self, forKey: .task) ?? task
        clients = try c.decodeIfPresent(Int.self, forKey: .clients) ?? clients
        members = try c.decodeIfPresent(Int.self, forKey: .members) ?? members
        nonMembers = try c.decodeIfPresent(Int.self, forKey: .nonMembers) ?? nonMembers
        maxLength = try c.decodeIfPresent(Int.self, forKey: .maxLength) ?? maxLength
        rounds = try c.decodeIfPresent(Int.self, forKey: .rounds) ?? rounds
        localSteps = try c.decodeIfPresent(Int.self, forKey: .localSteps) ?? localSteps
        batchSize = try c.decodeIfPresent(Int.self, forKey: .batchSize) ?? batchSize
        learningRate = try c.decodeIfPresent(Float.self, forKey: .learningRate) ?? learningRate
        epsilons = try c.decodeIfPresent([Double].self, forKey: .epsilons) ?? epsilons
        delta = try c.decodeIfPresent(Double.self, forKey: .delta) ?? delta
        clip = try c.decodeIfPresent(Double.self, forKey: .clip) ?? clip
        loraRank = try c.decodeIfPresent(Int.self, forKey: .loraRank) ?? loraRank
        seed = try c.decodeIfPresent(UInt64.self, forKey: .seed) ?? seed
    }

    /// Local steps of one client over the run.
    public var steps: Int { rounds * localSteps }
    /// Poisson sampling rate q of DP-SGD.
    public var sampleRate: Double { min(1, Double(batchSize) / Double(max(members, 1))) }

    public func validate() throws {
        func check(_ condition: Bool, _ key: String, _ message: String) throws {
            if !condition { throw ConfigurationError("\(key): \(message)") }
        }
        try check(clients >= 1, "clients", "must be at least 1 (got \(clients))")
        try check(members >= 2 && members % 2 == 0, "members", "must be an even number >= 2 (half of each answer), got \(members)")
        try check(nonMembers >= 2 && nonMembers % 2 == 0, "non_members", "must be an even number >= 2 (half of each answer), got \(nonMembers)")
        try check(batchSize >= 1 && batchSize <= members, "batch_size", "must be in 1 ... members (\(members)), got \(batchSize)")
        try check(rounds >= 1 && localSteps >= 1, "rounds", "rounds and local_steps must be at least 1")
        try check(maxLength >= 8, "max_length", "must be at least 8")
        try check(clip.isFinite && clip > 0, "clip", "must be > 0 (got \(clip))")
        try check(epsilons.allSatisfy { $0.isFinite && $0 > 0 }, "epsilons", "must all be > 0 (got \(epsilons))")
        try check(delta > 0 && delta < 1, "delta", "must be in (0, 1) (got \(delta))")
    }
}

/// One trained model and what the attack achieves against it.
public struct MembershipResult: Codable, Sendable, Equatable {
    /// nil: trained without DP.
    public var targetEpsilon: Double?
    /// ε actually spent by the victim (accountant), nil without DP.
    public var epsilon: Double?
    public var noiseMultiplier: Double?
    public var auc: Double
    public var memberLoss: Double
    public var nonMemberLoss: Double
    /// Accuracy on the non-members (utility of the global adapters).
    public var heldOutAccuracy: Double
    public var seconds: Double

    enum CodingKeys: String, CodingKey {
        case targetEpsilon = "target_epsilon", epsilon, noiseMultiplier = "noise_multiplier", auc, memberLoss = "member_loss",
             nonMemberLoss = "non_member_loss", heldOutAccuracy = "held_out_accuracy", seconds
    }
}

extension MembershipInference {
    /// What `silo attack membership` produced.
    public struct Report: Codable, Sendable {
        public var model: String
        public var task: String
        public var results: [MembershipResult]
        public var configuration: MembershipAttackConfiguration
        public var notes: [String]
        public var seconds: Double
    }

    /// Trains LoRA adapters by federated LoRA (FedAvg over `clients` data owners, E local steps per
    /// round), once without DP and once per target ε with example-level DP-SGD on every client
    /// (Poisson sampling, per-example clipping, Gaussian noise calibrated by the RDP accountant), and runs
    /// the loss-threshold attack of a server holding the final global adapters against the victim's
    /// (client-1's) training examples. Members and non-members have the same answer mix, so a model
    /// that merely prefers one answer cannot tell them apart.
    public static func run(_ configuration: MembershipAttackConfiguration, modelStore: ModelStore = ModelStore(),
                           dataStore: DataStore = DataStore(), log: (String) -> Void = { _ in }) throws -> Report {
        try configuration.validate()
        let started = DispatchTime.now().uptimeNanoseconds
        let task = try TaskName(rawValue: configuration.task).unwrap(or: ConfigurationError("task: unknown task '\(configuration.task)'"))
        let template = task.template
        guard template.isClassification else { throw ConfigurationError("task: the membership attack needs a yes/no task (boolq or pubmedqa)") }
        let modelURL = try modelStore.resolve(configuration.model)
        let tokenizer = modelURL.pathExtension.lowercased() == "gguf"
            ? try Tokenizer(ggufFile: GGUFFile(contentsOf: modelURL)) : try Tokenizer(directory: modelURL)
        let data = try dataStore.load(task)
        let key = RandomKey(seed: configuration.seed)

        // Label-balanced draws: every client's examples and the non-members, half of each of the first two answers.
        let order = seededPermutation(count: data.train.count, key: key.split("pool"))
        var buckets: [Int: [(EncodedExample, ChoiceEncoding)]] = [:]
        let perLabel = (configuration.clients * configuration.members + configuration.nonMembers) / 2
        for index in order {
            guard let encoded = try? template.encode(data.train[index], tokenizer: tokenizer, maxLength: configuration.maxLength),
                  let choices = try? template.encodeChoices(data.train[index], tokenizer: tokenizer, maxLength: configuration.maxLength),
                  choices.correctIndex < 2, (buckets[choices.correctIndex]?.count ?? 0) < perLabel else { continue }
            buckets[choices.correctIndex, default: []].append((encoded, choices))
            if buckets.values.map(\.count).reduce(0, +) == 2 * perLabel { break }
        }
        guard buckets[0]?.count == perLabel, buckets[1]?.count == perLabel else {
            throw DataError(.invalidArgument, "\(task): not enough training examples of each answer for \(configuration.clients) x \(configuration.members) members and \(configuration.nonMembers) non-members")
        }
        func take(_ count: Int, from offset: Int) -> [(EncodedExample, ChoiceEncoding)] {
            (0..<(count / 2)).flatMap { [buckets[0]![offset + $0], buckets[1]![offset + $0]] }
        }
        let clientData = (0..<configuration.clients).map { take(configuration.members, from: $0 * configuration.members / 2).map(\.0) }
        let others = take(configuration.nonMembers, from: configuration.clients * configuration.members / 2)
        let members = clientData[0]

        let steps = configuration.steps, q = configuration.sampleRate
        let model = try Checkpoint.load(modelURL)
        let lora = LoRAConfiguration(rank: configuration.loraRank, alpha: Float(2 * configuration.loraRank), targetModules: ["q_proj", "v_proj"])
        let part = try ModelPart(model: model, adapters: AdapterSpecification(lora: lora), key: key.split("adapters"))
        let initial = part.flattenedValues()
        let makeOptimizer: ([Tensor]) throws -> any Optimizer = { try AdamW(parameters: $0, learningRate: configuration.learningRate, weightDecay: 0) }
        var results: [MembershipResult] = []
        for target in [nil] + configuration.epsilons.map(Optional.some) {
            let runStart = DispatchTime.now().uptimeNanoseconds
            let z = try target.map { try RDPAccountant.noiseMultiplier(epsilon: $0, sampleRate: q, steps: steps, delta: configuration.delta) }
            log(target.map { String(format: "federated LoRA with DP-SGD, target ε = %g: noise multiplier %.3f, %d local steps per client at q = %.3f", $0, z ?? 0, steps, q) }
                ?? "federated LoRA without DP: \(configuration.clients) clients, \(configuration.rounds) rounds x \(configuration.localSteps) local steps")
            let runKey = key.split("run-\(target ?? 0)")
            var global = initial.toArray()
            var iterators = clientData.enumerated().map { index, examples in
                BatchIterator(examples: examples, batchSize: configuration.batchSize,
                              epochs: steps * configuration.batchSize / max(1, examples.count) + 1, seed: configuration.seed &+ UInt64(index + 1))
            }
            let aggregator = UpdateAggregator(clientDP: nil, secureAggregation: false)
            let server = ServerOptimizer(kind: .fedavg, learningRate: 1)
            for round in 0..<configuration.rounds {
                let globalTensor = try Tensor(shape: [global.count], values: global)
                var updates: [AdapterUpdate] = []
                for (index, examples) in clientData.enumerated() {
                    let (values, _) = try FederatedLoRASimulation.trainLocally(
                        part: part, global: globalTensor, layers: model.layerCount, steps: configuration.localSteps, batches: &iterators[index],
                        examples: examples, exampleDP: z.map { ($0, configuration.clip, configuration.batchSize) }, proximalMu: 0,
                        makeOptimizer: makeOptimizer, key: runKey.split(UInt64(round)).split(UInt64(index)))
                    updates.append(AdapterUpdate(clientID: "client-\(index + 1)", delta: zip(values, global).map { $0 - $1 }, examples: examples.count))
                }
                try server.apply(try aggregator.aggregate(updates, key: runKey).delta, to: &global)
            }
            try part.assign(flattenedValues: try Tensor(shape: [global.count], values: global))
            let scorer = CentralizedScorer(part: part)
            let memberLosses = try losses(of: members, model: scorer)
            let otherLosses = try losses(of: others.map(\.0), model: scorer)
            let accuracy = try Evaluator.classification(others.map(\.1), model: scorer, batchSize: 8).accuracy
            let spent = try z.map { try RDPAccountant.epsilon(noiseMultiplier: $0, sampleRate: q, steps: steps, delta: configuration.delta).epsilon }
            let result = MembershipResult(targetEpsilon: target, epsilon: spent, noiseMultiplier: z,
                                          auc: auc(memberLosses: memberLosses, nonMemberLosses: otherLosses),
                                          memberLoss: memberLosses.reduce(0, +) / Double(memberLosses.count),
                                          nonMemberLoss: otherLosses.reduce(0, +) / Double(otherLosses.count),
                                          heldOutAccuracy: accuracy, seconds: Double(DispatchTime.now().uptimeNanoseconds - runStart) / 1e9)
            log(String(format: "AUC %.3f (member loss %.3f, non-member %.3f), held-out accuracy %.3f", result.auc, result.memberLoss, result.nonMemberLoss, accuracy))
            results.append(result)
        }
        let notes = [
            "federated LoRA r = \(configuration.loraRank) on q_proj/v_proj, FedAvg over \(configuration.clients) clients x \(configuration.members) examples, \(configuration.rounds) rounds x \(configuration.localSteps) local steps (AdamW lr \(configuration.learningRate), batches of \(configuration.batchSize)); DP runs use example-level DP-SGD on every client (Poisson q = \(String(format: "%.3f", q)), clip \(configuration.clip)), ε is the victim's over its \(steps) steps at δ = \(configuration.delta)",
            "the attacker holds the final global adapters and scores client-1's \(members.count) training examples (members) against \(others.count) held-out examples (non-members); both sets are half yes, half no; loss = mean next-token loss over the answer tokens",
        ]
        return Report(model: configuration.model, task: configuration.task, results: results, configuration: configuration, notes: notes,
                      seconds: Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9)
    }
}
