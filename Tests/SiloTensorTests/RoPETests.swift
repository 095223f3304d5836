import XCTest
@testable import SiloTensor

final class RoPETests: XCTestCase {
    private func random(_ shape: [Int], _ seed: UInt64) -> Tensor {
        Tensor.randomNormal(shape, key: RandomKey(seed: seed))
    }

    // θᵢ = theta^(−2i/D): D = 4, theta = 10000 → [10000⁰, 10000^(−1/2)] = [1, 0.01].
    func testInverseFrequenciesByHand() {
        let frequencies = Tensor.ropeInverseFrequencies(dimension: 4, theta: 10_000)
        XCTAssertEqual(frequencies.count, 2)
        XCTAssertEqual(frequencies[0], 1, accuracy: 1e-7)
        XCTAssertEqual(frequencies[1], 0.01, accuracy: 1e-8)
    }

    // D = 4, theta = 100 → θ = [1, 0.1]. At position 0 nothing rotates; at position 1 the angles are 1 and 0.1.
    // x = [1, 2, 3, 4].
    // rotate-half pairs (x0, x2) by 1 and (x1, x3) by 0.1:
    //   y0 = 1·cos1 − 3·sin1, y2 = 3·cos1 + 1·sin1, y1 = 2·cos.1 − 4·sin.1, y3 = 4·cos.1 + 2·sin.1
    // interleaved pairs (x0, x1) by 1 and (x2, x3) by 0.1:
    //   y0 = 1·cos1 − 2·sin1, y1 = 2·cos1 + 1·sin1, y2 = 3·cos.1 − 4·sin.1, y3 = 4·cos.1 + 3·sin.1
    func testBothStylesByHand() throws {
        let frequencies = Tensor.ropeInverseFrequencies(dimension: 4, theta: 100)
        let (cosTable, sinTable) = Tensor.ropeTables(positions: [0, 1], inverseFrequencies: frequencies)
        XCTAssertEqual(cosTable.shape, [2, 2])
        let x = try Tensor(shape: [1, 2, 1, 4], values: [1, 2, 3, 4, 1, 2, 3, 4])
        let c1 = Foundation.cos(1.0), s1 = Foundation.sin(1.0), c2 = Foundation.cos(0.1), s2 = Foundation.sin(0.1)
        let half = try x.applyingRoPE(cos: cosTable, sin: sinTable, style: .rotateHalf).toArray()
        let expectedHalf: [Double] = [1, 2, 3, 4,
                                      c1 - 3 * s1, 2 * c2 - 4 * s2, 3 * c1 + s1, 4 * c2 + 2 * s2]
        assertClose(half, expectedHalf.map(Float.init), relative: 1e-6, absolute: 1e-6, "rotateHalf")
        let interleaved = try x.applyingRoPE(cos: cosTable, sin: sinTable, style: .interleaved).toArray()
        let expectedInterleaved: [Double] = [1, 2, 3, 4,
                                             c1 - 2 * s1, 2 * c1 + s1, 3 * c2 - 4 * s2, 4 * c2 + 3 * s2]
        assertClose(interleaved, expectedInterleaved.map(Float.init), relative: 1e-6, absolute: 1e-6, "interleaved")
    }

    /// Plain-loop reference: pair (first(i), second(i)) rotated by position·θᵢ, in Double.
    private func reference(_ x: [Float], shape: [Int], positions: [Int], theta: Float, style: RoPEStyle) -> [Float] {
        let (B, T, H, D) = (shape[0], shape[1], shape[2], shape[3])
        let frequencies = Tensor.ropeInverseFrequencies(dimension: D, theta: theta)
        var y = x
        for b in 0..<B { for t in 0..<T { for h in 0..<H {
            let base = ((b * T + t) * H + h) * D
            for i in 0..<D / 2 {
                let (first, second) = style == .rotateHalf ? (i, i + D / 2) : (2 * i, 2 * i + 1)
                let angle = Double(Float(positions[t]) * frequencies[i])
                let x1 = Double(x[base + first]), x2 = Double(x[base + second])
                y[base + first] = Float(x1 * Foundation.cos(angle) - x2 * Foundation.sin(angle))
                y[base + second] = Float(x2 * Foundation.cos(angle) + x1 * Foundation.sin(angle))
            }
        } } }
        return y
    }

    // D = 20: 8-wide vector steps plus a scalar tail; positions offset as in a KV cache.
    func testAgainstReferenceBothStyles() throws {
        let shape = [2, 3, 2, 20]
        let positions = [5, 6, 7]
        let x = random(shape, 1)
        let tables = Tensor.ropeTables(positions: positions,
                                       inverseFrequencies: Tensor.ropeInverseFrequencies(dimension: 20, theta: 10_000))
        for style in [RoPEStyle.rotateHalf, .interleaved] {
            let y = try x.applyingRoPE(cos: tables.cos, sin: tables.sin, style: style)
            let error = assertClose(y.toArray(), reference(x.toArray(), shape: shape, positions: positions, theta: 10_000, style: style),
                                    relative: 1e-5, absolute: 1e-5, "\(style)")
            XCTAssertLessThan(error, 1e-6)
        }
    }

