import Foundation
import SiloData
import SiloModels
import SiloTensor

// N token rows, C hidden size, V vocabulary, T tokens of one text.

/// Settings of `silo attack inversion` (YAML/JSON keys in snake_case; an unknown key is an error).
///
/// The setup is FL-GLM's colluding threat model (FSHA-style): the server colludes with one client, so it
/// holds that client's texts (shadow data, same domain as the victim's) together with the smashed
/// activations the client's input part produced for them. It fits a decoder from activations back to
/// tokens on the shadow pairs, then decodes the activations a victim client sent.
public struct InversionAttackConfiguration: Codable, Sendable, Equatable {
    /// A model name (`smollm2-135m`), a Hugging Face folder or a `.gguf` file.
    public var model = "smollm2-135m"
    /// The task whose passages are the texts (`boolq`: Wikipedia paragraphs).
    public var task = "boolq"
    /// Texts the colluding client contributes (from the task's training split).
    public var shadowExamples = 384
    /// Texts of the victim (from the task's evaluation split: no overlap with the shadow texts).
    public var victimExamples = 48
    /// Tokens per text (the passage's first tokens).
    public var maxLength = 64
    /// Blocks the client keeps after the embedding (k): 0 leaves only the embedding on the client.
    public var cuts = [0, 1, 2]
    /// Noise multipliers z on the activations: each text's activation (T, C) is clipped to L2 norm
    /// `activation_clip` and N(0, (z·clip)²) is added to every element (0: no noise).
    public var noiseMultipliers: [Double] = [0, 0.001, 0.01, 0.1]
    /// The clip norm; nil: the median norm of the shadow texts' clean activations at that cut (so that
    /// clipping changes few texts and the noise is relative to a typical activation).
    public var activationClip: Double?
    /// Codecs applied to the activations before they leave the client: "none", or "quantize-8"/"quantize-4"
    /// (blockwise absmax) and "kmeans-K" (rows replaced by the nearest of K centroids per text) when
    /// the compression codecs are available.
    public var compressions = ["none", "quantize-8", "kmeans-16"]
    /// Ridge regularisation, relative to the mean diagonal of the shadow activations' covariance.
    public var ridge = 1e-4
    /// δ of the per-step (ε, δ) reported for each noise level (a Gaussian mechanism, sampling rate 1).
    public var delta = 1e-5
    public var seed: UInt64 = 0

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable {
        case model, task, shadowExamples = "shadow_examples", victimExamples = "victim_examples",
             maxLength = "max_length", cuts, noiseMultipliers = "noise_multipliers",
             activationClip = "activation_clip", compressions, ridge, delta, seed
    }

    public init(from decoder: any Decoder) throws {
        self.init()
        let container = try decoder.container(keyedBy: CodingKeys.self)
        try rejectUnknownKeys(decoder, known: CodingKeys.allCases.map(\.stringValue))
        model = try container.decodeIfPresent(String.self, forKey: .model) ?? model
        task = try container.decodeIfPresent(String.self, forKey: .task) ?? task
        shadowExamples = try container.decodeIfPresent(Int.self, forKey: .shadowExamples) ?? shadowExamples
        victimExamples = try container.decodeIfPresent(Int.self, forKey: .victimExamples) ?? victimExamples
        maxLength = try container.decodeIfPresent(Int.self, forKey: .maxLength) ?? maxLength
        cuts = try container.decodeIfPresent([Int].self, forKey: .cuts) ?? cuts
        noiseMultipliers = try container.decodeIfPresent([Double].self, forKey: .noiseMultipliers) ?? noiseMultipliers
        activationClip = try container.decodeIfPresent(Double.self, forKey: .activationClip) ?? activationClip
        compressions = try container.decodeIfPresent([String].self, forKey: .compressions) ?? compressions
        ridge = try container.decodeIfPresent(Double.self, forKey: .ridge) ?? ridge
        delta = try container.decodeIfPresent(Double.self, forKey: .delta) ?? delta
        seed = try container.decodeIfPresent(UInt64.self, forKey: .seed) ?? seed
    }

