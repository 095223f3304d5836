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
    /// Training examples (members) and held-out examples of the same distribution (non-members).
    public var members = 32
    public var nonMembers = 64
    public var maxLength = 128
    /// Passes over the members; each step samples every member with probability batch_size / members.
    public var epochs = 8
    public var batchSize = 4
    public var learningRate: Float = 2e-3
    /// Target ε of each private run (δ below); a run without DP is always included.
    public var epsilons: [Double] = [8, 4, 2]
    public var delta = 1e-5
    /// Per-example clipping norm of the adapters' gradient.
    public var clip = 1.0
    public var loraRank = 8
    public var seed: UInt64 = 0

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable {
        case model, task, members, nonMembers = "non_members", maxLength = "max_length", epochs, batchSize = "batch_size",
             learningRate = "learning_rate", epsilons, delta, clip, loraRank = "lora_rank", seed
    }

    public init(from decoder: any Decoder) throws {
        self.init()
        let c = try decoder.container(keyedBy: CodingKeys.self)
        try rejectUnknownKeys(decoder, known: CodingKeys.allCases.map(\.stringValue))
        model = try c.decodeIfPresent(String.self, forKey: .model) ?? model
        task = try c.decodeIfPresent(String.self, forKey: .task) ?? task
        members = try c.decodeIfPresent(Int.self, forKey: .members) ?? members
        nonMembers = try c.decodeIfPresent(Int.self, forKey: .nonMembers) ?? nonMembers
        maxLength = try c.decodeIfPresent(Int.self, forKey: .maxLength) ?? maxLength
        epochs = try c.decodeIfPresent(Int.self, forKey: .epochs) ?? epochs
        batchSize = try c.decodeIfPresent(Int.self, forKey: .batchSize) ?? batchSize
        learningRate = try c.decodeIfPresent(Float.self, forKey: .learningRate) ?? learningRate
        epsilons = try c.decodeIfPresent([Double].self, forKey: .epsilons) ?? epsilons
        delta = try c.decodeIfPresent(Double.self, forKey: .delta) ?? delta
        clip = try c.decodeIfPresent(Double.self, forKey: .clip) ?? clip
        loraRank = try c.decodeIfPresent(Int.self, forKey: .loraRank) ?? loraRank
        seed = try c.decodeIfPresent(UInt64.self, forKey: .seed) ?? seed
    }

    /// Steps of one run: epochs × members / batch size.
    public var steps: Int { max(1, epochs * members / max(batchSize, 1)) }
    /// Poisson sampling rate q.
    public var sampleRate: Double { Double(batchSize) / Double(max(members, 1)) }

    public func validate() throws {
        func check(_ condition: Bool, _ key: String, _ message: String) throws {
            if !condition { throw ConfigurationError("\(key): \(message)") }
        }
        try check(members >= 2 && nonMembers >= 2, "members", "needs at least 2 members and 2 non-members")
        try check(batchSize >= 1 && batchSize <= members, "batch_size", "must be in 1 ... members (\(members)), got \(batchSize)")
        try check(epochs >= 1, "epochs", "must be at least 1")
        try check(clip.isFinite && clip > 0, "clip", "must be > 0 (got \(clip))")
        try check(epsilons.allSatisfy { $0.isFinite && $0 > 0 }, "epsilons", "must all be > 0 (got \(epsilons))")
        try check(delta > 0 && delta < 1, "delta", "must be in (0, 1) (got \(delta))")
    }
}

/// One trained model and what the attack achieves against it.
public struct MembershipResult: Codable, Sendable, Equatable {
    /// nil: trained without DP.
    public var targetEpsilon: Double?
    /// ε actually spent (accountant), nil without DP.
    public var epsilon: Double?
    public var noiseMultiplier: Double?
    public var auc: Double
    public var memberLoss: Double
    public var nonMemberLoss: Double
    /// Accuracy on the non-members (utility of the adapters).
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

