import XCTest
import SiloTensor
@testable import SiloCompression

final class CentroidExchangeTests: XCTestCase {
    func matrix(seed: UInt64, rows: Int = 12, columns: Int = 5) -> [Float] {
        var generator = SeededGenerator(seed: seed)
        return (0..<(rows * columns)).map { _ in Float.random(in: -1...1, using: &generator) }
    }

    func testWithOneClusterPerRowTheRoundIsExactlyFedAvg() throws {
        let clients = (0..<3).map { matrix(seed: UInt64(10 + $0)) }
        let weights = [10.0, 30.0, 60.0]
        let parts = try clients.map { try CentroidExchange.compress($0, rows: 12, columns: 5, clusters: 12, initial: []) }
        let global = try CentroidExchange.average(parts.map(\.centroids), weights: weights)
        let fedAvg = (0..<60).map { index in Float(zip(clients, weights).reduce(0.0) { $0 + $1.1 / 100 * Double($1.0[index]) }) }
        for (client, part) in zip(clients, parts) {
            let rebuilt = CentroidExchange.apply(client, columns: 5, part: part, global: global)
            for (value, expected) in zip(rebuilt, fedAvg) { XCTAssertEqual(value, expected, accuracy: 1e-6) }
        }
    }

    func testFewerClustersMoveEachRowByItsClusterShift() throws {
        let global = matrix(seed: 1, rows: 40, columns: 4)
        let initial = try CentroidExchange.sharedInitial(global: global, rows: 40, columns: 4, clusters: 4, seed: 3)
        XCTAssertEqual(initial, try CentroidExchange.sharedInitial(global: global, rows: 40, columns: 4, clusters: 4, seed: 3))
        let local = global.map { $0 + 0.01 }
        let part = try CentroidExchange.compress(local, rows: 40, columns: 4, clusters: 4, initial: initial)
        XCTAssertEqual(part.centroids.count, 16)
        // If the server's average equals the client's own centroids, nothing changes.
        XCTAssertEqual(CentroidExchange.apply(local, columns: 4, part: part, global: part.centroids), local)
        XCTAssertThrowsError(try CentroidExchange.average([[1, 2], [1]], weights: [1, 1]))
    }
}
