import Foundation

/// A report document: a title, metadata and sections of blocks, rendered by `html()` into one
/// self-contained HTML5 file.
///
/// ```swift
/// var report = Report(title: "silo simulate", metadata: [("model", "smollm2-135m"), ("clients", "4")])
/// report.sections.append(Report.Section(title: "Training", blocks: [
///     .lineChart(LineChart(title: "Training loss", xLabel: "step", yLabel: "loss",
///                          series: [ChartSeries(name: "split", values: losses)])),
/// ]))
/// try report.write(to: folder.appendingPathComponent("report.html"))
/// ```
/// Every string is HTML-escaped when rendered; callers pass plain text.
public struct Report: Sendable {
    /// The heading of the page and its `<title>`.
    public var title: String
    /// One line under the title (optional).
    public var subtitle: String?
    /// Key-value pairs shown under the title, in order (model, task, mode, clients, machine, date…).
    public var metadata: [(String, String)]
    /// The body, in order.
    public var sections: [Section]

    /// Creates a report; sections can also be appended later.
    public init(title: String, subtitle: String? = nil, metadata: [(String, String)] = [], sections: [Section] = []) {
        self.title = title
        self.subtitle = subtitle
        self.metadata = metadata
        self.sections = sections
    }

    /// A titled part of a report.
    public struct Section: Sendable {
        /// The section heading.
        public var title: String
        /// The content, in order.
        public var blocks: [Block]

        /// Creates a section.
        public init(title: String, blocks: [Block] = []) {
            self.title = title
            self.blocks = blocks
        }
    }

    /// One piece of content.
    public enum Block: Sendable {
        /// A paragraph of plain text.
        case paragraph(String)
        /// A two-column list of labels and values.
        case keyValues([(String, String)])
        /// A table of strings.
        case table(Table)
        /// A line chart (loss curves and the like).
        case lineChart(LineChart)
        /// A grouped bar chart (a metric per category and series).
        case barChart(BarChart)
        /// A highlighted box with a remark or a warning.
        case note(Note)
    }

    /// A table of text cells; numeric columns are right-aligned and the best value of chosen
    /// columns can be emphasised.
    public struct Table: Sendable {
        /// How a column is aligned.
        public enum Alignment: Sendable, Equatable {
            /// Right-aligned when every non-empty cell of the column is a number, else left.
            case automatic
            case left
            case right
            case center
        }

        /// Which value of a column is the best one.
        public enum Best: Sendable, Equatable {
            /// The largest number (accuracy, ROUGE…).
            case highest
            /// The smallest number (loss, seconds per step…).
            case lowest
        }

        /// An optional caption shown above the table.
        public var caption: String?
        /// Column headings.
        public var headers: [String]
        /// Rows of cells; a short row is padded with empty cells.
        public var rows: [[String]]
        /// Per-column alignment; missing entries are `.automatic`.
        public var alignments: [Alignment]
        /// Columns (by index) whose best numeric cell is emphasised (ties: all of them).
        public var best: [Int: Best]

        /// Creates a table.
        public init(caption: String? = nil, headers: [String], rows: [[String]], alignments: [Alignment] = [], best: [Int: Best] = [:]) {
            self.caption = caption
            self.headers = headers
            self.rows = rows
            self.alignments = alignments
            self.best = best
        }
    }

    /// A boxed remark.
    public struct Note: Sendable {
        /// The tone of the box.
        public enum Kind: String, Sendable {
            case info
            case warning
        }

        /// The tone of the box.
        public var kind: Kind
        /// An optional bold heading.
        public var title: String?
        /// The text.
        public var text: String

        /// Creates a note.
        public init(_ kind: Kind = .info, title: String? = nil, text: String) {
            self.kind = kind
            self.title = title
            self.text = text
        }
    }

    /// Renders the report and writes it to `url` (atomically).
    ///
    /// - Throws: the file system's error when the file cannot be written.
    public func write(to url: URL) throws {
        try Data(html().utf8).write(to: url, options: .atomic)
    }
}

/// The number a table cell shows, if it is one: `"0.812"`, `"-3"`, `"81.2%"`, `"1,234"`, `"0.52 s"`
/// (thousands separators and a trailing unit are ignored). Nil for text, empty cells and dashes.
func numericValue(of cell: String) -> Double? {
    var text = cell.trimmingCharacters(in: .whitespaces).replacingOccurrences(of: ",", with: "")
    text = text.replacingOccurrences(of: "−", with: "-")
    // Drop a trailing unit: letters, %, spaces, ×, /.
    while let last = text.last, !(last.isNumber || last == ".") {
        text.removeLast()
    }
    guard !text.isEmpty, let value = Double(text), value.isFinite else { return nil }
    return value
}
