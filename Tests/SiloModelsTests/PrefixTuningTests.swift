import Foundation
import XCTest
import SiloTensor
import SiloTestSupport
@testable import SiloModels

/// p-tuning v2 prefixes: they act as virtual tokens already in the KV cache (positions shift by P, no
/// RoPE on the prefix), the reparameterisation MLP's layout, gradients, stages, save/load.
final class PrefixTuningTests: XCTestCase {
    private let models = ["llama_gqa", "gpt2"]

    func testPrefixesActAsVirtualTokensInTheCache() throws {
        for name in models {
            // A prefix made of the keys and values the model itself computes for real tokens u (RoPE'd at
            // positions 0..<P, as a cache holds them) must give, for tokens x at positions P..<P + T,
            // exactly the logits of the sequence u + x: that is what "prefix as past_key_values" means.
            let (model, ids) = try AdapterTestSupport.model(name)
            let virtual: [Int32] = [17, 4, 60], row = Array(ids.prefix(7))
            let set = try AdapterSet.attachPrefixTuning(to: model, configuration: PrefixTuningConfiguration(length: 3), key: RandomKey(seed: 1))
            try Tensor.withoutGradients {
                let cache = model.makeCache(batch: 1, capacity: 3)
                _ = try model.logits(ids: virtual, batch: 1, time: 3, cache: cache)
                var tensors: [String: Tensor] = [:]
                for layer in 0..<model.layerCount {
                    // An empty append returns the (1, 3, KVH, D) cached keys and values.
                    let empty = Tensor.empty([1, 0, model.keyValueHeads, model.headSize])
                    let (keys, values) = try cache.append(layer: layer, key: empty, value: empty)
                    tensors["prefix.layers.\(layer).key"] = try keys.contiguous().reshaped([3, model.keyValueHeads, model.headSize])
                    tensors["prefix.layers.\(layer).value"] = try values.contiguous().reshaped([3, model.keyValueHeads, model.headSize])
                }
                try set.assign(tensors)
                let full = try model.logits(ids: virtual + row, batch: 1, time: 10).sliced(axis: 1, range: 3..<10).contiguous()
                let prefixed = try set.logits(model: model, ids: row, batch: 1, time: 7)
                let error = AdapterTestSupport.relativeError(prefixed, full)
                // Seen: 6.3e-7 (llama_gqa), 4.2e-7 (gpt2).
                XCTAssertLessThan(error, 1e-5, "\(name): prefix vs virtual tokens, relative error \(error)")
                let plain = try model.logits(ids: row, batch: 1, time: 7)
                XCTAssertGreaterThan(AdapterTestSupport.relativeError(prefixed, plain), 1e-2, "\(name): the prefix must change the logits")
            }
        }
    }

    func testForwardWithPrefixesEqualsACacheFilledWithThem() throws {
        for name in models {
            for configuration in [PrefixTuningConfiguration(length: 3), PrefixTuningConfiguration(length: 2, projectionHiddenSize: 8)] {
                let (model, ids) = try AdapterTestSupport.model(name)
                let set = try AdapterSet.attachPrefixTuning(to: model, configuration: configuration, key: RandomKey(seed: 2))
                guard let prefix = set.prefixTuning else { return XCTFail("no prefixes") }
                XCTAssertEqual(prefix.positionOffset, configuration.length)
                try Tensor.withoutGradients {
                    let direct = try set.logits(model: model, ids: ids, batch: 2, time: 7)
                    let cache = model.makeCache(batch: 2, capacity: 4)
                    try prefix.fill(cache: cache)
                    XCTAssertEqual(cache.length, configuration.length)
                    let cached = try model.logits(ids: ids, batch: 2, time: 7, cache: cache)
                    let error = AdapterTestSupport.relativeError(direct, cached)
                    // Seen: ≤ 6.5e-7.
                    XCTAssertLessThan(error, 1e-5, "\(name) \(configuration): relative error \(error)")
                    XCTAssertThrowsError(try prefix.fill(cache: cache), "a used cache is refused")
                    // A padding mask over the T sequence keys: the prefix stays visible.
                    let mask = try ForwardContext.paddingMask(attentionMask: Array(repeating: 1, count: 14), batch: 2)
                    XCTAssertEqual(try set.logits(model: model, ids: ids, batch: 2, time: 7, paddingMask: mask).toArray(), direct.toArray())
                }
            }
        }
    }

