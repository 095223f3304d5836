#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import SiloTensor

// V vocabulary, K candidates kept after top-k / top-p.

/// How the next token is chosen from the logits, as Hugging Face `generate` does: temperature, then
/// top-k, then top-p (nucleus), then a draw from the softmax of what is left. Temperature 0 is greedy.
public struct Sampling: Sendable, Equatable, Codable {
    /// Logits are divided by it; 0 picks the most likely token (greedy).
    public var temperature: Float
    /// Keep only the k most likely tokens (ties with the k-th kept, as transformers); nil or 0: off.
    public var topK: Int?
    /// Keep the most likely tokens whose probabilities sum to at least p; nil or 1: off.
    public var topP: Float?

    public init(temperature: Float, topK: Int? = nil, topP: Float? = nil) {
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
    }

    /// Always the most likely token (the first on ties, as `argmax`).
    public static let greedy = Sampling(temperature: 0)

    public var isGreedy: Bool { temperature == 0 }

    enum CodingKeys: String, CodingKey {
        case temperature
        case topK = "top_k"
        case topP = "top_p"
    }

    /// - Throws: ``ModelError`` `.invalidConfiguration` for a negative or non-finite temperature, a
    ///   negative top-k or a top-p outside (0, 1].
    public func validate() throws {
        guard temperature >= 0, temperature.isFinite else {
            throw ModelError(.invalidConfiguration, "sampling: temperature \(temperature) must be finite and ≥ 0 (0 is greedy)")
        }
        if let topK, topK < 0 {
            throw ModelError(.invalidConfiguration, "sampling: top-k \(topK) must be ≥ 0 (0 turns it off)")
        }
        if let topP, !(topP > 0 && topP <= 1) {
            throw ModelError(.invalidConfiguration, "sampling: top-p \(topP) must be in (0, 1] (1 turns it off)")
        }
    }
}

/// Picks tokens from logits with a ``Sampling`` rule and a seeded stream of random numbers: the same
/// key and logits give the same tokens.
public struct TokenSampler {
    public let sampling: Sampling
    private var generator: SeededGenerator
    private var candidates: [Int32] = []
    private var weights: [Float] = []

    public init(sampling: Sampling, key: RandomKey) {
        self.sampling = sampling
        self.generator = SeededGenerator(key: key)
    }

    /// The next token for logits (V).
    public mutating func next(logits: UnsafeBufferPointer<Float>) -> Int32 {
        precondition(!logits.isEmpty, "TokenSampler: empty logits")
        if sampling.isGreedy { return TokenSampler.argmax(logits) }
        let inverseTemperature = 1 / sampling.temperature
        // Candidates: every token, or those at least as likely as the k-th (transformers' TopKLogitsWarper).
        candidates.removeAll(keepingCapacity: true)
        if let k = sampling.topK, k > 0, k < logits.count {
            let threshold = TokenSampler.kthLargest(logits, k)
            for index in logits.indices where logits[index] >= threshold { candidates.append(Int32(index)) }
        } else {
            candidates.append(contentsOf: (0..<logits.count).map { Int32($0) })
        }
        // Softmax of logits / temperature over the candidates.
        var largest = -Float.infinity
        for id in candidates { largest = max(largest, logits[Int(id)]) }
        weights.removeAll(keepingCapacity: true)
        var total: Float = 0
        for id in candidates {
            let weight = expf((logits[Int(id)] - largest) * inverseTemperature)
            weights.append(weight)
            total += weight
        }
        // Top-p (TopPLogitsWarper): in order of decreasing probability, keep a token while the
        // probability of the tokens before it is below p (so the first is always kept).
        if let p = sampling.topP, p < 1 {
            // Sorting all V candidates per token is slow; the nucleus lies among the likely ones whenever
            // they alone hold mass p (they come first in the order), so sort those if they do.
            var positions = Array(candidates.indices)
            let floor: Float = 1e-6  // weights are relative to the largest (which is 1)
            var likelyMass: Float = 0
            let likely = positions.filter { weights[$0] >= floor }
            for position in likely { likelyMass += weights[position] }
            if likelyMass / total >= p { positions = likely }
            let order = positions.sorted { weights[$0] > weights[$1] || (weights[$0] == weights[$1] && candidates[$0] < candidates[$1]) }
            var kept: [Int32] = []
            var keptWeights: [Float] = []
            var before: Float = 0
            for position in order {
                if before / total >= p { break }
                kept.append(candidates[position])
                keptWeights.append(weights[position])
                before += weights[position]
            }
            candidates = kept
            weights = keptWeights
            total = before
        }
        // Draw.
        let target = generator.uniform() * total
        var running: Float = 0
        for (position, weight) in weights.enumerated() {
            running += weight
            if target < running { return candidates[position] }
        }
        return candidates[weights.lastIndex { $0 > 0 } ?? 0]
    }