    /// - Throws: ``ConfigurationError`` naming the key.
    public func validate() throws {
        func check(_ condition: Bool, _ key: String, _ message: String) throws {
            if !condition { throw ConfigurationError("\(key): \(message)") }
        }
        try check(shadowExamples >= 1, "shadow_examples", "must be at least 1 (got \(shadowExamples))")
        try check(victimExamples >= 1, "victim_examples", "must be at least 1 (got \(victimExamples))")
        try check(maxLength >= 2, "max_length", "must be at least 2 tokens (got \(maxLength))")
        try check(!cuts.isEmpty && cuts.allSatisfy { $0 >= 0 }, "cuts", "needs blocks kept on the client ≥ 0 (got \(cuts))")
        try check(!noiseMultipliers.isEmpty && noiseMultipliers.allSatisfy { $0.isFinite && $0 >= 0 }, "noise_multipliers",
                  "needs finite values ≥ 0 (got \(noiseMultipliers))")
        if let activationClip { try check(activationClip.isFinite && activationClip > 0, "activation_clip", "must be > 0 (got \(activationClip))") }
        try check(ridge.isFinite && ridge > 0, "ridge", "must be > 0 (got \(ridge))")
        try check(delta > 0 && delta < 1, "delta", "must be in (0, 1) (got \(delta))")
        for name in compressions { _ = try ActivationCodec(name) }
    }
}

/// One row of the sweep: what the attacker recovered at one cut, noise level and codec.
public struct InversionResult: Codable, Sendable, Equatable {
    /// Blocks kept on the client (k).
    public var cut: Int
    /// The noise multiplier z (0: none).
    public var noise: Double
    /// The codec name, "none" when uncompressed.
    public var compression: String
    /// Corpus BLEU-4 of the reconstructed texts against the true texts (0–100, sacrebleu-compatible).
    public var bleu4: Double
    /// Mean ROUGE-1 and ROUGE-L F1 (0–100).
    public var rouge1: Double
    public var rougeL: Double
    /// Fraction of the victim's token positions decoded to exactly the true token.
    public var tokenRecovery: Double
    /// The clip norm used (nil without noise).
    public var clip: Double?
    /// ε of one release of the noised activations (Gaussian mechanism, sensitivity = clip, δ from the
    /// configuration); nil without noise. One training step of a text spends at least this much.
    public var epsilonPerStep: Double?
    /// One reconstructed victim text next to the truth, to read.
    public var sample: String
    public var sampleTruth: String

    enum CodingKeys: String, CodingKey {
        case cut, noise, compression, bleu4, rouge1, rougeL = "rouge_l", tokenRecovery = "token_recovery", clip,
             epsilonPerStep = "epsilon_per_step", sample, sampleTruth = "sample_truth"
    }
}

