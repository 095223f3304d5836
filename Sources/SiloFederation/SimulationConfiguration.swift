import Foundation
import SiloCompression
import SiloModels

/// Every knob of a simulated federated run (`silo simulate --config FILE`). Keys are snake_case in the
/// file; every key is optional and falls back to the embedded default (``SimulationConfiguration/init()``),
/// so a config names only what it changes. Unknown keys are an error (a typo must not be ignored).
public struct SimulationConfiguration: Codable, Sendable, Equatable {
    /// A known model name (`smollm2-135m`), a `.gguf` file or a Hugging Face folder.
    public var model: String = "smollm2-135m"
    /// `boolq`, `pubmedqa`, `xsum` or `fiqa`.
    public var task: String = "boolq"
    /// Seeds data order, partitioning, adapter initialisation and dropout.
    public var seed: UInt64 = 0
    /// Number of clients (data owners).
    public var clients: Int = 4
    public var data = Data()
    public var partition = Partition()
    public var split = Split()
    public var adapters = Adapters()
    public var optimizer = OptimizerSettings()
    public var evaluation = Evaluation()
    /// Also run the same fine-tuning centralized (one process, no split) for comparison.
    public var centralized: Bool = true
    /// `split` (FL-GLM split learning, section `split`) or `federated-lora` (DP-LoRA: every client holds
    /// the whole frozen model and trains LoRA locally; sections `federated` and `privacy`).
    public var mode: String = "split"
    public var federated = Federated()
    public var privacy = Privacy()
    public var centroids = Centroids()

    /// Trustformer's centroid exchange (`mode: kmeans-centroids`; rounds and local steps from `federated`).
    public struct Centroids: Codable, Sendable, Equatable {
        /// k = ratio x rows per matrix (1: FedAvg of the full weights).
        public var ratio: Double = 0.01
        public var iterations: Int = 10
        public var alignment: CentroidAlignment = .sharedSeed
        /// Send norm weights and biases in full (else they stay local).
        public var sendVectors: Bool = true
        /// Full fine-tuning needs a far smaller rate than LoRA (the `optimizer` section's rate is LoRA's).
        public var learningRate: Float = 1e-5

        enum CodingKeys: String, CodingKey, CaseIterable {
            case ratio, iterations, alignment, sendVectors = "send_vectors", learningRate = "learning_rate"
        }

        public init() {}

        public init(from decoder: any Decoder) throws {
            self.init()
            let c = try decoder.container(keyedBy: CodingKeys.self)
            try rejectUnknownKeys(decoder, known: CodingKeys.allCases.map(\.stringValue))
            ratio = try c.decodeIfPresent(Double.self, forKey: .ratio) ?? ratio
            iterations = try c.decodeIfPresent(Int.self, forKey: .iterations) ?? iterations
            alignment = try c.decodeIfPresent(CentroidAlignment.self, forKey: .alignment) ?? alignment
            sendVectors = try c.decodeIfPresent(Bool.self, forKey: .sendVectors) ?? sendVectors
            learningRate = try c.decodeIfPresent(Float.self, forKey: .learningRate) ?? learningRate
        }
    }

    public init() {}

    public struct Data: Codable, Sendable, Equatable {
        /// Training examples drawn from the task's training file, shared out among the clients.
        public var trainExamples: Int = 256
        /// Tokens per example at most (prompt truncated to fit).
        public var maxLength: Int = 128
        /// Rows per client batch.
        public var batchSize: Int = 1
        /// Optional per-client JSONL files in the task's format, in client order, replacing the shards.
        public var clientFiles: [String]? = nil

        enum CodingKeys: String, CodingKey, CaseIterable {
            case trainExamples = "train_examples", maxLength = "max_length", batchSize = "batch_size", clientFiles = "client_files"
        }
    }

    public struct Partition: Codable, Sendable, Equatable {
        /// `iid`, `label-skew` or `dirichlet`.
        public var kind: String = "iid"
        /// Dirichlet concentration (smaller: more skewed).
        public var alpha: Double = 0.5
        /// Label skew: classes per client.
        public var classesPerClient: Int = 1

        enum CodingKeys: String, CodingKey, CaseIterable {
            case kind, alpha, classesPerClient = "classes_per_client"
        }
    }

