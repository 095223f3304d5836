import XCTest
@testable import SiloTensor

/// Every op against PyTorch: Fixtures/ops.safetensors (written by Scripts/fixtures/ops.py, whose
/// cases are the spec) holds the inputs of each case, the output evaluated in float64 and the
/// gradient of each input for loss = Σ out·R. Forward values must agree within 1e-4 relative
/// (+1e-5 absolute), gradients within 1e-3 relative (+1e-4 absolute); each test states the largest
/// absolute errors it saw.
final class ReferenceTests: XCTestCase {
    /// Largest absolute errors of one case.
    struct Errors {
        var forward: Float = 0
        var gradient: Float = 0
    }

    private static let fixture = Result { () throws -> SafeTensorsFile in
        guard let url = Bundle.module.url(forResource: "ops", withExtension: "safetensors", subdirectory: "Fixtures") else {
            throw TensorError(.notFound, "Fixtures/ops.safetensors is missing: run `make fixtures`")
        }
        return try SafeTensorsFile(contentsOf: url)
    }

    private func tensor(_ name: String) throws -> Tensor {
        try Self.fixture.get().tensor(name)
    }

    private func scalar(_ name: String) throws -> Float {
        try tensor(name).scalar
    }

    private func integers(_ name: String) throws -> [Int] {
        try tensor(name).toArray().map { Int($0) }
    }

    private func ids(_ name: String) throws -> [Int32] {
        try tensor(name).toArray().map { Int32($0) }
    }

    /// Runs case `name`: loads its differentiable `inputs` as gradient leaves, applies `body`, compares
    /// `name.out`, back-propagates `name.R` and compares each `name.d<input>`.
    private func check(_ name: String, inputs: [String], file: StaticString = #filePath, line: UInt = #line,
                       _ body: ([Tensor]) throws -> Tensor) throws -> Errors {
        let leaves = try inputs.map { try tensor("\(name).\($0)").requiringGrad() }
        let out = try body(leaves)
        let expected = try tensor("\(name).out")
        XCTAssertEqual(out.shape, expected.shape, "\(name).out shape", file: file, line: line)
        var errors = Errors()
        errors.forward = assertClose(out.toArray(), expected.toArray(), relative: 1e-4, absolute: 1e-5,
                                     "\(name).out", file: file, line: line)
        try out.backward(seed: try tensor("\(name).R"))
        errors.gradient = try compareGradients(name, inputs: inputs, leaves: leaves, file: file, line: line)
        return errors
    }

    /// Compares the gradients accumulated in `leaves` with `name.d<input>`.
    private func compareGradients(_ name: String, inputs: [String], leaves: [Tensor],
                                  file: StaticString = #filePath, line: UInt = #line) throws -> Float {
        var largest: Float = 0
        for (input, leaf) in zip(inputs, leaves) {
            let expected = try tensor("\(name).d\(input)")
            guard let gradient = leaf.grad else {
                XCTFail("\(name): no gradient reached \(input)", file: file, line: line)
                continue
            }
            XCTAssertEqual(gradient.shape, expected.shape, "\(name).d\(input) shape", file: file, line: line)
            largest = max(largest, assertClose(gradient.toArray(), expected.toArray(), relative: 1e-3, absolute: 1e-4,
                                               "\(name).d\(input)", file: file, line: line))
        }
        return largest
    }

    /// Σᵢ sum(outᵢ · Rᵢ) of a case with several outputs (split).
    private func projectedLoss(_ name: String, _ outputs: [Tensor]) throws -> Tensor {
        var total: Tensor? = nil
        for (index, out) in outputs.enumerated() {
            let term = try out.multiplying(try tensor("\(name).R\(index)")).sum()
            total = try total.map { try $0.adding(term) } ?? term
        }
        return try XCTUnwrap(total)
    }

    // MARK: Elementwise

