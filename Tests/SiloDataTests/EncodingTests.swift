import Foundation
@testable import SiloData
import SiloModels
import SiloTensor
import XCTest

final class EncodingTests: XCTestCase {
    let here = SourceLocation(file: "/data/a.jsonl", line: 7)

    func boolq(_ passage: String, _ question: String = "is it so", answer: String = "no") -> Example {
        Example(task: .boolq, passage: passage, question: question, answer: answer, source: here)
    }

    func testLabelsPredictTheNextTargetTokenOnly() throws {
        let tokenizer = try byteTokenizer()
        let example = boolq("Short.")
        let encoded = try TaskName.boolq.template.encode(example, tokenizer: tokenizer, maxLength: 512)
        let prompt = "Passage: Short.\nQuestion: is it so?\nAnswer:"
        XCTAssertEqual(encoded.ids, bytes(prompt + " no"))
        XCTAssertEqual(encoded.promptLength, prompt.utf8.count)
        XCTAssertEqual(encoded.labels.count, encoded.ids.count)
        // Position p-1 (the ':') predicts ' ', p predicts 'n', p+1 predicts 'o'; the last position nothing.
        var expected = [Int32](repeating: -100, count: encoded.ids.count)
        let p = prompt.utf8.count
        expected[p - 1] = Int32(UInt8(ascii: " "))
        expected[p] = Int32(UInt8(ascii: "n"))
        expected[p + 1] = Int32(UInt8(ascii: "o"))
        XCTAssertEqual(encoded.labels, expected)
        XCTAssertEqual(encoded.targetCount, 3)
        XCTAssertFalse(encoded.truncatedPassage)
        XCTAssertEqual(encoded.source, here)
    }

    func testBOSAndEOSFollowTheTokenizer() throws {
        let withBOS = try byteTokenizer(addBOS: true)
        let example = boolq("P.")
        let encoded = try TaskName.boolq.template.encode(example, tokenizer: withBOS, maxLength: 512, appendingEndOfSequence: true)
        XCTAssertEqual(encoded.ids.first, 256)
        XCTAssertEqual(Array(encoded.ids.dropFirst()), bytes("Passage: P.\nQuestion: is it so?\nAnswer: no") + [256])
        XCTAssertEqual(encoded.labels[encoded.ids.count - 2], 256, "the last target token predicts EOS")
        let plain = try TaskName.boolq.template.encode(example, tokenizer: try byteTokenizer(), maxLength: 512)
        XCTAssertEqual(plain.ids.count, encoded.ids.count - 2)
    }

    func testTruncationCutsThePassageAtAWordAndKeepsQuestionAndTarget() throws {
        let tokenizer = try byteTokenizer()
        let passage = "alpha beta gamma delta epsilon zeta eta theta"
        let example = boolq(passage)
        let fixed = "Passage: \nQuestion: is it so?\nAnswer:".utf8.count + 3  // + " no"
        // Room for "alpha beta gamma" (16 bytes) but not " delta".
        let encoded = try TaskName.boolq.template.encode(example, tokenizer: tokenizer, maxLength: fixed + 19)
        XCTAssertTrue(encoded.truncatedPassage)
        XCTAssertEqual(encoded.ids, bytes("Passage: alpha beta gamma\nQuestion: is it so?\nAnswer: no"))
        XCTAssertLessThanOrEqual(encoded.ids.count, fixed + 19)
        XCTAssertEqual(encoded.targetCount, 3)
        // Exactly the fixed parts: the whole passage goes.
        let bare = try TaskName.boolq.template.encode(example, tokenizer: tokenizer, maxLength: fixed)
        XCTAssertEqual(bare.ids, bytes("Passage: \nQuestion: is it so?\nAnswer: no"))
        // One less: the question and target cannot be cut.
        assertDataError(.tooLong, ["/data/a.jsonl:7:", "boolq", "prompt without its passage", "maximum length \(fixed - 1)"]) {
            try TaskName.boolq.template.encode(example, tokenizer: tokenizer, maxLength: fixed - 1)
        }
    }

    func testTargetTruncationForLongAnswers() throws {
        let tokenizer = try byteTokenizer()
        let example = Example(task: .fiqa, question: "Why", answer: "Because of many many reasons.", source: here)
        let fixed = "Question: Why\nAnswer:".utf8.count
        assertDataError(.tooLong, ["/data/a.jsonl:7:"]) {
            try TaskName.fiqa.template.encode(example, tokenizer: tokenizer, maxLength: fixed + 5)
        }
        let cut = try TaskName.fiqa.template.encode(example, tokenizer: tokenizer, maxLength: fixed + 5, truncatingTarget: true)
        XCTAssertTrue(cut.truncatedTarget)
        XCTAssertEqual(cut.ids, bytes("Question: Why\nAnswer: Beca"))
        XCTAssertEqual(cut.targetCount, 5)
    }

