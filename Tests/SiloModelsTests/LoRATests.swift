import Foundation
import XCTest
import SiloTensor
import SiloTestSupport
@testable import SiloModels

/// Helpers shared by the adapter tests (LoRATests, PrefixTuningTests, PEFTTests).
enum AdapterTestSupport {
    /// Tests/SiloModelsTests/Fixtures/<subfolder> in the test bundle.
    static func fixture(_ subfolder: String) throws -> URL {
        guard let root = Bundle.module.url(forResource: "Fixtures", withExtension: nil) else {
            throw XCTSkip("Fixtures are missing from the test bundle")
        }
        let url = root.appendingPathComponent(subfolder)
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw XCTSkip("fixture \(subfolder) is missing: see Scripts/fixtures/hf_models.py and peft_lora.py")
        }
        return url
    }

    /// A tiny Hugging Face checkpoint of Scripts/fixtures/hf_models.py (llama_gqa: L 2, C 32, 4 heads,
    /// 2 KV heads, D 8, V 96; gpt2: L 2, C 32, 4 heads, V 96), and its (2, 7) reference input ids.
    static func model(_ name: String) throws -> (model: any LanguageModel, ids: [Int32]) {
        let folder = try fixture("hf/" + name)
        let model = try Checkpoint.load(folder)
        let reference = try SafeTensorsFile(contentsOf: folder.appendingPathComponent("reference.safetensors"))
        return (model, try reference.tensor("input_ids").toArray().map { Int32($0) })
    }

    /// A random GPT-2 whose every tensor is a trainable leaf (to check that attaching freezes them).
    static func randomGPT2(seed: UInt64 = 3) throws -> GPT2Model {
        try GPT2Model(configuration: GPT2Configuration(vocabularySize: 11, maximumPositions: 16, hiddenSize: 8,
                                                       layerCount: 3, headCount: 2),
                      key: RandomKey(seed: seed), trainable: true)
    }

    /// Next-token targets for rows of `time` ids: ids shifted left, −100 at each row's last position.
    static func targets(_ ids: [Int32], time: Int) -> [Int32] {
        ids.indices.map { index in (index + 1) % time == 0 ? -100 : ids[index + 1] }
    }

    /// max |a − e| / max |e|.
    static func relativeError(_ actual: Tensor, _ expected: Tensor) -> Float {
        let a = actual.toArray(), e = expected.toArray()
        precondition(a.count == e.count, "relativeError: \(actual.shape) vs \(expected.shape)")
        let scale = max(e.map(abs).max() ?? 1, 1e-30)
        return (zip(a, e).map { abs($0 - $1) }.max() ?? 0) / scale
    }

    /// Central finite differences of `loss` (Float64) against the analytic gradient of `tensor` (a leaf
    /// of the set, perturbed in place) at up to `samples` seeded positions; returns the largest absolute
    /// error and the largest |gradient| seen (so a test can tell a zero gradient from a checked one).
    static func finiteDifferenceError(of tensor: Tensor, samples: Int = 24, epsilon: Float = 1e-2, seed: UInt64 = 5,
                                      loss: () throws -> Double) throws -> (error: Double, largest: Double) {
        guard let analytic = tensor.grad?.toArray() else {
            XCTFail("tensor of shape \(tensor.shape) received no gradient")
            return (.infinity, 0)
        }
        var generator = SeededGenerator(seed: seed)
        let positions = tensor.count <= samples ? Array(0..<tensor.count)
            : (0..<samples).map { _ in Int(generator.next() % UInt64(tensor.count)) }
        var worst = 0.0, largest = 0.0
        for position in positions {
            let original = tensor.pointer[position]
            tensor.pointer[position] = original + epsilon
            let plus = try Tensor.withoutGradients { try loss() }
            tensor.pointer[position] = original - epsilon
            let minus = try Tensor.withoutGradients { try loss() }
            tensor.pointer[position] = original
            let numeric = (plus - minus) / (2 * Double(epsilon))
            worst = max(worst, abs(numeric - Double(analytic[position])))
            largest = max(largest, abs(Double(analytic[position])))
        }
        return (worst, largest)
    }
}

