import Crypto
import Foundation
import SwiftASN1
import X509

/// An error of the certificate folder: a missing or unreadable file, a certificate that is not what it
/// must be. The message names the file and says how to fix it.
public struct PKIError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// The certificates of one Silo deployment, in one folder (`silo pki init DIR`):
///
/// ```
/// DIR/ca.pem, DIR/ca.key             the deployment's CA (P-256; keep ca.key on the server's machine)
/// DIR/server.pem, DIR/server.key     the server (SAN: localhost, 127.0.0.1, each --host)
/// DIR/client-I.pem, DIR/client-I.key each client (CN and SAN DNS name client-I)
/// ```
///
/// Every certificate is ECDSA P-256 / SHA-256, signed by the CA, and carries its name as the subject's
/// common name and as a DNS subject alternative name; keys are PKCS#8 PEM files readable by the owner only.
public struct PKI: Sendable {
    public let directory: URL

    public init(directory: URL) {
        self.directory = directory
    }

    public var caCertificate: URL { directory.appendingPathComponent("ca.pem") }
    public var caKey: URL { directory.appendingPathComponent("ca.key") }
    public func certificate(_ name: String) -> URL { directory.appendingPathComponent("\(name).pem") }
    public func key(_ name: String) -> URL { directory.appendingPathComponent("\(name).key") }

