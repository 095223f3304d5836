import XCTest
import SiloModels
import SiloSplitTestSupport
import SiloTensor
@testable import SiloFederation

/// Greedy decoding for the generation metrics with a KV cache (the prompt once, then each new token
/// alone) gives exactly the tokens of recomputing the whole sequence per token, for the whole model
/// and across the split (client input blocks, server blocks, client output blocks) with LoRA on.
final class GreedyDecodingTests: XCTestCase {
    static let prompts: [[Int32]] = {
        var generator = SeededGenerator(seed: 17)
        return [1, 5, 9, 14].map { length in (0..<length).map { _ in Int32.random(in: 1..<40, using: &generator) } }
    }()

    /// A part with random (non-zero) LoRA values drawn by name, so the adapters change the tokens and
    /// every party's copy of a layer's adapter is the same.
    func part(_ stages: Set<ModelStage>?, adapters: AdapterSpecification = TinyLlama.adapters) throws -> ModelPart {
        let part = try ModelPart(model: try TinyLlama.model(stages: stages), adapters: adapters, key: RandomKey(seed: 5))
        XCTAssertEqual(part.trainableNames.count, part.trainableTensors.count)
        let values = zip(part.trainableNames, part.trainableTensors).flatMap { name, tensor in
            Tensor.randomNormal(tensor.shape, standardDeviation: 0.3, key: RandomKey(seed: 23).split(name)).toArray()
        }
        try part.assign(flattenedValues: Tensor(shape: [values.count], values: values))
        return part
    }

    func assertCachedEqualsRecomputed(_ model: any LogProbabilityModel, line: UInt = #line) throws {
        XCTAssertNotNil(model.makeCache(capacity: 8), line: line)
        for stop in [Set<Int32>(), [7, 21]] {
            let cached = try Evaluator.greedy(Self.prompts, model: model, maxNewTokens: 12, stop: stop)
            let recomputed = try Evaluator.greedy(Self.prompts, model: RecomputingScorer(model), maxNewTokens: 12, stop: stop)
            XCTAssertEqual(cached, recomputed, "stop \(stop)", line: line)
            XCTAssertTrue(cached.allSatisfy { $0.allSatisfy { !stop.contains($0) } }, line: line)
            if stop.isEmpty { XCTAssertEqual(cached.map(\.count), [12, 12, 12, 12], line: line) }
        }
        XCTAssertEqual(try Evaluator.greedy(Self.prompts, model: model, maxNewTokens: 0, stop: []), [[], [], [], []], line: line)
    }

    func testCachedGreedyEqualsRecomputedForTheWholeModel() throws {
        let part = try part(nil)
        try assertCachedEqualsRecomputed(CentralizedScorer(part: part))
        // The LoRA values matter: without them the continuation differs.
        let plain = try self.part(nil)
        try plain.assign(flattenedValues: Tensor.zeros([plain.trainableCount]))
        XCTAssertNotEqual(try Evaluator.greedy(Self.prompts, model: CentralizedScorer(part: part), maxNewTokens: 12, stop: []),
                          try Evaluator.greedy(Self.prompts, model: CentralizedScorer(part: plain), maxNewTokens: 12, stop: []))
    }

    func testCachedGreedyEqualsRecomputedAcrossTheSplit() throws {
        for cut in [1, 2] {
            let plan = try SplitPlan(layerCount: TinyLlama.configuration.layerCount, inputBlocks: cut, outputBlocks: cut)
            let scorer = SplitScorer(plan: plan, client: try part(plan.clientStages), server: try part(plan.serverStages))
            try assertCachedEqualsRecomputed(scorer)
            // The split model decodes as the whole model with the same adapters.
            XCTAssertEqual(try Evaluator.greedy(Self.prompts, model: scorer, maxNewTokens: 12, stop: []),
                           try Evaluator.greedy(Self.prompts, model: CentralizedScorer(part: try part(nil)), maxNewTokens: 12, stop: []))
        }
    }

    func testPrefixTuningRecomputesTheSequence() throws {
        let adapters = AdapterSpecification(lora: nil, prefix: PrefixTuningConfiguration(length: 2))
        let scorer = CentralizedScorer(part: try part(nil, adapters: adapters))
        XCTAssertNil(scorer.makeCache(capacity: 8), "p-tuning prefixes are not cached")
        XCTAssertEqual(try Evaluator.greedy(Self.prompts, model: scorer, maxNewTokens: 6, stop: []).map(\.count), [6, 6, 6, 6])
    }
}
