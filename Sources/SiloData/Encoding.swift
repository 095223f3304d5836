import SiloModels

/// One example as token ids for next-token training, with labels aligned for cross-entropy.
///
/// `ids` = [BOS if the tokenizer adds one] + prompt tokens + target tokens (+ EOS when asked).
/// `labels[i]` is the token position `i` must predict: `ids[i + 1]` where that is a target token,
/// −100 (``EncodedExample/ignoredLabel``, the `ignoreIndex` of `Tensor.crossEntropy`) elsewhere —
/// on the prompt, and on the last position, which has no next token. So the loss is on the target
/// only, and `labels.count == ids.count`.
public struct EncodedExample: Sendable, Hashable {
    /// The label of a position that takes no loss (`Tensor.crossEntropy`'s default `ignoreIndex`).
    public static let ignoredLabel: Int32 = -100

    public let ids: [Int32]
    public let labels: [Int32]
    /// Number of leading ids that belong to the prompt (BOS included).
    public let promptLength: Int
    /// Whether the passage or document was shortened to fit, and whether the target was.
    public let truncatedPassage: Bool
    public let truncatedTarget: Bool
    /// Where the example came from.
    public let source: SourceLocation

    /// Number of positions that carry a loss (the target tokens).
    public var targetCount: Int { labels.count { $0 != EncodedExample.ignoredLabel } }
}

/// The prompt of a classification example with one continuation per choice, so a caller can compare
/// Σ log p(continuation | prompt) across choices (the highest one is the prediction).
public struct ChoiceEncoding: Sendable, Hashable {
    /// [BOS] + prompt tokens.
    public let promptIDs: [Int32]
    /// One token sequence per choice, in the task's label order (`" yes"`, `" no"`, ...).
    public let continuations: [[Int32]]
    /// Index of the correct continuation.
    public let correctIndex: Int
    public let truncatedPassage: Bool
    public let source: SourceLocation
}

extension TaskTemplate {
    /// Encodes `example` for training: prompt then target, the loss on the target only.
    ///
    /// Prompt and target are tokenized as one string (`prompt + target`) and cut where the prompt's
    /// own tokenization ends, as lm-evaluation-harness does; if the tokens merge across that seam,
    /// the target is tokenized on its own. When the whole does not fit in `maxLength` tokens, the
    /// passage (BoolQ, PubMedQA) or document (XSum) is cut at a word boundary, keeping its
    /// beginning; the question, the prompt's fixed text and the target are kept whole. With
    /// `truncatingTarget`, a target still too long is cut to its first tokens (useful for FiQA,
    /// whose answers run to 2,000 tokens and which has no passage).
    /// - Parameters:
    ///   - maxLength: the most ids the result may have (the model's context or the training length).
    ///   - appendingEndOfSequence: add the tokenizer's EOS after the target (for generation tasks).
    /// - Throws: ``DataError`` `.tooLong` naming the example's file and line when the parts that are
    ///   not truncated exceed `maxLength`.
    public func encode(_ example: Example, tokenizer: Tokenizer, maxLength: Int,
                       truncatingTarget: Bool = false, appendingEndOfSequence: Bool = false) throws -> EncodedExample {
        precondition(maxLength >= 2, "encode: maxLength must be at least 2, got \(maxLength)")
        let coder = PromptCoder(tokenizer: tokenizer)
        let prompt = prompt(for: example)
        var targetIDs = coder.continuation(target(for: example), after: prompt)
        if appendingEndOfSequence, let eos = tokenizer.eosTokenID { targetIDs.append(Int32(eos)) }
        let minimumTarget = truncatingTarget ? 1 : targetIDs.count
        guard let fitted = coder.fit(example, template: self, budget: maxLength - minimumTarget) else {
            let fixed = coder.fit(example, template: self, budget: Int.max)?.ids.count ?? 0
            throw DataError(.tooLong, "\(name) example needs \(fixed + minimumTarget) tokens (\(promptDescription) \(fixed) + target \(minimumTarget)), more than the maximum length \(maxLength); raise the maximum length\(truncatingTarget ? "" : ", allow target truncation") or shorten the example", at: example.source)
        }
        var truncatedTarget = false
        let room = maxLength - fitted.ids.count
        if targetIDs.count > room {
            targetIDs = Array(targetIDs.prefix(room))
            truncatedTarget = true
        }
        let ids = fitted.ids + targetIDs
        var labels = [Int32](repeating: EncodedExample.ignoredLabel, count: ids.count)
        for position in (fitted.ids.count - 1)..<(ids.count - 1) { labels[position] = ids[position + 1] }
        return EncodedExample(ids: ids, labels: labels, promptLength: fitted.ids.count,
                              truncatedPassage: fitted.truncated, truncatedTarget: truncatedTarget, source: example.source)
    }