    // a (2,1,4) ∘ b (3,1) → (2,3,4): both operands broadcast, so both gradients are reductions.
    func testBroadcastingArithmetic() throws {
        var worst = Errors()
        for (name, op) in [("add", { (a: Tensor, b: Tensor) in try a.adding(b) }),
                           ("subtract", { try $0.subtracting($1) }),
                           ("multiply", { try $0.multiplying($1) }),
                           ("divide", { try $0.dividing($1) })] {
            let errors = try check(name, inputs: ["a", "b"]) { try op($0[0], $0[1]) }
            worst.forward = max(worst.forward, errors.forward)
            worst.gradient = max(worst.gradient, errors.gradient)
        }
        XCTAssertLessThan(worst.forward, 1e-6)  // seen 0 (exact)
        XCTAssertLessThan(worst.gradient, 5e-6)  // seen 4.8e-7
    }

    func testOperatorsMatchMethods() throws {
        let a = try tensor("add.a"), b = try tensor("add.b")
        XCTAssertEqual(try (a + b).toArray(), try a.adding(b).toArray())
        XCTAssertEqual(try (a - b).toArray(), try a.subtracting(b).toArray())
        XCTAssertEqual(try (a * b).toArray(), try a.multiplying(b).toArray())
        XCTAssertEqual(try (a / b).toArray(), try a.dividing(b).toArray())
    }

    func testUnaryElementwise() throws {
        let value = try scalar("add_scalar.value"), factor = try scalar("scale.factor")
        var worst = Errors()
        for (name, op) in [("add_scalar", { (x: Tensor) in x.adding(scalar: value) }),
                           ("scale", { $0.scaled(by: factor) }),
                           ("negate", { $0.negated() }),
                           ("exp", { $0.exp() }),
                           ("log", { $0.log() }),
                           ("square", { $0.squared() }),
                           ("sqrt", { $0.squareRoot() })] {
            let errors = try check(name, inputs: ["x"]) { op($0[0]) }
            worst.forward = max(worst.forward, errors.forward)
            worst.gradient = max(worst.gradient, errors.gradient)
        }
        XCTAssertLessThan(worst.forward, 1e-6)  // seen 0 (exact)
        XCTAssertLessThan(worst.gradient, 2e-6)  // seen 1.2e-7
    }

    // MARK: Reductions

    func testSumAndMean() throws {
        var worst = Errors()
        for name in ["sum_axes", "sum_keep", "mean_axes", "mean_keep"] {
            let axes = try integers("\(name).axes")
            let keep = name.hasSuffix("keep")
            let errors = try check(name, inputs: ["x"]) { x in
                name.hasPrefix("sum") ? try x[0].sum(axes: axes, keepingDimensions: keep)
                                      : try x[0].mean(axes: axes, keepingDimensions: keep)
            }
            worst.forward = max(worst.forward, errors.forward)
            worst.gradient = max(worst.gradient, errors.gradient)
        }
        let sum = try check("sum_all", inputs: ["x"]) { $0[0].sum() }
        let mean = try check("mean_all", inputs: ["x"]) { $0[0].mean() }
        XCTAssertLessThan(max(worst.forward, sum.forward, mean.forward), 5e-6)  // seen 4.8e-7
        XCTAssertLessThan(max(worst.gradient, sum.gradient, mean.gradient), 1e-6)  // seen 1.5e-8
    }

    // MARK: Shapes and views

    func testViewsAndCopies() throws {
        let reshape = try integers("reshape.shape"), permutation = try integers("permute.axes")
        let broadcastShape = try integers("broadcast.shape"), reducedShape = try integers("reduce_to_shape.shape")
        let cases: [(String, (Tensor) throws -> Tensor)] = [
            ("reshape", { try $0.reshaped(reshape) }),
            ("transpose", { try $0.transposed(0, 2).contiguous() }),
            ("permute", { try $0.permuted(permutation) }),
            ("slice", { try $0.sliced(axis: 1, range: 1..<4) }),
            ("broadcast", { try $0.broadcast(to: broadcastShape) }),
            ("reduce_to_shape", { try $0.reduced(toShape: reducedShape) }),
        ]
        var worst = Errors()
        for (name, op) in cases {
            let errors = try check(name, inputs: ["x"]) { try op($0[0]) }
            worst.forward = max(worst.forward, errors.forward)
            worst.gradient = max(worst.gradient, errors.gradient)
        }
        XCTAssertLessThan(worst.forward, 1e-6)  // seen 6e-8 (copies are exact; reduced(toShape:) sums)
        XCTAssertLessThan(worst.gradient, 1e-6)  // seen 6e-8
    }

