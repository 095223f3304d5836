import XCTest
@testable import SiloTensor

final class ShapeOpsTests: XCTestCase {
    private func random(_ shape: [Int], _ seed: UInt64) -> Tensor {
        Tensor.randomUniform(shape, low: -1, high: 1, key: RandomKey(seed: seed))
    }

    /// 0, 1, 2, … in row-major order.
    private func iota(_ shape: [Int]) throws -> Tensor {
        try Tensor(shape: shape, values: (0..<shape.reduce(1, *)).map(Float.init))
    }

    // MARK: reshaped

    func testReshapeIsAViewWhenContiguousAndCopiesOtherwise() throws {
        let x = try iota([2, 3, 4])
        let flat = try x.reshaped([6, -1])
        XCTAssertEqual(flat.shape, [6, 4])
        XCTAssertTrue(flat.storage === x.storage)
        XCTAssertEqual(flat.toArray(), x.toArray())
        // xᵀ over the first two axes is (3,2,4); merging its first two axes needs a copy.
        let swapped = try x.transposed(0, 1)
        let merged = try swapped.reshaped([6, 4])
        XCTAssertFalse(merged.storage === x.storage)
        XCTAssertTrue(merged.isContiguous)
        XCTAssertEqual(Array(merged.toArray().prefix(8)), [0, 1, 2, 3, 12, 13, 14, 15])
        // Splitting the (unit-stride) last axis of the strided view is still a view.
        let split = try swapped.reshaped([3, 2, 2, 2])
        XCTAssertTrue(split.storage === x.storage)
        XCTAssertEqual(split.toArray(), swapped.toArray())
        XCTAssertEqual(try x.reshaped([-1]).shape, [24])
        XCTAssertEqual(try Tensor(scalar: 5).reshaped([1, 1]).shape, [1, 1])
    }

    func testReshapeGradients() throws {
        let x = random([2, 3, 4], 1)
        let e1 = try checkGradients([x]) { try $0[0].reshaped([4, 6]).squared() }
        let e2 = try checkGradients([x]) { try $0[0].transposed(0, 2).reshaped([-1, 3]).squared() }
        XCTAssertLessThan(max(e1, e2), 1e-4)  // saw 3.5e-6
    }

