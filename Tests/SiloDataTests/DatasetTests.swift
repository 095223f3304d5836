import Foundation
@testable import SiloData
import XCTest

final class DatasetTests: XCTestCase {
    func load(_ text: String, _ task: TaskName, path: String = "/data/client3.jsonl") throws -> [Example] {
        try Dataset.load(data: Data(text.utf8), path: path, task: task)
    }

    func testBoolQFieldsLabelsTitleAndLineNumbers() throws {
        let text = """
        {"question": "is it warm", "passage": "It is warm.", "answer": "True"}

        {"question": "is it cold", "passage": "No.", "title": "Weather", "answer": false}\r
        {"question": "q3", "passage": "p3", "label": true, "idx": 7}
        {"question": "q4", "passage": "p4", "answer": " NO "}
        """
        let examples = try load(text, .boolq)
        XCTAssertEqual(examples.map(\.answer), ["yes", "no", "yes", "no"])
        XCTAssertEqual(examples.map(\.label), [0, 1, 0, 1])
        XCTAssertEqual(examples.map(\.source.line), [1, 3, 4, 5], "blank line 2 is skipped but counted")
        XCTAssertEqual(examples[1].passage, "Weather -- No.")
        XCTAssertEqual(examples[0].source.description, "/data/client3.jsonl:1")
    }

