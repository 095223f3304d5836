import Foundation
import SiloModels
import SiloTensor
import SiloTestSupport
import XCTest

/// The quantised projection (``QuantizedLinear``, ``QuantizedMatrix``): the fused kernel and the
/// dequantise-and-GEMM path against a Float64 product with the dequantised weight, the ggml block
/// layout against llama.cpp's `gguf` package (the GGUF fixtures of Scripts/fixtures/gguf.py), the
/// input gradient, and greedy generation of SmolLM2-135M against the Float32 model.
final class QuantizedLinearTests: XCTestCase {
    // MARK: Helpers

    /// A deterministic stream of numbers (SplitMix64).
    struct Numbers {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        /// Uniform in [low, high).
        mutating func uniform(_ low: Float, _ high: Float) -> Float {
            low + (high - low) * Float(next() >> 40) / Float(1 << 24)
        }
        mutating func byte() -> UInt8 { UInt8(truncatingIfNeeded: next()) }
    }

    /// Little-endian IEEE half bits of `value` (normal range; rounding toward zero is fine for tests).
    static func halfBits(_ value: Float) -> UInt16 {
        let bits = value.bitPattern
        let sign = UInt16((bits >> 16) & 0x8000)
        let exponent = Int((bits >> 23) & 0xFF) - 127 + 15
        guard exponent > 0 else { return sign }
        return sign | UInt16(exponent << 10) | UInt16((bits >> 13) & 0x3FF)
    }

    /// `rows` rows of `columns` random elements in ggml's block layout for `type` (Q4_0, Q4_1, Q8_0):
    /// random quant bytes, scales in ±[0.01, 0.1), Q4_1 offsets in ±0.5.
    static func randomGGMLBlocks(_ type: GGMLType, rows: Int, columns: Int, seed: UInt64) -> [UInt8] {
        var numbers = Numbers(state: seed)
        var bytes: [UInt8] = []
        for _ in 0..<(rows * columns / 32) {
            let d = numbers.uniform(0.01, 0.1) * (numbers.next() & 1 == 0 ? 1 : -1)
            let h = halfBits(d)
            bytes += [UInt8(h & 0xFF), UInt8(h >> 8)]
            if type == .q4_1 {
                let m = halfBits(numbers.uniform(-0.5, 0.5))
                bytes += [UInt8(m & 0xFF), UInt8(m >> 8)]
            }
            for _ in 0..<(type == .q8_0 ? 32 : 16) { bytes.append(numbers.byte()) }
        }
        return bytes
    }

    static func layer(_ bytes: [UInt8], _ type: GGMLType, rows: Int, columns: Int, rowOrder: [Int]? = nil,
                      bias: Tensor? = nil) throws -> QuantizedLinear {
        try XCTUnwrap(bytes.withUnsafeBytes {
            QuantizedLinear.ggmlBlocks($0, type: type, rows: rows, columns: columns, rowOrder: rowOrder, bias: bias)
        })
    }

    static func randomTensor(_ shape: [Int], seed: UInt64) throws -> Tensor {
        var numbers = Numbers(state: seed)
        return try Tensor(shape: shape, values: (0..<shape.reduce(1, *)).map { _ in numbers.uniform(-1, 1) })
    }

    /// x (N, C) · w (O, C)ᵀ + b in Float64, and Σ|x||w| per element (the scale of the rounding error).
    static func referenceProduct(_ x: [Float], _ w: [Float], bias: [Float]?, rows: Int, inputs: Int,
                                 outputs: Int) -> (values: [Float], magnitudes: [Float]) {
        var values: [Float] = [], magnitudes: [Float] = []
        for n in 0..<rows {
            for o in 0..<outputs {
                var total = Double(bias?[o] ?? 0), magnitude = abs(Double(bias?[o] ?? 0))
                for c in 0..<inputs {
                    let term = Double(x[n * inputs + c]) * Double(w[o * inputs + c])
                    total += term
                    magnitude += abs(term)
                }
                values.append(Float(total))
                magnitudes.append(Float(magnitude))
            }
        }
        return (values, magnitudes)
    }

    /// |actual − expected| ≤ 1e-5 · Σ|x||w| elementwise (summation order is the only difference).
    func assertProductClose(_ actual: [Float], _ expected: (values: [Float], magnitudes: [Float]), _ message: String,
                            file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(actual.count, expected.values.count, message, file: file, line: line)
        var worst: Float = 0
        for index in actual.indices {
            let error = abs(actual[index] - expected.values[index]) / max(expected.magnitudes[index], 1e-20)
            worst = max(worst, error)
        }
        XCTAssertLessThan(worst, 1e-5, "\(message): worst error relative to Σ|x·w| is \(worst)", file: file, line: line)
    }

    // MARK: Kernel against dequantise-then-multiply

