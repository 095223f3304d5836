import Foundation

/// Axis ticks at "nice" numbers: multiples of 1, 2 or 5 × 10^k.
///
/// The step is the smallest nice number such that the data range spans at most `maximumIntervals`
/// steps; `ticks` are the multiples of the step inside `[lower, upper]` and `niceLower`/`niceUpper`
/// are the multiples of the step just enclosing the range (a chart uses those as its axis bounds).
/// Example: 0.13...0.87 with 6 intervals → step 0.2, ticks 0.2, 0.4, 0.6, 0.8, bounds 0...1.
public struct NiceScale: Sendable, Equatable {
    /// Smallest value of the data range.
    public let lower: Double
    /// Largest value of the data range.
    public let upper: Double
    /// Distance between ticks: 1, 2 or 5 × 10^k.
    public let step: Double
    /// Largest multiple of `step` at or below `lower`.
    public let niceLower: Double
    /// Smallest multiple of `step` at or above `upper`.
    public let niceUpper: Double

    /// Chooses a step for the range `lower...upper`.
    ///
    /// - Parameters:
    ///   - lower: smallest data value (finite).
    ///   - upper: largest data value (finite, `>= lower`). An empty range (`lower == upper`) is
    ///     widened by 10% of the value (or 1 when the value is 0) on each side.
    ///   - maximumIntervals: the range spans at most this many steps (at least 1).
    public init(lower: Double, upper: Double, maximumIntervals: Int = 6) {
        precondition(lower.isFinite && upper.isFinite, "NiceScale needs a finite range, got \(lower)...\(upper)")
        precondition(lower <= upper, "NiceScale needs lower <= upper, got \(lower)...\(upper)")
        precondition(maximumIntervals >= 1, "NiceScale needs at least one interval")
        var low = lower, high = upper
        if high - low <= Swift.max(abs(low), abs(high)) * 1e-12 {
            let pad = low == 0 ? 1 : abs(low) * 0.1
            low -= pad
            high += pad
        }
        self.lower = low
        self.upper = high
        let step = NiceScale.niceStep(atLeast: (high - low) / Double(maximumIntervals))
        self.step = step
        // The tolerance keeps 2.31 / 0.01 = 230.99999999999997 on 231.
        self.niceLower = (low / step + 1e-9).rounded(.down) * step
        self.niceUpper = (high / step - 1e-9).rounded(.up) * step
    }

    /// The smallest number of the form 1, 2 or 5 × 10^k that is at least `value` (> 0).
    public static func niceStep(atLeast value: Double) -> Double {
        precondition(value > 0 && value.isFinite, "niceStep needs a positive finite value, got \(value)")
        let magnitude = pow(10, (log10(value)).rounded(.down))
        for factor in [1.0, 2, 5, 10] {
            let candidate = factor * magnitude
            // Tolerate rounding in log10/pow so that exactly 0.2 stays 0.2.
            if candidate >= value * (1 - 1e-9) { return candidate }
        }
        return 10 * magnitude
    }

    /// Multiples of `step` within `lower...upper`, computed as integer multiples (no drift).
    public var ticks: [Double] { Self.multiples(of: step, from: lower, to: upper) }

    /// Multiples of `step` within `niceLower...niceUpper` (the ticks of an axis using the nice bounds).
    public var axisTicks: [Double] { Self.multiples(of: step, from: niceLower, to: niceUpper) }

    static func multiples(of step: Double, from low: Double, to high: Double) -> [Double] {
        let tolerance = step * 1e-9
        let first = ((low - tolerance) / step).rounded(.up)
        let last = ((high + tolerance) / step).rounded(.down)
        guard first <= last else { return [] }
        return stride(from: first, through: last, by: 1).map { value in
            let tick = value * step
            return tick == 0 ? 0 : tick  // no "-0"
        }
    }

    /// Digits after the decimal point that show every tick exactly (0 for steps >= 1).
    public var fractionDigits: Int { Swift.max(0, -Int((log10(step)).rounded(.down))) }

    /// A tick label: fixed-point with `fractionDigits` digits, or with a k/M/G suffix when the
    /// ticks are at least 10 000, or in exponent form when the step is below 10^-6.
    public func label(_ value: Double) -> String {
        formatTick(value, step: step)
    }
}

/// Formats a tick value for a scale with the given step (see `NiceScale.label`).
func formatTick(_ value: Double, step: Double) -> String {
    if value == 0 { return "0" }
    let magnitude = Swift.max(abs(value), step)
    if step < 1e-6 {
        // Enough significant digits to tell neighbouring ticks apart.
        let digits = Swift.max(0, Int(log10(magnitude).rounded(.down)) - Int(log10(step).rounded(.down)))
        return trimExponent(String(format: "%.*e", digits, value))
    }
    for (threshold, suffix) in [(1e9, "G"), (1e6, "M"), (1e3, "k")] where magnitude >= 10 * threshold || (magnitude >= threshold && step >= threshold) {
        let scaled = value / threshold
        let scaledStep = step / threshold
        let digits = Swift.max(0, -Int((log10(scaledStep)).rounded(.down)))
        return String(format: "%.*f", digits, scaled) + suffix
    }
    let digits = Swift.max(0, -Int((log10(step)).rounded(.down)))
    return String(format: "%.*f", digits, value)
}

/// `1e-05` → `1e-5`, `2.5e+07` → `2.5e7`.
private func trimExponent(_ text: String) -> String {
    guard let e = text.firstIndex(where: { $0 == "e" || $0 == "E" }) else { return text }
    let mantissa = text[..<e]
    var exponent = text[text.index(after: e)...]
    var sign = ""
    if exponent.first == "-" { sign = "-"; exponent = exponent.dropFirst() } else if exponent.first == "+" { exponent = exponent.dropFirst() }
    let digits = exponent.drop(while: { $0 == "0" })
    return "\(mantissa)e\(sign)\(digits.isEmpty ? "0" : String(digits))"
}

/// A short general-purpose number: up to 4 significant digits and no trailing zeros below 1000
/// (`1.234`, `0.5`), whole numbers up to 99 999, exponent form beyond (`1.235e5`, `2e-4`);
/// `NaN` and `∞` spelt out. Used for tooltips and bar labels.
func formatValue(_ value: Double) -> String {
    if value.isNaN { return "NaN" }
    if value.isInfinite { return value > 0 ? "∞" : "−∞" }
    if value == 0 { return "0" }
    let magnitude = abs(value)
    if magnitude >= 1e5 || magnitude < 1e-3 {
        return trimExponent(String(format: "%.3e", value).replacingOccurrences(of: #"\.?0+e"#, with: "e", options: .regularExpression))
    }
    if magnitude >= 1000 { return String(format: "%.0f", value) }
    var text = String(format: "%.4g", value)
    if text.contains("."), !text.contains("e") {
        while text.hasSuffix("0") { text.removeLast() }
        if text.hasSuffix(".") { text.removeLast() }
    }
    return text
}
