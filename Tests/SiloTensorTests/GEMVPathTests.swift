import XCTest
@testable import SiloTensor

/// The one-row (M = 1) and one-column (N = 1) products that `MatMulKernel.gemm` sends to `cblas_sgemv`
/// (decoding one token) against a Float64 reference and against the `cblas_sgemm` path (the same
/// vector as row 0 of a two-row product), for every transpose flag, with padded leading dimensions,
/// alpha ≠ 1 and beta ∈ {0, 1}.
final class GEMVPathTests: XCTestCase {
    private func values(_ count: Int, _ seed: UInt64) -> [Float] {
        Tensor.randomNormal([count], key: RandomKey(seed: seed)).toArray()
    }

    /// Largest |x - reference| / max(1, |reference|); infinity if x holds a NaN or infinity.
    private func relativeError(_ x: [Float], _ reference: [Double]) -> Double {
        precondition(x.count == reference.count)
        var worst = 0.0
        for (value, expected) in zip(x, reference) {
            guard value.isFinite else { return .infinity }  // max() would swallow a NaN
            worst = max(worst, abs(Double(value) - expected) / max(1, abs(expected)))
        }
        return worst
    }

    /// Stored (rows, columns) matrix with row stride `leading` ≥ columns (padding holds garbage).
    private struct Stored {
        var data: [Float]
        var rows: Int, columns: Int, leading: Int
        /// Element (i, j) of op(stored): the stored (j, i) when transposed.
        func logical(_ i: Int, _ j: Int, transposed: Bool) -> Float {
            transposed ? data[j * leading + i] : data[i * leading + j]
        }
    }

    private func stored(rows: Int, columns: Int, padding: Int, seed: UInt64) -> Stored {
        let leading = columns + padding
        var data = values(rows * leading, seed)
        for row in 0..<rows { for column in columns..<leading { data[row * leading + column] = .nan } }
        return Stored(data: data, rows: rows, columns: columns, leading: leading)
    }

    /// out (M,N) through MatMulKernel.gemm with the output's row stride ldc = N + 2; `initial` fills it.
    private func kernel(_ a: Stored, _ b: Stored, transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int,
                        alpha: Float, beta: Float, initial: [Float]) -> [Float] {
        let ldc = n + 2
        var out = [Float](repeating: -7, count: m * ldc)
        for i in 0..<m { for j in 0..<n { out[i * ldc + j] = initial[i * n + j] } }
        a.data.withUnsafeBufferPointer { pa in
            b.data.withUnsafeBufferPointer { pb in
                out.withUnsafeMutableBufferPointer { po in
                    MatMulKernel.gemm(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: alpha,
                                      a: pa.baseAddress!, lda: a.leading, b: pb.baseAddress!, ldb: b.leading,
                                      beta: beta, out: po.baseAddress!, ldc: ldc)
                }
            }
        }
        // The padding of the output rows is never written.
        for i in 0..<m { for j in n..<ldc { XCTAssertEqual(out[i * ldc + j], -7) } }
        return (0..<m).flatMap { i in (0..<n).map { j in out[i * ldc + j] } }
    }

    // out = alpha · op(a) · op(b) + beta · out, element by element in Float64.
    private func reference(_ a: Stored, _ b: Stored, transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int,
                           alpha: Float, beta: Float, initial: [Float]) -> [Double] {
        var out = [Double](repeating: 0, count: m * n)
        for i in 0..<m {
            for j in 0..<n {
                var sum = 0.0
                for p in 0..<k {
                    sum += Double(a.logical(i, p, transposed: transposeA)) * Double(b.logical(p, j, transposed: transposeB))
                }
                out[i * n + j] = Double(alpha) * sum + (beta == 0 ? 0 : Double(beta) * Double(initial[i * n + j]))
            }
        }
        return out
    }

