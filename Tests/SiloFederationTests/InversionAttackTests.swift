import XCTest
import SiloModels
import SiloTensor
@testable import SiloFederation

/// The attack pipeline on the tiny Llama of ``SplitTrainingTests`` (V 40, C 16, 5 blocks).
final class InversionAttackTests: XCTestCase {
    static func texts(count: Int, seed: UInt64, length: Int = 12) -> InversionAttack.Texts {
        var generator = SeededGenerator(seed: seed)
        return InversionAttack.Texts(ids: (0..<count).map { _ in (0..<length).map { _ in Int32.random(in: 1..<40, using: &generator) } })
    }

    static func decode(_ ids: [Int32]) -> String { ids.map { "t\($0)" }.joined(separator: " ") }

    func sweep(cuts: [Int], noise: [Double], compressions: [String] = ["none"]) throws -> [InversionResult] {
        var configuration = InversionAttackConfiguration()
        configuration.cuts = cuts
        configuration.noiseMultipliers = noise
        configuration.compressions = compressions
        let model = try SplitTrainingTests.model()
        let embedding = try model.parameters(of: .embedding)[0].tensor
        return try InversionAttack.sweep(configuration, model: model, embedding: embedding,
                                         shadow: Self.texts(count: 40, seed: 1), victim: Self.texts(count: 8, seed: 2),
                                         decode: Self.decode)
    }

    func testEmbeddingOnlyCutIsFullyInvertedWithoutNoise() throws {
        // k = 0: the server receives embedding rows; the decoder learns the identity and every token comes back.
        let results = try sweep(cuts: [0], noise: [0])
        XCTAssertEqual(results.count, 1)
        XCTAssertEqual(results[0].tokenRecovery, 1.0)
        XCTAssertEqual(results[0].bleu4, 100, accuracy: 1e-9)
        XCTAssertEqual(results[0].rouge1, 100, accuracy: 1e-9)
        XCTAssertEqual(results[0].sample, results[0].sampleTruth)
    }

    func testNoiseAndCompressionReduceRecovery() throws {
        let results = try sweep(cuts: [0], noise: [0, 1], compressions: ["none", "kmeans-2"])
        func recovery(_ noise: Double, _ codec: String) throws -> Double {
            try XCTUnwrap(results.first { $0.noise == noise && $0.compression == codec }).tokenRecovery
        }
        // Noise as large as the activation itself (z = 1 at the median norm) leaves little.
        XCTAssertLessThan(try recovery(1, "none"), 0.5)
        // Two centroids per 12-token text cannot carry 12 distinct tokens.
        XCTAssertLessThan(try recovery(0, "kmeans-2"), 0.5)
        let noisy = try XCTUnwrap(results.first { $0.noise == 1 && $0.compression == "none" })
        XCTAssertNotNil(noisy.clip)
        XCTAssertNotNil(noisy.epsilonPerStep)
    }

    func testDeeperCutsAreDecodedFromTheirOwnActivations() throws {
        // Every cut gets its own decoder; recovery is a fraction and the metrics are on their scales.
        let results = try sweep(cuts: [1, 2], noise: [0])
        XCTAssertEqual(results.map(\.cut), [1, 2])
        for row in results {
            XCTAssertTrue((0...1).contains(row.tokenRecovery), "\(row)")
            XCTAssertTrue((0...100).contains(row.bleu4) && (0...100).contains(row.rouge1), "\(row)")
        }
    }

    func testEmbeddingGradientRevealsExactlyTheBatchTokens() throws {
        let model = try SplitTrainingTests.model()
        let texts = Self.texts(count: 2, seed: 3, length: 6)
        let result = try EmbeddingGradientAttack.run(model: model, texts: texts)
        XCTAssertEqual(result.batchTokens, Set(texts.ids.flatMap { $0.dropLast() }).count)
        XCTAssertEqual(result.precision, 1)
        XCTAssertEqual(result.recall, 1)
        XCTAssertEqual(result.nonZeroRows, result.batchTokens)
    }

    func testGaussianEpsilonMatchesDPAccountingPLD() {
        // (z, δ, ε) from Scripts/fixtures/gaussian_mechanism.py: dp_accounting 0.4.4's privacy-loss
        // distribution of the Gaussian mechanism (pessimistic by at most its discretisation interval).
        let cases: [(Double, Double, Double)] = [
            (0.5, 1e-05, 9.997256150250443),
            (1.0, 1e-05, 4.377178100028768),
            (2.0, 1e-05, 1.9930914079101507),
            (5.0, 0.001, 0.45392016662411117),
            (0.1, 1e-05, 91.81728962350326),
            (0.01, 1e-05, 5426.499999998006),
        ]
        for (z, delta, reference) in cases {
            let epsilon = InversionAttack.gaussianEpsilon(noiseMultiplier: z, delta: delta)
            XCTAssertLessThanOrEqual(epsilon, reference * (1 + 1e-6), "z \(z)")
            XCTAssertGreaterThanOrEqual(epsilon, reference * (1 - 2e-3), "z \(z)")
        }
    }

    func testCodecsAndConfigurationAreChecked() throws {
        XCTAssertThrowsError(try ActivationCodec("zip")) { error in
            XCTAssertTrue("\(error)".contains("compressions: unknown codec 'zip'"), "\(error)")
        }
        let quantized = ActivationCodec.quantizeRoundTrip([0.5, -1, 0.25, 0.125], bits: 8, block: 64)
        for (value, expected) in zip(quantized, [0.5, -1, 0.25, 0.125] as [Float]) {
            XCTAssertLessThanOrEqual(abs(value - expected), 1 / 127 / 2 + 1e-7)
        }
        var configuration = InversionAttackConfiguration()
        configuration.noiseMultipliers = [-1]
        XCTAssertThrowsError(try configuration.validate()) { XCTAssertTrue("\($0)".hasPrefix("noise_multipliers:"), "\($0)") }
    }
}