    /// The index of the largest value (the first one on ties).
    public static func argmax(_ values: UnsafeBufferPointer<Float>) -> Int32 {
        var best = 0
        var bestValue = values[0]
        for index in 1..<values.count where values[index] > bestValue {
            best = index
            bestValue = values[index]
        }
        return Int32(best)
    }

    /// The k-th largest value (1-based) of `values`, k < count.
    static func kthLargest(_ values: UnsafeBufferPointer<Float>, _ k: Int) -> Float {
        // A min-heap of the k largest seen so far: O(V log k).
        var heap = [Float]()
        heap.reserveCapacity(k)
        for value in values {
            if heap.count < k {
                heap.append(value)
                var child = heap.count - 1
                while child > 0 {
                    let parent = (child - 1) / 2
                    if heap[parent] <= heap[child] { break }
                    heap.swapAt(parent, child)
                    child = parent
                }
            } else if value > heap[0] {
                heap[0] = value
                var parent = 0
                while true {
                    let left = 2 * parent + 1, right = left + 1
                    var smallest = parent
                    if left < k && heap[left] < heap[smallest] { smallest = left }
                    if right < k && heap[right] < heap[smallest] { smallest = right }
                    if smallest == parent { break }
                    heap.swapAt(parent, smallest)
                    parent = smallest
                }
            }
        }
        return heap[0]
    }
}

/// Why generation stopped.
public enum FinishReason: Sendable, Equatable, CustomStringConvertible {
    /// `maxNewTokens` were generated.
    case length
    /// A stop token (end of sequence) was generated; it is the last of the tokens.
    case stopToken(Int32)
    /// The decoded text of the new tokens contains this stop string.
    case stopString(String)
    /// The `onToken` callback asked to stop.
    case cancelled

    public var description: String {
        switch self {
        case .length: return "length"
        case .stopToken(let id): return "stop token \(id)"
        case .stopString(let text): return "stop string \(text.debugDescription)"
        case .cancelled: return "cancelled"
        }
    }
}

/// The outcome of ``LanguageModel/generate(prompt:maxNewTokens:sampling:stopTokenIds:stopStrings:decode:key:onToken:)``.
public struct GenerationResult: Sendable, Equatable {
    /// The new tokens (a stop token included, as transformers).
    public var tokens: [Int32]
    public var finishReason: FinishReason
    /// The decoded new tokens, when a decoder was given.
    public var text: String?
    /// Seconds spent on the prompt (prefill, up to the first new token).
    public var promptSeconds: Double
    /// Seconds spent on the remaining new tokens.
    public var decodeSeconds: Double

    /// New tokens per second after the first (the decode rate), or 0 if there was one token.
    public var tokensPerSecond: Double {
        tokens.count > 1 && decodeSeconds > 0 ? Double(tokens.count - 1) / decodeSeconds : 0
    }
}