    func testConcatenate() throws {
        let errors = try check("concatenate", inputs: ["a", "b", "c"]) { try Tensor.concatenate($0, axis: 1) }
        XCTAssertLessThan(errors.forward, 1e-7)  // seen 0 (copies)
        XCTAssertLessThan(errors.gradient, 1e-7)  // seen 0
    }

    func testSplit() throws {
        let x = try tensor("split.x").requiringGrad()
        let parts = try x.split(axis: 1, sizes: try integers("split.sizes"))
        XCTAssertEqual(parts.count, 3)
        var forward: Float = 0
        for (index, part) in parts.enumerated() {
            let expected = try tensor("split.out\(index)")
            XCTAssertEqual(part.shape, expected.shape)
            forward = max(forward, assertClose(part.toArray(), expected.toArray(), "split.out\(index)"))
        }
        try projectedLoss("split", parts).backward()
        let gradient = try compareGradients("split", inputs: ["x"], leaves: [x])
        XCTAssertLessThan(forward, 1e-7)  // seen 0 (views)
        XCTAssertLessThan(gradient, 1e-7)  // seen 0
    }

    // ids repeat (1, 3 and 6 twice or more): dweight rows accumulate.
    func testEmbedding() throws {
        let ids = try ids("embedding.ids")
        let errors = try check("embedding", inputs: ["weight"]) { try Tensor.embedding(weight: $0[0], ids: ids, shape: [2, 5]) }
        XCTAssertLessThan(errors.forward, 1e-7)  // seen 0 (a gather)
        XCTAssertLessThan(errors.gradient, 2e-6)  // seen 2.4e-7
    }

    // MARK: nn

    func testSoftmaxAndLogSoftmax() throws {
        var worst = Errors()
        for name in ["softmax", "softmax_mid", "log_softmax", "log_softmax_mid"] {
            let axis = Int(try scalar("\(name).axis"))
            let errors = try check(name, inputs: ["x"]) { x in
                name.hasPrefix("log") ? try x[0].logSoftmax(axis: axis) : try x[0].softmax(axis: axis)
            }
            worst.forward = max(worst.forward, errors.forward)
            worst.gradient = max(worst.gradient, errors.gradient)
        }
        XCTAssertLessThan(worst.forward, 1e-5)  // seen 9.5e-7 (log_softmax)
        XCTAssertLessThan(worst.gradient, 4e-6)  // seen 3.6e-7
    }

    // Targets hold two -100s: .mean divides by the 6 counted positions, .none gives 0 at ignored ones.
    func testCrossEntropy() throws {
        var worst = Errors()
        for (name, reduction) in [("cross_entropy_mean", LossReduction.mean), ("cross_entropy_sum", .sum),
                                  ("cross_entropy_none", .none)] {
            let targets = try ids("\(name).targets")
            let errors = try check(name, inputs: ["logits"]) {
                try Tensor.crossEntropy(logits: $0[0], targets: targets, ignoreIndex: -100, reduction: reduction)
            }
            worst.forward = max(worst.forward, errors.forward)
            worst.gradient = max(worst.gradient, errors.gradient)
        }
        XCTAssertLessThan(worst.forward, 2e-6)  // seen 2.4e-7
        XCTAssertLessThan(worst.gradient, 2e-6)  // seen 2.4e-7
    }

    func testRMSNorm() throws {
        let epsilon = try scalar("rms_norm.eps")
        let weighted = try check("rms_norm", inputs: ["x", "weight"]) { try $0[0].rmsNorm(weight: $0[1], epsilon: epsilon) }
        let plain = try check("rms_norm_noweight", inputs: ["x"]) { try $0[0].rmsNorm(weight: nil, epsilon: epsilon) }
        XCTAssertLessThan(max(weighted.forward, plain.forward), 2e-6)  // seen 2.4e-7
        XCTAssertLessThan(max(weighted.gradient, plain.gradient), 2e-6)  // seen 2.5e-7
    }

