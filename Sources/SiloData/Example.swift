/// The tasks Silo knows: two classification tasks scored by comparing the log-probabilities of their
/// answer words, and two generation tasks scored on generated text.
public enum TaskName: String, Codable, Sendable, CaseIterable, CustomStringConvertible {
    /// BoolQ: passage + yes/no question (Clark et al., 2019).
    case boolq
    /// PubMedQA: abstract + yes/no/maybe question (Jin et al., 2019).
    case pubmedqa
    /// XSum: one-sentence summary of a BBC article (Narayan et al., 2018).
    case xsum
    /// FiQA: answer to a personal-finance question (Maia et al., 2018).
    case fiqa

    /// The prompt format, answer choices and metrics of this task.
    public var template: TaskTemplate { TaskTemplate(self) }

    public var description: String { rawValue }
}

/// One example of a task, with the file and line it came from.
///
/// The fields are the task's own, stored as read (not trimmed): `passage` is the BoolQ/PubMedQA
/// passage or the XSum document (empty for FiQA), `question` the question (empty for XSum), and
/// `answer` the class word (`yes`, `no`, `maybe`) for classification tasks or the reference text
/// (summary, answer) for generation tasks.
public struct Example: Sendable, Hashable, Codable {
    public let task: TaskName
    public let passage: String
    public let question: String
    public let answer: String
    /// Where the example was read from; messages about it name this `file:line`.
    public let source: SourceLocation

    public init(task: TaskName, passage: String = "", question: String = "", answer: String, source: SourceLocation) {
        self.task = task
        self.passage = passage
        self.question = question
        self.answer = answer
        self.source = source
    }

    /// The index of ``answer`` in the task's ``TaskTemplate/classes`` (0 = yes, 1 = no, 2 = maybe);
    /// nil for generation tasks.
    public var label: Int? { task.template.classes?.firstIndex(of: answer) }
}
