import Foundation

// Chart geometry, in SVG user units (the viewBox is `ChartLayout.width` × `ChartLayout.height`; CSS
// scales it to the page width). Plot area: x from `left` to `width - right`, y from `top` (legend
// above it) to `height - bottom`. Data map linearly (or by log10) from the nice axis bounds onto it.
// Text and axes use `currentColor`, so a chart follows the surrounding text colour in light and
// dark mode without any stylesheet; series use `chartPalette`.

/// Fixed sizes of a chart (SVG user units).
enum ChartLayout {
    static let width = 720.0
    static let height = 360.0
    static let right = 20.0
    static let bottom = 52.0
    static let minimumLeft = 64.0
    static let legendRowHeight = 18.0
    static let characterWidth = 6.6  // average glyph advance at 12 px, for layout estimates
    /// Above this many points per pixel column pair, a line is thinned before drawing.
    static let thinningFactor = 2.0

    /// Top margin: room for `legendRows` rows of legend.
    static func top(legendRows: Int) -> Double {
        legendRows == 0 ? 16 : 10 + legendRowHeight * Double(legendRows) + 10
    }

    /// Left margin: room for the y label and the widest tick label.
    static func left(tickLabels: [String]) -> Double {
        let widest = tickLabels.map(\.count).max() ?? 0
        return Swift.max(minimumLeft, 30 + Double(widest) * characterWidth)
    }
}

/// A coordinate with one decimal, as written in paths and attributes ("12.0", "-3.5").
func coordinate(_ value: Double) -> String {
    let text = String(format: "%.1f", value)
    return text == "-0.0" ? "0.0" : text
}

/// Axis bounds, ticks and the mapping from data to a fraction of the axis length.
struct ChartAxis {
    let lower: Double
    let upper: Double
    let logarithmic: Bool
    let ticks: [Double]
    let labels: [String]

    /// A linear axis over the nice bounds enclosing `minimum...maximum`.
    static func linear(minimum: Double, maximum: Double, maximumIntervals: Int = 6) -> ChartAxis {
        let scale = NiceScale(lower: minimum, upper: maximum, maximumIntervals: maximumIntervals)
        let ticks = scale.axisTicks
        return ChartAxis(lower: scale.niceLower, upper: scale.niceUpper, logarithmic: false,
                         ticks: ticks, labels: ticks.map(scale.label))
    }

    /// A base-10 logarithmic axis. Spanning at most two decades, its bounds and ticks are the
    /// 1, 2, 5 × 10^k values just enclosing `minimum...maximum` (0.47...1.4 → 0.2...2); wider, they
    /// are powers of ten (every second or more when there are many).
    static func logarithmic(minimum: Double, maximum: Double) -> ChartAxis {
        let low = Int(log10(minimum).rounded(.down))
        var high = Int(log10(maximum).rounded(.up))
        if high <= low { high = low + 1 }
        var ticks: [Double] = []
        if high - low <= 2 {
            var candidates: [Double] = []
            for exponent in low...high {
                for factor in [1.0, 2, 5] { candidates.append(factor * pow(10, Double(exponent))) }
            }
            let tolerance = 1 + 1e-9
            let lower = candidates.last { $0 <= minimum * tolerance } ?? pow(10, Double(low))
            var upper = candidates.first { $0 * tolerance >= maximum } ?? pow(10, Double(high))
            if upper <= lower {  // a constant series: open the axis up to the next nice value
                upper = candidates.first { $0 > lower * tolerance } ?? lower * 10
            }
            ticks = candidates.filter { $0 >= lower && $0 <= upper }
            if ticks.count < 2 { ticks = [lower, upper] }
            return ChartAxis(lower: lower, upper: upper, logarithmic: true, ticks: ticks, labels: ticks.map(formatValue))
        }
        let every = Swift.max(1, Int((Double(high - low) / 6).rounded(.up)))
        for exponent in stride(from: low, through: high, by: every) { ticks.append(pow(10, Double(exponent))) }
        return ChartAxis(lower: pow(10, Double(low)), upper: pow(10, Double(high)), logarithmic: true,
                         ticks: ticks, labels: ticks.map(formatValue))
    }

