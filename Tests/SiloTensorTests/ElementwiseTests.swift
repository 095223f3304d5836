import XCTest
@testable import SiloTensor

final class ElementwiseTests: XCTestCase {
    private func random(_ shape: [Int], _ seed: UInt64, low: Float = -1, high: Float = 1) -> Tensor {
        Tensor.randomUniform(shape, low: low, high: high, key: RandomKey(seed: seed))
    }

    private let binaryOperations: [(String, (Tensor, Tensor) throws -> Tensor)] = [
        ("adding", { try $0 + $1 }), ("subtracting", { try $0 - $1 }),
        ("multiplying", { try $0 * $1 }), ("dividing", { try $0 / $1 }),
    ]

    // MARK: Forward values

    func testBroadcastForwardByHand() throws {
        let a = try Tensor(shape: [2, 3], values: [1, 2, 3, 4, 5, 6])
        // Bias: (2,3) + (3) adds the row to every row.
        XCTAssertEqual(try (a + Tensor([10, 20, 30])).toArray(), [11, 22, 33, 14, 25, 36])
        // Per-row scale: (2,3) · (2,1).
        let column = try Tensor(shape: [2, 1], values: [2, -1])
        XCTAssertEqual(try (a * column).toArray(), [2, 4, 6, -4, -5, -6])
        // Scalars on either side: a − 1 and 12 / a.
        XCTAssertEqual(try (a - Tensor(scalar: 1)).toArray(), [0, 1, 2, 3, 4, 5])
        XCTAssertEqual(try (Tensor(scalar: 12) / a).toArray(), [12, 6, 4, 3, 2.4, 2])
        // Outer sum: (2,1) + (1,3) → (2,3).
        let outer = try column + Tensor(shape: [1, 3], values: [0, 10, 20])
        XCTAssertEqual(outer.shape, [2, 3])
        XCTAssertEqual(outer.toArray(), [2, 12, 22, -1, 9, 19])
        // A transposed (strided) view is read in its logical order: aᵀ = [[1,4],[2,5],[3,6]].
        let transposed = try a.transposed(0, 1)
        XCTAssertEqual(try (transposed + Tensor([100, 200])).toArray(), [101, 204, 102, 205, 103, 206])
        // The method names agree with the operators.
        XCTAssertEqual(try a.subtracting(column).toArray(), [-1, 0, 1, 5, 6, 7])
        XCTAssertEqual(try a.dividing(column).toArray(), [0.5, 1, 1.5, -4, -5, -6])
    }

    func testUnaryForwardByHand() throws {
        let x = Tensor([1, 4, 9])
        XCTAssertEqual(x.squareRoot().toArray(), [1, 2, 3])
        XCTAssertEqual(x.squared().toArray(), [1, 16, 81])
        XCTAssertEqual(x.scaled(by: -0.5).toArray(), [-0.5, -2, -4.5])
        XCTAssertEqual(x.adding(scalar: 2).toArray(), [3, 6, 11])
        XCTAssertEqual(x.negated().toArray(), [-1, -4, -9])
        assertClose(Tensor([0, 1, -1]).exp().toArray(), [1, 2.7182817, 0.36787945])
        assertClose(Tensor([1, 2.7182817, 0.5]).log().toArray(), [0, 1, -0.6931472])
    }

    // MARK: Gradients by hand

    func testPolynomialGradientByHand() throws {
        // y = x² + 5x, dy/dx = 2x + 5: at x = [-1, 0, 2], y = [-4, 0, 14] and dy/dx = [3, 5, 9].
        let x = Tensor([-1, 0, 2]).requiringGrad()
        let y = try x.squared() + x.scaled(by: 5)
        XCTAssertEqual(y.toArray(), [-4, 0, 14])
        try y.sum().backward()
        XCTAssertEqual(x.grad?.toArray(), [3, 5, 9])
    }

    func testQuotientAndBiasGradientsByHand() throws {
        // z = a / b: dz/da = 1/b, dz/db = −a/b². With a = [3, 8], b = [2, 4]: [0.5, 0.25] and [−0.75, −0.5].
        let a = Tensor([3, 8]).requiringGrad()
        let b = Tensor([2, 4]).requiringGrad()
        try (a / b).sum().backward()
        XCTAssertEqual(a.grad?.toArray(), [0.5, 0.25])
        XCTAssertEqual(b.grad?.toArray(), [-0.75, -0.5])
        // y = x + bias over (2,3): dy/dbias sums the seed over rows, [1+4, 2+5, 3+6].
        let x = Tensor.zeros([2, 3]).requiringGrad()
        let bias = Tensor.zeros([3]).requiringGrad()
        try (x + bias).backward(seed: try Tensor(shape: [2, 3], values: [1, 2, 3, 4, 5, 6]))
        XCTAssertEqual(bias.grad?.toArray(), [5, 7, 9])
        XCTAssertEqual(x.grad?.toArray(), [1, 2, 3, 4, 5, 6])
        // y = x · s with s (2,1): dy/ds is the row sum of seed · x.
        let s = Tensor([2, 3]).requiringGrad()
        let rows = try Tensor(shape: [2, 3], values: [1, 1, 1, 2, 0, -1])
        try (rows * s.reshaped([2, 1])).backward(seed: Tensor.ones([2, 3]))
        XCTAssertEqual(s.grad?.toArray(), [3, 1])
    }