/// LoRA layers (PEFT's formula and initialisation), merging, attaching to Llama and GPT-2 models, the
/// trainable-tensor list, save/load.
final class LoRATests: XCTestCase {
    private func randomLinear(out: Int, in inputs: Int, bias: Bool = true, seed: UInt64 = 1) -> Linear {
        let key = RandomKey(seed: seed)
        return Linear(weight: Tensor.randomNormal([out, inputs], key: key.split(0)),
                      bias: bias ? Tensor.randomNormal([out], key: key.split(1)) : nil)
    }

    // MARK: The layer

    func testFreshAdapterGivesExactlyTheBaseOutputAndPEFTInitialisation() throws {
        let linear = randomLinear(out: 6, in: 25)
        let lora = try LoRALinear(wrapping: linear, rank: 4, alpha: 8, key: RandomKey(seed: 9))
        let x = Tensor.randomNormal([2, 3, 25], key: RandomKey(seed: 2))
        // B = 0: the update is exactly zero, so y = x·Wᵀ + b bit for bit.
        XCTAssertEqual(try lora(x).toArray(), try linear(x).toArray())
        XCTAssertEqual(lora.loraB.toArray(), Array(repeating: 0, count: 24))
        // A kaiming-uniform with a = √5: bound = √(6 / ((1 + 5)·C)) = 1/√C = 0.2 for C = 25.
        let a = lora.loraA.toArray()
        XCTAssertEqual(lora.loraA.shape, [4, 25])
        XCTAssertLessThanOrEqual(a.map(abs).max() ?? 1, 0.2)
        XCTAssertGreaterThan(a.map(abs).max() ?? 0, 0.18, "100 uniform draws in ±0.2 reach near the bound")
        XCTAssertEqual(Double(a.reduce(0, +)) / 100, 0, accuracy: 0.03)
        XCTAssertEqual(lora.scale, 2)
        XCTAssertEqual(lora.namedParameters.map(\.name), ["weight", "bias", "lora_A.weight", "lora_B.weight"])
    }

    func testForwardHandComputed() throws {
        // W = [[1, 2]], b = [0.5], A = [[3, -1]], B = [[2]], α = 1, r = 1 (scale 1), x = [1, 4]:
        // y = x·Wᵀ + b + scale·(x·Aᵀ)·Bᵀ = (1 + 8) + 0.5 + (3 − 4)·2 = 7.5.
        let linear = Linear(weight: try Tensor(shape: [1, 2], values: [1, 2]), bias: Tensor([0.5]))
        let lora = try LoRALinear(wrapping: linear, rank: 1, alpha: 1, key: RandomKey(seed: 0))
        try lora.setParameter("lora_A.weight", to: try Tensor(shape: [1, 2], values: [3, -1]))
        try lora.setParameter("lora_B.weight", to: try Tensor(shape: [1, 1], values: [2]))
        XCTAssertEqual(try lora(try Tensor(shape: [1, 2], values: [1, 4])).toArray(), [7.5])
        // α = 4 with r = 1 scales the update by 4: 9.5 − 4 = 5.5.
        let scaled = try LoRALinear(wrapping: linear, rank: 1, alpha: 4, key: RandomKey(seed: 0))
        try scaled.setParameter("lora_A.weight", to: try Tensor(shape: [1, 2], values: [3, -1]))
        try scaled.setParameter("lora_B.weight", to: try Tensor(shape: [1, 1], values: [2]))
        XCTAssertEqual(try scaled(try Tensor(shape: [1, 2], values: [1, 4])).toArray(), [1.5])
        // A 1-D input is one row.
        XCTAssertEqual(try lora(Tensor([1, 4])).toArray(), [7.5])
        XCTAssertThrowsError(try lora.setParameter("lora_A.weight", to: Tensor.zeros([2, 2]))) { error in
            XCTAssertTrue("\(error)".contains("lora_A.weight") && "\(error)".contains("[2, 2]") && "\(error)".contains("[1, 2]"), "\(error)")
        }
    }

