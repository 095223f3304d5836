import XCTest
@testable import SiloReport

/// Charts: data mapped to pixels as worked out by hand, gaps, degenerate series, long series.
///
/// Geometry used below (ChartLayout): viewBox 720 × 360; plot from x = 64 (left margin, tick labels
/// of up to 5 characters) to 720 − 20 = 700, so 636 wide; from y = 38 (10 + one 18-high legend
/// row + 10) down to 360 − 52 = 308, so 270 high.
final class ChartTests: XCTestCase {
    func testPathCoordinatesMatchHandComputedPixels() {
        // x 0...10: 10 / 8 intervals = 1.25 -> step 2, axis 0...10; px = 64 + x / 10 × 636.
        // y 0...1: 1 / 6 = 0.17 -> step 0.2, axis 0...1; py = 308 − y × 270.
        let chart = LineChart(title: "t", xLabel: "step", yLabel: "loss",
                              series: [ChartSeries(name: "a", points: [(0, 0), (5, 1), (10, 0.5)])])
        let svg = parseSVG(chart.svg())
        XCTAssertEqual(svg.paths, ["M64.0,308.0L382.0,38.0 700.0,173.0"])
        XCTAssertEqual(svg.circles.map { "\($0.x),\($0.y)" }, ["64.0,308.0", "382.0,38.0", "700.0,173.0"])
        XCTAssertTrue(chart.notes().isEmpty)
    }

