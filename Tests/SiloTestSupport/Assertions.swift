import XCTest

/// Asserts that two arrays agree within `relative` (of max(1e-6, |expected|)) plus `absolute`,
/// returning the largest absolute error.
@discardableResult
public func assertClose(_ actual: [Float], _ expected: [Float], relative: Float = 1e-4, absolute: Float = 1e-5,
                 _ message: String = "", file: StaticString = #filePath, line: UInt = #line) -> Float {
    XCTAssertEqual(actual.count, expected.count, "\(message): element counts differ", file: file, line: line)
    var maximumError: Float = 0
    for (index, (a, e)) in zip(actual, expected).enumerated() {
        let error = abs(a - e)
        maximumError = max(maximumError, error)
        if !(error <= absolute + relative * abs(e)) {
            XCTFail("\(message): element \(index): \(a) vs expected \(e) (error \(error))", file: file, line: line)
            return maximumError
        }
    }
    return maximumError
}
