import Foundation
import XCTest
import SiloTensor
import SiloTestSupport
@testable import SiloModels

/// Silo's models against Hugging Face transformers (Scripts/fixtures/hf_models.py): tiny random
/// checkpoints saved by `save_pretrained` (Llama with GQA, Llama with llama3 RoPE scaling in BF16 shards,
/// Qwen2 with q/k/v biases and linear RoPE scaling in F16, GPT-2), loaded by Silo's own loader; logits for
/// a (2, 7) batch within 1e-4 relative, the same 20 greedy tokens as `model.generate(do_sample=False)`,
/// KV-cached logits equal to uncached ones; the same Llama converted to GGUF; load errors; and the real
/// SmolLM2-135M GGUF against transformers' GGUF loader when the model cache has it.
final class HFParityTests: XCTestCase {
    static let fixtures: URL? = Bundle.module.url(forResource: "Fixtures", withExtension: nil)?
        .appendingPathComponent("hf", isDirectory: true)

    static let modelNames = ["llama_gqa", "llama3_rope", "qwen2_bias", "gpt2"]

    func fixture(_ name: String) throws -> URL {
        guard let directory = Self.fixtures else {
            throw XCTSkip("Fixtures/hf is missing from the test bundle: run `make fixtures`")
        }
        return directory.appendingPathComponent(name)
    }

    struct Reference: Decodable {
        var prompt: [Int32]
        var greedy: [Int32]
        var eosTokenId: Int?
        var minMargin: Float

        enum CodingKeys: String, CodingKey {
            case prompt, greedy
            case eosTokenId = "eos_token_id"
            case minMargin = "min_margin"
        }
    }

    func reference(_ name: String) throws -> (Reference, input: [Int32], logits: Tensor) {
        let folder = try fixture(name)
        let json = try JSONDecoder().decode(Reference.self, from: Data(contentsOf: folder.appendingPathComponent("reference.json")))
        let file = try SafeTensorsFile(contentsOf: folder.appendingPathComponent("reference.safetensors"))
        let ids = try file.tensor("input_ids").toArray().map { Int32($0) }
        return (json, ids, try file.tensor("logits"))
    }

    /// max |a − e| / max |e|.
    func relativeError(_ actual: Tensor, _ expected: Tensor) -> Float {
        let a = actual.toArray(), e = expected.toArray()
        let scale = e.map(abs).max() ?? 1
        return zip(a, e).map { abs($0 - $1) }.max().map { $0 / scale } ?? 0
    }

    // MARK: Logits and greedy continuations

    func testLogitsMatchTransformers() throws {
        for name in Self.modelNames {
            let model = try Checkpoint.load(try fixture(name))
            let (_, ids, expected) = try reference(name)
            let logits = try Tensor.withoutGradients { try model.logits(ids: ids, batch: 2, time: 7) }
            XCTAssertEqual(logits.shape, expected.shape, name)
            let error = relativeError(logits, expected)
            // Seen: llama_gqa 1.9e-6, llama3_rope 9.6e-7, qwen2_bias 4.7e-7, gpt2 5.2e-7.
            XCTAssertLessThan(error, 1e-4, "\(name): logits relative error \(error)")
            assertClose(logits.toArray(), expected.toArray(), relative: 1e-4, absolute: 1e-4, name)
        }
    }

    func testGreedyContinuationsMatchTransformers() throws {
        for name in Self.modelNames {
            let model = try Checkpoint.load(try fixture(name))
            let (reference, _, _) = try reference(name)
            XCTAssertGreaterThan(reference.minMargin, 1e-3, "\(name): the fixture's greedy path must not hinge on near-ties")
            let result = try model.generate(prompt: reference.prompt, maxNewTokens: 20)
            XCTAssertEqual(result.tokens, reference.greedy, name)
            XCTAssertEqual(result.finishReason, .length, name)
            XCTAssertEqual(model.endOfSequenceTokenIds, reference.eosTokenId.map { [Int32($0)] } ?? [], name)
        }
    }

