import Crypto
import _CryptoExtras
import Foundation
import Synchronization
import XCTest
@testable import SiloFederation

/// Sealed sessions: key schedule and AEAD against Python's `cryptography` (fixtures below, written by
/// Scripts/fixtures/sessions.py), round trips, and every rejection (another client, tampering, replay,
/// reordering, wrong type/round/step, garbage bytes), each leaving the session usable.
final class SessionTests: XCTestCase {
    // MARK: Reference values (Python `cryptography` 50.0.2)

    func testX25519KeysAndSealedPayloadsMatchPythonCryptography() throws {
        typealias F = SessionFixtures
        let clientKey = try Curve25519.KeyAgreement.PrivateKey(rawRepresentation: hex(F.x25519ClientPrivate))
        let serverKey = try Curve25519.KeyAgreement.PrivateKey(rawRepresentation: hex(F.x25519ServerPrivate))
        let shared = try clientKey.sharedSecretFromKeyAgreement(with: serverKey.publicKey)
        XCTAssertEqual(shared.withUnsafeBytes { Array($0) }, hex(F.x25519Shared), "X25519 shared secret")
        let cases: [(SessionCipher, String, String, String, String, String, String)] = [
            (.aesGCM, F.aesGCMTranscript, F.aesGCMClientToServerKey, F.aesGCMServerToClientKey, F.aesGCMHeader,
             F.aesGCMClientToServerSealed, F.aesGCMServerToClientSealed),
            (.chaChaPoly, F.chaChaPolyTranscript, F.chaChaPolyClientToServerKey, F.chaChaPolyServerToClientKey,
             F.chaChaPolyHeader, F.chaChaPolyClientToServerSealed, F.chaChaPolyServerToClientSealed),
        ]
        for (cipher, transcript, clientToServer, serverToClient, header, sealedUp, sealedDown) in cases {
            let handshake = try ClientHandshake(clientIdentity: F.identity, cipher: cipher, privateKey: clientKey)
            XCTAssertEqual(handshake.hello.keyMaterial, hex(F.x25519ClientPublic))
            let server = try ServerHandshake()
            let (reply, serverSession) = try server.respond(to: handshake.hello, authenticatedIdentity: F.identity,
                                                            ephemeralKey: serverKey, serverRandom: [])
            XCTAssertEqual(reply.keyMaterial, hex(F.x25519ServerPublic))
            let clientSession = try handshake.finish(with: reply)
            XCTAssertEqual(SessionKeySchedule.transcript(keyExchange: .x25519, cipher: cipher, clientIdentity: F.identity,
                                                         clientKeyMaterial: hex(F.x25519ClientPublic),
                                                         serverKeyMaterial: hex(F.x25519ServerPublic), serverStaticKey: []),
                           hex(transcript), "\(cipher) transcript")
            XCTAssertEqual(bytes(clientSession.sendKey), hex(clientToServer), "\(cipher) client → server key")
            XCTAssertEqual(bytes(clientSession.receiveKey), hex(serverToClient), "\(cipher) server → client key")
            XCTAssertEqual(bytes(serverSession.receiveKey), hex(clientToServer))
            XCTAssertEqual(bytes(serverSession.sendKey), hex(serverToClient))

            let plaintext = hex(F.plaintext)
            let up = try clientSession.seal(plaintext, type: .activations, round: F.round, step: F.step)
            XCTAssertEqual(up.header.encoded(), hex(header), "\(cipher) header (associated data)")
            XCTAssertEqual(Array(up.ciphertext) + Array(up.tag), hex(sealedUp), "\(cipher) client → server ciphertext | tag")
            XCTAssertEqual(try serverSession.open(up, type: .activations, round: F.round, step: F.step), plaintext)
            let down = try serverSession.seal(plaintext, type: .activations, round: F.round, step: F.step)
            XCTAssertEqual(Array(down.ciphertext) + Array(down.tag), hex(sealedDown), "\(cipher) server → client ciphertext | tag")
            XCTAssertEqual(try clientSession.open(down, type: .activations, round: F.round, step: F.step), plaintext)
        }
    }

    func testRSAOAEPSecretWrappedByPythonUnwrapsToTheSameKeys() throws {
        typealias F = SessionFixtures
        let privateKey = try _RSA.Encryption.PrivateKey(pemRepresentation: F.rsaPrivateKeyPEM)
        XCTAssertEqual(Array(privateKey.publicKey.derRepresentation), hex(F.rsaPublicKeyDER), "SubjectPublicKeyInfo DER")
        let server = try ServerHandshake(rsaPrivateKey: privateKey)
        let hello = ClientHello(keyExchange: .rsaOAEP, cipher: .aesGCM, clientIdentity: F.identity, keyMaterial: hex(F.rsaWrapped))
        let (reply, session) = try server.respond(to: ClientHello(serialized: hello.serialized()), authenticatedIdentity: F.identity,
                                                  ephemeralKey: nil, serverRandom: hex(F.rsaServerRandom))
        XCTAssertEqual(reply.keyMaterial, hex(F.rsaServerRandom))
        XCTAssertEqual(bytes(session.receiveKey), hex(F.rsaClientToServerKey), "client → server key after unwrapping")
        XCTAssertEqual(bytes(session.sendKey), hex(F.rsaServerToClientKey), "server → client key after unwrapping")
        let sealed = hex(F.rsaClientToServerSealed)
        let header = PayloadHeader(cipher: .aesGCM, direction: .clientToServer, type: .activations, sequence: 0,
                                   round: F.round, step: F.step, clientIdentity: F.identity)
        let payload = try SealedPayload(header: header, ciphertext: sealed.dropLast(16), tag: sealed.suffix(16))
        XCTAssertEqual(try session.open(payload, type: .activations, round: F.round, step: F.step), hex(F.plaintext))

        // A wrapped secret changed in one byte does not unwrap.
        var corrupted = hello
        corrupted.keyMaterial[100] ^= 1
        XCTAssertEqual(code { try server.respond(to: corrupted, authenticatedIdentity: F.identity) }, .keyExchangeFailed)
    }