    func testLayerNorm() throws {
        let epsilon = try scalar("layer_norm.eps")
        let affine = try check("layer_norm", inputs: ["x", "weight", "bias"]) {
            try $0[0].layerNorm(weight: $0[1], bias: $0[2], epsilon: epsilon)
        }
        let plain = try check("layer_norm_noaffine", inputs: ["x"]) {
            try $0[0].layerNorm(weight: nil, bias: nil, epsilon: epsilon)
        }
        XCTAssertLessThan(max(affine.forward, plain.forward), 5e-6)  // seen 4.8e-7
        XCTAssertLessThan(max(affine.gradient, plain.gradient), 5e-6)  // seen 4.8e-7
    }

    func testActivations() throws {
        var worst = Errors()
        for (name, op) in [("gelu_tanh", { (x: Tensor) in x.gelu(.tanh) }),
                           ("gelu_exact", { $0.gelu(.exact) }),
                           ("silu", { $0.silu() }),
                           ("sigmoid", { $0.sigmoid() }),
                           ("tanh", { $0.tanh() })] {
            let errors = try check(name, inputs: ["x"]) { op($0[0]) }
            worst.forward = max(worst.forward, errors.forward)
            worst.gradient = max(worst.gradient, errors.gradient)
        }
        XCTAssertLessThan(worst.forward, 5e-6)  // seen 4.8e-7 (gelu tanh, silu)
        XCTAssertLessThan(worst.gradient, 1e-5)  // seen 1.5e-6 (gelu tanh)
    }

    func testSwiGLU() throws {
        let errors = try check("swiglu", inputs: ["gate", "up"]) { try Tensor.swiglu(gate: $0[0], up: $0[1]) }
        XCTAssertLessThan(errors.forward, 2e-6)  // seen 1.2e-7
        XCTAssertLessThan(errors.gradient, 2e-6)  // seen 2.4e-7
    }

    // MARK: RoPE

    // inverse frequency i = θ^(-2i/D); tables at positions 2...6 (as after 2 cached tokens).
    func testRoPETables() throws {
        let dimension = try tensor("rope_half.x").shape[3]
        let frequencies = Tensor.ropeInverseFrequencies(dimension: dimension, theta: try scalar("rope_half.theta"))
        let frequencyError = assertClose(frequencies, try tensor("rope_half.inverse_frequencies").toArray(),
                                         relative: 1e-5, absolute: 0, "inverse frequencies")
        let tables = Tensor.ropeTables(positions: try integers("rope_half.positions"), inverseFrequencies: frequencies)
        XCTAssertEqual(tables.cos.shape, [5, dimension / 2])
        let cosError = assertClose(tables.cos.toArray(), try tensor("rope_half.cos").toArray(), relative: 1e-4, absolute: 1e-5, "cos")
        let sinError = assertClose(tables.sin.toArray(), try tensor("rope_half.sin").toArray(), relative: 1e-4, absolute: 1e-5, "sin")
        XCTAssertLessThan(frequencyError, 1e-7)  // seen 0
        XCTAssertLessThan(max(cosError, sinError), 1e-6)  // seen 3.7e-9
    }

    func testRoPEBothStyles() throws {
        var worst = Errors()
        for (name, style) in [("rope_half", RoPEStyle.rotateHalf), ("rope_interleaved", .interleaved)] {
            let cos = try tensor("\(name).cos"), sin = try tensor("\(name).sin")
            let errors = try check(name, inputs: ["x"]) { try $0[0].applyingRoPE(cos: cos, sin: sin, style: style) }
            worst.forward = max(worst.forward, errors.forward)
            worst.gradient = max(worst.gradient, errors.gradient)
        }
        XCTAssertLessThan(worst.forward, 2e-6)  // seen 2.4e-7
        XCTAssertLessThan(worst.gradient, 2e-6)  // seen 2.4e-7
    }

