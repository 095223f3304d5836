import Foundation
import XCTest
@testable import SiloTensor

/// AdamW, SGD, gradient clipping and learning-rate schedules against PyTorch
/// (Scripts/fixtures/optimizers.py writes Fixtures/optimizers.safetensors; its docstring lists the
/// hyperparameters repeated here).
final class OptimizerTests: XCTestCase {
    private static let names = ["w", "b", "n"]
    private static let steps = 10

    private var fixture: [String: Tensor] = [:]

    override func setUpWithError() throws {
        guard let url = Bundle.module.url(forResource: "optimizers", withExtension: "safetensors", subdirectory: "Fixtures") else {
            throw XCTSkip("Fixtures/optimizers.safetensors is missing: run Scripts/fixtures/optimizers.py")
        }
        fixture = try readFixture(url)
    }

    private func tensor(_ key: String) throws -> Tensor {
        guard let value = fixture[key] else {
            throw TensorError(.notFound, "fixture key '\(key)' is missing")
        }
        return value
    }

    /// Fresh leaves holding the fixture's initial parameters, in the order w, b, n.
    private func makeParameters() throws -> [Tensor] {
        try Self.names.map { try tensor("param.\($0)").contiguousCopy().requiringGrad() }
    }

    /// Row `step` of a (steps, …) fixture tensor.
    private func row(_ key: String, _ step: Int) throws -> [Float] {
        let all = try tensor(key)
        let size = all.count / all.shape[0]
        return Array(all.toArray()[step * size ..< (step + 1) * size])
    }

    /// Sets the gradients of step `step` (b has none at the fixture's skip steps).
    private func setGradients(_ parameters: [Tensor], step: Int) throws {
        let skipped = try tensor("skip.b").toArray().map { Int($0) }
        for (name, parameter) in zip(Self.names, parameters) {
            if name == "b" && skipped.contains(step) {
                parameter.setGrad(nil)
            } else {
                parameter.setGrad(try Tensor(shape: parameter.shape, values: try row("grad.\(name)", step)))
            }
        }
    }

    /// Runs `steps` steps from step `first`, comparing every parameter with the fixture run `run`.
    @discardableResult
    private func runAndCompare(_ optimizer: any Optimizer, _ parameters: [Tensor], run: String,
                               from first: Int = 0, steps: Int = OptimizerTests.steps,
                               file: StaticString = #filePath, line: UInt = #line) throws -> Float {
        var maximum: Float = 0
        for step in first..<(first + steps) {
            optimizer.zeroGrad()
            try setGradients(parameters, step: step)
            try optimizer.step()
            for (name, parameter) in zip(Self.names, parameters) {
                let expected = try row("\(run).\(name)", step)
                let error = assertClose(parameter.toArray(), expected, relative: 1e-5, absolute: 1e-6,
                                        "\(run).\(name) after step \(step)", file: file, line: line)
                maximum = max(maximum, error)
            }
        }
        return maximum
    }

    // MARK: AdamW and SGD against torch.optim

    func testAdamWWithNoDecayGroupMatchesTorch() throws {
        let p = try makeParameters()
        let optimizer = try AdamW(groups: [ParameterGroup(parameters: [p[0]], names: ["w"]),
                                           ParameterGroup(parameters: [p[1], p[2]], names: ["b", "n"], weightDecay: 0)],
                                  learningRate: 0.05, betas: (0.9, 0.95), epsilon: 1e-8, weightDecay: 0.1)
        XCTAssertEqual(optimizer.parameterWeightDecays, [0.1, 0, 0])
        let error = try runAndCompare(optimizer, p, run: "adamw")
        XCTAssertLessThan(error, 5e-7)  // seen: 1.2e-7 (1 ulp at |p| ≈ 1)
        // b missed two steps, so it took 8: its bias correction uses t = 8, as torch's.
        XCTAssertEqual((0..<3).map { optimizer.stepCount(ofParameter: $0) }, [10, 8, 10])
    }

    func testAdamWDefaultGroupMatchesTorch() throws {
        let p = try makeParameters()
        let optimizer = try AdamW(parameters: p, learningRate: 0.01, betas: (0.9, 0.999), epsilon: 1e-6, weightDecay: 0.01)
        XCTAssertEqual(optimizer.parameterNames, ["0", "1", "2"])
        let error = try runAndCompare(optimizer, p, run: "adamw_default")
        XCTAssertLessThan(error, 5e-7)  // seen: 1.2e-7
    }

