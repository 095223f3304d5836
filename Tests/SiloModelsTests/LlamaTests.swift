import Foundation
import XCTest
import SiloTensor
import SiloTestSupport
@testable import SiloModels

/// The Llama family's configuration (both transformers layouts, RoPE scaling against transformers'
/// own inverse frequencies), the stages computed by hand on a tiny model, parameter naming and
/// replacement, training hooks, and the KV cache.
final class LlamaTests: XCTestCase {
    // MARK: Configuration

    func testConfigurationDecodesTransformers4Layout() throws {
        let json = """
        {"model_type": "llama", "vocab_size": 128256, "hidden_size": 2048, "intermediate_size": 8192,
         "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
         "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "max_position_embeddings": 131072,
         "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                          "original_max_position_embeddings": 8192, "rope_type": "llama3"},
         "tie_word_embeddings": true, "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009],
         "hidden_act": "silu", "attention_bias": false, "mlp_bias": false}
        """
        let configuration = try JSONDecoder().decode(LlamaConfiguration.self, from: Data(json.utf8))
        XCTAssertEqual(configuration.keyValueHeads, 8)
        XCTAssertEqual(configuration.headDimension, 64)
        XCTAssertEqual(configuration.ropeTheta, 500000)
        XCTAssertEqual(configuration.ropeScaling, .init(type: "llama3", factor: 32, lowFrequencyFactor: 1,
                                                        highFrequencyFactor: 4, originalMaximumPositions: 8192))
        XCTAssertEqual(configuration.eosTokenIds, [128001, 128008, 128009])
        XCTAssertTrue(configuration.tieWordEmbeddings)
        XCTAssertNoThrow(try configuration.validate())
        // Encoding writes the transformers 4 layout, which decodes to the same value.
        let again = try JSONDecoder().decode(LlamaConfiguration.self, from: JSONEncoder().encode(configuration))
        XCTAssertEqual(again, configuration)
    }

    func testConfigurationDecodesTransformers5LayoutAndDefaults() throws {
        let json = """
        {"model_type": "qwen2", "vocab_size": 96, "hidden_size": 32, "intermediate_size": 64,
         "num_hidden_layers": 2, "num_attention_heads": 4, "eos_token_id": 2,
         "rope_parameters": {"factor": 2.0, "rope_theta": 1000000.0, "rope_type": "linear", "type": "linear"}}
        """
        let configuration = try JSONDecoder().decode(LlamaConfiguration.self, from: Data(json.utf8))
        XCTAssertEqual(configuration.keyValueHeads, 4, "num_key_value_heads defaults to the head count")
        XCTAssertEqual(configuration.headDimension, 8, "head_dim defaults to hidden_size / heads")
        XCTAssertEqual(configuration.ropeTheta, 1_000_000)
        XCTAssertEqual(configuration.ropeScaling, .init(type: "linear", factor: 2))
        XCTAssertEqual(configuration.eosTokenIds, [2])
        XCTAssertEqual(configuration.rmsNormEpsilon, 1e-6)
        XCTAssertFalse(configuration.tieWordEmbeddings)
        XCTAssertTrue(configuration.queryKeyValueBias, "Qwen2 has q/k/v biases")
        XCTAssertFalse(configuration.outputBias, "Qwen2 has no o_proj bias")
        // rope_type "default" means no scaling.
        let plain = try JSONDecoder().decode(LlamaConfiguration.self, from: Data("""
            {"vocab_size": 8, "hidden_size": 4, "intermediate_size": 8, "num_hidden_layers": 1,
             "num_attention_heads": 2, "rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"}}
            """.utf8))
        XCTAssertNil(plain.ropeScaling)
        XCTAssertEqual(plain.ropeTheta, 100_000)
        XCTAssertEqual(plain.modelType, "llama")
    }