    func testChoicesShareThePromptAndNameTheCorrectOne() throws {
        let tokenizer = try byteTokenizer()
        let pubmed = Example(task: .pubmedqa, passage: "one two three", question: "q?", answer: "maybe", source: here)
        let choices = try TaskName.pubmedqa.template.encodeChoices(pubmed, tokenizer: tokenizer, maxLength: 512)
        XCTAssertEqual(choices.promptIDs, bytes("Passage: one two three\nQuestion: q?\nAnswer:"))
        XCTAssertEqual(choices.continuations, [bytes(" yes"), bytes(" no"), bytes(" maybe")])
        XCTAssertEqual(choices.correctIndex, 2)
        // The prompt is cut so that the longest choice (" maybe", 6) still fits.
        let fixed = "Passage: \nQuestion: q?\nAnswer:".utf8.count
        let short = try TaskName.pubmedqa.template.encodeChoices(pubmed, tokenizer: tokenizer, maxLength: fixed + 6 + 7)
        XCTAssertEqual(short.promptIDs, bytes("Passage: one two\nQuestion: q?\nAnswer:"))
        XCTAssertTrue(short.truncatedPassage)
        let xsum = Example(task: .xsum, passage: "d", answer: "s", source: here)
        assertDataError(.invalidArgument, ["/data/a.jsonl:7:", "not a classification task"]) {
            try TaskName.xsum.template.encodeChoices(xsum, tokenizer: tokenizer, maxLength: 64)
        }
        let prompt = try TaskName.xsum.template.encodePrompt(xsum, tokenizer: tokenizer, maxLength: 64)
        XCTAssertEqual(prompt, bytes("Article: d\nSummary:"))
    }

    func testBatchPadsRightWithIgnoredLabels() throws {
        let tokenizer = try byteTokenizer()
        let first = try TaskName.boolq.template.encode(boolq("A."), tokenizer: tokenizer, maxLength: 512)
        let second = try TaskName.boolq.template.encode(boolq("A longer passage."), tokenizer: tokenizer, maxLength: 512)
        let batch = Batch([first, second], paddingID: 5, exampleIndices: [3, 9])
        XCTAssertEqual(batch.batch, 2)
        XCTAssertEqual(batch.time, second.ids.count)
        XCTAssertEqual(batch.lengths, [first.ids.count, second.ids.count])
        XCTAssertEqual(batch.ids.count, 2 * batch.time)
        XCTAssertEqual(Array(batch.ids[0..<first.ids.count]), first.ids)
        XCTAssertEqual(Array(batch.ids[first.ids.count..<batch.time]), [Int32](repeating: 5, count: batch.time - first.ids.count))
        XCTAssertEqual(Array(batch.labels[first.ids.count..<batch.time]), [Int32](repeating: -100, count: batch.time - first.ids.count))
        XCTAssertEqual(Array(batch.ids[batch.time...]), second.ids)
        XCTAssertEqual(Array(batch.labels[batch.time...]), second.labels)
        XCTAssertEqual(batch.targetCount, 6)
        XCTAssertEqual(batch.exampleIndices, [3, 9])
    }

    func testBatchIteratorOrderDependsOnlyOnTheSeed() throws {
        let examples = (0..<10).map { index in
            EncodedExample(ids: [Int32(index), 1], labels: [1, -100], promptLength: 1, truncatedPassage: false,
                           truncatedTarget: false, source: SourceLocation(file: "f", line: index + 1))
        }
        func orders(seed: UInt64, dropLast: Bool = false) -> [[Int]] {
            Array(BatchIterator(examples: examples, batchSize: 4, epochs: 2, seed: seed, dropLast: dropLast)).map(\.exampleIndices)
        }
        let a = orders(seed: 42)
        XCTAssertEqual(a, orders(seed: 42))
        XCTAssertNotEqual(a, orders(seed: 43))
        XCTAssertEqual(a.map(\.count), [4, 4, 2, 4, 4, 2])
        XCTAssertEqual(a[0..<3].flatMap { $0 }.sorted(), Array(0..<10), "each epoch visits every example once")
        XCTAssertEqual(a[3..<6].flatMap { $0 }.sorted(), Array(0..<10))
        XCTAssertNotEqual(a[0..<3].flatMap { $0 }, a[3..<6].flatMap { $0 }, "epochs are shuffled differently")
        XCTAssertEqual(orders(seed: 42, dropLast: true).map(\.count), [4, 4, 4, 4])
        XCTAssertEqual(orders(seed: 42, dropLast: true)[0], a[0], "dropLast changes only the tail")
        // The rows carry the examples of their indices.
        for batch in BatchIterator(examples: examples, batchSize: 3, seed: 1) {
            for (row, index) in batch.exampleIndices.enumerated() { XCTAssertEqual(batch.ids[row * batch.time], Int32(index)) }
        }
        // A permutation of all indices.
        XCTAssertEqual(seededPermutation(count: 10, key: RandomKey(seed: 7)).sorted(), Array(0..<10))
        let unshuffled = Array(BatchIterator(examples: examples, batchSize: 5, seed: 0, shuffle: false)).map(\.exampleIndices)
        XCTAssertEqual(unshuffled, [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]])
    }
}
