#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Precision, recall and F1 of one ROUGE type for one prediction (all in 0–1).
public struct RougeScore: Sendable, Hashable {
    public let precision: Double
    public let recall: Double
    public let fmeasure: Double

    init(precision: Double, recall: Double) {
        self.precision = precision
        self.recall = recall
        self.fmeasure = precision + recall > 0 ? 2 * precision * recall / (precision + recall) : 0
    }
}

/// Evaluation metrics, each written to agree with the reference implementation the literature uses:
/// ROUGE as Google's `rouge-score` 0.1.2 (`RougeScorer(["rouge1", "rouge2", "rougeL"],
/// use_stemmer=False)`), BLEU as `sacrebleu` 2.6.0 `corpus_bleu` (13a tokenizer, `exp` smoothing).
/// The Porter stemmer of `use_stemmer=True` is not implemented.
public enum Metrics {
    /// Names of the ROUGE types ``rouge(predictions:references:)`` reports.
    public static let rougeNames = ["rouge1", "rouge2", "rougeL"]

    /// Fraction of `predictions` equal to `labels` (0–1); 0 for no examples.
    public static func accuracy(predictions: [Int], labels: [Int]) -> Double {
        precondition(predictions.count == labels.count, "accuracy: \(predictions.count) predictions for \(labels.count) labels")
        guard !labels.isEmpty else { return 0 }
        return Double(zip(predictions, labels).count { $0 == $1 }) / Double(labels.count)
    }

    /// exp(mean loss): the perplexity of a mean per-token cross-entropy in nats.
    public static func perplexity(meanLoss: Double) -> Double { exp(meanLoss) }

    /// The metrics of `task` on generated texts (`rouge1`, `rouge2`, `rougeL`, `bleu4` for XSum,
    /// `rougeL` for FiQA). Classification tasks are scored with ``accuracy(predictions:labels:)``.
    public static func evaluate(_ task: TaskName, predictions: [String], references: [String]) -> [String: Double] {
        var all = rouge(predictions: predictions, references: references)
        all["bleu4"] = bleu(predictions: predictions, references: references)
        return all.filter { task.template.metricNames.contains($0.key) }
    }

    // MARK: ROUGE

    /// The tokens ROUGE compares: lowercase, every run of characters other than `a-z0-9` becomes a
    /// separator (so non-ASCII letters are dropped), as `rouge_score.tokenize` without stemmer.
    public static func rougeTokens(_ text: String) -> [String] {
        var tokens: [String] = []
        var current = String.UnicodeScalarView()
        for scalar in text.lowercased().unicodeScalars {
            if (scalar >= "a" && scalar <= "z") || (scalar >= "0" && scalar <= "9") {
                current.append(scalar)
            } else if !current.isEmpty {
                tokens.append(String(current))
                current = String.UnicodeScalarView()
            }
        }
        if !current.isEmpty { tokens.append(String(current)) }
        return tokens
    }

    /// ROUGE-1, ROUGE-2 and ROUGE-L of one prediction against one reference (`RougeScorer.score(target,
    /// prediction)`): n-gram overlap with clipped counts; L from the longest common subsequence.
    public static func rouge(prediction: String, reference: String) -> [String: RougeScore] {
        let predicted = rougeTokens(prediction)
        let target = rougeTokens(reference)
        return [
            "rouge1": ngramScore(target: target, prediction: predicted, order: 1),
            "rouge2": ngramScore(target: target, prediction: predicted, order: 2),
            "rougeL": lcsScore(target: target, prediction: predicted),
        ]
    }

    /// Mean F1 over examples of ROUGE-1, ROUGE-2 and ROUGE-L (0–1), keyed by ``rougeNames``.
    public static func rouge(predictions: [String], references: [String]) -> [String: Double] {
        precondition(predictions.count == references.count, "rouge: \(predictions.count) predictions for \(references.count) references")
        var sums = Dictionary(uniqueKeysWithValues: rougeNames.map { ($0, 0.0) })
        for (prediction, reference) in zip(predictions, references) {
            for (name, score) in rouge(prediction: prediction, reference: reference) { sums[name, default: 0] += score.fmeasure }
        }
        let count = Double(max(predictions.count, 1))
        return sums.mapValues { $0 / count }
    }