    func testMergedAndFusedForwardEqualTheUnmergedOne() throws {
        let linear = randomLinear(out: 12, in: 10)
        let lora = try LoRALinear(wrapping: linear, rank: 3, alpha: 6, key: RandomKey(seed: 4))
        try lora.setParameter("lora_B.weight", to: Tensor.randomNormal([12, 3], key: RandomKey(seed: 5)))
        let x = Tensor.randomNormal([2, 5, 10], key: RandomKey(seed: 6))
        let unmerged = try lora(x)
        XCTAssertGreaterThan(AdapterTestSupport.relativeError(unmerged, try linear(x)), 1e-2, "the update must matter")
        // fused W' = W + (α/r)·B·A: x·W'ᵀ = x·Wᵀ + 2·x·Aᵀ·Bᵀ up to rounding.
        let fused = try lora.fused()
        XCTAssertLessThan(AdapterTestSupport.relativeError(try fused(x), unmerged), 1e-6)
        try lora.merge()
        XCTAssertTrue(lora.isMerged)
        let merged = try lora(x)
        let error = AdapterTestSupport.relativeError(merged, unmerged)
        // Seen: ~1e-7.
        XCTAssertLessThan(error, 1e-6)
        XCTAssertEqual(lora.namedParameters[0].tensor.toArray(), fused.weight.toArray(), "merged weight is listed as the weight")
        lora.unmerge()
        XCTAssertEqual(try lora(x).toArray(), unmerged.toArray(), "unmerge is exact")
        XCTAssertEqual(lora.base.weight.toArray(), linear.weight.toArray())
        // ΔW by hand for one element: Δ[i][j] = scale · Σ_r B[i][r]·A[r][j].
        let a = lora.loraA.toArray(), b = lora.loraB.toArray()
        var sum: Float = 0
        for r in 0..<3 { sum += b[7 * 3 + r] * a[r * 10 + 4] }
        let expected: Float = 2 * sum
        XCTAssertEqual(try lora.deltaWeight()[7, 4], expected, accuracy: 1e-6)
    }

    func testDropoutIsSeededPerCallAndOffWhenEvaluating() throws {
        let linear = randomLinear(out: 4, in: 16)
        func make() throws -> LoRALinear {
            let lora = try LoRALinear(wrapping: linear, rank: 2, alpha: 2, dropout: 0.5, key: RandomKey(seed: 8))
            try lora.setParameter("lora_B.weight", to: Tensor.randomNormal([4, 2], key: RandomKey(seed: 1)))
            return lora
        }
        let first = try make(), second = try make()
        let x = Tensor.randomNormal([3, 16], key: RandomKey(seed: 3))
        let call0 = try first(x), call1 = try first(x)
        XCTAssertEqual(try second(x).toArray(), call0.toArray(), "same key, same call index, same mask")
        XCTAssertEqual(try second(x).toArray(), call1.toArray())
        XCTAssertNotEqual(call0.toArray(), call1.toArray(), "each call draws a new mask")
        XCTAssertEqual(first.dropoutCalls, 2)
        // Off: the plain formula (p = 0) and no mask drawn.
        first.isTraining = false
        let evaluation = try first(x)
        let noDropout = try LoRALinear(wrapping: linear, rank: 2, alpha: 2, dropout: 0, key: RandomKey(seed: 8))
        try noDropout.setParameter("lora_B.weight", to: first.loraB)
        XCTAssertEqual(evaluation.toArray(), try noDropout(x).toArray())
        XCTAssertEqual(first.dropoutCalls, 2)
        // Nor without gradient recording (evaluation, generation), even in training mode.
        first.isTraining = true
        XCTAssertEqual(try Tensor.withoutGradients { try first(x) }.toArray(), evaluation.toArray())
        XCTAssertEqual(first.dropoutCalls, 2)
        // Inverted dropout keeps the base output: y − x·Wᵀ − b is the only part that changes.
        XCTAssertNotEqual(call0.toArray(), evaluation.toArray())
        XCTAssertThrowsError(try LoRALinear(wrapping: linear, rank: 2, alpha: 2, dropout: 1, key: RandomKey(seed: 0)))
        XCTAssertThrowsError(try LoRALinear(wrapping: linear, rank: 0, alpha: 2, key: RandomKey(seed: 0)))
    }

    // MARK: Attaching