    /// The prompt ids of a classification example and one continuation per choice; the passage is
    /// cut (as in ``encode(_:tokenizer:maxLength:truncatingTarget:appendingEndOfSequence:)``) so that
    /// the prompt plus the longest continuation fits in `maxLength`.
    /// - Throws: ``DataError`` `.tooLong` naming file and line, `.invalidArgument` for a generation task.
    public func encodeChoices(_ example: Example, tokenizer: Tokenizer, maxLength: Int) throws -> ChoiceEncoding {
        guard let choices, let correct = example.label else {
            throw DataError(.invalidArgument, "\(name) is not a classification task (or the example's answer '\(example.answer)' is not one of its classes); choices exist for boolq and pubmedqa", at: example.source)
        }
        let coder = PromptCoder(tokenizer: tokenizer)
        let prompt = prompt(for: example)
        let continuations = choices.map { coder.continuation($0, after: prompt) }
        let longest = continuations.map(\.count).max() ?? 0
        guard let fitted = coder.fit(example, template: self, budget: maxLength - longest) else {
            let fixed = coder.fit(example, template: self, budget: Int.max)?.ids.count ?? 0
            throw DataError(.tooLong, "\(name) example needs \(fixed + longest) tokens (\(promptDescription) \(fixed) + longest choice \(longest)), more than the maximum length \(maxLength)", at: example.source)
        }
        // Continuations were cut against the full prompt; a shortened passage leaves the tail intact.
        return ChoiceEncoding(promptIDs: fitted.ids, continuations: continuations, correctIndex: correct,
                              truncatedPassage: fitted.truncated, source: example.source)
    }

    /// The prompt ids alone ([BOS] + prompt), passage cut to fit `maxLength` (for generation: pass
    /// the model's context minus the tokens to generate).
    /// - Throws: ``DataError`` `.tooLong` naming file and line.
    public func encodePrompt(_ example: Example, tokenizer: Tokenizer, maxLength: Int) throws -> [Int32] {
        let coder = PromptCoder(tokenizer: tokenizer)
        guard let fitted = coder.fit(example, template: self, budget: maxLength) else {
            let fixed = coder.fit(example, template: self, budget: Int.max)?.ids.count ?? 0
            throw DataError(.tooLong, "\(name) example needs \(fixed) tokens (\(promptDescription)), more than the maximum length \(maxLength)", at: example.source)
        }
        return fitted.ids
    }

    /// "prompt without its passage" (or just "prompt" for FiQA), for messages.
    private var promptDescription: String {
        name == .fiqa ? "prompt" : "prompt without its \(truncatableField)"
    }
}

/// Tokenizes prompts with the tokenizer's own special-token prefix (BOS for Llama-2; nothing for
/// GPT-2 or SmolLM2) and fits them into a budget by cutting the passage.
struct PromptCoder {
    let tokenizer: Tokenizer
    /// What `encode(text, addSpecialTokens: true)` puts before the text's tokens.
    let prefix: [Int32]

    init(tokenizer: Tokenizer) {
        self.tokenizer = tokenizer
        let plain = tokenizer.encode("a", addSpecialTokens: false)
        let special = tokenizer.encode("a", addSpecialTokens: true)
        var prefix: [Int] = []
        if !plain.isEmpty, let start = (0...max(0, special.count - plain.count)).first(where: { special.dropFirst($0).starts(with: plain) }) {
            prefix = Array(special.prefix(start))
        }
        self.prefix = prefix.map { Int32($0) }
    }

    func ids(_ text: String) -> [Int32] { tokenizer.encode(text, addSpecialTokens: false).map { Int32($0) } }

    /// The tokens of `continuation` as they come after `prompt`.
    func continuation(_ continuation: String, after prompt: String) -> [Int32] {
        let promptIDs = ids(prompt)
        let whole = ids(prompt + continuation)
        if whole.count > promptIDs.count, whole.starts(with: promptIDs) { return Array(whole.dropFirst(promptIDs.count)) }
        return ids(continuation)
    }

    /// [prefix] + the prompt of `example` with as much of the passage (from its start, cut after a
    /// whole word) as fits in `budget` ids; nil if even an empty passage does not fit.
    func fit(_ example: Example, template: TaskTemplate, budget: Int) -> (ids: [Int32], truncated: Bool)? {
        let (head, tail) = template.promptAround(example)
        let passage = example.passage
        let full = prefix + ids(head + passage + tail)
        if full.count <= budget { return (full, false) }
        // Word ends: the positions right before each run of whitespace, and the end.
        var cuts: [String.Index] = [passage.startIndex]
        var index = passage.startIndex
        var inWord = false
        while index < passage.endIndex {
            let isSpace = passage[index].isWhitespace
            if isSpace, inWord { cuts.append(index) }
            inWord = !isSpace
            index = passage.index(after: index)
        }
        // cuts[k] keeps k words; the last one (all words) is known not to fit.
        func count(_ k: Int) -> [Int32] { prefix + ids(head + passage[..<cuts[k]] + tail) }
        let empty = count(0)
        guard empty.count <= budget else { return nil }
        var low = 0, lowIDs = empty  // fits
        var high = cuts.count         // does not fit (cuts.count == all words with trailing space dropped)
        while high - low > 1 {
            let middle = (low + high) / 2
            let candidate = count(middle)
            if candidate.count <= budget { low = middle; lowIDs = candidate } else { high = middle }
        }
        return (lowIDs, true)
    }
}
