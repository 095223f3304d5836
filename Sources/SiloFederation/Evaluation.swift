import Foundation
import SiloData
import SiloModels
import SiloTensor

// B rows, T time, N scored positions, V vocabulary.

/// Something that scores token ids: log-probabilities (N, V) at flat positions (indices into B·T) of
/// right-padded rows. The centralized model and a split model (client parts + server part) both are.
public protocol LogProbabilityModel {
    func logProbabilities(ids: [Int32], batch: Int, time: Int, at positions: [Int32]) throws -> Tensor
    /// log-softmax (V) of the token after `ids` (batch 1), which continue the sequence of `cache` at
    /// position `offset` (its keys and values are appended); nil when this model cannot decode with a
    /// KV cache (p-tuning prefixes are not cached), and ``Evaluator/greedy(_:model:maxNewTokens:stop:)``
    /// recomputes the whole sequence instead.
    func nextLogProbabilities(ids: [Int32], cache: KVCache, offset: Int) throws -> Tensor?
    /// A KV cache for `capacity` tokens, or nil (no cached decoding).
    func makeCache(capacity: Int) -> KVCache?
}

extension LogProbabilityModel {
    public func nextLogProbabilities(ids: [Int32], cache: KVCache, offset: Int) throws -> Tensor? { nil }
    public func makeCache(capacity: Int) -> KVCache? { nil }
}

/// `inner` without its KV cache: ``Evaluator/greedy(_:model:maxNewTokens:stop:)`` recomputes the whole
/// sequence for every token (the reference the cached decoding is checked and timed against).
public struct RecomputingScorer: LogProbabilityModel {
    public let inner: any LogProbabilityModel

    public init(_ inner: any LogProbabilityModel) { self.inner = inner }

    public func logProbabilities(ids: [Int32], batch: Int, time: Int, at positions: [Int32]) throws -> Tensor {
        try inner.logProbabilities(ids: ids, batch: batch, time: time, at: positions)
    }
}

/// The whole model in one process.
public struct CentralizedScorer: LogProbabilityModel {
    public let part: ModelPart

    public init(part: ModelPart) { self.part = part }

    public func logProbabilities(ids: [Int32], batch: Int, time: Int, at positions: [Int32]) throws -> Tensor {
        try Tensor.withoutGradients {
            part.setTraining(false)
            defer { part.setTraining(true) }
            let hidden = try part.embedAndRun(ids: ids, batch: batch, time: time, blocks: 0..<0)
            return try part.logProbabilities(hidden: hidden, at: positions, blocks: 0..<part.model.layerCount)
        }
    }

    public func makeCache(capacity: Int) -> KVCache? {
        part.decodesWithCache ? part.model.makeCache(batch: 1, capacity: capacity) : nil
    }

    public func nextLogProbabilities(ids: [Int32], cache: KVCache, offset: Int) throws -> Tensor? {
        guard part.decodesWithCache else { return nil }
        return try Tensor.withoutGradients {
            part.setTraining(false)
            defer { part.setTraining(true) }
            let hidden = try part.embed(ids: ids, offset: offset)
            return try part.nextLogProbabilities(part.run(hidden, blocks: 0..<part.model.layerCount, cache: cache, offset: offset))
        }
    }
}

/// A split model: a client's input part, the server's blocks, the client's output part — the model
/// the federation trained, evaluated the way it runs.
public struct SplitScorer: LogProbabilityModel {
    public let plan: SplitPlan
    public let client: ModelPart
    public let server: ModelPart

    public init(plan: SplitPlan, client: ModelPart, server: ModelPart) {
        self.plan = plan
        self.client = client
        self.server = server
    }

    public func logProbabilities(ids: [Int32], batch: Int, time: Int, at positions: [Int32]) throws -> Tensor {
        try Tensor.withoutGradients {
            client.setTraining(false)
            server.setTraining(false)
            defer { client.setTraining(true); server.setTraining(true) }
            let input = try client.embedAndRun(ids: ids, batch: batch, time: time, blocks: plan.inputBlockRange)
            let middle = try server.run(input, blocks: plan.serverBlockRange)
            return try client.logProbabilities(hidden: middle, at: positions, blocks: plan.outputBlockRange)
        }
    }

    /// One cache for all L blocks: each party's blocks append to their own layers of it.
    public func makeCache(capacity: Int) -> KVCache? {
        client.decodesWithCache && server.decodesWithCache ? client.model.makeCache(batch: 1, capacity: capacity) : nil
    }

    public func nextLogProbabilities(ids: [Int32], cache: KVCache, offset: Int) throws -> Tensor? {
        guard client.decodesWithCache, server.decodesWithCache else { return nil }
        return try Tensor.withoutGradients {
            client.setTraining(false)
            server.setTraining(false)
            defer { client.setTraining(true); server.setTraining(true) }
            let input = try client.run(client.embed(ids: ids, offset: offset), blocks: plan.inputBlockRange, cache: cache, offset: offset)
            let middle = try server.run(input, blocks: plan.serverBlockRange, cache: cache, offset: offset)
            return try client.nextLogProbabilities(client.run(middle, blocks: plan.outputBlockRange, cache: cache, offset: offset))
        }
    }
}