    func testAttachToLlamaUsesPEFTNamesAndFreezesTheBase() throws {
        let (model, _) = try AdapterTestSupport.model("llama_gqa")
        let set = try AdapterSet.attachLoRA(to: model, configuration: LoRAConfiguration(rank: 4, alpha: 8),
                                            key: RandomKey(seed: 1))
        XCTAssertEqual(set.parameterNames, [
            "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
            "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight",
            "base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight",
            "base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight",
            "base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight",
            "base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight",
            "base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight",
            "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight",
        ])
        // q_proj (H·D = 32, C = 32), v_proj (KVH·D = 16, C = 32).
        XCTAssertEqual(set.trainableTensors.map(\.shape), [[4, 32], [32, 4], [4, 32], [16, 4], [4, 32], [32, 4], [4, 32], [16, 4]])
        XCTAssertEqual(set.parameterCount, 2 * (128 + 128 + 128 + 64))
        XCTAssertTrue(model.linearLayer(named: "model.layers.1.self_attn.v_proj") is LoRALinear)
        XCTAssertTrue(model.linearLayer(named: "model.layers.1.self_attn.k_proj") is Linear)
        // The model lists the adapter tensors under its own names.
        XCTAssertTrue(model.namedParameters().contains { $0.name == "model.layers.0.self_attn.q_proj.lora_B.weight" })
        // Attaching twice is refused; a target that matches nothing names what exists.
        XCTAssertThrowsError(try AdapterSet.attachLoRA(to: model, configuration: LoRAConfiguration(), key: RandomKey(seed: 1))) { error in
            XCTAssertTrue("\(error)".contains("already carries"), "\(error)")
        }
        XCTAssertThrowsError(try AdapterSet.attachLoRA(to: model, configuration: LoRAConfiguration(targetModules: ["query"]), key: RandomKey(seed: 1))) { error in
            XCTAssertTrue("\(error)".contains("q_proj") && "\(error)".contains("query"), "\(error)")
        }
    }

    func testAttachToGPT2CAttnAndASubsetOfBlocks() throws {
        let model = try AdapterTestSupport.randomGPT2()
        XCTAssertTrue(model.namedParameters().allSatisfy { $0.tensor.requiresGrad }, "the random model starts trainable")
        let set = try AdapterSet.attachLoRA(to: model, configuration: LoRAConfiguration(rank: 2, alpha: 4, targetModules: ["c_attn", "mlp.c_proj"], layers: [0, 2]),
                                            key: RandomKey(seed: 1))
        XCTAssertEqual(set.parameterNames, [
            "base_model.model.transformer.h.0.attn.c_attn.lora_A.weight",
            "base_model.model.transformer.h.0.attn.c_attn.lora_B.weight",
            "base_model.model.transformer.h.0.mlp.c_proj.lora_A.weight",
            "base_model.model.transformer.h.0.mlp.c_proj.lora_B.weight",
            "base_model.model.transformer.h.2.attn.c_attn.lora_A.weight",
            "base_model.model.transformer.h.2.attn.c_attn.lora_B.weight",
            "base_model.model.transformer.h.2.mlp.c_proj.lora_A.weight",
            "base_model.model.transformer.h.2.mlp.c_proj.lora_B.weight",
        ])
        // c_attn: in C = 8, out 3C = 24 (nn.Linear orientation, as PEFT with fan_in_fan_out).
        XCTAssertEqual(set.trainableTensors[0].shape, [2, 8])
        XCTAssertEqual(set.trainableTensors[1].shape, [24, 2])
        XCTAssertEqual(set.trainableTensors[2].shape, [2, 32])
        XCTAssertEqual(set.trainableTensors[3].shape, [8, 2])
        // Everything but the adapters is frozen.
        let trainable = model.namedParameters().filter { $0.tensor.requiresGrad }.map(\.name)
        XCTAssertEqual(trainable.count, 8)
        XCTAssertTrue(trainable.allSatisfy { $0.contains(".lora_") }, "\(trainable)")
        // Stages of split learning: the client keeps blocks 0 and 2, the server block 1.
        XCTAssertEqual(try set.restricted(to: [.embedding, .block(0)]).parameterNames.count, 4)
        XCTAssertEqual(try set.restricted(to: [.block(1)]).parameterCount, 0)
        XCTAssertEqual(try set.restricted(to: [.block(2), .head]).parameterNames, Array(set.parameterNames.suffix(4)))
    }