/// A codec applied to activations before they leave the client (compress, then decompress at the server).
public struct ActivationCodec: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        case none
        /// Blockwise absmax quantisation to `bits` (8 or 4), blocks of 64 values.
        case quantize(bits: Int)
        /// Each text's rows replaced by the nearest of `clusters` centroids (Lloyd, 10 iterations).
        case kmeans(clusters: Int)
    }

    public let name: String
    public let kind: Kind

    /// - Throws: ``ConfigurationError`` for an unknown codec name.
    public init(_ name: String) throws {
        self.name = name
        if name == "none" {
            kind = .none
        } else if name == "quantize-8" {
            kind = .quantize(bits: 8)
        } else if name == "quantize-4" {
            kind = .quantize(bits: 4)
        } else if name.hasPrefix("kmeans-"), let clusters = Int(name.dropFirst("kmeans-".count)), clusters >= 1 {
            kind = .kmeans(clusters: clusters)
        } else {
            throw ConfigurationError("compressions: unknown codec '\(name)' (known: none, quantize-8, quantize-4, kmeans-K)")
        }
    }

    /// What the server receives for one text's activation rows (T × C, row-major).
    public func roundTrip(_ rows: [Float], columns: Int, seed: UInt64) -> [Float] {
        switch kind {
        case .none:
            return rows
        case .quantize(let bits):
            return ActivationCodec.quantizeRoundTrip(rows, bits: bits, block: 64)
        case .kmeans(let clusters):
            return ActivationCodec.kmeansRoundTrip(rows, columns: columns, clusters: clusters, seed: seed)
        }
    }

    static func quantizeRoundTrip(_ values: [Float], bits: Int, block: Int) -> [Float] {
        let levels = Float((1 << (bits - 1)) - 1)
        var out = values
        var start = 0
        while start < values.count {
            let end = min(start + block, values.count)
            var absmax: Float = 0
            for index in start..<end { absmax = max(absmax, abs(values[index])) }
            if absmax > 0 {
                let scale = absmax / levels
                for index in start..<end { out[index] = (values[index] / scale).rounded() * scale }
            }
            start = end
        }
        return out
    }

    /// Lloyd's k-means over the rows, initialised with evenly spaced rows (deterministic), 10 iterations.
    static func kmeansRoundTrip(_ values: [Float], columns: Int, clusters: Int, seed: UInt64) -> [Float] {
        let rows = values.count / columns
        let k = min(clusters, rows)
        guard k < rows else { return values }
        var centroids = (0..<k).flatMap { index -> [Float] in
            let row = index * rows / k
            return Array(values[(row * columns)..<((row + 1) * columns)])
        }
        var assignment = [Int](repeating: 0, count: rows)
        for _ in 0..<10 {
            for row in 0..<rows {
                var best = 0, bestDistance = Float.infinity
                for cluster in 0..<k {
                    var distance: Float = 0
                    for column in 0..<columns {
                        let difference = values[row * columns + column] - centroids[cluster * columns + column]
                        distance += difference * difference
                    }
                    if distance < bestDistance { bestDistance = distance; best = cluster }
                }
                assignment[row] = best
            }
            var sums = [Float](repeating: 0, count: k * columns)
            var counts = [Int](repeating: 0, count: k)
            for row in 0..<rows {
                counts[assignment[row]] += 1
                for column in 0..<columns { sums[assignment[row] * columns + column] += values[row * columns + column] }
            }
            for cluster in 0..<k where counts[cluster] > 0 {
                for column in 0..<columns { centroids[cluster * columns + column] = sums[cluster * columns + column] / Float(counts[cluster]) }
            }
        }
        var out = values
        for row in 0..<rows {
            for column in 0..<columns { out[row * columns + column] = centroids[assignment[row] * columns + column] }
        }
        return out
    }
}

/// The inversion attack on smashed activations, and the sweep over cuts, noise levels and codecs.
public enum InversionAttack {
    /// Token ids of texts, each cut to at most `maxLength` tokens.
    public struct Texts: Sendable {
        public var ids: [[Int32]]
    }

    /// What the sweep produced.
    public struct Report: Codable, Sendable {
        public var model: String
        public var task: String
        public var shadowTexts: Int
        public var victimTexts: Int
        public var shadowTokens: Int
        public var victimTokens: Int
        public var results: [InversionResult]
        public var gradientAttack: EmbeddingGradientAttack.Result?
        public var configuration: InversionAttackConfiguration
        public var notes: [String]
        public var seconds: Double

        enum CodingKeys: String, CodingKey {
            case model, task, shadowTexts = "shadow_texts", victimTexts = "victim_texts", shadowTokens = "shadow_tokens",
                 victimTokens = "victim_tokens", results, gradientAttack = "gradient_attack", configuration, notes, seconds
        }
    }