    public struct Split: Codable, Sendable, Equatable {
        /// `serial`, `client-batching` or `server-hierarchical`.
        public var mode: SplitMode = .clientBatching
        /// Blocks after the embedding kept by the client.
        public var k: Int = 1
        /// Blocks before the head kept by the client.
        public var j: Int = 1
        /// Rounds of training; each ends with aggregation.
        public var rounds: Int = 30
        /// R: batches per client per round.
        public var localSteps: Int = 1
        /// Allow k = 0 (attack experiments only).
        public var allowUnsafeCut: Bool = false
        /// `gradients` (every step; exact centralized equivalence) or `parameters` (FedAvg of values per round).
        public var clientAggregation: ClientAggregation = .gradients
        /// Gaussian noise on the activations each client sends (each example's clipped to `clip`, then
        /// N(0, (z·clip)²)); accounted per client in `results.json` (`activation_privacy`).
        public var activationNoise: NoiseSettings? = nil
        /// Codec for the step's four tensors (activations and output gradients up, server outputs and
        /// activation gradients down): `none`, `q8`, `q4`, `kmeans-K` (see federated.codec). Compressed,
        /// then sealed; bytes before and after compression are in `results.json`.
        public var codec: String = "none"

        public struct NoiseSettings: Codable, Sendable, Equatable {
            public var noiseMultiplier: Double = 1
            public var clip: Double = 1

            enum CodingKeys: String, CodingKey, CaseIterable { case noiseMultiplier = "noise_multiplier", clip }

            public init(noiseMultiplier: Double = 1, clip: Double = 1) {
                self.noiseMultiplier = noiseMultiplier
                self.clip = clip
            }

            public init(from decoder: any Decoder) throws {
                self.init()
                let c = try decoder.container(keyedBy: CodingKeys.self)
                try rejectUnknownKeys(decoder, known: CodingKeys.allCases.map(\.stringValue))
                noiseMultiplier = try c.decodeIfPresent(Double.self, forKey: .noiseMultiplier) ?? noiseMultiplier
                clip = try c.decodeIfPresent(Double.self, forKey: .clip) ?? clip
            }
        }

        enum CodingKeys: String, CodingKey, CaseIterable {
            case mode, k, j, rounds, localSteps = "local_steps", allowUnsafeCut = "allow_unsafe_cut",
                 clientAggregation = "client_aggregation", activationNoise = "activation_noise", codec
        }
    }

    public struct Adapters: Codable, Sendable, Equatable {
        public var lora: LoRA? = LoRA()
        public var prefix: Prefix? = nil

        public struct LoRA: Codable, Sendable, Equatable {
            public var rank: Int = 8
            public var alpha: Float = 16
            public var dropout: Float = 0
            public var targetModules: [String] = ["q_proj", "v_proj"]

            enum CodingKeys: String, CodingKey, CaseIterable {
                case rank, alpha, dropout, targetModules = "target_modules"
            }
        }

        public struct Prefix: Codable, Sendable, Equatable {
            public var length: Int = 16
            public var projectionHiddenSize: Int? = nil

            enum CodingKeys: String, CodingKey, CaseIterable {
                case length, projectionHiddenSize = "projection_hidden_size"
            }
        }

        /// What every party attaches.
        public var specification: AdapterSpecification {
            AdapterSpecification(
                lora: lora.map { LoRAConfiguration(rank: $0.rank, alpha: $0.alpha, dropout: $0.dropout, targetModules: $0.targetModules) },
                prefix: prefix.map { PrefixTuningConfiguration(length: $0.length, projectionHiddenSize: $0.projectionHiddenSize) })
        }
    }

