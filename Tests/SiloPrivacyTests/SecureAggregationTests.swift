import Crypto
import Foundation
import XCTest
@testable import SiloPrivacy

final class SecureAggregationTests: XCTestCase {
    struct Run { var clients: [SecureAggregationClient]; var server: SecureAggregationServer; var inbox: [UInt32: [UInt32: Data]] }

    func makeConfiguration(length: Int, round: UInt64 = 1) throws -> SecureAggregationConfiguration {
        let encoding = try SecureAggregationEncoding(scale: 65536, clippingRange: 4, maximumClients: 5)
        return try SecureAggregationConfiguration(round: round, threshold: 3, clientCount: 5, encoding: encoding, vectorLength: length)
    }

    func setUp(_ configuration: SecureAggregationConfiguration) throws -> Run {
        var clients = (0..<5).map { SecureAggregationClient(clientID: UInt32($0), configuration: configuration) }
        var server = SecureAggregationServer(configuration: configuration)
        for i in clients.indices { try server.receive(clients[i].advertise()) }
        let roster = try server.finishAdvertising()
        for i in clients.indices { try server.receive(clients[i].shareKeys(roster: roster)) }
        let inbox = try server.finishSharing()
        return Run(clients: clients, server: server, inbox: inbox)
    }

    func vectors(_ count: Int, length: Int, seed: UInt64) -> [[Float]] {
        var state = seed
        func next() -> Float { state = state &* 6364136223846793005 &+ 1442695040888963407; return Float(state >> 40) / Float(1 << 24) * 4 - 2 }
        return (0..<count).map { _ in (0..<length).map { _ in next() } }
    }

    /// Runs the protocol; clients in `dropBefore` never send masked inputs; those in `dropAfter` do not answer unmasking.
    func aggregate(_ inputs: [[Float]], dropBefore: Set<UInt32> = [], dropAfter: Set<UInt32> = []) throws -> [UInt32] {
        var run = try setUp(makeConfiguration(length: inputs[0].count))
        for i in run.clients.indices where !dropBefore.contains(UInt32(i)) {
            try run.server.receive(run.clients[i].maskedInput(shares: run.inbox[UInt32(i)] ?? [:], vector: inputs[i]))
        }
        let request = try run.server.finishCollection()
        for i in run.clients.indices where request.survivors.contains(UInt32(i)) && !dropAfter.contains(UInt32(i)) {
            try run.server.receive(run.clients[i].unmask(request))
        }
        return try run.server.finish()
    }

    func testExactSumOfFiveClients() throws {
        let inputs = vectors(5, length: 1000, seed: 1)
        let encoding = try makeConfiguration(length: 1000).encoding
        let sum = try aggregate(inputs)
        var expected = [Int64](repeating: 0, count: 1000)
        for v in inputs { for (i, w) in encoding.encode(v).enumerated() { expected[i] += Int64(Int32(bitPattern: w)) } }
        XCTAssertEqual(encoding.decodeIntegers(sum).map { Int64($0) }, expected)
        let decoded = encoding.decode(sum)
        for i in 0..<1000 {
            let floatSum = inputs.reduce(Float(0)) { $0 + $1[i] }
            XCTAssertEqual(decoded[i], floatSum, accuracy: 5 * 0.5 / encoding.scale + 1e-5)
        }
    }

    func testDropoutAfterSendingRecoversAllFive() throws {
        let inputs = vectors(5, length: 200, seed: 2)
        let encoding = try makeConfiguration(length: 200).encoding
        let sum = try aggregate(inputs, dropAfter: [2])
        let expected = (0..<200).map { i in inputs.reduce(Int32(0)) { $0 &+ Int32(bitPattern: encoding.encode([$1[i]])[0]) } }
        XCTAssertEqual(encoding.decodeIntegers(sum), expected)
    }

