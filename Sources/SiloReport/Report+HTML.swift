import Foundation

extension Report {
    /// The report as one self-contained HTML5 document: inline CSS, inline SVG charts, no
    /// JavaScript, no external URL. Follows the reader's light or dark preference
    /// (`prefers-color-scheme`) and prints on white.
    public func html() -> String {
        var html = """
        <!DOCTYPE html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <meta name="color-scheme" content="light dark">
        <title>\(escapeHTML(title))</title>
        <style>\(reportStyleSheet)</style>
        </head>
        <body>
        <main>
        <header>
        <h1>\(escapeHTML(title))</h1>

        """
        if let subtitle, !subtitle.isEmpty {
            html += "<p class=\"subtitle\">\(escapeHTML(subtitle))</p>\n"
        }
        if !metadata.isEmpty {
            html += "<dl class=\"meta\">"
            for (key, value) in metadata {
                html += "<div><dt>\(escapeHTML(key))</dt><dd>\(escapeHTML(value))</dd></div>"
            }
            html += "</dl>\n"
        }
        html += "</header>\n"
        var usedIdentifiers: Set<String> = []
        for section in sections {
            let base = sectionIdentifier(section.title)
            var identifier = base, suffix = 2
            while !usedIdentifiers.insert(identifier).inserted {
                identifier = "\(base)-\(suffix)"
                suffix += 1
            }
            html += "<section id=\"\(escapeHTML(identifier))\">\n<h2>\(escapeHTML(section.title))</h2>\n"
            for block in section.blocks {
                html += Self.render(block)
                html += "\n"
            }
            html += "</section>\n"
        }
        html += "<footer>Written by Silo as one self-contained file: no scripts, no network.</footer>\n</main>\n</body>\n</html>\n"
        return html
    }

    static func render(_ block: Block) -> String {
        switch block {
        case .paragraph(let text):
            return "<p>\(escapeHTML(text))</p>"
        case .keyValues(let pairs):
            var html = "<dl class=\"kv\">"
            for (key, value) in pairs {
                html += "<dt>\(escapeHTML(key))</dt><dd>\(escapeHTML(value))</dd>"
            }
            return html + "</dl>"
        case .table(let table):
            return render(table)
        case .lineChart(let chart):
            let (svg, notes) = chart.render()
            return figure(title: chart.title, svg: svg, notes: notes)
        case .barChart(let chart):
            let (svg, notes) = chart.render()
            return figure(title: chart.title, svg: svg, notes: notes)
        case .note(let note):
            var html = "<div class=\"note \(note.kind.rawValue)\" role=\"note\">"
            if let title = note.title, !title.isEmpty {
                html += "<strong>\(escapeHTML(title))</strong> "
            }
            return html + "\(escapeHTML(note.text))</div>"
        }
    }

    static func figure(title: String, svg: String, notes: [String]) -> String {
        var html = "<figure>"
        if !title.isEmpty { html += "<figcaption>\(escapeHTML(title))</figcaption>" }
        html += svg
        if !notes.isEmpty {
            html += "<ul class=\"chart-notes\">" + notes.map { "<li>\(escapeHTML($0))</li>" }.joined() + "</ul>"
        }
        return html + "</figure>"
    }

    static func render(_ table: Table) -> String {
        let columns = Swift.max(table.headers.count, table.rows.map(\.count).max() ?? 0)
        let rows = table.rows.map { $0 + Array(repeating: "", count: columns - $0.count) }
        let numbers = rows.map { $0.map(numericValue(of:)) }
        var alignments: [Table.Alignment] = []
        for column in 0..<columns {
            let requested = column < table.alignments.count ? table.alignments[column] : .automatic
            if requested != .automatic {
                alignments.append(requested)
                continue
            }
            let cells = rows.map { $0[column] }.filter { !isPlaceholder($0) }
            let numeric = !cells.isEmpty && cells.allSatisfy { numericValue(of: $0) != nil }
            alignments.append(numeric ? .right : .left)
        }
        var bestValue: [Int: Double] = [:]
        for (column, best) in table.best where column < columns {
            let values = numbers.compactMap { $0[column] }
            if let value = best == .highest ? values.max() : values.min() { bestValue[column] = value }
        }
        func attributes(_ column: Int, best: Bool) -> String {
            var classes: [String] = []
            switch alignments[column] {
            case .right: classes.append("num")
            case .center: classes.append("center")
            case .left, .automatic: break
            }
            if best { classes.append("best") }
            return classes.isEmpty ? "" : " class=\"\(classes.joined(separator: " "))\""
        }
        var html = "<div class=\"table-wrap\"><table>"
        if let caption = table.caption, !caption.isEmpty { html += "<caption>\(escapeHTML(caption))</caption>" }
        if !table.headers.isEmpty {
            html += "<thead><tr>"
            for column in 0..<columns {
                let header = column < table.headers.count ? table.headers[column] : ""
                html += "<th scope=\"col\"\(attributes(column, best: false))>\(escapeHTML(header))</th>"
            }
            html += "</tr></thead>"
        }
        html += "<tbody>"
        for (rowIndex, row) in rows.enumerated() {
            html += "<tr>"
            for column in 0..<columns {
                let isBest = bestValue[column] != nil && numbers[rowIndex][column] == bestValue[column]
                html += "<td\(attributes(column, best: isBest))>\(escapeHTML(row[column]))</td>"
            }
            html += "</tr>"
        }
        return html + "</tbody></table></div>"
    }
}