    /// Federated LoRA rounds (`mode: federated-lora`).
    public struct Federated: Codable, Sendable, Equatable {
        public var rounds: Int = 10
        /// E: local optimizer steps per client per round.
        public var localSteps: Int = 2
        /// Clients sampled per round: a count, or else a fraction of the clients (seeded, without replacement).
        public var clientsPerRound: Int? = nil
        public var fraction: Double = 1
        /// `fedavg`, `fedprox` (FedAvg + a proximal term on the client), `fedadagrad`, `fedadam`, `fedyogi`.
        public var strategy: String = "fedavg"
        /// FedProx's μ: the client minimises loss + μ/2·‖w − w_global‖².
        public var proximalMu: Double = 0.01
        /// Server learning rate η (default per strategy: 1 FedAvg/FedProx, 0.1 FedAdagrad/FedAdam, 0.01 FedYogi).
        public var serverLearningRate: Double? = nil
        public var beta1: Double = 0.9
        public var beta2: Double = 0.99
        /// τ of the adaptive server optimizers (default 1e-9, FedYogi 1e-3).
        public var tau: Double? = nil
        /// `factors` (average A and B, as DP-LoRA) or `product` (average B·A, re-factor by SVD).
        public var loraAggregation: LoRAAggregation = .factors
        /// Sum the updates with secure aggregation (Bonawitz et al. 2017): the server learns only the sum.
        public var secureAggregation: Bool = false
        /// Clients that may drop out of secure aggregation and still leave the sum recoverable.
        public var secureAggregationDropouts: Int = 1
        /// Codec of the uploaded updates: `none`, `q8`, `q4` (blockwise absmax) or `kmeans-K` (K centroids per
        /// adapter matrix, over its longer axis). Only `none` works with secure aggregation.
        public var codec: String = "none"

        enum CodingKeys: String, CodingKey, CaseIterable {
            case rounds, localSteps = "local_steps", clientsPerRound = "clients_per_round", fraction, strategy,
                 proximalMu = "proximal_mu", serverLearningRate = "server_learning_rate", beta1, beta2, tau,
                 loraAggregation = "lora_aggregation", secureAggregation = "secure_aggregation",
                 secureAggregationDropouts = "secure_aggregation_dropouts", codec
        }
    }

    /// Differential privacy and the privacy budget (federated LoRA).
    public struct Privacy: Codable, Sendable, Equatable {
        /// δ of every ε reported.
        public var delta: Double = 1e-5
        /// ε each client may spend in all (nil: no limit).
        public var epsilonBudget: Double? = nil
        /// Leave a client out of further rounds once a round would overspend its budget (else: fail).
        public var stopWhenSpent: Bool = true
        public var exampleDP: ExampleDP? = nil
        public var clientDP: ClientDP? = nil
        public var localDP: LocalDPSettings? = nil

        /// Example-level DP-SGD in local training: Poisson sampling (q = batch_size / client examples),
        /// per-example clipping to `clip`, N(0, (z·clip)²) on the sum. Give `noise_multiplier`, or
        /// `target_epsilon` to calibrate z for the whole run (every round, every local step).
        public struct ExampleDP: Codable, Sendable, Equatable {
            public var noiseMultiplier: Double? = nil
            public var targetEpsilon: Double? = nil
            public var clip: Double = 1

            enum CodingKeys: String, CodingKey, CaseIterable {
                case noiseMultiplier = "noise_multiplier", targetEpsilon = "target_epsilon", clip
            }
        }

        /// Client-level DP of the aggregate (DP-FedAvg), `fixed` or `adaptive` clipping.
        public struct ClientDP: Codable, Sendable, Equatable {
            public var clipping: String = "fixed"
            public var noiseMultiplier: Double = 1
            /// C (initial C for adaptive clipping).
            public var clip: Double = 1
            public var targetQuantile: Double = 0.5
            public var clipLearningRate: Double = 0.2
            /// σ_b of the clipped count (default: clients per round / 20, as Andrew et al.).
            public var clippedCountStddev: Double? = nil

            enum CodingKeys: String, CodingKey, CaseIterable {
                case clipping, noiseMultiplier = "noise_multiplier", clip, targetQuantile = "target_quantile",
                     clipLearningRate = "clip_learning_rate", clippedCountStddev = "clipped_count_stddev"
            }
        }

        /// Local DP: each client clips its update to `clip` and adds N(0, (z·clip)²) before upload.
        public struct LocalDPSettings: Codable, Sendable, Equatable {
            public var noiseMultiplier: Double = 1
            public var clip: Double = 1

            enum CodingKeys: String, CodingKey, CaseIterable { case noiseMultiplier = "noise_multiplier", clip }
        }

        enum CodingKeys: String, CodingKey, CaseIterable {
            case delta, epsilonBudget = "epsilon_budget", stopWhenSpent = "stop_when_spent", exampleDP = "example_dp",
                 clientDP = "client_dp", localDP = "local_dp"
        }
    }

    public struct OptimizerSettings: Codable, Sendable, Equatable {
        /// `adamw` or `sgd`.
        public var name: String = "adamw"
        public var learningRate: Float = 2e-3
        public var weightDecay: Float = 0

