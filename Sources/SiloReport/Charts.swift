import Foundation

/// One named line of a `LineChart`: points in drawing order.
///
/// A point whose x or y is NaN or infinite (or, on a log axis, y <= 0) is not drawn: the line
/// breaks there and the chart says so in a note.
public struct ChartSeries: Sendable {
    /// A point of a series.
    public struct Point: Sendable, Equatable {
        public var x: Double
        public var y: Double

        public init(x: Double, y: Double) {
            self.x = x
            self.y = y
        }
    }

    /// Shown in the legend and in tooltips.
    public var name: String
    /// The points, in drawing order.
    public var points: [Point]

    /// A series of (x, y) pairs.
    public init(name: String, points: [(x: Double, y: Double)]) {
        self.name = name
        self.points = points.map { Point(x: $0.x, y: $0.y) }
    }

    /// A series with x = `firstX`, `firstX + 1`, … (per-step losses: `firstX` 1 means step 1).
    /// `nil` and NaN values leave gaps.
    public init(name: String, values: [Double?], firstX: Double = 1) {
        self.name = name
        self.points = values.enumerated().map { index, value in
            Point(x: firstX + Double(index), y: value ?? .nan)
        }
    }

    /// A series with x = `firstX`, `firstX + 1`, …; NaN values leave gaps.
    public init(name: String, values: [Double], firstX: Double = 1) {
        self.init(name: name, values: values.map { Optional($0) }, firstX: firstX)
    }
}

/// A line chart with linear x, linear or logarithmic y, nice ticks, a grid and a legend.
public struct LineChart: Sendable {
    /// Shown above the chart in a report.
    public var title: String
    /// Label of the horizontal axis (with its unit).
    public var xLabel: String
    /// Label of the vertical axis (with its unit).
    public var yLabel: String
    /// The lines, drawn in order with the colours of `chartPalette`.
    public var series: [ChartSeries]
    /// A logarithmic y axis (values <= 0 are then left out, with a note).
    public var logY: Bool
    /// Draws a dot with a tooltip on every point when a series has at most this many points.
    public var markerLimit: Int

    /// Creates a line chart.
    public init(title: String, xLabel: String, yLabel: String, series: [ChartSeries], logY: Bool = false, markerLimit: Int = 60) {
        self.title = title
        self.xLabel = xLabel
        self.yLabel = yLabel
        self.series = series
        self.logY = logY
        self.markerLimit = markerLimit
    }

    /// The chart as one `<svg>` element (no XML prolog, no namespace: meant to be inlined in HTML5).
    public func svg() -> String { render().svg }

    /// Sentences about points that could not be drawn (NaN, infinite, <= 0 on a log axis).
    public func notes() -> [String] { render().notes }
}

/// A grouped bar chart: for each category, one bar per series (e.g. accuracy before and after,
/// split vs centralized).
public struct BarChart: Sendable {
    /// One named set of bars, one value per category (NaN: no bar, labelled "n/a").
    public struct Series: Sendable {
        public var name: String
        public var values: [Double]

        public init(name: String, values: [Double]) {
            self.name = name
            self.values = values
        }
    }

    /// Shown above the chart in a report.
    public var title: String
    /// Label of the vertical axis (with its unit).
    public var yLabel: String
    /// Group labels along the horizontal axis.
    public var categories: [String]
    /// The bar sets; each has one value per category.
    public var series: [Series]
    /// Writes each value above its bar (when the bar is wide enough).
    public var showsValues: Bool

    /// Creates a grouped bar chart.
    ///
    /// Precondition: every series has one value per category.
    public init(title: String, yLabel: String, categories: [String], series: [Series], showsValues: Bool = true) {
        for item in series {
            precondition(item.values.count == categories.count,
                         "bar series '\(item.name)' has \(item.values.count) values for \(categories.count) categories")
        }
        self.title = title
        self.yLabel = yLabel
        self.categories = categories
        self.series = series
        self.showsValues = showsValues
    }

    /// The chart as one `<svg>` element (no XML prolog, no namespace: meant to be inlined in HTML5).
    public func svg() -> String { render().svg }

    /// Sentences about values that could not be drawn (NaN, infinite).
    public func notes() -> [String] { render().notes }
}

/// Series colours: the Okabe–Ito palette (distinguishable with the common colour-vision
/// deficiencies, readable on light and dark backgrounds), black left out, yellow last.
public let chartPalette = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442"]
