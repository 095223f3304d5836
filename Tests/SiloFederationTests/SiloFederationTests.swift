import XCTest
@testable import SiloFederation
