import Foundation
@testable import SiloData
import XCTest

/// Metrics against Tests/SiloDataTests/Fixtures/metrics.json, written by Scripts/fixtures/metrics.py
/// from rouge-score 0.1.2 and sacrebleu 2.6.0.
final class MetricsTests: XCTestCase {
    struct Fixture: Decodable {
        struct Pair: Decodable {
            let prediction: String
            let reference: String
            let rouge: [String: [Double]]
            let rouge_tokens_prediction: [String]
            let bleu: Double
            let bleu_tokens_prediction: String
        }
        struct Corpus: Decodable {
            let score: Double
            let counts: [Int]
            let totals: [Int]
            let sys_len: Int
            let ref_len: Int
        }
        let pairs: [Pair]
        let rouge_mean: [String: Double]
        let bleu_corpus: Corpus
        let bleu_xsum: Corpus
        let xsum_pairs: Int
    }

    func fixture() throws -> Fixture {
        guard let url = Bundle.module.url(forResource: "metrics", withExtension: "json", subdirectory: "Fixtures") else {
            throw XCTSkip("Fixtures/metrics.json is missing: run Scripts/fixtures/metrics.py")
        }
        return try JSONDecoder().decode(Fixture.self, from: Data(contentsOf: url))
    }

    func testFixtureCoversXSumAndEdgeCases() throws {
        let fixture = try fixture()
        XCTAssertGreaterThanOrEqual(fixture.xsum_pairs, 20)
        XCTAssertGreaterThanOrEqual(fixture.pairs.count - fixture.xsum_pairs, 25)
    }

    func testRougeTokensAndScoresMatchRougeScore() throws {
        for pair in try fixture().pairs {
            XCTAssertEqual(Metrics.rougeTokens(pair.prediction), pair.rouge_tokens_prediction, pair.prediction)
            let scores = Metrics.rouge(prediction: pair.prediction, reference: pair.reference)
            for name in Metrics.rougeNames {
                let expected = try XCTUnwrap(pair.rouge[name])
                let actual = try XCTUnwrap(scores[name])
                XCTAssertEqual(actual.precision, expected[0], accuracy: 1e-12, "\(name) precision of \(pair.prediction.debugDescription)")
                XCTAssertEqual(actual.recall, expected[1], accuracy: 1e-12, "\(name) recall of \(pair.prediction.debugDescription)")
                XCTAssertEqual(actual.fmeasure, expected[2], accuracy: 1e-12, "\(name) F1 of \(pair.prediction.debugDescription)")
            }
        }
    }

    func testMeanRougeMatches() throws {
        let fixture = try fixture()
        let mean = Metrics.rouge(predictions: fixture.pairs.map(\.prediction), references: fixture.pairs.map(\.reference))
        for name in Metrics.rougeNames {
            XCTAssertEqual(try XCTUnwrap(mean[name]), try XCTUnwrap(fixture.rouge_mean[name]), accuracy: 1e-12, name)
        }
    }

    func testThirteenATokensMatchSacrebleu() throws {
        for pair in try fixture().pairs {
            XCTAssertEqual(Metrics.bleuTokens(pair.prediction).joined(separator: " "), pair.bleu_tokens_prediction,
                           pair.prediction.debugDescription)
        }
        // Edge cases of 13a, written out (same rules; the fixture holds sacrebleu's output for similar text).
        XCTAssertEqual(Metrics.bleuTokens("1,000.5 and 3-4, e-mail U.S."), ["1,000.5", "and", "3", "-", "4", ",", "e-mail", "U", ".", "S", "."])
        XCTAssertEqual(Metrics.bleuTokens("a..b"), ["a", ".", ".", "b"])
    }

    func testSentenceAndCorpusBleuMatchSacrebleu() throws {
        let fixture = try fixture()
        for pair in fixture.pairs {
            XCTAssertEqual(Metrics.bleu(predictions: [pair.prediction], references: [pair.reference]), pair.bleu, accuracy: 1e-9,
                           pair.prediction.debugDescription)
        }
        let corpus = Metrics.bleu(predictions: fixture.pairs.map(\.prediction), references: fixture.pairs.map(\.reference))
        XCTAssertEqual(corpus, fixture.bleu_corpus.score, accuracy: 1e-9)
        let xsum = fixture.pairs.prefix(fixture.xsum_pairs)
        XCTAssertEqual(Metrics.bleu(predictions: xsum.map(\.prediction), references: xsum.map(\.reference)), fixture.bleu_xsum.score, accuracy: 1e-9)
        XCTAssertGreaterThan(fixture.bleu_corpus.score, 10, "the fixture exercises non-trivial scores")
    }

    func testTaskMetricsAccuracyAndPerplexity() {
        XCTAssertEqual(Metrics.accuracy(predictions: [0, 1, 1, 2], labels: [0, 1, 0, 0]), 0.5)
        XCTAssertEqual(Metrics.accuracy(predictions: [], labels: []), 0)
        XCTAssertEqual(Metrics.perplexity(meanLoss: log(50)), 50, accuracy: 1e-9)
        let xsum = Metrics.evaluate(.xsum, predictions: ["the cat sat on the mat today"], references: ["the cat sat on the mat"])
        XCTAssertEqual(Set(xsum.keys), ["rouge1", "rouge2", "rougeL", "bleu4"])
        XCTAssertEqual(try XCTUnwrap(xsum["rouge1"]), 2 * (6.0 / 7) * 1 / (6.0 / 7 + 1), accuracy: 1e-12)
        XCTAssertEqual(Set(Metrics.evaluate(.fiqa, predictions: ["a"], references: ["a"]).keys), ["rougeL"])
    }
}