/// A fragment identifier for a section title: lower-case letters and digits joined by "-"
/// ("Traffic and time" → "traffic-and-time"; "section" when nothing is left).
func sectionIdentifier(_ title: String) -> String {
    var words: [String] = [], word = ""
    for character in title.lowercased() {
        if character.isASCII, character.isLetter || character.isNumber {
            word.append(character)
        } else if !word.isEmpty {
            words.append(word)
            word = ""
        }
    }
    if !word.isEmpty { words.append(word) }
    return words.isEmpty ? "section" : words.joined(separator: "-")
}

/// Cells that do not decide whether a column is numeric: empty, dashes, n/a.
func isPlaceholder(_ cell: String) -> Bool {
    let text = cell.trimmingCharacters(in: .whitespaces).lowercased()
    return ["", "-", "—", "–", "n/a", "na"].contains(text)
}

/// The report's CSS: light by default, dark under `prefers-color-scheme: dark`, light again in print.
let reportStyleSheet = """

:root{--bg:#ffffff;--fg:#1c2128;--muted:#5d6673;--line:#dfe3e8;--panel:#f5f7f9;--info:#0072B2;--info-bg:#edf5fb;--warn:#C17A00;--warn-bg:#fff5e0;--best-bg:#e3f3ec;color-scheme:light dark}
@media (prefers-color-scheme:dark){:root{--bg:#14171c;--fg:#e4e7eb;--muted:#99a2ae;--line:#2d333c;--panel:#1b1f26;--info:#56B4E9;--info-bg:#132330;--warn:#E69F00;--warn-bg:#2c2412;--best-bg:#15302a}}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;background:var(--bg);color:var(--fg);font:15px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:980px;margin:0 auto;padding:36px 28px 48px}
h1{font-size:28px;line-height:1.2;margin:0 0 4px;letter-spacing:-0.01em}
h2{font-size:19px;margin:0 0 14px;padding-bottom:6px;border-bottom:1px solid var(--line)}
.subtitle{margin:0;color:var(--muted);font-size:16px}
.meta{display:grid;grid-template-columns:repeat(auto-fill,minmax(160px,1fr));gap:10px 20px;margin:18px 0 0;padding:14px 18px;background:var(--panel);border:1px solid var(--line);border-radius:10px}
.meta dt{font-size:11px;text-transform:uppercase;letter-spacing:.07em;color:var(--muted)}
.meta dd{margin:0;font-weight:600;overflow-wrap:anywhere}
section{margin-top:34px}
p{margin:0 0 12px;max-width:75ch}
.kv{display:grid;grid-template-columns:max-content 1fr;gap:4px 20px;margin:0 0 14px}
.kv dt{color:var(--muted)}
.kv dd{margin:0;font-variant-numeric:tabular-nums;overflow-wrap:anywhere}
figure{margin:0 0 18px;padding:14px 18px 10px;border:1px solid var(--line);border-radius:10px;break-inside:avoid}
figcaption{font-weight:600;margin-bottom:6px}
svg.chart{display:block;width:100%;height:auto;overflow:visible}
.chart-notes{margin:6px 0 0;padding-left:18px;color:var(--muted);font-size:13px}
.table-wrap{overflow-x:auto;margin:0 0 18px}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
caption{text-align:left;font-weight:600;padding-bottom:6px}
th,td{padding:7px 12px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{font-size:12px;font-weight:600;text-transform:uppercase;letter-spacing:.05em;color:var(--muted);border-bottom-width:2px}
tbody tr:last-child td{border-bottom:none}
.num{text-align:right}
.center{text-align:center}
td.best{font-weight:700;background:var(--best-bg)}
.note{margin:0 0 14px;padding:10px 14px;border-left:4px solid var(--info);background:var(--info-bg);border-radius:0 8px 8px 0}
.note.warning{border-left-color:var(--warn);background:var(--warn-bg)}
footer{margin-top:40px;padding-top:12px;border-top:1px solid var(--line);color:var(--muted);font-size:12px}
@media print{:root{--bg:#fff;--fg:#000;--muted:#444;--line:#ccc;--panel:#f5f5f5;--info-bg:#f2f6fa;--warn-bg:#fdf6e6;--best-bg:#e8f3ee;color-scheme:light}main{max-width:none;padding:0}figure,.note,table{break-inside:avoid}h2{break-after:avoid}body{font-size:12px}}

"""
