import Foundation
import XCTest
@testable import SiloTensor

final class SoftmaxCrossEntropyTests: XCTestCase {
    private func random(_ shape: [Int], _ seed: UInt64, scale: Float = 1) -> Tensor {
        Tensor.randomNormal(shape, standardDeviation: scale, key: RandomKey(seed: seed))
    }

    /// Softmax rows computed in Double from the definition, for comparison.
    private func referenceSoftmax(_ values: [Float], columns: Int) -> [Float] {
        var result: [Float] = []
        for start in stride(from: 0, to: values.count, by: columns) {
            let row = values[start..<start + columns].map(Double.init)
            let maximum = row.max() ?? 0
            let exps = row.map { Foundation.exp($0 - maximum) }
            let sum = exps.reduce(0, +)
            result += exps.map { Float($0 / sum) }
        }
        return result
    }

    // MARK: Softmax forward

    // softmax([0, ln 2, ln 3]) = [1, 2, 3] / (1 + 2 + 3); log-softmax = log of that.
    func testSoftmaxByHand() throws {
        let x = try Tensor(shape: [1, 3], values: [0, Float(Foundation.log(2.0)), Float(Foundation.log(3.0))])
        assertClose(try x.softmax().toArray(), [1 / 6, 2 / 6, 3 / 6], relative: 1e-6)
        assertClose(try x.logSoftmax().toArray(),
                    [Float(Foundation.log(1.0 / 6)), Float(Foundation.log(2.0 / 6)), Float(Foundation.log(3.0 / 6))],
                    relative: 1e-6)
    }

    // Max subtraction: softmax([1000, 1001]) = [1, e] / (1 + e), no overflow; a −∞ entry gets 0.
    func testSoftmaxIsStableAndMasksMinusInfinity() throws {
        let large = try Tensor(shape: [2], values: [1000, 1001]).softmax().toArray()
        let e = Float(M_E)
        assertClose(large, [1 / (1 + e), e / (1 + e)], relative: 1e-6)
        let masked = try Tensor(shape: [3], values: [0, -.infinity, 0]).softmax().toArray()
        XCTAssertEqual(masked, [0.5, 0, 0.5])
        let logMasked = try Tensor(shape: [3], values: [0, -.infinity, 0]).logSoftmax().toArray()
        XCTAssertEqual(logMasked[1], -.infinity)
        XCTAssertEqual(logMasked[0], -Float(Foundation.log(2.0)), accuracy: 1e-7)
    }

    // A NaN logit (of either sign) poisons its row instead of vanishing: training must see it.
    func testNaNPropagates() throws {
        for nan in [Float.nan, -Float.nan] {
            let logits = try Tensor(shape: [2, 20], values: (0..<40).map { $0 == 25 ? nan : Float($0 % 7) })
            let probabilities = try logits.softmax().toArray()
            XCTAssertTrue(probabilities[20..<40].allSatisfy(\.isNaN))
            XCTAssertFalse(probabilities[0..<20].contains(where: \.isNaN))
            let losses = try Tensor.crossEntropy(logits: logits, targets: [1, 2], reduction: .none).toArray()
            XCTAssertFalse(losses[0].isNaN)
            XCTAssertTrue(losses[1].isNaN)
        }
    }

    // Rows of 37 (two full vectors and a padded tail) and of 3 (tail only) against Double.
    func testSoftmaxMatchesDoubleReferenceWithTails() throws {
        for columns in [3, 16, 37] {
            let x = random([5, columns], UInt64(columns), scale: 4)
            let error = assertClose(try x.softmax().toArray(), referenceSoftmax(x.toArray(), columns: columns),
                                    relative: 2e-6, absolute: 1e-7, "columns \(columns)")
            XCTAssertLessThan(error, 1e-6)  // seen 6.0e-8
            let logReference = referenceSoftmax(x.toArray(), columns: columns).map { Foundation.log($0) }
            assertClose(try x.logSoftmax().toArray(), logReference, relative: 1e-5, absolute: 2e-6, "log columns \(columns)")
        }
    }