        enum CodingKeys: String, CodingKey, CaseIterable {
            case name, learningRate = "learning_rate", weightDecay = "weight_decay"
        }
    }

    public struct Evaluation: Codable, Sendable, Equatable {
        /// Held-out examples scored before and after training (0: no evaluation, e.g. for benchmarks).
        public var examples: Int = 160
        /// Rows per evaluation batch.
        public var batchSize: Int = 8
        /// New tokens at most for generation tasks.
        public var maxNewTokens: Int = 48

        enum CodingKeys: String, CodingKey, CaseIterable {
            case examples, batchSize = "batch_size", maxNewTokens = "max_new_tokens"
        }
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case model, task, seed, clients, data, partition, split, adapters, optimizer, evaluation, centralized, mode, federated, privacy, centroids
    }

    /// Checks ranges and combinations, naming the key.
    /// - Throws: ``ConfigurationError``.
    public func validate() throws {
        func require(_ condition: Bool, _ key: String, _ message: String) throws {
            if !condition { throw ConfigurationError("\(key): \(message)") }
        }
        try require(clients >= 1, "clients", "must be at least 1 (got \(clients))")
        try require(["boolq", "pubmedqa", "xsum", "fiqa"].contains(task), "task", "'\(task)' is not one of boolq, pubmedqa, xsum, fiqa")
        try require(data.trainExamples >= clients, "data.train_examples", "\(data.trainExamples) examples cannot be shared among \(clients) clients")
        try require(data.maxLength >= 8, "data.max_length", "must be at least 8 (got \(data.maxLength))")
        try require(data.batchSize >= 1, "data.batch_size", "must be at least 1 (got \(data.batchSize))")
        if let files = data.clientFiles {
            try require(files.count == clients, "data.client_files", "\(files.count) files for \(clients) clients")
        }
        try require(["iid", "label-skew", "dirichlet"].contains(partition.kind), "partition.kind", "'\(partition.kind)' is not one of iid, label-skew, dirichlet")
        try require(partition.alpha > 0, "partition.alpha", "must be positive (got \(partition.alpha))")
        try require(split.rounds >= 1, "split.rounds", "must be at least 1 (got \(split.rounds))")
        try require(split.localSteps >= 1, "split.local_steps", "must be at least 1 (got \(split.localSteps))")
        if let noise = split.activationNoise {
            try require(noise.noiseMultiplier > 0 && noise.noiseMultiplier.isFinite, "split.activation_noise.noise_multiplier", "must be > 0 (got \(noise.noiseMultiplier))")
            try require(noise.clip > 0 && noise.clip.isFinite, "split.activation_noise.clip", "must be > 0 (got \(noise.clip))")
        }
        try require(adapters.lora != nil || adapters.prefix != nil, "adapters", "train LoRA, a prefix or both")
        try require(["adamw", "sgd"].contains(optimizer.name), "optimizer.name", "'\(optimizer.name)' is not adamw or sgd")
        try require(optimizer.learningRate > 0 && optimizer.learningRate.isFinite, "optimizer.learning_rate", "must be positive (got \(optimizer.learningRate))")
        try require(evaluation.examples >= 0, "evaluation.examples", "must be at least 0 (0 skips evaluation)")
        try require(evaluation.batchSize >= 1, "evaluation.batch_size", "must be at least 1")
        try require(["split", "federated-lora", "kmeans-centroids"].contains(mode), "mode", "'\(mode)' is not one of split, federated-lora, kmeans-centroids")
        try require(centroids.ratio > 0 && centroids.ratio <= 1, "centroids.ratio", "must be in (0, 1] (got \(centroids.ratio))")
        try require(centroids.iterations >= 0, "centroids.iterations", "must be >= 0")
        try require(centroids.learningRate > 0 && centroids.learningRate.isFinite, "centroids.learning_rate", "must be > 0")
        try require(federated.rounds >= 1, "federated.rounds", "must be at least 1 (got \(federated.rounds))")
        try require(federated.localSteps >= 1, "federated.local_steps", "must be at least 1 (got \(federated.localSteps))")
        if let count = federated.clientsPerRound {
            try require(count >= 1 && count <= clients, "federated.clients_per_round", "must be in 1...\(clients) (got \(count))")
        }
        try require(federated.fraction > 0 && federated.fraction <= 1, "federated.fraction", "must be in (0, 1] (got \(federated.fraction))")
        try require(["fedavg", "fedprox", "fedadagrad", "fedadam", "fedyogi"].contains(federated.strategy), "federated.strategy",
                    "'\(federated.strategy)' is not one of fedavg, fedprox, fedadagrad, fedadam, fedyogi")
        try require(federated.proximalMu >= 0 && federated.proximalMu.isFinite, "federated.proximal_mu", "must be >= 0")
        if let rate = federated.serverLearningRate {
            try require(rate > 0 && rate.isFinite, "federated.server_learning_rate", "must be > 0 (got \(rate))")
        }
        try require((0..<1).contains(federated.beta1) && (0..<1).contains(federated.beta2), "federated.beta1", "beta1 and beta2 must be in [0, 1)")
        try require(federated.secureAggregationDropouts >= 0, "federated.secure_aggregation_dropouts", "must be >= 0")
        do {
            _ = try makeCodec(split.codec)
        } catch {
            throw ConfigurationError("split.codec: \(error)")
        }
        do {
            let codec = try makeCodec(federated.codec)
            if federated.secureAggregation { try checkSecureAggregationCompatible(codec) }
        } catch {
            throw ConfigurationError("federated.codec: \(error)")
        }
        if mode == "federated-lora" {
            try require(adapters.lora != nil, "adapters.lora", "federated-lora trains LoRA adapters: set adapters.lora")
            if federated.loraAggregation == .product {
                try require(!federated.secureAggregation, "federated.lora_aggregation",
                            "product aggregation needs every client's factors, secure aggregation hides them: use factors, or switch secure_aggregation off")
                try require(privacy.clientDP == nil, "federated.lora_aggregation",
                            "product aggregation re-factors individual updates; client-level DP noises their sum: use factors (local_dp works with product)")
                try require(federated.strategy == "fedavg" || federated.strategy == "fedprox", "federated.lora_aggregation",
                            "product aggregation re-factors B·A (a new basis each round), so a server optimizer's moments on A and B mean nothing: use fedavg or fedprox")
            }
        }
        try require(privacy.delta > 0 && privacy.delta < 1, "privacy.delta", "must be in (0, 1) (got \(privacy.delta))")
        if let budget = privacy.epsilonBudget { try require(budget > 0 && budget.isFinite, "privacy.epsilon_budget", "must be > 0 (got \(budget))") }
        if let dp = privacy.exampleDP {
            try require((dp.noiseMultiplier == nil) != (dp.targetEpsilon == nil), "privacy.example_dp", "give exactly one of noise_multiplier and target_epsilon")
            if let z = dp.noiseMultiplier { try require(z > 0 && z.isFinite, "privacy.example_dp.noise_multiplier", "must be > 0 (got \(z)): without noise nothing is private") }
            if let e = dp.targetEpsilon { try require(e > 0 && e.isFinite, "privacy.example_dp.target_epsilon", "must be > 0 (got \(e))") }
            try require(dp.clip > 0 && dp.clip.isFinite, "privacy.example_dp.clip", "must be > 0 (got \(dp.clip))")
        }
        if let dp = privacy.clientDP {
            try require(["fixed", "adaptive"].contains(dp.clipping), "privacy.client_dp.clipping", "'\(dp.clipping)' is not fixed or adaptive")
            try require(dp.noiseMultiplier >= 0 && dp.noiseMultiplier.isFinite, "privacy.client_dp.noise_multiplier", "must be >= 0 (got \(dp.noiseMultiplier))")
            try require(dp.clip > 0 && dp.clip.isFinite, "privacy.client_dp.clip", "must be > 0 (got \(dp.clip))")
            try require(dp.targetQuantile >= 0 && dp.targetQuantile <= 1, "privacy.client_dp.target_quantile", "must be in [0, 1]")
            try require(dp.clipLearningRate > 0, "privacy.client_dp.clip_learning_rate", "must be > 0")
        }
        if let dp = privacy.localDP {
            try require(dp.noiseMultiplier > 0 && dp.noiseMultiplier.isFinite, "privacy.local_dp.noise_multiplier", "must be > 0 (got \(dp.noiseMultiplier))")
            try require(dp.clip > 0 && dp.clip.isFinite, "privacy.local_dp.clip", "must be > 0 (got \(dp.clip))")
        }
    }
}

