import Foundation
import XCTest
@testable import SiloTensor

final class NormalizationTests: XCTestCase {
    private func random(_ shape: [Int], _ seed: UInt64, mean: Float = 0, scale: Float = 1) -> Tensor {
        Tensor.randomNormal(shape, mean: mean, standardDeviation: scale, key: RandomKey(seed: seed))
    }

    // MARK: Forward by hand

    // x = [1, 2, 3, 4]: mean 2.5, biased var = (2.25 + 0.25 + 0.25 + 2.25) / 4 = 1.25,
    // x̂ = (x − 2.5) / √1.25 = [−1.3416, −0.4472, 0.4472, 1.3416]; y = x̂ · [1, 2, 1, 1] + [0, 0, 1, 0].
    // PyTorch layer_norm (eps 1e-5): [−1.3416355, −0.8944237, 1.4472119, 1.3416355].
    func testLayerNormByHand() throws {
        let x = try Tensor(shape: [1, 4], values: [1, 2, 3, 4])
        let weight = Tensor([1, 2, 1, 1])
        let bias = Tensor([0, 0, 1, 0])
        let y = try x.layerNorm(weight: weight, bias: bias, epsilon: 1e-5)
        assertClose(y.toArray(), [-1.341_635_5, -0.894_423_7, 1.447_211_9, 1.341_635_5], relative: 1e-6)
        let plain = try x.layerNorm(weight: nil, bias: nil, epsilon: 0).toArray()
        let s = Float(1 / Foundation.sqrt(1.25))
        assertClose(plain, [-1.5 * s, -0.5 * s, 0.5 * s, 1.5 * s], relative: 1e-6)
    }

    // x = [3, 4]: mean(x²) = (9 + 16) / 2 = 12.5, y = x / √12.5 · w = [0.8485281, 1.1313708] · [1, 0.5].
    // PyTorch rms_norm (eps 1e-6): [0.8485281, 0.5656854].
    func testRMSNormByHand() throws {
        let x = try Tensor(shape: [1, 2], values: [3, 4])
        let y = try x.rmsNorm(weight: Tensor([1, 0.5]), epsilon: 1e-6)
        assertClose(y.toArray(), [0.848_528_1, 0.565_685_4], relative: 1e-6)
        let plain = try x.rmsNorm(weight: nil, epsilon: 0).toArray()
        assertClose(plain, [Float(3 / Foundation.sqrt(12.5)), Float(4 / Foundation.sqrt(12.5))], relative: 1e-6)
    }

    // Rows with a large common offset (mean 1000, spread 1e-2·…): the two-pass variance keeps x̂ at
    // unit variance where E[x²] − E[x]² would cancel. Channels 37 = two vectors + tail.
    func testLayerNormStatisticsAgainstDouble() throws {
        let x = random([3, 37], 1, mean: 1000, scale: 0.5)
        let y = try x.layerNorm(weight: nil, bias: nil, epsilon: 1e-5).toArray()
        let values = x.toArray().map(Double.init)
        var expected: [Float] = []
        for row in 0..<3 {
            let slice = Array(values[(row * 37)..<((row + 1) * 37)])
            let mean = slice.reduce(0, +) / 37
            let variance = slice.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / 37
            expected += slice.map { Float(($0 - mean) / Foundation.sqrt(variance + 1e-5)) }
        }
        let error = assertClose(y, expected, relative: 1e-3, absolute: 1e-3)
        XCTAssertLessThan(error, 1e-3)  // seen 2.0e-4: x itself is only known to 6e-5 at 1000
    }

    // MARK: Gradients

    // LayerNorm: dx = rstd·(g − mean(g) − x̂·mean(g·x̂)), g = dy·w; dw = Σ dy·x̂; db = Σ dy.
    // 70 rows (three row blocks of 32, the last partial) of 7 channels (tail only), and 4 rows of 32.
    func testLayerNormGradients() throws {
        var worst = 0.0
        for shape in [[2, 35, 7], [4, 32]] {
            let channels = shape[shape.count - 1]
            let x = random(shape, 10)
            let weight = random([channels], 11, mean: 1, scale: 0.5)
            let bias = random([channels], 12)
            worst = max(worst, try checkGradients([x, weight, bias]) {
                try $0[0].layerNorm(weight: $0[1], bias: $0[2], epsilon: 1e-5)
            })
            worst = max(worst, try checkGradients([x]) { try $0[0].layerNorm(weight: nil, bias: nil, epsilon: 1e-5) })
            worst = max(worst, try checkGradients([x, weight]) { try $0[0].layerNorm(weight: $0[1], bias: nil, epsilon: 1e-5) })
            worst = max(worst, try checkGradients([x, bias]) { try $0[0].layerNorm(weight: nil, bias: $0[1], epsilon: 1e-5) })
        }
        XCTAssertLessThan(worst, 5e-4)  // seen 1.1e-4
    }

