import XCTest
@testable import SiloTensor
@_exported import SiloTestSupport

/// Finite-difference gradient checking shared by every kernel test.
///
/// The function under test maps input tensors to an output tensor; the check projects the output on
/// fixed random weights r (loss = Σ out·r, accumulated in Float64), runs `backward(seed: r)` for the
/// analytic gradients, and compares each with the central difference
/// (loss(x + ε) − loss(x − ε)) / 2ε for every element (or a seeded sample of 48 per input).
/// Returns the largest absolute error seen, so tests can state it.
@discardableResult
func checkGradients(
    _ inputs: [Tensor],
    differentiable: [Bool]? = nil,
    epsilon: Float = 1e-2,
    absoluteTolerance: Double = 2e-3,
    relativeTolerance: Double = 2e-2,
    seed: UInt64 = 7,
    file: StaticString = #filePath, line: UInt = #line,
    _ function: ([Tensor]) throws -> Tensor
) throws -> Double {
    let wantGradient = differentiable ?? Array(repeating: true, count: inputs.count)
    let leaves = zip(inputs, wantGradient).map { $1 ? $0.contiguousCopy().requiringGrad() : $0.contiguousCopy() }
    let output = try function(leaves)
    let projection = Tensor.randomUniform(output.shape, low: -1, high: 1, key: RandomKey(seed: seed))
    try output.backward(seed: projection)
    let weights = projection.toArray().map(Double.init)

    func loss(_ values: [Tensor]) throws -> Double {
        let out = try Tensor.withoutGradients { try function(values) }.toArray()
        var total = 0.0
        for (value, weight) in zip(out, weights) { total += Double(value) * weight }
        return total
    }

    var maximumError = 0.0
    var generator = SeededGenerator(seed: seed &+ 1)
    for (index, input) in leaves.enumerated() where wantGradient[index] {
        guard let analytic = input.grad?.toArray() else {
            XCTFail("input \(index) of shape \(input.shape) received no gradient", file: file, line: line)
            continue
        }
        XCTAssertEqual(analytic.count, input.count, file: file, line: line)
        let positions = input.count <= 48
            ? Array(0..<input.count)
            : (0..<48).map { _ in Int(generator.next() % UInt64(input.count)) }
        for position in positions {
            var values = leaves.map { $0.detached() }
            let plus = input.contiguousCopy()
            plus.pointer[position] += epsilon
            values[index] = plus
            let lossPlus = try loss(values)
            let minus = input.contiguousCopy()
            minus.pointer[position] -= epsilon
            values[index] = minus
            let lossMinus = try loss(values)
            let numeric = (lossPlus - lossMinus) / (2 * Double(epsilon))
            let error = abs(Double(analytic[position]) - numeric)
            maximumError = max(maximumError, error)
            if error > absoluteTolerance + relativeTolerance * abs(numeric) {
                XCTFail("input \(index) element \(position): analytic \(analytic[position]) vs numeric \(numeric) (error \(error))",
                        file: file, line: line)
                return maximumError
            }
        }
    }
    return maximumError
}