    func testSameKeyGivesTheSameAdaptersOnEveryParty() throws {
        // A client that loaded only block 0 and a server that loaded blocks 1–2 draw the same A as the
        // whole model does.
        let whole = try AdapterTestSupport.randomGPT2()
        let all = try AdapterSet.attachLoRA(to: whole, configuration: LoRAConfiguration(rank: 2, targetModules: ["c_attn"]), key: RandomKey(seed: 4))
        let weights = try TensorDictionary(Dictionary(uniqueKeysWithValues: AdapterTestSupport.randomGPT2().weights.map { ($0.key, $0.value.detached()) }))
        let configuration = whole.configuration
        let client = try GPT2Model(configuration: configuration, weights: weights, stages: [.embedding, .block(0)])
        let server = try GPT2Model(configuration: configuration, weights: weights, stages: [.block(1), .block(2)])
        let clientSet = try AdapterSet.attachLoRA(to: client, configuration: LoRAConfiguration(rank: 2, targetModules: ["c_attn"]), key: RandomKey(seed: 4))
        let serverSet = try AdapterSet.attachLoRA(to: server, configuration: LoRAConfiguration(rank: 2, targetModules: ["c_attn"]), key: RandomKey(seed: 4))
        XCTAssertEqual(clientSet.parameterNames + serverSet.parameterNames, all.parameterNames)
        XCTAssertEqual((clientSet.trainableTensors + serverSet.trainableTensors).map { $0.toArray() },
                       all.trainableTensors.map { $0.toArray() })
    }

    // MARK: Gradients

    func testOnlyAdaptersReceiveGradientsAndTheOptimizerStateIsTheirs() throws {
        let (model, ids) = try AdapterTestSupport.model("llama_gqa")
        try model.makeTrainable()  // even a trainable model is frozen by attaching
        let set = try AdapterSet.attachLoRA(to: model, configuration: LoRAConfiguration(rank: 4, alpha: 8), key: RandomKey(seed: 1))
        let loss = try model.loss(ids: ids, targets: AdapterTestSupport.targets(ids, time: 7), batch: 2, time: 7)
        try loss.backward()
        for (name, tensor) in model.namedParameters() {
            if name.contains(".lora_") {
                XCTAssertNotNil(tensor.grad, name)
            } else {
                XCTAssertFalse(tensor.requiresGrad, name)
                XCTAssertNil(tensor.grad, name)
            }
        }
        // B = 0 at first: dL/dA = scale · Bᵀ·(dL/dy)ᵀ·x = 0, while dL/dB ≠ 0.
        let gradients = set.trainableTensors.map { $0.grad?.toArray() ?? [] }
        XCTAssertEqual(gradients[0].map(abs).max(), 0)
        XCTAssertGreaterThan(gradients[1].map(abs).max() ?? 0, 1e-4)
        let base = model.linearLayer(named: "model.layers.0.self_attn.q_proj").flatMap { ($0 as? LoRALinear)?.base.weight.toArray() }
        let optimizer = try AdamW(groups: [ParameterGroup(parameters: set.trainableTensors, names: set.parameterNames)], learningRate: 1e-2)
        try optimizer.step()
        XCTAssertEqual(Set(optimizer.state().keys.map { String($0.prefix(while: { $0 != "." })) }), ["base_model"])
        XCTAssertEqual(optimizer.state().count, 3 * set.trainableTensors.count)
        XCTAssertEqual(model.linearLayer(named: "model.layers.0.self_attn.q_proj").flatMap { ($0 as? LoRALinear)?.base.weight.toArray() }, base)
        XCTAssertNotEqual(set.trainableTensors[1].toArray(), Array(repeating: 0, count: 128), "the optimizer wrote B in place")
    }