    /// A linear decoder: activation row → a point in the embedding space, decoded to the nearest
    /// embedding row (L2). Fitted by ridge regression on the shadow pairs (activation, embedding of the
    /// true token), so it can name tokens the shadow texts never contained.
    public struct Decoder {
        let columns: Int
        let weights: Tensor        // (C, C)
        let inputMean: [Float]     // C
        let outputMean: [Float]    // C

        /// Fits W = (XᵀX + λI)⁻¹ XᵀY on centred data; λ = `ridge` × the mean diagonal of XᵀX.
        /// - Parameters:
        ///   - activations: (N, C) rows seen by the server.
        ///   - targets: (N, C) embedding rows of the true tokens.
        public static func fit(activations: Tensor, targets: Tensor, ridge: Double) throws -> Decoder {
            let (rows, columns) = (activations.shape[0], activations.shape[1])
            precondition(targets.shape == [rows, columns], "Decoder.fit: targets \(targets.shape) for activations \(activations.shape)")
            let inputMean = columnMeans(activations)
            let outputMean = columnMeans(targets)
            let x = try centred(activations, inputMean)
            let y = try centred(targets, outputMean)
            let gram = try x.matmul(x, transposeA: true).toArray()          // (C, C)
            let cross = try x.matmul(y, transposeA: true).toArray()         // (C, C)
            var a = gram.map(Double.init)
            let trace = (0..<columns).reduce(0.0) { $0 + a[$1 * columns + $1] } / Double(columns)
            for index in 0..<columns { a[index * columns + index] += ridge * max(trace, 1e-12) }
            let solution = try choleskySolve(a, size: columns, rightHandSides: cross.map(Double.init), count: columns)
            return Decoder(columns: columns, weights: try Tensor(shape: [columns, columns], values: solution.map(Float.init)),
                           inputMean: inputMean, outputMean: outputMean)
        }

        /// The nearest embedding row of each decoded activation row: (N) token ids.
        public func decode(_ activations: Tensor, embedding: Tensor, embeddingNorms: [Float]) throws -> [Int32] {
            let predicted = try centred(activations, inputMean).matmul(weights)                 // (N, C)
            let shifted = try Tensor(shape: predicted.shape, values: addRows(predicted.toArray(), outputMean, columns: columns))
            let scores = try shifted.matmul(embedding, transposeB: true)                       // (N, V)
            let vocabulary = embedding.shape[0]
            let values = scores.toArray()
            return (0..<shifted.shape[0]).map { row in
                var best = 0
                var bestScore = -Float.infinity
                let base = row * vocabulary
                for token in 0..<vocabulary {
                    let score = 2 * values[base + token] - embeddingNorms[token]
                    if score > bestScore { bestScore = score; best = token }
                }
                return Int32(best)
            }
        }
    }

    static func columnMeans(_ tensor: Tensor) -> [Float] {
        let (rows, columns) = (tensor.shape[0], tensor.shape[1])
        let values = tensor.toArray()
        var sums = [Double](repeating: 0, count: columns)
        for row in 0..<rows { for column in 0..<columns { sums[column] += Double(values[row * columns + column]) } }
        return sums.map { Float($0 / Double(max(rows, 1))) }
    }

    static func addRows(_ values: [Float], _ row: [Float], columns: Int) -> [Float] {
        var out = values
        for index in 0..<out.count { out[index] += row[index % columns] }
        return out
    }

    static func centred(_ tensor: Tensor, _ mean: [Float]) throws -> Tensor {
        try Tensor(shape: tensor.shape, values: addRows(tensor.toArray(), mean.map { -$0 }, columns: mean.count))
    }