    static func ngramScore(target: [String], prediction: [String], order: Int) -> RougeScore {
        let targetCounts = ngramCounts(target, order: order)
        let predictionCounts = ngramCounts(prediction, order: order)
        var overlap = 0
        for (gram, count) in targetCounts { overlap += min(count, predictionCounts[gram] ?? 0) }
        let targetTotal = targetCounts.values.reduce(0, +)
        let predictionTotal = predictionCounts.values.reduce(0, +)
        return RougeScore(precision: Double(overlap) / Double(max(predictionTotal, 1)),
                          recall: Double(overlap) / Double(max(targetTotal, 1)))
    }

    static func lcsScore(target: [String], prediction: [String]) -> RougeScore {
        guard !target.isEmpty, !prediction.isEmpty else { return RougeScore(precision: 0, recall: 0) }
        var previous = [Int](repeating: 0, count: prediction.count + 1)
        var current = previous
        for token in target {
            for j in 1...prediction.count {
                current[j] = token == prediction[j - 1] ? previous[j - 1] + 1 : max(previous[j], current[j - 1])
            }
            swap(&previous, &current)
        }
        let length = Double(previous[prediction.count])
        return RougeScore(precision: length / Double(prediction.count), recall: length / Double(target.count))
    }

    /// n-gram counts; an n-gram is its tokens joined by a space (tokens contain none).
    static func ngramCounts(_ tokens: [String], order: Int) -> [String: Int] {
        var counts: [String: Int] = [:]
        guard tokens.count >= order else { return counts }
        for start in 0...(tokens.count - order) {
            counts[tokens[start..<(start + order)].joined(separator: " "), default: 0] += 1
        }
        return counts
    }

    // MARK: BLEU

    /// Corpus BLEU-4 (0–100) as `sacrebleu.corpus_bleu(predictions, [references])`: 13a tokens,
    /// clipped n-gram matches summed over the corpus, `exp` smoothing of zero-match orders (mteval's
    /// NIST smoothing), geometric mean over orders 1–4, brevity penalty exp(1 − r/c) when c < r.
    public static func bleu(predictions: [String], references: [String]) -> Double {
        precondition(predictions.count == references.count, "bleu: \(predictions.count) predictions for \(references.count) references")
        let maxOrder = 4
        var correct = [Int](repeating: 0, count: maxOrder)
        var total = [Int](repeating: 0, count: maxOrder)
        var systemLength = 0
        var referenceLength = 0
        for (prediction, reference) in zip(predictions, references) {
            let hypothesis = bleuTokens(prediction)
            let target = bleuTokens(reference)
            systemLength += hypothesis.count
            referenceLength += target.count
            for order in 1...maxOrder {
                let hypothesisCounts = ngramCounts(hypothesis, order: order)
                let targetCounts = ngramCounts(target, order: order)
                for (gram, count) in hypothesisCounts {
                    total[order - 1] += count
                    correct[order - 1] += min(count, targetCounts[gram] ?? 0)
                }
            }
        }
        return bleuScore(correct: correct, total: total, systemLength: systemLength, referenceLength: referenceLength)
    }

    /// sacrebleu's `compute_bleu` with `smooth_method="exp"` and `effective_order=False`.
    static func bleuScore(correct: [Int], total: [Int], systemLength: Int, referenceLength: Int) -> Double {
        var brevity = 1.0
        if systemLength < referenceLength {
            brevity = systemLength > 0 ? exp(1 - Double(referenceLength) / Double(systemLength)) : 0
        }
        guard correct.contains(where: { $0 > 0 }) else { return 0 }
        var precisions = [Double](repeating: 0, count: correct.count)
        var smooth = 1.0
        for order in 0..<correct.count {
            if total[order] == 0 { break }
            if correct[order] == 0 {
                smooth *= 2
                precisions[order] = 100 / (smooth * Double(total[order]))
            } else {
                precisions[order] = 100 * Double(correct[order]) / Double(total[order])
            }
        }
        // sacrebleu's my_log: log(0) is floored to -9999999999.
        let logSum = precisions.reduce(0.0) { $0 + ($1 == 0 ? -9_999_999_999 : log($1)) }
        return brevity * exp(logSum / Double(correct.count))
    }