    func testGradientsOfAAndBMatchFiniteDifferences() throws {
        // loss = Σ logits ⊙ R for fixed random R, through a 3-block GPT-2 with LoRA on c_attn and mlp.c_fc.
        let model = try AdapterTestSupport.randomGPT2(seed: 11)
        let set = try AdapterSet.attachLoRA(to: model, configuration: LoRAConfiguration(rank: 3, alpha: 6, targetModules: ["c_attn", "c_fc"]),
                                            key: RandomKey(seed: 2))
        // Non-zero B so that A has a gradient too.
        for (index, (name, tensor)) in set.parameters.enumerated() where name.contains("lora_B") {
            AdapterSet.write(Tensor.randomNormal(tensor.shape, standardDeviation: 0.5, key: RandomKey(seed: UInt64(index))), into: tensor)
        }
        let ids: [Int32] = [1, 5, 9, 2, 7, 3, 10, 4]
        let projection = Tensor.randomUniform([2, 4, 11], low: -1, high: 1, key: RandomKey(seed: 77)).toArray()
        func loss() throws -> Double {
            let logits = try model.logits(ids: ids, batch: 2, time: 4).toArray()
            return zip(logits, projection).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
        }
        let logits = try model.logits(ids: ids, batch: 2, time: 4)
        try logits.backward(seed: try Tensor(shape: [2, 4, 11], values: projection))
        var worst = 0.0
        for (name, tensor) in set.parameters {
            let (error, largest) = try AdapterTestSupport.finiteDifferenceError(of: tensor, epsilon: 3e-3, loss: loss)
            XCTAssertGreaterThan(largest, 1e-3, "\(name): the gradient must not vanish")
            worst = max(worst, error)
        }
        // Seen: 4.8e-4 on gradients up to 0.39 (block 0's A; the others ≤ 2e-5). With ε = 1e-2 it was
        // 5.4e-3: the error shrinks as ε², central-difference truncation, not a wrong gradient.
        XCTAssertLessThan(worst, 1e-3)
    }

    // MARK: Save and load

    func testSaveLoadRoundTripAndLoadErrorsNameTheKey() throws {
        let (model, ids) = try AdapterTestSupport.model("llama_gqa")
        let configuration = LoRAConfiguration(rank: 4, alpha: 8, dropout: 0.1, targetModules: ["q_proj", "v_proj", "o_proj"], layers: [1])
        let set = try AdapterSet.attachLoRA(to: model, configuration: configuration, key: RandomKey(seed: 1))
        for (index, tensor) in set.trainableTensors.enumerated() {
            AdapterSet.write(Tensor.randomNormal(tensor.shape, standardDeviation: 0.3, key: RandomKey(seed: UInt64(index))), into: tensor)
        }
        set.setTraining(false)
        let expected = try Tensor.withoutGradients { try model.logits(ids: ids, batch: 2, time: 7) }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("silo-lora-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let url = directory.appendingPathComponent("adapter.safetensors")
        try set.save(to: url)
        let file = try SafeTensorsFile(contentsOf: url)
        XCTAssertEqual(file.names, set.parameterNames.sorted())
        XCTAssertTrue(file.metadata["silo.adapter"]?.contains("\"lora_alpha\":8") ?? false, "\(file.metadata)")

        // Into a fresh model: attach from the file's own configuration, same logits.
        let (fresh, _) = try AdapterTestSupport.model("llama_gqa")
        let loaded = try AdapterSet.load(contentsOf: url, attachingTo: fresh)
        XCTAssertEqual(loaded.loraConfiguration, configuration)
        XCTAssertEqual(loaded.parameterNames, set.parameterNames)
        loaded.setTraining(false)
        XCTAssertEqual(try Tensor.withoutGradients { try fresh.logits(ids: ids, batch: 2, time: 7) }.toArray(), expected.toArray())
        // Into an existing set: in place (the optimizer's tensors see the values).
        let tensorBefore = loaded.trainableTensors[0]
        AdapterSet.write(Tensor.zeros(tensorBefore.shape), into: tensorBefore)
        try loaded.load(contentsOf: url)
        XCTAssertEqual(tensorBefore.toArray(), set.trainableTensors[0].toArray())

        // A wrong shape names the key and both shapes; a missing key names the key; an extra key too.
        var tensors = Dictionary(uniqueKeysWithValues: set.values().map { ($0.name, $0.tensor) })
        let victim = "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"
        tensors[victim] = Tensor.zeros([16, 5])
        let bad = directory.appendingPathComponent("bad.safetensors")
        try SafeTensorsFile.write(tensors, to: bad)
        XCTAssertThrowsError(try loaded.load(contentsOf: bad)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains(victim) && text.contains("[16, 5]") && text.contains("[16, 4]") && text.contains("bad.safetensors"), text)
        }
        tensors[victim] = nil
        try SafeTensorsFile.write(tensors, to: bad)
        XCTAssertThrowsError(try loaded.load(contentsOf: bad)) { error in
            XCTAssertTrue("\(error)".contains(victim) && "\(error)".contains("missing"), "\(error)")
        }
        tensors[victim] = Tensor.zeros([16, 4])
        tensors["base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight"] = Tensor.zeros([4, 32])
        try SafeTensorsFile.write(tensors, to: bad)
        XCTAssertThrowsError(try loaded.load(contentsOf: bad)) { error in
            XCTAssertTrue("\(error)".contains("layers.0.self_attn.k_proj.lora_A.weight"), "\(error)")
        }
        XCTAssertEqual(tensorBefore.toArray(), set.trainableTensors[0].toArray(), "a failed load writes nothing")
        // A configuration mismatch names the field.
        let (other, _) = try AdapterTestSupport.model("llama_gqa")
        let otherSet = try AdapterSet.attachLoRA(to: other, configuration: LoRAConfiguration(rank: 4, alpha: 16, targetModules: ["q_proj", "v_proj", "o_proj"], layers: [1]), key: RandomKey(seed: 1))
        XCTAssertThrowsError(try otherSet.load(contentsOf: url)) { error in
            XCTAssertTrue("\(error)".contains("lora_alpha 8.0") && "\(error)".contains("16.0"), "\(error)")
        }
    }