    func testSGDWithMomentumAndDampeningMatchesTorch() throws {
        let p = try makeParameters()
        let optimizer = try SGD(parameters: p, learningRate: 0.1, momentum: 0.9, dampening: 0.1, weightDecay: 0.01)
        let error = try runAndCompare(optimizer, p, run: "sgd")
        XCTAssertLessThan(error, 1e-6)  // seen: 2.4e-7
    }

    func testSGDNesterovWithNoDecayGroupMatchesTorch() throws {
        let p = try makeParameters()
        let optimizer = try SGD(groups: [ParameterGroup(parameters: [p[0]]),
                                         ParameterGroup(parameters: [p[1], p[2]], weightDecay: 0)],
                                learningRate: 0.1, momentum: 0.9, weightDecay: 0.01, nesterov: true)
        let error = try runAndCompare(optimizer, p, run: "sgd_nesterov")
        XCTAssertLessThan(error, 1e-6)  // seen: 4.8e-7
    }

    func testPlainSGDMatchesTorch() throws {
        let p = try makeParameters()
        let optimizer = try SGD(parameters: p, learningRate: 0.1)
        try runAndCompare(optimizer, p, run: "sgd_plain")
        XCTAssertTrue(optimizer.state().isEmpty, "plain SGD keeps no state")
    }

    // MARK: State

    func testExportedStateMatchesTorchState() throws {
        let p = try makeParameters()
        let adam = try AdamW(groups: [ParameterGroup(parameters: [p[0]], names: ["w"]),
                                      ParameterGroup(parameters: [p[1], p[2]], names: ["b", "n"], weightDecay: 0)],
                             learningRate: 0.05, betas: (0.9, 0.95), epsilon: 1e-8, weightDecay: 0.1)
        try runAndCompare(adam, p, run: "adamw")
        let state = adam.state()
        XCTAssertEqual(Set(state.keys), Set(Self.names.flatMap { ["\($0).step", "\($0).exp_avg", "\($0).exp_avg_sq"] }))
        for key in state.keys.sorted() {
            let exported = try XCTUnwrap(state[key])
            let expected = try tensor("adamw.state.\(key)")
            XCTAssertEqual(exported.shape, expected.shape, key)
            assertClose(exported.toArray(), expected.toArray(), relative: 1e-5, absolute: 1e-7, key)
        }
        XCTAssertEqual(state["b.step"]?.scalar, 8)

        let q = try makeParameters()
        let sgd = try SGD(groups: [ParameterGroup(parameters: q, names: Self.names)], learningRate: 0.1,
                          momentum: 0.9, dampening: 0.1, weightDecay: 0.01)
        try runAndCompare(sgd, q, run: "sgd")
        for name in Self.names {
            let exported = try XCTUnwrap(sgd.state()["\(name).momentum_buffer"])
            assertClose(exported.toArray(), try tensor("sgd.state.\(name).momentum_buffer").toArray(),
                        relative: 1e-5, absolute: 1e-6, "\(name).momentum_buffer")
        }
    }

    /// Five steps, export, rebuild the optimizer over copies of the parameters, import, five more
    /// steps: the result is bit-identical to ten uninterrupted steps.
    func testStateRoundTripResumesExactly() throws {
        for kind in ["adamw", "sgd"] {
            func make(_ parameters: [Tensor]) throws -> any Optimizer {
                kind == "adamw"
                    ? try AdamW(parameters: parameters, learningRate: 0.01, betas: (0.9, 0.999), epsilon: 1e-6, weightDecay: 0.01)
                    : try SGD(parameters: parameters, learningRate: 0.1, momentum: 0.9, dampening: 0.1, weightDecay: 0.01)
            }
            let run = kind == "adamw" ? "adamw_default" : "sgd"
            let straight = try makeParameters()
            try runAndCompare(try make(straight), straight, run: run)

            let first = try makeParameters()
            let before = try make(first)
            try runAndCompare(before, first, run: run, steps: 5)
            let midpoint = first.map { $0.toArray() }
            let saved = before.state()
            // The snapshot is a copy: a further step must not change it.
            let snapshot = saved.mapValues { $0.toArray() }
            try setGradients(first, step: 5)
            try before.step()
            XCTAssertEqual(before.state().count, saved.count)
            XCTAssertEqual(saved.mapValues { $0.toArray() }, snapshot, "state() must return copies")

            let resumed = try first.indices.map { index in
                try Tensor(shape: first[index].shape, values: midpoint[index]).requiringGrad()
            }
            let after = try make(resumed)
            try after.load(state: saved)
            try runAndCompare(after, resumed, run: run, from: 5, steps: 5)
            for (a, b) in zip(resumed, straight) {
                XCTAssertEqual(a.toArray(), b.toArray(), "\(kind): resumed run differs from the uninterrupted one")
            }
        }
    }