/// Scores held-out examples: classification by comparing the summed log-probabilities of each choice's
/// tokens after the prompt (lm-evaluation-harness style), generation by greedy decoding and the task's
/// text metrics.
public enum Evaluator {
    /// Accuracy (0-1) over `encodings`, and the chosen index per example.
    public static func classification(_ encodings: [ChoiceEncoding], model: any LogProbabilityModel,
                                      batchSize: Int) throws -> (accuracy: Double, predictions: [Int]) {
        var predictions: [Int] = []
        var start = 0
        while start < encodings.count {
            let chunk = Array(encodings[start..<min(start + batchSize, encodings.count)])
            start += chunk.count
            // One row per (example, choice): prompt + continuation; scored positions predict the continuation.
            var rows: [[Int32]] = []
            var scored: [[Int]] = []  // per row: positions within the row
            var targets: [[Int32]] = []
            let singleToken = chunk.allSatisfy { $0.continuations.allSatisfy { $0.count == 1 } }
            for encoding in chunk {
                if singleToken {
                    rows.append(encoding.promptIDs)
                    scored.append([encoding.promptIDs.count - 1])
                    targets.append(encoding.continuations.map { $0[0] })
                } else {
                    for continuation in encoding.continuations {
                        rows.append(encoding.promptIDs + continuation)
                        scored.append(Array((encoding.promptIDs.count - 1)..<(encoding.promptIDs.count + continuation.count - 1)))
                        targets.append(continuation)
                    }
                }
            }
            let time = rows.map(\.count).max() ?? 1
            var ids: [Int32] = []
            var positions: [Int32] = []
            for (index, row) in rows.enumerated() {
                ids += row + Array(repeating: 0, count: time - row.count)
                positions += scored[index].map { Int32(index * time + $0) }
            }
            let logProbabilities = try model.logProbabilities(ids: ids, batch: rows.count, time: time, at: positions)
            let vocabulary = logProbabilities.shape[1]
            let values = logProbabilities.toArray()
            var cursor = 0
            var rowIndex = 0
            for encoding in chunk {
                var scores: [Double] = []
                if singleToken {
                    let base = cursor * vocabulary
                    scores = targets[rowIndex].map { Double(values[base + Int($0)]) }
                    cursor += 1
                    rowIndex += 1
                } else {
                    for _ in encoding.continuations {
                        var sum = 0.0
                        for token in targets[rowIndex] {
                            sum += Double(values[cursor * vocabulary + Int(token)])
                            cursor += 1
                        }
                        scores.append(sum)
                        rowIndex += 1
                    }
                }
                let best = scores.indices.max { scores[$0] < scores[$1] } ?? 0
                predictions.append(best)
            }
        }
        let correct = zip(predictions, encodings).filter { $0 == $1.correctIndex }.count
        return (encodings.isEmpty ? .nan : Double(correct) / Double(encodings.count), predictions)
    }

    /// Greedy continuations of `prompts` (at most `maxNewTokens`, stopping at `stop` ids; the stop id is
    /// not part of the output). With a KV cache (``LogProbabilityModel/makeCache(capacity:)``) the prompt
    /// runs once and each new token alone, across the split too; otherwise the whole sequence is
    /// recomputed for every token. Both pick the first largest log-probability.
    public static func greedy(_ prompts: [[Int32]], model: any LogProbabilityModel, maxNewTokens: Int,
                              stop: Set<Int32>) throws -> [[Int32]] {
        var outputs: [[Int32]] = []
        for prompt in prompts {
            let cache = maxNewTokens > 0 && !prompt.isEmpty ? model.makeCache(capacity: prompt.count + maxNewTokens) : nil
            var sequence = prompt
            var cached = 0  // tokens of `sequence` already in the cache
            var generated: [Int32] = []
            while generated.count < maxNewTokens {
                let row: [Float]
                if let cache {
                    guard let next = try model.nextLogProbabilities(ids: Array(sequence[cached...]), cache: cache, offset: cached) else {
                        throw ProtocolError("greedy decoding: the model made a KV cache but cannot decode with it")
                    }
                    cached = sequence.count
                    row = next.toArray()
                } else {
                    row = try model.logProbabilities(ids: sequence, batch: 1, time: sequence.count, at: [Int32(sequence.count - 1)]).toArray()
                }
                let next = argmax(row)
                if stop.contains(next) { break }
                generated.append(next)
                sequence.append(next)
            }
            outputs.append(generated)
        }
        return outputs
    }

    /// The index of the first largest value.
    static func argmax(_ row: [Float]) -> Int32 {
        Int32(row.indices.max { row[$0] < row[$1] } ?? 0)
    }
}
