import ArgumentParser
import Foundation
import SiloPrivacy

/// `silo privacy …`: the RDP accountant of the Poisson-subsampled Gaussian mechanism.
struct Privacy: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Privacy accounting: ε of T steps of the Poisson-subsampled Gaussian mechanism, or the noise for a target ε.",
        subcommands: [Epsilon.self, Noise.self]
    )

    struct Epsilon: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "ε after T steps (Rényi DP, improved conversion; as dp_accounting's RdpAccountant).")

        @Option(name: .customLong("noise-multiplier"), help: "z: noise standard deviation over the clipping norm.") var noiseMultiplier: Double
        @Option(name: .customLong("sample-rate"), help: "q: probability that an example joins a batch (Poisson sampling), in (0, 1].") var sampleRate: Double
        @Option(help: "T: number of steps.") var steps: Int
        @Option(help: "δ, in (0, 1).") var delta: Double
        @Flag(help: "Print one JSON object.") var json = false

        func run() throws {
            let (epsilon, order) = try accounted { try RDPAccountant.epsilon(noiseMultiplier: noiseMultiplier, sampleRate: sampleRate, steps: steps, delta: delta) }
            if json {
                printJSON(["epsilon": epsilon, "order": order, "noise_multiplier": noiseMultiplier, "sample_rate": sampleRate,
                           "steps": Double(steps), "delta": delta])
            } else {
                print(String(format: "ε = %.6g (δ = %g, best Rényi order %g) after %d steps of z = %g, q = %g", epsilon, delta, order, steps, noiseMultiplier, sampleRate))
            }
        }
    }

    struct Noise: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The smallest noise multiplier whose ε after T steps is at most the target.")

        @Option(help: "Target ε (> 0).") var epsilon: Double
        @Option(name: .customLong("sample-rate"), help: "q, in (0, 1].") var sampleRate: Double
        @Option(help: "T: number of steps.") var steps: Int
        @Option(help: "δ, in (0, 1).") var delta: Double
        @Flag(help: "Print one JSON object.") var json = false

        func run() throws {
            let z = try accounted { try RDPAccountant.noiseMultiplier(epsilon: epsilon, sampleRate: sampleRate, steps: steps, delta: delta) }
            let achieved = try accounted { try RDPAccountant.epsilon(noiseMultiplier: z, sampleRate: sampleRate, steps: steps, delta: delta).epsilon }
            if json {
                printJSON(["noise_multiplier": z, "epsilon": achieved, "target_epsilon": epsilon, "sample_rate": sampleRate,
                           "steps": Double(steps), "delta": delta])
            } else {
                print(String(format: "z = %.6g gives ε = %.6g ≤ %g (δ = %g) after %d steps at q = %g", z, achieved, epsilon, delta, steps, sampleRate))
            }
        }
    }
}

/// Invalid parameters become a one-line usage error (non-zero exit, the reason on standard error).
private func accounted<T>(_ body: () throws -> T) throws -> T {
    do { return try body() } catch let error as PrivacyParameterError { throw ValidationError(error.message) }
}

private func printJSON(_ object: [String: Double]) {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    print(String(decoding: (try? encoder.encode(object)) ?? Data("{}".utf8), as: UTF8.self))
}
