import Foundation
import XCTest
@testable import SiloReport

/// A clock that advances by a fixed step each time it is read.
private final class SteppingClock: @unchecked Sendable {
    private let lock = NSLock()
    private var time = 0.0
    private let step: Double

    init(step: Double) { self.step = step }

    func read() -> Double {
        lock.lock()
        defer { lock.unlock() }
        let now = time
        time += step
        return now
    }
}

final class ProgressLineTests: XCTestCase {
    private func capture(isTerminal: Bool, clockStep: Double, total: Int, _ body: (ProgressLine) -> Void) -> String {
        let pipe = Pipe()
        let clock = SteppingClock(step: clockStep)
        let progress = ProgressLine(total: total, label: "train", output: pipe.fileHandleForWriting,
                                    isTerminal: isTerminal, clock: { clock.read() })
        body(progress)
        try? pipe.fileHandleForWriting.close()
        return String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    }

    func testPlainLinesEveryTenthInLogs() {
        // The clock reads 0 at creation and 1, 2, 3, … at each update: after step i, i seconds
        // have passed, so the estimate left is i / i × (20 − i) = 20 − i seconds.
        let output = capture(isTerminal: false, clockStep: 1, total: 20) { progress in
            for step in 1...20 {
                progress.update(completed: step, fields: [("loss", String(format: "%.3f", 2.0 - 0.05 * Double(step))), ("step", "1.0s")])
            }
            progress.finish()
        }
        let lines = output.split(separator: "\n", omittingEmptySubsequences: false)
        XCTAssertEqual(lines.count, 11, output)  // 10 lines and the empty string after the last newline
        XCTAssertEqual(lines[0], "train [###...........................]  2/20 loss 1.900 step 1.0s eta 18s")
        XCTAssertEqual(lines[4], "train [###############...............] 10/20 loss 1.500 step 1.0s eta 10s")
        XCTAssertEqual(lines[9], "train [##############################] 20/20 loss 1.000 step 1.0s done in 20s")
        XCTAssertFalse(output.contains("\r"))
    }

    func testFinishWritesTheLastStateWhenItWasNotPrinted() {
        let output = capture(isTerminal: false, clockStep: 1, total: 100) { progress in
            progress.update(completed: 5, fields: [])
            progress.finish(fields: [("loss", "0.5")])
            progress.update(completed: 50, fields: [])  // ignored after finish
        }
        XCTAssertEqual(output, "train [#.............................]   5/100 loss 0.5 eta 38s\n")
    }

    func testTerminalRedrawsInPlaceAtMostTenTimesASecond() {
        // 100 updates 0.01 s apart (one second): about ten redraws, plus the final one.
        let output = capture(isTerminal: true, clockStep: 0.01, total: 100) { progress in
            for step in 1...100 { progress.update(completed: step, fields: [("loss", "1.0")]) }
            progress.finish()
        }
        let draws = output.components(separatedBy: "\r").count - 1
        XCTAssertGreaterThanOrEqual(draws, 10)
        XCTAssertLessThanOrEqual(draws, 13)
        XCTAssertTrue(output.hasSuffix("100/100 loss 1.0 done in 1.0s\u{1B}[K\n"), output.debugDescription)
        XCTAssertEqual(output.components(separatedBy: "\n").count, 2, "one line, ended once")
    }

    func testDurations() {
        XCTAssertEqual(formatDuration(0.52), "0.5s")
        XCTAssertEqual(formatDuration(31.2), "31s")
        XCTAssertEqual(formatDuration(125), "2m05s")
        XCTAssertEqual(formatDuration(3725), "1h02m")
    }
}