    func testLoadStateRejectsBadKeysAndShapes() throws {
        let p = try makeParameters()
        let optimizer = try AdamW(groups: [ParameterGroup(parameters: p, names: Self.names)], learningRate: 0.01)
        try setGradients(p, step: 0)
        try optimizer.step()
        let good = optimizer.state()

        var wrongShape = good
        wrongShape["w.exp_avg"] = Tensor.zeros([7, 5])
        XCTAssertThrowsError(try optimizer.load(state: wrongShape)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("'w.exp_avg'") && text.contains("[5, 7]") && text.contains("[7, 5]"), text)
        }
        var unknown = good
        unknown["decoder.weight.exp_avg"] = Tensor.zeros([2])
        XCTAssertThrowsError(try optimizer.load(state: unknown)) { error in
            XCTAssertTrue("\(error)".contains("'decoder.weight.exp_avg'"), "\(error)")
        }
        var missing = good
        missing["n.exp_avg_sq"] = nil
        XCTAssertThrowsError(try optimizer.load(state: missing)) { error in
            XCTAssertTrue("\(error)".contains("'n.exp_avg_sq'"), "\(error)")
        }
        var badStep = good
        badStep["b.step"] = Tensor(scalar: 2.5)
        XCTAssertThrowsError(try optimizer.load(state: badStep)) { error in
            XCTAssertTrue("\(error)".contains("'b.step'"), "\(error)")
        }
        // A failed load leaves the state as it was.
        XCTAssertEqual(optimizer.state().mapValues { $0.toArray() }, good.mapValues { $0.toArray() })
        // Loading an empty state resets every parameter.
        try optimizer.load(state: [:])
        XCTAssertTrue(optimizer.state().isEmpty)
        XCTAssertEqual(optimizer.stepCount(ofParameter: 0), 0)
    }

    // MARK: Weight decay

    // With g = 0 the moments stay 0 and the Adam term is 0 / (0 + ε) = 0, so a step is pure decoupled
    // decay: p ← p·(1 − lr·λ) = p·(1 − 0.1·0.5) = 0.95·p in the decayed group, p unchanged without decay.
    func testWeightDecayOptOutByGroup() throws {
        let matrix = try Tensor(shape: [2, 2], values: [1, -2, 3, 4]).requiringGrad()
        let bias = Tensor([10, -20]).requiringGrad()
        let groups = ParameterGroup.splittingWeightDecay(parameters: [bias, matrix], names: ["bias", "matrix"])
        XCTAssertEqual(groups.map { $0.names ?? [] }, [["matrix"], ["bias"]])
        let optimizer = try AdamW(groups: groups, learningRate: 0.1, weightDecay: 0.5)
        matrix.setGrad(Tensor.zeros([2, 2]))
        bias.setGrad(Tensor.zeros([2]))
        try optimizer.step()
        XCTAssertEqual(matrix.toArray(), [1, -2, 3, 4].map { $0 * Float(1 - 0.1 * 0.5) })
        XCTAssertEqual(bias.toArray(), [10, -20])

        // SGD: d = g + λp = 0 + 0.5·p, p ← p − lr·d = p·(1 − 0.05) in the decayed group only.
        let sgd = try SGD(groups: groups, learningRate: 0.1, weightDecay: 0.5)
        let before = matrix.toArray()
        try sgd.step()
        assertClose(matrix.toArray(), before.map { $0 - 0.1 * (0.5 * $0) }, relative: 1e-7, absolute: 0)
        XCTAssertEqual(bias.toArray(), [10, -20])
    }

    // MARK: Non-finite gradients

    func testNonFiniteGradientThrowsNamingParameterAndChangesNothing() throws {
        for value in [Float.nan, .infinity, -.infinity] {
            let p = try makeParameters()
            let before = p.map { $0.toArray() }
            let optimizers: [any Optimizer] = [
                try AdamW(groups: [ParameterGroup(parameters: p, names: Self.names)], learningRate: 0.01),
                try SGD(groups: [ParameterGroup(parameters: p, names: Self.names)], learningRate: 0.1, momentum: 0.9),
            ]
            for optimizer in optimizers {
                try setGradients(p, step: 0)
                var gradient = try row("grad.b", 0)
                gradient[2] = value
                p[1].setGrad(try Tensor(shape: [3], values: gradient))
                XCTAssertThrowsError(try optimizer.step()) { error in
                    XCTAssertEqual((error as? TensorError)?.code, .nonFinite)
                    let text = "\(error)"
                    XCTAssertTrue(text.contains("parameter 1") && text.contains("'b'") && text.contains("element 2"), text)
                }
                // Parameter 0 comes first but was not updated either; no state was created.
                XCTAssertEqual(p.map { $0.toArray() }, before)
                XCTAssertTrue(optimizer.state().isEmpty)
            }
        }
    }

    // MARK: Gradient clipping

    // ‖(3, 4, 12)‖ = √(9 + 16 + 144) = 13 > 6.5: every gradient is scaled by 6.5 / (13 + 1e-6) ≈ ½.
    func testClippingByHand() throws {
        let a = Tensor([0, 0]).requiringGrad()
        let b = Tensor([0]).requiringGrad()
        let frozen = Tensor([5]).requiringGrad()  // no gradient: skipped
        a.setGrad(Tensor([3, 4]))
        b.setGrad(Tensor([12]))
        let norm = try clipGradientNorm([a, b, frozen], maxNorm: 6.5)
        XCTAssertEqual(norm, 13)
        let factor = Float(6.5 / (13 + 1e-6))
        XCTAssertEqual(a.grad?.toArray(), [3 * factor, 4 * factor])
        XCTAssertEqual(b.grad?.toArray(), [12 * factor])
        XCTAssertNil(frozen.grad)

        // Under the limit nothing changes, and the norm is still returned.
        let again = try clipGradientNorm([a, b], maxNorm: 100)
        XCTAssertEqual(again, 13 * factor, accuracy: 1e-5)
        XCTAssertEqual(b.grad?.toArray(), [12 * factor])
    }

    func testClippingMatchesTorch() throws {
        for (key, maxNorm) in [("clip", Float(1)), ("clip_unclipped", 100)] {
            let p = try makeParameters()
            for (name, parameter) in zip(Self.names, p) {
                parameter.setGrad(try Tensor(shape: parameter.shape, values: try row("grad.\(name)", 0)))
            }
            let norm = try clipGradientNorm(p, maxNorm: maxNorm)
            XCTAssertEqual(norm, try tensor("\(key).norm").scalar, accuracy: 1e-5 * norm, key)
            for (name, parameter) in zip(Self.names, p) {
                let error = assertClose(try XCTUnwrap(parameter.grad).toArray(), try tensor("\(key).grad.\(name)").toArray(),
                                        relative: 1e-5, absolute: 1e-7, "\(key).grad.\(name)")
                XCTAssertLessThan(error, 1e-7)  // seen: 3.0e-8
            }
        }
    }

    /// Two leaves whose gradients share one storage are each scaled once, and the shared source
    /// tensor is not written.
    func testClippingSharedGradientStorage() throws {
        let source = Tensor([6, 8])
        let a = Tensor([0, 0]).requiringGrad()
        let b = Tensor([0, 0]).requiringGrad()
        a.setGrad(source)
        b.setGrad(source)
        // ‖(6, 8, 6, 8)‖ = √200; factor = 1 / (√200 + 1e-6).
        let norm = try clipGradientNorm([a, b], maxNorm: 1)
        XCTAssertEqual(Double(norm), 200.0.squareRoot(), accuracy: 1e-5)
        let factor = Float(1 / (200.0.squareRoot() + 1e-6))
        XCTAssertEqual(a.grad?.toArray(), [6 * factor, 8 * factor])
        XCTAssertEqual(b.grad?.toArray(), [6 * factor, 8 * factor])
        XCTAssertEqual(source.toArray(), [6, 8])
    }

    func testClippingNonFiniteThrowsAndLeavesGradients() throws {
        let a = Tensor([0, 0]).requiringGrad()
        let b = Tensor([0, 0, 0]).requiringGrad()
        a.setGrad(Tensor([1, 2]))
        b.setGrad(Tensor([1, .nan, 3]))
        XCTAssertThrowsError(try clipGradientNorm([a, b], maxNorm: 1)) { error in
            XCTAssertEqual((error as? TensorError)?.code, .nonFinite)
            XCTAssertTrue("\(error)".contains("parameter 1"), "\(error)")
        }
        XCTAssertEqual(a.grad?.toArray(), [1, 2])
        XCTAssertThrowsError(try clipGradientNorm([a], maxNorm: 0))
    }

    // MARK: Schedules

    func testSchedulesMatchTransformers() throws {
        let cases: [(String, LearningRateSchedule)] = [
            ("linear", try LearningRateSchedule(peakRate: 3e-4, warmupSteps: 5, totalSteps: 30, decay: .linear)),
            ("cosine", try LearningRateSchedule(peakRate: 3e-4, warmupSteps: 5, totalSteps: 30, decay: .cosine)),
            ("cosine_min", try LearningRateSchedule(peakRate: 3e-4, warmupSteps: 5, totalSteps: 30, decay: .cosine,
                                                    minimumRate: 3e-5)),
            ("constant", try LearningRateSchedule(peakRate: 3e-4, warmupSteps: 5, totalSteps: 30, decay: .constant)),
            ("cosine_no_warmup", try LearningRateSchedule(peakRate: 3e-4, warmupSteps: 0, totalSteps: 30, decay: .cosine)),
        ]
        for (key, schedule) in cases {
            let expected = try tensor("schedule.\(key)").toArray()
            XCTAssertEqual(expected.count, 31)
            let actual = (0...30).map { schedule.learningRate(at: $0) }
            let error = assertClose(actual, expected, relative: 1e-5, absolute: 1e-12, "schedule.\(key)")
            XCTAssertLessThan(error, 1e-10)  // seen: 2.9e-11 (rates ≈ 3e-4)
        }
    }

    // Warm-up 4, total 12, peak 1, minimum 0.2:
    // step 1 → 1/4; step 4 → 1; linear step 8 → 0.2 + 0.8·(12 − 8)/8 = 0.6;
    // cosine step 8 → 0.2 + 0.8·½(1 + cos(π/2)) = 0.6; after step 12 both stay at 0.2.
    func testScheduleByHand() throws {
        let linear = try LearningRateSchedule(peakRate: 1, warmupSteps: 4, totalSteps: 12, decay: .linear, minimumRate: 0.2)
        let cosine = try LearningRateSchedule(peakRate: 1, warmupSteps: 4, totalSteps: 12, decay: .cosine, minimumRate: 0.2)
        for schedule in [linear, cosine] {
            XCTAssertEqual(schedule.learningRate(at: 0), 0)
            XCTAssertEqual(schedule.learningRate(at: 1), 0.25)
            XCTAssertEqual(schedule.learningRate(at: 4), 1)
            XCTAssertEqual(schedule.learningRate(at: 8), 0.6, accuracy: 1e-6)
            XCTAssertEqual(schedule.learningRate(at: 12), 0.2, accuracy: 1e-7)
            XCTAssertEqual(schedule.learningRate(at: 13), 0.2)
            XCTAssertEqual(schedule.learningRate(at: 1000), 0.2)
        }
        // cos(π·¼) = √2/2: 0.2 + 0.8·½(1 + √2/2) ≈ 0.88284.
        XCTAssertEqual(cosine.learningRate(at: 6), 0.2 + 0.4 * (1 + Float(0.5).squareRoot()), accuracy: 1e-6)
        XCTAssertEqual(linear.learningRate(at: 6), 0.2 + 0.8 * 6 / 8, accuracy: 1e-6)
        XCTAssertEqual(try LearningRateSchedule.constant(0.5).learningRate(at: 7), 0.5)
        XCTAssertThrowsError(try LearningRateSchedule(peakRate: 1, warmupSteps: 10, totalSteps: 5))
        XCTAssertThrowsError(try LearningRateSchedule(peakRate: 1, totalSteps: 5, minimumRate: 2))
        XCTAssertThrowsError(try LearningRateSchedule(peakRate: .nan, totalSteps: 5))
    }

    // MARK: Integration and size

    /// The optimizer updates the model's own tensor in place: y = W·x with seed 1 gives
    /// dW[i][j] = x[j]; SGD at lr 0.5 makes W ← W − 0.5·x for each row.
    func testUpdatesModelStorageThroughAutograd() throws {
        let weight = try Tensor(shape: [2, 3], values: [1, 2, 3, 4, 5, 6]).requiringGrad()
        let model = [weight]  // the model's reference
        let optimizer = try SGD(parameters: [weight], learningRate: 0.5)
        let x = try Tensor(shape: [3, 1], values: [1, -1, 2])
        try weight.matmul(x).backward(seed: Tensor.ones([2, 1]))
        try optimizer.step()
        XCTAssertEqual(model[0].toArray(), [0.5, 2.5, 2, 3.5, 5.5, 5])
        optimizer.zeroGrad()
        XCTAssertNil(weight.grad)
    }

    /// A parameter large enough for the chunk-parallel path and the SIMD tail (40 003 elements), against a
    /// Float64 reference of the torch formulas.
    func testAdamWLargeParameterAgainstFloat64Reference() throws {
        let count = 40_003
        let initial = Tensor.randomNormal([count], key: RandomKey(seed: 11))
        let parameter = initial.contiguousCopy().requiringGrad()
        let optimizer = try AdamW(parameters: [parameter], learningRate: 1e-2, betas: (0.9, 0.95), epsilon: 1e-8, weightDecay: 0.1)
        var p = initial.toArray().map(Double.init)
        var m = [Double](repeating: 0, count: count)
        var v = [Double](repeating: 0, count: count)
        let (lr, beta1, beta2, eps, decay) = (Double(Float(1e-2)), Double(Float(0.9)), Double(Float(0.95)), Double(Float(1e-8)), Double(Float(0.1)))
        for step in 1...3 {
            let gradient = Tensor.randomNormal([count], key: RandomKey(seed: 100 + UInt64(step)))
            parameter.setGrad(gradient)
            try optimizer.step()
            let g = gradient.toArray().map(Double.init)
            let t = Double(step)
            for i in 0..<count {
                p[i] *= 1 - lr * decay
                m[i] = beta1 * m[i] + (1 - beta1) * g[i]
                v[i] = beta2 * v[i] + (1 - beta2) * g[i] * g[i]
                let denominator = (v[i] / (1 - pow(beta2, t))).squareRoot() + eps
                p[i] -= lr * (m[i] / (1 - pow(beta1, t))) / denominator
            }
        }
        let error = assertClose(parameter.toArray(), p.map(Float.init), relative: 1e-5, absolute: 1e-6, "large AdamW")
        XCTAssertLessThan(error, 2e-6)  // seen: 4.8e-7
    }

    func testInvalidHyperparametersThrow() {
        let p = [Tensor([1]).requiringGrad()]
        XCTAssertThrowsError(try SGD(parameters: p, learningRate: 0.1, momentum: 0.9, dampening: 0.1, nesterov: true)) { error in
            XCTAssertTrue("\(error)".contains("Nesterov"), "\(error)")
        }
        XCTAssertThrowsError(try SGD(parameters: p, learningRate: 0.1, nesterov: true))
        XCTAssertThrowsError(try AdamW(parameters: p, betas: (1, 0.999))) { error in
            XCTAssertTrue("\(error)".contains("beta1"), "\(error)")
        }
        XCTAssertThrowsError(try AdamW(parameters: p, learningRate: -1))
        XCTAssertThrowsError(try AdamW(groups: [ParameterGroup(parameters: p, weightDecay: -0.1)]))
    }
}

