import Foundation
@testable import SiloData
import SiloTensor
import XCTest

final class PartitionTests: XCTestCase {
    /// 1,000 labels: 600 of class 0, 300 of class 1, 100 of class 2, interleaved.
    let labels: [Int] = (0..<1000).map { $0 % 10 < 6 ? 0 : ($0 % 10 < 9 ? 1 : 2) }

    func assertDisjointCover(_ shards: [[Int]], count: Int, file: StaticString = #filePath, line: UInt = #line) {
        let all = shards.flatMap { $0 }
        XCTAssertEqual(all.count, count, "no example twice", file: file, line: line)
        XCTAssertEqual(Set(all), Set(0..<count), "every example somewhere", file: file, line: line)
        for shard in shards { XCTAssertEqual(shard, shard.sorted(), file: file, line: line) }
    }

    func testIIDEqualShardsDeterministic() throws {
        let shards = try Partition.iid.assign(labels: labels, clients: 7, seed: 3)
        assertDisjointCover(shards, count: 1000)
        XCTAssertEqual(shards.map(\.count), [143, 143, 143, 143, 143, 143, 142])
        XCTAssertEqual(shards, try Partition.iid.assign(labels: labels, clients: 7, seed: 3))
        XCTAssertNotEqual(shards, try Partition.iid.assign(labels: labels, clients: 7, seed: 4))
        XCTAssertNotEqual(shards[0], Array(0..<143), "shuffled, not cut in order")
        // IID keeps class proportions near the global 60/30/10.
        for shard in shards {
            let share = Double(shard.count { labels[$0] == 0 }) / Double(shard.count)
            XCTAssertEqual(share, 0.6, accuracy: 0.15)
        }
        let few = try Partition.iid.assign(labels: [0, 0], clients: 3, seed: 1)
        XCTAssertEqual(few.map(\.count), [1, 1, 0])
    }

    func testLabelSkewGivesEachClientItsClassesOnly() throws {
        let shards = try Partition.labelSkew(classesPerClient: 1).assign(labels: labels, clients: 6, seed: 11)
        assertDisjointCover(shards, count: 1000)
        for shard in shards { XCTAssertEqual(Set(shard.map { labels[$0] }).count, 1, "one class per client") }
        XCTAssertEqual(Set(shards.map { labels[$0[0]] }), [0, 1, 2], "every class has holders")
        let two = try Partition.labelSkew(classesPerClient: 2).assign(labels: labels, clients: 3, seed: 11)
        assertDisjointCover(two, count: 1000)
        for shard in two { XCTAssertEqual(Set(shard.map { labels[$0] }).count, 2) }
        XCTAssertEqual(two, try Partition.labelSkew(classesPerClient: 2).assign(labels: labels, clients: 3, seed: 11))
        assertDataError(.invalidArgument, ["3 classes", "at least 2 classes per client"]) {
            try Partition.labelSkew(classesPerClient: 1).assign(labels: labels, clients: 2, seed: 0)
        }
    }

    func testDirichletSkewFollowsAlpha() throws {
        func meanLargestShare(alpha: Double, seed: UInt64) throws -> Double {
            let shards = try Partition.dirichlet(alpha: alpha).assign(labels: labels, clients: 10, seed: seed)
            assertDisjointCover(shards, count: 1000)
            var total = 0.0
            for label in 0..<3 {
                let perClient = shards.map { shard in shard.count { labels[$0] == label } }
                total += Double(perClient.max() ?? 0) / Double(perClient.reduce(0, +))
            }
            return total / 3
        }
        // With 10 clients a class spread evenly gives a largest share near 0.1; Dir(0.05) puts most of
        // a class on one client (E[max] ≈ 0.9); Dir(100) is nearly even.
        let concentrated = try (0..<5).map { try meanLargestShare(alpha: 0.05, seed: $0) }.reduce(0, +) / 5
        let even = try (0..<5).map { try meanLargestShare(alpha: 100, seed: $0) }.reduce(0, +) / 5
        XCTAssertGreaterThan(concentrated, 0.7)
        XCTAssertLessThan(even, 0.2)
        XCTAssertEqual(try Partition.dirichlet(alpha: 0.5).assign(labels: labels, clients: 4, seed: 9),
                       try Partition.dirichlet(alpha: 0.5).assign(labels: labels, clients: 4, seed: 9))
        assertDataError(.invalidArgument, ["alpha", "positive"]) { try Partition.dirichlet(alpha: 0).assign(labels: labels, clients: 2, seed: 0) }
        assertDataError(.invalidArgument, ["clients must be at least 1"]) { try Partition.iid.assign(labels: labels, clients: 0, seed: 0) }
    }

    /// Dir(α·1_K) has E[p_i] = 1/K and Var[p_i] = (K − 1) / (K² (Kα + 1)); Gamma(k, 1) has mean and
    /// variance k. Checked on 20,000 draws against those formulas.
    func testGammaAndDirichletMomentsMatchTheory() {
        for shape in [0.1, 0.5, 1.0, 3.0] {
            var generator = SeededGenerator(seed: 5)
            let draws = (0..<20_000).map { _ in exp(Partition.logGamma(shape: shape, using: &generator)) }
            let mean = draws.reduce(0, +) / Double(draws.count)
            let variance = draws.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(draws.count - 1)
            XCTAssertEqual(mean, shape, accuracy: 0.05 * max(shape, 0.5), "Gamma(\(shape)) mean")
            XCTAssertEqual(variance, shape, accuracy: 0.1 * max(shape, 0.5), "Gamma(\(shape)) variance")
        }
        let k = 4, alpha = 0.3
        let samples = (0..<20_000).map { Partition.dirichletSample(alpha: alpha, count: k, key: RandomKey(seed: 1).split(UInt64($0))) }
        for sample in samples.prefix(100) { XCTAssertEqual(sample.reduce(0, +), 1, accuracy: 1e-12) }
        let first = samples.map { $0[0] }
        let mean = first.reduce(0, +) / Double(first.count)
        let variance = first.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(first.count - 1)
        XCTAssertEqual(mean, 0.25, accuracy: 0.01)
        XCTAssertEqual(variance, Double(k - 1) / Double(k * k) / (Double(k) * alpha + 1), accuracy: 0.006)
        // Tiny alpha does not underflow: proportions stay finite and sum to 1.
        let tiny = Partition.dirichletSample(alpha: 0.001, count: 8, key: RandomKey(seed: 2))
        XCTAssertEqual(tiny.reduce(0, +), 1, accuracy: 1e-12)
        XCTAssertTrue(tiny.allSatisfy(\.isFinite))
    }

    func testExamplesOfGenerationTasksOnlyIID() throws {
        let examples = (1...5).map { Example(task: .xsum, passage: "d", answer: "s", source: SourceLocation(file: "x.jsonl", line: $0)) }
        let shards = try Partition.iid.assign(examples, clients: 2, seed: 0)
        XCTAssertEqual(shards.map(\.count), [3, 2])
        assertDataError(.invalidArgument, ["x.jsonl:1", "use iid"]) { try Partition.dirichlet(alpha: 1).assign(examples, clients: 2, seed: 0) }
    }
}