    /// Where `value` falls between `lower` (0) and `upper` (1).
    func fraction(_ value: Double) -> Double {
        if logarithmic { return (log10(value) - log10(lower)) / (log10(upper) - log10(lower)) }
        return (value - lower) / (upper - lower)
    }
}

/// Lays legend items left to right, wrapping at the right margin; returns positions and row count.
private func legendPositions(_ names: [String], left: Double) -> (positions: [(x: Double, row: Int)], rows: Int) {
    guard !names.isEmpty else { return ([], 0) }
    var positions: [(x: Double, row: Int)] = []
    var x = left, row = 0
    for name in names {
        let itemWidth = 22 + Double(name.count) * ChartLayout.characterWidth + 18
        if x > left, x + itemWidth > ChartLayout.width - ChartLayout.right {
            row += 1
            x = left
        }
        positions.append((x, row))
        x += itemWidth
    }
    return (positions, row + 1)
}

/// The opening `<svg>` tag shared by all charts (`height` in user units; the width is always
/// `ChartLayout.width`).
private func svgOpen(label: String, height: Double = ChartLayout.height) -> String {
    "<svg class=\"chart\" viewBox=\"0 0 \(Int(ChartLayout.width)) \(Int(height))\" width=\"\(Int(ChartLayout.width))\" height=\"\(Int(height))\" role=\"img\" aria-label=\"\(escapeHTML(label))\" font-family=\"system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif\" font-size=\"12\" fill=\"currentColor\">"
}

/// A low empty frame that says "no data".
private func noDataSVG(label: String) -> String {
    let height = 96.0
    var svg = svgOpen(label: label, height: height)
    svg += "<rect x=\"0.5\" y=\"0.5\" width=\"\(coordinate(ChartLayout.width - 1))\" height=\"\(coordinate(height - 1))\" rx=\"6\" fill=\"none\" stroke=\"currentColor\" stroke-opacity=\"0.25\" stroke-dasharray=\"4 4\"/>"
    svg += "<text x=\"\(coordinate(ChartLayout.width / 2))\" y=\"\(coordinate(height / 2))\" text-anchor=\"middle\" dominant-baseline=\"middle\" font-size=\"15\" fill-opacity=\"0.6\">no data</text>"
    return svg + "</svg>"
}

/// Grid, tick labels, axis lines and axis titles for a plot area.
private func axesSVG(x: ChartAxis?, y: ChartAxis, xLabel: String, yLabel: String,
                     left: Double, top: Double, xPixel: (Double) -> Double, yPixel: (Double) -> Double) -> String {
    let right = ChartLayout.width - ChartLayout.right
    let bottom = ChartLayout.height - ChartLayout.bottom
    var svg = "<g class=\"grid\" stroke=\"currentColor\" stroke-opacity=\"0.12\" stroke-width=\"1\">"
    for tick in y.ticks {
        let py = coordinate(yPixel(tick))
        svg += "<line x1=\"\(coordinate(left))\" y1=\"\(py)\" x2=\"\(coordinate(right))\" y2=\"\(py)\"/>"
    }
    if let x {
        for tick in x.ticks {
            let px = coordinate(xPixel(tick))
            svg += "<line x1=\"\(px)\" y1=\"\(coordinate(top))\" x2=\"\(px)\" y2=\"\(coordinate(bottom))\"/>"
        }
    }
    svg += "</g>"
    svg += "<g class=\"ticks\" fill-opacity=\"0.75\" font-variant-numeric=\"tabular-nums\">"
    for (tick, label) in zip(y.ticks, y.labels) {
        svg += "<text x=\"\(coordinate(left - 8))\" y=\"\(coordinate(yPixel(tick)))\" text-anchor=\"end\" dominant-baseline=\"middle\">\(escapeHTML(label))</text>"
    }
    if let x {
        for (tick, label) in zip(x.ticks, x.labels) {
            svg += "<text x=\"\(coordinate(xPixel(tick)))\" y=\"\(coordinate(bottom + 18))\" text-anchor=\"middle\">\(escapeHTML(label))</text>"
        }
    }
    svg += "</g>"
    svg += "<path class=\"axis\" d=\"M\(coordinate(left)),\(coordinate(top))V\(coordinate(bottom))H\(coordinate(right))\" fill=\"none\" stroke=\"currentColor\" stroke-opacity=\"0.55\"/>"
    if !xLabel.isEmpty {
        svg += "<text x=\"\(coordinate((left + right) / 2))\" y=\"\(coordinate(ChartLayout.height - 10))\" text-anchor=\"middle\" font-weight=\"600\" fill-opacity=\"0.85\">\(escapeHTML(xLabel))</text>"
    }
    if !yLabel.isEmpty {
        let cy = (top + bottom) / 2
        svg += "<text transform=\"translate(16,\(coordinate(cy))) rotate(-90)\" text-anchor=\"middle\" font-weight=\"600\" fill-opacity=\"0.85\">\(escapeHTML(yLabel))</text>"
    }
    return svg
}