    // MARK: Round trips

    func testRoundTripBothWaysForBothCiphersAndRSA() throws {
        let rsaKey = try _RSA.Encryption.PrivateKey(pemRepresentation: SessionFixtures.rsaPrivateKeyPEM)
        let server = try ServerHandshake(rsaPrivateKey: rsaKey)
        for cipher in SessionCipher.allCases {
            for rsa in [false, true] {
                let handshake = rsa
                    ? try ClientHandshake(clientIdentity: "clinic-7", cipher: cipher, serverRSAPublicKey: rsaKey.publicKey)
                    : try ClientHandshake(clientIdentity: "clinic-7", cipher: cipher)
                XCTAssertEqual(handshake.hello.keyExchange, rsa ? .rsaOAEP : .x25519)
                let (reply, serverSession) = try server.respond(to: ClientHello(serialized: handshake.hello.serialized()),
                                                                authenticatedIdentity: "clinic-7")
                let client = try handshake.finish(with: ServerHello(serialized: reply.serialized()))
                XCTAssertEqual(bytes(client.sendKey), bytes(serverSession.receiveKey))
                XCTAssertNotEqual(bytes(client.sendKey), bytes(client.receiveKey), "one key per direction")
                for (step, count) in [0, 1, 17, 4099].enumerated() {
                    let values = (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ step) }
                    let up = try client.seal(values, type: .activations, round: 1, step: step)
                    XCTAssertEqual(up.header.sequence, UInt64(step))
                    XCTAssertEqual(up.ciphertext.count, count)
                    XCTAssertNotEqual(Array(up.ciphertext), values.isEmpty ? [1] : values, "ciphertext is not the plaintext")
                    let wire = try SealedPayload(serialized: up.serialized())
                    XCTAssertEqual(wire, up)
                    XCTAssertEqual(up.serialized().count, up.byteCount)
                    XCTAssertEqual(up.byteCount, 33 + 8 + 8 + count + 16, "header 33 + identity 8 + length 8 + ciphertext + tag")
                    XCTAssertEqual(try serverSession.open(wire, type: .activations, round: 1, step: step), values)
                    let down = try values.withUnsafeBytes { try serverSession.seal($0, type: .serverOutput, round: 1, step: step) }
                    XCTAssertEqual(try client.open(down, type: .serverOutput, round: 1, step: step), values)
                }
                XCTAssertEqual(client.nextSendSequence, 4)
                XCTAssertEqual(serverSession.nextReceiveSequence, 4)
            }
        }
    }

    // MARK: Rejections

    func testPayloadSealedForClientACannotBeOpenedByClientBsSession() throws {
        let server = try ServerHandshake()
        let (clientA, serverA) = try pair("hospital-a", server: server)
        let (_, serverB) = try pair("hospital-b", server: server)
        let payload = try clientA.seal([1, 2, 3], type: .activations, round: 0, step: 0)
        let wrong = code { try serverB.open(payload, type: .activations, round: 0, step: 0) }
        XCTAssertEqual(wrong, .wrongClient)
        // A forged header naming client B: B's key does not authenticate it.
        var forgedHeader = payload.header
        forgedHeader.clientIdentity = "hospital-b"
        let forged = try SealedPayload(header: forgedHeader, ciphertext: payload.ciphertext, tag: payload.tag)
        let error = error { try serverB.open(forged, type: .activations, round: 0, step: 0) }
        XCTAssertEqual(error?.code, .authenticationFailed)
        XCTAssertTrue(error?.description.contains("authentication failed") ?? false, error?.description ?? "")
        XCTAssertTrue(error?.description.contains("hospital-b") ?? false, "the message names the session's client")
        XCTAssertEqual(serverB.nextReceiveSequence, 0)
        XCTAssertEqual(try serverA.open(payload, type: .activations, round: 0, step: 0), [1, 2, 3])
    }

    func testTamperedCiphertextTagAndHeaderFieldsAreRejected() throws {
        let (client, server) = try pair("hospital-a", server: ServerHandshake())
        let values = (0..<64).map { UInt8($0) }
        let payload = try client.seal(values, type: .activations, round: 3, step: 9)
        let wire = payload.serialized()
        let headerLength = 33 + 10, ciphertextStart = headerLength + 8
        func reopen(_ bytes: [UInt8]) -> SessionError.Code? {
            code { try server.open(SealedPayload(serialized: bytes), type: .activations, round: 3, step: 9) }
        }
        func flipped(_ index: Int, _ mask: UInt8 = 0x01) -> [UInt8] {
            var copy = wire
            copy[index] ^= mask
            return copy
        }
        XCTAssertEqual(reopen(flipped(ciphertextStart)), .authenticationFailed, "first ciphertext byte")
        XCTAssertEqual(reopen(flipped(ciphertextStart + 63, 0x80)), .authenticationFailed, "last ciphertext byte")
        XCTAssertEqual(reopen(flipped(wire.count - 1)), .authenticationFailed, "tag")
        XCTAssertEqual(reopen(flipped(7, 0x0B)), .authenticationFailed, "message type (activations → 10)")
        XCTAssertEqual(reopen(flipped(15)), .authenticationFailed, "sequence 0 → 1")
        XCTAssertEqual(reopen(flipped(23, 0x07)), .authenticationFailed, "round 3 → 4")
        XCTAssertEqual(reopen(flipped(31, 0x0F)), .authenticationFailed, "step 9 → 6")
        XCTAssertEqual(reopen(flipped(33 + 1)), .wrongClient, "identity byte")
        XCTAssertEqual(reopen(flipped(5, 0x03)), .unsupported, "cipher aes-gcm → chacha20-poly1305")
        XCTAssertEqual(reopen(flipped(6, 0x03)), .wrongDirection, "direction: reflected to the server as server → client")
        XCTAssertEqual(reopen(flipped(4, 0x02)), .unsupported, "version 1 → 3")
        XCTAssertEqual(reopen(flipped(0)), .malformed, "magic")
        // With the header changed consistently for the expected type/round/step, it still fails.
        var header = payload.header
        header.round = 4
        let moved = try SealedPayload(header: header, ciphertext: payload.ciphertext, tag: payload.tag)
        XCTAssertEqual(code { try server.open(moved, type: .activations, round: 4, step: 9) }, .authenticationFailed)
        // Nothing changed: the original opens.
        XCTAssertEqual(server.nextReceiveSequence, 0)
        XCTAssertEqual(try server.open(SealedPayload(serialized: wire), type: .activations, round: 3, step: 9), values)
    }

    func testReplayedAndReorderedPayloadsAreRejectedAndTheSessionCarriesOn() throws {
        let (client, server) = try pair("hospital-a", server: ServerHandshake(), cipher: .chaChaPoly)
        let sealed = try (0..<3).map { try client.seal([UInt8($0)], type: .outputGradients, round: 0, step: $0) }
        let outOfOrder = error { try server.open(sealed[1], type: .outputGradients, round: 0, step: 1) }
        XCTAssertEqual(outOfOrder?.code, .outOfOrder)
        XCTAssertTrue(outOfOrder?.description.contains("step 1") ?? false, outOfOrder?.description ?? "")
        XCTAssertEqual(try server.open(sealed[0], type: .outputGradients, round: 0, step: 0), [0])
        XCTAssertEqual(code { try server.open(sealed[0], type: .outputGradients, round: 0, step: 0) }, .replay)
        XCTAssertEqual(code { try server.open(sealed[2], type: .outputGradients, round: 0, step: 2) }, .outOfOrder)
        XCTAssertEqual(server.nextReceiveSequence, 1)
        XCTAssertEqual(try server.open(sealed[1], type: .outputGradients, round: 0, step: 1), [1])
        XCTAssertEqual(try server.open(sealed[2], type: .outputGradients, round: 0, step: 2), [2])
        XCTAssertEqual(code { try server.open(sealed[1], type: .outputGradients, round: 0, step: 1) }, .replay)
        XCTAssertEqual(code { try server.open(sealed[2], type: .outputGradients, round: 0, step: 2) }, .replay)
        let next = try client.seal([3], type: .outputGradients, round: 0, step: 3)
        XCTAssertEqual(try server.open(next, type: .outputGradients, round: 0, step: 3), [3])
    }

    func testWrongTypeRoundOrStepIsRejectedAndChangesNothing() throws {
        let (client, server) = try pair("hospital-a", server: ServerHandshake())
        let payload = try server.seal([9, 9], type: .activationGradients, round: 2, step: 5)
        XCTAssertEqual(code { try client.open(payload, type: .serverOutput, round: 2, step: 5) }, .unexpectedMessage)
        XCTAssertEqual(code { try client.open(payload, type: .activationGradients, round: 1, step: 5) }, .unexpectedMessage)
        let wrongStep = error { try client.open(payload, type: .activationGradients, round: 2, step: 6) }
        XCTAssertEqual(wrongStep?.code, .unexpectedMessage)
        XCTAssertEqual(wrongStep?.description,
                       "session of client \"hospital-a\": round 2, step 6, activation_gradients: received activation_gradients of round 2, step 5")
        XCTAssertEqual(client.nextReceiveSequence, 0)
        XCTAssertEqual(try client.open(payload, type: .activationGradients, round: 2, step: 5), [9, 9])
        // Reflected back to the side that sealed it.
        XCTAssertEqual(code { try server.open(payload, type: .activationGradients, round: 2, step: 5) }, .wrongDirection)
        XCTAssertEqual(MessageType(rawValue: 200).description, "message type 200")
    }

    func testSealingRefusesToPassTheLastSequenceNumber() throws {
        let (client, _) = try pair("hospital-a", server: ServerHandshake())
        client.setNextSendSequence(.max - 1)
        XCTAssertEqual(try client.seal([1], type: .control, round: 0, step: 0).header.sequence, .max - 1)
        XCTAssertEqual(try client.seal([1], type: .control, round: 0, step: 0).header.sequence, .max)
        XCTAssertNil(client.nextSendSequence)
        XCTAssertEqual(code { try client.seal([1], type: .control, round: 0, step: 0) }, .sequenceExhausted)
    }

    func testHandshakeRejections() throws {
        let server = try ServerHandshake(acceptedCiphers: [.aesGCM])
        let hello = try ClientHandshake(clientIdentity: "hospital-a").hello
        XCTAssertEqual(code { try server.respond(to: hello, authenticatedIdentity: "hospital-b") }, .invalidIdentity,
                       "the hello's self-reported identity must match the transport's")
        let chacha = try ClientHandshake(clientIdentity: "hospital-a", cipher: .chaChaPoly)
        XCTAssertEqual(code { try server.respond(to: chacha.hello, authenticatedIdentity: "hospital-a") }, .unsupported)
        let rsaKey = try _RSA.Encryption.PrivateKey(pemRepresentation: SessionFixtures.rsaPrivateKeyPEM)
        let rsaHello = try ClientHandshake(clientIdentity: "hospital-a", serverRSAPublicKey: rsaKey.publicKey).hello
        XCTAssertEqual(rsaHello.keyMaterial.count, 256)
        XCTAssertEqual(code { try server.respond(to: rsaHello, authenticatedIdentity: "hospital-a") }, .unsupported,
                       "RSA-OAEP without a server RSA key")
        XCTAssertEqual(code { try ClientHandshake(clientIdentity: "") }, .invalidIdentity)
        XCTAssertEqual(code { try ClientHandshake(clientIdentity: String(repeating: "é", count: 128)) }, .invalidIdentity)
        var lowOrder = hello
        lowOrder.keyMaterial = [UInt8](repeating: 0, count: 32)  // a small-order point: the shared secret would be 0
        XCTAssertEqual(code { try server.respond(to: lowOrder, authenticatedIdentity: "hospital-a") }, .keyExchangeFailed)
        let client = try ClientHandshake(clientIdentity: "hospital-a")
        let (reply, _) = try server.respond(to: client.hello, authenticatedIdentity: "hospital-a")
        var otherCipher = reply
        otherCipher.cipher = .chaChaPoly
        XCTAssertEqual(code { try client.finish(with: otherCipher) }, .unsupported)
        var otherClient = reply
        otherClient.clientIdentity = "hospital-b"
        XCTAssertEqual(code { try client.finish(with: otherClient) }, .invalidIdentity)
        var smallOrder = reply
        smallOrder.keyMaterial = [1] + [UInt8](repeating: 0, count: 31)  // u = 1 has order 4
        XCTAssertEqual(code { try client.finish(with: smallOrder) }, .keyExchangeFailed)
        // A reply made for another handshake gives keys that do not match: the first payload fails.
        let other = try ClientHandshake(clientIdentity: "hospital-a")
        let (_, serverSession) = try server.respond(to: other.hello, authenticatedIdentity: "hospital-a")
        let session = try client.finish(with: reply)
        let payload = try session.seal([1], type: .activations, round: 0, step: 0)
        XCTAssertEqual(code { try serverSession.open(payload, type: .activations, round: 0, step: 0) }, .authenticationFailed)
    }

    // MARK: Garbage

    /// Seeded random mutations of serialised hellos and payloads: decoding never crashes; it throws,
    /// or gives a value that serialises back to the same bytes; a mutated payload never opens, and
    /// the session still opens the original afterwards.
    func testRandomMutationsOfHandshakesAndPayloadsThrowOrRoundTrip() throws {
        var random = SplitMix64(seed: 0x5113_0005)
        let rsaKey = try _RSA.Encryption.PrivateKey(pemRepresentation: SessionFixtures.rsaPrivateKeyPEM)
        let server = try ServerHandshake(rsaPrivateKey: rsaKey)
        let client = try ClientHandshake(clientIdentity: "hospital-a")
        let rsaClient = try ClientHandshake(clientIdentity: "hospital-a", serverRSAPublicKey: rsaKey.publicKey)
        let (reply, serverSession) = try server.respond(to: client.hello, authenticatedIdentity: "hospital-a")
        let session = try client.finish(with: reply)
        let values = (0..<48).map { UInt8($0 * 5 % 256) }
        let payload = try session.seal(values, type: .activations, round: 1, step: 2).serialized()

        var decoded = (payload: 0, client: 0, server: 0), rsaResponses = 0
        for trial in 0..<3000 {
            let mutated = mutate(payload, &random)
            if let decodedPayload = try? SealedPayload(serialized: mutated) {
                decoded.payload += 1
                XCTAssertEqual(decodedPayload.serialized(), mutated, "trial \(trial): non-canonical payload decoding")
                XCTAssertThrowsError(try serverSession.open(decodedPayload, type: .activations, round: 1, step: 2),
                                     "trial \(trial): a mutated payload opened")
            }
            let helloSource = trial % 2 == 0 ? client.hello.serialized() : rsaClient.hello.serialized()
            let mutatedHello = mutate(helloSource, &random)
            if let hello = try? ClientHello(serialized: mutatedHello) {
                decoded.client += 1
                XCTAssertEqual(hello.serialized(), mutatedHello, "trial \(trial): non-canonical client hello decoding")
                // RSA decryption is slow in a debug build: try the first few only.
                if hello.keyExchange == .x25519 || rsaResponses < 40 {
                    rsaResponses += hello.keyExchange == .rsaOAEP ? 1 : 0
                    _ = try? server.respond(to: hello, authenticatedIdentity: "hospital-a")
                }
            }
            let mutatedReply = mutate(reply.serialized(), &random)
            if let answer = try? ServerHello(serialized: mutatedReply) {
                decoded.server += 1
                XCTAssertEqual(answer.serialized(), mutatedReply, "trial \(trial): non-canonical server hello decoding")
                _ = try? client.finish(with: answer)
            }
        }
        XCTAssertGreaterThan(decoded.payload, 100, "some mutations (inside the ciphertext) still decode")
        XCTAssertGreaterThan(decoded.client, 100)
        XCTAssertGreaterThan(decoded.server, 100)
        XCTAssertEqual(try serverSession.open(SealedPayload(serialized: payload), type: .activations, round: 1, step: 2), values)
        XCTAssertEqual(code { try SealedPayload(serialized: [UInt8]()) }, .malformed)
        XCTAssertEqual(code { try ClientHello(serialized: Array("SLCH".utf8)) }, .malformed)
    }

    // MARK: Concurrency

    func testOneTaskPerDirectionSealsAndOpensConcurrently() throws {
        let (client, server) = try pair("hospital-a", server: ServerHandshake())
        let count = 200
        let downstream = try (0..<count).map { try server.seal([UInt8($0 % 256), 1], type: .serverOutput, round: 0, step: $0) }
        let upstream = Mutex<[SealedPayload]>([])
        let opened = Mutex<[[UInt8]]>([])
        DispatchQueue.concurrentPerform(iterations: 2) { task in
            for step in 0..<count {
                if task == 0 {
                    if let payload = try? client.seal([UInt8(step % 256), 0], type: .activations, round: 0, step: step) {
                        upstream.withLock { $0.append(payload) }
                    }
                } else if let values = try? client.open(downstream[step], type: .serverOutput, round: 0, step: step) {
                    opened.withLock { $0.append(values) }
                }
            }
        }
        XCTAssertEqual(opened.withLock { $0 }, (0..<count).map { [UInt8($0 % 256), 1] })
        let sealed = upstream.withLock { $0 }
        XCTAssertEqual(sealed.map(\.header.sequence), (0..<count).map(UInt64.init))
        for (step, payload) in sealed.enumerated() {
            XCTAssertEqual(try server.open(payload, type: .activations, round: 0, step: step), [UInt8(step % 256), 0])
        }
    }

    // MARK: Throughput (not a timed test: skipped unless Benchmarks/seal.sh asks for it)

    /// Seal and open of 3 MiB (786,432 Float32 values) for both ciphers, in GB/s (10^9 bytes per second).
    /// Runs only with SILO_BENCHMARK_SEAL=1, in a release build: `Benchmarks/seal.sh`.
    func testSealThroughputBenchmark() throws {
        guard ProcessInfo.processInfo.environment["SILO_BENCHMARK_SEAL"] == "1" else {
            throw XCTSkip("throughput measurement: run Benchmarks/seal.sh (release build)")
        }
        let byteCount = 3 << 20, repeats = 40
        let values = (0..<(byteCount / 4)).map { Float($0 % 1000) * 0.001 }
        func rate(_ seconds: Double) -> String { String(format: "%6.2f GB/s", Double(byteCount * repeats) / seconds / 1e9) }
        func time(_ body: () throws -> Void) rethrows -> Double {
            let start = DispatchTime.now().uptimeNanoseconds
            try body()
            return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        }
        for cipher in SessionCipher.allCases {
            let (client, server) = try pair("hospital-a", server: ServerHandshake(), cipher: cipher)
            // warm-up
            let warm = try values.withUnsafeBytes { try client.seal($0, type: .activations, round: 0, step: 0) }
            _ = try server.openData(warm, type: .activations, round: 0, step: 0)
            var sealed: [SealedPayload] = []
            let sealSeconds = try time {
                for step in 1...repeats {
                    sealed.append(try values.withUnsafeBytes { try client.seal($0, type: .activations, round: 0, step: step) })
                }
            }
            var wire: [[UInt8]] = []
            let serializeSeconds = time { wire = sealed.map { $0.serialized() } }
            var decoded: [SealedPayload] = []
            let deserializeSeconds = try time { decoded = try wire.map { try SealedPayload(serialized: $0) } }
            let half = repeats / 2
            var checksum = 0
            let openDataSeconds = try time {
                for step in 1...half { checksum &+= try server.openData(decoded[step - 1], type: .activations, round: 0, step: step).count }
            } * 2
            let openSeconds = try time {
                for step in (half + 1)...repeats { checksum &+= try server.open(decoded[step - 1], type: .activations, round: 0, step: step).count }
            } * 2
            XCTAssertEqual(checksum, byteCount * repeats)
            // swift-crypto alone, for the overhead of the session around it.
            let key = SymmetricKey(size: .bits256)
            let rawSeconds = try time {
                for _ in 0..<repeats {
                    _ = try values.withUnsafeBytes { raw -> Data? in
                        switch cipher {
                        case .aesGCM: return try AES.GCM.seal(raw, using: key).combined
                        case .chaChaPoly: return try ChaChaPoly.seal(raw, using: key).combined
                        }
                    }
                }
            }
            print("seal-benchmark \(cipher.rawValue) 3 MiB: seal \(rate(sealSeconds)), open \(rate(openDataSeconds)) (Data), "
                  + "open \(rate(openSeconds)) ([UInt8]), serialize \(rate(serializeSeconds)), deserialize \(rate(deserializeSeconds)), "
                  + "swift-crypto seal alone \(rate(rawSeconds))")
        }
    }

    // MARK: Helpers

    private func pair(_ identity: String, server: ServerHandshake, cipher: SessionCipher = .aesGCM) throws
        -> (client: SecureSession, server: SecureSession) {
        let handshake = try ClientHandshake(clientIdentity: identity, cipher: cipher)
        let (reply, session) = try server.respond(to: handshake.hello, authenticatedIdentity: identity)
        return (try handshake.finish(with: reply), session)
    }

    private func error<T>(_ body: () throws -> T) -> SessionError? {
        do {
            _ = try body()
            XCTFail("expected a SessionError, got a result")
            return nil
        } catch let error as SessionError {
            return error
        } catch {
            XCTFail("expected a SessionError, got \(error)")
            return nil
        }
    }

    private func code<T>(_ body: () throws -> T) -> SessionError.Code? { error(body)?.code }

    private func bytes(_ key: SymmetricKey) -> [UInt8] { key.withUnsafeBytes { Array($0) } }

    private func hex(_ text: String) -> [UInt8] {
        let digits = Array(text.utf8)
        precondition(digits.count % 2 == 0, "hex string of odd length")
        func value(_ digit: UInt8) -> UInt8 { digit <= 57 ? digit - 48 : (digit | 0x20) - 87 }
        return stride(from: 0, to: digits.count, by: 2).map { value(digits[$0]) << 4 | value(digits[$0 + 1]) }
    }

    /// One random change: flip a bit, overwrite a byte, insert or delete a byte, truncate, or append.
    private func mutate(_ source: [UInt8], _ random: inout SplitMix64) -> [UInt8] {
        var bytes = source
        repeat {
            let position = Int(random.next() % UInt64(max(bytes.count, 1)))
            switch random.next() % 6 {
            case 0 where !bytes.isEmpty: bytes[position] ^= UInt8(1 << (random.next() % 8))
            case 1 where !bytes.isEmpty: bytes[position] = UInt8(truncatingIfNeeded: random.next())
            case 2: bytes.insert(UInt8(truncatingIfNeeded: random.next()), at: min(position, bytes.count))
            case 3 where !bytes.isEmpty: bytes.remove(at: position)
            case 4: bytes = Array(bytes.prefix(position))
            default: bytes += (0..<Int(random.next() % 9 + 1)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
            }
        } while bytes == source
        return bytes
    }
}

