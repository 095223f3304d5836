import XCTest
import SiloModels
import SiloSplitTestSupport
import SiloTensor
@testable import SiloFederation

/// The ε a data owner's noised activations cost: releases per example from the batches it sent, then
/// the RDP accountant (checked here against dp_accounting's values for sampling rate 1).
final class ActivationPrivacyTests: XCTestCase {
    func testEpsilonComposesTheGaussianMechanismOverEachExamplesReleases() throws {
        // 25 batches of 4 from 10 examples: every example released 10 times. dp_accounting 0.4.4
        // (RDP, Poisson subsampled Gaussian with q = 1, z = 2, 10 steps, δ = 1e-5; the case of
        // Tests/SiloPrivacyTests/Fixtures/dp_accounting.json): ε = 8.079406222420491.
        let (epsilon, releases) = try ActivationNoise.epsilon(noiseMultiplier: 2, batches: 25, batchSize: 4, examples: 10, delta: 1e-5)
        XCTAssertEqual(releases, 10)
        XCTAssertEqual(epsilon, 8.079406222420491, accuracy: 1e-6 * 8.08)
        // A partial epoch counts for the examples it reached: 3 batches of 4 from 10 examples → 2.
        XCTAssertEqual(try ActivationNoise.epsilon(noiseMultiplier: 2, batches: 3, batchSize: 4, examples: 10, delta: 1e-5).releases, 2)
        // More noise, less ε; more releases, more ε.
        let quieter = try ActivationNoise.epsilon(noiseMultiplier: 4, batches: 25, batchSize: 4, examples: 10, delta: 1e-5).epsilon
        let longer = try ActivationNoise.epsilon(noiseMultiplier: 2, batches: 50, batchSize: 4, examples: 10, delta: 1e-5).epsilon
        XCTAssertLessThan(quieter, epsilon)
        XCTAssertGreaterThan(longer, epsilon)
    }

    func testClientReportCountsTheBatchesItReleased() throws {
        let plan = try SplitPlan(layerCount: TinyLlama.configuration.layerCount)
        var cursor = 0
        let client = try SplitClient(clientID: "client-1", plan: plan, model: TinyLlama.model(stages: plan.clientStages),
                                     adapters: TinyLlama.adapters, key: RandomKey(seed: 5),
                                     optimizer: { try AdamW(parameters: $0, learningRate: 0.01) },
                                     batches: { defer { cursor += 1 }; return TinyLlama.batch(seed: UInt64(cursor), time: 6) },
                                     activationNoise: ActivationNoise(noiseMultiplier: 1, clip: 1, key: RandomKey(seed: 9)))
        var configuration = SimulationConfiguration()
        configuration.split.activationNoise = .init(noiseMultiplier: 1, clip: 1)
        configuration.data.batchSize = 2
        configuration.privacy.delta = 1e-5
        XCTAssertNil(try SplitDeployment.activationPrivacyReport(client, configuration: configuration), "no example count: no report")
        client.exampleCount = 4
        for step in 0..<2 {
            _ = try client.handle(SplitMessage(kind: .stepBegin, round: 0, step: step))
            client.connectionLost()
        }
        XCTAssertEqual(client.releases, 2)
        // 2 batches of 2 from 4 examples: each example once; dp_accounting (q = 1, z = 1, 1 step, δ = 1e-5): 4.7285.
        let report = try XCTUnwrap(SplitDeployment.activationPrivacyReport(client, configuration: configuration))
        XCTAssertTrue(report.contains("ε = 4.729 at δ = 1e-05"), report)
        XCTAssertTrue(report.contains("(1 times, 2 batches of 2 from 4 examples)"), report)
        configuration.split.activationNoise = nil
        XCTAssertNil(try SplitDeployment.activationPrivacyReport(client, configuration: configuration))
    }
}
