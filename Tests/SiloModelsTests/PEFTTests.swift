import Foundation
import XCTest
import SiloTensor
import SiloTestSupport
@testable import SiloModels

/// Adapters trained by Silo, exported in Hugging Face PEFT's layout, against the logits PEFT computes
/// after `PeftModel.from_pretrained` (Scripts/fixtures/peft_lora.py; its docstring gives the two-step
/// regeneration: `SILO_WRITE_PEFT_FIXTURE=1 swift test --filter PEFTTests`, then the script).
final class PEFTTests: XCTestCase {
    struct Case {
        var name: String
        var base: String
        var lora: LoRAConfiguration?
        var prefix: PrefixTuningConfiguration?
    }

    static let cases = [
        Case(name: "llama_gqa_lora", base: "llama_gqa",
             lora: LoRAConfiguration(rank: 4, alpha: 8, dropout: 0.1, targetModules: ["q_proj", "v_proj"])),
        Case(name: "gpt2_lora", base: "gpt2",
             lora: LoRAConfiguration(rank: 4, alpha: 8, targetModules: ["c_attn", "mlp.c_proj"], layers: [1])),
        Case(name: "llama_gqa_prefix", base: "llama_gqa", prefix: PrefixTuningConfiguration(length: 3, projectionHiddenSize: 8)),
        Case(name: "gpt2_prefix", base: "gpt2", prefix: PrefixTuningConfiguration(length: 4)),
    ]

    /// The (2, 7) token ids every case trains and is evaluated on (row-major; V = 96 in both checkpoints).
    static let ids: [Int32] = [12, 57, 91, 17, 53, 50, 84, 41, 92, 23, 82, 55, 32, 63]

    /// Whether this run writes the fixture folders into the source tree (step 1 of the regeneration).
    static var writesFixtures: Bool { ProcessInfo.processInfo.environment["SILO_WRITE_PEFT_FIXTURE"] == "1" }

    /// Tests/SiloModelsTests/Fixtures/peft in the source tree.
    static let sourceFixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures/peft", isDirectory: true)

    /// Loads the base checkpoint, attaches the case's adapters, trains 5 AdamW steps (lr 1e-2) on
    /// ``ids`` with next-token targets, and returns the model, the set, the ids and the logits in
    /// evaluation mode.
    func train(_ testCase: Case) throws -> (model: any LanguageModel, set: AdapterSet, ids: [Int32], logits: Tensor, plain: Tensor) {
        let (model, _) = try AdapterTestSupport.model(testCase.base)
        let ids = Self.ids
        let plain = try Tensor.withoutGradients { try model.logits(ids: ids, batch: 2, time: 7) }
        let set: AdapterSet
        if let lora = testCase.lora {
            set = try AdapterSet.attachLoRA(to: model, configuration: lora, key: RandomKey(seed: 42))
        } else if let prefix = testCase.prefix {
            set = try AdapterSet.attachPrefixTuning(to: model, configuration: prefix, key: RandomKey(seed: 42))
        } else {
            preconditionFailure("case without adapters")
        }
        let optimizer = try AdamW(groups: [ParameterGroup(parameters: set.trainableTensors, names: set.parameterNames)],
                                  learningRate: 1e-2)
        let targets = AdapterTestSupport.targets(ids, time: 7)
        var losses: [Float] = []
        for _ in 0..<5 {
            optimizer.zeroGrad()
            let loss = try set.loss(model: model, ids: ids, targets: targets, batch: 2, time: 7)
            try loss.backward()
            try optimizer.step()
            losses.append(loss.scalar)
        }
        XCTAssertLessThan(losses.last ?? .nan, losses.first ?? .nan, "\(testCase.name): training lowers the loss \(losses)")
        set.setTraining(false)
        let logits = try Tensor.withoutGradients { try set.logits(model: model, ids: ids, batch: 2, time: 7) }
        return (model, set, ids, logits, plain)
    }

