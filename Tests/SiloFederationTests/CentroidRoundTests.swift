import XCTest
@testable import SiloFederation

/// Trustformer's round over whole models: k = n is FedAvg; alignment by Hungarian matching undoes
/// clients' different centroid orders; bytes follow k·d.
final class CentroidRoundTests: XCTestCase {
    static func matrix(_ rows: Int, _ columns: Int, seed: Int) -> [Float] {
        (0..<(rows * columns)).map { Float(sin(Double($0 * 7 + seed * 13) * 0.37)) * Float(1 + $0 / columns % 4) }
    }

    func testRatioOneIsFedAvgOfTheFullWeights() throws {
        let shapes = [[12, 3], [5]]
        let clients = (0..<3).map { [Self.matrix(12, 3, seed: $0), Self.matrix(5, 1, seed: 10 + $0)] }
        let weights = [1.0, 2.0, 5.0]
        let outcome = try CentroidRound.exchange(clients, shapes: shapes, reference: clients[0], weights: weights,
                                                 settings: .init(ratio: 1), seed: 0)
        for tensor in 0..<2 {
            let mean = (0..<clients[0][tensor].count).map { i in Float(zip(clients, weights).reduce(0.0) { $0 + Double($1.0[tensor][i]) * $1.1 } / 8) }
            for client in outcome.clients {
                for (a, b) in zip(client[tensor], mean) { XCTAssertEqual(a, b, accuracy: 1e-5) }
            }
        }
        XCTAssertEqual(outcome.uploadBytes, outcome.fullBytes)
    }

    func testCentroidsCompressAndHungarianAlignsOwnSeeds() throws {
        let (n, d) = (40, 4)
        // Both clients hold the same matrix of 4 well-separated groups; with their own seeds their centroid
        // orders differ, and only alignment keeps the rebuild from mixing groups.
        var base: [Float] = []
        for row in 0..<n { base += (0..<d).map { Float((row % 4) * 10) + Float($0) * 0.1 + Float(row % 3) * 0.01 } }
        let clients = [[base], [base]]
        let settings = CentroidRound.Settings(ratio: 0.1, iterations: 10, alignment: .hungarian)
        let outcome = try CentroidRound.exchange(clients, shapes: [[n, d]], reference: [base], weights: [1, 1], settings: settings, seed: 3)
        XCTAssertEqual(outcome.uploadBytes, 4 * d * 4, "k = 0.1 x 40 = 4 centroids of 4 values")
        XCTAssertEqual(outcome.fullBytes, n * d * 4)
        for client in outcome.clients { for (a, b) in zip(client[0], base) { XCTAssertEqual(a, b, accuracy: 1e-4) } }
        // Without matching, the clients' own seeds leave the indices unaligned and the rebuild moves rows.
        let unaligned = try CentroidRound.exchange(clients, shapes: [[n, d]], reference: [base], weights: [1, 1],
                                                   settings: .init(ratio: 0.1, iterations: 10, alignment: .sharedSeed), seed: 3)
        for client in unaligned.clients { for (a, b) in zip(client[0], base) { XCTAssertEqual(a, b, accuracy: 1e-4) } }
        XCTAssertGreaterThan(outcome.misalignment, 1, "the two seeds should have ordered the groups differently")
    }

    func testVectorsStayLocalWhenNotSent() throws {
        let clients: [[[Float]]] = [[[1, 2]], [[3, 4]]]
        let outcome = try CentroidRound.exchange(clients, shapes: [[2]], reference: clients[0], weights: [1, 1],
                                                 settings: .init(ratio: 0.5, sendVectors: false), seed: 0)
        XCTAssertEqual(outcome.clients, clients)
        XCTAssertEqual(outcome.uploadBytes, 0)
    }
}