    // The input is a strided view: the first half of a (B, T, 2·H·D) projection, split into heads.
    func testRoPEOnStridedView() throws {
        let x = try tensor("rope_half.x")
        let (b, t, h, d) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let fused = try Self.fuse([x, Tensor.zeros(x.shape)], batch: b, time: t).requiringGrad()
        let view = try fused.sliced(axis: 2, range: 0..<(h * d)).splittingLastAxis([h, d])
        XCTAssertFalse(view.isContiguous)
        let out = try view.applyingRoPE(cos: try tensor("rope_half.cos"), sin: try tensor("rope_half.sin"), style: .rotateHalf)
        let forward = assertClose(out.toArray(), try tensor("rope_half.out").toArray(), "rope_half.out (strided)")
        try out.backward(seed: try tensor("rope_half.R"))
        let parts = try Self.unfuse(try XCTUnwrap(fused.grad), widths: [h * d, h * d], batch: b, time: t)
        let gradient = assertClose(parts[0], try tensor("rope_half.dx").toArray(), relative: 1e-3, absolute: 1e-4, "rope_half.dx (strided)")
        XCTAssertEqual(parts[1], [Float](repeating: 0, count: x.count))
        XCTAssertLessThan(forward, 2e-6)  // seen 2.4e-7
        XCTAssertLessThan(gradient, 2e-6)  // seen 2.4e-7
    }

    // MARK: Attention

    private func attentionCase(_ name: String, causal: Bool = true, mask: Bool = false, prefix: Bool = false,
                               scale: Bool = false, file: StaticString = #filePath, line: UInt = #line) throws -> Errors {
        let maskTensor = mask ? try tensor("\(name).mask") : nil
        let scaleValue = scale ? try scalar("\(name).scale") : nil
        return try check(name, inputs: prefix ? ["q", "k", "v", "pk", "pv"] : ["q", "k", "v"], file: file, line: line) { t in
            try Tensor.attention(query: t[0], key: t[1], value: t[2], causal: causal, mask: maskTensor,
                                 prefixKey: prefix ? t[3] : nil, prefixValue: prefix ? t[4] : nil, scale: scaleValue)
        }
    }

    // Grouped-query attention, H = 4 query heads over KVH = 2 key/value heads (MQA: KVH = 1).
    func testAttentionCausalGroupedQuery() throws {
        let causal = try attentionCase("attention_causal")
        let multiQuery = try attentionCase("attention_mqa")
        XCTAssertLessThan(max(causal.forward, multiQuery.forward), 4e-6)  // seen 4.2e-7
        XCTAssertLessThan(max(causal.gradient, multiQuery.gradient), 5e-6)  // seen 4.8e-7
    }

    // Non-causal, T = 4 queries over S = 6 keys, scale 0.5 instead of 1/√D.
    func testAttentionFullWithScale() throws {
        let errors = try attentionCase("attention_full", causal: false, scale: true)
        XCTAssertLessThan(errors.forward, 4e-6)  // seen 3.6e-7
        XCTAssertLessThan(errors.gradient, 5e-6)  // seen 4.8e-7
    }

    // Causal plus a (B, S) padding mask: the last two keys of row 1 are -inf.
    func testAttentionPaddingMask() throws {
        let errors = try attentionCase("attention_padding", mask: true)
        XCTAssertLessThan(errors.forward, 2e-6)  // seen 2.4e-7
        XCTAssertLessThan(errors.gradient, 2e-6)  // seen 2.4e-7
    }

    // Non-causal with a finite additive (B, T, S) bias.
    func testAttentionPerQueryBias() throws {
        let errors = try attentionCase("attention_bias", causal: false, mask: true)
        XCTAssertLessThan(errors.forward, 2e-6)  // seen 2.4e-7
        XCTAssertLessThan(errors.gradient, 4e-6)  // seen 3.9e-7
    }

    // P = 3 prefix keys/values, shared (P, KVH, D) with a (B, P + S) padding mask, and per batch row.
    func testAttentionPrefix() throws {
        let shared = try attentionCase("attention_prefix", mask: true, prefix: true)
        let batched = try attentionCase("attention_prefix_batched", prefix: true)
        XCTAssertLessThan(max(shared.forward, batched.forward), 3e-6)  // seen 2.8e-7
        XCTAssertLessThan(max(shared.gradient, batched.gradient), 5e-6)  // seen 4.8e-7
    }

    // KV cache: T = 2 new queries at positions 4 and 5 over S = 6 keys.
    func testAttentionQueriesAfterCachedKeys() throws {
        let errors = try attentionCase("attention_cache")
        XCTAssertLessThan(errors.forward, 2e-6)  // seen 1.2e-7
        XCTAssertLessThan(errors.gradient, 2e-6)  // seen 2.4e-7
    }