    /// Solves A X = B for symmetric positive definite A (n × n) and `count` right-hand sides (B: n × count,
    /// row-major), by Cholesky in Double.
    static func choleskySolve(_ a: [Double], size n: Int, rightHandSides b: [Double], count: Int) throws -> [Double] {
        var l = [Double](repeating: 0, count: n * n)
        for i in 0..<n {
            for j in 0...i {
                var sum = a[i * n + j]
                for k in 0..<j { sum -= l[i * n + k] * l[j * n + k] }
                if i == j {
                    guard sum > 0 else { throw ProtocolError("inversion decoder: the activations' covariance is not positive definite at column \(i); raise `ridge`") }
                    l[i * n + i] = sum.squareRoot()
                } else {
                    l[i * n + j] = sum / l[j * n + j]
                }
            }
        }
        var x = b
        for column in 0..<count {
            for i in 0..<n {           // L z = b
                var sum = x[i * count + column]
                for k in 0..<i { sum -= l[i * n + k] * x[k * count + column] }
                x[i * count + column] = sum / l[i * n + i]
            }
            for i in stride(from: n - 1, through: 0, by: -1) {   // Lᵀ x = z
                var sum = x[i * count + column]
                for k in (i + 1)..<n { sum -= l[k * n + i] * x[k * count + column] }
                x[i * count + column] = sum / l[i * n + i]
            }
        }
        return x
    }

    /// Each text's activation after the embedding and blocks 0 ..< `cut`: (T, C) rows, flattened.
    public static func activations(of texts: Texts, model: any LanguageModel, cut: Int) throws -> [[Float]] {
        try Tensor.withoutGradients {
            try texts.ids.map { ids in
                let context = try model.makeContext(batch: 1, time: ids.count, positionOffset: 0, paddingMask: nil, cache: nil)
                var hidden = try model.embed(ids: ids, batch: 1, time: ids.count, positionOffset: 0)
                for block in 0..<cut { hidden = try model.block(block, hidden: hidden, context: context) }
                return hidden.toArray()
            }
        }
    }

    /// The Gaussian mechanism on one text's activation: clip to L2 norm `clip`, add N(0, (z·clip)²).
    public static func noised(_ rows: [Float], multiplier: Double, clip: Double, key: RandomKey) -> [Float] {
        guard multiplier > 0 else { return rows }
        let norm = rows.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
        let factor = norm > clip ? Float(clip / norm) : 1
        let noise = Tensor.randomNormal([rows.count], standardDeviation: Float(multiplier * clip), key: key).toArray()
        return zip(rows, noise).map { $0 * factor + $1 }
    }

    /// ε of one Gaussian mechanism with noise multiplier z (σ = z × sensitivity), by the analytic
    /// formula of Balle & Wang (2018): the smallest ε with Φ(Δ/2σ − εσ/Δ) − e^ε Φ(−Δ/2σ − εσ/Δ) ≤ δ.
    public static func gaussianEpsilon(noiseMultiplier z: Double, delta: Double) -> Double {
        // log Φ(x), accurate far into the lower tail (asymptotic series below −8).
        func logPhi(_ x: Double) -> Double {
            if x > -8 { return log(0.5 * erfc(-x / 2.squareRoot())) }
            let inverse = 1 / (x * x)
            let series = 1 - inverse + 3 * inverse * inverse - 15 * inverse * inverse * inverse
            return -x * x / 2 - log(-x) - 0.5 * log(2 * Double.pi) + log(series)
        }
        // log δ(ε) = log[Φ(a − b) − e^ε Φ(−a − b)], a = 1/(2z), b = εz (sensitivity 1, σ = z).
        func logDelta(_ epsilon: Double) -> Double {
            let a = 1 / (2 * z), b = epsilon * z
            let first = logPhi(a - b), second = epsilon + logPhi(-a - b)
            let ratio = exp(min(second - first, 0))
            return ratio >= 1 ? -.infinity : first + log1p(-ratio)
        }
        let target = log(delta)
        var low = 0.0, high = 1.0
        while logDelta(high) > target {
            high *= 2
            if high > 1e12 { return .infinity }
        }
        for _ in 0..<200 {
            let middle = (low + high) / 2
            if logDelta(middle) > target { low = middle } else { high = middle }
        }
        return high
    }