extension SimulationConfiguration {
    public init(from decoder: any Decoder) throws {
        self.init()
        let container = try decoder.container(keyedBy: CodingKeys.self)
        try rejectUnknownKeys(decoder, known: CodingKeys.allCases.map(\.stringValue))
        model = try container.decodeIfPresent(String.self, forKey: .model) ?? model
        task = try container.decodeIfPresent(String.self, forKey: .task) ?? task
        seed = try container.decodeIfPresent(UInt64.self, forKey: .seed) ?? seed
        clients = try container.decodeIfPresent(Int.self, forKey: .clients) ?? clients
        data = try container.decodeIfPresent(Data.self, forKey: .data) ?? data
        partition = try container.decodeIfPresent(Partition.self, forKey: .partition) ?? partition
        split = try container.decodeIfPresent(Split.self, forKey: .split) ?? split
        adapters = try container.decodeIfPresent(Adapters.self, forKey: .adapters) ?? adapters
        optimizer = try container.decodeIfPresent(OptimizerSettings.self, forKey: .optimizer) ?? optimizer
        evaluation = try container.decodeIfPresent(Evaluation.self, forKey: .evaluation) ?? evaluation
        centralized = try container.decodeIfPresent(Bool.self, forKey: .centralized) ?? centralized
        mode = try container.decodeIfPresent(String.self, forKey: .mode) ?? mode
        federated = try container.decodeIfPresent(Federated.self, forKey: .federated) ?? federated
        privacy = try container.decodeIfPresent(Privacy.self, forKey: .privacy) ?? privacy
        centroids = try container.decodeIfPresent(Centroids.self, forKey: .centroids) ?? centroids
    }
}

