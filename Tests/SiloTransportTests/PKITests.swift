import Foundation
import X509
import XCTest
@testable import SiloTransport

/// `silo pki init` / `issue`: the files, names, key permissions and chains.
final class PKITests: XCTestCase {
    func testInitWritesTheCAServerAndClientsSignedByTheCA() async throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("silo-pki-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: folder) }
        let pki = try PKI.initialize(at: folder, clients: 2, hosts: ["silo.example.org", "10.0.0.7"])
        for name in ["ca", "server", "client-1", "client-2"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: folder.appendingPathComponent("\(name).pem").path), name)
            let attributes = try FileManager.default.attributesOfItem(atPath: folder.appendingPathComponent("\(name).key").path)
            XCTAssertEqual((attributes[.posixPermissions] as? NSNumber)?.intValue, 0o600, "\(name).key readable by its owner only")
        }
        let ca = try pki.loadCertificate(pki.caCertificate)
        let server = try pki.loadCertificate(pki.certificate("server"))
        XCTAssertEqual(PKI.names(of: server), ["server", "localhost", "silo.example.org"])
        let alternatives = try XCTUnwrap(try server.extensions.subjectAlternativeNames)
        XCTAssertTrue(alternatives.contains(.ipAddress(.init(contentBytes: [127, 0, 0, 1]))))
        XCTAssertTrue(alternatives.contains(.ipAddress(.init(contentBytes: [10, 0, 0, 7]))))
        XCTAssertEqual(PKI.names(of: try pki.loadCertificate(pki.certificate("client-2"))), ["client-2"])

        // Each certificate chains to the CA (RFC 5280 path validation).
        var verifier = Verifier(rootCertificates: CertificateStore([ca])) { RFC5280Policy() }
        for name in ["server", "client-1", "client-2"] {
            let result = await verifier.validate(leaf: try pki.loadCertificate(pki.certificate(name)), intermediates: CertificateStore())
            guard case .validCertificate = result else { return XCTFail("\(name): \(result)") }
        }

        XCTAssertThrowsError(try PKI.initialize(at: folder, clients: 1)) { XCTAssertTrue("\($0)".contains("exists already")) }
        try pki.issue(name: "hospital-b")
        XCTAssertEqual(PKI.names(of: try pki.loadCertificate(pki.certificate("hospital-b"))), ["hospital-b"])
        XCTAssertThrowsError(try pki.issue(name: "hospital-b")) { XCTAssertTrue("\($0)".contains("exists already")) }
        XCTAssertThrowsError(try pki.issue(name: "../escape")) { XCTAssertTrue("\($0)".contains("letters, digits")) }
    }
}
