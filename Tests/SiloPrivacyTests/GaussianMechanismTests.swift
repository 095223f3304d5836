import XCTest
import SiloTensor
@testable import SiloPrivacy

final class GaussianMechanismTests: XCTestCase {
    func testClippingGivesExactNorms() {
        let vector: [Float] = [3, 4, 0, 12]   // norm 13
        let clipped = GaussianMechanism.clipped(vector, to: 6.5)
        let norm = clipped.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
        XCTAssertEqual(norm, 6.5, accuracy: 1e-6)
        XCTAssertEqual(clipped, [1.5, 2, 0, 6])
        XCTAssertEqual(GaussianMechanism.clipped(vector, to: 20), vector)
    }

    func testPrivateGradientWithoutNoiseIsTheMeanOfClippedGradients() {
        let gradients: [[Float]] = [[3, 4], [0, 0.5], [-6, 8]]   // norms 5, 0.5, 10 → clip 1
        let result = GaussianMechanism.privateGradient(perExample: gradients, count: 2, clip: 1, noiseMultiplier: 0,
                                                       expectedBatchSize: 4, key: RandomKey(seed: 1))
        // (0.6 + 0 − 0.6, 0.8 + 0.5 + 0.8) / 4
        XCTAssertEqual(result[0], 0, accuracy: 1e-7)
        XCTAssertEqual(result[1], 2.1 / 4, accuracy: 1e-7)
    }

    func testNoiseHasTheRightStandardDeviation() {
        // 200 000 coordinates of N(0, (z·C)²)/B with z = 1.5, C = 2, B = 3: std 1.0; mean 0.
        let count = 200_000
        let noise = GaussianMechanism.privateGradient(perExample: [], count: count, clip: 2, noiseMultiplier: 1.5,
                                                      expectedBatchSize: 3, key: RandomKey(seed: 9))
        let mean = noise.reduce(0.0) { $0 + Double($1) } / Double(count)
        let variance = noise.reduce(0.0) { $0 + (Double($1) - mean) * (Double($1) - mean) } / Double(count - 1)
        // Standard errors: mean 1/√n ≈ 0.0022, std ≈ 1/√(2n) ≈ 0.0016; allow 4 of them.
        XCTAssertEqual(mean, 0, accuracy: 4 * 0.0022)
        XCTAssertEqual(variance.squareRoot(), 1, accuracy: 4 * 0.0016)
        // Normal shape: 68.27% within one std, 95.45% within two (binomial standard error ≈ 0.001).
        let within1 = Double(noise.filter { abs(Double($0)) < 1 }.count) / Double(count)
        let within2 = Double(noise.filter { abs(Double($0)) < 2 }.count) / Double(count)
        XCTAssertEqual(within1, 0.6827, accuracy: 0.005)
        XCTAssertEqual(within2, 0.9545, accuracy: 0.003)
    }
}