/// A configuration value out of range, a wrong combination, or an unknown key; the message names the key.
public struct ConfigurationError: Error, CustomStringConvertible, Sendable {
    public let message: String

    public init(_ message: String) { self.message = message }

    public var description: String { message }
}

extension SimulationConfiguration.Data {
    public init(from decoder: any Decoder) throws {
        self.init()
        let container = try decoder.container(keyedBy: CodingKeys.self)
        try rejectUnknownKeys(decoder, known: CodingKeys.allCases.map(\.stringValue))
        trainExamples = try container.decodeIfPresent(Int.self, forKey: .trainExamples) ?? trainExamples
        maxLength = try container.decodeIfPresent(Int.self, forKey: .maxLength) ?? maxLength
        batchSize = try container.decodeIfPresent(Int.self, forKey: .batchSize) ?? batchSize
        clientFiles = try container.decodeIfPresent([String].self, forKey: .clientFiles) ?? clientFiles
    }
}

extension SimulationConfiguration.Partition {
    public init(from decoder: any Decoder) throws {
        self.init()
        let container = try decoder.container(keyedBy: CodingKeys.self)
        try rejectUnknownKeys(decoder, known: CodingKeys.allCases.map(\.stringValue))
        kind = try container.decodeIfPresent(String.self, forKey: .kind) ?? kind
        alpha = try container.decodeIfPresent(Double.self, forKey: .alpha) ?? alpha
        classesPerClient = try container.decodeIfPresent(Int.self, forKey: .classesPerClient) ?? classesPerClient
    }
}

extension SimulationConfiguration.Split {
    public init(from decoder: any Decoder) throws {
        self.init()
        let container = try decoder.container(keyedBy: CodingKeys.self)
        try rejectUnknownKeys(decoder, known: CodingKeys.allCases.map(\.stringValue))
        mode = try container.decodeIfPresent(SplitMode.self, forKey: .mode) ?? mode
        k = try container.decodeIfPresent(Int.self, forKey: .k) ?? k
        j = try container.decodeIfPresent(Int.self, forKey: .j) ?? j
        rounds = try container.decodeIfPresent(Int.self, forKey: .rounds) ?? rounds
        localSteps = try container.decodeIfPresent(Int.self, forKey: .localSteps) ?? localSteps
        allowUnsafeCut = try container.decodeIfPresent(Bool.self, forKey: .allowUnsafeCut) ?? allowUnsafeCut
        clientAggregation = try container.decodeIfPresent(ClientAggregation.self, forKey: .clientAggregation) ?? clientAggregation
        activationNoise = try container.decodeIfPresent(NoiseSettings.self, forKey: .activationNoise) ?? activationNoise
        codec = try container.decodeIfPresent(String.self, forKey: .codec) ?? codec
    }
}

