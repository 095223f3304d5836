import XCTest
@testable import SiloTensor

final class EmbeddingDropoutTests: XCTestCase {
    private func random(_ shape: [Int], _ seed: UInt64) -> Tensor {
        Tensor.randomUniform(shape, low: -1, high: 1, key: RandomKey(seed: seed))
    }

    // MARK: Embedding

    func testEmbeddingForwardByHand() throws {
        // weight row v = [10v, 10v + 1]; ids [[3, 0], [3, 1]] pick rows 3, 0, 3, 1.
        let weight = try Tensor(shape: [4, 2], values: [0, 1, 10, 11, 20, 21, 30, 31])
        let out = try Tensor.embedding(weight: weight, ids: [3, 0, 3, 1], shape: [2, 2])
        XCTAssertEqual(out.shape, [2, 2, 2])
        XCTAssertEqual(out.toArray(), [30, 31, 0, 1, 30, 31, 10, 11])
    }

    func testEmbeddingBackwardAddsRepeatedIds() throws {
        // out[n] = weight[ids[n]], so dweight[v] = Σ_{n: ids[n] = v} dout[n]: row 3 gets dout[0] + dout[2].
        let weight = Tensor.zeros([4, 2]).requiringGrad()
        let out = try Tensor.embedding(weight: weight, ids: [3, 0, 3], shape: [3])
        try out.backward(seed: try Tensor(shape: [3, 2], values: [1, 2, 3, 4, 5, 6]))
        XCTAssertEqual(weight.grad?.toArray(), [3, 4, 0, 0, 0, 0, 6, 8])
    }

    func testEmbeddingGradientCheckWithRepeatedIds() throws {
        let weight = random([5, 3], 1)
        let ids: [Int32] = [1, 4, 1, 0, 1, 2]
        let error = try checkGradients([weight]) {
            try Tensor.embedding(weight: $0[0], ids: ids, shape: [2, 3]).squared()
        }
        XCTAssertLessThan(error, 1e-4)  // saw 1.8e-6
    }

    func testEmbeddingBackwardMatchesSerialScatterOnTheParallelPath() throws {
        // 600 positions × 64 channels is enough work for the column-parallel scatter; the serial loop in
        // the same position order must give bit-identical sums.
        let vocabulary = 7, channels = 64, positions = 600
        let ids = (0..<positions).map { Int32(($0 * 5 + $0 / 7) % vocabulary) }
        let seed = random([positions, channels], 2)
        let weight = Tensor.zeros([vocabulary, channels]).requiringGrad()
        try Tensor.embedding(weight: weight, ids: ids, shape: [positions]).backward(seed: seed)
        let dout = seed.toArray()
        var expected = [Float](repeating: 0, count: vocabulary * channels)
        for position in 0..<positions {
            for column in 0..<channels {
                expected[Int(ids[position]) * channels + column] += dout[position * channels + column]
            }
        }
        XCTAssertEqual(weight.grad?.toArray(), expected)
    }

    func testEmbeddingErrorsNamePositionAndVocabulary() {
        let weight = Tensor.zeros([5, 2])
        XCTAssertThrowsError(try Tensor.embedding(weight: weight, ids: [0, 1, 2, 3, 4, 5], shape: [2, 3])) { error in
            let text = "\(error)"
            // id 5 sits at row 1, column 2 (flat index 5); the vocabulary is 0..<5.
            XCTAssertTrue(text.contains("embedding") && text.contains("[1, 2]") && text.contains("0..<5"), text)
        }
        XCTAssertThrowsError(try Tensor.embedding(weight: weight, ids: [0, -1], shape: [2])) { error in
            XCTAssertTrue("\(error)".contains("-1") && "\(error)".contains("[1]"), "\(error)")
        }
        XCTAssertThrowsError(try Tensor.embedding(weight: weight, ids: [0, 1, 2], shape: [2, 2])) { error in
            XCTAssertTrue("\(error)".contains("[2, 2]"), "\(error)")
        }
        XCTAssertThrowsError(try Tensor.embedding(weight: Tensor.zeros([5]), ids: [0], shape: [1]))
    }

    // MARK: Dropout

    func testDropoutKeepsTheExpectedFractionAndScales() throws {
        let p: Float = 0.3
        let n = 20_000
        let out = try Tensor.ones([n]).dropout(probability: p, key: RandomKey(seed: 42))
        let values = out.toArray()
        let kept = values.filter { $0 != 0 }
        // Kept fraction ~ Binomial(n, 0.7)/n: standard deviation √(0.3·0.7/n) ≈ 0.0032; allow ~4.6σ.
        XCTAssertEqual(Double(kept.count) / Double(n), 0.7, accuracy: 0.015)
        // Inverted dropout: kept values are 1 / (1 − p).
        let scale = 1 / (1 - p)
        XCTAssertTrue(kept.allSatisfy { $0 == scale }, "kept values must all be \(scale)")
        // Element i is dropped exactly when key.uniform(i) < p.
        let key = RandomKey(seed: 42)
        for i in 0..<n { XCTAssertEqual(values[i] == 0, key.uniform(UInt64(i)) < p, "element \(i)") }
        // The kernel compares integer bits against ⌈p·2²⁴⌉; check it agrees with uniform(i) < p for
        // probabilities with and without an exact 24-bit representation.
        for probability: Float in [0.5, 0.25, 0.1, 0.9, 1e-7] {
            let mask = try Tensor.ones([4096]).dropout(probability: probability, key: key).toArray()
            let mismatches = (0..<4096).filter { (mask[$0] == 0) != (key.uniform(UInt64($0)) < probability) }
            XCTAssertEqual(mismatches, [], "p = \(probability)")
        }
    }

    func testDropoutGradientUsesTheSameMask() throws {
        let x = random([50, 40], 3).requiringGrad()
        let key = RandomKey(seed: 7)
        let out = try x.dropout(probability: 0.5, key: key)
        try out.backward(seed: Tensor.ones(out.shape))
        // d out/dx = mask / (1 − p): 2 where kept, 0 where dropped.
        let mask = out.toArray().map { $0 == 0 ? Float(0) : 2 }
        XCTAssertEqual(x.grad?.toArray(), mask)
        XCTAssertTrue(mask.contains(0) && mask.contains(2))
        let error = try checkGradients([random([6, 5], 4)]) { try $0[0].dropout(probability: 0.4, key: key) }
        XCTAssertLessThan(error, 1e-4)  // saw 1.5e-6
    }

    func testDropoutEdgeCasesAndErrors() throws {
        let x = random([4, 5], 5)
        let key = RandomKey(seed: 1)
        let same = try x.dropout(probability: 0, key: key)
        XCTAssertTrue(same.storage === x.storage)
        XCTAssertEqual(try x.dropout(probability: 1, key: key).toArray(), [Float](repeating: 0, count: 20))
        // The mask depends on the key: two keys drop different elements.
        let a = try Tensor.ones([64]).dropout(probability: 0.5, key: RandomKey(seed: 1)).toArray()
        let b = try Tensor.ones([64]).dropout(probability: 0.5, key: RandomKey(seed: 2)).toArray()
        XCTAssertNotEqual(a, b)
        XCTAssertEqual(a, try Tensor.ones([64]).dropout(probability: 0.5, key: RandomKey(seed: 1)).toArray())
        for bad: Float in [-0.1, 1.5, .nan] {
            XCTAssertThrowsError(try x.dropout(probability: bad, key: key)) { error in
                XCTAssertTrue("\(error)".contains("dropout"), "\(error)")
            }
        }
    }
}
