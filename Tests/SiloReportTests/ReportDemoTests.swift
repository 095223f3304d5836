import Foundation
import XCTest
@testable import SiloReport

/// A sample report with every block and the awkward chart cases, shaped like `silo simulate`'s.
///
/// Always checked for well-formed SVG; written to the path in `SILO_REPORT_DEMO` when that is set,
/// for a look in a browser (`Scripts/screenshot_report.sh`).
final class ReportDemoTests: XCTestCase {
    /// A deterministic generator for the noise in the sample curves (64-bit LCG, Knuth's MMIX constants).
    private struct Noise {
        var state: UInt64 = 0x5EED
        mutating func next() -> Double {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Double(state >> 11) / Double(1 << 53) - 0.5
        }
    }

    static func sampleReport() -> Report {
        var noise = Noise()
        let steps = 300
        func curve(start: Double, end: Double, rate: Double, jitter: Double) -> [Double] {
            (0..<steps).map { step in
                end + (start - end) * exp(-Double(step) / rate) + jitter * noise.next()
            }
        }
        let split = curve(start: 2.6, end: 1.18, rate: 70, jitter: 0.16)
        let centralized = curve(start: 2.6, end: 1.15, rate: 65, jitter: 0.16)
        let clients = ["hospital-a", "hospital-b", "bank-c", "firm-d"].enumerated().map { index, name in
            ChartSeries(name: name, values: (0..<30).map { round in
                1.1 + 0.1 * Double(index) + 1.4 * exp(-Double(round) / 8) + 0.06 * noise.next()
            })
        }
        var long = (0..<20_000).map { 0.5 + 0.45 * exp(-Double($0) / 4000) + 0.03 * noise.next() }
        long[9_000] = 1.4
        var unstable = curve(start: 3, end: 1.4, rate: 20, jitter: 0.1).prefix(60).map { $0 }
        unstable[21] = .nan
        unstable[22] = .nan
        unstable[40] = .infinity

        return Report(
            title: "Split fine-tuning: SmolLM2-135M on BoolQ",
            subtitle: "4 clients, client-batching, LoRA r = 8 on q/v on both sides, compared with the same run centralized",
            metadata: [("model", "smollm2-135m"), ("task", "BoolQ (accuracy)"), ("mode", "client-batching"),
                       ("clients", "4 (IID shards)"), ("steps", "300"), ("machine", "2 cores, x86_64, OpenBLAS"),
                       ("date", "2025-01-01 12:00 UTC")],
            sections: [
                Report.Section(title: "Results", blocks: [
                    .paragraph("Accuracy on a held-out slice of 200 BoolQ questions before and after fine-tuning, for the split run and for the same run in one process."),
                    .table(Report.Table(
                        headers: ["run", "accuracy before", "accuracy after", "final loss", "s / step"],
                        rows: [["split (client-batching)", "0.615", "0.705", "1.182", "0.52"],
                               ["centralized", "0.615", "0.715", "1.151", "0.49"],
                               ["split (serial)", "0.615", "0.700", "1.190", "0.81"]],
                        best: [2: .highest, 3: .lowest, 4: .lowest])),
                    .barChart(BarChart(title: "Accuracy before and after fine-tuning", yLabel: "accuracy",
                                       categories: ["before", "after"],
                                       series: [.init(name: "split", values: [0.615, 0.705]),
                                                .init(name: "centralized", values: [0.615, 0.715])])),
                    .note(Report.Note(.info, title: "Within 2 points.", text: "Split accuracy after fine-tuning is 1.0 point below centralized.")),
                ]),
                Report.Section(title: "Training", blocks: [
                    .lineChart(LineChart(title: "Training loss per step", xLabel: "step", yLabel: "loss",
                                         series: [ChartSeries(name: "split (client-batching)", values: split),
                                                  ChartSeries(name: "centralized", values: centralized)])),
                    .lineChart(LineChart(title: "Loss per client and round", xLabel: "round", yLabel: "loss", series: clients)),
                ]),
                Report.Section(title: "Traffic and time", blocks: [
                    .keyValues([("sealing", "AES-GCM-256, per-direction sequence numbers"), ("seconds per step", "split 0.52 s, centralized 0.49 s (1.06×)"),
                                ("bytes per step", "3.1 MiB")]),
                    .table(Report.Table(headers: ["message", "count", "total bytes", "bytes / message"],
                                        rows: [["activations (client → server)", "1,200", "943,718,400", "786,432"],
                                               ["activations (server → client)", "1,200", "943,718,400", "786,432"],
                                               ["gradients (client → server)", "1,200", "943,718,400", "786,432"],
                                               ["gradients (server → client)", "1,200", "943,718,400", "786,432"],
                                               ["adapter aggregation", "40", "5,898,240", "147,456"]])),
                    .barChart(BarChart(title: "Seconds per step by mode", yLabel: "seconds",
                                       categories: ["centralized", "serial", "client-batching", "server-hierarchical"],
                                       series: [.init(name: "client work", values: [0.49, 0.47, 0.45, 0.46]),
                                                .init(name: "server work", values: [0, 0.30, 0.05, 0.12]),
                                                .init(name: "sealing + copying", values: [0, 0.04, 0.02, 0.03])])),
                ]),
                Report.Section(title: "Edge cases", blocks: [
                    .note(Report.Note(.warning, title: "Unstable run.", text: "The loss became NaN at steps 22–23 and infinite at step 41; those steps were skipped.")),
                    .lineChart(LineChart(title: "Loss with NaN and infinite steps", xLabel: "step", yLabel: "loss",
                                         series: [ChartSeries(name: "unstable", values: unstable)])),
                    .lineChart(LineChart(title: "20 000 points (thinned for drawing), log scale", xLabel: "step", yLabel: "loss",
                                         series: [ChartSeries(name: "long run", values: long)], logY: true)),
                    .lineChart(LineChart(title: "A flat series and a single point", xLabel: "round", yLabel: "learning rate",
                                         series: [ChartSeries(name: "constant", values: [0.001, 0.001, 0.001, 0.001]),
                                                  ChartSeries(name: "one evaluation", points: [(2.5, 0.001)])])),
                    .lineChart(LineChart(title: "No evaluation yet", xLabel: "round", yLabel: "accuracy",
                                         series: [ChartSeries(name: "accuracy", values: [Double]())])),
                ]),
            ])
    }

    func testSampleReportIsWellFormedAndOptionallyWritten() throws {
        let html = Self.sampleReport().html()
        let svgs = svgElements(in: html)
        XCTAssertEqual(svgs.count, 8)
        for svg in svgs { _ = parseSVG(svg) }
        XCTAssertLessThan(html.utf8.count, 400_000, "the 20 000-point series is thinned")
        if let path = ProcessInfo.processInfo.environment["SILO_REPORT_DEMO"], !path.isEmpty {
            try Self.sampleReport().write(to: URL(fileURLWithPath: path))
            print("wrote \(path)")
            print(TextTable(headers: ["run", "accuracy", "s / step"],
                            rows: [["split", "0.705", "0.52"], ["centralized", "0.715", "0.49"]]).render())
        }
    }
}