    // M = 1: a is one row (stored (1,K), or (K,1) used transposed); the sgemm comparison uses a two-row
    // a whose row 0 is that vector.
    func testOneRowEveryTransposeMatchesReferenceAndGEMM() throws {
        let k = 37, n = 29
        var worst = 0.0
        for transposeA in [false, true] {
            for transposeB in [false, true] {
                for (alpha, beta) in [(Float(1), Float(0)), (0.5, 1)] {
                    // Two-row op(a) (2,K): stored (2,K) or (K,2).
                    let a2 = transposeA ? stored(rows: k, columns: 2, padding: 3, seed: 1)
                                        : stored(rows: 2, columns: k, padding: 3, seed: 1)
                    let b = transposeB ? stored(rows: n, columns: k, padding: 5, seed: 2)
                                       : stored(rows: k, columns: n, padding: 5, seed: 2)
                    let initial2 = values(2 * n, 3)
                    // With beta = 0 the old output must be ignored, even NaN.
                    let initial1 = beta == 0 ? [Float](repeating: .nan, count: n) : Array(initial2.prefix(n))
                    let gemv = kernel(a2, b, transposeA: transposeA, transposeB: transposeB, m: 1, n: n, k: k,
                                      alpha: alpha, beta: beta, initial: initial1)
                    let gemm = kernel(a2, b, transposeA: transposeA, transposeB: transposeB, m: 2, n: n, k: k,
                                      alpha: alpha, beta: beta, initial: initial2)
                    let expected = reference(a2, b, transposeA: transposeA, transposeB: transposeB, m: 1, n: n, k: k,
                                             alpha: alpha, beta: beta, initial: Array(initial2.prefix(n)))
                    let error = relativeError(gemv, expected)
                    let versusGEMM = relativeError(gemv, Array(gemm.prefix(n)).map(Double.init))
                    XCTAssertLessThan(error, 1e-5, "M=1 transposeA \(transposeA) transposeB \(transposeB) beta \(beta)")
                    XCTAssertLessThan(versusGEMM, 1e-5, "M=1 vs sgemm, transposeA \(transposeA) transposeB \(transposeB)")
                    worst = max(worst, error, versusGEMM)
                }
            }
        }
        XCTAssertLessThan(worst, 1e-5)  // seen: 1.1e-6
    }

    // N = 1: b is one column (stored (K,1), or (1,K) used transposed), the output a column with stride
    // ldc; the sgemm comparison uses a two-column b whose column 0 is that vector.
    func testOneColumnEveryTransposeMatchesReferenceAndGEMM() throws {
        let m = 31, k = 23
        var worst = 0.0
        for transposeA in [false, true] {
            for transposeB in [false, true] {
                for (alpha, beta) in [(Float(1), Float(0)), (-2, 1)] {
                    let a = transposeA ? stored(rows: k, columns: m, padding: 4, seed: 4)
                                       : stored(rows: m, columns: k, padding: 4, seed: 4)
                    let b2 = transposeB ? stored(rows: 2, columns: k, padding: 1, seed: 5)
                                        : stored(rows: k, columns: 2, padding: 1, seed: 5)
                    let initial2 = values(m * 2, 6)
                    let column0 = (0..<m).map { initial2[$0 * 2] }
                    let initial1 = beta == 0 ? [Float](repeating: .nan, count: m) : column0
                    let gemv = kernel(a, b2, transposeA: transposeA, transposeB: transposeB, m: m, n: 1, k: k,
                                      alpha: alpha, beta: beta, initial: initial1)
                    let gemm = kernel(a, b2, transposeA: transposeA, transposeB: transposeB, m: m, n: 2, k: k,
                                      alpha: alpha, beta: beta, initial: initial2)
                    let expected = reference(a, b2, transposeA: transposeA, transposeB: transposeB, m: m, n: 1, k: k,
                                             alpha: alpha, beta: beta, initial: column0)
                    let error = relativeError(gemv, expected)
                    let versusGEMM = relativeError(gemv, (0..<m).map { Double(gemm[$0 * 2]) })
                    XCTAssertLessThan(error, 1e-5, "N=1 transposeA \(transposeA) transposeB \(transposeB) beta \(beta)")
                    XCTAssertLessThan(versusGEMM, 1e-5, "N=1 vs sgemm, transposeA \(transposeA) transposeB \(transposeB)")
                    worst = max(worst, error, versusGEMM)
                }
            }
        }
        XCTAssertLessThan(worst, 1e-5)  // seen: 9.5e-7
    }