    func testCachedLogitsEqualUncachedLogits() throws {
        for name in Self.modelNames {
            let model = try Checkpoint.load(try fixture(name))
            let (_, ids, _) = try reference(name)
            let row = Array(ids.prefix(7))
            try Tensor.withoutGradients {
                let full = try model.logits(ids: row, batch: 1, time: 7)
                // Prefill 4 tokens, then 3 one at a time, in a cache that must grow twice (capacity 2).
                let cache = model.makeCache(batch: 1, capacity: 2)
                var pieces = [try model.logits(ids: Array(row[0..<4]), batch: 1, time: 4, cache: cache)]
                for t in 4..<7 {
                    pieces.append(try model.logits(ids: [row[t]], batch: 1, time: 1, cache: cache))
                }
                XCTAssertEqual(cache.length, 7)
                XCTAssertGreaterThanOrEqual(cache.capacity, 7)
                let cached = try Tensor.concatenate(pieces, axis: 1)
                let error = relativeError(cached, full)
                // Seen: 0 for every model (the cached keys are the same numbers, attended in the same order).
                XCTAssertLessThan(error, 1e-6, "\(name): cached vs uncached relative error \(error)")
            }
        }
    }

    func testPaddingMaskMatchesTransformersAttentionMask() throws {
        for name in Self.modelNames {
            let model = try Checkpoint.load(try fixture(name))
            let file = try SafeTensorsFile(contentsOf: try fixture(name).appendingPathComponent("reference.safetensors"))
            let ids = try file.tensor("input_ids").toArray().map { Int32($0) }
            let attentionMask = try file.tensor("attention_mask").toArray().map { Int32($0) }
            let expected = try file.tensor("masked_logits")
            let mask = try ForwardContext.paddingMask(attentionMask: attentionMask, batch: 2)
            let logits = try Tensor.withoutGradients { try model.logits(ids: ids, batch: 2, time: 7, paddingMask: mask) }
            // Queries at padding positions (row 1, positions 0 and 1) see no key: not meaningful.
            for (row, positions) in [(0, 0..<7), (1, 2..<7)] {
                let actual = try logits.sliced(axis: 0, range: row..<(row + 1)).sliced(axis: 1, range: positions).contiguous()
                let reference = try expected.sliced(axis: 0, range: row..<(row + 1)).sliced(axis: 1, range: positions).contiguous()
                let error = relativeError(actual, reference)
                // Seen: ≤ 1.9e-6.
                XCTAssertLessThan(error, 1e-4, "\(name) row \(row): masked logits relative error \(error)")
            }
            // The mask matters: row 1's unmasked logits differ.
            let unmasked = try file.tensor("logits").sliced(axis: 0, range: 1..<2).sliced(axis: 1, range: 6..<7).contiguous()
            let masked = try logits.sliced(axis: 0, range: 1..<2).sliced(axis: 1, range: 6..<7).contiguous()
            XCTAssertGreaterThan(relativeError(masked, unmasked), 1e-3, name)
        }
    }

    // MARK: GGUF

    func testTinyLlamaGGUFLoadsToTheSameModel() throws {
        let gguf = try Checkpoint.load(try fixture("tiny_llama.gguf"))
        let folder = try Checkpoint.loadLlama(folder: try fixture("llama_gqa"))
        guard let llama = gguf as? LlamaModel else { return XCTFail("a llama GGUF must load as LlamaModel") }
        var configuration = folder.configuration
        configuration.bosTokenId = llama.configuration.bosTokenId
        XCTAssertEqual(llama.configuration, configuration)
        let (_, ids, expected) = try reference("llama_gqa")
        let logits = try Tensor.withoutGradients { try gguf.logits(ids: ids, batch: 2, time: 7) }
        let error = relativeError(logits, expected)
        // Seen: 1.9e-6, as the folder (the same F32 numbers).
        XCTAssertLessThan(error, 1e-4, "GGUF logits relative error \(error)")
        // The un-permuted q_proj equals the Hugging Face weight exactly.
        let q = try XCTUnwrap(llama.parameters(of: .block(1)).first { $0.name == "model.layers.1.self_attn.q_proj.weight" })
        let hfQ = try XCTUnwrap(folder.parameters(of: .block(1)).first { $0.name == "model.layers.1.self_attn.q_proj.weight" })
        XCTAssertEqual(q.tensor.toArray(), hfQ.tensor.toArray())
    }