extension SimulationConfiguration.Adapters.LoRA {
    public init(from decoder: any Decoder) throws {
        self.init()
        let container = try decoder.container(keyedBy: CodingKeys.self)
        try rejectUnknownKeys(decoder, known: CodingKeys.allCases.map(\.stringValue))
        rank = try container.decodeIfPresent(Int.self, forKey: .rank) ?? rank
        alpha = try container.decodeIfPresent(Float.self, forKey: .alpha) ?? alpha
        dropout = try container.decodeIfPresent(Float.self, forKey: .dropout) ?? dropout
        targetModules = try container.decodeIfPresent([String].self, forKey: .targetModules) ?? targetModules
    }
}

extension SimulationConfiguration.Adapters.Prefix {
    public init(from decoder: any Decoder) throws {
        self.init()
        let container = try decoder.container(keyedBy: CodingKeys.self)
        try rejectUnknownKeys(decoder, known: CodingKeys.allCases.map(\.stringValue))
        length = try container.decodeIfPresent(Int.self, forKey: .length) ?? length
        projectionHiddenSize = try container.decodeIfPresent(Int.self, forKey: .projectionHiddenSize) ?? projectionHiddenSize
    }
}

extension SimulationConfiguration.OptimizerSettings {
    public init(from decoder: any Decoder) throws {
        self.init()
        let container = try decoder.container(keyedBy: CodingKeys.self)
        try rejectUnknownKeys(decoder, known: CodingKeys.allCases.map(\.stringValue))
        name = try container.decodeIfPresent(String.self, forKey: .name) ?? name
        learningRate = try container.decodeIfPresent(Float.self, forKey: .learningRate) ?? learningRate
        weightDecay = try container.decodeIfPresent(Float.self, forKey: .weightDecay) ?? weightDecay
    }
}

extension SimulationConfiguration.Evaluation {
    public init(from decoder: any Decoder) throws {
        self.init()
        let container = try decoder.container(keyedBy: CodingKeys.self)
        try rejectUnknownKeys(decoder, known: CodingKeys.allCases.map(\.stringValue))
        examples = try container.decodeIfPresent(Int.self, forKey: .examples) ?? examples
        batchSize = try container.decodeIfPresent(Int.self, forKey: .batchSize) ?? batchSize
        maxNewTokens = try container.decodeIfPresent(Int.self, forKey: .maxNewTokens) ?? maxNewTokens
    }
}

extension SimulationConfiguration.Adapters {
    enum CodingKeys: String, CodingKey, CaseIterable { case lora, prefix }

    /// `lora: null` switches LoRA off; an absent key keeps the default.
    public init(from decoder: any Decoder) throws {
        self.init()
        let container = try decoder.container(keyedBy: CodingKeys.self)
        try rejectUnknownKeys(decoder, known: CodingKeys.allCases.map(\.stringValue))
        if container.contains(.lora) { lora = try container.decodeIfPresent(LoRA.self, forKey: .lora) }
        if container.contains(.prefix) { prefix = try container.decodeIfPresent(Prefix.self, forKey: .prefix) }
    }
}

/// Any key, to list what a config section holds.
struct AnyCodingKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}

/// Throws naming the first key of the section that is not in `known` (with its path).
func rejectUnknownKeys(_ decoder: any Decoder, known: [String]) throws {
    let container = try decoder.container(keyedBy: AnyCodingKey.self)
    let path = decoder.codingPath.map(\.stringValue).joined(separator: ".")
    if let unknown = container.allKeys.map(\.stringValue).sorted().first(where: { !known.contains($0) }) {
        let name = path.isEmpty ? unknown : path + "." + unknown
        throw ConfigurationError("\(name): unknown key (known here: \(known.joined(separator: ", ")))")
    }
}