/// A small seeded generator (SplitMix64) for reproducible mutations.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

// BEGIN fixtures: Scripts/fixtures/sessions.py
// Generated; do not edit. Values from Python's `cryptography` (see the script's docstring).
enum SessionFixtures {
    static let identity = "hospital-a"
    static let round = 2
    static let step = 7
    static let plaintext = [
        "73696c6f2073657373696f6e20666978747572653a2000070e151c232a31383f464d545b626970777e858c939aa1a8af",
        "b6bdc4cbd2d9e0e7eef5fc",
    ].joined()
    static let x25519ClientPrivate = "fc0668694fc9fe88dcb1c3a0d1c13956b7725d4901a308fd3393db336a287de2"
    static let x25519ServerPrivate = "f04b3dae5b6868f16d2e047539da995d215d36dd7f04fb7da0d9be889c2bbaef"
    static let x25519ClientPublic = "482ec00b21c264ffb75f3f282dd5ad1447e835cd1ed3aff98f6048b8e05c5322"
    static let x25519ServerPublic = "987b0bb1b5968ffa15bc9991d6bc6a0464fbafbb3b43f2151cd482d772ebff0d"
    static let x25519Shared = "6c0d0702e57e43e7a51175cce93da893a8c3282ba261e5adbbf6b455c9558735"
    static let aesGCMTranscript = [
        "0000000f73696c6f2f76312f73657373696f6e0101010000000a686f73706974616c2d6100000020482ec00b21c264ff",
        "b75f3f282dd5ad1447e835cd1ed3aff98f6048b8e05c532200000020987b0bb1b5968ffa15bc9991d6bc6a0464fbafbb",
        "3b43f2151cd482d772ebff0d00000000",
    ].joined()
    static let aesGCMClientToServerKey = "363471c8239ac99854978ae6d80dd16f511cf017d461d12abd9665c8ab9957cb"
    static let aesGCMServerToClientKey = "0b2b0e3a2211757609d29e4414785b6094933c8c4f29b39eeec480f64381e432"
    static let aesGCMHeader = "534c5350010101010000000000000000000000000000000200000000000000070a686f73706974616c2d61"
    static let aesGCMClientToServerSealed = [
        "d3a8e522b94f9646c52d80b55118415f2655ba9294a9a9566be85673cf32dcfa81473e197b55d50e10670e8c7939b324",
        "633c47e10b99b300f1c1eff21747ad355ce390900e981e93d1161e",
    ].joined()
    static let aesGCMServerToClientSealed = [
        "26069006d40d9160692efc55cc00b73fb5ab4eda74bf920d73c057bd1c3e0324d0f2051334a61c801a1db16645b81d24",
        "f61af537fd28bd95544bd94d5f2ddecb0173a26c2dce24c9b45557",
    ].joined()
    static let chaChaPolyTranscript = [
        "0000000f73696c6f2f76312f73657373696f6e0101020000000a686f73706974616c2d6100000020482ec00b21c264ff",
        "b75f3f282dd5ad1447e835cd1ed3aff98f6048b8e05c532200000020987b0bb1b5968ffa15bc9991d6bc6a0464fbafbb",
        "3b43f2151cd482d772ebff0d00000000",
    ].joined()
    static let chaChaPolyClientToServerKey = "74d10a9465ba03223d71f84778103cc11e446fdfb635ed5f4217c481a3b87854"
    static let chaChaPolyServerToClientKey = "aaa62ea3e2c50cce9b4cd191159829d96af7bde1d57e908959104772a0e5ff40"
    static let chaChaPolyHeader = "534c5350010201010000000000000000000000000000000200000000000000070a686f73706974616c2d61"
    static let chaChaPolyClientToServerSealed = [
        "4c7c4997dc48de700f21d27f6ed0ae5edf96f2e2d749ca5e938cf91e48de22cfeedf44090851a6d3a66c806fcc684b0b",
        "c35eede72c4450037dca412f855dcb6830c5585690588b8254f6de",
    ].joined()
    static let chaChaPolyServerToClientSealed = [
        "5b5df2775542f49d88f091eb16b17b2f617e433cb98a4e36c60b5241e99e9c314525929779b916bf43d24f221d9894d6",
        "f895710e54de98cfe9357577d1f30e87a1dc2f1e2ec9309c7914ef",
    ].joined()
    static let rsaPrivateKeyPEM = """
        -----BEGIN PRIVATE KEY-----
        MIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQDEZGsa2fL36oLO
        aBJyR2pAPTHdAl1mU8i66+EdMSq/YTDvTOqIBo13Pu7KJMrk5AaTilTBOHY5A/pv
        I36LBcIX3uqJvFkmugBkegBkKTtGaVFhHGOKIR5bdHP9OJIO0w1Yr/Cx3BkUDTl4
        C5UjqtCOmYcZAuoPkLWfpcf4CTdz6gJ635/J2A+4pxgLXCzrfGerw7zE1m8AEeiU
        INd8iQMTyf15p8bfc2euS4hAdCWIVTDElnxvYsW0R8O3tFLE9BM0V8OVKQ1gJq8z
        5fsCgW7WeHdXfFTqmzwZnYexn6/X4MGk1Yj7m7gny10bLluGU4hUtwdJBuS5qqZr
        0NlIlP27AgMBAAECggEAIYnkoJlH3P63h/hN7iY0BvRsZ4nX2XnFdeaCczHKUxSN
        /s/r3X8A+bRNo0fVPnGSje+5uaWiyunbAs/U9HjvRJRVCWCY+PwaxQ3wsyo3bTbf
        Ju5qMVSmkoe4py3aA54XUWX6fOVRgxMfFVklBwpMw42EfMj6n93epnzxQXKRfcHT
        5nUYP3+Z3Pe9Pl9gAqq3QTs0Wv+Y75gQj1LqPOwTuppWhrf8PZofePPxXadczpMQ
        m8QNfMzS8bTrM874p8ZEnTHuC97q7BJLAi2jaXOPgY6PjOvHHPZK+UqvQwNOm0ku
        Jd7KqHRC5A+Ny1durW+WBU5qZCU3s8D5dSh8sq9iQQKBgQD3WkNM8PAFGmn/oNKQ
        sAuE5MvXfO0IWKzZz1pAqvpFnzKihw38fDZSFQpn4J2jyQw3Dx3lNPzf7Rjrwq8H
        Md95ZbHoKUAvdBH/r4lfHGF7ENbTu5KbFMoAhHxCEa3jlfYJRVQZCN9xt5FZcXzA
        C0G0+svvfIwUWQQ/OSnxVJ9jPwKBgQDLQhMcwsSxlN6fgR9U0fpECVYwh68e8O7Y
        Ebvwq1oGUJY7RD9TrwhzZqvwNkhztE8IX+i7zmHgsCEwsIiUEQAwU7aeK8AWlH5K
        Z80ExZOUIqIpqNQ5XF9qb9qgQaWjTOapY8jKXIby/RJDdZsNvJ521JoJSLzI2lJK
        4KECDDQShQKBgBUksBAJoFqvUVQ6iQU5JyLq88mtsg0+lzffE5Xnh5Ef9JIT/UwR
        ygrmJYePmaoAa3zhW+rVxq/VcoXklFWHG9UirjxsGkJ0J321oYZxxJtiaxqaNAPx
        mPrGWGDFZhnIHcnZFUE2kvMDf/cnTkSUMb+omHoWKVsr6MMGveEVHLK9AoGADMP1
        l1TULaL/6FyfryAQ67z6YMnkwbi4B3H1r8PTP5pIFSjQIV1Y1oaYPdnq6vlkDU6Y
        u1LW6tmk+/3aVhJLRL29NmnhAooI9HtYcPhHsIIMVTl5OrEGfRTRUkdNM9hclD7k
        GXF+ODyUrQ/x0QcLnML1eafL04GCsZkyA4LoslECgYBO3fBXxu9+dhIOthKQfM9/
        6dEo0DD5xb19S97u6WO3QlIb85IsKr9rY4BB0wawlEQoPN5InCdM2StXk7epbCJv
        TsF9CZcWrHgYDIZQzsF+ddNdo6YUrhOIzbW2Enkl96Vuccu9PxzROul55aXV2oSb
        SK+Mh8kJmLGLp1nsZVdOPA==
        -----END PRIVATE KEY-----
        """
    static let rsaPublicKeyDER = [
        "30820122300d06092a864886f70d01010105000382010f003082010a0282010100c4646b1ad9f2f7ea82ce681272476a",
        "403d31dd025d6653c8baebe11d312abf6130ef4cea88068d773eeeca24cae4e406938a54c138763903fa6f237e8b05c2",
        "17deea89bc5926ba00647a0064293b466951611c638a211e5b7473fd38920ed30d58aff0b1dc19140d39780b9523aad0",
        "8e99871902ea0f90b59fa5c7f8093773ea027adf9fc9d80fb8a7180b5c2ceb7c67abc3bcc4d66f0011e89420d77c8903",
        "13c9fd79a7c6df7367ae4b88407425885530c4967c6f62c5b447c3b7b452c4f4133457c395290d6026af33e5fb02816e",
        "d67877577c54ea9b3c199d87b19fafd7e0c1a4d588fb9bb827cb5d1b2e5b86538854b7074906e4b9aaa66bd0d94894fd",
        "bb0203010001",
    ].joined()
    static let rsaSecret = "7872b24628429f9b97c203805951770dcacda9783ad7bb0f75751d77e3294ca9"
    static let rsaServerRandom = "7e051090d6ec8b804d6e02115935e68cd97d449419e4998585b537952b5e9f70"
    static let rsaWrapped = [
        "0ca7fca2f34e8734582f689df416e1e7f07bfa92eba6b1eff565f956b1086d3d2947b544ea1157900576b18af590c1d6",
        "33e84c717e73e1e8da99c87484ec7cad3ff5384ee2cb4902e9359b8c8f728fcd9c726e572e5f0b54aa4953c97d108716",
        "90314017d9d50afbaade5cfba373522e36171a1e0451606db17da572de60805a888fe4f4a0b3d3b5aa6cb91d861a2427",
        "89090ee2f79f31e67ba5d93b9b2cd899e8c61ab77305f95b6de2f333eba73b0661bb0c1d358af1d0e8230394d93c4ee6",
        "eed136d7181e8cd3fbe7385fa871924155362bd4c9366111f0c2912668c1255f56fafff5bf2ea3bf719971a68a711540",
        "f7b4a0f41b2e02b6ab55352dd4fbf557",
    ].joined()
    static let rsaClientToServerKey = "13dea32f0027d6a540c77c06f924b0654e38e2c396ffa161d82d8dc23f0e5455"
    static let rsaServerToClientKey = "687147224277367a928b145c45a544a4208a498a8e312c300ce70a2f03e67a1d"
    static let rsaClientToServerSealed = [
        "1bd734ae74c99c3a49e5222a12e8247f0653165119b1640ef23a51a34d180a7ede83c7173702935a862b2f5c3778dbf1",
        "faab0b975af228e29eb4f42304a67f7814cfa8d247c1dafcf436ae",
    ].joined()
}
// END fixtures