/// The legend: a swatch (line or square) and the name of each series.
private func legendSVG(_ names: [String], left: Double, square: Bool) -> String {
    let layout = legendPositions(names, left: left)
    var svg = "<g class=\"legend\">"
    for (index, name) in names.enumerated() {
        let position = layout.positions[index]
        let color = chartPalette[index % chartPalette.count]
        let cy = 10 + ChartLayout.legendRowHeight * Double(position.row) + ChartLayout.legendRowHeight / 2
        if square {
            svg += "<rect x=\"\(coordinate(position.x + 4))\" y=\"\(coordinate(cy - 6))\" width=\"12\" height=\"12\" rx=\"2\" fill=\"\(color)\"/>"
        } else {
            svg += "<line x1=\"\(coordinate(position.x))\" y1=\"\(coordinate(cy))\" x2=\"\(coordinate(position.x + 18))\" y2=\"\(coordinate(cy))\" stroke=\"\(color)\" stroke-width=\"2.5\" stroke-linecap=\"round\"/>"
        }
        svg += "<text x=\"\(coordinate(position.x + 24))\" y=\"\(coordinate(cy))\" dominant-baseline=\"middle\">\(escapeHTML(name))</text>"
    }
    return svg + "</g>"
}

/// Keeps, per pixel column, the first, lowest, highest and last point (in drawing order), so a
/// long line keeps its shape and spikes with at most four points per column.
func thinnedForDrawing(_ points: [(x: Double, y: Double)]) -> [(x: Double, y: Double)] {
    var result: [(x: Double, y: Double)] = []
    var start = 0
    while start < points.count {
        let column = points[start].x.rounded(.down)
        var end = start
        var lowest = start, highest = start
        while end + 1 < points.count, points[end + 1].x.rounded(.down) == column {
            end += 1
            if points[end].y < points[lowest].y { lowest = end }
            if points[end].y > points[highest].y { highest = end }
        }
        for index in Set([start, lowest, highest, end]).sorted() { result.append(points[index]) }
        start = end + 1
    }
    return result
}

