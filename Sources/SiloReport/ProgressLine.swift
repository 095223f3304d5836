import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A progress bar with free-form fields, for long loops:
/// `train [############..................] 40/100 loss 1.234 step 0.52s eta 31s`.
///
/// On a terminal the line is redrawn in place (carriage return, at most about ten times a second);
/// elsewhere (CI logs, pipes) a plain line is written each time another tenth of the work is done.
/// Thread-safe: updates may come from any thread.
public final class ProgressLine: @unchecked Sendable {
    // All mutable state is guarded by `lock`.
    private let lock = NSLock()
    private let total: Int
    private let label: String
    private let output: FileHandle
    private let isTerminal: Bool
    private let clock: @Sendable () -> Double
    private let start: Double
    private var completed = 0
    private var fields: [(String, String)] = []
    private var lastDraw = -Double.infinity
    private var lastPrintedTenth = 0
    private var lastPrintedCompleted = -1
    private var isFinished = false

    /// Characters inside the brackets of the bar.
    static let barWidth = 30
    /// Minimum seconds between two redraws on a terminal.
    static let redrawInterval = 0.1

    /// Creates a progress line; nothing is written until the first `update`.
    ///
    /// - Parameters:
    ///   - total: the number of steps of the work (>= 1).
    ///   - label: a word or two in front of the bar.
    ///   - output: where to write (standard error by default, so standard output stays clean for `--json`).
    ///   - isTerminal: redraw in place (`true`) or write plain lines (`false`); by default whether
    ///     `output` is a terminal (`isatty`) and `TERM` is not `dumb`.
    public convenience init(total: Int, label: String, output: FileHandle = .standardError, isTerminal: Bool? = nil) {
        self.init(total: total, label: label, output: output, isTerminal: isTerminal, clock: {
            Double(DispatchTime.now().uptimeNanoseconds) / 1e9
        })
    }

    /// Creates a progress line reading time (seconds) from `clock` (tests pass a fake clock).
    init(total: Int, label: String, output: FileHandle, isTerminal: Bool?, clock: @escaping @Sendable () -> Double) {
        precondition(total >= 1, "ProgressLine needs a total of at least 1, got \(total)")
        self.total = total
        self.label = label
        self.output = output
        self.isTerminal = isTerminal ?? (isatty(output.fileDescriptor) == 1 && ProcessInfo.processInfo.environment["TERM"] != "dumb")
        self.clock = clock
        self.start = clock()
    }

    /// Records progress and redraws when due.
    ///
    /// - Parameters:
    ///   - completed: steps done so far (clamped to `0...total`).
    ///   - fields: name-value pairs shown after the count, e.g. `[("loss", "1.234"), ("step", "0.52s")]`.
    public func update(completed: Int, fields: [(String, String)] = []) {
        lock.lock()
        defer { lock.unlock() }
        guard !isFinished else { return }
        self.completed = Swift.min(Swift.max(completed, 0), total)
        self.fields = fields
        let now = clock()
        if isTerminal {
            if self.completed == total || now - lastDraw >= Self.redrawInterval {
                lastDraw = now
                write("\r" + line(now: now) + "\u{1B}[K")
            }
        } else {
            let tenth = self.completed * 10 / total
            if tenth > lastPrintedTenth {
                lastPrintedTenth = tenth
                lastPrintedCompleted = self.completed
                write(line(now: now) + "\n")
            }
        }
    }

    /// Draws the final state and ends the line. Later updates are ignored.
    ///
    /// - Parameter fields: replaces the last fields when given (e.g. a final loss).
    public func finish(fields: [(String, String)]? = nil) {
        lock.lock()
        defer { lock.unlock() }
        guard !isFinished else { return }
        isFinished = true
        if let fields { self.fields = fields }
        let now = clock()
        if isTerminal {
            write("\r" + line(now: now) + "\u{1B}[K\n")
        } else if lastPrintedCompleted != completed || fields != nil {
            write(line(now: now) + "\n")
        }
    }

    /// The text of the line for the current state (no carriage return, no newline).
    private func line(now: Double) -> String {
        let filled = completed * Self.barWidth / total
        var text = label.isEmpty ? "" : label + " "
        text += "[" + String(repeating: "#", count: filled) + String(repeating: ".", count: Self.barWidth - filled) + "]"
        let totalText = String(total)
        text += " " + String(repeating: " ", count: totalText.count - String(completed).count) + "\(completed)/\(totalText)"
        for (name, value) in fields { text += " \(name) \(value)" }
        let elapsed = Swift.max(0, now - start)
        if completed >= total {
            text += " done in \(formatDuration(elapsed))"
        } else if completed > 0 {
            text += " eta \(formatDuration(elapsed / Double(completed) * Double(total - completed)))"
        }
        return text
    }

    private func write(_ text: String) {
        try? output.write(contentsOf: Data(text.utf8))
    }
}

/// A duration for humans: `0.5s`, `31s`, `2m05s`, `1h02m`.
public func formatDuration(_ seconds: Double) -> String {
    guard seconds.isFinite, seconds >= 0 else { return "?" }
    if seconds < 10 { return String(format: "%.1fs", seconds) }
    let whole = Int(seconds.rounded())
    if whole < 60 { return "\(whole)s" }
    if whole < 3600 { return String(format: "%dm%02ds", whole / 60, whole % 60) }
    return String(format: "%dh%02dm", whole / 3600, (whole % 3600) / 60)
}
