import Foundation
import XCTest
@testable import SiloModels
@testable import SiloTensor
import SiloTestSupport

/// GPT-2 against PyTorch (Scripts/fixtures/tiny_gpt2.py: a torch model numerically identical to
/// Hugging Face's GPT2LMHeadModel): logits, every parameter's gradient, and 10 AdamW steps of loss.
final class GPT2ReferenceTests: XCTestCase {
    private func fixture() throws -> SafeTensorsFile {
        guard let url = Bundle.module.url(forResource: "tiny_gpt2", withExtension: "safetensors", subdirectory: "Fixtures") else {
            throw XCTSkip("fixture tiny_gpt2.safetensors missing: run `make fixtures`")
        }
        return try SafeTensorsFile(contentsOf: url)
    }

    private let configuration = GPT2Configuration(vocabularySize: 64, maximumPositions: 16, hiddenSize: 32,
                                                  layerCount: 2, headCount: 4)

    private func load(_ file: SafeTensorsFile) throws -> (GPT2Model, [Int32], [Int32]) {
        var weights: [String: Tensor] = [:]
        for (name, _) in configuration.parameterShapes {
            weights[name] = try file.tensor("init." + name)
        }
        let model = try GPT2Model(configuration: configuration, weights: weights)
        let ids = try file.tensor("input_ids").toArray().map { Int32($0) }
        let targets = try file.tensor("targets").toArray().map { Int32($0) }
        return (model, ids, targets)
    }

    func testLogitsAndGradientsMatchPyTorch() throws {
        let file = try fixture()
        let (model, ids, targets) = try load(file)
        let logits = try model.logits(ids: ids, batch: 2, time: 8)
        let logitError = assertClose(logits.toArray(), try file.tensor("logits").toArray(), relative: 1e-4, absolute: 1e-5, "logits")
        XCTAssertLessThan(logitError, 1e-4)
        let loss = try model.loss(ids: ids, targets: targets, batch: 2, time: 8)
        XCTAssertEqual(Double(loss.scalar), Double(try file.tensor("losses").toArray()[0]), accuracy: 1e-5)
        try loss.backward()
        var worst: Float = 0
        for (name, _) in configuration.parameterShapes {
            let grad = try XCTUnwrap(model.weights[name]?.grad, "no gradient for \(name)")
            worst = max(worst, assertClose(grad.toArray(), try file.tensor("grad." + name).toArray(),
                                           relative: 1e-3, absolute: 1e-5, "grad.\(name)"))
        }
        XCTAssertLessThan(worst, 1e-4, "largest gradient error \(worst)")
    }

    func testTenAdamWStepsMatchPyTorchLosses() throws {
        let file = try fixture()
        let (model, ids, targets) = try load(file)
        let optimizer = try AdamW(parameters: model.parameters, learningRate: 1e-2, betas: (0.9, 0.999),
                              epsilon: 1e-8, weightDecay: 0.01)
        var losses: [Float] = []
        for _ in 0..<10 {
            optimizer.zeroGrad()
            let loss = try model.loss(ids: ids, targets: targets, batch: 2, time: 8)
            try loss.backward()
            try optimizer.step()
            losses.append(loss.scalar)
        }
        let lossError = assertClose(losses, try file.tensor("losses").toArray(), relative: 1e-4, absolute: 1e-5, "losses")
        XCTAssertLessThan(lossError, 1e-4)
        var worst: Float = 0
        for (name, _) in configuration.parameterShapes {
            var actual = try XCTUnwrap(model.weights[name]).toArray()
            var expected = try file.tensor("final." + name).toArray()
            if name.hasSuffix("attn.c_attn.bias") {
                // The key bias adds q·b_k to every score of a row, which softmax ignores: its true
                // gradient is exactly 0, both sides hold round-off noise (~1e-9), and Adam turns the
                // sign of that noise into ±lr steps. Compare the query and value biases only.
                actual.removeSubrange(32..<64)
                expected.removeSubrange(32..<64)
            }
            worst = max(worst, assertClose(actual, expected, relative: 1e-3, absolute: 1e-4, "final.\(name)"))
        }
        XCTAssertLessThan(worst, 1e-3, "largest final-weight error \(worst)")
    }

    func testMissingAndMisShapedWeightsNameTheKey() throws {
        var weights: [String: Tensor] = [:]
        for (name, shape) in configuration.parameterShapes { weights[name] = Tensor.zeros(shape) }
        weights["h.1.mlp.c_fc.weight"] = Tensor.zeros([32, 127])
        XCTAssertThrowsError(try GPT2Model(configuration: configuration, weights: weights)) { error in
            XCTAssertTrue("\(error)".contains("h.1.mlp.c_fc.weight") && "\(error)".contains("[32, 128]")
                          && "\(error)".contains("[32, 127]"), "\(error)")
        }
        weights["h.1.mlp.c_fc.weight"] = nil
        XCTAssertThrowsError(try GPT2Model(configuration: configuration, weights: weights)) { error in
            XCTAssertTrue("\(error)".contains("h.1.mlp.c_fc.weight") && "\(error)".contains("missing"), "\(error)")
        }
    }
}
