/// How a task turns an ``Example`` into text for a causal language model: a prompt and the target
/// continuation the model should produce after it, the answer choices of classification tasks and
/// the names of the metrics the task is scored with.
///
/// | task | prompt | target | metrics |
/// |---|---|---|---|
/// | boolq | `Passage: {passage}\nQuestion: {question}?\nAnswer:` | ` yes` / ` no` | `accuracy` |
/// | pubmedqa | `Passage: {passage}\nQuestion: {question}?\nAnswer:` | ` yes` / ` no` / ` maybe` | `accuracy` |
/// | xsum | `Article: {document}\nSummary:` | ` {summary}` | `rouge1`, `rouge2`, `rougeL`, `bleu4` |
/// | fiqa | `Question: {question}\nAnswer:` | ` {answer}` | `rougeL` |
///
/// Questions and targets are trimmed of surrounding whitespace; a question mark is added to a
/// question that lacks one (BoolQ's questions have none). The passage or document is the only part
/// that encoding may truncate (see ``encode(_:tokenizer:maxLength:truncatingTarget:appendingEndOfSequence:)``).
public struct TaskTemplate: Sendable, Hashable {
    public let name: TaskName

    public init(_ name: TaskName) { self.name = name }

    /// The class words of a classification task, in label order (label 0 = `yes`); nil for
    /// generation tasks.
    public var classes: [String]? {
        switch name {
        case .boolq: return ["yes", "no"]
        case .pubmedqa: return ["yes", "no", "maybe"]
        case .xsum, .fiqa: return nil
        }
    }

    /// The continuation strings whose log-probabilities are compared (`" yes"`, `" no"`), in label
    /// order; nil for generation tasks.
    public var choices: [String]? { classes?.map { " " + $0 } }

    /// Whether the task is scored by choosing among ``choices`` (else by generating text).
    public var isClassification: Bool { classes != nil }

    /// The metrics the task reports, as named in results (`accuracy` is 0–1, ROUGE F1 0–1, BLEU 0–100).
    public var metricNames: [String] {
        switch name {
        case .boolq, .pubmedqa: return ["accuracy"]
        case .xsum: return ["rouge1", "rouge2", "rougeL", "bleu4"]
        case .fiqa: return ["rougeL"]
        }
    }

    /// What the truncatable part of the prompt is called in messages.
    var truncatableField: String {
        switch name {
        case .boolq, .pubmedqa: return "passage"
        case .xsum: return "document"
        case .fiqa: return "question"
        }
    }

    /// The prompt for `example`.
    public func prompt(for example: Example) -> String {
        let (head, tail) = promptAround(example)
        return head + example.passage + tail
    }

    /// The target continuation for `example` (starts with a space: `" yes"`, `" The summary."`).
    public func target(for example: Example) -> String {
        " " + example.answer.trimmingWhitespace()
    }

    /// The prompt split around its truncatable part: prompt = head + passage + tail. FiQA has no
    /// truncatable part (head is empty, tail is the whole prompt).
    func promptAround(_ example: Example) -> (head: String, tail: String) {
        switch name {
        case .boolq, .pubmedqa:
            return ("Passage: ", "\nQuestion: \(Self.asQuestion(example.question))\nAnswer:")
        case .xsum:
            return ("Article: ", "\nSummary:")
        case .fiqa:
            return ("", "Question: \(example.question.trimmingWhitespace())\nAnswer:")
        }
    }

    static func asQuestion(_ text: String) -> String {
        let trimmed = text.trimmingWhitespace()
        return trimmed.hasSuffix("?") ? trimmed : trimmed + "?"
    }
}

extension String {
    /// Without leading and trailing whitespace and newlines.
    func trimmingWhitespace() -> String {
        var view = Substring(self)
        while let first = view.first, first.isWhitespace { view = view.dropFirst() }
        while let last = view.last, last.isWhitespace { view = view.dropLast() }
        return String(view)
    }
}
