import Foundation
import XCTest

/// The command-line contract of issue 3 (`silo tokenize / score / generate --json`), run on the built
/// `silo` binary and compared with Hugging Face transformers (Scripts/fixtures/cli_reference.py).
final class CommandLineContractTests: XCTestCase {
    private struct Reference: Decodable {
        struct Score: Decodable { let text: String; let ids: [Int]; let sum_logprob: Double }
        struct Tokenize: Decodable { let text: String; let ids: [Int] }
        struct Generate: Decodable { let prompt: String; let prompt_ids: [Int]; let new_ids: [Int] }
        let score: [Score]
        let tokenize: [Tokenize]
        let generate: Generate
    }

    private var siloBinary: URL {
        get throws {
            // The test bundle and the `silo` executable sit in the same products folder.
            let folder = try XCTUnwrap(Bundle.main.executableURL).deletingLastPathComponent()
            let url = folder.appendingPathComponent("silo")
            guard FileManager.default.isExecutableFile(atPath: url.path) else {
                throw XCTSkip("no silo binary beside the tests at \(url.path): build with `swift build --build-tests`")
            }
            return url
        }
    }

    private func run(_ arguments: [String]) throws -> (status: Int32, output: Data, error: String) {
        let process = Process()
        process.executableURL = try siloBinary
        process.arguments = arguments
        let output = Pipe(), error = Pipe()
        process.standardOutput = output
        process.standardError = error
        try process.run()
        let outputData = output.fileHandleForReading.readDataToEndOfFile()
        let errorData = error.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, outputData, String(decoding: errorData, as: UTF8.self))
    }

    private func reference() throws -> Reference {
        let home = ProcessInfo.processInfo.environment["SILO_HOME"]
            ?? FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache/silo").path
        let model = URL(fileURLWithPath: home).appendingPathComponent("models/smollm2-135m")
        guard (try? FileManager.default.contentsOfDirectory(atPath: model.path))?.contains(where: { $0.hasSuffix(".gguf") }) == true else {
            throw XCTSkip("SmolLM2-135M is not in \(home): run `make fixtures-data` (or `silo models fetch smollm2-135m`)")
        }
        let url = try XCTUnwrap(Bundle.module.url(forResource: "cli_reference", withExtension: "json", subdirectory: "Fixtures"))
        return try JSONDecoder().decode(Reference.self, from: Data(contentsOf: url))
    }

    private func json(_ data: Data) throws -> [String: Any] {
        try XCTUnwrap(try JSONSerialization.jsonObject(with: data) as? [String: Any], String(decoding: data, as: UTF8.self))
    }

    func testTokenizeMatchesTransformers() throws {
        for case_ in try reference().tokenize {
            let result = try run(["tokenize", "--model", "smollm2-135m", "--text", case_.text, "--json"])
            XCTAssertEqual(result.status, 0, result.error)
            XCTAssertEqual(try json(result.output)["ids"] as? [Int], case_.ids, case_.text)
        }
    }

    func testScoreMatchesTransformers() throws {
        for case_ in try reference().score {
            let result = try run(["score", "--model", "smollm2-135m", "--text", case_.text, "--json"])
            XCTAssertEqual(result.status, 0, result.error)
            let object = try json(result.output)
            XCTAssertEqual(object["ids"] as? [Int], case_.ids)
            let total = try XCTUnwrap(object["sum_logprob"] as? Double)
            // Float32 forward vs transformers' Float32 forward (Float64 log-softmax there): measured 3e-5.
            XCTAssertEqual(total, case_.sum_logprob, accuracy: 1e-3 + 1e-4 * abs(case_.sum_logprob), case_.text)
        }
    }

    func testGreedyGenerateMatchesTransformers() throws {
        let expected = try reference().generate
        // The default (auto: quantised blocks on AVX2 CPUs) and the Float32 expansion give the same ids.
        for precision in [[], ["--weight-precision", "float32"]] {
            let result = try run(["generate", "--model", "smollm2-135m", "--prompt", expected.prompt,
                                  "--max-new-tokens", "\(expected.new_ids.count)", "--temperature", "0", "--json"] + precision)
            XCTAssertEqual(result.status, 0, result.error)
            let object = try json(result.output)
            XCTAssertEqual(object["prompt_ids"] as? [Int], expected.prompt_ids, "\(precision)")
            XCTAssertEqual(object["new_ids"] as? [Int], expected.new_ids, "\(precision)")
            XCTAssertTrue((object["text"] as? String)?.hasPrefix(" Paris.") == true, "\(precision): \(object)")
        }
    }

    func testMissingModelFailsWithOneClearLine() throws {
        let result = try run(["tokenize", "--model", "/nonexistent/model.gguf", "--text", "x", "--json"])
        XCTAssertNotEqual(result.status, 0)
        XCTAssertTrue(result.error.contains("/nonexistent/model.gguf"), result.error)
        XCTAssertTrue(result.output.isEmpty)
    }

    /// `silo bench greedy` decodes real XSum prompts both ways and fails unless the tokens agree.
    func testBenchGreedyGivesTheSameTokensCachedAndRecomputed() throws {
        _ = try reference()
        let result = try run(["bench", "greedy", "--examples", "1", "--max-length", "96", "--max-new-tokens", "5", "--json"])
        if result.error.contains("not in the cache") || result.error.contains("data fetch") { throw XCTSkip("XSum is not in the cache: \(result.error)") }
        XCTAssertEqual(result.status, 0, result.error)
        let object = try json(result.output)
        XCTAssertEqual(object["same_tokens"] as? Bool, true)
        XCTAssertEqual(object["examples"] as? Int, 1)
        XCTAssertGreaterThan(object["new_tokens"] as? Int ?? 0, 0)
        XCTAssertGreaterThan(object["recomputed_seconds"] as? Double ?? 0, 0)
    }

    func testHelpListsTheCommands() throws {
        let result = try run(["--help"])
        XCTAssertEqual(result.status, 0)
        let text = String(decoding: result.output, as: UTF8.self)
        for command in ["models", "generate", "tokenize", "score", "bench"] {
            XCTAssertTrue(text.contains(command), "silo --help lacks \(command):\n\(text)")
        }
    }

    // MARK: silo privacy (issue 6): one case of Tests/SiloPrivacyTests/Fixtures/dp_accounting.json

    func testPrivacyEpsilonAndNoiseMatchDPAccounting() throws {
        let epsilon = try run(["privacy", "epsilon", "--noise-multiplier", "1.1", "--sample-rate", "0.01", "--steps", "10000", "--delta", "1e-5", "--json"])
        XCTAssertEqual(epsilon.status, 0, epsilon.error)
        // dp_accounting 0.4.4: RDP ε 5.632010670081592, PLD ε 5.1963.
        XCTAssertEqual(try XCTUnwrap(try json(epsilon.output)["epsilon"] as? Double), 5.632010670081592, accuracy: 1e-6)
        let noise = try run(["privacy", "noise", "--epsilon", "5.632010670081592", "--sample-rate", "0.01", "--steps", "10000", "--delta", "1e-5", "--json"])
        XCTAssertEqual(noise.status, 0, noise.error)
        XCTAssertEqual(try XCTUnwrap(try json(noise.output)["noise_multiplier"] as? Double), 1.1, accuracy: 1e-4)
    }

    func testPrivacyRefusesInvalidParameters() throws {
        let result = try run(["privacy", "epsilon", "--noise-multiplier", "1", "--sample-rate", "1.5", "--steps", "10", "--delta", "1e-5", "--json"])
        XCTAssertNotEqual(result.status, 0)
        XCTAssertTrue(result.error.contains("sample rate 1.5 is outside (0, 1]"), result.error)
        XCTAssertTrue(result.output.isEmpty)
    }
}