    // MARK: Gradient checks

    func testBinaryGradientsForEveryBroadcastPattern() throws {
        let patterns: [([Int], [Int])] = [
            ([2, 3, 4], [2, 3, 4]),  // same shape, dense
            ([2, 3, 4], [4]),  // b a suffix of a (bias)
            ([2, 3, 4], [2, 3, 1]),  // trailing size-1 (per-row scale)
            ([4], [2, 3, 4]),  // a broadcast up to b
            ([2, 3, 1], [2, 3, 4]),  // a per-row, b full
            ([3, 1], [1, 4]),  // both broadcast
            ([2, 3, 4], []),  // b scalar
            ([], [2, 3]),  // a scalar
            ([2, 1, 4], [3, 1]),  // general strided fallback
        ]
        var worst = 0.0
        for (shapeA, shapeB) in patterns {
            // b in [1, 2]: away from 0 so that a/b stays smooth at the finite-difference step.
            let a = random(shapeA, 1), b = random(shapeB, 2, low: 1, high: 2)
            for (name, operation) in binaryOperations {
                let error = try checkGradients([a, b]) { try operation($0[0], $0[1]) }
                XCTAssertLessThan(error, 1e-3, "\(name) \(shapeA) \(shapeB)")
                worst = max(worst, error)
            }
        }
        XCTAssertLessThan(worst, 1e-3)  // saw 1.5e-4 (dividing, general strided pattern)
    }

    func testBinaryGradientsOfStridedViews() throws {
        // aᵀ (3,4) ∘ b (3,1) and a column slice ∘ a row: operands read through strides, no copy.
        let a = random([4, 3], 3), b = random([3, 1], 4, low: 1, high: 2)
        var worst = 0.0
        for (_, operation) in binaryOperations {
            worst = max(worst, try checkGradients([a, b]) { try operation($0[0].transposed(0, 1), $0[1]) })
            worst = max(worst, try checkGradients([a, random([2], 5, low: 1, high: 2)]) {
                try operation($0[0].sliced(axis: 1, range: 1..<3), $0[1])
            })
        }
        XCTAssertLessThan(worst, 1e-4)  // saw 8e-6
    }

    func testUnaryGradients() throws {
        let x = random([3, 5], 6)
        let positive = random([3, 5], 7, low: 0.5, high: 2)
        let errors = [
            try checkGradients([x]) { $0[0].scaled(by: -1.5) },
            try checkGradients([x]) { $0[0].adding(scalar: 3) },
            try checkGradients([x]) { $0[0].negated() },
            try checkGradients([x]) { $0[0].exp() },
            try checkGradients([x]) { $0[0].squared() },
            try checkGradients([positive]) { $0[0].log() },
            try checkGradients([positive]) { $0[0].squareRoot() },
            try checkGradients([x]) { try $0[0].transposed(0, 1).exp() },  // strided input
        ]
        XCTAssertLessThan(errors.max() ?? 1, 1e-3)  // saw 2.4e-4 (exp/log curvature at ε = 1e-2)
    }

    // MARK: Reductions

    func testReductionsByHand() throws {
        // x = [[1,2,3],[4,5,6]]: column sums [5,7,9], row sums [6,15], total 21, mean 3.5.
        let x = try Tensor(shape: [2, 3], values: [1, 2, 3, 4, 5, 6])
        XCTAssertEqual(try x.sum(axes: [0]).toArray(), [5, 7, 9])
        XCTAssertEqual(try x.sum(axes: [1]).shape, [2])
        XCTAssertEqual(try x.sum(axes: [-1], keepingDimensions: true).shape, [2, 1])
        XCTAssertEqual(try x.sum(axes: [1], keepingDimensions: true).toArray(), [6, 15])
        XCTAssertEqual(x.sum().shape, [])
        XCTAssertEqual(x.sum().scalar, 21)
        XCTAssertEqual(x.mean().scalar, 3.5)
        XCTAssertEqual(try x.mean(axes: [1]).toArray(), [2, 5])
        XCTAssertEqual(try x.mean(axes: [0, 1], keepingDimensions: true).shape, [1, 1])
        // y[i,j,k] = 12i + 4j + k over (2,3,4): Σ over i and k = 32j + 60 → [60, 92, 124].
        let y = try Tensor(shape: [2, 3, 4], values: (0..<24).map(Float.init))
        XCTAssertEqual(try y.sum(axes: [0, 2]).toArray(), [60, 92, 124])
        XCTAssertEqual(try y.sum(axes: [-1, 0], keepingDimensions: true).shape, [1, 3, 1])
        // Σ over j only: 3·(12i + k) + 12 → i=0: [12,15,18,21], i=1: [48,51,54,57].
        XCTAssertEqual(try y.sum(axes: [1]).toArray(), [12, 15, 18, 21, 48, 51, 54, 57])
        // reduced(toShape:) sums over the broadcast axes.
        XCTAssertEqual(try x.reduced(toShape: [3]).toArray(), [5, 7, 9])
        XCTAssertEqual(try x.reduced(toShape: [2, 1]).toArray(), [6, 15])
        XCTAssertEqual(try x.reduced(toShape: [1, 3]).shape, [1, 3])
        XCTAssertEqual(try x.reduced(toShape: []).scalar, 21)
        // Summing over no axes changes nothing.
        XCTAssertEqual(try x.sum(axes: []).toArray(), x.toArray())
    }