    // MARK: Stages

    func testSplitStagesComposeToTheFullModel() throws {
        let url = try fixture("llama3_rope")
        let client = try Checkpoint.load(url, stages: [.embedding, .block(0), .head])
        let server = try Checkpoint.load(url, stages: [.block(1)])
        let (_, ids, expected) = try reference("llama3_rope")
        let logits = try Tensor.withoutGradients {
            let clientContext = try client.makeContext(batch: 2, time: 7, positionOffset: 0, paddingMask: nil, cache: nil)
            let h0 = try client.block(0, hidden: client.embed(ids: ids, batch: 2, time: 7, positionOffset: 0), context: clientContext)
            let serverContext = try server.makeContext(batch: 2, time: 7, positionOffset: 0, paddingMask: nil, cache: nil)
            let h1 = try server.block(1, hidden: h0, context: serverContext)
            return try client.head(h1)
        }
        XCTAssertLessThan(relativeError(logits, expected), 1e-4)
        // The server holds only block 1 and refuses the rest, naming the stage.
        XCTAssertThrowsError(try server.embed(ids: ids, batch: 2, time: 7, positionOffset: 0)) { error in
            XCTAssertTrue("\(error)".contains("'embedding' is not loaded"), "\(error)")
        }
        XCTAssertThrowsError(try server.parameters(of: .block(0)))
        XCTAssertEqual(try server.parameters(of: .block(1)).map(\.name), server.parameterNames(of: .block(1)))
        // Tied head: the client's head reads the embedding table it also owns (one tensor).
        XCTAssertEqual(client.parameterNames(of: .head), ["model.norm.weight", "model.embed_tokens.weight"])
        XCTAssertEqual(client.namedParameters().filter { $0.name == "model.embed_tokens.weight" }.count, 1)
    }

    func testStageParametersCoverTheCheckpointWithHuggingFaceNames() throws {
        for name in Self.modelNames {
            let url = try fixture(name)
            let model = try Checkpoint.load(url)
            let stored = Set(try SafeTensorsWeights(folder: url).names.map {
                $0.hasPrefix("transformer.") ? String($0.dropFirst("transformer.".count)) : $0
            })
            let listed = Set(model.stages.flatMap { model.parameterNames(of: $0) })
            XCTAssertEqual(listed, stored, name)
            for stage in model.stages {
                let tensors = try model.parameters(of: stage)
                XCTAssertEqual(tensors.map(\.name), model.parameterNames(of: stage), "\(name) \(stage)")
                XCTAssertEqual(tensors.map(\.tensor.shape), model.parameterShapes(of: stage).map(\.shape), "\(name) \(stage)")
            }
        }
    }

    // MARK: Errors

    /// A copy of a fixture folder in a temporary directory, to damage.
    func scratchCopy(of name: String) throws -> URL {
        let destination = FileManager.default.temporaryDirectory
            .appendingPathComponent("silo-hf-\(name)-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.copyItem(at: try fixture(name), to: destination)
        addTeardownBlock { try? FileManager.default.removeItem(at: destination) }
        return destination
    }

    func editConfiguration(_ folder: URL, _ edit: (inout [String: Any]) -> Void) throws {
        let url = folder.appendingPathComponent("config.json")
        var object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        edit(&object)
        try JSONSerialization.data(withJSONObject: object).write(to: url)
    }

    func assertLoadError(_ url: URL, contains parts: [String], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try Checkpoint.load(url), file: file, line: line) { error in
            let message = "\(error)"
            for part in parts {
                XCTAssertTrue(message.contains(part), "'\(part)' missing from: \(message)", file: file, line: line)
            }
        }
    }