    // softmax over axis 0 of a (3, 4) matrix = softmax over rows of its transpose.
    func testSoftmaxOverLeadingAxis() throws {
        let x = random([3, 4], 11)
        let values = x.toArray()
        var transposed = [Float](repeating: 0, count: 12)
        for i in 0..<3 { for j in 0..<4 { transposed[j * 3 + i] = values[i * 4 + j] } }
        let reference = referenceSoftmax(transposed, columns: 3)
        let y = try x.softmax(axis: 0)
        XCTAssertEqual(y.shape, [3, 4])
        for i in 0..<3 {
            for j in 0..<4 { XCTAssertEqual(y[i, j], reference[j * 3 + i], accuracy: 1e-6) }
        }
        // Middle axis of a rank-3 tensor: each (b, :, k) column sums to 1.
        let z = try random([2, 5, 3], 12).softmax(axis: 1)
        for b in 0..<2 {
            for k in 0..<3 {
                let total = (0..<5).reduce(Float(0)) { $0 + z[b, $1, k] }
                XCTAssertEqual(total, 1, accuracy: 1e-6)
            }
        }
    }

    func testSoftmaxAxisErrors() {
        XCTAssertThrowsError(try Tensor(scalar: 1).softmax()) { error in
            XCTAssertTrue("\(error)".contains("softmax"), "\(error)")
        }
        XCTAssertThrowsError(try Tensor.zeros([2, 3]).logSoftmax(axis: 2)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("logSoftmax") && text.contains("[2, 3]") && text.contains("2"), text)
        }
    }

    // MARK: Softmax backward

    // d softmax: dx = y ⊙ (g − Σ g·y); d log-softmax: dx = g − softmax · Σ g. Checked numerically on
    // every axis of a rank-3 tensor, with a tail-sized last axis.
    func testSoftmaxGradients() throws {
        var worst = 0.0
        for axis in [-1, 0, 1] {
            let x = random([2, 3, 19], 20 + UInt64(axis + 1))
            worst = max(worst, try checkGradients([x]) { try $0[0].softmax(axis: axis) })
            worst = max(worst, try checkGradients([x]) { try $0[0].logSoftmax(axis: axis) })
        }
        XCTAssertLessThan(worst, 5e-4)  // seen 5.0e-5
    }

    // MARK: Cross-entropy forward

    // loss = log Σ exp(logits) − logits[target]:
    //   row 0: logits [0, ln2, ln3], target 2 → log 6 − ln 3 = ln 2 = 0.6931472
    //   row 1: target −100 (ignored) → 0
    //   row 2: logits [0.5, −0.5, 2], target 0 → log(e^0.5 + e^−0.5 + e^2) − 0.5 = 1.7663679
    // PyTorch: none [0.6931472, 0, 1.7663679], sum 2.4595151, mean 1.2297575 (over 2 valid rows).
    func testCrossEntropyByHandAllReductions() throws {
        let logits = try Tensor(shape: [3, 3], values: [0, Float(Foundation.log(2.0)), Float(Foundation.log(3.0)),
                                                        1, 2, 3,
                                                        0.5, -0.5, 2.0])
        let targets: [Int32] = [2, -100, 0]
        let none = try Tensor.crossEntropy(logits: logits, targets: targets, reduction: .none)
        XCTAssertEqual(none.shape, [3])
        assertClose(none.toArray(), [0.693_147_2, 0, 1.766_367_9], relative: 1e-6)
        let sum = try Tensor.crossEntropy(logits: logits, targets: targets, reduction: .sum)
        XCTAssertEqual(sum.shape, [])
        XCTAssertEqual(sum.scalar, 2.459_515_1, accuracy: 2e-6)
        let mean = try Tensor.crossEntropy(logits: logits, targets: targets)
        XCTAssertEqual(mean.shape, [])
        XCTAssertEqual(mean.scalar, 1.229_757_5, accuracy: 1e-6)
    }

    // Cross-entropy agrees with −logSoftmax picked at the target, for a long row (GPT-2's V) and
    // 3-D logits whose `.none` output keeps the leading shape.
    func testCrossEntropyMatchesLogSoftmax() throws {
        let vocabulary = 50_257
        let logits = random([2, vocabulary], 31, scale: 3)
        let targets: [Int32] = [17, 50_256]
        let losses = try Tensor.crossEntropy(logits: logits, targets: targets, reduction: .none).toArray()
        let values = logits.toArray()
        for row in 0..<2 {
            let slice = values[(row * vocabulary)..<((row + 1) * vocabulary)].map(Double.init)
            let maximum = slice.max() ?? 0
            let lse = maximum + Foundation.log(slice.reduce(0) { $0 + Foundation.exp($1 - maximum) })
            XCTAssertEqual(Double(losses[row]), lse - slice[Int(targets[row])], accuracy: 1e-4)
        }

        let small = random([2, 3, 5], 32)
        let ids: [Int32] = [0, 4, 2, 1, 3, 3]
        let perPosition = try Tensor.crossEntropy(logits: small, targets: ids, reduction: .none)
        XCTAssertEqual(perPosition.shape, [2, 3])
        let logProbabilities = try small.logSoftmax()
        for b in 0..<2 {
            for t in 0..<3 {
                XCTAssertEqual(perPosition[b, t], -logProbabilities[b, t, Int(ids[b * 3 + t])], accuracy: 1e-5)
            }
        }
    }

    // With every target ignored, `.mean` is 0 (PyTorch: NaN) and the gradient is all zeros.
    func testCrossEntropyAllIgnoredMeanIsZero() throws {
        let logits = random([2, 4], 40).requiringGrad()
        let loss = try Tensor.crossEntropy(logits: logits, targets: [-100, -100])
        XCTAssertEqual(loss.scalar, 0)
        try loss.backward()
        XCTAssertEqual(logits.grad?.toArray(), [Float](repeating: 0, count: 8))
        let custom = try Tensor.crossEntropy(logits: logits.detached(), targets: [-1, -1], ignoreIndex: -1, reduction: .sum)
        XCTAssertEqual(custom.scalar, 0)
    }

    // MARK: Cross-entropy backward

    // dlogits = (softmax − onehot) · dLoss/dloss[n] (/ n_valid for the mean), zero on ignored rows.
    func testCrossEntropyGradientsAllReductionsWithIgnoredTargets() throws {
        let logits = random([2, 3, 19], 50, scale: 2)
        let targets: [Int32] = [3, -100, 18, 0, -100, 7]
        var worst = 0.0
        for reduction in [LossReduction.mean, .sum, .none] {
            worst = max(worst, try checkGradients([logits]) {
                try Tensor.crossEntropy(logits: $0[0], targets: targets, reduction: reduction)
            })
        }
        // A custom ignore index, and no ignored position at all.
        worst = max(worst, try checkGradients([logits]) {
            try Tensor.crossEntropy(logits: $0[0], targets: [3, 5, 18, 0, 5, 7], ignoreIndex: 5)
        })
        worst = max(worst, try checkGradients([logits]) {
            try Tensor.crossEntropy(logits: $0[0], targets: [3, 1, 18, 0, 2, 7], reduction: .sum)
        })
        XCTAssertLessThan(worst, 5e-4)  // seen 4.3e-5
    }

    // The ignored row's gradient is exactly zero, and a valid row's gradient sums to 0 (Σ softmax = 1).
    func testCrossEntropyGradientStructure() throws {
        let logits = random([2, 5], 60).requiringGrad()
        let loss = try Tensor.crossEntropy(logits: logits, targets: [-100, 3])
        try loss.backward()
        let grad = try XCTUnwrap(logits.grad).toArray()
        XCTAssertEqual(Array(grad[0..<5]), [0, 0, 0, 0, 0])
        XCTAssertEqual(grad[5..<10].reduce(0, +), 0, accuracy: 1e-6)
        XCTAssertLessThan(grad[8], 0)  // target column: p − 1 < 0
    }

    // MARK: Errors

    func testCrossEntropyRejectsBadTargets() {
        let logits = Tensor.zeros([2, 3, 7])
        XCTAssertThrowsError(try Tensor.crossEntropy(logits: logits, targets: [0, 1, 2, 7, 4, 5])) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("crossEntropy") && text.contains("position 3") && text.contains("0..<7"), text)
        }
        XCTAssertThrowsError(try Tensor.crossEntropy(logits: logits, targets: [0, 1, -2, 0, 0, 0])) { error in
            XCTAssertTrue("\(error)".contains("position 2"), "\(error)")
        }
        XCTAssertThrowsError(try Tensor.crossEntropy(logits: logits, targets: [0, 1, 2])) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("crossEntropy") && text.contains("[2, 3, 7]") && text.contains("[3]"), text)
        }
        XCTAssertThrowsError(try Tensor.crossEntropy(logits: Tensor.zeros([2, 0]), targets: [0, 0])) { error in
            XCTAssertTrue("\(error)".contains("crossEntropy"), "\(error)")
        }
    }
}