    func testFlattenedValuesAndRemoval() throws {
        let model = try AdapterTestSupport.randomGPT2()
        let baseLogits = try Tensor.withoutGradients { try model.logits(ids: [1, 2, 3], batch: 1, time: 3) }
        let set = try AdapterSet.attachLoRA(to: model, configuration: LoRAConfiguration(rank: 2, targetModules: ["c_attn"]), key: RandomKey(seed: 1))
        let flat = set.flattenedValues()
        XCTAssertEqual(flat.shape, [set.parameterCount])
        XCTAssertEqual(Array(flat.toArray().prefix(16)), set.trainableTensors[0].toArray())
        let replaced = Tensor.randomNormal([set.parameterCount], key: RandomKey(seed: 3))
        try set.assign(flattenedValues: replaced)
        XCTAssertEqual(set.flattenedValues().toArray(), replaced.toArray())
        XCTAssertThrowsError(try set.assign(flattenedValues: Tensor.zeros([3])))
        let adapted = try Tensor.withoutGradients { try model.logits(ids: [1, 2, 3], batch: 1, time: 3) }
        XCTAssertGreaterThan(AdapterTestSupport.relativeError(adapted, baseLogits), 1e-3)
        // Merging into the model keeps the logits; removing without merging restores the base model.
        try set.remove(from: model, merging: true)
        XCTAssertTrue(model.linearLayer(named: "h.0.attn.c_attn") is Linear)
        XCTAssertLessThan(AdapterTestSupport.relativeError(try Tensor.withoutGradients { try model.logits(ids: [1, 2, 3], batch: 1, time: 3) }, adapted), 1e-5)
        let other = try AdapterTestSupport.randomGPT2()
        let otherSet = try AdapterSet.attachLoRA(to: other, configuration: LoRAConfiguration(rank: 2, targetModules: ["c_attn"]), key: RandomKey(seed: 1))
        try otherSet.assign(flattenedValues: replaced)
        try otherSet.remove(from: other, merging: false)
        XCTAssertEqual(try Tensor.withoutGradients { try other.logits(ids: [1, 2, 3], batch: 1, time: 3) }.toArray(), baseLogits.toArray())
    }
}