    func testDropoutBeforeSendingRecoversSurvivors() throws {
        let inputs = vectors(5, length: 200, seed: 3)
        let encoding = try makeConfiguration(length: 200).encoding
        let sum = try aggregate(inputs, dropBefore: [3])
        let expected = (0..<200).map { i in [0, 1, 2, 4].reduce(Int32(0)) { $0 &+ Int32(bitPattern: encoding.encode([inputs[$1][i]])[0]) } }
        XCTAssertEqual(encoding.decodeIntegers(sum), expected)
    }

    func testTooFewSurvivorsFailsClearly() throws {
        let inputs = vectors(5, length: 10, seed: 4)
        XCTAssertThrowsError(try aggregate(inputs, dropAfter: [0, 1, 2])) { error in
            let e = error as? SecureAggregationError
            XCTAssertEqual(e?.code, .tooFewSurvivors)
            XCTAssertEqual(e?.message, "cannot unmask: 2 of 5 clients answered, threshold is 3")
        }
    }

    func chiSquareTopByte(_ words: [UInt32]) -> Double {
        var bins = [Int](repeating: 0, count: 256)
        for w in words { bins[Int(w >> 24)] += 1 }
        let expected = Double(words.count) / 256
        return bins.reduce(0) { $0 + pow(Double($1) - expected, 2) / expected }
    }

    func testMaskedVectorsLookUniform() throws {
        // 256 bins, 255 degrees of freedom: the p = 0.001 critical value is 330.5.
        var run = try setUp(makeConfiguration(length: 100_000))
        let zeros = [Float](repeating: 0, count: 100_000)
        let constant = [Float](repeating: 1, count: 100_000)
        let masked0 = try run.clients[0].maskedInput(shares: run.inbox[0] ?? [:], vector: zeros)
        let masked1 = try run.clients[1].maskedInput(shares: run.inbox[1] ?? [:], vector: constant)
        XCTAssertLessThan(chiSquareTopByte(masked0.words), 330.5)
        XCTAssertLessThan(chiSquareTopByte(masked1.words), 330.5)
        // The test can fail: the unmasked encoding of a constant is one bin.
        XCTAssertGreaterThan(chiSquareTopByte(run.clients[1].configuration.encoding.encode(constant)), 330.5)
    }

    func testTamperedShareIsRejected() throws {
        var run = try setUp(makeConfiguration(length: 4))
        var inbox = run.inbox[0] ?? [:]
        var bytes = [UInt8](inbox[1] ?? Data()); bytes[20] ^= 1; inbox[1] = Data(bytes)
        XCTAssertThrowsError(try run.clients[0].maskedInput(shares: inbox, vector: [0, 0, 0, 0])) { error in
            XCTAssertEqual((error as? SecureAggregationError)?.code, .tamperedShare)
        }
    }

    func testReplayedMaskedInputFromPreviousRoundIsRejected() throws {
        var old = try setUp(makeConfiguration(length: 4, round: 1))
        let stale = try old.clients[0].maskedInput(shares: old.inbox[0] ?? [:], vector: [1, 2, 3, 4])
        var current = try setUp(makeConfiguration(length: 4, round: 2))
        XCTAssertThrowsError(try current.server.receive(stale)) { XCTAssertEqual(($0 as? SecureAggregationError)?.code, .replayedMessage) }
        let fresh = try current.clients[0].maskedInput(shares: current.inbox[0] ?? [:], vector: [1, 2, 3, 4])
        try current.server.receive(fresh)
        XCTAssertThrowsError(try current.server.receive(fresh)) { XCTAssertEqual(($0 as? SecureAggregationError)?.code, .duplicateMessage) }
    }

