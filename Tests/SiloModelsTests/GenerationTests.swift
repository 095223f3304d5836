import Foundation
import XCTest
import SiloTensor
import SiloTestSupport
@testable import SiloModels

/// Sampling rules (greedy, temperature, top-k, top-p as transformers' logits warpers) against their
/// hand-computed distributions, and the generation loop: stop tokens, stop strings, cancellation,
/// seeds, limits.
final class GenerationTests: XCTestCase {
    func draw(_ logits: [Float], _ sampling: Sampling, count: Int, seed: UInt64 = 7) -> [Int: Int] {
        var sampler = TokenSampler(sampling: sampling, key: RandomKey(seed: seed))
        var histogram: [Int: Int] = [:]
        logits.withUnsafeBufferPointer { buffer in
            for _ in 0..<count { histogram[Int(sampler.next(logits: buffer)), default: 0] += 1 }
        }
        return histogram
    }

    func testGreedyTakesTheFirstLargest() {
        XCTAssertEqual(draw([0.5, 3, -1, 3, 2], .greedy, count: 5), [1: 5])
        XCTAssertEqual(draw([-2], .greedy, count: 1), [0: 1])
    }

    func testTemperatureSamplesTheSoftmax() {
        // logits (0, ln 2, ln 3) at temperature 1: p = (1, 2, 3)/6. At temperature 0.5 the logits double:
        // p ∝ (1, 4, 9), i.e. (1, 4, 9)/14.
        let logits: [Float] = [0, logf(2), logf(3)]
        let n = 12_000
        let one = draw(logits, Sampling(temperature: 1), count: n)
        for (token, p) in [(0, 1.0 / 6), (1, 2.0 / 6), (2, 3.0 / 6)] {
            // Binomial standard deviation √(p(1−p)/n) ≤ 0.0046; allow 4σ.
            XCTAssertEqual(Double(one[token, default: 0]) / Double(n), p, accuracy: 0.018, "T = 1, token \(token)")
        }
        let half = draw(logits, Sampling(temperature: 0.5), count: n)
        for (token, p) in [(0, 1.0 / 14), (1, 4.0 / 14), (2, 9.0 / 14)] {
            XCTAssertEqual(Double(half[token, default: 0]) / Double(n), p, accuracy: 0.018, "T = 0.5, token \(token)")
        }
    }

    func testTopKKeepsTiesWithTheKthAndRenormalises() {
        // top-k 2 of (1, 3, 2, 3): the two 3s. Equal logits: each 1/2.
        let tied = draw([1, 3, 2, 3], Sampling(temperature: 1, topK: 2), count: 4000)
        XCTAssertEqual(Set(tied.keys), [1, 3])
        XCTAssertEqual(Double(tied[1, default: 0]) / 4000, 0.5, accuracy: 0.04)
        // top-k 2 of (1, 3, 2, 0): tokens 1 and 2, with p ∝ (e³, e²): 0.731, 0.269. A tie at the k-th is
        // kept as transformers does: top-k 2 of (3, 2, 2) keeps all three.
        let kept = draw([1, 3, 2, 0], Sampling(temperature: 1, topK: 2), count: 6000)
        XCTAssertEqual(Set(kept.keys), [1, 2])
        XCTAssertEqual(Double(kept[1, default: 0]) / 6000, 0.731, accuracy: 0.025)
        XCTAssertEqual(Set(draw([3, 2, 2], Sampling(temperature: 1, topK: 2), count: 3000).keys), [0, 1, 2])
        // top-k 1 is greedy.
        XCTAssertEqual(draw([0.1, 0.7, 0.2], Sampling(temperature: 2, topK: 1), count: 50), [1: 50])
    }

    func testTopPKeepsTheSmallestNucleus() {
        // p = (0.5, 0.3, 0.15, 0.05). top-p 0.7: token 0 (mass before it 0 < 0.7) and token 1 (0.5 < 0.7)
        // are kept, token 2 is not (0.8 ≥ 0.7) — transformers' TopPLogitsWarper removes tokens whose
        // ascending cumulative probability is ≤ 1 − p = 0.3, i.e. 0.05 and 0.2. Renormalised: 0.625, 0.375.
        let logits = [0.5, 0.3, 0.15, 0.05].map { Float(Foundation.log($0)) }
        let nucleus = draw(logits, Sampling(temperature: 1, topP: 0.7), count: 8000)
        XCTAssertEqual(Set(nucleus.keys), [0, 1])
        XCTAssertEqual(Double(nucleus[0, default: 0]) / 8000, 0.625, accuracy: 0.022)
        // top-p 0.81: the mass before token 2 is 0.8 < 0.81, so it is kept too.
        XCTAssertEqual(Set(draw(logits, Sampling(temperature: 1, topP: 0.81), count: 4000).keys), [0, 1, 2])
        // A tiny top-p still keeps the most likely token.
        XCTAssertEqual(draw(logits, Sampling(temperature: 1, topP: 0.01), count: 100), [0: 100])
    }