extension LineChart {
    /// The SVG and the notes about left-out points.
    func render() -> (svg: String, notes: [String]) {
        var notes: [String] = []
        // Segments of drawable points per series (a non-drawable point ends a segment).
        var segments: [[[ChartSeries.Point]]] = []
        for item in series {
            var itemSegments: [[ChartSeries.Point]] = [], current: [ChartSeries.Point] = []
            var nonFinite = 0, nonPositive = 0
            for point in item.points {
                if !point.x.isFinite || !point.y.isFinite {
                    nonFinite += 1
                } else if logY && point.y <= 0 {
                    nonPositive += 1
                } else {
                    current.append(point)
                    continue
                }
                if !current.isEmpty { itemSegments.append(current); current = [] }
            }
            if !current.isEmpty { itemSegments.append(current) }
            segments.append(itemSegments)
            if nonFinite > 0 {
                notes.append("\(item.name): \(nonFinite) non-finite value\(nonFinite == 1 ? "" : "s") (NaN or infinite) left out; the line has gaps there.")
            }
            if nonPositive > 0 {
                notes.append("\(item.name): \(nonPositive) value\(nonPositive == 1 ? "" : "s") <= 0 left out of the logarithmic axis.")
            }
        }
        let drawn = segments.flatMap { $0.flatMap { $0 } }
        guard let first = drawn.first else {
            if series.allSatisfy({ $0.points.isEmpty }) == false { notes.append("No point of this chart can be drawn.") }
            return (noDataSVG(label: title), notes)
        }
        var xMinimum = first.x, xMaximum = first.x, yMinimum = first.y, yMaximum = first.y
        for point in drawn {
            xMinimum = Swift.min(xMinimum, point.x); xMaximum = Swift.max(xMaximum, point.x)
            yMinimum = Swift.min(yMinimum, point.y); yMaximum = Swift.max(yMaximum, point.y)
        }
        let xAxis = ChartAxis.linear(minimum: xMinimum, maximum: xMaximum, maximumIntervals: 8)
        let yAxis = logY ? ChartAxis.logarithmic(minimum: yMinimum, maximum: yMaximum)
                         : ChartAxis.linear(minimum: yMinimum, maximum: yMaximum)
        let names = series.map(\.name)
        let left = ChartLayout.left(tickLabels: yAxis.labels)
        let legendRows = names.allSatisfy(\.isEmpty) ? 0 : legendPositions(names, left: left).rows
        let top = ChartLayout.top(legendRows: legendRows)
        let plotWidth = ChartLayout.width - ChartLayout.right - left
        let plotBottom = ChartLayout.height - ChartLayout.bottom
        let plotHeight = plotBottom - top
        let xPixel = { (x: Double) in left + xAxis.fraction(x) * plotWidth }
        let yPixel = { (y: Double) in plotBottom - yAxis.fraction(y) * plotHeight }

        var svg = svgOpen(label: title)
        if legendRows > 0 { svg += legendSVG(names, left: left, square: false) }
        svg += axesSVG(x: xAxis, y: yAxis, xLabel: xLabel, yLabel: yLabel, left: left, top: top, xPixel: xPixel, yPixel: yPixel)
        for (index, item) in series.enumerated() {
            let color = chartPalette[index % chartPalette.count]
            let itemSegments = segments[index]
            let count = itemSegments.reduce(0) { $0 + $1.count }
            let thin = Double(count) > ChartLayout.thinningFactor * plotWidth
            var path = ""
            var isolated: [ChartSeries.Point] = []
            for segment in itemSegments {
                if segment.count == 1 { isolated.append(segment[0]); continue }
                var pixels = segment.map { (x: xPixel($0.x), y: yPixel($0.y)) }
                if thin { pixels = thinnedForDrawing(pixels) }
                path += "M\(coordinate(pixels[0].x)),\(coordinate(pixels[0].y))L"
                path += pixels.dropFirst().map { "\(coordinate($0.x)),\(coordinate($0.y))" }.joined(separator: " ")
            }
            svg += "<g class=\"series\" data-series=\"\(index)\">"
            if !path.isEmpty {
                svg += "<path d=\"\(path)\" fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\" stroke-linejoin=\"round\" stroke-linecap=\"round\"/>"
            }
            // Dots with tooltips for short series; a lone point between gaps always gets a dot.
            let dotted = count <= markerLimit ? itemSegments.flatMap { $0 } : isolated
            for point in dotted {
                svg += "<circle cx=\"\(coordinate(xPixel(point.x)))\" cy=\"\(coordinate(yPixel(point.y)))\" r=\"3\" fill=\"\(color)\"><title>\(escapeHTML(item.name)): \(escapeHTML(xLabel.isEmpty ? "x" : xLabel)) \(formatValue(point.x)), \(escapeHTML(yLabel.isEmpty ? "y" : yLabel)) \(formatValue(point.y))</title></circle>"
            }
            svg += "</g>"
        }
        svg += "</svg>"
        return (svg, notes)
    }
}

