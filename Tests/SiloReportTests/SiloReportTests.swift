import XCTest
@testable import SiloReport
