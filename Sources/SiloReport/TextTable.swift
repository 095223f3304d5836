import Foundation

/// A table for terminals and logs: columns padded to the widest cell (counting East Asian wide
/// characters and emoji as two columns and combining marks as none), numbers right-aligned.
///
/// ```
/// ┌────────┬──────────┐
/// │ mode   │ accuracy │
/// ├────────┼──────────┤
/// │ split  │    0.812 │
/// └────────┴──────────┘
/// ```
public struct TextTable: Sendable {
    /// How the table is drawn.
    public enum Style: Sendable {
        /// Box-drawing characters (`┌─┬┐│├┼┤└┴┘`).
        case unicode
        /// ASCII only (`+`, `-`, `|`): safe for any log.
        case ascii
        /// No borders: columns separated by two spaces, a dashed rule under the headers.
        case plain
    }

    /// How a column is aligned.
    public enum Alignment: Sendable, Equatable {
        /// Right-aligned when every non-empty cell of the column is a number, else left.
        case automatic
        case left
        case right
    }

    /// Column headings (may be empty: then no header row is drawn).
    public var headers: [String]
    /// Rows of cells; a short row is padded with empty cells.
    public var rows: [[String]]
    /// Per-column alignment; missing entries are `.automatic`.
    public var alignments: [Alignment]

    /// Creates a table.
    public init(headers: [String], rows: [[String]], alignments: [Alignment] = []) {
        self.headers = headers
        self.rows = rows
        self.alignments = alignments
    }

    /// The table as lines joined by "\n", with a final newline.
    public func render(style: Style = .unicode) -> String {
        let columns = Swift.max(headers.count, rows.map(\.count).max() ?? 0)
        guard columns > 0 else { return "" }
        let padded = rows.map { $0 + Array(repeating: "", count: columns - $0.count) }
        let header = headers.isEmpty ? nil : headers + Array(repeating: "", count: columns - headers.count)
        var widths = Array(repeating: 0, count: columns)
        for row in padded + (header.map { [$0] } ?? []) {
            for (column, cell) in row.enumerated() { widths[column] = Swift.max(widths[column], displayWidth(cell)) }
        }
        let rightAligned: [Bool] = (0..<columns).map { column in
            let requested = column < alignments.count ? alignments[column] : .automatic
            switch requested {
            case .left: return false
            case .right: return true
            case .automatic:
                let cells = padded.map { $0[column] }.filter { !isPlaceholder($0) }
                return !cells.isEmpty && cells.allSatisfy { numericValue(of: $0) != nil }
            }
        }
        func pad(_ cell: String, _ column: Int) -> String {
            let fill = String(repeating: " ", count: widths[column] - displayWidth(cell))
            return rightAligned[column] ? fill + cell : cell + fill
        }

        var lines: [String] = []
        switch style {
        case .plain:
            func line(_ row: [String]) -> String {
                var text = (0..<columns).map { pad(row[$0], $0) }.joined(separator: "  ")
                while text.hasSuffix(" ") { text.removeLast() }
                return text
            }
            if let header {
                lines.append(line(header))
                lines.append(widths.map { String(repeating: "-", count: $0) }.joined(separator: "  "))
            }
            lines += padded.map(line)
        case .unicode, .ascii:
            let unicode = style == .unicode
            let horizontal = unicode ? "─" : "-"
            func rule(_ left: String, _ middle: String, _ right: String) -> String {
                left + widths.map { String(repeating: horizontal, count: $0 + 2) }.joined(separator: middle) + right
            }
            let vertical = unicode ? "│" : "|"
            func line(_ row: [String]) -> String {
                vertical + " " + (0..<columns).map { pad(row[$0], $0) }.joined(separator: " \(vertical) ") + " " + vertical
            }
            lines.append(unicode ? rule("┌", "┬", "┐") : rule("+", "+", "+"))
            if let header {
                lines.append(line(header))
                lines.append(unicode ? rule("├", "┼", "┤") : rule("+", "+", "+"))
            }
            lines += padded.map(line)
            lines.append(unicode ? rule("└", "┴", "┘") : rule("+", "+", "+"))
        }
        return lines.joined(separator: "\n") + "\n"
    }
}

/// Terminal columns a string occupies: 2 for East Asian wide/fullwidth characters and emoji,
/// 0 for control characters, 1 otherwise; a grapheme cluster (letter + combining marks, flag,
/// emoji sequence) counts once.
public func displayWidth(_ text: String) -> Int {
    var width = 0
    for character in text {
        guard let first = character.unicodeScalars.first else { continue }
        let value = first.value
        if value < 0x20 || (0x7F..<0xA0).contains(value) { continue }
        if isWide(first) || character.unicodeScalars.contains(where: { $0.value == 0xFE0F }) {
            width += 2
        } else {
            width += 1
        }
    }
    return width
}

/// East Asian Wide (W) and Fullwidth (F) ranges and emoji presented as pictures.
private func isWide(_ scalar: Unicode.Scalar) -> Bool {
    if scalar.properties.isEmojiPresentation { return true }
    switch scalar.value {
    case 0x1100...0x115F, 0x2E80...0x303E, 0x3041...0x33FF, 0x3400...0x4DBF, 0x4E00...0x9FFF,
         0xA000...0xA4CF, 0xAC00...0xD7A3, 0xF900...0xFAFF, 0xFE30...0xFE4F, 0xFF00...0xFF60,
         0xFFE0...0xFFE6, 0x20000...0x2FFFD, 0x30000...0x3FFFD:
        return true
    default:
        return false
    }
}