extension SimulationConfiguration.Federated {
    public init(from decoder: any Decoder) throws {
        self.init()
        let c = try decoder.container(keyedBy: CodingKeys.self)
        try rejectUnknownKeys(decoder, known: CodingKeys.allCases.map(\.stringValue))
        rounds = try c.decodeIfPresent(Int.self, forKey: .rounds) ?? rounds
        localSteps = try c.decodeIfPresent(Int.self, forKey: .localSteps) ?? localSteps
        clientsPerRound = try c.decodeIfPresent(Int.self, forKey: .clientsPerRound) ?? clientsPerRound
        fraction = try c.decodeIfPresent(Double.self, forKey: .fraction) ?? fraction
        strategy = try c.decodeIfPresent(String.self, forKey: .strategy) ?? strategy
        proximalMu = try c.decodeIfPresent(Double.self, forKey: .proximalMu) ?? proximalMu
        serverLearningRate = try c.decodeIfPresent(Double.self, forKey: .serverLearningRate) ?? serverLearningRate
        beta1 = try c.decodeIfPresent(Double.self, forKey: .beta1) ?? beta1
        beta2 = try c.decodeIfPresent(Double.self, forKey: .beta2) ?? beta2
        tau = try c.decodeIfPresent(Double.self, forKey: .tau) ?? tau
        loraAggregation = try c.decodeIfPresent(LoRAAggregation.self, forKey: .loraAggregation) ?? loraAggregation
        secureAggregation = try c.decodeIfPresent(Bool.self, forKey: .secureAggregation) ?? secureAggregation
        secureAggregationDropouts = try c.decodeIfPresent(Int.self, forKey: .secureAggregationDropouts) ?? secureAggregationDropouts
        codec = try c.decodeIfPresent(String.self, forKey: .codec) ?? codec
    }
}

extension SimulationConfiguration.Privacy {
    public init(from decoder: any Decoder) throws {
        self.init()
        let c = try decoder.container(keyedBy: CodingKeys.self)
        try rejectUnknownKeys(decoder, known: CodingKeys.allCases.map(\.stringValue))
        delta = try c.decodeIfPresent(Double.self, forKey: .delta) ?? delta
        epsilonBudget = try c.decodeIfPresent(Double.self, forKey: .epsilonBudget) ?? epsilonBudget
        stopWhenSpent = try c.decodeIfPresent(Bool.self, forKey: .stopWhenSpent) ?? stopWhenSpent
        exampleDP = try c.decodeIfPresent(ExampleDP.self, forKey: .exampleDP) ?? exampleDP
        clientDP = try c.decodeIfPresent(ClientDP.self, forKey: .clientDP) ?? clientDP
        localDP = try c.decodeIfPresent(LocalDPSettings.self, forKey: .localDP) ?? localDP
    }
}

extension SimulationConfiguration.Privacy.ExampleDP {
    public init(from decoder: any Decoder) throws {
        self.init()
        let c = try decoder.container(keyedBy: CodingKeys.self)
        try rejectUnknownKeys(decoder, known: CodingKeys.allCases.map(\.stringValue))
        noiseMultiplier = try c.decodeIfPresent(Double.self, forKey: .noiseMultiplier) ?? noiseMultiplier
        targetEpsilon = try c.decodeIfPresent(Double.self, forKey: .targetEpsilon) ?? targetEpsilon
        clip = try c.decodeIfPresent(Double.self, forKey: .clip) ?? clip
    }
}

extension SimulationConfiguration.Privacy.ClientDP {
    public init(from decoder: any Decoder) throws {
        self.init()
        let c = try decoder.container(keyedBy: CodingKeys.self)
        try rejectUnknownKeys(decoder, known: CodingKeys.allCases.map(\.stringValue))
        clipping = try c.decodeIfPresent(String.self, forKey: .clipping) ?? clipping
        noiseMultiplier = try c.decodeIfPresent(Double.self, forKey: .noiseMultiplier) ?? noiseMultiplier
        clip = try c.decodeIfPresent(Double.self, forKey: .clip) ?? clip
        targetQuantile = try c.decodeIfPresent(Double.self, forKey: .targetQuantile) ?? targetQuantile
        clipLearningRate = try c.decodeIfPresent(Double.self, forKey: .clipLearningRate) ?? clipLearningRate
        clippedCountStddev = try c.decodeIfPresent(Double.self, forKey: .clippedCountStddev) ?? clippedCountStddev
    }
}

extension SimulationConfiguration.Privacy.LocalDPSettings {
    public init(from decoder: any Decoder) throws {
        self.init()
        let c = try decoder.container(keyedBy: CodingKeys.self)
        try rejectUnknownKeys(decoder, known: CodingKeys.allCases.map(\.stringValue))
        noiseMultiplier = try c.decodeIfPresent(Double.self, forKey: .noiseMultiplier) ?? noiseMultiplier
        clip = try c.decodeIfPresent(Double.self, forKey: .clip) ?? clip
    }
}