// MARK: - Fixture reader

/// Reads a safetensors file of F32 tensors: 8-byte little-endian header length, JSON header
/// `{name: {dtype, shape, data_offsets: [begin, end]}}`, then the data.
private func readFixture(_ url: URL) throws -> [String: Tensor] {
    let data = try Data(contentsOf: url)
    guard data.count >= 8 else { throw TensorError(.corruptFile, "\(url.path): shorter than 8 bytes") }
    let headerLength = data.prefix(8).enumerated().reduce(0) { $0 | (Int($1.element) << (8 * $1.offset)) }
    guard 8 + headerLength <= data.count,
          let header = try JSONSerialization.jsonObject(with: data.subdata(in: 8 ..< 8 + headerLength)) as? [String: Any] else {
        throw TensorError(.corruptFile, "\(url.path): bad header")
    }
    let base = 8 + headerLength
    var result: [String: Tensor] = [:]
    for (name, value) in header where name != "__metadata__" {
        guard let entry = value as? [String: Any], entry["dtype"] as? String == "F32",
              let shape = entry["shape"] as? [Int], let offsets = entry["data_offsets"] as? [Int], offsets.count == 2,
              base + offsets[1] <= data.count, offsets[1] - offsets[0] == 4 * shape.reduce(1, *) else {
            throw TensorError(.corruptFile, "\(url.path): bad entry '\(name)'")
        }
        let bytes = data.subdata(in: base + offsets[0] ..< base + offsets[1])
        let values = bytes.withUnsafeBytes { raw in
            (0..<(bytes.count / 4)).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self))) }
        }
        result[name] = try Tensor(shape: shape, values: values)
    }
    return result
}