    func testLlama3InverseFrequenciesMatchTransformers() throws {
        // head_dim 8, theta 10000: base 1/10000^(2i/8) = 1, 0.1, 0.01, 0.001; wavelengths 2π/f = 6.28,
        // 62.8, 628, 6283. With original context 64: low-frequency wavelength 64/1 = 64, high 64/4 = 16.
        //   6.28 < 16          → kept: 1
        //   16 ≤ 62.8 ≤ 64     → smoothed: s = (64/62.83 − 1)/(4 − 1) = 0.0061977,
        //                        (1 − s)·0.1/8 + s·0.1 = 0.0124225 + 0.0006198 = 0.0130423
        //   628, 6283 > 64     → divided by 8: 0.00125, 0.000125
        // transformers 5.23 (_compute_llama3_parameters) gives the values asserted below.
        let configuration = LlamaConfiguration(vocabularySize: 8, hiddenSize: 32, intermediateSize: 8, layerCount: 1,
                                               attentionHeads: 4, headDimension: 8, ropeTheta: 10000,
                                               ropeScaling: .init(type: "llama3", factor: 8, lowFrequencyFactor: 1,
                                                                  highFrequencyFactor: 4, originalMaximumPositions: 64))
        let frequencies = try configuration.ropeInverseFrequencies()
        let transformers: [Float] = [1.0, 0.013042256236076355, 0.0012499999720603228, 0.0001250000059371814]
        assertClose(frequencies, transformers, relative: 1e-6, absolute: 0, "llama3 inv_freq")
        XCTAssertEqual(frequencies[1], 0.0130423, accuracy: 1e-7)
    }

    func testLinearScalingDividesTheFrequencies() throws {
        // theta 1e6, head_dim 8: 1/1e6^(2i/8) = 1, 0.0316228, 0.001, 0.0000316228; linear factor 2 halves them.
        let configuration = LlamaConfiguration(modelType: "qwen2", vocabularySize: 8, hiddenSize: 32, intermediateSize: 8,
                                               layerCount: 1, attentionHeads: 4, headDimension: 8, ropeTheta: 1_000_000,
                                               ropeScaling: .init(type: "linear", factor: 2))
        let transformers: [Float] = [0.5, 0.015811389312148094, 0.0005000000237487257, 1.581138712936081e-05]
        assertClose(try configuration.ropeInverseFrequencies(), transformers, relative: 1e-6, absolute: 0, "linear inv_freq")
    }

    func testInvalidConfigurationsNameTheKey() {
        func message(_ edit: (inout LlamaConfiguration) -> Void) -> String {
            var configuration = LlamaConfiguration(vocabularySize: 8, hiddenSize: 8, intermediateSize: 8, layerCount: 1,
                                                   attentionHeads: 4, keyValueHeads: 2)
            edit(&configuration)
            do {
                try configuration.validate()
                return "no error"
            } catch {
                return "\(error)"
            }
        }
        XCTAssertTrue(message { $0.keyValueHeads = 3 }.contains("num_key_value_heads 3"))
        XCTAssertTrue(message { $0.hiddenActivation = "gelu" }.contains("hidden_act 'gelu'"))
        XCTAssertTrue(message { $0.headDimension = 3 }.contains("head_dim 3"))
        XCTAssertTrue(message { $0.modelType = "mistral" }.contains("model_type 'mistral'"))
        XCTAssertTrue(message { $0.ropeScaling = .init(type: "dynamic", factor: 2) }.contains("'dynamic' is not supported"))
        XCTAssertTrue(message { $0.ropeScaling = .init(type: "llama3", factor: 8) }.contains("low_freq_factor"))
        XCTAssertEqual(message { _ in }, "no error")
    }

    // MARK: A model small enough to compute by hand

