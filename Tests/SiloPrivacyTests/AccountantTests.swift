import XCTest
@testable import SiloPrivacy

final class AccountantTests: XCTestCase {
    struct Case: Decodable {
        let noise_multiplier: Double, sample_rate: Double, steps: Int, delta: Double, rdp_epsilon: Double, pld_epsilon: Double
    }

    static func cases() throws -> [Case] {
        struct File: Decodable { let cases: [Case] }
        let url = try XCTUnwrap(Bundle.module.url(forResource: "dp_accounting", withExtension: "json", subdirectory: "Fixtures"))
        return try JSONDecoder().decode(File.self, from: Data(contentsOf: url)).cases
    }

    func testEpsilonAgreesWithDPAccounting() throws {
        // The criterion: never below dp_accounting's PLD ε by more than 1%, never above its RDP ε
        // by more than 3% (24 cases, q 0.001–1, z 0.5–5, T 1–100 000, δ 1e-5–1e-3).
        let cases = try Self.cases()
        XCTAssertGreaterThanOrEqual(cases.count, 20)
        for c in cases {
            let (epsilon, _) = try RDPAccountant.epsilon(noiseMultiplier: c.noise_multiplier, sampleRate: c.sample_rate, steps: c.steps, delta: c.delta)
            let label = "z \(c.noise_multiplier), q \(c.sample_rate), T \(c.steps), δ \(c.delta)"
            XCTAssertGreaterThanOrEqual(epsilon, 0.99 * c.pld_epsilon, label)
            XCTAssertLessThanOrEqual(epsilon, 1.03 * c.rdp_epsilon, label)
            // Same method as dp_accounting's RDP accountant: equal up to float rounding.
            XCTAssertEqual(epsilon, c.rdp_epsilon, accuracy: 1e-6 * c.rdp_epsilon, label)
        }
    }

    func testCalibrationRoundTrips() throws {
        for c in try Self.cases().prefix(12) {
            let z = try RDPAccountant.noiseMultiplier(epsilon: c.rdp_epsilon, sampleRate: c.sample_rate, steps: c.steps, delta: c.delta)
            XCTAssertEqual(z, c.noise_multiplier, accuracy: 1e-4 * c.noise_multiplier, "case \(c)")
        }
    }

    func testCompositionAddsAndOrdersMatter() throws {
        let one = try RDPAccountant.Event(noiseMultiplier: 1.1, sampleRate: 0.01, steps: 500)
        let two = try RDPAccountant.Event(noiseMultiplier: 1.1, sampleRate: 0.01, steps: 1000)
        XCTAssertEqual(RDPAccountant.rdp([one, one]), RDPAccountant.rdp([two]))
        let fractional = RDPAccountant.rdp(noiseMultiplier: 1, sampleRate: 0.01, orders: [2.5, 3, 3.5])
        XCTAssertLessThan(fractional[0], fractional[1])
        XCTAssertLessThan(fractional[1], fractional[2])
    }

    func testInvalidParametersAreRefusedWithReasons() {
        func message(_ body: () throws -> Any) -> String {
            do { _ = try body(); return "" } catch { return "\(error)" }
        }
        XCTAssertTrue(message { try RDPAccountant.epsilon(noiseMultiplier: 0, sampleRate: 0.1, steps: 1, delta: 1e-5) }.hasPrefix("noise multiplier 0.0 must be"))
        XCTAssertTrue(message { try RDPAccountant.epsilon(noiseMultiplier: -1, sampleRate: 0.1, steps: 1, delta: 1e-5) }.hasPrefix("noise multiplier -1.0"))
        XCTAssertTrue(message { try RDPAccountant.epsilon(noiseMultiplier: 1, sampleRate: 1.5, steps: 1, delta: 1e-5) }.hasPrefix("sample rate 1.5 is outside (0, 1]"))
        XCTAssertTrue(message { try RDPAccountant.epsilon(noiseMultiplier: 1, sampleRate: 0, steps: 1, delta: 1e-5) }.hasPrefix("sample rate 0.0 is outside (0, 1]"))
        XCTAssertTrue(message { try RDPAccountant.epsilon(noiseMultiplier: 1, sampleRate: 0.1, steps: 1, delta: 1) }.hasPrefix("delta 1.0 is outside (0, 1)"))
        XCTAssertTrue(message { try RDPAccountant.epsilon(noiseMultiplier: 1, sampleRate: 0.1, steps: 0, delta: 1e-5) }.hasPrefix("steps 0"))
        XCTAssertTrue(message { try RDPAccountant.noiseMultiplier(epsilon: 0, sampleRate: 0.1, steps: 1, delta: 1e-5) }.hasPrefix("epsilon 0.0 must be"))
    }
}