    // The fused linear on one row: out = x·Wᵀ + b (bias fused through beta = 1), against the
    // reference and against the same row inside a three-row (sgemm) call.
    func testLinearOneRowWithAndWithoutBias() throws {
        let inputs = 19, outputs = 13
        let weight = Tensor.randomNormal([outputs, inputs], key: RandomKey(seed: 7))
        let bias = Tensor.randomNormal([outputs], key: RandomKey(seed: 8))
        let rows3 = Tensor.randomNormal([3, inputs], key: RandomKey(seed: 9))
        let row = try Tensor(shape: [1, inputs], values: Array(rows3.toArray().prefix(inputs)))
        let w = weight.toArray(), x = row.toArray(), bValues = bias.toArray()
        var worst = 0.0
        for withBias in [false, true] {
            let one = try row.linear(weight: weight, bias: withBias ? bias : nil).toArray()
            let three = try rows3.linear(weight: weight, bias: withBias ? bias : nil).toArray()
            // out[o] = Σc x[c]·W[o][c] + b[o]
            let expected = (0..<outputs).map { o in
                (0..<inputs).reduce(withBias ? Double(bValues[o]) : 0) { $0 + Double(x[$1]) * Double(w[o * inputs + $1]) }
            }
            let error = relativeError(one, expected)
            let versusGEMM = relativeError(one, Array(three.prefix(outputs)).map(Double.init))
            XCTAssertLessThan(error, 1e-5, "bias \(withBias)")
            XCTAssertLessThan(versusGEMM, 1e-5, "bias \(withBias)")
            worst = max(worst, error, versusGEMM)
        }
        XCTAssertLessThan(worst, 1e-5)  // seen: 3.0e-7
    }

    // By hand: x = [1, 2], W = [[1, 0], [2, 3], [-1, 1]], b = [10, 20, 30]
    // out = [1·1 + 2·0 + 10, 1·2 + 2·3 + 20, 1·(-1) + 2·1 + 30] = [11, 28, 31].
    func testLinearOneRowByHand() throws {
        let x = try Tensor(shape: [1, 2], values: [1, 2])
        let w = try Tensor(shape: [3, 2], values: [1, 0, 2, 3, -1, 1])
        let b = try Tensor(shape: [3], values: [10, 20, 30])
        XCTAssertEqual(try x.linear(weight: w, bias: b).toArray(), [11, 28, 31])
        XCTAssertEqual(try x.linear(weight: w).toArray(), [1, 8, 1])
    }

    // Backward through the one-row paths: linear's dinp = dout·W is an M = 1 product, matmul of a row by
    // a matrix (every transpose) and a matrix by a column use them forward and backward.
    func testGradientsThroughOneRowPaths() throws {
        let x = Tensor.randomNormal([1, 5], key: RandomKey(seed: 10))
        let w = Tensor.randomNormal([4, 5], key: RandomKey(seed: 11))
        let b = Tensor.randomNormal([4], key: RandomKey(seed: 12))
        var worst = try checkGradients([x, w, b]) { try $0[0].linear(weight: $0[1], bias: $0[2]) }
        for transposeA in [false, true] {
            for transposeB in [false, true] {
                let row = Tensor.randomNormal(transposeA ? [5, 1] : [1, 5], key: RandomKey(seed: 13))
                let matrix = Tensor.randomNormal(transposeB ? [3, 5] : [5, 3], key: RandomKey(seed: 14))
                worst = max(worst, try checkGradients([row, matrix]) {
                    try $0[0].matmul($0[1], transposeA: transposeA, transposeB: transposeB)
                })
                let column = Tensor.randomNormal(transposeB ? [1, 5] : [5, 1], key: RandomKey(seed: 15))
                let left = Tensor.randomNormal(transposeA ? [5, 3] : [3, 5], key: RandomKey(seed: 16))
                worst = max(worst, try checkGradients([left, column]) {
                    try $0[0].matmul($0[1], transposeA: transposeA, transposeB: transposeB)
                })
            }
        }
        XCTAssertLessThan(worst, 2e-3)  // seen: 4.4e-6
    }
}
