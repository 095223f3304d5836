import Foundation
@testable import SiloData
import SiloModels
import XCTest

/// The real data sets from `silo data fetch` (skipped until fetched) and the real SmolLM2 tokenizer.
final class RealDataTests: XCTestCase {
    func store() throws -> DataStore {
        let store = DataStore()
        guard store.isFetched else { throw XCTSkip("task data not in \(store.directory.path): run `silo data fetch`") }
        return store
    }

    func testCountsAndSplitsOfAllFourTasks() throws {
        let store = try store()
        let boolq = try store.load(.boolq)
        XCTAssertEqual(boolq.evaluation.count, 3270)
        XCTAssertEqual(boolq.train.count, 9427, "12,697 labelled combined rows minus the 3,270 dev rows they contain")
        XCTAssertTrue(boolq.notes[0].contains("3245 unlabelled"), boolq.notes[0])
        XCTAssertTrue(boolq.notes[0].contains("minus 3270"), boolq.notes[0])
        XCTAssertEqual(boolq.evaluation.count { $0.answer == "yes" }, 2033)
        XCTAssertTrue(boolq.evaluation[0].source.description.hasSuffix("BoolQ/dev.jsonl:1"))
        let devQuestions = Set(boolq.evaluation.map(\.question))
        XCTAssertFalse(boolq.train.contains { devQuestions.contains($0.question) }, "no dev question in train")

        let pubmed = try store.load(.pubmedqa)
        XCTAssertEqual(pubmed.train.count, 500)
        XCTAssertEqual(pubmed.evaluation.count, 500)
        XCTAssertEqual(pubmed.evaluation.count { $0.answer == "maybe" }, 55)
        XCTAssertEqual(pubmed.train.count { $0.answer == "maybe" }, 0)

        let xsum = try store.load(.xsum)
        XCTAssertEqual(xsum.train.count + xsum.evaluation.count, 1000)
        XCTAssertEqual(xsum.evaluation.count, 200)
        let fiqa = try store.load(.fiqa)
        XCTAssertEqual(fiqa.train.count + fiqa.evaluation.count, 648)
        XCTAssertEqual(fiqa.evaluation.count, 129)
    }

    func testBoolQWithTheSmolLM2Tokenizer() throws {
        let store = try store()
        let modelFile = try? ModelStore().resolve("smollm2-135m")
        guard let modelFile else { throw XCTSkip("SmolLM2 not in the cache: run `silo models fetch smollm2-135m`") }
        let tokenizer = try Tokenizer(ggufFile: GGUFFile(contentsOf: modelFile))
        let examples = try Dataset.load(file: store.locate(.boolqDev), task: .boolq).prefix(200)
        let template = TaskName.boolq.template
        var truncated = 0
        for example in examples {
            let encoded = try template.encode(example, tokenizer: tokenizer, maxLength: 128)
            XCTAssertLessThanOrEqual(encoded.ids.count, 128)
            let target = Array(encoded.ids[encoded.promptLength...])
            XCTAssertEqual(tokenizer.decode(target.map(Int.init)), example.answer == "yes" ? " yes" : " no")
            XCTAssertEqual(encoded.targetCount, target.count)
            XCTAssertTrue(tokenizer.decode(encoded.ids.map(Int.init)).hasSuffix("\nQuestion: \(TaskTemplate.asQuestion(example.question))\nAnswer:\(template.target(for: example))"))
            if encoded.truncatedPassage { truncated += 1 }
        }
        XCTAssertGreaterThan(truncated, 50, "most BoolQ passages exceed 128 tokens")
        // Untruncated: the ids are the tokenizer's encoding of prompt + target (SmolLM2 adds no BOS).
        let first = examples[examples.startIndex]
        let whole = try template.encode(first, tokenizer: tokenizer, maxLength: 4096)
        XCTAssertEqual(whole.ids.map(Int.init), tokenizer.encode(template.prompt(for: first) + template.target(for: first)))
        let choices = try template.encodeChoices(first, tokenizer: tokenizer, maxLength: 4096)
        XCTAssertEqual(choices.continuations.map(\.count), [1, 1], "' yes' and ' no' are single SmolLM2 tokens")
        XCTAssertEqual(choices.promptIDs + choices.continuations[choices.correctIndex], whole.ids)
    }
}
