import Foundation
import XCTest
import SiloModels
import SiloCompression
import SiloPrivacy
import SiloTensor
@testable import SiloData
@testable import SiloFederation

/// Federated LoRA's aggregation against Flower (server strategies, DP-FedAvg clipping) and numpy (the
/// LoRA product rule), hand-computed DP cases, the privacy ledger, secure aggregation, and local training
/// on the tiny Llama of ``SplitTrainingTests``.
final class FederatedLoRATests: XCTestCase {
    struct Fixture: Decodable {
        struct DPFixed: Decodable { var clip: Double; var trajectory: [[Float]] }
        struct Product: Decodable {
            struct Client: Decodable { var a: [[Float]]; var b: [[Float]]; var extra: [Float] }
            var rank: Int, inputs: Int, outputs: Int
            var clients: [Client]
            var weights: [Double]
            var product: [[Double]]
            var singular_values: [Double]
            var extra_mean: [Double]
        }
        var initial: [Float]
        var examples: [Int]
        var deltas: [[[Float]]]
        var strategies: [String: [[Float]]]
        var dp_fixed_clipping: DPFixed
        var lora_product: Product
    }

    static let fixture: Fixture = {
        let url = Bundle.module.url(forResource: "federated", withExtension: "json", subdirectory: "Fixtures")!
        return try! JSONDecoder().decode(Fixture.self, from: Data(contentsOf: url))
    }()