    func testReductionGradients() throws {
        let x = random([2, 3, 4], 8)
        var worst = 0.0
        let axisSets: [[Int]] = [[0], [1], [2], [-1], [0, 2], [1, 2], [0, 1], [0, 1, 2]]
        for axes in axisSets {
            for keep in [false, true] {
                worst = max(worst, try checkGradients([x]) { try $0[0].sum(axes: axes, keepingDimensions: keep) })
                worst = max(worst, try checkGradients([x]) { try $0[0].mean(axes: axes, keepingDimensions: keep) })
            }
        }
        worst = max(worst, try checkGradients([x]) { $0[0].sum() })
        worst = max(worst, try checkGradients([x]) { $0[0].mean() })
        worst = max(worst, try checkGradients([x]) { try $0[0].permuted([2, 0, 1]).sum(axes: [1]) })  // strided
        for target in [[4], [3, 1], [2, 1, 4], [1, 3, 4], []] {
            worst = max(worst, try checkGradients([x]) { try $0[0].reduced(toShape: target) })
        }
        XCTAssertLessThan(worst, 1e-4)  // saw 8e-7: linear in x, only rounding
    }

    func testReductionsAgainstNaiveSumsOnParallelPaths() throws {
        // Large enough that the kernels split the work: column sums, row sums and a blocked full sum.
        let x = random([300, 130], 9)
        let values = x.toArray()
        var columnSums = [Double](repeating: 0, count: 130)
        var rowSums = [Double](repeating: 0, count: 300)
        var total = 0.0
        for row in 0..<300 {
            for column in 0..<130 {
                let value = Double(values[row * 130 + column])
                columnSums[column] += value
                rowSums[row] += value
                total += value
            }
        }
        assertClose(try x.sum(axes: [0]).toArray(), columnSums.map(Float.init), relative: 1e-4, absolute: 1e-4)
        assertClose(try x.sum(axes: [1]).toArray(), rowSums.map(Float.init), relative: 1e-4, absolute: 1e-4)
        assertClose([x.sum().scalar], [Float(total)], relative: 1e-5, absolute: 1e-3)
        assertClose([x.mean().scalar], [Float(total / 39_000)], relative: 1e-5, absolute: 1e-6)
    }

    func testLargeBroadcastAgainstNaiveLoop() throws {
        // (64, 600) + (600) and · (64, 1): big enough for the row-parallel path.
        let a = random([64, 600], 10), bias = random([600], 11), scale = random([64, 1], 12)
        let out = try (a + bias) * scale
        let av = a.toArray(), bv = bias.toArray(), sv = scale.toArray()
        var expected = [Float](repeating: 0, count: 64 * 600)
        for row in 0..<64 {
            for column in 0..<600 { expected[row * 600 + column] = (av[row * 600 + column] + bv[column]) * sv[row] }
        }
        XCTAssertEqual(out.toArray(), expected)
    }

    // MARK: Errors

    func testShapeMismatchNamesOpAndShapes() {
        let a = Tensor.zeros([2, 3]), b = Tensor.zeros([4])
        for (name, operation) in binaryOperations {
            XCTAssertThrowsError(try operation(a, b)) { error in
                let text = "\(error)"
                XCTAssertTrue(text.contains(name) && text.contains("[2, 3]") && text.contains("[4]"), text)
                XCTAssertEqual((error as? TensorError)?.code, .shapeMismatch)
            }
        }
        XCTAssertThrowsError(try a.reduced(toShape: [4])) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("reduced(toShape:)") && text.contains("[2, 3]") && text.contains("[4]"), text)
        }
        XCTAssertThrowsError(try a.sum(axes: [2])) { error in
            XCTAssertTrue("\(error)".contains("sum") && "\(error)".contains("[2, 3]"), "\(error)")
        }
        XCTAssertThrowsError(try a.mean(axes: [1, -1])) { error in
            XCTAssertTrue("\(error)".contains("twice"), "\(error)")
        }
    }
}