    func testPubMedQAAndGenerationTasks() throws {
        let pubmed = try load(#"{"question": "does x help?", "passage": "Context (1): maybe.", "answer": "maybe"}"#, .pubmedqa)
        XCTAssertEqual(pubmed[0].label, 2)
        let xsum = try load(#"{"id": "1", "document": "", "summary": "A summary."}"#, .xsum)
        XCTAssertEqual(xsum[0].passage, "", "an empty document is allowed (XSum has one)")
        XCTAssertNil(xsum[0].label)
        let fiqa = try load(#"{"question": "How \u00e9?\ud83d\ude00", "answer": "Like \"this\"\n"}"#, .fiqa)
        XCTAssertEqual(fiqa[0].question, "How é?😀")
        XCTAssertEqual(fiqa[0].answer, "Like \"this\"\n")
    }

    func testMalformedLinesNameFileLineAndField() {
        let good = #"{"question": "q", "passage": "p", "answer": "yes"}"#
        assertDataError(.invalidJSON, ["/data/client3.jsonl:2:", "column"]) {
            try load(good + "\n{\"question\": \"q\", \"passage\": \"p\", \"answer\": \"yes\"", .boolq)
        }
        assertDataError(.invalidJSON, ["/data/client3.jsonl:1:", "JSON object", "an array"]) { try load("[1, 2]", .boolq) }
        assertDataError(.invalidJSON, [":1:", "column 13", "expected ':'"]) { try load(#"{"question" "q"}"#, .boolq) }
        assertDataError(.missingField, ["/data/client3.jsonl:3:", "'passage'", "'answer', 'question'"]) {
            try load(good + "\n" + good + "\n" + #"{"question": "q", "answer": "yes"}"#, .boolq)
        }
        assertDataError(.missingField, [":1:", "'answer'"]) { try load(#"{"question": "q", "passage": "p", "answer": null}"#, .boolq) }
        assertDataError(.wrongType, [":1:", "'question'", "must be a string", "a number"]) {
            try load(#"{"question": 3, "passage": "p", "answer": "yes"}"#, .boolq)
        }
        assertDataError(.wrongType, [":1:", "'answer'", "a number"]) { try load(#"{"question": "q", "passage": "p", "answer": 1}"#, .boolq) }
        assertDataError(.wrongType, [":1:", "'answer'", "a boolean"]) {
            try load(#"{"question": "q", "passage": "p", "answer": true}"#, .pubmedqa)
        }
        assertDataError(.unknownLabel, ["/data/client3.jsonl:2:", "'answer'", "\"perhaps\"", "maybe"]) {
            try load(good + "\n" + #"{"question": "q", "passage": "p", "answer": "perhaps"}"#, .pubmedqa)
        }
        assertDataError(.unknownLabel, [":1:", "\"maybe\""]) { try load(#"{"question": "q", "passage": "p", "answer": "maybe"}"#, .boolq) }
        assertDataError(.empty, [":1:", "'summary'", "empty"]) { try load(#"{"document": "d", "summary": "  "}"#, .xsum) }
        assertDataError(.empty, ["/data/client3.jsonl", "no examples", "it is empty"]) { try load("", .fiqa) }
        assertDataError(.empty, ["/data/client3.jsonl", "only blank lines"]) { try load("\n  \n", .fiqa) }
        assertDataError(.invalidJSON, [":1:", "a number must not start with 0"]) { try load(#"{"a": 01}"#, .fiqa) }
        assertDataError(.invalidJSON, [":1:", "control character"]) { try load("{\"a\": \"x\ty\"}", .fiqa) }
    }

    func testLoadFromFileNamesThePath() throws {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("silo-data-\(getpid()).jsonl")
        defer { try? FileManager.default.removeItem(at: url) }
        try Data("{\"question\": \"q\", \"answer\": \"a\"}\n{\"question\": \"q\"}\n".utf8).write(to: url)
        assertDataError(.missingField, ["\(url.path):2:", "'answer'"]) { try Dataset.load(file: url, task: .fiqa) }
        assertDataError(.unreadableFile, ["/nonexistent/x.jsonl"]) {
            try Dataset.load(file: URL(fileURLWithPath: "/nonexistent/x.jsonl"), task: .fiqa)
        }
    }

    func testTemplates() {
        let boolq = Example(task: .boolq, passage: "Paris is in France.", question: "is paris in france", answer: "yes",
                            source: SourceLocation(file: "f", line: 1))
        XCTAssertEqual(TaskName.boolq.template.prompt(for: boolq), "Passage: Paris is in France.\nQuestion: is paris in france?\nAnswer:")
        XCTAssertEqual(TaskName.boolq.template.target(for: boolq), " yes")
        XCTAssertEqual(TaskName.boolq.template.choices, [" yes", " no"])
        XCTAssertEqual(TaskName.pubmedqa.template.choices, [" yes", " no", " maybe"])
        XCTAssertEqual(TaskName.boolq.template.metricNames, ["accuracy"])
        XCTAssertEqual(TaskName.xsum.template.metricNames, ["rouge1", "rouge2", "rougeL", "bleu4"])
        XCTAssertEqual(TaskName.fiqa.template.metricNames, ["rougeL"])
        XCTAssertNil(TaskName.xsum.template.choices)
        let xsum = Example(task: .xsum, passage: "Doc.", answer: " Sum. \n", source: SourceLocation(file: "f", line: 2))
        XCTAssertEqual(TaskName.xsum.template.prompt(for: xsum), "Article: Doc.\nSummary:")
        XCTAssertEqual(TaskName.xsum.template.target(for: xsum), " Sum.")
        let fiqa = Example(task: .fiqa, question: "Why? ", answer: "Because.", source: SourceLocation(file: "f", line: 3))
        XCTAssertEqual(TaskName.fiqa.template.prompt(for: fiqa), "Question: Why?\nAnswer:")
        let pubmed = Example(task: .pubmedqa, passage: "P", question: "does it?", answer: "maybe", source: SourceLocation(file: "f", line: 4))
        XCTAssertEqual(TaskName.pubmedqa.template.prompt(for: pubmed), "Passage: P\nQuestion: does it?\nAnswer:")
    }

    func testBoolQOverlapRemovalAndEveryFifthSplit() {
        func example(_ q: String, _ p: String, line: Int) -> Example {
            Example(task: .boolq, passage: p, question: q, answer: "yes", source: SourceLocation(file: "f", line: line))
        }
        let combined = [example("a", "T -- x", line: 1), example("b", "y", line: 2), example("a", "other", line: 3)]
        let dev = [example("a", "T -- x", line: 9)]
        let split = DataStore.removingOverlap(combined, dev)
        XCTAssertEqual(split.removed, 1)
        XCTAssertEqual(split.kept.map(\.source.line), [2, 3], "same question with another passage is kept")
        let all = (1...12).map { example("q\($0)", "p", line: $0) }
        let fifth = DataStore.everyFifth(all)
        XCTAssertEqual(fifth.evaluation.map(\.source.line), [5, 10])
        XCTAssertEqual(fifth.train.count, 10)
    }
}