    func assertClose(_ a: [Float], _ b: [Float], tolerance: Float = 2e-5, _ message: String = "", file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.count, b.count, message, file: file, line: line)
        for (index, (x, y)) in zip(a, b).enumerated() where abs(x - y) > tolerance * max(1, abs(y)) {
            XCTFail("\(message) index \(index): \(x) vs \(y)", file: file, line: line)
            return
        }
    }

    // MARK: Server strategies

    func testServerStrategiesMatchFlower() throws {
        let f = Self.fixture
        for (name, trajectory) in f.strategies.sorted(by: { $0.key < $1.key }) {
            let kind = try XCTUnwrap(ServerOptimizer.Kind(rawValue: name))
            let defaults = ServerOptimizer.defaults(kind)
            let server = ServerOptimizer(kind: kind, learningRate: defaults.learningRate, beta1: kind == .fedadagrad ? 0 : 0.9,
                                         beta2: 0.99, tau: defaults.tau)
            let aggregator = UpdateAggregator(clientDP: nil, secureAggregation: false)
            var global = f.initial
            for (round, deltas) in f.deltas.enumerated() {
                let updates = zip(deltas, f.examples).enumerated().map { AdapterUpdate(clientID: "c\($0.offset)", delta: $0.element.0, examples: $0.element.1) }
                let (mean, _) = try aggregator.aggregate(updates, key: RandomKey(seed: 1))
                try server.apply(mean, to: &global)
                assertClose(global, trajectory[round], "\(name) round \(round + 1)")
            }
        }
    }

    func testFixedClippingMatchesFlowerWithoutNoise() throws {
        let f = Self.fixture
        let aggregator = UpdateAggregator(clientDP: ClientLevelDP(noiseMultiplier: 0, clip: f.dp_fixed_clipping.clip), secureAggregation: false)
        let server = ServerOptimizer(kind: .fedavg, learningRate: 1)
        var global = f.initial
        for (round, deltas) in f.deltas.enumerated() {
            // Example counts differ, but DP weights every client equally (Flower's fixture used equal counts).
            let updates = deltas.enumerated().map { AdapterUpdate(clientID: "c\($0.offset)", delta: $0.element, examples: 10 * ($0.offset + 1)) }
            let (mean, record) = try aggregator.aggregate(updates, key: RandomKey(seed: 1))
            XCTAssertEqual(record.clip, f.dp_fixed_clipping.clip)
            try server.apply(mean, to: &global)
            assertClose(global, f.dp_fixed_clipping.trajectory[round], "DP-FedAvg round \(round + 1)")
        }
    }

    // MARK: Client-level DP by hand

    func testDPFedAvgOnHandComputedInputs() throws {
        let aggregator = UpdateAggregator(clientDP: ClientLevelDP(noiseMultiplier: 0, clip: 1), secureAggregation: false)
        let updates = [AdapterUpdate(clientID: "a", delta: [3, 4], examples: 100), AdapterUpdate(clientID: "b", delta: [0.3, 0.4], examples: 1)]
        let (mean, record) = try aggregator.aggregate(updates, key: RandomKey(seed: 0))
        // a is clipped from norm 5 to 1: (0.6, 0.8); b (norm 0.5) is kept; equal weights.
        assertClose(mean, [0.45, 0.6], tolerance: 1e-6)
        XCTAssertEqual(record.clippedFraction, 0.5)
        XCTAssertEqual(record.updateNorms["a"] ?? 0, 5, accuracy: 1e-9)
        // Without DP, FedAvg weights by examples: (100·(3, 4) + 1·(0.3, 0.4)) / 101.
        let (plain, _) = try UpdateAggregator(clientDP: nil, secureAggregation: false).aggregate(updates, key: RandomKey(seed: 0))
        assertClose(plain, [Float(300.3 / 101), Float(400.4 / 101)], tolerance: 1e-6)
    }

    func testClientLevelNoiseHasStandardDeviationZCOverM() throws {
        let z = 1.5, clip = 2.0, m = 4, d = 40000
        let aggregator = UpdateAggregator(clientDP: ClientLevelDP(noiseMultiplier: z, clip: clip), secureAggregation: false)
        let updates = (0..<m).map { AdapterUpdate(clientID: "c\($0)", delta: [Float](repeating: 0, count: d), examples: 1) }
        let (mean, record) = try aggregator.aggregate(updates, key: RandomKey(seed: 42))
        let expected = z * clip / Double(m)
        XCTAssertEqual(record.noiseStandardDeviation ?? 0, expected, accuracy: 1e-12)
        let average = mean.reduce(0.0) { $0 + Double($1) } / Double(d)
        let deviation = (mean.reduce(0.0) { $0 + (Double($1) - average) * (Double($1) - average) } / Double(d - 1)).squareRoot()
        // The sample standard deviation of 40000 normals is within 2% of σ with probability > 0.9999.
        XCTAssertEqual(deviation, expected, accuracy: 0.02 * expected)
        XCTAssertEqual(average, 0, accuracy: 5 * expected / Double(d).squareRoot())
    }

    func testAdaptiveClippingFollowsAndrewEtAl() throws {
        // Norms 1, 2, 3, 4; C = 1: one update unclipped (b̄ = 0.25 < γ = 0.5), so C grows by exp(0.2 · 0.25).
        let dp = ClientLevelDP(noiseMultiplier: 0, clip: 1, clipping: .adaptive(targetQuantile: 0.5, learningRate: 0.2, countStandardDeviation: 0.2))
        let aggregator = UpdateAggregator(clientDP: dp, secureAggregation: false)
        let updates = (1...4).map { AdapterUpdate(clientID: "c\($0)", delta: [Float($0), 0], examples: 1) }
        let (_, first) = try aggregator.aggregate(updates, key: RandomKey(seed: 0))
        XCTAssertEqual(first.clip, 1)
        XCTAssertEqual(first.clippedFraction ?? 0, 0.75, accuracy: 1e-12)
        XCTAssertEqual(first.nextClip ?? 0, exp(0.2 * 0.25), accuracy: 1e-12)
        XCTAssertEqual(aggregator.clip ?? 0, exp(0.05), accuracy: 1e-12)
        // The next round clips with the new C.
        let (mean, second) = try aggregator.aggregate(updates, key: RandomKey(seed: 0))
        XCTAssertEqual(second.clip ?? 0, exp(0.05), accuracy: 1e-12)
        XCTAssertEqual(Double(mean[0]), (1 + 3 * exp(0.05)) / 4, accuracy: 1e-6)
        // The updates' noise multiplier after the count's share: (z⁻² − (2σ_b)⁻²)^(−1/2).
        let noisy = ClientLevelDP(noiseMultiplier: 1, clip: 1, clipping: .adaptive(targetQuantile: 0.5, learningRate: 0.2, countStandardDeviation: 1))
        XCTAssertEqual(try noisy.updateNoiseMultiplier(), 1 / (0.75).squareRoot(), accuracy: 1e-12)
        let impossible = ClientLevelDP(noiseMultiplier: 1, clip: 1, clipping: .adaptive(targetQuantile: 0.5, learningRate: 0.2, countStandardDeviation: 0.4))
        XCTAssertThrowsError(try impossible.updateNoiseMultiplier()) { XCTAssertTrue("\($0)".contains("clipped_count_stddev"), "\($0)") }
    }

    func testAggregationRejectsBadUpdates() throws {
        let aggregator = UpdateAggregator(clientDP: nil, secureAggregation: false)
        XCTAssertThrowsError(try aggregator.aggregate([AdapterUpdate(clientID: "a", delta: [1, .nan], examples: 1)], key: RandomKey(seed: 0))) {
            XCTAssertTrue("\($0)".contains("client a sent nan at index 1"), "\($0)")
        }
        XCTAssertThrowsError(try aggregator.aggregate([AdapterUpdate(clientID: "a", delta: [1, 2], examples: 1),
                                                       AdapterUpdate(clientID: "b", delta: [1], examples: 1)], key: RandomKey(seed: 0))) {
            XCTAssertTrue("\($0)".contains("client b sent 1 values, expected 2"), "\($0)")
        }
    }

    // MARK: Secure aggregation

    func testSecureSumEqualsPlainAggregation() throws {
        let f = Self.fixture
        for clientDP in [nil, ClientLevelDP(noiseMultiplier: 0, clip: 0.6)] {
            let updates = f.deltas[0].enumerated().map { AdapterUpdate(clientID: "c\($0.offset)", delta: $0.element, examples: f.examples[$0.offset]) }
            let plain = try UpdateAggregator(clientDP: clientDP, secureAggregation: false).aggregate(updates, key: RandomKey(seed: 3))
            let aggregator = UpdateAggregator(clientDP: clientDP, secureAggregation: true)
            let secure = try SecureUpdateSum.sum(updates: updates, aggregator: aggregator, round: 1, dropouts: 1)
            XCTAssertEqual(secure.clampedValues, 0)
            let (mean, record) = try aggregator.finish(sum: secure.sum, clients: updates.count, norms: [:], key: RandomKey(seed: 3))
            assertClose(mean, plain.delta, tolerance: 1e-6, "secure vs plain, DP \(clientDP != nil)")
            XCTAssertTrue(record.updateNorms.isEmpty, "the server must not see individual norms under secure aggregation")
            // Each client uploads its masked words plus keys and shares: more than the plain payload.
            XCTAssertGreaterThan(secure.uploadBytes["c0"] ?? 0, (updates[0].delta.count + 2) * 4)
        }
    }

    // MARK: LoRA product rule

    func testProductRuleMatchesNumpySVD() throws {
        let p = Self.fixture.lora_product
        let names = ["m.lora_A.weight", "m.lora_B.weight", "prefix.extra"]
        let shapes = [[p.rank, p.inputs], [p.outputs, p.rank], [3]]
        let layout = try LoRALayout(names: names, shapes: shapes)
        XCTAssertEqual(layout.modules.count, 1)
        let clients = p.clients.map { $0.a.flatMap { $0 } + $0.b.flatMap { $0 } + $0.extra }
        let result = try layout.productAverage(clients, weights: p.weights)
        let a = Array(result[0..<(p.rank * p.inputs)]), b = Array(result[(p.rank * p.inputs)..<(p.rank * p.inputs + p.outputs * p.rank)])
        for row in 0..<p.outputs {
            for column in 0..<p.inputs {
                let value = (0..<p.rank).reduce(0.0) { $0 + Double(b[row * p.rank + $1]) * Double(a[$1 * p.inputs + column]) }
                XCTAssertEqual(value, p.product[row][column], accuracy: 1e-5, "B·A (\(row), \(column))")
            }
        }
        // Non-LoRA values are averaged as values.
        assertClose(Array(result.suffix(3)), p.extra_mean.map(Float.init), tolerance: 1e-6)
        // Averaging the factors instead is not the mean product.
        let factorMean = (0..<clients[0].count).map { i in Float(zip(clients, p.weights).reduce(0.0) { $0 + Double($1.0[i]) * $1.1 } / 6) }
        let fa = Array(factorMean[0..<(p.rank * p.inputs)]), fb = Array(factorMean[(p.rank * p.inputs)..<(p.rank * p.inputs + p.outputs * p.rank)])
        let naive = (0..<p.rank).reduce(0.0) { $0 + Double(fb[$1]) * Double(fa[$1 * p.inputs]) }
        XCTAssertGreaterThan(abs(naive - p.product[0][0]), 1e-2, "mean(B)·mean(A) should differ from the mean of B·A here")
    }

    func testProductRuleIsExactWhenRanksFit() throws {
        // One client of rank 2 (and a second with B = 0): the mean product is B₁A₁·p₁, recovered exactly.
        let layout = try LoRALayout(names: ["x.lora_A.weight", "x.lora_B.weight"], shapes: [[2, 3], [4, 2]])
        let a: [Float] = [1, 2, 3, -1, 0.5, 2], b: [Float] = [1, 0, 0, 1, 2, -1, 0.5, 0.5]
        let result = try layout.productAverage([a + b, a + [Float](repeating: 0, count: 8)], weights: [3, 1])
        for row in 0..<4 {
            for column in 0..<3 {
                let expected = 0.75 * (0..<2).reduce(0.0) { $0 + Double(b[row * 2 + $1]) * Double(a[$1 * 3 + column]) }
                let actual = (0..<2).reduce(0.0) { $0 + Double(result[6 + row * 2 + $1]) * Double(result[$1 * 3 + column]) }
                XCTAssertEqual(actual, expected, accuracy: 1e-5)
            }
        }
        XCTAssertThrowsError(try LoRALayout(names: ["x.lora_A.weight"], shapes: [[2, 3]])) {
            XCTAssertTrue("\($0)".contains("no matching x.lora_B.weight"), "\($0)")
        }
    }

    // MARK: Ledger

    func testPrivacyLedgerComposesAndEnforcesBudget() throws {
        var ledger = try PrivacyLedger(delta: 1e-5, budget: 3)
        try ledger.record(client: "a", mechanism: "dp-sgd", noiseMultiplier: 1.1, sampleRate: 0.01, steps: 500)
        try ledger.record(client: "a", mechanism: "dp-sgd", noiseMultiplier: 1.1, sampleRate: 0.01, steps: 500)
        XCTAssertEqual(ledger.entries["a"]?.count, 1, "equal mechanisms merge")
        let direct = try RDPAccountant.epsilon(noiseMultiplier: 1.1, sampleRate: 0.01, steps: 1000, delta: 1e-5).epsilon
        XCTAssertEqual(try ledger.epsilon(client: "a"), direct, accuracy: 1e-12)
        try ledger.record(client: "a", mechanism: "local-dp", noiseMultiplier: 5, sampleRate: 1)
        let both = try RDPAccountant.epsilon(rdp: RDPAccountant.rdp([.init(noiseMultiplier: 1.1, sampleRate: 0.01, steps: 1000),
                                                                     .init(noiseMultiplier: 5, sampleRate: 1, steps: 1)]), delta: 1e-5).epsilon
        XCTAssertEqual(try ledger.epsilon(client: "a"), both, accuracy: 1e-12)
        XCTAssertGreaterThan(both, direct)
        XCTAssertEqual(try ledger.epsilon(client: "a", mechanism: "dp-sgd"), direct, accuracy: 1e-12)
        XCTAssertEqual(try ledger.epsilon(client: "nobody"), 0)
        // Budget 3: one more large release does not fit.
        XCTAssertFalse(try ledger.allows(client: "a", [.init(mechanism: "local-dp", event: .init(noiseMultiplier: 0.5, sampleRate: 1, steps: 1))]))
        XCTAssertTrue(try ledger.allows(client: "b", [.init(mechanism: "local-dp", event: .init(noiseMultiplier: 5, sampleRate: 1, steps: 1))]))
        // Round trip through JSON (checkpoints and results carry it).
        let decoded = try JSONDecoder().decode(PrivacyLedger.self, from: JSONEncoder().encode(ledger))
        XCTAssertEqual(decoded, ledger)
        XCTAssertThrowsError(try PrivacyLedger(delta: 1)) { XCTAssertTrue("\($0)".contains("delta 1.0 is outside (0, 1)"), "\($0)") }
        XCTAssertThrowsError(try ledger.record(client: "a", mechanism: "x", noiseMultiplier: 0, sampleRate: 0.5)) {
            XCTAssertTrue("\($0)".contains("noise multiplier 0.0 must be"), "\($0)")
        }
    }

    // MARK: Local training on the tiny Llama

    static func examples(seed: UInt64, count: Int, time: Int) -> [EncodedExample] {
        var generator = SeededGenerator(seed: seed)
        return (0..<count).map { _ in
            let ids = (0..<time).map { _ in Int32.random(in: 1..<40, using: &generator) }
            let labels = (0..<time).map { $0 >= time - 4 && $0 < time - 1 ? ids[$0 + 1] : EncodedExample.ignoredLabel }
            return EncodedExample(ids: ids, labels: labels, promptLength: time - 3, truncatedPassage: false, truncatedTarget: false,
                                  source: SourceLocation(file: "test", line: 1))
        }
    }

    /// One round, one SGD step per client on its whole (equal-sized) data, FedAvg: the new global
    /// adapters are one SGD step on the mean of the clients' gradients — centralized training on the
    /// stacked batch. DP-SGD with q = 1, a huge clip and no noise gives the same step from per-example
    /// gradients.
    func testOneFedAvgRoundOfSGDEqualsACentralizedStep() throws {
        let model = try SplitTrainingTests.model()
        let part = try ModelPart(model: model, adapters: SplitTrainingTests.adapters, key: RandomKey(seed: 5))
        // Make B non-zero so that every factor gets a gradient.
        let start = part.flattenedValues().toArray().enumerated().map { $0.element + Float(0.05 * sin(Double($0.offset))) }
        let global = try Tensor(shape: [start.count], values: start)
        let data = [Self.examples(seed: 1, count: 2, time: 7), Self.examples(seed: 2, count: 2, time: 7)]
        let sgd: ([Tensor]) throws -> any Optimizer = { try SGD(parameters: $0, learningRate: 0.5) }
        for dp in [false, true] {
            var updates: [AdapterUpdate] = []
            for (index, examples) in data.enumerated() {
                var batches = BatchIterator(examples: examples, batchSize: 2, epochs: 1, seed: 0)
                let (values, loss) = try FederatedLoRASimulation.trainLocally(
                    part: part, global: global, layers: model.layerCount, steps: 1, batches: &batches, examples: examples,
                    exampleDP: dp ? (noiseMultiplier: 0, clip: 1e9, batchSize: 2) : nil, proximalMu: 0, makeOptimizer: sgd,
                    key: RandomKey(seed: UInt64(index)))
                XCTAssertTrue(loss.isFinite)
                updates.append(AdapterUpdate(clientID: "c\(index)", delta: zip(values, start).map { $0 - $1 }, examples: examples.count))
            }
            let (mean, _) = try UpdateAggregator(clientDP: nil, secureAggregation: false).aggregate(updates, key: RandomKey(seed: 0))
            var federated = start
            try ServerOptimizer(kind: .fedavg, learningRate: 1).apply(mean, to: &federated)

            let trainer = try CentralizedTrainer(model: SplitTrainingTests.model(), adapters: SplitTrainingTests.adapters, key: RandomKey(seed: 5),
                                                 optimizer: sgd)
            try trainer.part.assign(flattenedValues: global)
            let stacked = Batch(data[0] + data[1])
            try trainer.step(TrainingBatch(ids: stacked.ids, labels: stacked.labels, batch: stacked.batch, time: stacked.time))
            assertClose(federated, trainer.part.flattenedValues().toArray(), tolerance: 2e-5, "DP-SGD path \(dp)")
        }
    }

    func testFedProxPullsTowardTheGlobalAdapters() throws {
        let model = try SplitTrainingTests.model()
        let part = try ModelPart(model: model, adapters: SplitTrainingTests.adapters, key: RandomKey(seed: 5))
        let global = part.flattenedValues()
        let examples = Self.examples(seed: 3, count: 4, time: 6)
        let sgd: ([Tensor]) throws -> any Optimizer = { try SGD(parameters: $0, learningRate: 0.5) }
        func distance(mu: Double) throws -> Double {
            var batches = BatchIterator(examples: examples, batchSize: 2, epochs: 3, seed: 0)
            let (values, _) = try FederatedLoRASimulation.trainLocally(part: part, global: global, layers: model.layerCount, steps: 5, batches: &batches,
                                                                       examples: examples, exampleDP: nil, proximalMu: mu, makeOptimizer: sgd,
                                                                       key: RandomKey(seed: 0))
            return UpdateAggregator.norm(zip(values, global.toArray()).map { $0 - $1 })
        }
        let free = try distance(mu: 0), proximal = try distance(mu: 1)
        XCTAssertGreaterThan(free, 0)
        XCTAssertLessThan(proximal, free, "the proximal term must keep the client closer to the global adapters")
    }

    // MARK: Compression of updates

    func testUpdateCompressionRoundTripsEachMatrix() throws {
        // A (2, 6) and B (6, 2): k-means with k ≥ the longer axis is lossless (every row its own centroid),
        // whichever way the matrix lies; 8-bit blockwise loses at most half a step per value.
        let delta: [Float] = (0..<24).map { Float(sin(Double($0) * 0.7)) }
        let shapes = [[2, 6], [6, 2]]
        let exact = try UpdateCompression.roundTrip(delta, shapes: shapes, codec: KMeansCodec(clusters: 6))
        assertClose(exact.values, delta, tolerance: 1e-6, "kmeans-6")
        let (q8, bytes) = try UpdateCompression.roundTrip(delta, shapes: shapes, codec: BlockwiseQuantizationCodec(bits: 8))
        assertClose(q8, delta, tolerance: 1.0 / 127, "q8")
        XCTAssertEqual(bytes, 2 * (16 + 4 + 12))
        let (coarse, _) = try UpdateCompression.roundTrip(delta, shapes: shapes, codec: KMeansCodec(clusters: 2))
        XCTAssertNotEqual(coarse, delta, "2 centroids for 6 rows must lose something")
    }

    // MARK: Configuration

    func testInvalidFederatedConfigurationsAreRefused() throws {
        func refused(_ change: (inout SimulationConfiguration) -> Void, _ fragment: String, file: StaticString = #filePath, line: UInt = #line) {
            var configuration = SimulationConfiguration()
            configuration.mode = "federated-lora"
            change(&configuration)
            XCTAssertThrowsError(try configuration.validate(), file: file, line: line) {
                XCTAssertTrue("\($0)".contains(fragment), "\($0)", file: file, line: line)
            }
        }
        refused({ $0.federated.loraAggregation = .product; $0.federated.secureAggregation = true }, "secure aggregation hides them")
        refused({ $0.federated.loraAggregation = .product; $0.federated.strategy = "fedadam" }, "use fedavg or fedprox")
        refused({ $0.privacy.exampleDP = .init(noiseMultiplier: 1, targetEpsilon: 4) }, "exactly one of noise_multiplier and target_epsilon")
        refused({ $0.privacy.exampleDP = .init(noiseMultiplier: -1) }, "privacy.example_dp.noise_multiplier: must be > 0")
        refused({ $0.privacy.delta = 1 }, "privacy.delta: must be in (0, 1)")
        refused({ $0.federated.fraction = 0 }, "federated.fraction")
        refused({ $0.federated.strategy = "fedsgd" }, "'fedsgd' is not one of")
        refused({ $0.mode = "federated" }, "mode: 'federated' is not one of split, federated-lora, kmeans-centroids")
        refused({ $0.privacy.localDP = .init(noiseMultiplier: 0, clip: 1) }, "privacy.local_dp.noise_multiplier")
        refused({ $0.federated.codec = "kmeans-16"; $0.federated.secureAggregation = true }, "cannot be combined with secure aggregation")
        refused({ $0.federated.codec = "gzip" }, "federated.codec: codec 'gzip' is not one of")
        let yaml = "{\"mode\": \"federated-lora\", \"privacy\": {\"example_dp\": {\"noise\": 1}}}"
        XCTAssertThrowsError(try JSONDecoder().decode(SimulationConfiguration.self, from: Data(yaml.utf8))) {
            XCTAssertTrue("\($0)".contains("privacy.example_dp.noise: unknown key"), "\($0)")
        }
    }
}