    /// Trains LoRA adapters on the members — one data owner's local training in federated LoRA — once
    /// without DP and once per target ε with DP-SGD (Poisson sampling, per-example clipping, Gaussian
    /// noise calibrated by the RDP accountant), and measures the loss-threshold attack's AUC on each.
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
        let order = seededPermutation(count: data.train.count, key: key.split("pool"))
        var members: [(Example, EncodedExample)] = [], others: [(Example, EncodedExample)] = []
        for index in order where members.count < configuration.members || others.count < configuration.nonMembers {
            guard let encoded = try? template.encode(data.train[index], tokenizer: tokenizer, maxLength: configuration.maxLength) else { continue }
            if members.count < configuration.members { members.append((data.train[index], encoded)) } else { others.append((data.train[index], encoded)) }
        }
        let choices = try others.map { try template.encodeChoices($0.0, tokenizer: tokenizer, maxLength: configuration.maxLength) }
        let steps = configuration.steps, q = configuration.sampleRate
        var results: [MembershipResult] = []
        for target in [nil] + configuration.epsilons.map(Optional.some) {
            let runStart = DispatchTime.now().uptimeNanoseconds
            let z = try target.map { try RDPAccountant.noiseMultiplier(epsilon: $0, sampleRate: q, steps: steps, delta: configuration.delta) }
            log(target.map { String(format: "DP-SGD, target ε = %g: noise multiplier %.3f, %d steps at q = %.3f", $0, z ?? 0, steps, q) }
                ?? "no DP: \(steps) steps at q = \(String(format: "%.3f", q))")
            let model = try Checkpoint.load(modelURL)
            let lora = LoRAConfiguration(rank: configuration.loraRank, alpha: Float(2 * configuration.loraRank), targetModules: ["q_proj", "v_proj"])
            let part = try ModelPart(model: model, adapters: AdapterSpecification(lora: lora), key: key.split("adapters"))
            let optimizer = try AdamW(parameters: part.trainableTensors, learningRate: configuration.learningRate, weightDecay: 0)
            let runKey = key.split("run-\(target ?? 0)")
            for step in 0..<steps {
                let stepKey = runKey.split(UInt64(step))
                let batch = members.indices.filter { stepKey.split("sample").uniform(UInt64($0)) < Float(q) }
                var gradients: [[Float]] = []
                for index in batch {
                    let example = members[index].1
                    let hidden = try part.embedAndRun(ids: example.ids, batch: 1, time: example.ids.count, blocks: 0..<0)
                    let (loss, _) = try part.loss(hidden: hidden, labels: example.labels, blocks: 0..<model.layerCount)
                    try loss.backward()
                    gradients.append(part.flattenedGradients().toArray())
                    optimizer.zeroGrad()
                }
                let count = part.trainableCount
                let gradient: [Float]
                if let z {
                    gradient = GaussianMechanism.privateGradient(perExample: gradients, count: count, clip: configuration.clip, noiseMultiplier: z,
                                                                 expectedBatchSize: q * Double(members.count), key: stepKey.split("noise"))
                } else {
                    guard !gradients.isEmpty else { continue }
                    gradient = (0..<count).map { i in gradients.reduce(Float(0)) { $0 + $1[i] } / Float(gradients.count) }
                }
                try part.assign(flattenedGradients: try Tensor(shape: [count], values: gradient))
                try optimizer.step()
                optimizer.zeroGrad()
            }
            let scorer = CentralizedScorer(part: part)
            let memberLosses = try losses(of: members.map(\.1), model: scorer)
            let otherLosses = try losses(of: others.map(\.1), model: scorer)
            let accuracy = try Evaluator.classification(choices, model: scorer, batchSize: 8).accuracy
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
            "each run trains LoRA r = \(configuration.loraRank) on q_proj/v_proj of the frozen model on the \(members.count) members: one data owner's local training in federated LoRA; DP-SGD gives example-level (ε, δ)-DP for that owner's examples",
            "losses are the mean next-token loss over each example's answer tokens; AUC is over \(members.count) members and \(others.count) non-members from the same pool",
        ]
        return Report(model: configuration.model, task: configuration.task, results: results, configuration: configuration, notes: notes,
                      seconds: Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9)
    }
}