    /// V 3, C 2, one head of D 2, F 2, one block; eps 0; tied head. Embedding rows (1, 0), (0, 2), (3, 4).
    /// q/k/v/o and MLP weights as given (zero by default: the block is the identity).
    func handModel(value: [Float] = [0, 0, 0, 0], output: [Float] = [0, 0, 0, 0]) throws -> LlamaModel {
        let configuration = LlamaConfiguration(vocabularySize: 3, hiddenSize: 2, intermediateSize: 2, layerCount: 1,
                                               attentionHeads: 1, rmsNormEpsilon: 0, tieWordEmbeddings: true)
        var tensors: [String: Tensor] = [
            "model.embed_tokens.weight": try Tensor(shape: [3, 2], values: [1, 0, 0, 2, 3, 4]),
            "model.norm.weight": Tensor.ones([2]),
        ]
        let p = "model.layers.0."
        tensors[p + "input_layernorm.weight"] = Tensor.ones([2])
        tensors[p + "post_attention_layernorm.weight"] = Tensor.ones([2])
        tensors[p + "self_attn.q_proj.weight"] = try Tensor(shape: [2, 2], values: [0.5, -1, 2, 0.25])
        tensors[p + "self_attn.k_proj.weight"] = try Tensor(shape: [2, 2], values: [1, 0, 0, 1])
        tensors[p + "self_attn.v_proj.weight"] = try Tensor(shape: [2, 2], values: value)
        tensors[p + "self_attn.o_proj.weight"] = try Tensor(shape: [2, 2], values: output)
        for name in ["gate_proj", "up_proj", "down_proj"] { tensors[p + "mlp.\(name).weight"] = Tensor.zeros([2, 2]) }
        return try LlamaModel(configuration: configuration, weights: TensorDictionary(tensors))
    }

    func testIdentityBlockGivesNormalisedEmbeddingTimesTable() throws {
        // With o_proj and down_proj zero the block adds nothing. For token 2, x = (3, 4):
        // rms = √((9 + 16)/2) = √12.5 = 3.5355, x̂ = (0.84853, 1.13137), logits = x̂·Eᵀ =
        // (0.84853, 2.26274, 3·0.84853 + 4·1.13137 = 7.07107).
        let model = try handModel()
        let logits = try model.logits(ids: [2], batch: 1, time: 1)
        XCTAssertEqual(logits.shape, [1, 1, 3])
        assertClose(logits.toArray(), [0.848528, 2.262742, 7.071068], relative: 1e-5, absolute: 1e-6, "logits")
    }

    func testAttentionOfTwoTokensByHand() throws {
        // v_proj and o_proj are the identity, so block(x) = x + attn(x̂) where x̂ = rmsnorm(x).
        // Token 0 (x = (1, 0), x̂ = (√2, 0)) sees only itself: out₀ = x + x̂ = (1 + √2, 0) = (2.41421, 0).
        // Token 1 (x = (0, 2), x̂ = (0, √2)) mixes v₀ = (√2, 0) and v₁ = (0, √2) with softmax weights of
        // q₁·k_j/√2 after RoPE at positions 1 (query) and 0, 1 (keys); the weights sum to 1, so
        // out₁ = (0, 2) + (w₀√2, w₁√2) with w₀ + w₁ = 1.
        let model = try handModel(value: [1, 0, 0, 1], output: [1, 0, 0, 1])
        let context = try model.makeContext(batch: 1, time: 2, positionOffset: 0, paddingMask: nil, cache: nil)
        let hidden = try model.block(0, hidden: model.embed(ids: [0, 1], batch: 1, time: 2), context: context).toArray()
        let root2 = Float(2).squareRoot()
        XCTAssertEqual(hidden[0], 1 + root2, accuracy: 1e-5)
        XCTAssertEqual(hidden[1], 0, accuracy: 1e-6)
        XCTAssertEqual(hidden[2] / root2 + (hidden[3] - 2) / root2, 1, accuracy: 1e-5, "attention weights sum to 1")
        // The weights by hand: D = 2, one frequency θ = 1. q₁ = W_q x̂₁ = (−√2, √2/4) rotated by angle 1;
        // k₀ = x̂₀ = (√2, 0) unrotated, k₁ = x̂₁ = (0, √2) rotated by 1. Rotation preserves dot products
        // of vectors at the same position: q₁·k₁ = (−√2)(0) + (√2/4)(√2) = 0.5. And q₁·k₀ = R(1)q₁·k₀:
        // R(1)q₁ = (−√2 cos 1 − (√2/4) sin 1, −√2 sin 1 + (√2/4) cos 1), first component × √2
        //        = −2 cos 1 − 0.5 sin 1 = −1.08060 − 0.42074 = −1.50134.
        // Scores /√2: s₀ = −1.06161, s₁ = 0.35355; w₀ = 1/(1 + e^(s₁ − s₀)) = 1/(1 + e^1.41516) = 0.19542.
        XCTAssertEqual(hidden[2] / root2, 0.19542, accuracy: 1e-4)
    }