    /// Runs the sweep: for every cut, codec and noise level, fits the decoder on the shadow texts'
    /// activations (as the server receives them) and decodes the victim's.
    public static func run(_ configuration: InversionAttackConfiguration, modelStore: ModelStore = ModelStore(),
                           dataStore: DataStore = DataStore(), log: (String) -> Void = { _ in }) throws -> Report {
        try configuration.validate()
        let started = DispatchTime.now().uptimeNanoseconds
        let task = try TaskName(rawValue: configuration.task).unwrap(or: ConfigurationError("task: unknown task '\(configuration.task)'"))
        log("loading \(configuration.model)")
        let modelURL = try modelStore.resolve(configuration.model)
        let tokenizer = modelURL.pathExtension.lowercased() == "gguf"
            ? try Tokenizer(ggufFile: GGUFFile(contentsOf: modelURL)) : try Tokenizer(directory: modelURL)
        let maxCut = configuration.cuts.max() ?? 0
        let model = try Checkpoint.load(modelURL, stages: Set<ModelStage>([.embedding] + (0..<maxCut).map { ModelStage.block($0) }))
        guard maxCut <= model.layerCount else {
            throw ConfigurationError("cuts: \(maxCut) blocks on the client, the model has \(model.layerCount)")
        }
        log("preparing \(task) texts")
        let data = try dataStore.load(task)
        let key = RandomKey(seed: configuration.seed)
        func texts(_ examples: [Example], count: Int, key: RandomKey) -> Texts {
            let order = seededPermutation(count: examples.count, key: key)
            var ids: [[Int32]] = []
            for index in order where ids.count < count {
                let text = examples[index].passage.isEmpty ? examples[index].question : examples[index].passage
                let tokens = tokenizer.encode(text, addSpecialTokens: false).prefix(configuration.maxLength).map(Int32.init)
                if tokens.count >= 2 { ids.append(Array(tokens)) }
            }
            return Texts(ids: ids)
        }
        let shadow = texts(data.train, count: configuration.shadowExamples, key: key.split("shadow"))
        let victim = texts(data.evaluation, count: configuration.victimExamples, key: key.split("victim"))
        let embedding = try model.parameters(of: .embedding)[0].tensor
        let results = try sweep(configuration, model: model, embedding: embedding, shadow: shadow, victim: victim,
                                decode: { tokenizer.decode($0.map(Int.init)) }, log: log)

        var notes = [
            "decoder: ridge regression from each activation row to the embedding of its token, then the nearest embedding row (L2); fitted on the shadow texts' activations as the server receives them (noised/compressed like the victim's)",
            "activations come from the pretrained client blocks with freshly initialised adapters (LoRA B = 0), i.e. what the server sees in the first steps of training",
        ]
        var gradient: EmbeddingGradientAttack.Result?
        if configuration.cuts.contains(0) {
            log("embedding-gradient attack (k = 0)")
            gradient = try EmbeddingGradientAttack.run(modelURL: modelURL, texts: Texts(ids: Array(victim.ids.prefix(4))))
            notes.append("gradient attack: the rows of the embedding's gradient that are non-zero are exactly the batch's tokens; it applies whenever the embedding's gradient leaves the client (k = 0 with the embedding trained and aggregated)")
        }
        return Report(model: configuration.model, task: configuration.task, shadowTexts: shadow.ids.count, victimTexts: victim.ids.count,
                      shadowTokens: shadow.ids.reduce(0) { $0 + $1.count }, victimTokens: victim.ids.reduce(0) { $0 + $1.count },
                      results: results, gradientAttack: gradient, configuration: configuration, notes: notes,
                      seconds: Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9)
    }

