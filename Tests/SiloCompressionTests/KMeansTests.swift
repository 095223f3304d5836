import XCTest
import SiloTensor
@testable import SiloCompression

final class KMeansTests: XCTestCase {
    func testLloydIterationsMatchScikitLearn() throws {
        // Same initial centroids, exactly 3 Lloyd iterations (sklearn: n_iter_ = 3, not converged).
        let result = try KMeans(clusters: 5, iterations: KMeansFixture.iterations)
            .fit(KMeansFixture.points, rows: 300, columns: 8, initial: KMeansFixture.initial)
        XCTAssertEqual(result.iterations, 3)
        XCTAssertEqual(result.assignments, KMeansFixture.labels)
        for (value, expected) in zip(result.centroids, KMeansFixture.centers) { XCTAssertEqual(value, expected, accuracy: 1e-5) }
        XCTAssertEqual(result.inertia, KMeansFixture.inertia, accuracy: 1e-5 * KMeansFixture.inertia)
    }

    static func separated(seed: UInt64) -> (data: [Float], truth: [Int]) {
        var generator = SeededGenerator(seed: seed)
        var data: [Float] = [], truth: [Int] = []
        for row in 0..<400 {
            let cluster = row % 4
            truth.append(cluster)
            for column in 0..<6 {
                let centre: Float = column == cluster ? 20 : 0
                data.append(centre + Float.random(in: -1...1, using: &generator))
            }
        }
        return (data, truth)
    }

    func testRecoversWellSeparatedClustersAndIsDeterministic() throws {
        let (data, truth) = Self.separated(seed: 4)
        let first = try KMeans(clusters: 4, iterations: 20, seed: 7).fit(data, rows: 400, columns: 6)
        // Same partition up to relabelling: every true cluster maps to exactly one found cluster.
        var mapping: [Int: Int32] = [:]
        for (row, cluster) in truth.enumerated() {
            if let found = mapping[cluster] { XCTAssertEqual(found, first.assignments[row]) } else { mapping[cluster] = first.assignments[row] }
        }
        XCTAssertEqual(Set(mapping.values).count, 4)
        let second = try KMeans(clusters: 4, iterations: 20, seed: 7).fit(data, rows: 400, columns: 6)
        XCTAssertEqual(first.centroids, second.centroids)
        XCTAssertEqual(first.assignments, second.assignments)
        XCTAssertLessThan(first.iterations, 20)   // converged: assignments stopped changing
    }

    func testEveryRowItsOwnClusterHasZeroInertiaAndBadInputIsNamed() throws {
        let data: [Float] = [0, 0, 1, 1, 5, 5, 9, 1]
        let result = try KMeans(clusters: 4, iterations: 5, seed: 1).fit(data, rows: 4, columns: 2)
        XCTAssertEqual(result.inertia, 0)
        XCTAssertEqual(Set(result.assignments).count, 4)
        XCTAssertThrowsError(try KMeans(clusters: 5).fit(data, rows: 4, columns: 2)) { XCTAssertTrue("\($0)".contains("k = 5 clusters for 4 rows"), "\($0)") }
        XCTAssertThrowsError(try KMeans(clusters: 2).fit([0, .nan, 1, 1], rows: 2, columns: 2)) { XCTAssertTrue("\($0)".contains("row 0, column 1"), "\($0)") }
    }
}
