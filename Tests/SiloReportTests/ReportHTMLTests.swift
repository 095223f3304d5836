import XCTest
@testable import SiloReport

/// The HTML document: escaping of every data string, self-containment, well-formed SVG, tables.
final class ReportHTMLTests: XCTestCase {
    private let hostile = "<script>alert(\"x\")</script> & \"quoted\" 'single'"

    private func hostileReport() -> Report {
        Report(
            title: hostile,
            subtitle: hostile,
            metadata: [(hostile, hostile), ("clients", "4")],
            sections: [
                Report.Section(title: hostile, blocks: [
                    .paragraph(hostile),
                    .keyValues([(hostile, hostile)]),
                    .table(Report.Table(caption: hostile, headers: [hostile, "loss"], rows: [[hostile, "1.5"]])),
                    .lineChart(LineChart(title: hostile, xLabel: hostile, yLabel: hostile,
                                         series: [ChartSeries(name: hostile, values: [1, 2, .nan, 3])])),
                    .barChart(BarChart(title: hostile, yLabel: hostile, categories: [hostile],
                                       series: [.init(name: hostile, values: [0.5])])),
                    .note(Report.Note(.warning, title: hostile, text: hostile)),
                ]),
            ])
    }

    func testEveryDataStringIsEscaped() {
        let html = hostileReport().html()
        XCTAssertFalse(html.contains("<script"), "raw <script> in output")
        XCTAssertFalse(html.contains("alert(\"x\")"), "raw quotes in output")
        XCTAssertFalse(html.contains("'single'"), "raw apostrophes in output")
        XCTAssertFalse(html.contains("& \""), "raw ampersand in output")
        let escaped = "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &quot;quoted&quot; &#39;single&#39;"
        // title, h1, subtitle, meta key and value, h2, paragraph, kv key and value, caption, header,
        // cell, chart titles, axis labels, legend, tooltips, category, note title and text.
        XCTAssertGreaterThanOrEqual(html.components(separatedBy: escaped).count - 1, 20)
        XCTAssertEqual(escapeHTML("a<b>&\"'\u{0}\u{7}\tc"), "a&lt;b&gt;&amp;&quot;&#39;\tc")
    }

    func testDocumentIsSelfContainedAndEverySVGIsWellFormed() {
        let html = hostileReport().html()
        XCTAssertTrue(html.hasPrefix("<!DOCTYPE html>"))
        for forbidden in ["http:", "https:", "src=", "href=", "url(", "@import", "<script", "<link", "<img", "<iframe"] {
            XCTAssertFalse(html.lowercased().contains(forbidden), "found \(forbidden)")
        }
        XCTAssertTrue(html.contains("prefers-color-scheme:dark"))
        XCTAssertTrue(html.contains("@media print"))
        let svgs = svgElements(in: html)
        XCTAssertEqual(svgs.count, 2)
        for svg in svgs { _ = parseSVG(svg) }
        // The NaN gap is reported under the chart.
        XCTAssertTrue(html.contains("1 non-finite value (NaN or infinite) left out"))
    }

    func testTableAlignsNumbersAndMarksTheBestValues() {
        let table = Report.Table(headers: ["mode", "accuracy", "loss", "note"],
                                 rows: [["split", "0.81", "1.20", "ok"],
                                        ["centralized", "0.83", "1.10", "—"],
                                        ["before", "0.62", "n/a", "3 clients"]],
                                 best: [1: .highest, 2: .lowest])
        let html = Report.render(table)
        XCTAssertTrue(html.contains("<th scope=\"col\" class=\"num\">accuracy</th>"))
        XCTAssertTrue(html.contains("<td>split</td><td class=\"num\">0.81</td><td class=\"num\">1.20</td><td>ok</td>"))
        XCTAssertTrue(html.contains("<td>centralized</td><td class=\"num best\">0.83</td><td class=\"num best\">1.10</td><td>—</td>"))
        XCTAssertTrue(html.contains("<td class=\"num\">n/a</td>"))
        XCTAssertEqual(html.components(separatedBy: "best").count - 1, 2)
    }

    func testNumericCells() {
        XCTAssertEqual(numericValue(of: "0.812"), 0.812)
        XCTAssertEqual(numericValue(of: "81.2%"), 81.2)
        XCTAssertEqual(numericValue(of: "1,234"), 1234)
        XCTAssertEqual(numericValue(of: "0.52 s"), 0.52)
        XCTAssertEqual(numericValue(of: "−3"), -3)
        XCTAssertNil(numericValue(of: "split"))
        XCTAssertNil(numericValue(of: "NaN"))
        XCTAssertNil(numericValue(of: "—"))
        XCTAssertNil(numericValue(of: ""))
    }
}