    /// The sweep on given texts (also what the tests run on a tiny model).
    public static func sweep(_ configuration: InversionAttackConfiguration, model: any LanguageModel, embedding: Tensor,
                             shadow: Texts, victim: Texts, decode: ([Int32]) -> String,
                             log: (String) -> Void = { _ in }) throws -> [InversionResult] {
        let columns = model.hiddenSize
        let embeddingValues = embedding.toArray()
        let vocabulary = embedding.shape[0]
        let embeddingNorms = (0..<vocabulary).map { token in
            (0..<columns).reduce(Float(0)) { $0 + embeddingValues[token * columns + $1] * embeddingValues[token * columns + $1] }
        }
        let shadowTokens = shadow.ids.flatMap { $0 }
        let victimTokens = victim.ids.flatMap { $0 }
        let targets = try Tensor.embedding(weight: embedding, ids: shadowTokens, shape: [1, shadowTokens.count])
            .reshaped([shadowTokens.count, columns])
        let truths = victim.ids.map(decode)
        let key = RandomKey(seed: configuration.seed)
        var results: [InversionResult] = []
        for cut in configuration.cuts.sorted() {
            log("cut k = \(cut): activations of \(shadow.ids.count) shadow and \(victim.ids.count) victim texts")
            let cleanShadow = try activations(of: shadow, model: model, cut: cut)
            let cleanVictim = try activations(of: victim, model: model, cut: cut)
            let norms = cleanShadow.map { rows in rows.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot() }.sorted()
            let clip = configuration.activationClip ?? norms[norms.count / 2]
            for codecName in configuration.compressions {
                let codec = try ActivationCodec(codecName)
                for multiplier in configuration.noiseMultipliers {
                    let cellKey = key.split("cut\(cut)-\(codecName)-\(multiplier)")
                    func received(_ texts: [[Float]], _ label: String) -> [Float] {
                        texts.enumerated().flatMap { index, rows in
                            codec.roundTrip(noised(rows, multiplier: multiplier, clip: clip, key: cellKey.split("\(label)\(index)")),
                                            columns: columns, seed: configuration.seed)
                        }
                    }
                    let shadowSeen = try Tensor(shape: [shadowTokens.count, columns], values: received(cleanShadow, "s"))
                    let victimSeen = try Tensor(shape: [victimTokens.count, columns], values: received(cleanVictim, "v"))
                    let decoder = try Decoder.fit(activations: shadowSeen, targets: targets, ridge: configuration.ridge)
                    let recovered = try decoder.decode(victimSeen, embedding: embedding, embeddingNorms: embeddingNorms)
                    let matches = zip(recovered, victimTokens).reduce(0) { $0 + ($1.0 == $1.1 ? 1 : 0) }
                    var offset = 0
                    let predictions = victim.ids.map { ids -> String in
                        defer { offset += ids.count }
                        return decode(Array(recovered[offset..<(offset + ids.count)]))
                    }
                    let rouge = Metrics.rouge(predictions: predictions, references: truths)
                    let row = InversionResult(
                        cut: cut, noise: multiplier, compression: codecName,
                        bleu4: Metrics.bleu(predictions: predictions, references: truths),
                        rouge1: 100 * (rouge["rouge1"] ?? 0), rougeL: 100 * (rouge["rougeL"] ?? 0),
                        tokenRecovery: Double(matches) / Double(max(victimTokens.count, 1)),
                        clip: multiplier > 0 ? clip : nil,
                        epsilonPerStep: multiplier > 0 ? gaussianEpsilon(noiseMultiplier: multiplier, delta: configuration.delta) : nil,
                        sample: String(predictions[0].prefix(160)), sampleTruth: String(truths[0].prefix(160)))
                    log(String(format: "k = %d, z = %g, %@: BLEU-4 %.1f, ROUGE-1 %.1f, tokens recovered %.1f%%",
                               cut, multiplier, codecName, row.bleu4, row.rouge1, 100 * row.tokenRecovery))
                    results.append(row)
                }
            }
        }
        return results
    }
}