    func testReshapeErrors() {
        let x = Tensor.zeros([2, 3])
        XCTAssertThrowsError(try x.reshaped([4, 2])) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("reshaped") && text.contains("[2, 3]") && text.contains("[4, 2]"), text)
        }
        XCTAssertThrowsError(try x.reshaped([-1, -1]))
        XCTAssertThrowsError(try x.reshaped([-1, 4]))
    }

    // MARK: transposed, permuted

    func testTransposeAndPermuteAreViews() throws {
        let x = try iota([2, 3, 4])  // x[i,j,k] = 12i + 4j + k
        let t = try x.transposed(0, -1)  // (4,3,2): t[k,j,i] = x[i,j,k]
        XCTAssertEqual(t.shape, [4, 3, 2])
        XCTAssertTrue(t.storage === x.storage)
        XCTAssertEqual(t[3, 1, 1], 12 + 4 + 3)
        let p = try x.permuted([2, 0, 1])  // (4,2,3): p[k,i,j] = x[i,j,k]
        XCTAssertEqual(p.shape, [4, 2, 3])
        XCTAssertEqual(p[1, 1, 2], 12 + 8 + 1)
        XCTAssertEqual(Array(p.toArray().prefix(6)), [0, 4, 8, 12, 16, 20])
        XCTAssertThrowsError(try x.permuted([0, 0, 1])) { XCTAssertTrue("\($0)".contains("permuted"), "\($0)") }
        XCTAssertThrowsError(try x.transposed(0, 3)) { XCTAssertTrue("\($0)".contains("[2, 3, 4]"), "\($0)") }
    }

    func testTransposeAndPermuteGradients() throws {
        let x = random([2, 3, 4], 2)
        let weights = random([4, 2, 3], 3)
        let e1 = try checkGradients([x]) { try $0[0].transposed(1, 2).squared() }
        let e2 = try checkGradients([x, weights]) { try $0[0].permuted([2, 0, 1]) * $0[1] }
        XCTAssertLessThan(max(e1, e2), 1e-4)  // saw 1.8e-6
    }

    // MARK: contiguous

    func testContiguousReturnsSelfWhenDense() throws {
        let x = random([3, 4], 4).requiringGrad()
        let same = x.contiguous()
        XCTAssertTrue(same.storage === x.storage)
        XCTAssertTrue(same.node === x.node)  // no new graph node
        let t = try x.transposed(0, 1)
        let dense = t.contiguous()
        XCTAssertTrue(dense.isContiguous)
        XCTAssertFalse(dense.storage === x.storage)
        XCTAssertEqual(dense.toArray(), t.toArray())
        let error = try checkGradients([random([3, 4], 5)]) { try $0[0].transposed(0, 1).contiguous().squared() }
        XCTAssertLessThan(error, 1e-4)  // saw 2.1e-6
    }

    // MARK: sliced, split

    func testSliceIsAViewWithTheRightValues() throws {
        let x = try iota([3, 4])
        let rows = try x.sliced(axis: 0, range: 1..<3)
        XCTAssertTrue(rows.storage === x.storage)
        XCTAssertEqual(rows.toArray(), [4, 5, 6, 7, 8, 9, 10, 11])
        let columns = try x.sliced(axis: -1, range: 1..<3)
        XCTAssertEqual(columns.toArray(), [1, 2, 5, 6, 9, 10])
        XCTAssertEqual(try x.sliced(axis: 1, range: 2..<2).shape, [3, 0])
        XCTAssertThrowsError(try x.sliced(axis: 1, range: 2..<5)) { error in
            XCTAssertTrue("\(error)".contains("sliced") && "\(error)".contains("[3, 4]"), "\(error)")
        }
    }

    func testSliceGradientIsZeroOutsideTheRange() throws {
        // y = Σ 2·x[:, 1..<3]: dy/dx is 2 inside the slice and 0 elsewhere.
        let x = Tensor.zeros([2, 4]).requiringGrad()
        try x.sliced(axis: 1, range: 1..<3).scaled(by: 2).sum().backward()
        XCTAssertEqual(x.grad?.toArray(), [0, 2, 2, 0, 0, 2, 2, 0])
        let y = random([3, 4, 5], 6)
        var worst = 0.0
        for axis in 0..<3 {
            worst = max(worst, try checkGradients([y]) { try $0[0].sliced(axis: axis, range: 1..<3).squared() })
        }
        XCTAssertLessThan(worst, 1e-4)  // saw 2.1e-6
    }

    func testSplitViewsAndGradients() throws {
        let x = try iota([2, 6])
        let parts = try x.split(axis: 1, sizes: [1, 2, 3])
        XCTAssertEqual(parts.map(\.shape), [[2, 1], [2, 2], [2, 3]])
        XCTAssertTrue(parts.allSatisfy { $0.storage === x.storage })
        XCTAssertEqual(parts[1].toArray(), [1, 2, 7, 8])
        XCTAssertEqual(parts[2].toArray(), [3, 4, 5, 9, 10, 11])
        XCTAssertThrowsError(try x.split(axis: 1, sizes: [2, 2])) { XCTAssertTrue("\($0)".contains("split"), "\($0)") }

        let y = random([4, 6, 3], 7)
        var worst = 0.0
        // Inner axis: reorder the pieces (every piece carries gradient).
        worst = max(worst, try checkGradients([y]) { inputs in
            let pieces = try inputs[0].split(axis: 1, sizes: [2, 1, 3])
            return try Tensor.concatenate([pieces[2].squared(), pieces[0], pieces[1].scaled(by: 3)], axis: 1)
        })
        // Outer axis, with one piece unused (its rows get zero gradient).
        worst = max(worst, try checkGradients([y]) { inputs in
            let pieces = try inputs[0].split(axis: 0, sizes: [1, 2, 1])
            return try pieces[0] * pieces[2]
        })
        // Last axis, as in splitting a fused projection.
        worst = max(worst, try checkGradients([y]) { inputs in
            let pieces = try inputs[0].split(axis: -1, sizes: [1, 1, 1])
            return try pieces[0] * pieces[1] + pieces[2]
        })
        XCTAssertLessThan(worst, 1e-4)  // saw 2.9e-6
    }

    // MARK: concatenate

    func testConcatenateByHand() throws {
        let a = try Tensor(shape: [2, 1], values: [1, 2])
        let b = try Tensor(shape: [2, 2], values: [3, 4, 5, 6])
        XCTAssertEqual(try Tensor.concatenate([a, b], axis: 1).toArray(), [1, 3, 4, 2, 5, 6])
        XCTAssertEqual(try Tensor.concatenate([b, b], axis: 0).toArray(), [3, 4, 5, 6, 3, 4, 5, 6])
        // A strided view is read in logical order: bᵀ = [[3,5],[4,6]].
        XCTAssertEqual(try Tensor.concatenate([a, b.transposed(0, 1)], axis: -1).toArray(), [1, 3, 5, 2, 4, 6])
        XCTAssertThrowsError(try Tensor.concatenate([a, Tensor.zeros([3, 2])], axis: 1)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("concatenate") && text.contains("[2, 1]") && text.contains("[3, 2]"), text)
        }
        XCTAssertThrowsError(try Tensor.concatenate([], axis: 0))
    }

    func testConcatenateGradients() throws {
        let a = random([2, 3, 4], 8), b = random([2, 1, 4], 9), c = random([2, 2, 4], 10)
        let outer1 = random([1, 3, 4], 11)
        let e1 = try checkGradients([a, b, c]) { try Tensor.concatenate($0, axis: 1).squared() }  // middle axis
        let e2 = try checkGradients([a, outer1]) { try Tensor.concatenate($0, axis: 0).squared() }  // outer axis
        let e3 = try checkGradients([a, random([2, 3, 2], 12)]) { try Tensor.concatenate($0, axis: 2).squared() }  // inner
        // Only the first input needs a gradient: the rule must skip the other.
        let e4 = try checkGradients([a, b], differentiable: [true, false]) { try Tensor.concatenate($0, axis: 1) }
        XCTAssertLessThan(max(e1, e2, e3, e4), 1e-4)  // saw 3.2e-6
    }

    // MARK: broadcast(to:)

    func testBroadcastViewAndGradient() throws {
        let column = try Tensor(shape: [3, 1], values: [1, 2, 3])
        let wide = try column.broadcast(to: [2, 3, 2])
        XCTAssertEqual(wide.strides, [0, 1, 0])
        XCTAssertTrue(wide.storage === column.storage)
        XCTAssertEqual(wide.toArray(), [1, 1, 2, 2, 3, 3, 1, 1, 2, 2, 3, 3])
        // y = Σ broadcast(x) · w: dy/dx[j] = Σ over the repeated axes of w.
        let x = Tensor.zeros([3, 1]).requiringGrad()
        try x.broadcast(to: [2, 3, 2]).sum().backward()
        XCTAssertEqual(x.grad?.toArray(), [4, 4, 4])
        let error = try checkGradients([random([3, 1], 13), random([2, 3, 4], 14)]) {
            try $0[0].broadcast(to: [2, 3, 4]) * $0[1]
        }
        XCTAssertLessThan(error, 1e-4)  // saw 7.4e-7
        XCTAssertThrowsError(try column.broadcast(to: [3, 2, 2])) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("broadcast") && text.contains("[3, 1]") && text.contains("[3, 2, 2]"), text)
        }
    }
}
