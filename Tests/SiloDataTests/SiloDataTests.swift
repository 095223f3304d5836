import XCTest
@testable import SiloData