    /// Every format, odd output rows (37: two workers get 19 and 18 rows), 3 blocks a row, and input
    /// rows 1...9 (the fused kernel's tiles of 4 with remainders, and the GEMM path above
    /// ``QuantizedMatrix/fusedRowLimit``), with and without a bias.
    func testProductsMatchDequantizedWeightForEveryFormat() throws {
        let outputs = 37, inputs = 96
        for (typeIndex, type) in [GGMLType.q4_0, .q4_1, .q8_0].enumerated() {
            let bias = try Self.randomTensor([outputs], seed: 7)
            for withBias in [false, true] {
                let layer = try Self.layer(Self.randomGGMLBlocks(type, rows: outputs, columns: inputs, seed: UInt64(typeIndex)),
                                           type, rows: outputs, columns: inputs, bias: withBias ? bias : nil)
                let dense = layer.weight.dequantized().toArray()
                XCTAssertEqual(layer.weight.format.description, type.description)
                for rows in 1...9 {
                    let x = try Self.randomTensor([rows, inputs], seed: UInt64(100 + rows))
                    let expected = Self.referenceProduct(x.toArray(), dense, bias: withBias ? bias.toArray() : nil,
                                                         rows: rows, inputs: inputs, outputs: outputs)
                    let y = try layer(x)
                    XCTAssertEqual(y.shape, [rows, outputs])
                    assertProductClose(y.toArray(), expected, "\(type) layer, \(rows) rows, bias \(withBias)")
                    // Both paths directly, whatever the row limit.
                    let fused = Tensor.empty([rows, outputs]), gemm = Tensor.empty([rows, outputs])
                    let biasPointer = withBias ? UnsafePointer(bias.pointer) : nil
                    layer.weight.multiply(x.pointer, rows: rows, into: fused.pointer, bias: biasPointer)
                    layer.weight.multiplyDequantizing(x.pointer, rows: rows, into: gemm.pointer, bias: biasPointer, chunkRows: 10)
                    assertProductClose(fused.toArray(), expected, "\(type) fused, \(rows) rows, bias \(withBias)")
                    assertProductClose(gemm.toArray(), expected, "\(type) dequantise+sgemm in chunks of 10 rows, \(rows) rows")
                }
            }
        }
    }

    /// One input row (decoding) through the AVX2 + FMA kernel of CSiloKernels and through the portable
    /// SSE2 kernel: both equal the product with the dequantised weight (odd row counts split unevenly
    /// between workers, 1 to 18 blocks a row: even and odd block counts for the kernel's two accumulators).
    func testVectorAndPortableDecodeKernelsMatchDequantizedWeight() throws {
        defer { QuantizedMatrix.useVectorKernels = true }
        for (typeIndex, type) in [GGMLType.q4_0, .q4_1, .q8_0].enumerated() {
            for (outputs, inputs) in [(37, 32), (5, 64), (63, 576), (1, 96)] {
                let bias = try Self.randomTensor([outputs], seed: 9)
                let layer = try Self.layer(Self.randomGGMLBlocks(type, rows: outputs, columns: inputs, seed: UInt64(10 + typeIndex)),
                                           type, rows: outputs, columns: inputs)
                let x = try Self.randomTensor([1, inputs], seed: UInt64(inputs))
                for withBias in [false, true] {
                    let expected = Self.referenceProduct(x.toArray(), layer.weight.dequantized().toArray(), bias: withBias ? bias.toArray() : nil,
                                                         rows: 1, inputs: inputs, outputs: outputs)
                    for vector in [true, false] {
                        QuantizedMatrix.useVectorKernels = vector
                        let out = Tensor.empty([1, outputs])
                        layer.weight.multiply(x.pointer, rows: 1, into: out.pointer, bias: withBias ? UnsafePointer(bias.pointer) : nil)
                        assertProductClose(out.toArray(), expected, "\(type) (\(outputs), \(inputs)), vector kernel \(vector), bias \(withBias)")
                    }
                }
            }
        }
    }

    /// Dequantisation follows ggml's formulas element by element (hand-computed from the bytes).
    func testDequantizationFollowsGGMLFormulas() throws {
        for type in [GGMLType.q4_0, .q4_1, .q8_0] {
            let bytes = Self.randomGGMLBlocks(type, rows: 3, columns: 64, seed: 42)
            let values = try Self.layer(bytes, type, rows: 3, columns: 64).weight.dequantized().toArray()
            let size = type.typeSize
            func half(_ at: Int) -> Float { Float(Float16(bitPattern: UInt16(bytes[at]) | UInt16(bytes[at + 1]) << 8)) }
            for block in 0..<6 {
                let base = block * size, d = half(base)
                for j in 0..<32 {
                    let expected: Float
                    switch type {
                    case .q8_0: expected = Float(Int8(bitPattern: bytes[base + 2 + j])) * d
                    case .q4_0:
                        let byte = bytes[base + 2 + j % 16]
                        expected = Float(Int(j < 16 ? byte & 15 : byte >> 4) - 8) * d
                    default:
                        let byte = bytes[base + 4 + j % 16]
                        expected = Float(j < 16 ? byte & 15 : byte >> 4) * d + half(base + 2)
                    }
                    XCTAssertEqual(values[block * 32 + j], expected, "\(type) block \(block) element \(j)")
                }
            }
        }
    }