    // RMSNorm: dx = rstd·(g − x̂·mean(g·x̂)), g = dy·w; dw = Σ dy·x̂.
    func testRMSNormGradients() throws {
        var worst = 0.0
        for shape in [[2, 35, 7], [3, 19]] {
            let channels = shape[shape.count - 1]
            let x = random(shape, 20)
            let weight = random([channels], 21, mean: 1, scale: 0.5)
            worst = max(worst, try checkGradients([x, weight]) { try $0[0].rmsNorm(weight: $0[1], epsilon: 1e-6) })
            worst = max(worst, try checkGradients([x]) { try $0[0].rmsNorm(weight: nil, epsilon: 1e-6) })
        }
        XCTAssertLessThan(worst, 5e-4)  // seen 4.5e-5
    }

    // The bias gradient is Σ_rows dy exactly as a plain sum (1 + 2 + … over 70 rows crosses three
    // blocks), and two runs give bit-identical weight gradients.
    func testParameterGradientsAreBlockSumsAndRepeatable() throws {
        let rows = 70, channels = 5
        let x = random([rows, channels], 30)
        let seedValues = (0..<(rows * channels)).map { Float($0 % 11) - 5 }
        let seed = try Tensor(shape: [rows, channels], values: seedValues)
        var weightGradients: [[Float]] = []
        for _ in 0..<2 {
            let weight = Tensor.ones([channels]).requiringGrad()
            let bias = Tensor.zeros([channels]).requiringGrad()
            try x.layerNorm(weight: weight, bias: bias, epsilon: 1e-5).backward(seed: seed)
            let dbias = try XCTUnwrap(bias.grad).toArray()
            for c in 0..<channels {
                let expected = (0..<rows).reduce(Float(0)) { $0 + seedValues[$1 * channels + c] }
                XCTAssertEqual(dbias[c], expected)  // small integers: exact in any order
            }
            weightGradients.append(try XCTUnwrap(weight.grad).toArray())
        }
        XCTAssertEqual(weightGradients[0], weightGradients[1])
    }

    // A frozen input or a frozen weight gets no gradient; the other still does.
    func testFrozenInputsGetNoGradient() throws {
        let x = random([3, 8], 40)
        let weight = random([8], 41).requiringGrad()
        try x.rmsNorm(weight: weight, epsilon: 1e-6).sumForTest().backward()
        XCTAssertNotNil(weight.grad)
        XCTAssertNil(x.grad)

        let trainable = x.requiringGrad()
        let frozenWeight = random([8], 42)
        let frozenBias = random([8], 43)
        try trainable.layerNorm(weight: frozenWeight, bias: frozenBias, epsilon: 1e-5).sumForTest().backward()
        XCTAssertNotNil(trainable.grad)
        XCTAssertNil(frozenWeight.grad)
        XCTAssertNil(frozenBias.grad)
    }

    // A strided view (a transpose) normalises like its dense copy.
    func testStridedInput() throws {
        let base = random([6, 4], 50)
        let view = Tensor(storage: base.storage, shape: [4, 6], strides: [1, 4], offset: 0)
        XCTAssertFalse(view.isContiguous)
        let weight = random([6], 51)
        assertClose(try view.layerNorm(weight: weight, bias: nil, epsilon: 1e-5).toArray(),
                    try view.contiguousCopy().layerNorm(weight: weight, bias: nil, epsilon: 1e-5).toArray(),
                    relative: 0, absolute: 0)
        assertClose(try view.rmsNorm(weight: weight, epsilon: 1e-5).toArray(),
                    try view.contiguousCopy().rmsNorm(weight: weight, epsilon: 1e-5).toArray(),
                    relative: 0, absolute: 0)
    }

    // MARK: Errors

    func testWrongParameterShapesNameOpAndShapes() {
        let x = Tensor.zeros([2, 3, 8])
        XCTAssertThrowsError(try x.layerNorm(weight: Tensor.ones([7]), bias: nil, epsilon: 1e-5)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("layerNorm") && text.contains("[2, 3, 8]") && text.contains("[7]"), text)
        }
        XCTAssertThrowsError(try x.layerNorm(weight: nil, bias: Tensor.ones([1, 8]), epsilon: 1e-5)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("layerNorm") && text.contains("bias") && text.contains("[1, 8]"), text)
        }
        XCTAssertThrowsError(try x.rmsNorm(weight: Tensor.ones([3]), epsilon: 1e-6)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("rmsNorm") && text.contains("[2, 3, 8]") && text.contains("[3]"), text)
        }
        XCTAssertThrowsError(try x.rmsNorm(weight: nil, epsilon: -1)) { error in
            XCTAssertTrue("\(error)".contains("epsilon"), "\(error)")
        }
        XCTAssertThrowsError(try Tensor(scalar: 1).layerNorm(weight: nil, bias: nil, epsilon: 1e-5)) { error in
            XCTAssertTrue("\(error)".contains("layerNorm"), "\(error)")
        }
    }
}

extension Tensor {
    /// Σ of all elements as a recorded scalar (dL/dx = 1), so these tests do not depend on the
    /// reductions of another file.
    func sumForTest() -> Tensor {
        let total = toArray().reduce(0, +)
        let shape = self.shape
        return Tensor(scalar: total).recorded("sumForTest", inputs: [self]) { _, needs in
            [needs[0] ? Tensor.ones(shape) : nil]
        }
    }
}
