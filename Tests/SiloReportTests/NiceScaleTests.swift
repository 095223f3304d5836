import XCTest
@testable import SiloReport

/// Nice ticks against cases worked out by hand: step = smallest of {1, 2, 5} × 10^k that is at
/// least range / 6; ticks = the multiples of the step inside the range.
final class NiceScaleTests: XCTestCase {
    private func assertTicks(_ lower: Double, _ upper: Double, step: Double, ticks: [Double], bounds: (Double, Double),
                             file: StaticString = #filePath, line: UInt = #line) {
        let scale = NiceScale(lower: lower, upper: upper)
        XCTAssertEqual(scale.step, step, accuracy: step * 1e-12, "step", file: file, line: line)
        XCTAssertEqual(scale.ticks.count, ticks.count, "ticks \(scale.ticks)", file: file, line: line)
        for (got, expected) in zip(scale.ticks, ticks) {
            XCTAssertEqual(got, expected, accuracy: step * 1e-9, "ticks \(scale.ticks)", file: file, line: line)
        }
        XCTAssertEqual(scale.niceLower, bounds.0, accuracy: step * 1e-9, "lower bound", file: file, line: line)
        XCTAssertEqual(scale.niceUpper, bounds.1, accuracy: step * 1e-9, "upper bound", file: file, line: line)
    }

    func testHandComputedCases() {
        // 0.74 / 6 = 0.123 -> 0.2
        assertTicks(0.13, 0.87, step: 0.2, ticks: [0.2, 0.4, 0.6, 0.8], bounds: (0, 1))
        // 100 / 6 = 16.7 -> 20
        assertTicks(0, 100, step: 20, ticks: [0, 20, 40, 60, 80, 100], bounds: (0, 100))
        // 299 / 6 = 49.8 -> 50
        assertTicks(1, 300, step: 50, ticks: [50, 100, 150, 200, 250, 300], bounds: (0, 300))
        // 0.05 / 6 = 0.0083 -> 0.01
        assertTicks(2.31, 2.36, step: 0.01, ticks: [2.31, 2.32, 2.33, 2.34, 2.35, 2.36], bounds: (2.31, 2.36))
        // 15.9 / 6 = 2.65 -> 5
        assertTicks(-3.7, 12.2, step: 5, ticks: [0, 5, 10], bounds: (-5, 15))
        // 96 800 / 6 = 16 133 -> 20 000
        assertTicks(1200, 98000, step: 20000, ticks: [20000, 40000, 60000, 80000], bounds: (0, 100000))
        // An empty range is widened by 10%: 4.5...5.5, 1 / 6 -> 0.2
        assertTicks(5, 5, step: 0.2, ticks: [4.6, 4.8, 5.0, 5.2, 5.4], bounds: (4.4, 5.6))
        // Zero is widened by 1: -1...1, 2 / 6 -> 0.5
        assertTicks(0, 0, step: 0.5, ticks: [-1, -0.5, 0, 0.5, 1], bounds: (-1, 1))
    }

    func testNiceStepIsExactAtPowersAndFactors() {
        XCTAssertEqual(NiceScale.niceStep(atLeast: 0.2), 0.2)
        XCTAssertEqual(NiceScale.niceStep(atLeast: 0.21), 0.5)
        XCTAssertEqual(NiceScale.niceStep(atLeast: 1), 1)
        XCTAssertEqual(NiceScale.niceStep(atLeast: 3), 5)
        XCTAssertEqual(NiceScale.niceStep(atLeast: 7), 10)
        XCTAssertEqual(NiceScale.niceStep(atLeast: 1000), 1000)
        XCTAssertEqual(NiceScale.niceStep(atLeast: 1.5e-7), 2e-7, accuracy: 1e-20)
    }

    func testTickLabels() {
        let unit = NiceScale(lower: 0.13, upper: 0.87)
        XCTAssertEqual(unit.axisTicks.map(unit.label), ["0", "0.2", "0.4", "0.6", "0.8", "1.0"])
        let large = NiceScale(lower: 1200, upper: 98000)
        XCTAssertEqual(large.ticks.map(large.label), ["20k", "40k", "60k", "80k"])
        let fine = NiceScale(lower: 2.31, upper: 2.36)
        XCTAssertEqual(fine.label(2.33), "2.33")
        let steps = NiceScale(lower: 1, upper: 300)
        XCTAssertEqual(steps.label(150), "150")
        // Learning-rate sized ticks stay in fixed point and distinct (step 5e-5).
        let small = NiceScale(lower: 0.0009, upper: 0.0011)
        XCTAssertEqual(small.axisTicks.map(small.label), ["0.00090", "0.00095", "0.00100", "0.00105", "0.00110"])
        let tiny = NiceScale(lower: 1.02e-7, upper: 1.08e-7)
        XCTAssertEqual(tiny.label(1.05e-7), "1.05e-7")
        XCTAssertEqual(formatValue(1.23456), "1.235")
        XCTAssertEqual(formatValue(0.5), "0.5")
        XCTAssertEqual(formatValue(12345), "12345")
        XCTAssertEqual(formatValue(0.0002), "2e-4")
        XCTAssertEqual(formatValue(.nan), "NaN")
    }
}