    func testReparameterisationMLPLayoutAndPromptEmbeddings() throws {
        let (model, _) = try AdapterTestSupport.model("llama_gqa")
        // P = 2, C = 32, H = 5, output 2·L·KVH·D = 2·2·2·8 = 64.
        let prefix = try PrefixTuning(model: model, configuration: PrefixTuningConfiguration(length: 2, projectionHiddenSize: 5), key: RandomKey(seed: 3))
        XCTAssertEqual(prefix.trainableParameters.map(\.name), [
            "prefix_encoder.embedding.weight", "prefix_encoder.transform.0.weight", "prefix_encoder.transform.0.bias",
            "prefix_encoder.transform.2.weight", "prefix_encoder.transform.2.bias",
        ])
        XCTAssertEqual(prefix.trainableParameters.map(\.tensor.shape), [[2, 32], [5, 32], [5], [64, 5], [64]])
        guard let embedding = prefix.embedding, let transform = prefix.transform else { return XCTFail("no MLP") }
        let e = embedding.toArray(), w1 = transform.hidden.weight.toArray(), b1 = transform.hidden.bias?.toArray() ?? []
        let w2 = transform.output.weight.toArray(), b2 = transform.output.bias?.toArray() ?? []
        // out[p][o] = b2[o] + Σ_h w2[o][h] · tanh(b1[h] + Σ_c w1[h][c] · e[p][c]).
        func mlp(_ p: Int, _ o: Int) -> Float {
            var total = b2[o]
            for h in 0..<5 {
                var pre = b1[h]
                for c in 0..<32 { pre += w1[h * 32 + c] * e[p * 32 + c] }
                total += w2[o * 5 + h] * Foundation.tanh(pre)
            }
            return total
        }
        let prefixes = try prefix.prefixes()
        let embeddings = try prefix.promptEmbeddings()
        XCTAssertEqual(embeddings.shape, [2, 64])
        // Block l's key (k = 0) or value (k = 1) at [p, h, d] is output column (2l + k)·KVH·D + h·D + d.
        for (p, layer, k, h, d) in [(0, 0, 0, 0, 0), (1, 0, 1, 1, 3), (0, 1, 0, 1, 7), (1, 1, 1, 0, 5)] {
            let column = (2 * layer + k) * 16 + h * 8 + d
            let tensor = k == 0 ? prefixes[layer]?.key : prefixes[layer]?.value
            XCTAssertEqual(tensor?[p, h, d] ?? .nan, mlp(p, column), accuracy: 1e-5)
            XCTAssertEqual(embeddings[p, column], mlp(p, column), accuracy: 1e-5)
        }
    }

    func testOnlyPrefixTensorsGetGradientsThatMatchFiniteDifferences() throws {
        for configuration in [PrefixTuningConfiguration(length: 2), PrefixTuningConfiguration(length: 2, projectionHiddenSize: 6, initialStandardDeviation: 0.5)] {
            let (model, ids) = try AdapterTestSupport.model("llama_gqa")
            try model.makeTrainable()
            let set = try AdapterSet.attachPrefixTuning(to: model, configuration: configuration, key: RandomKey(seed: 4))
            XCTAssertTrue(model.namedParameters().allSatisfy { !$0.tensor.requiresGrad }, "attaching freezes the model")
            let targets = AdapterTestSupport.targets(ids, time: 7)
            let loss = try set.loss(model: model, ids: ids, targets: targets, batch: 2, time: 7)
            try loss.backward()
            XCTAssertTrue(model.namedParameters().allSatisfy { $0.tensor.grad == nil })
            var worst = 0.0
            for (name, tensor) in set.parameters {
                let (error, largest) = try AdapterTestSupport.finiteDifferenceError(of: tensor, samples: 12, epsilon: 3e-3) {
                    Double(try set.loss(model: model, ids: ids, targets: targets, batch: 2, time: 7).scalar)
                }
                XCTAssertGreaterThan(largest, 1e-4, "\(name): the gradient must not vanish")
                worst = max(worst, error)
            }
            // Seen: 1.3e-4 (direct), 1.8e-4 (MLP): Float32 loss, ε = 3e-3.
            XCTAssertLessThan(worst, 5e-4, "\(configuration)")
        }
    }