    func testMissingAndMisShapedTensorsNameKeyAndShapes() throws {
        // A config that asks for 40 intermediate channels: every MLP weight has the wrong shape.
        let narrow = try scratchCopy(of: "llama_gqa")
        try editConfiguration(narrow) { $0["intermediate_size"] = 40 }
        assertLoadError(narrow, contains: ["model.layers.0.mlp.gate_proj.weight", "[40, 32]", "[64, 32]", narrow.path])
        // A separate head the tied checkpoint does not have.
        let untied = try scratchCopy(of: "llama3_rope")
        try editConfiguration(untied) { $0["tie_word_embeddings"] = false }
        assertLoadError(untied, contains: ["lm_head.weight", "missing", "[96, 32]"])
        // Qwen2 without its biases: q_proj.bias is missing.
        let noBias = try scratchCopy(of: "llama_gqa")
        try editConfiguration(noBias) { $0["model_type"] = "qwen2" }
        assertLoadError(noBias, contains: ["model.layers.0.self_attn.q_proj.bias", "missing", "[32]"])
    }

    func testBadFoldersGiveOneClearErrorNamingTheFile() throws {
        let noConfig = try scratchCopy(of: "gpt2")
        try FileManager.default.removeItem(at: noConfig.appendingPathComponent("config.json"))
        assertLoadError(noConfig, contains: [noConfig.path, "no config.json"])

        let unknown = try scratchCopy(of: "gpt2")
        try editConfiguration(unknown) { $0["model_type"] = "mamba" }
        assertLoadError(unknown, contains: ["config.json", "model_type 'mamba' is not supported", "llama, qwen2, gpt2"])

        let badJSON = try scratchCopy(of: "llama_gqa")
        try Data("{\"model_type\": \"llama\", ".utf8).write(to: badJSON.appendingPathComponent("config.json"))
        assertLoadError(badJSON, contains: ["config.json", "not valid JSON"])

        let missingKey = try scratchCopy(of: "llama_gqa")
        try editConfiguration(missingKey) { $0.removeValue(forKey: "hidden_size") }
        assertLoadError(missingKey, contains: ["config.json", "hidden_size"])

        let noWeights = try scratchCopy(of: "llama_gqa")
        try FileManager.default.removeItem(at: noWeights.appendingPathComponent("model.safetensors"))
        assertLoadError(noWeights, contains: [noWeights.path, "no model.safetensors"])

        let truncated = try scratchCopy(of: "llama_gqa")
        let weights = truncated.appendingPathComponent("model.safetensors")
        let bytes = try Data(contentsOf: weights)
        try bytes.prefix(bytes.count / 2).write(to: weights)
        assertLoadError(truncated, contains: [weights.path])

        let lostShard = try scratchCopy(of: "llama3_rope")
        try FileManager.default.removeItem(at: lostShard.appendingPathComponent("model-00002-of-00003.safetensors"))
        assertLoadError(lostShard, contains: ["model-00002-of-00003.safetensors", "missing"])

        let scaling = try scratchCopy(of: "llama3_rope")
        try editConfiguration(scaling) { $0["rope_scaling"] = ["rope_type": "yarn", "factor": 4.0] }
        assertLoadError(scaling, contains: ["rope_scaling type 'yarn' is not supported"])
    }