    // MARK: Parameters, adapters, training

    /// A LinearLayer that scales another one's output, as an adapter would wrap it.
    final class Scaled: LinearLayer {
        let base: any LinearLayer
        let factor: Float
        init(_ base: any LinearLayer, factor: Float) {
            self.base = base
            self.factor = factor
        }
        var inputSize: Int { base.inputSize }
        var outputSize: Int { base.outputSize }
        var namedParameters: [(name: String, tensor: Tensor)] { base.namedParameters.map { ("base_layer." + $0.name, $0.tensor) } }
        func setParameter(_ name: String, to tensor: Tensor) throws {
            try base.setParameter(String(name.dropFirst("base_layer.".count)), to: tensor)
        }
        func callAsFunction(_ x: Tensor) throws -> Tensor { try base(x).scaled(by: factor) }
    }

    func testReplacingAProjectionChangesTheForwardAndKeepsNames() throws {
        let model = try handModel(value: [1, 0, 0, 1], output: [1, 0, 0, 1])
        XCTAssertEqual(model.linearLayerNames, ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj",
                                                "model.layers.0.self_attn.v_proj", "model.layers.0.self_attn.o_proj",
                                                "model.layers.0.mlp.gate_proj", "model.layers.0.mlp.up_proj",
                                                "model.layers.0.mlp.down_proj"])
        let before = try model.logits(ids: [2], batch: 1, time: 1).toArray()
        let oProj = try XCTUnwrap(model.linearLayer(named: "model.layers.0.self_attn.o_proj"))
        try model.replaceLinearLayer(named: "model.layers.0.self_attn.o_proj", with: Scaled(oProj, factor: 0))
        // o_proj scaled to zero: back to the identity block of the first test.
        assertClose(try model.logits(ids: [2], batch: 1, time: 1).toArray(), [0.848528, 2.262742, 7.071068],
                    relative: 1e-5, absolute: 1e-6, "logits with o_proj zeroed")
        XCTAssertNotEqual(before, try model.logits(ids: [2], batch: 1, time: 1).toArray())
        XCTAssertTrue(try model.parameters(of: .block(0)).map(\.name).contains("model.layers.0.self_attn.o_proj.base_layer.weight"))
        // Sizes must agree; unknown names are refused.
        XCTAssertThrowsError(try model.replaceLinearLayer(named: "model.layers.0.mlp.up_proj",
                                                          with: Linear(weight: Tensor.zeros([3, 2])))) { error in
            XCTAssertTrue("\(error)".contains("model.layers.0.mlp.up_proj") && "\(error)".contains("[3, 2]"), "\(error)")
        }
        XCTAssertThrowsError(try model.replaceLinearLayer(named: "model.layers.1.mlp.up_proj", with: oProj))
    }

    func testSetParameterVerifiesTheShapeAndTiedTableIsShared() throws {
        let model = try handModel()
        XCTAssertThrowsError(try model.setParameter("model.layers.0.self_attn.q_proj.weight", to: Tensor.zeros([2, 3]))) { error in
            let message = "\(error)"
            XCTAssertTrue(message.contains("model.layers.0.self_attn.q_proj.weight") && message.contains("[2, 3]")
                          && message.contains("[2, 2]"), message)
        }
        XCTAssertThrowsError(try model.setParameter("model.layers.0.self_attn.q_proj.bias", to: Tensor.zeros([2])))
        XCTAssertThrowsError(try model.setParameter("lm_head.weight", to: Tensor.zeros([3, 2])), "tied: no lm_head")
        // The tied head reads the embedding table: changing it changes the logits.
        try model.setParameter("model.embed_tokens.weight", to: try Tensor(shape: [3, 2], values: [1, 0, 0, 2, 3, 4]).scaled(by: 2))
        // x = (6, 8): x̂ = (0.84853, 1.13137) as before, and the table doubled doubles the logits.
        assertClose(try model.logits(ids: [2], batch: 1, time: 1).toArray(), [1.697056, 4.525483, 14.142136],
                    relative: 1e-5, absolute: 1e-6, "logits with the table doubled")
    }

    func testMakeTrainableGivesEveryParameterAGradient() throws {
        let folder = try XCTUnwrap(HFParityTests.fixtures).appendingPathComponent("llama_gqa")
        let model = try Checkpoint.load(folder)
        let trainable = try model.makeTrainable()
        XCTAssertEqual(trainable.count, model.namedParameters().count)
        XCTAssertEqual(trainable.count, 2 + 2 * 9 + 1, "embedding, 9 tensors per block, norm, lm_head")
        let ids: [Int32] = [5, 9, 11, 40, 3, 7]
        let loss = try model.loss(ids: ids, targets: Array(ids.dropFirst()) + [-100], batch: 1, time: 6)
        try loss.backward()
        for (name, tensor) in model.namedParameters() {
            let gradient = try XCTUnwrap(tensor.grad, "no gradient for \(name)")
            XCTAssertEqual(gradient.shape, tensor.shape, name)
            XCTAssertGreaterThan(gradient.toArray().map(abs).max() ?? 0, 0, "zero gradient for \(name)")
        }
        // A cache is for inference only.
        XCTAssertThrowsError(try model.logits(ids: ids, batch: 1, time: 6, cache: model.makeCache(capacity: 8))) { error in
            XCTAssertTrue("\(error)".contains("withoutGradients"), "\(error)")
        }
        try model.freeze()
        XCTAssertFalse(model.namedParameters().contains { $0.tensor.requiresGrad })
    }

    // MARK: KV cache

    func testCacheAppendsGrowsAndTruncates() throws {
        let cache = KVCache(layerCount: 2, batch: 2, keyValueHeads: 1, headSize: 2, capacity: 2)
        // Keys of batch item b, token t: (10b + t, −(10b + t)); values the same plus 100.
        func rows(_ tokens: Range<Int>) throws -> (Tensor, Tensor) {
            var keys: [Float] = []
            for b in 0..<2 { for t in tokens { keys += [Float(10 * b + t), -Float(10 * b + t)] } }
            return (try Tensor(shape: [2, tokens.count, 1, 2], values: keys),
                    try Tensor(shape: [2, tokens.count, 1, 2], values: keys.map { $0 + 100 }))
        }
        let (k0, v0) = try rows(0..<2)
        _ = try cache.append(layer: 0, key: k0, value: v0)
        XCTAssertEqual(cache.length, 2)
        XCTAssertEqual(cache.length(ofLayer: 1), 0)
        let (k1, v1) = try rows(2..<5)
        let (keys, values) = try cache.append(layer: 0, key: k1, value: v1)  // grows 2 → 5
        XCTAssertGreaterThanOrEqual(cache.capacity, 5)
        XCTAssertEqual(keys.shape, [2, 5, 1, 2])
        let (expectedKeys, expectedValues) = try rows(0..<5)
        XCTAssertEqual(keys.contiguous().toArray(), expectedKeys.toArray())
        XCTAssertEqual(values.contiguous().toArray(), expectedValues.toArray())
        cache.truncate(to: 3)
        XCTAssertEqual(cache.length, 3)
        let (k3, v3) = try rows(3..<4)
        let (afterTruncate, _) = try cache.append(layer: 0, key: k3, value: v3)
        XCTAssertEqual(afterTruncate.contiguous().toArray(), try rows(0..<4).0.toArray())
        XCTAssertThrowsError(try cache.append(layer: 1, key: Tensor.zeros([2, 1, 2, 2]), value: Tensor.zeros([2, 1, 2, 2])))
        cache.reset()
        XCTAssertEqual(cache.length, 0)
    }
}