    func testLayersStagesAndErrors() throws {
        let (model, ids) = try AdapterTestSupport.model("gpt2")
        let set = try AdapterSet.attachPrefixTuning(to: model, configuration: PrefixTuningConfiguration(length: 4, layers: [1]), key: RandomKey(seed: 5))
        XCTAssertEqual(set.parameterNames, ["prefix.layers.1.key", "prefix.layers.1.value"])
        XCTAssertEqual(set.trainableTensors.map(\.shape), [[4, 4, 8], [4, 4, 8]])
        XCTAssertEqual(try set.restricted(to: [.block(0)]).parameterCount, 0)
        XCTAssertEqual(try set.restricted(to: [.block(1), .head]).parameterNames, set.parameterNames)
        XCTAssertThrowsError(try set.prefixTuning?.promptEmbeddings(), "PEFT prefixes every block")
        // GPT-2's learned positions: P + T must fit n_positions (64 in the fixture): T = 60 fits, 61 not.
        XCTAssertNoThrow(try Tensor.withoutGradients { try set.logits(model: model, ids: ids, batch: 2, time: 7) })
        XCTAssertNoThrow(try Tensor.withoutGradients { try set.logits(model: model, ids: [Int32](repeating: 3, count: 60), batch: 1, time: 60) })
        let long = [Int32](repeating: 3, count: 61)
        XCTAssertThrowsError(try Tensor.withoutGradients { try set.logits(model: model, ids: long, batch: 1, time: 61) }) { error in
            XCTAssertTrue("\(error)".contains("n_positions"), "\(error)")
        }
        // An MLP feeding blocks on both sides of a split cannot be split.
        let (other, _) = try AdapterTestSupport.model("gpt2")
        let shared = try AdapterSet.attachPrefixTuning(to: other, configuration: PrefixTuningConfiguration(length: 2, projectionHiddenSize: 4), key: RandomKey(seed: 5))
        XCTAssertThrowsError(try shared.restricted(to: [.block(0)]))
        XCTAssertEqual(try shared.restricted(to: [.block(0), .block(1)]).parameterCount, shared.parameterCount)
        XCTAssertThrowsError(try AdapterSet.attachPrefixTuning(to: other, configuration: PrefixTuningConfiguration(length: 0), key: RandomKey(seed: 0)))
        XCTAssertThrowsError(try AdapterSet.attachPrefixTuning(to: other, configuration: PrefixTuningConfiguration(length: 2, layers: [2]), key: RandomKey(seed: 0))) { error in
            XCTAssertTrue("\(error)".contains("block 2"), "\(error)")
        }
    }

    func testSaveLoadRoundTrip() throws {
        let (model, ids) = try AdapterTestSupport.model("llama_gqa")
        let set = try AdapterSet.attachPrefixTuning(to: model, configuration: PrefixTuningConfiguration(length: 3, projectionHiddenSize: 6), key: RandomKey(seed: 6))
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("silo-prefix-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let url = directory.appendingPathComponent("prefix.safetensors")
        try set.save(to: url)
        let (fresh, _) = try AdapterTestSupport.model("llama_gqa")
        let loaded = try AdapterSet.load(contentsOf: url, attachingTo: fresh)
        XCTAssertEqual(loaded.parameterNames, set.parameterNames)
        try Tensor.withoutGradients {
            XCTAssertEqual(try loaded.logits(model: fresh, ids: ids, batch: 2, time: 7).toArray(),
                           try set.logits(model: model, ids: ids, batch: 2, time: 7).toArray())
        }
        // Direct prefixes of another length: the configuration check names the field.
        let (third, _) = try AdapterTestSupport.model("llama_gqa")
        let mismatched = try AdapterSet.attachPrefixTuning(to: third, configuration: PrefixTuningConfiguration(length: 4, projectionHiddenSize: 6), key: RandomKey(seed: 6))
        XCTAssertThrowsError(try mismatched.load(contentsOf: url)) { error in
            XCTAssertTrue("\(error)".contains("num_virtual_tokens 3"), "\(error)")
        }
        let (gpt2, _) = try AdapterTestSupport.model("gpt2")
        XCTAssertThrowsError(try AdapterSet.load(contentsOf: url, attachingTo: gpt2)) { error in
            XCTAssertTrue("\(error)".contains("'llama'") && "\(error)".contains("'gpt2'"), "\(error)")
        }
    }
}