extension LanguageModel {
    /// Generates up to `maxNewTokens` tokens after `prompt` (batch 1): the prompt runs through the model
    /// once (prefill), then each new token alone, reusing the keys and values of the ``KVCache``; only the
    /// last position goes through the head. Runs without recording gradients.
    ///
    /// - Parameters:
    ///   - prompt: token ids (at least one).
    ///   - sampling: greedy (default) or temperature / top-k / top-p.
    ///   - stopTokenIds: stop after generating one of these (default: the configuration's EOS ids).
    ///   - stopStrings: stop once the decoded new text contains one of them (needs `decode`).
    ///   - decode: token ids → text (the tokenizer's decoder), for stop strings and ``GenerationResult/text``.
    ///   - key: the random stream of sampling (unused when greedy).
    ///   - onToken: called with each new token; return false to stop.
    /// - Throws: ``ModelError`` for an empty prompt, bad sampling parameters, stop strings without a
    ///   decoder, or a sequence longer than ``maximumPositions``; ``TensorError`` for ids outside the
    ///   vocabulary.
    public func generate(prompt: [Int32], maxNewTokens: Int, sampling: Sampling = .greedy,
                         stopTokenIds: Set<Int32>? = nil, stopStrings: [String] = [],
                         decode: (([Int32]) -> String)? = nil, key: RandomKey = RandomKey(seed: 0),
                         onToken: ((Int32) -> Bool)? = nil) throws -> GenerationResult {
        guard !prompt.isEmpty else {
            throw ModelError(.invalidConfiguration, "generate: the prompt is empty (it needs at least one token, e.g. BOS)")
        }
        guard maxNewTokens >= 0 else {
            throw ModelError(.invalidConfiguration, "generate: maxNewTokens \(maxNewTokens) is negative")
        }
        try sampling.validate()
        guard stopStrings.isEmpty || decode != nil else {
            throw ModelError(.invalidConfiguration, "generate: stop strings \(stopStrings) need a decode closure (the tokenizer's decoder)")
        }
        if let limit = maximumPositions, prompt.count + maxNewTokens > limit {
            throw ModelError(.invalidConfiguration, "generate: \(prompt.count) prompt tokens + \(maxNewTokens) new tokens exceed the model's \(limit) positions")
        }
        let stops = stopTokenIds ?? Set(endOfSequenceTokenIds)
        var result = GenerationResult(tokens: [], finishReason: .length, text: nil, promptSeconds: 0, decodeSeconds: 0)
        guard maxNewTokens > 0 else {
            result.text = decode?([])
            return result
        }
        let clock = ContinuousClock()
        let start = clock.now
        var firstTokenTime = start
        let cache = makeCache(batch: 1, capacity: prompt.count + maxNewTokens)
        var sampler = TokenSampler(sampling: sampling, key: key)
        try Tensor.withoutGradients {
            var logits = try lastLogits(ids: prompt, cache: cache)
            while true {
                let token = logits.withUnsafeBufferPointer { sampler.next(logits: $0) }
                result.tokens.append(token)
                if result.tokens.count == 1 { firstTokenTime = clock.now }
                if stops.contains(token) { result.finishReason = .stopToken(token); break }
                if let decode, !stopStrings.isEmpty {
                    let text = decode(result.tokens)
                    if let hit = stopStrings.first(where: { text.contains($0) }) {
                        result.finishReason = .stopString(hit)
                        break
                    }
                }
                if let onToken, !onToken(token) { result.finishReason = .cancelled; break }
                if result.tokens.count >= maxNewTokens { result.finishReason = .length; break }
                logits = try lastLogits(ids: [token], cache: cache)
            }
        }
        let end = clock.now
        result.promptSeconds = Self.seconds(firstTokenTime - start)
        result.decodeSeconds = Self.seconds(end - firstTokenTime)
        result.text = decode?(result.tokens)
        return result
    }

    /// logits (V) of the last of `ids` (batch 1), continuing the cached sequence.
    private func lastLogits(ids: [Int32], cache: KVCache) throws -> Tensor {
        let hidden = try hiddenStates(ids: ids, batch: 1, time: ids.count, cache: cache)
        let last = ids.count == 1 ? hidden : try hidden.sliced(axis: 1, range: (ids.count - 1)..<ids.count)
        return try head(last).reshaped([vocabularySize])
    }

    private static func seconds(_ duration: Duration) -> Double {
        let parts = duration.components
        return Double(parts.seconds) + Double(parts.attoseconds) * 1e-18
    }
}