extension BarChart {
    /// The SVG and the notes about left-out values.
    func render() -> (svg: String, notes: [String]) {
        var notes: [String] = []
        let finite = series.flatMap(\.values).filter(\.isFinite)
        for item in series {
            let missing = item.values.filter { !$0.isFinite }.count
            if missing > 0 {
                notes.append("\(item.name): \(missing) non-finite value\(missing == 1 ? "" : "s") (NaN or infinite) shown as n/a.")
            }
        }
        guard !categories.isEmpty, !series.isEmpty, !finite.isEmpty else {
            return (noDataSVG(label: title), notes)
        }
        let low = Swift.min(0, finite.min() ?? 0), high = Swift.max(0, finite.max() ?? 0)
        let yAxis = ChartAxis.linear(minimum: low, maximum: low == high ? 1 : high)
        let names = series.map(\.name)
        let left = ChartLayout.left(tickLabels: yAxis.labels)
        let legendRows = legendPositions(names, left: left).rows
        let top = ChartLayout.top(legendRows: legendRows)
        let plotWidth = ChartLayout.width - ChartLayout.right - left
        let plotBottom = ChartLayout.height - ChartLayout.bottom
        let plotHeight = plotBottom - top
        let yPixel = { (y: Double) in plotBottom - yAxis.fraction(y) * plotHeight }

        var svg = svgOpen(label: title)
        svg += legendSVG(names, left: left, square: true)
        svg += axesSVG(x: nil, y: yAxis, xLabel: "", yLabel: yLabel, left: left, top: top, xPixel: { $0 }, yPixel: yPixel)
        let groupWidth = plotWidth / Double(categories.count)
        let barsWidth = groupWidth * 0.72
        let barWidth = barsWidth / Double(series.count)
        let baseline = yPixel(0)
        let labelCharacters = Swift.max(3, Int(groupWidth / ChartLayout.characterWidth) - 1)
        for (categoryIndex, category) in categories.enumerated() {
            let groupLeft = left + Double(categoryIndex) * groupWidth
            let shown = category.count > labelCharacters ? String(category.prefix(labelCharacters - 1)) + "…" : category
            svg += "<text x=\"\(coordinate(groupLeft + groupWidth / 2))\" y=\"\(coordinate(plotBottom + 18))\" text-anchor=\"middle\" fill-opacity=\"0.85\"><title>\(escapeHTML(category))</title>\(escapeHTML(shown))</text>"
            for (seriesIndex, item) in series.enumerated() {
                let color = chartPalette[seriesIndex % chartPalette.count]
                let x = groupLeft + (groupWidth - barsWidth) / 2 + Double(seriesIndex) * barWidth
                let center = x + barWidth / 2
                let value = item.values[categoryIndex]
                guard value.isFinite else {
                    svg += "<text x=\"\(coordinate(center))\" y=\"\(coordinate(baseline - 6))\" text-anchor=\"middle\" font-size=\"11\" fill-opacity=\"0.6\">n/a</text>"
                    continue
                }
                let end = yPixel(value)
                let gap = Swift.min(2, barWidth * 0.1)
                svg += "<rect x=\"\(coordinate(x + gap))\" y=\"\(coordinate(Swift.min(end, baseline)))\" width=\"\(coordinate(barWidth - 2 * gap))\" height=\"\(coordinate(abs(baseline - end)))\" fill=\"\(color)\"><title>\(escapeHTML(item.name)), \(escapeHTML(category)): \(formatValue(value))</title></rect>"
                if showsValues, barWidth >= 24 {
                    let labelY = value >= 0 ? end - 5 : end + 14
                    svg += "<text x=\"\(coordinate(center))\" y=\"\(coordinate(labelY))\" text-anchor=\"middle\" font-size=\"11\" font-variant-numeric=\"tabular-nums\">\(formatValue(value))</text>"
                }
            }
        }
        svg += "<line x1=\"\(coordinate(left))\" y1=\"\(coordinate(baseline))\" x2=\"\(coordinate(ChartLayout.width - ChartLayout.right))\" y2=\"\(coordinate(baseline))\" stroke=\"currentColor\" stroke-opacity=\"0.55\"/>"
        svg += "</svg>"
        return (svg, notes)
    }
}
