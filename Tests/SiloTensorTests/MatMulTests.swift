import XCTest
@testable import SiloTensor

final class MatMulTests: XCTestCase {
    private func random(_ shape: [Int], _ seed: UInt64) -> Tensor {
        Tensor.randomNormal(shape, key: RandomKey(seed: seed))
    }

    // out[i][j] = Σk a[i][k]·b[k][j]: a 2x3 by hand.
    func testForwardByHand() throws {
        let a = try Tensor(shape: [2, 3], values: [1, 2, 3, 4, 5, 6])
        let b = try Tensor(shape: [3, 2], values: [7, 8, 9, 10, 11, 12])
        XCTAssertEqual(try a.matmul(b).toArray(), [58, 64, 139, 154])
        XCTAssertEqual(try a.matmul(a, transposeB: true).toArray(), [14, 32, 32, 77])
        XCTAssertEqual(try a.matmul(a, transposeA: true).toArray(),
                       [17, 22, 27, 22, 29, 36, 27, 36, 45])
    }

    // dA = dOut·Bᵀ, dB = Aᵀ·dOut, for every transpose combination, shared and batched B.
    func testGradientsAllTransposes() throws {
        for transposeA in [false, true] {
            for transposeB in [false, true] {
                let a = random(transposeA ? [2, 4, 3] : [2, 3, 4], 1)
                let shared = random(transposeB ? [5, 4] : [4, 5], 2)
                let batched = random(transposeB ? [2, 5, 4] : [2, 4, 5], 3)
                let e1 = try checkGradients([a, shared]) { try $0[0].matmul($0[1], transposeA: transposeA, transposeB: transposeB) }
                let e2 = try checkGradients([a, batched]) { try $0[0].matmul($0[1], transposeA: transposeA, transposeB: transposeB) }
                XCTAssertLessThan(max(e1, e2), 2e-3)
            }
        }
    }

    func testShapeMismatchNamesOpAndShapes() {
        let a = Tensor.zeros([2, 3])
        let b = Tensor.zeros([4, 5])
        XCTAssertThrowsError(try a.matmul(b)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("matmul") && text.contains("[2, 3]") && text.contains("[4, 5]"), text)
        }
    }

    func testFrozenWeightGetsNoGradient() throws {
        let x = random([3, 4], 4).requiringGrad()
        let w = random([5, 4], 5)  // frozen
        let y = try x.matmul(w, transposeB: true)
        try y.backward(seed: Tensor.ones(y.shape))
        XCTAssertNotNil(x.grad)
        XCTAssertNil(w.grad)
        XCTAssertFalse(w.requiresGrad)
    }
}