    /// The tokens of sacrebleu's `13a` tokenizer (mteval-v13a): `<skipped>` removed, `-`+newline
    /// joined, newlines to spaces, `&quot; &amp; &lt; &gt;` unescaped; then the symbols
    /// `{|}~ [\]^_` space!"#$%& ()*+ :;<=>?@ /` split off, `.` and `,` split off unless between
    /// digits (`1,000.5` stays one token), `-` split off after a digit; then split on whitespace.
    /// Trailing whitespace is stripped first, as `BLEU._preprocess_segment` does.
    public static func bleuTokens(_ text: String) -> [String] {
        var line = Array(text.unicodeScalars)
        while let last = line.last, isPythonWhitespace(last) { line.removeLast() }
        line = replacing(line, "<skipped>", "")
        line = replacing(line, "-\n", "")
        line = replacing(line, "\n", " ")
        if line.contains("&") {
            line = replacing(line, "&quot;", "\"")
            line = replacing(line, "&amp;", "&")
            line = replacing(line, "&lt;", "<")
            line = replacing(line, "&gt;", ">")
        }
        line = [" "] + line + [" "]
        // ([\{-\~\[-\` -\&\(-\+\:-\@\/]) -> ' \1 '
        var spaced: [Unicode.Scalar] = []
        spaced.reserveCapacity(line.count * 2)
        for scalar in line {
            let value = scalar.value
            if (0x7B...0x7E).contains(value) || (0x5B...0x60).contains(value) || (0x20...0x26).contains(value)
                || (0x28...0x2B).contains(value) || (0x3A...0x40).contains(value) || value == 0x2F {
                spaced.append(" "); spaced.append(scalar); spaced.append(" ")
            } else {
                spaced.append(scalar)
            }
        }
        func isDigit(_ scalar: Unicode.Scalar) -> Bool { scalar.value >= 0x30 && scalar.value <= 0x39 }
        func isPeriodOrComma(_ scalar: Unicode.Scalar) -> Bool { scalar == "." || scalar == "," }
        // ([^0-9])([\.,]) -> '\1 \2 '
        line = substitutePairs(spaced, { !isDigit($0) }, isPeriodOrComma) { [$0, " ", $1, " "] }
        // ([\.,])([^0-9]) -> ' \1 \2'
        line = substitutePairs(line, isPeriodOrComma, { !isDigit($0) }) { [" ", $0, " ", $1] }
        // ([0-9])(-) -> '\1 \2 '
        line = substitutePairs(line, isDigit, { $0 == "-" }) { [$0, " ", $1, " "] }
        var tokens: [String] = []
        var current = String.UnicodeScalarView()
        for scalar in line {
            if isPythonWhitespace(scalar) {
                if !current.isEmpty { tokens.append(String(current)); current = String.UnicodeScalarView() }
            } else {
                current.append(scalar)
            }
        }
        if !current.isEmpty { tokens.append(String(current)) }
        return tokens
    }

    /// Python's `re.sub` of a two-character pattern `(A)(B)`: matches are found left to right and do
    /// not overlap.
    static func substitutePairs(_ line: [Unicode.Scalar], _ first: (Unicode.Scalar) -> Bool,
                                _ second: (Unicode.Scalar) -> Bool,
                                _ replacement: (Unicode.Scalar, Unicode.Scalar) -> [Unicode.Scalar]) -> [Unicode.Scalar] {
        var output: [Unicode.Scalar] = []
        output.reserveCapacity(line.count + line.count / 4)
        var index = 0
        while index < line.count {
            if index + 1 < line.count, first(line[index]), second(line[index + 1]) {
                output.append(contentsOf: replacement(line[index], line[index + 1]))
                index += 2
            } else {
                output.append(line[index])
                index += 1
            }
        }
        return output
    }

    /// Python's `str.replace` over code points.
    static func replacing(_ line: [Unicode.Scalar], _ pattern: String, _ replacement: String) -> [Unicode.Scalar] {
        let needle = Array(pattern.unicodeScalars)
        let substitute = Array(replacement.unicodeScalars)
        guard !needle.isEmpty, line.count >= needle.count else { return line }
        var output: [Unicode.Scalar] = []
        output.reserveCapacity(line.count)
        var index = 0
        while index < line.count {
            if index + needle.count <= line.count, line[index] == needle[0], Array(line[index..<(index + needle.count)]) == needle {
                output.append(contentsOf: substitute)
                index += needle.count
            } else {
                output.append(line[index])
                index += 1
            }
        }
        return output
    }

    /// Python's `str.isspace` (what `str.split()` and `str.rstrip()` split and strip on).
    static func isPythonWhitespace(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x09...0x0D, 0x1C...0x20, 0x85, 0xA0, 0x1680, 0x2000...0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000:
            return true
        default:
            return false
        }
    }
}