    func testNaNLeavesGapsAndIsolatedPointGetsADot() {
        // x 1...7: 6 / 8 -> step 1, axis 1...7, px = 64 + (x − 1) × 106.
        // y 1...3: 2 / 6 -> step 0.5, axis 1...3, py = 308 − (y − 1) × 135.
        let chart = LineChart(title: "t", xLabel: "step", yLabel: "loss",
                              series: [ChartSeries(name: "a", values: [3, 2, .nan, 2, 1, .infinity, 1])],
                              markerLimit: 0)
        let svg = parseSVG(chart.svg())
        XCTAssertEqual(svg.paths, ["M64.0,38.0L170.0,173.0M382.0,173.0L488.0,308.0"])
        // With markers off, only the lone point at x = 7 (between a gap and the end) is dotted.
        XCTAssertEqual(svg.circles.map { "\($0.x),\($0.y)" }, ["700.0,308.0"])
        XCTAssertEqual(chart.notes(), ["a: 2 non-finite values (NaN or infinite) left out; the line has gaps there."])
        XCTAssertNil(chart.svg().range(of: #"\bnan\b"#, options: [.regularExpression, .caseInsensitive]), "no NaN written")
    }

    func testLogarithmicAxis() {
        // y 1...100 on a log axis: decades 0...2, py = 308 − log10(y) / 2 × 270; x 1...3 -> step 0.5.
        let chart = LineChart(title: "t", xLabel: "step", yLabel: "loss",
                              series: [ChartSeries(name: "a", values: [1, 10, 100, 0])], logY: true)
        let svg = parseSVG(chart.svg())
        XCTAssertEqual(svg.paths, ["M64.0,308.0L382.0,173.0 700.0,38.0"])
        XCTAssertEqual(chart.notes(), ["a: 1 value <= 0 left out of the logarithmic axis."])
        // Ticks at 1, 2, 5 × 10^k over two decades.
        for label in [">1<", ">2<", ">5<", ">10<", ">20<", ">50<", ">100<"] {
            XCTAssertTrue(chart.svg().contains(label), "missing tick label \(label)")
        }
        // Within two decades the bounds are the enclosing 1-2-5 values: 0.47...1.4 -> 0.2...2.
        let narrow = ChartAxis.logarithmic(minimum: 0.47, maximum: 1.4)
        XCTAssertEqual(narrow.lower, 0.2, accuracy: 1e-12)
        XCTAssertEqual(narrow.upper, 2, accuracy: 1e-12)
        XCTAssertEqual(narrow.labels, ["0.2", "0.5", "1", "2"])
        // A constant series opens up to the next value: 1...2.
        let constant = ChartAxis.logarithmic(minimum: 1, maximum: 1)
        XCTAssertEqual([constant.lower, constant.upper], [1, 2])
        // Wide ranges use powers of ten.
        XCTAssertEqual(ChartAxis.logarithmic(minimum: 0.003, maximum: 40).labels, ["0.001", "0.01", "0.1", "1", "10", "100"])
    }

    func testOnePointConstantAndEmptySeries() {
        let one = LineChart(title: "one", xLabel: "x", yLabel: "y", series: [ChartSeries(name: "a", points: [(3, 0.5)])])
        let oneSVG = parseSVG(one.svg())
        XCTAssertTrue(oneSVG.paths.isEmpty)
        // x 3 is padded to 2.7...3.3 and y 0.5 to 0.45...0.55; the dot sits in the middle of the plot.
        XCTAssertEqual(oneSVG.circles.count, 1)
        XCTAssertEqual(oneSVG.circles.first?.x, "382.0")
        XCTAssertEqual(oneSVG.circles.first?.y, "173.0")

        let flat = LineChart(title: "flat", xLabel: "x", yLabel: "y", series: [ChartSeries(name: "a", values: [2, 2, 2])])
        let flatSVG = parseSVG(flat.svg())
        // 2 is padded to 1.8...2.2 (step 0.1): the line runs at mid-height.
        XCTAssertEqual(flatSVG.paths, ["M64.0,173.0L382.0,173.0 700.0,173.0"])

        for chart in [
            LineChart(title: "empty", xLabel: "x", yLabel: "y", series: [ChartSeries(name: "a", values: [Double]())]),
            LineChart(title: "none", xLabel: "x", yLabel: "y", series: []),
            LineChart(title: "all nan", xLabel: "x", yLabel: "y", series: [ChartSeries(name: "a", values: [.nan, .nan])]),
        ] {
            let svg = chart.svg()
            _ = parseSVG(svg)
            XCTAssertTrue(svg.contains(">no data<"), chart.title)
        }
    }

    func testLongSeriesIsThinnedButKeepsItsExtremes() throws {
        // 20 000 points: a slow ramp with one spike up and one down.
        var values = (0..<20_000).map { 1 + Double($0) / 20_000 }
        values[7_000] = 5
        values[13_000] = 0
        let chart = LineChart(title: "long", xLabel: "step", yLabel: "loss", series: [ChartSeries(name: "a", values: values)])
        let text = chart.svg()
        let svg = parseSVG(text)
        let path = try XCTUnwrap(svg.paths.first)
        let pairs = path.dropFirst().split(whereSeparator: { $0 == " " || $0 == "L" })
        XCTAssertLessThanOrEqual(pairs.count, 4 * 637, "at most four points per pixel column")
        XCTAssertGreaterThan(pairs.count, 600)
        XCTAssertLessThan(text.utf8.count, 60_000)
        // Every coordinate has exactly one decimal.
        for pair in pairs {
            for number in pair.split(separator: ",") {
                XCTAssertNotNil(number.range(of: #"^-?\d+\.\d$"#, options: .regularExpression), "coordinate \(number)")
            }
        }
        // y axis 0...5 (step 1): the spike to 5 is drawn at the top (38), the dip to 0 at the bottom (308).
        let ys = pairs.compactMap { $0.split(separator: ",").last.flatMap { Double($0) } }
        XCTAssertEqual(ys.min(), 38)
        XCTAssertEqual(ys.max(), 308)
        XCTAssertTrue(svg.circles.isEmpty, "no markers on a long series")
    }

    func testBarChartGeometry() {
        // y 0...0.8: 0.8 / 6 = 0.133 -> step 0.2, axis 0...0.8; py = 308 − v / 0.8 × 270.
        // Two groups, each 636 / 2 = 318 wide; bars take 72% = 228.96, two bars of 114.48, inset 2.
        let chart = BarChart(title: "accuracy", yLabel: "accuracy", categories: ["before", "after"],
                             series: [.init(name: "split", values: [0.4, 0.8]), .init(name: "centralized", values: [0.6, .nan])])
        let svg = parseSVG(chart.svg())
        let rects = svg.elements.filter { $0.name == "rect" && $0.attributes["fill"]?.hasPrefix("#") == true && $0.attributes["height"] != "12" }
        XCTAssertEqual(rects.count, 3)
        // First bar: x = 64 + (318 − 228.96) / 2 + 2 = 110.52, y = 308 − 0.5 × 270 = 173, height 135.
        XCTAssertEqual(rects[0].attributes["x"], "110.5")
        XCTAssertEqual(rects[0].attributes["y"], "173.0")
        XCTAssertEqual(rects[0].attributes["height"], "135.0")
        XCTAssertEqual(rects[0].attributes["width"], "110.5")
        // "after" split bar reaches the top of the plot.
        XCTAssertEqual(rects[2].attributes["y"], "38.0")
        XCTAssertEqual(chart.notes(), ["centralized: 1 non-finite value (NaN or infinite) shown as n/a."])
        XCTAssertTrue(chart.svg().contains(">n/a<"))
    }

    func testThinningKeepsFirstLowestHighestLastPerColumn() {
        let points: [(x: Double, y: Double)] = [(0.1, 5), (0.2, 1), (0.5, 9), (0.9, 4), (1.2, 3)]
        let thinned = thinnedForDrawing(points)
        XCTAssertEqual(thinned.map(\.y), [5, 1, 9, 4, 3])
        let many: [(x: Double, y: Double)] = [(0.1, 5), (0.2, 6), (0.3, 1), (0.4, 7), (0.5, 9), (0.6, 2), (0.9, 4)]
        XCTAssertEqual(thinnedForDrawing(many).map(\.y), [5, 1, 9, 4])
    }
}