    // MARK: Outside reference: llama.cpp's gguf package

    /// The Q4_0, Q4_1 and Q8_0 tensors of the GGUF fixture, kept in blocks, dequantise exactly to
    /// `gguf.quants.dequantize`'s values and multiply as those values do.
    func testGGUFFixtureBlocksMultiplyAsReferenceDequantizedWeights() throws {
        guard let directory = Bundle.module.url(forResource: "Fixtures", withExtension: nil)?.appendingPathComponent("gguf") else {
            throw XCTSkip("Fixtures/gguf is missing from the test bundle")
        }
        struct Expected: Decodable { var type: String; var shape: [Int]; var offset: Int; var count: Int }
        let index = try JSONDecoder().decode([String: Expected].self,
                                             from: Data(contentsOf: directory.appendingPathComponent("expected.json")))
        let raw = try Data(contentsOf: directory.appendingPathComponent("expected.f32"))
        let file = try GGUFFile(contentsOf: directory.appendingPathComponent("types.gguf"))
        var checked: [String] = []
        for info in file.tensorInfos where QuantizedLinear.supportedTypes.contains(info.type) {
            let expected = try XCTUnwrap(index[info.name], info.name)
            let reference: [Float] = raw.withUnsafeBytes { bytes in
                (0..<expected.count).map { bytes.loadUnaligned(fromByteOffset: 4 * (expected.offset + $0), as: Float.self) }
            }
            let (rows, columns) = (info.shape[0], info.shape[1])
            let layer = try XCTUnwrap(try file.withUnsafeRawBytes(of: info.name) {
                QuantizedLinear.ggmlBlocks($0, type: info.type, rows: rows, columns: columns)
            })
            XCTAssertEqual(layer.weight.dequantized().toArray(), reference, "\(info.name) dequantised")
            for inputRows in [1, 3, 6] {
                let x = try Self.randomTensor([inputRows, columns], seed: 9)
                let y = try layer(x).toArray()
                assertProductClose(y, Self.referenceProduct(x.toArray(), reference, bias: nil, rows: inputRows,
                                                            inputs: columns, outputs: rows),
                                   "\(info.name), \(inputRows) rows")
            }
            checked.append(info.type.description)
        }
        XCTAssertEqual(Set(checked), ["Q4_0", "Q4_1", "Q8_0"])
    }

    /// Rows taken through the Llama Q/K row order equal `GGUFFile.unpermuteLlamaQK` of the stored weight.
    func testLlamaQKRowOrderMatchesUnpermute() throws {
        let rows = 24, columns = 64, heads = 3
        let bytes = Self.randomGGMLBlocks(.q4_1, rows: rows, columns: columns, seed: 5)
        let stored = try Self.layer(bytes, .q4_1, rows: rows, columns: columns).weight.dequantized()
        let order = QuantizedLinear.llamaQKRowOrder(rows: rows, heads: heads)
        let reordered = try Self.layer(bytes, .q4_1, rows: rows, columns: columns, rowOrder: order).weight.dequantized()
        XCTAssertEqual(reordered.toArray(), GGUFFile.unpermuteLlamaQK(stored, heads: heads).toArray())
        XCTAssertNotEqual(order, Array(0..<rows))
    }

    // MARK: Gradients

