import Foundation
import SiloFederation
import SiloTensor
import SwiftProtobuf
import XCTest
@testable import SiloTransport

/// Seeded random mutation of what a server receives from a client — protobuf frames, chunk sequences,
/// sealed payloads, wire tensors — through the same decoding path as the gRPC service. Every input
/// must be refused with an error or decoded; nothing may crash, and no mutated sealed payload may open.
final class DecodingFuzzTests: XCTestCase {
    /// Inputs per seed (kept small: debug builds run this in CI).
    static let inputs = 3000

    func testMutatedInputsNeverCrashTheDecodingPath() throws {
        var generator = SeededGenerator(seed: 20261203)
        // A real sealed activations payload of a real session, and its frames.
        let link = try SessionProtection.link(for: Named(clientID: "client-1"))
        let body = WireTensor(tensor: Tensor.randomNormal([2, 6, 16], standardDeviation: 1, key: RandomKey(seed: 3)), scalars: [3]).encoded()
        let message = SplitMessage(kind: .activations, round: 0, step: 0, body: body)
        let sealed = try link.clientSide.seal(message)
        XCTAssertEqual(try link.serverSide.open(sealed).body, body)
        let frames = PayloadAssembler.frames(for: sealed, chunkBytes: 128)
        let serializedFrames: [[UInt8]] = try frames.map { try $0.serializedBytes() }

        // A rejoining client's state bundle (trainables and optimizer moments).
        let bundle = WireTensorBundle.encode(["values": Tensor.ones([12]), "optimizer/w.exp_avg": Tensor.zeros([3, 4]),
                                              "optimizer/w.step": Tensor(scalar: 2)])
        XCTAssertEqual(try WireTensorBundle.decode(bundle, what: "fuzz").count, 3)

        var counts: [String: Int] = [:]
        var opened = 0
        for _ in 0..<Self.inputs {
            // 1. A mutated protobuf frame through the deserializer, then the assembler.
            var bytes = serializedFrames[Int.random(in: 0..<serializedFrames.count, using: &generator)]
            Self.mutate(&bytes, using: &generator)
            if let frame = try? Silo_V1_Frame(serializedBytes: bytes) {
                var assembler = PayloadAssembler(chunkBytes: 128, maxPayloadBytes: 4096, sender: "fuzz")
                _ = try? assembler.add(frame)
                counts["frame decoded", default: 0] += 1
            } else {
                counts["frame refused", default: 0] += 1
            }

            // 2. A mutated chunk sequence (dropped, repeated, reordered, resized frames).
            var sequence = frames
            switch Int.random(in: 0..<5, using: &generator) {
            case 0: sequence.remove(at: Int.random(in: 0..<sequence.count, using: &generator))
            case 1: sequence.insert(sequence[Int.random(in: 0..<sequence.count, using: &generator)], at: Int.random(in: 0...sequence.count, using: &generator))
            case 2: sequence.swapAt(Int.random(in: 0..<sequence.count, using: &generator), Int.random(in: 0..<sequence.count, using: &generator))
            case 3: sequence[0].payloadBytes = UInt64.random(in: 0...UInt64.max, using: &generator)
            default: sequence[sequence.count - 1].last.toggle()
            }
            var assembler = PayloadAssembler(chunkBytes: 128, maxPayloadBytes: 4096, sender: "fuzz")
            var assembled: [UInt8]?
            do {
                for frame in sequence { if let payload = try assembler.add(frame) { assembled = payload } }
            } catch {
                counts["sequence refused", default: 0] += 1
            }

            // 3. A mutated sealed payload through a fresh server session (sequence 0 expected).
            let fresh = try SessionProtection.link(for: Named(clientID: "client-1"))
            var payload = try assembled ?? fresh.clientSide.seal(message)
            if assembled == nil || payload == sealed { Self.mutate(&payload, using: &generator) }
            if (try? fresh.serverSide.open(payload)) != nil { opened += 1 }

            // 4. A mutated wire tensor through the coordinator's checks.
            var tensorBytes = body
            Self.mutate(&tensorBytes, using: &generator)
            if (try? WireTensor.decode(tensorBytes, expectedRank: 3, what: "fuzz")) != nil {
                counts["tensor decoded", default: 0] += 1
            }

            // 5. A mutated state bundle.
            var bundleBytes = bundle
            Self.mutate(&bundleBytes, using: &generator)
            if (try? WireTensorBundle.decode(bundleBytes, what: "fuzz")) != nil {
                counts["bundle decoded", default: 0] += 1
            }
        }
        XCTAssertEqual(opened, 0, "a mutated or reassembled-wrong payload opened under another session")
        let total = 5 * Self.inputs
        print("decoding fuzz: \(total) inputs ran without a crash (\(counts.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")))")
    }

    /// Flips, overwrites, inserts, deletes or truncates a few bytes (always changes them).
    static func mutate(_ bytes: inout [UInt8], using generator: inout SeededGenerator) {
        let original = bytes
        defer {
            if bytes == original { bytes.append(UInt8.random(in: 0...255, using: &generator)) }
        }
        for _ in 0..<Int.random(in: 1...4, using: &generator) {
            guard !bytes.isEmpty else { bytes.append(UInt8.random(in: 0...255, using: &generator)); continue }
            let index = Int.random(in: 0..<bytes.count, using: &generator)
            switch Int.random(in: 0..<5, using: &generator) {
            case 0: bytes[index] ^= UInt8(1) << UInt8.random(in: 0..<8, using: &generator)
            case 1: bytes[index] = UInt8.random(in: 0...255, using: &generator)
            case 2: bytes.insert(UInt8.random(in: 0...255, using: &generator), at: index)
            case 3: bytes.remove(at: index)
            default: bytes.removeLast(Int.random(in: 0...min(bytes.count, 16), using: &generator))
            }
        }
    }
}

/// Only a name: the sessions under test need the endpoint's identity, never its answers.
final class Named: SplitClientEndpoint {
    let clientID: String
    init(clientID: String) { self.clientID = clientID }
    func handle(_ request: SplitMessage) throws -> SplitMessage { throw ProtocolError("not answering") }
}