/// The gradient attack on the embedding (k = 0): when the gradient of the embedding table leaves the
/// client, its non-zero rows are exactly the tokens of the batch.
public enum EmbeddingGradientAttack {
    public struct Result: Codable, Sendable, Equatable {
        /// Distinct tokens at the batch's positions that enter the loss (all but each text's last).
        public var batchTokens: Int
        /// Rows of the embedding gradient that are non-zero.
        public var nonZeroRows: Int
        /// |recovered ∩ true| / |recovered| and / |true|.
        public var precision: Double
        public var recall: Double

        enum CodingKeys: String, CodingKey {
            case batchTokens = "batch_tokens", nonZeroRows = "non_zero_rows", precision, recall
        }
    }

    /// Trains one step of the whole model on `texts` (next-token loss) with the embedding table as a
    /// trainable leaf, and reads the token set off its gradient.
    public static func run(modelURL: URL, texts: InversionAttack.Texts) throws -> Result {
        let model = try Checkpoint.load(modelURL)
        return try run(model: model, texts: texts)
    }

    public static func run(model: any LanguageModel, texts: InversionAttack.Texts) throws -> Result {
        let table = try model.parameters(of: .embedding)[0].tensor
        let time = texts.ids.map(\.count).max() ?? 0
        let batch = texts.ids.count
        var ids: [Int32] = [], labels: [Int32] = []
        for row in texts.ids {
            ids += row + Array(repeating: row.last ?? 0, count: time - row.count)
            labels += Array(row.dropFirst()) + Array(repeating: -100, count: time - row.count + 1)
        }
        // The server's side of a k = 0 split: every block and (here, for the loss) the head, on the
        // embedding output h_0; dL/dh_0 is what the server sends back to the client.
        let context = try model.makeContext(batch: batch, time: time, positionOffset: 0, paddingMask: nil, cache: nil)
        let embedded = try model.embed(ids: ids, batch: batch, time: time, positionOffset: 0).detached().requiringGrad()
        var hidden = embedded
        for block in 0..<model.layerCount { hidden = try model.block(block, hidden: hidden, context: context) }
        let logits = try model.head(hidden)
        var positions: [Int32] = [], targets: [Int32] = []
        for (index, label) in labels.enumerated() where label != -100 { positions.append(Int32(index)); targets.append(label) }
        let rows = try logits.reshaped([batch * time, logits.shape[2]])
        let selected = try Tensor.embedding(weight: rows, ids: positions, shape: [1, positions.count])
            .reshaped([positions.count, logits.shape[2]])
        try Tensor.crossEntropy(logits: selected, targets: targets).backward()
        guard let upstream = embedded.grad else { throw ProtocolError("gradient attack: no gradient reached the embedding output") }
        // The client's lookup back-propagates dL/dh_0 into the table: the gradient that would leave the
        // client if the embedding were trained and aggregated.
        let tableLeaf = table.detached().requiringGrad()
        try Tensor.embedding(weight: tableLeaf, ids: ids, shape: [batch, time]).backward(seed: upstream)
        guard let gradient = tableLeaf.grad else { throw ProtocolError("gradient attack: the embedding table received no gradient") }
        let columns = table.shape[1]
        let values = gradient.toArray()
        var recovered = Set<Int32>()
        for token in 0..<table.shape[0] {
            let base = token * columns
            if (0..<columns).contains(where: { values[base + $0] != 0 }) { recovered.insert(Int32(token)) }
        }
        // The tokens the loss depends on: every position that predicts a next token (a text's last token
        // predicts nothing, so under causal attention no gradient reaches it).
        let truth = Set(zip(ids, labels).filter { $0.1 != -100 }.map(\.0))
        let hits = recovered.intersection(truth).count
        return Result(batchTokens: truth.count, nonZeroRows: recovered.count,
                      precision: recovered.isEmpty ? 0 : Double(hits) / Double(recovered.count),
                      recall: Double(hits) / Double(max(truth.count, 1)))
    }
}
