import XCTest
@testable import SiloTensor

final class LinearTests: XCTestCase {
    // y = x·Wᵀ + b: dy/dx = W, dy/dW = xᵀ (per row), dy/db = 1.
    func testByHand() throws {
        let x = try Tensor(shape: [1, 2], values: [1, 2])
        let w = try Tensor(shape: [3, 2], values: [1, 0, 0, 1, 1, 1])
        let b = Tensor([10, 20, 30])
        XCTAssertEqual(try x.linear(weight: w, bias: b).toArray(), [11, 22, 33])
        XCTAssertEqual(try x.linear(weight: w).toArray(), [1, 2, 3])
    }

    func testGradientsWithAndWithoutBias() throws {
        let x = Tensor.randomNormal([2, 3, 5], key: RandomKey(seed: 1))
        let w = Tensor.randomNormal([4, 5], key: RandomKey(seed: 2))
        let b = Tensor.randomNormal([4], key: RandomKey(seed: 3))
        let withBias = try checkGradients([x, w, b]) { try $0[0].linear(weight: $0[1], bias: $0[2]) }
        let without = try checkGradients([x, w]) { try $0[0].linear(weight: $0[1]) }
        XCTAssertLessThan(max(withBias, without), 1e-3)
    }

    // The fused kernel equals the composition matmul(transposeB) + bias, whose parts are checked
    // against PyTorch in ReferenceTests; the gradients too.
    func testEqualsMatmulPlusBias() throws {
        let x = Tensor.randomNormal([3, 7, 16], key: RandomKey(seed: 4)).requiringGrad()
        let w = Tensor.randomNormal([9, 16], key: RandomKey(seed: 5)).requiringGrad()
        let b = Tensor.randomNormal([9], key: RandomKey(seed: 6)).requiringGrad()
        let seed = Tensor.randomNormal([3, 7, 9], key: RandomKey(seed: 7))
        let fused = try x.linear(weight: w, bias: b)
        try fused.backward(seed: seed)
        let grads = [x.grad!, w.grad!, b.grad!].map { $0.toArray() }
        let x2 = x.detached().requiringGrad(), w2 = w.detached().requiringGrad(), b2 = b.detached().requiringGrad()
        let composed = try x2.matmul(w2, transposeB: true) + b2
        try composed.backward(seed: seed)
        assertClose(fused.toArray(), composed.toArray(), relative: 1e-5, absolute: 1e-5, "forward")
        for (a, e) in zip(grads, [x2.grad!, w2.grad!, b2.grad!].map { $0.toArray() }) {
            assertClose(a, e, relative: 1e-5, absolute: 1e-5, "gradient")
        }
    }

    func testShapeErrorsNameOpAndShapes() {
        XCTAssertThrowsError(try Tensor.zeros([2, 5]).linear(weight: Tensor.zeros([4, 6]))) { error in
            XCTAssertTrue("\(error)".contains("linear") && "\(error)".contains("[2, 5]") && "\(error)".contains("[4, 6]"), "\(error)")
        }
        XCTAssertThrowsError(try Tensor.zeros([2, 5]).linear(weight: Tensor.zeros([4, 5]), bias: Tensor.zeros([3]))) { error in
            XCTAssertTrue("\(error)".contains("[3]"), "\(error)")
        }
    }

    func testFrozenWeightGetsNoGradient() throws {
        let x = Tensor.randomNormal([4, 5], key: RandomKey(seed: 8)).requiringGrad()
        let w = Tensor.randomNormal([3, 5], key: RandomKey(seed: 9))
        let y = try x.linear(weight: w, bias: Tensor.zeros([3]))
        try y.backward(seed: Tensor.ones(y.shape))
        XCTAssertNotNil(x.grad)
        XCTAssertNil(w.grad)
    }
}