    // q, k, v as strided views of one fused (B, T, (H + 2·KVH)·D) projection, as a model makes them.
    func testAttentionOnFusedProjectionViews() throws {
        let q = try tensor("attention_causal.q"), k = try tensor("attention_causal.k"), v = try tensor("attention_causal.v")
        let (b, t, h, d, kvh) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3], k.shape[2])
        let fused = try Self.fuse([q, k, v], batch: b, time: t).requiringGrad()
        let widths = [h * d, kvh * d, kvh * d]
        let query = try fused.sliced(axis: 2, range: 0..<widths[0]).splittingLastAxis([h, d])
        let key = try fused.sliced(axis: 2, range: widths[0]..<(widths[0] + widths[1])).splittingLastAxis([kvh, d])
        let value = try fused.sliced(axis: 2, range: (widths[0] + widths[1])..<(widths[0] + widths[1] + widths[2]))
            .splittingLastAxis([kvh, d])
        let out = try Tensor.attention(query: query, key: key, value: value)
        let forward = assertClose(out.toArray(), try tensor("attention_causal.out").toArray(), "attention_causal.out (views)")
        try out.backward(seed: try tensor("attention_causal.R"))
        let parts = try Self.unfuse(try XCTUnwrap(fused.grad), widths: widths, batch: b, time: t)
        var gradient: Float = 0
        for (part, name) in zip(parts, ["dq", "dk", "dv"]) {
            gradient = max(gradient, assertClose(part, try tensor("attention_causal.\(name)").toArray(),
                                                 relative: 1e-3, absolute: 1e-4, "attention_causal.\(name) (views)"))
        }
        XCTAssertLessThan(forward, 4e-6)  // seen 3.6e-7
        XCTAssertLessThan(gradient, 2e-6)  // seen 2.4e-7
    }

    // MARK: MatMul

    func testMatMulAllTransposes() throws {
        var worst = Errors()
        for transposeA in [false, true] {
            for transposeB in [false, true] {
                for shared in [true, false] {
                    let name = "matmul_\(transposeA ? "t" : "n")\(transposeB ? "t" : "n")_\(shared ? "shared" : "batched")"
                    let errors = try check(name, inputs: ["a", "b"]) {
                        try $0[0].matmul($0[1], transposeA: transposeA, transposeB: transposeB)
                    }
                    worst.forward = max(worst.forward, errors.forward)
                    worst.gradient = max(worst.gradient, errors.gradient)
                }
            }
        }
        let plain = try check("matmul_2d", inputs: ["a", "b"]) { try $0[0].matmul($0[1]) }
        XCTAssertLessThan(max(worst.forward, plain.forward), 1e-5)  // seen 9.5e-7
        XCTAssertLessThan(max(worst.gradient, plain.gradient), 5e-6)  // seen 4.8e-7
    }

    // MARK: Helpers

    /// Concatenates tensors (B, T, …) along their flattened trailing axes into one (B, T, Σ widths).
    private static func fuse(_ parts: [Tensor], batch: Int, time: Int) throws -> Tensor {
        let arrays = parts.map { $0.toArray() }
        let widths = parts.map { $0.count / (batch * time) }
        var values: [Float] = []
        for row in 0..<(batch * time) {
            for (array, width) in zip(arrays, widths) {
                values += array[(row * width)..<((row + 1) * width)]
            }
        }
        return try Tensor(shape: [batch, time, widths.reduce(0, +)], values: values)
    }

    /// Splits a (B, T, Σ widths) tensor into dense row-major arrays of (B, T, widthᵢ).
    private static func unfuse(_ fused: Tensor, widths: [Int], batch: Int, time: Int) throws -> [[Float]] {
        let values = fused.toArray()
        let total = widths.reduce(0, +)
        var parts = widths.map { _ in [Float]() }
        for row in 0..<(batch * time) {
            var start = row * total
            for (index, width) in widths.enumerated() {
                parts[index] += values[start..<(start + width)]
                start += width
            }
        }
        return parts
    }
}