    /// dx = dout · W and dbias = Σ dout for 2 rows (fused forward) and 7 rows (GEMM forward), against
    /// the dense weight in Float64 and against central differences; the weight gets no gradient.
    func testInputGradientMatchesDenseWeightAndFiniteDifferences() throws {
        let outputs = 13, inputs = 64
        let layer = try Self.layer(Self.randomGGMLBlocks(.q4_1, rows: outputs, columns: inputs, seed: 3), .q4_1,
                                   rows: outputs, columns: inputs, bias: Tensor.zeros([outputs]).requiringGrad())
        let dense = layer.weight.dequantized().toArray()
        for rows in [2, 7] {
            let x = try Self.randomTensor([rows, inputs], seed: 11).requiringGrad()
            let seed = try Self.randomTensor([rows, outputs], seed: 12)
            try layer(x).backward(seed: seed)
            let gradient = try XCTUnwrap(x.grad).toArray()
            let g = seed.toArray()
            var expected: [Float] = [], magnitudes: [Float] = []
            for n in 0..<rows {
                for c in 0..<inputs {
                    var total = 0.0, magnitude = 0.0
                    for o in 0..<outputs {
                        total += Double(g[n * outputs + o]) * Double(dense[o * inputs + c])
                        magnitude += abs(Double(g[n * outputs + o]) * Double(dense[o * inputs + c]))
                    }
                    expected.append(Float(total))
                    magnitudes.append(Float(magnitude))
                }
            }
            assertProductClose(gradient, (expected, magnitudes), "dx, \(rows) rows")
            let biasGradient = try XCTUnwrap(layer.bias?.grad).toArray()
            let columnSums = (0..<outputs).map { o in (0..<rows).reduce(Float(0)) { $0 + g[$1 * outputs + o] } }
            assertClose(biasGradient, columnSums, relative: 1e-5, absolute: 1e-6, "dbias, \(rows) rows")
            layer.bias?.zeroGrad()

            // Central differences of L = Σ seed ⊙ y at a few inputs (L is linear in x: exact up to rounding).
            let values = x.toArray()
            for position in [0, inputs + 5, rows * inputs - 1] {
                func loss(_ delta: Float) throws -> Double {
                    var shifted = values
                    shifted[position] += delta
                    let y = try Tensor.withoutGradients { try layer(Tensor(shape: [rows, inputs], values: shifted)) }.toArray()
                    return zip(y, g).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
                }
                let numeric = (try loss(0.25) - loss(-0.25)) / 0.5
                XCTAssertEqual(Double(gradient[position]), numeric, accuracy: 1e-3 * max(1, abs(numeric)),
                               "dx[\(position)], \(rows) rows")
            }
        }
    }

    /// The weight is frozen: replacing it throws a clear error; the bias can be replaced.
    func testWeightIsNotReplaceable() throws {
        let layer = try Self.layer(Self.randomGGMLBlocks(.q8_0, rows: 4, columns: 32, seed: 1), .q8_0, rows: 4,
                                   columns: 32, bias: Tensor.zeros([4]))
        XCTAssertThrowsError(try layer.setParameter("weight", to: Tensor.zeros([4, 32]))) { error in
            let message = "\(error)"
            XCTAssertTrue(message.contains("Q8_0") && message.contains("float32"), message)
        }
        try layer.setParameter("bias", to: Tensor.ones([4]))
        XCTAssertEqual(layer.bias?.toArray(), [1, 1, 1, 1])
        XCTAssertThrowsError(try layer.setParameter("bias", to: Tensor.ones([5])))
        XCTAssertEqual(layer.namedParameters.map(\.name), ["weight", "bias"])
        XCTAssertEqual(layer.namedParameters[0].tensor.toArray(), layer.weight.dequantized().toArray())
    }

    // MARK: SmolLM2-135M

    /// Greedy ids of "The capital of France is" (32 tokens; 8 in debug builds, where the unoptimised
    /// SIMD kernel takes about 30 s a token) from the quantised model equal those of the Float32 model;
    /// every projection and the tied head are quantised. (Benchmarks/generate_smollm2.sh compares all
    /// 128 benchmark tokens of both paths in release.)
    func testSmolLM2GreedyIdsMatchFloat32Model() throws {
        #if DEBUG
        let tokens = 8
        #else
        let tokens = 32
        #endif
        let store = ModelStore()
        guard let url = try? store.resolve("smollm2-135m") else {
            throw XCTSkip("SmolLM2-135M is not in the model cache (\(store.modelsDirectory.path)/smollm2-135m): run `silo models fetch smollm2-135m` to test the real model")
        }
        let tokenizer = try Tokenizer(ggufFile: GGUFFile(contentsOf: url))
        let prompt = tokenizer.encode("The capital of France is").map { Int32($0) }
        let quantized = try Checkpoint.loadLlama(gguf: url, weightPrecision: .quantized)
        XCTAssertNotNil(quantized.quantizedTiedHead)
        XCTAssertEqual(quantized.linearLayerNames.filter { !(quantized.linearLayer(named: $0) is QuantizedLinear) }, [])
        let fast = try Tensor.withoutGradients { try quantized.generate(prompt: prompt, maxNewTokens: tokens) }
        let dense = try Checkpoint.loadLlama(gguf: url)
        XCTAssertNil(dense.quantizedTiedHead)
        let reference = try Tensor.withoutGradients { try dense.generate(prompt: prompt, maxNewTokens: tokens) }
        XCTAssertEqual(fast.tokens.count, tokens)
        XCTAssertEqual(fast.tokens, reference.tokens)
        XCTAssertEqual(Array(fast.tokens.prefix(2)), [7042, 30], "\" Paris.\"")
    }
}