    func testSamplingIsReproducibleFromTheKey() {
        let logits = (0..<50).map { Float(($0 * 37) % 11) * 0.3 }
        let sampling = Sampling(temperature: 1.3, topK: 20, topP: 0.9)
        func sequence(_ seed: UInt64) -> [Int32] {
            var sampler = TokenSampler(sampling: sampling, key: RandomKey(seed: seed))
            return logits.withUnsafeBufferPointer { buffer in (0..<40).map { _ in sampler.next(logits: buffer) } }
        }
        XCTAssertEqual(sequence(1), sequence(1))
        XCTAssertNotEqual(sequence(1), sequence(2))
    }

    func testInvalidSamplingIsRefused() {
        XCTAssertThrowsError(try Sampling(temperature: -1).validate())
        XCTAssertThrowsError(try Sampling(temperature: 1, topK: -3).validate())
        XCTAssertThrowsError(try Sampling(temperature: 1, topP: 0).validate())
        XCTAssertThrowsError(try Sampling(temperature: 1, topP: 1.5).validate())
        XCTAssertNoThrow(try Sampling(temperature: 0.7, topK: 50, topP: 0.95).validate())
    }

    // MARK: The generation loop

    func model(_ name: String) throws -> (any LanguageModel, HFParityTests.Reference) {
        let folder = try XCTUnwrap(HFParityTests.fixtures, "Fixtures/hf missing").appendingPathComponent(name)
        let reference = try JSONDecoder().decode(HFParityTests.Reference.self,
                                                 from: Data(contentsOf: folder.appendingPathComponent("reference.json")))
        return (try Checkpoint.load(folder), reference)
    }

    func testStopTokenEndsGenerationAndIsIncluded() throws {
        let (model, reference) = try model("qwen2_bias")
        let stop = reference.greedy[3]
        let firstStop = try XCTUnwrap(reference.greedy.firstIndex(of: stop))
        let result = try model.generate(prompt: reference.prompt, maxNewTokens: 20, stopTokenIds: [stop])
        XCTAssertEqual(result.tokens, Array(reference.greedy[...firstStop]))
        XCTAssertEqual(result.finishReason, .stopToken(stop))
    }

    func testStopStringsUseTheDecoder() throws {
        let (model, reference) = try model("gpt2")
        // A toy decoder: token i is "<i>".
        let decode: ([Int32]) -> String = { $0.map { "<\($0)>" }.joined() }
        let target = "<\(reference.greedy[4])><\(reference.greedy[5])>"
        let result = try model.generate(prompt: reference.prompt, maxNewTokens: 20, stopStrings: ["never", target],
                                        decode: decode)
        let expectedCount = try XCTUnwrap((1...20).first { decode(Array(reference.greedy.prefix($0))).contains(target) })
        XCTAssertEqual(result.tokens, Array(reference.greedy.prefix(expectedCount)))
        XCTAssertEqual(result.finishReason, .stopString(target))
        XCTAssertEqual(result.text, decode(result.tokens))
        XCTAssertThrowsError(try model.generate(prompt: reference.prompt, maxNewTokens: 3, stopStrings: ["x"])) { error in
            XCTAssertTrue("\(error)".contains("decode"), "\(error)")
        }
    }

    func testCallbackCancelsAndLimitsAreChecked() throws {
        let (model, reference) = try model("gpt2")
        var seen: [Int32] = []
        let result = try model.generate(prompt: reference.prompt, maxNewTokens: 20, onToken: { token in
            seen.append(token)
            return seen.count < 3
        })
        XCTAssertEqual(result.tokens, Array(reference.greedy.prefix(3)))
        XCTAssertEqual(seen, result.tokens)
        XCTAssertEqual(result.finishReason, .cancelled)
        XCTAssertEqual(try model.generate(prompt: reference.prompt, maxNewTokens: 0).tokens, [])
        XCTAssertThrowsError(try model.generate(prompt: [], maxNewTokens: 3))
        // GPT-2's 64 learned positions: 7 + 58 tokens do not fit.
        XCTAssertThrowsError(try model.generate(prompt: reference.prompt, maxNewTokens: 58)) { error in
            XCTAssertTrue("\(error)".contains("64 positions"), "\(error)")
        }
        XCTAssertThrowsError(try model.generate(prompt: [Int32(model.vocabularySize)], maxNewTokens: 1))
    }

    func testSampledGenerationIsSeededAndStaysInTheVocabulary() throws {
        let (model, reference) = try model("llama3_rope")
        let sampling = Sampling(temperature: 1.5, topK: 40, topP: 0.95)
        let first = try model.generate(prompt: reference.prompt, maxNewTokens: 12, sampling: sampling,
                                       stopTokenIds: [], key: RandomKey(seed: 11))
        let again = try model.generate(prompt: reference.prompt, maxNewTokens: 12, sampling: sampling,
                                       stopTokenIds: [], key: RandomKey(seed: 11))
        let other = try model.generate(prompt: reference.prompt, maxNewTokens: 12, sampling: sampling,
                                       stopTokenIds: [], key: RandomKey(seed: 12))
        XCTAssertEqual(first.tokens, again.tokens)
        XCTAssertNotEqual(first.tokens, other.tokens)
        XCTAssertEqual(first.tokens.count, 12)
        XCTAssertTrue(first.tokens.allSatisfy { $0 >= 0 && Int($0) < model.vocabularySize })
        XCTAssertNotEqual(first.tokens, reference.greedy.prefix(12).map { $0 }, "temperature 1.5 should leave the greedy path")
    }
}