    // A strided view (the query part of a fused (B, T, 2·H·D) projection) gives the same result as its dense copy.
    func testStridedInputMatchesDense() throws {
        let (B, T, H, D) = (2, 3, 2, 8)
        let fused = random([B, T, 2 * H * D], 2)
        let view = Tensor(storage: fused.storage, shape: [B, T, H, D],
                          strides: [T * 2 * H * D, 2 * H * D, D, 1], offset: H * D)
        XCTAssertFalse(view.isContiguous)
        let tables = Tensor.ropeTables(positions: [0, 1, 2],
                                       inverseFrequencies: Tensor.ropeInverseFrequencies(dimension: D, theta: 10_000))
        for style in [RoPEStyle.rotateHalf, .interleaved] {
            let strided = try view.applyingRoPE(cos: tables.cos, sin: tables.sin, style: style)
            let dense = try view.contiguousCopy().applyingRoPE(cos: tables.cos, sin: tables.sin, style: style)
            XCTAssertEqual(strided.shape, [B, T, H, D])
            XCTAssertTrue(strided.isContiguous)
            XCTAssertEqual(strided.toArray(), dense.toArray())
        }
    }

    // GGUF llama checkpoints permute Q/K rows so that interleaved RoPE equals Hugging Face's rotate-half:
    // x'[2i] = x[i], x'[2i+1] = x[i + D/2]. Rotating x' interleaved and un-permuting gives rotate-half of x.
    func testInterleavedOnPermutedChannelsEqualsRotateHalf() throws {
        let (B, T, H, D) = (1, 4, 3, 16)
        let x = random([B, T, H, D], 3)
        let values = x.toArray()
        var permuted = values
        for row in 0..<(B * T * H) {
            for i in 0..<D / 2 {
                permuted[row * D + 2 * i] = values[row * D + i]
                permuted[row * D + 2 * i + 1] = values[row * D + i + D / 2]
            }
        }
        let tables = Tensor.ropeTables(positions: [0, 3, 9, 100],
                                       inverseFrequencies: Tensor.ropeInverseFrequencies(dimension: D, theta: 100_000))
        let half = try x.applyingRoPE(cos: tables.cos, sin: tables.sin, style: .rotateHalf).toArray()
        let interleaved = try Tensor(shape: [B, T, H, D], values: permuted)
            .applyingRoPE(cos: tables.cos, sin: tables.sin, style: .interleaved).toArray()
        var unpermuted = interleaved
        for row in 0..<(B * T * H) {
            for i in 0..<D / 2 {
                unpermuted[row * D + i] = interleaved[row * D + 2 * i]
                unpermuted[row * D + i + D / 2] = interleaved[row * D + 2 * i + 1]
            }
        }
        XCTAssertEqual(unpermuted, half)
    }

    // y = R(θ)·x per pair, so dx = R(θ)ᵀ·dy = R(−θ)·dy.
    func testGradientsBothStyles() throws {
        let tables = Tensor.ropeTables(positions: [2, 3, 4],
                                       inverseFrequencies: Tensor.ropeInverseFrequencies(dimension: 18, theta: 10_000))
        for style in [RoPEStyle.rotateHalf, .interleaved] {
            let x = random([2, 3, 2, 18], 4)
            let error = try checkGradients([x]) { try $0[0].applyingRoPE(cos: tables.cos, sin: tables.sin, style: style) }
            XCTAssertLessThan(error, 1e-4, "\(style)")
        }
    }

    func testErrorsNameOpAndShapes() {
        let tables = Tensor.ropeTables(positions: [0, 1], inverseFrequencies: [1, 0.1])
        XCTAssertThrowsError(try Tensor.zeros([1, 2, 1, 5]).applyingRoPE(cos: tables.cos, sin: tables.sin, style: .rotateHalf)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("applyingRoPE") && text.contains("[1, 2, 1, 5]"), text)
        }
        XCTAssertThrowsError(try Tensor.zeros([1, 3, 1, 4]).applyingRoPE(cos: tables.cos, sin: tables.sin, style: .interleaved)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("applyingRoPE") && text.contains("[1, 3, 1, 4]") && text.contains("[2, 2]"), text)
        }
        XCTAssertThrowsError(try Tensor.zeros([3, 4]).applyingRoPE(cos: tables.cos, sin: tables.sin, style: .interleaved)) { error in
            XCTAssertTrue("\(error)".contains("applyingRoPE"), "\(error)")
        }
    }
}