/// Noise on the activations a split client releases.
final class ActivationNoiseTests: XCTestCase {
    func testEachExampleIsClippedAndNoiseHasTheRightScale() throws {
        // Two examples of (T 50, C 40): row 0 of norm 10 (clipped to 2), row 1 of norm 1 (kept).
        let t = 50, c = 40, size = t * c
        var values = [Float](repeating: 0, count: 2 * size)
        values[0] = 6; values[1] = 8
        values[size] = 1
        let activations = try Tensor(shape: [2, t, c], values: values)
        let quiet = ActivationNoise(noiseMultiplier: 1e-9, clip: 2, key: RandomKey(seed: 1))
        let (released, scales) = quiet.release(activations, key: RandomKey(seed: 2))
        XCTAssertEqual(scales, [0.2, 1])
        let out = released.toArray()
        XCTAssertEqual(out[0], 1.2, accuracy: 1e-6)
        XCTAssertEqual(out[1], 1.6, accuracy: 1e-6)
        XCTAssertEqual(out[size], 1, accuracy: 1e-6)
        // The gradient reaching the activations is scaled per example like the values.
        let gradient = ActivationNoise.scaled(try Tensor(shape: [2, t, c], values: [Float](repeating: 1, count: 2 * size)), by: scales).toArray()
        XCTAssertEqual(gradient[5], 0.2, accuracy: 1e-7)
        XCTAssertEqual(gradient[size + 5], 1)
        // Noise: N(0, (z·clip)²) on every value.
        let noisy = ActivationNoise(noiseMultiplier: 0.5, clip: 2, key: RandomKey(seed: 1))
        let zeros = try Tensor(shape: [2, t, c], values: [Float](repeating: 0, count: 2 * size))
        let sample = noisy.release(zeros, key: RandomKey(seed: 3)).0.toArray()
        let deviation = (sample.reduce(0.0) { $0 + Double($1) * Double($1) } / Double(sample.count)).squareRoot()
        XCTAssertEqual(deviation, 1.0, accuracy: 0.04, "σ = z·clip = 1 (4000 values: 4% is > 3 standard errors)")
    }

    func testConfigurationRefusesNonPositiveNoise() {
        var configuration = SimulationConfiguration()
        configuration.split.activationNoise = .init(noiseMultiplier: 0, clip: 1)
        XCTAssertThrowsError(try configuration.validate()) { XCTAssertTrue("\($0)".contains("split.activation_noise.noise_multiplier: must be > 0"), "\($0)") }
    }
}