    func testConflictingRevealAndConfigurationChecks() throws {
        var run = try setUp(makeConfiguration(length: 2))
        _ = try run.clients[0].maskedInput(shares: run.inbox[0] ?? [:], vector: [0, 0])
        let bad = SecureAggregationUnmaskRequest(round: 1, survivors: [0, 1, 2], dropped: [2])
        XCTAssertThrowsError(try run.clients[0].unmask(bad)) { XCTAssertEqual(($0 as? SecureAggregationError)?.code, .conflictingReveal) }
        XCTAssertThrowsError(try SecureAggregationEncoding(scale: 16777216, clippingRange: 100, maximumClients: 5))
        let encoding = try SecureAggregationEncoding(scale: 65536, clippingRange: 4, maximumClients: 5)
        XCTAssertThrowsError(try SecureAggregationConfiguration(round: 1, threshold: 2, clientCount: 5, encoding: encoding, vectorLength: 1))
        XCTAssertNoThrow(try SecureAggregationConfiguration(round: 1, threshold: 2, clientCount: 5, encoding: encoding, vectorLength: 1, allowMinorityThreshold: true))
    }

    // MARK: outside reference (Scripts/fixtures/secagg.py, Python cryptography)

    struct Fixture: Decodable {
        struct Shamir: Decodable { let elements: [UInt64]; let threshold: Int; let coefficients: [[UInt64]]; let shares: [SecureAggregationShamir.Share]; let subset_x: [UInt64]; let reconstructed: [UInt64]; let secret: String }
        let private_a: String, public_a: String, private_b: String, public_b: String, shared_secret: String, info: String, seed: String
        let keystream_words: [UInt32]
        let shamir: Shamir
    }

    func hex(_ s: String) -> Data { Data(stride(from: 0, to: s.count, by: 2).map { UInt8(s.dropFirst($0).prefix(2), radix: 16) ?? 0 }) }

    func testMatchesPythonCryptography() throws {
        let url = try XCTUnwrap(Bundle.module.url(forResource: "Fixtures/secagg", withExtension: "json"))
        let f = try JSONDecoder().decode(Fixture.self, from: Data(contentsOf: url))
        let a = try Curve25519.KeyAgreement.PrivateKey(rawRepresentation: hex(f.private_a))
        let b = try Curve25519.KeyAgreement.PrivateKey(rawRepresentation: hex(f.private_b))
        XCTAssertEqual(a.publicKey.rawRepresentation, hex(f.public_a))
        XCTAssertEqual(b.publicKey.rawRepresentation, hex(f.public_b))
        let shared = try a.sharedSecretFromKeyAgreement(with: b.publicKey)
        XCTAssertEqual(shared.withUnsafeBytes { Data($0) }, hex(f.shared_secret))
        XCTAssertEqual(SecureAggregationPseudorandom.maskInfo(round: 7, 3, 1), hex(f.info))
        let seed = try SecureAggregationPseudorandom.seed(privateKey: b, peerPublicKey: a.publicKey, info: hex(f.info))
        XCTAssertEqual(seed.withUnsafeBytes { Data($0) }, hex(f.seed))
        XCTAssertEqual(SecureAggregationPseudorandom.words(seed: seed, count: f.keystream_words.count), f.keystream_words)
        let s = f.shamir
        XCTAssertEqual(SecureAggregationShamir.elements(of: [UInt8](hex(s.secret))), s.elements)
        XCTAssertEqual(SecureAggregationShamir.bytes(of: s.elements, byteCount: 32), [UInt8](hex(s.secret)))
        XCTAssertEqual(SecureAggregationShamir.split(elements: s.elements, threshold: s.threshold, shareCount: s.shares.count, coefficients: s.coefficients), s.shares)
        let subset = s.subset_x.compactMap { x in s.shares.first { $0.x == x } }
        XCTAssertEqual(SecureAggregationShamir.reconstruct(subset), s.reconstructed)
        XCTAssertNotEqual(SecureAggregationShamir.reconstruct(Array(subset.prefix(2))), s.reconstructed)
    }

    func testCostOfFiveClientsWithHundredThousandParameters() throws {
        let inputs = vectors(5, length: 100_000, seed: 9)
        let start = Date()
        _ = try aggregate(inputs, dropAfter: [4])
        print("secure aggregation, 5 clients x 100000 parameters, 1 dropout: \(Date().timeIntervalSince(start)) s")
    }
}