    /// Creates the CA, the server's certificate and `clients` client certificates.
    /// - Parameters:
    ///   - hosts: names and IP addresses the server is reached by, besides localhost and 127.0.0.1.
    /// - Throws: ``PKIError`` if `DIR/ca.pem` exists already (a second CA would orphan every issued
    ///   certificate) or a file cannot be written.
    @discardableResult
    public static func initialize(at directory: URL, clients: Int, hosts: [String] = [], validDays: Int = 825) throws -> PKI {
        let pki = PKI(directory: directory)
        guard !FileManager.default.fileExists(atPath: pki.caCertificate.path) else {
            throw PKIError("\(pki.caCertificate.path) exists already: use `silo pki issue` to add certificates, or choose an empty folder")
        }
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        } catch {
            throw PKIError("cannot create \(directory.path): \(error.localizedDescription)")
        }
        let caKey = P256.Signing.PrivateKey()
        let caName = try DistinguishedName {
            OrganizationName("Silo")
            CommonName("Silo deployment CA")
        }
        let now = Date()
        let caPublicKey = Certificate.PublicKey(caKey.publicKey)
        let ca = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: caPublicKey,
            notValidBefore: now.addingTimeInterval(-3600), notValidAfter: now.addingTimeInterval(Double(validDays) * 86400),
            issuer: caName, subject: caName, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
                SubjectKeyIdentifier(hash: caPublicKey)
            },
            issuerPrivateKey: Certificate.PrivateKey(caKey))
        try write(try ca.serializeAsPEM().pemString, to: pki.caCertificate, secret: false)
        try write(caKey.pemRepresentation, to: pki.caKey, secret: true)
        try pki.issue(name: "server", hosts: ["localhost", "127.0.0.1"] + hosts, validDays: validDays)
        for index in 0..<clients {
            try pki.issue(name: "client-\(index + 1)", validDays: validDays)
        }
        return pki
    }

    /// Issues `DIR/NAME.pem` and `DIR/NAME.key`, signed by the folder's CA.
    /// - Parameters:
    ///   - name: the certificate's name (common name and DNS SAN): `server`, `client-3`, `hospital-a`.
    ///   - hosts: further SAN entries (DNS names, or IPv4/IPv6 addresses) — for a server.
    /// - Throws: ``PKIError`` for a missing CA key, an existing certificate of that name, an invalid name.
    public func issue(name: String, hosts: [String] = [], validDays: Int = 825) throws {
        guard !name.isEmpty, name.utf8.count <= 64,
              name.unicodeScalars.allSatisfy({ CharacterSet.alphanumerics.contains($0) || "-_.".unicodeScalars.contains($0) }) else {
            throw PKIError("certificate name '\(name)': use 1–64 letters, digits, '-', '_' or '.'")
        }
        guard !FileManager.default.fileExists(atPath: certificate(name).path) else {
            throw PKIError("\(certificate(name).path) exists already: choose another name or remove the old pair")
        }
        let ca = try loadCertificate(caCertificate)
        let caKeyPEM = try readText(caKey, what: "the CA key (issue certificates on the machine that ran `silo pki init`)")
        let caPrivateKey: P256.Signing.PrivateKey
        do {
            caPrivateKey = try P256.Signing.PrivateKey(pemRepresentation: caKeyPEM)
        } catch {
            throw PKIError("\(caKey.path) is not a P-256 private key in PEM: \(error)")
        }
        let key = P256.Signing.PrivateKey()
        let publicKey = Certificate.PublicKey(key.publicKey)
        var alternativeNames: [GeneralName] = [.dnsName(name)]
        for host in hosts where host != name {
            if let address = PKI.ipAddressBytes(host) {
                alternativeNames.append(.ipAddress(ASN1OctetString(contentBytes: ArraySlice(address))))
            } else {
                alternativeNames.append(.dnsName(host))
            }
        }
        let subject = try DistinguishedName {
            OrganizationName("Silo")
            CommonName(name)
        }
        let now = Date()
        let caPublicKey = Certificate.PublicKey(caPrivateKey.publicKey)
        let certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: publicKey,
            notValidBefore: now.addingTimeInterval(-3600), notValidAfter: now.addingTimeInterval(Double(validDays) * 86400),
            issuer: ca.subject, subject: subject, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                try ExtendedKeyUsage([.serverAuth, .clientAuth])
                SubjectAlternativeNames(alternativeNames)
                SubjectKeyIdentifier(hash: publicKey)
                AuthorityKeyIdentifier(keyIdentifier: SubjectKeyIdentifier(hash: caPublicKey).keyIdentifier)
            },
            issuerPrivateKey: Certificate.PrivateKey(caPrivateKey))
        try PKI.write(try certificate.serializeAsPEM().pemString, to: self.certificate(name), secret: false)
        try PKI.write(key.pemRepresentation, to: self.key(name), secret: true)
    }

    /// The certificate in a PEM file.
    /// - Throws: ``PKIError`` naming the file.
    public func loadCertificate(_ url: URL) throws -> Certificate {
        let text = try readText(url, what: "a certificate")
        do {
            return try Certificate(pemEncoded: text)
        } catch {
            throw PKIError("\(url.path) is not a PEM certificate: \(error)")
        }
    }

    /// Checks that the files of `name` (and the CA certificate) are present.
    /// - Throws: ``PKIError`` naming the missing file and the command that makes it.
    public func requireFiles(for name: String) throws {
        for url in [caCertificate, certificate(name), key(name)] where !FileManager.default.isReadableFile(atPath: url.path) {
            throw PKIError("\(url.path) is missing or unreadable: run `silo pki init \(directory.path)` (or `silo pki issue --pki \(directory.path) --name \(name)`) and copy the files here")
        }
    }

    /// The names a certificate is issued to: its subject's common names, then its DNS subject
    /// alternative names.
    public static func names(of certificate: Certificate) -> [String] {
        var names: [String] = []
        for rdn in certificate.subject {
            for attribute in rdn where attribute.type == .RDNAttributeType.commonName {
                if let value = String(attribute.value) { names.append(value) }
            }
        }
        if let alternatives = try? certificate.extensions.subjectAlternativeNames {
            for case .dnsName(let name) in alternatives where !names.contains(name) { names.append(name) }
        }
        return names
    }

    private func readText(_ url: URL, what: String) throws -> String {
        do {
            return try String(contentsOf: url, encoding: .utf8)
        } catch {
            throw PKIError("cannot read \(what) from \(url.path): \(error.localizedDescription)")
        }
    }

    private static func write(_ text: String, to url: URL, secret: Bool) throws {
        let created = FileManager.default.createFile(atPath: url.path, contents: Data(text.utf8),
                                                     attributes: [.posixPermissions: secret ? 0o600 : 0o644])
        guard created else { throw PKIError("cannot write \(url.path)") }
    }

    /// The bytes of an IPv4 or IPv6 address literal; nil for a host name.
    static func ipAddressBytes(_ text: String) -> [UInt8]? {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            return withUnsafeBytes(of: &v4) { Array($0) }
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 {
            return withUnsafeBytes(of: &v6) { Array($0) }
        }
        return nil
    }
}