    func testDamagedGGUFNamesTheFile() throws {
        let source = try fixture("tiny_llama.gguf")
        let damaged = FileManager.default.temporaryDirectory.appendingPathComponent("silo-truncated-\(UUID().uuidString).gguf")
        addTeardownBlock { try? FileManager.default.removeItem(at: damaged) }
        let bytes = try Data(contentsOf: source)
        try bytes.prefix(bytes.count - 1000).write(to: damaged)
        assertLoadError(damaged, contains: [damaged.path])
        // GGUF files of the reader's fixtures: another architecture, and a llama file without a vocabulary.
        let gguf = try XCTUnwrap(Self.fixtures).deletingLastPathComponent().appendingPathComponent("gguf")
        assertLoadError(gguf.appendingPathComponent("types.gguf"),
                        contains: ["types.gguf", "GGUF architecture 'silotest' is not supported"])
        assertLoadError(gguf.appendingPathComponent("llama_qk.gguf"),
                        contains: ["llama_qk.gguf", "no llama.vocab_size"])
    }

    // MARK: SmolLM2-135M (real weights)

    struct SmolLM2Reference: Decodable {
        struct Case: Decodable {
            var text: String
            var prompt: [Int32]
            var greedy: [Int32]
            var greedyText: String
            var topLogits: [Float]
            var topIds: [Int]

            enum CodingKeys: String, CodingKey {
                case text, prompt, greedy
                case greedyText = "greedy_text"
                case topLogits = "top_logits"
                case topIds = "top_ids"
            }
        }
        var cases: [Case]
    }

    func testSmolLM2GreedyIdsMatchTransformersGGUFLoader() throws {
        let store = ModelStore()
        guard let url = try? store.resolve("smollm2-135m") else {
            throw XCTSkip("SmolLM2-135M is not in the model cache (\(store.modelsDirectory.path)/smollm2-135m): run `silo models fetch smollm2-135m` to test the real model")
        }
        let reference = try JSONDecoder().decode(SmolLM2Reference.self,
                                                 from: Data(contentsOf: try fixture("smollm2/reference.json")))
        let model = try Checkpoint.load(url)
        XCTAssertEqual(model.layerCount, 30)
        XCTAssertEqual(model.hiddenSize, 576)
        XCTAssertEqual((model as? LlamaModel)?.configuration.tieWordEmbeddings, true)
        for item in reference.cases {
            // Logits of the last prompt position: the 10 largest, as transformers has them.
            let logits = try Tensor.withoutGradients {
                try model.logits(ids: item.prompt, batch: 1, time: item.prompt.count)
                    .sliced(axis: 1, range: (item.prompt.count - 1)..<item.prompt.count).contiguous().toArray()
            }
            let top = logits.indices.sorted { logits[$0] > logits[$1] }.prefix(10)
            XCTAssertEqual(Array(top), item.topIds, item.text)
            // Seen: max abs error 2.5e-5 on logits of 12-31 (the fixture is rounded to 1e-5).
            assertClose(top.map { logits[$0] }, item.topLogits, relative: 0, absolute: 1e-4, item.text)
            let result = try model.generate(prompt: item.prompt, maxNewTokens: item.greedy.count)
            XCTAssertEqual(result.tokens, item.greedy, "\(item.text) → \(item.greedyText)")
        }
        // "The capital of France is", tokenized by Silo's tokenizer from the same GGUF (the ids transformers
        // gives), continues with " Paris." (ids 7042, 30 in SmolLM2's vocabulary).
        let tokenizer = try Tokenizer(ggufFile: GGUFFile(contentsOf: url))
        let france = try XCTUnwrap(reference.cases.first { $0.text == "The capital of France is" })
        for item in reference.cases {
            XCTAssertEqual(tokenizer.encode(item.text).map { Int32($0) }, item.prompt, item.text)
        }
        let paris = try model.generate(prompt: tokenizer.encode(france.text).map { Int32($0) }, maxNewTokens: 8,
                                       decode: { tokenizer.decode($0.map { Int($0) }) })
        XCTAssertEqual(Array(paris.tokens.prefix(2)), [7042, 30])
        XCTAssertTrue(paris.text?.hasPrefix(" Paris.") ?? false, "\(paris.text ?? "no text")")
    }
}