    /// PEFT's committed logits for a case.
    func peftLogits(_ testCase: Case) throws -> Tensor {
        let url = try AdapterTestSupport.fixture("peft/\(testCase.name)").appendingPathComponent("peft_logits.safetensors")
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw XCTSkip("\(url.path) is missing: run Scripts/fixtures/peft_lora.py")
        }
        return try SafeTensorsFile(contentsOf: url).tensor("logits")
    }

    func testPEFTLoadsSiloTrainedAdaptersAndComputesTheSameLogits() throws {
        let temporary = FileManager.default.temporaryDirectory.appendingPathComponent("silo-peft-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: temporary) }
        for testCase in Self.cases {
            let (_, set, ids, logits, plain) = try train(testCase)
            // The adapters must matter, or the comparison below would prove nothing.
            let moved = AdapterTestSupport.relativeError(logits, plain)
            XCTAssertGreaterThan(moved, 1e-3, "\(testCase.name): training moved the logits by \(moved) only")
            let folder = (Self.writesFixtures ? Self.sourceFixtures : temporary).appendingPathComponent(testCase.name)
            try set.exportPEFT(to: folder, baseModelNameOrPath: "Tests/SiloModelsTests/Fixtures/hf/\(testCase.base)")
            let idValues = try Tensor(shape: [2, 7], values: ids.map(Float.init))
            try SafeTensorsFile.write(["input_ids": idValues, "logits": logits], metadata: ["source": "PEFTTests (Silo)"],
                                      to: folder.appendingPathComponent("silo_logits.safetensors"))
            if Self.writesFixtures { continue }

            let expected = try peftLogits(testCase)
            XCTAssertEqual(logits.shape, expected.shape)
            let error = AdapterTestSupport.relativeError(logits, expected)
            // Seen: 6.4e-7 llama_gqa_lora, 7.8e-7 gpt2_lora, 9.3e-7 llama_gqa_prefix, 9.9e-7 gpt2_prefix,
            // while the adapters move the logits by 0.27–1.1 (relative).
            XCTAssertLessThan(error, 1e-4, "\(testCase.name): Silo vs PEFT logits, relative error \(error) (if Silo's training changed, regenerate: see Scripts/fixtures/peft_lora.py)")
            // The committed export is what this run trained (else the fixture is stale).
            let committed = try SafeTensorsFile(contentsOf: try AdapterTestSupport.fixture("peft/\(testCase.name)").appendingPathComponent(AdapterSet.peftWeightsFile))
            let fresh = try SafeTensorsFile(contentsOf: folder.appendingPathComponent(AdapterSet.peftWeightsFile))
            XCTAssertEqual(committed.names, fresh.names, testCase.name)
            for name in fresh.names where committed.contains(name) {
                let difference = AdapterTestSupport.relativeError(try fresh.tensor(name), try committed.tensor(name))
                XCTAssertLessThan(difference, 1e-4, "\(testCase.name) \(name): retrained values differ from the committed export")
            }
        }
    }

    func testImportingTheCommittedPEFTFoldersGivesPEFTsLogits() throws {
        for testCase in Self.cases {
            let folder = try AdapterTestSupport.fixture("peft/\(testCase.name)")
            let expected = try peftLogits(testCase)
            let (model, _) = try AdapterTestSupport.model(testCase.base)
            let ids = Self.ids
            let set = try AdapterSet.importPEFT(from: folder, into: model)
            XCTAssertEqual(set.loraConfiguration?.rank, testCase.lora?.rank)
            XCTAssertEqual(set.loraConfiguration.map { Set($0.targetModules) }, testCase.lora.map { Set($0.targetModules) })
            XCTAssertEqual(set.loraConfiguration?.layers, testCase.lora?.layers)
            XCTAssertEqual(set.prefixTuning?.configuration.length, testCase.prefix?.length)
            set.setTraining(false)
            let logits = try Tensor.withoutGradients { try set.logits(model: model, ids: ids, batch: 2, time: 7) }
            let error = AdapterTestSupport.relativeError(logits, expected)
            // Seen: ≤ 9.9e-7 (as above: the same values).
            XCTAssertLessThan(error, 1e-4, "\(testCase.name): imported adapters, relative error \(error)")
        }
    }

    func testAdapterConfigurationFields() throws {
        for testCase in Self.cases {
            let url = try AdapterTestSupport.fixture("peft/\(testCase.name)").appendingPathComponent(AdapterSet.peftConfigurationFile)
            let fields = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
            XCTAssertEqual(fields["task_type"] as? String, "CAUSAL_LM")
            XCTAssertEqual(fields["base_model_name_or_path"] as? String, "Tests/SiloModelsTests/Fixtures/hf/\(testCase.base)")
            if let lora = testCase.lora {
                XCTAssertEqual(fields["peft_type"] as? String, "LORA")
                XCTAssertEqual(fields["r"] as? Int, lora.rank)
                XCTAssertEqual((fields["lora_alpha"] as? NSNumber)?.floatValue, lora.alpha)
                XCTAssertEqual((fields["lora_dropout"] as? NSNumber)?.doubleValue ?? -1, Double("\(lora.dropout)") ?? -2, accuracy: 0)
                XCTAssertEqual(fields["target_modules"] as? [String], lora.targetModules.sorted())
                XCTAssertEqual(fields["bias"] as? String, "none")
                XCTAssertEqual(fields["fan_in_fan_out"] as? Bool, testCase.base == "gpt2", "Conv1D models need fan_in_fan_out")
                XCTAssertEqual(fields["layers_to_transform"] as? [Int], lora.layers)
            } else if let prefix = testCase.prefix {
                XCTAssertEqual(fields["peft_type"] as? String, "PREFIX_TUNING")
                XCTAssertEqual(fields["num_virtual_tokens"] as? Int, prefix.length)
                XCTAssertEqual(fields["num_layers"] as? Int, 2)
                // GQA: PEFT prefixes KVH heads of D: llama_gqa 2 × 8, gpt2 4 × 8.
                XCTAssertEqual(fields["num_attention_heads"] as? Int, testCase.base == "gpt2" ? 4 : 2)
                XCTAssertEqual(fields["token_dim"] as? Int, testCase.base == "gpt2" ? 32 : 16)
                XCTAssertEqual(fields["prefix_projection"] as? Bool, false)
            }
        }
    }

    func testImportErrorsNameTheFileTheFieldAndTheKey() throws {
        let source = try AdapterTestSupport.fixture("peft/llama_gqa_lora")
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("silo-peft-errors-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let configurationText = try String(contentsOf: source.appendingPathComponent(AdapterSet.peftConfigurationFile), encoding: .utf8)
        func folder(_ name: String, configuration: String, tensors: [String: Tensor]?, pickle: Bool = false) throws -> URL {
            let url = directory.appendingPathComponent(name)
            try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
            try configuration.write(to: url.appendingPathComponent(AdapterSet.peftConfigurationFile), atomically: true, encoding: .utf8)
            if let tensors { try SafeTensorsFile.write(tensors, to: url.appendingPathComponent(AdapterSet.peftWeightsFile)) }
            if pickle { try Data([0x80, 0x02]).write(to: url.appendingPathComponent("adapter_model.bin")) }
            return url
        }
        let weights = try SafeTensorsFile(contentsOf: source.appendingPathComponent(AdapterSet.peftWeightsFile))
        var tensors: [String: Tensor] = [:]
        for name in weights.names { tensors[name] = try weights.tensor(name) }
        let key = "base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight"

        func expectError(_ url: URL, _ fragments: [String], line: UInt = #line) throws {
            let (model, _) = try AdapterTestSupport.model("llama_gqa")
            XCTAssertThrowsError(try AdapterSet.importPEFT(from: url, into: model), line: line) { error in
                for fragment in fragments {
                    XCTAssertTrue("\(error)".contains(fragment), "'\(fragment)' not in: \(error)", line: line)
                }
            }
        }
        var wrong = tensors
        wrong[key] = Tensor.zeros([32, 4])
        try expectError(try folder("shape", configuration: configurationText, tensors: wrong), [key, "[32, 4]", "[16, 4]", "adapter_model.safetensors"])
        try expectError(try folder("pickle", configuration: configurationText, tensors: nil, pickle: true), ["adapter_model.bin", "pickle"])
        let dora = configurationText.replacingOccurrences(of: "\"use_dora\" : false", with: "\"use_dora\" : true")
        XCTAssertNotEqual(dora, configurationText)
        try expectError(try folder("dora", configuration: dora, tensors: tensors), ["use_dora", "adapter_config.json"])
        let ia3 = configurationText.replacingOccurrences(of: "\"peft_type\" : \"LORA\"", with: "\"peft_type\" : \"IA3\"")
        try expectError(try folder("ia3", configuration: ia3, tensors: tensors), ["'IA3'"])
        var extra = tensors
        extra["base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight"] = Tensor.zeros([4, 32])
        try expectError(try folder("extra", configuration: configurationText, tensors: extra), ["k_proj.lora_A.weight"])
    }
}
