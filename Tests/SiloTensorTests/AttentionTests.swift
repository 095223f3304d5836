import XCTest
@testable import SiloTensor

final class AttentionTests: XCTestCase {
    private func random(_ shape: [Int], _ seed: UInt64) -> Tensor {
        Tensor.randomNormal(shape, key: RandomKey(seed: seed))
    }

    /// Plain-loop reference in Double. query (B,T,H,D), key/value (B,S,KVH,D), prefix (P,KVH,D) or
    /// (B,P,KVH,D), mask (B,L) or (B,T,L). Rows that see nothing are zeros.
    private func reference(query: Tensor, key: Tensor, value: Tensor, causal: Bool, mask: Tensor?,
                           prefixKey: Tensor?, prefixValue: Tensor?, scale: Double? = nil) -> [Float] {
        let (B, T, H, D) = (query.shape[0], query.shape[1], query.shape[2], query.shape[3])
        let (S, KVH) = (key.shape[1], key.shape[2])
        let P = prefixKey.map { $0.rank == 3 ? $0.shape[0] : $0.shape[1] } ?? 0
        let L = P + S, G = H / KVH
        let s = scale ?? 1 / Double(D).squareRoot()
        var out = [Float](repeating: 0, count: B * T * H * D)
        for b in 0..<B { for h in 0..<H { for i in 0..<T {
            let kvh = h / G
            func keyVector(_ l: Int) -> (Tensor, [Int]) {
                if l < P {
                    return prefixKey!.rank == 3 ? (prefixKey!, [l, kvh]) : (prefixKey!, [b, l, kvh])
                }
                return (key, [b, l - P, kvh])
            }
            var scores = [Double](repeating: -.infinity, count: L)
            for l in 0..<L {
                if causal && l >= P && (l - P) > S - T + i { continue }
                let (keys, index) = keyVector(l)
                var dot = 0.0
                for d in 0..<D { dot += Double(query[b, i, h, d]) * Double(element(keys, index + [d])) }
                var score = dot * s
                if let mask { score += Double(mask.rank == 2 ? mask[b, l] : mask[b, i, l]) }
                scores[l] = score
            }
            let maximum = scores.max() ?? -.infinity
            if maximum == -.infinity { continue }
            let weights = scores.map { Foundation.exp($0 - maximum) }
            let total = weights.reduce(0, +)
            for d in 0..<D {
                var accumulated = 0.0
                for l in 0..<L where weights[l] > 0 {
                    let v: Double
                    if l < P {
                        v = Double(prefixValue!.rank == 3 ? prefixValue![l, kvh, d] : prefixValue![b, l, kvh, d])
                    } else {
                        v = Double(value[b, l - P, kvh, d])
                    }
                    accumulated += weights[l] / total * v
                }
                out[((b * T + i) * H + h) * D + d] = Float(accumulated)
            }
        } } }
        return out
    }

    private func element(_ tensor: Tensor, _ index: [Int]) -> Float {
        var position = tensor.offset
        for (axis, i) in index.enumerated() { position += i * tensor.strides[axis] }
        return tensor.storage.pointer[position]
    }

    /// A padding mask (B, L): batch item 1 hides its first two key positions with −∞.
    private func paddingMask(B: Int, L: Int) -> Tensor {
        var values = [Float](repeating: 0, count: B * L)
        if B > 1 { values[L] = -.infinity; values[L + 1] = -.infinity }
        return try! Tensor(shape: [B, L], values: values)
    }

    // D = 4 so scale = 1/2; q = e₀, k₀ = 0, k₁ = 2·ln3·e₀ → scores (0, ln 3) → p = (1/4, 3/4).
    // v₀ = 4·e₀, v₁ = 8·e₁ → out = (1/4)·4·e₀ + (3/4)·8·e₁ = (1, 6, 0, 0).
    func testForwardByHand() throws {
        let query = try Tensor(shape: [1, 1, 1, 4], values: [1, 0, 0, 0])
        let key = try Tensor(shape: [1, 2, 1, 4], values: [0, 0, 0, 0, 2 * Float(Foundation.log(3.0)), 0, 0, 0])
        let value = try Tensor(shape: [1, 2, 1, 4], values: [4, 0, 0, 0, 0, 8, 0, 0])
        for causal in [false, true] {  // T = 1, S = 2: the single query sits at position 1 and sees both keys.
            let out = try Tensor.attention(query: query, key: key, value: value, causal: causal)
            XCTAssertEqual(out.shape, [1, 1, 1, 4])
            assertClose(out.toArray(), [1, 6, 0, 0], relative: 1e-5, absolute: 1e-5)
        }
    }

    func testForwardMatchesReference() throws {
        struct Case { var B, T, S, P, H, KVH, D: Int; var causal: Bool; var maskRank: Int; var prefixBatched: Bool }
        let cases = [
            Case(B: 2, T: 5, S: 5, P: 0, H: 4, KVH: 2, D: 8, causal: true, maskRank: 0, prefixBatched: false),
            Case(B: 2, T: 5, S: 5, P: 0, H: 4, KVH: 4, D: 8, causal: false, maskRank: 2, prefixBatched: false),
            Case(B: 2, T: 3, S: 7, P: 2, H: 4, KVH: 2, D: 6, causal: true, maskRank: 2, prefixBatched: false),
            Case(B: 2, T: 4, S: 6, P: 3, H: 4, KVH: 1, D: 20, causal: true, maskRank: 3, prefixBatched: true),
            Case(B: 1, T: 70, S: 75, P: 2, H: 2, KVH: 1, D: 8, causal: true, maskRank: 2, prefixBatched: false),  // two row blocks
            Case(B: 1, T: 70, S: 70, P: 0, H: 2, KVH: 2, D: 4, causal: false, maskRank: 0, prefixBatched: false),
        ]
        for (index, c) in cases.enumerated() {
            let seed = UInt64(index * 10)
            let query = random([c.B, c.T, c.H, c.D], seed + 1)
            let key = random([c.B, c.S, c.KVH, c.D], seed + 2)
            let value = random([c.B, c.S, c.KVH, c.D], seed + 3)
            let prefixShape = c.prefixBatched ? [c.B, c.P, c.KVH, c.D] : [c.P, c.KVH, c.D]
            let prefixKey = c.P > 0 ? random(prefixShape, seed + 4) : nil
            let prefixValue = c.P > 0 ? random(prefixShape, seed + 5) : nil
            let L = c.P + c.S
            var mask: Tensor? = nil
            if c.maskRank == 2 { mask = paddingMask(B: c.B, L: L) }
            if c.maskRank == 3 { mask = random([c.B, c.T, L], seed + 6) }
            let out = try Tensor.attention(query: query, key: key, value: value, causal: c.causal, mask: mask,
                                           prefixKey: prefixKey, prefixValue: prefixValue)
            let expected = reference(query: query, key: key, value: value, causal: c.causal, mask: mask,
                                     prefixKey: prefixKey, prefixValue: prefixValue)
            let error = assertClose(out.toArray(), expected, relative: 1e-4, absolute: 1e-5, "case \(index)")
            XCTAssertLessThan(error, 1e-6, "case \(index)")
        }
    }

    /// A view (B, N, heads, D) of columns start..<start + heads·D of `fused` (B, N, W), with a backward
    /// rule scattering into a zero (B, N, W) gradient — stands in for slicing a fused qkv projection.
    private func headView(_ fused: Tensor, start: Int, heads: Int, D: Int) -> Tensor {
        let (B, N, W) = (fused.shape[0], fused.shape[1], fused.shape[2])
        let view = Tensor(storage: fused.storage, shape: [B, N, heads, D], strides: [N * W, W, D, 1],
                          offset: fused.offset + start)
        return view.recorded("testHeadView", inputs: [fused]) { gradOut, _ in
            let gradient = Tensor.zeros([B, N, W])
            let source = gradOut.pointer, destination = gradient.pointer
            for row in 0..<(B * N) {
                for column in 0..<(heads * D) { destination[row * W + start + column] = source[row * heads * D + column] }
            }
            return [gradient]
        }
    }

    // Strided q/k/v from one fused (B, T, (H + 2·KVH)·D) projection: no copy, same values as dense inputs.
    func testStridedFusedProjectionMatchesDense() throws {
        let (B, T, H, KVH, D) = (2, 6, 4, 2, 8)
        let fused = random([B, T, (H + 2 * KVH) * D], 40)
        let q = headView(fused, start: 0, heads: H, D: D)
        let k = headView(fused, start: H * D, heads: KVH, D: D)
        let v = headView(fused, start: (H + KVH) * D, heads: KVH, D: D)
        XCTAssertFalse(q.isContiguous)
        let strided = try Tensor.attention(query: q, key: k, value: v)
        let dense = try Tensor.attention(query: q.contiguousCopy(), key: k.contiguousCopy(), value: v.contiguousCopy())
        XCTAssertEqual(strided.toArray(), dense.toArray())
        XCTAssertTrue(strided.isContiguous)
        // Gradients through the strided views (BLAS leading dimension (H + 2·KVH)·D ≠ D).
        let error = try checkGradients([fused]) { inputs in
            let f = inputs[0]
            return try Tensor.attention(query: headView(f, start: 0, heads: H, D: D),
                                        key: headView(f, start: H * D, heads: KVH, D: D),
                                        value: headView(f, start: (H + KVH) * D, heads: KVH, D: D))
        }
        XCTAssertLessThan(error, 2e-4)
    }

    // Finite differences for query, key, value with GQA (H = 4, KVH = 2), causal and not, with a padding mask.
    func testGradientsGroupedQueryWithPaddingMask() throws {
        let (B, T, H, KVH, D) = (2, 4, 4, 2, 6)
        let mask = paddingMask(B: B, L: T)
        for causal in [true, false] {
            let inputs = [random([B, T, H, D], 50), random([B, T, KVH, D], 51), random([B, T, KVH, D], 52)]
            let error = try checkGradients(inputs) {
                try Tensor.attention(query: $0[0], key: $0[1], value: $0[2], causal: causal, mask: mask)
            }
            XCTAssertLessThan(error, 2e-4, "causal \(causal)")
        }
    }

    // S > T (KV-cache offset), shared prefix keys/values: gradients for all five inputs; the prefix
    // gradient sums over the batch. L = 20: one 16-wide vector step of the row kernels plus a tail.
    func testGradientsWithSharedPrefixAndCacheOffset() throws {
        let (B, T, S, P, H, KVH, D) = (2, 3, 18, 2, 4, 2, 4)
        let mask = paddingMask(B: B, L: P + S)
        for causal in [true, false] {
            let inputs = [random([B, T, H, D], 60), random([B, S, KVH, D], 61), random([B, S, KVH, D], 62),
                          random([P, KVH, D], 63), random([P, KVH, D], 64)]
            let error = try checkGradients(inputs) {
                try Tensor.attention(query: $0[0], key: $0[1], value: $0[2], causal: causal, mask: mask,
                                     prefixKey: $0[3], prefixValue: $0[4])
            }
            XCTAssertLessThan(error, 2e-4, "causal \(causal)")
        }
    }

    // Per-batch prefix (B, P, KVH, D), a full (B, T, L) additive mask, explicit scale.
    func testGradientsWithBatchedPrefixAndFullMask() throws {
        let (B, T, S, P, H, KVH, D) = (2, 3, 4, 2, 2, 1, 5)
        let mask = random([B, T, P + S], 70)
        let inputs = [random([B, T, H, D], 71), random([B, S, KVH, D], 72), random([B, S, KVH, D], 73),
                      random([B, P, KVH, D], 74), random([B, P, KVH, D], 75)]
        let error = try checkGradients(inputs) {
            try Tensor.attention(query: $0[0], key: $0[1], value: $0[2], causal: true, mask: mask,
                                 prefixKey: $0[3], prefixValue: $0[4], scale: 0.3)
        }
        XCTAssertLessThan(error, 2e-4)
    }

    // Two row blocks (T = 66 > 64): the second block accumulates into the kv gradients of the first.
    func testGradientsAcrossRowBlocks() throws {
        let (B, T, H, KVH, D) = (1, 66, 2, 1, 3)
        let inputs = [random([B, T, H, D], 80), random([B, T, KVH, D], 81), random([B, T, KVH, D], 82),
                      random([1, KVH, D], 83), random([1, KVH, D], 84)]
        let error = try checkGradients(inputs) {
            try Tensor.attention(query: $0[0], key: $0[1], value: $0[2], prefixKey: $0[3], prefixValue: $0[4])
        }
        XCTAssertLessThan(error, 2e-4)
    }

    // Grouped-query attention equals multi-head attention with each kv head repeated G times, and the GQA
    // key/value gradient is the sum of the repeated heads' gradients.
    func testGroupedQueryEqualsRepeatedHeads() throws {
        let (B, T, H, KVH, D) = (2, 5, 4, 2, 8)
        let G = H / KVH
        let query = random([B, T, H, D], 90).requiringGrad()
        let key = random([B, T, KVH, D], 91).requiringGrad()
        let value = random([B, T, KVH, D], 92).requiringGrad()
        func repeated(_ x: Tensor) -> Tensor {
            var values = [Float]()
            for b in 0..<B { for t in 0..<T { for h in 0..<H { for d in 0..<D { values.append(x[b, t, h / G, d]) } } } }
            return try! Tensor(shape: [B, T, H, D], values: values).requiringGrad()
        }
        let keyRepeated = repeated(key), valueRepeated = repeated(value)
        let grouped = try Tensor.attention(query: query, key: key, value: value)
        let queryCopy = query.detached().requiringGrad()
        let full = try Tensor.attention(query: queryCopy, key: keyRepeated, value: valueRepeated)
        assertClose(grouped.toArray(), full.toArray(), relative: 1e-5, absolute: 1e-6, "forward")
        let seed = random([B, T, H, D], 93)
        try grouped.backward(seed: seed)
        try full.backward(seed: seed)
        assertClose(try XCTUnwrap(query.grad).toArray(), try XCTUnwrap(queryCopy.grad).toArray(), relative: 1e-5, absolute: 1e-6, "dquery")
        for (gradient, repeatedGradient) in [(key.grad, keyRepeated.grad), (value.grad, valueRepeated.grad)] {
            let g = try XCTUnwrap(gradient), r = try XCTUnwrap(repeatedGradient)
            var summed = [Float]()
            for b in 0..<B { for t in 0..<T { for kvh in 0..<KVH { for d in 0..<D {
                var total: Float = 0
                for h in (kvh * G)..<(kvh * G + G) { total += r[b, t, h, d] }
                summed.append(total)
            } } } }
            assertClose(g.toArray(), summed, relative: 1e-5, absolute: 1e-5, "dkey/dvalue")
        }
    }

    // Batch item 1 hides every key with −∞: its output and gradients are zeros, not NaN.
    func testFullyMaskedRowGivesZeros() throws {
        let (B, T, H, D) = (2, 3, 2, 4)
        var maskValues = [Float](repeating: 0, count: B * T)
        for j in 0..<T { maskValues[T + j] = -.infinity }
        let mask = try Tensor(shape: [B, T], values: maskValues)
        let query = random([B, T, H, D], 100).requiringGrad()
        let key = random([B, T, H, D], 101).requiringGrad()
        let value = random([B, T, H, D], 102).requiringGrad()
        for causal in [true, false] {
            query.zeroGrad(); key.zeroGrad(); value.zeroGrad()
            let out = try Tensor.attention(query: query, key: key, value: value, causal: causal, mask: mask)
            let values = out.toArray()
            XCTAssertTrue(values.allSatisfy { $0.isFinite })
            XCTAssertEqual(Array(values[(T * H * D)...]), [Float](repeating: 0, count: T * H * D))
            XCTAssertNotEqual(values[0], 0)
            try out.backward(seed: Tensor.ones(out.shape))
            for gradient in [query.grad, key.grad, value.grad] {
                let g = try XCTUnwrap(gradient).toArray()
                XCTAssertTrue(g.allSatisfy { $0.isFinite })
                XCTAssertEqual(Array(g[(g.count / 2)...]), [Float](repeating: 0, count: g.count / 2))
            }
        }
    }

    // Only the requested gradients are computed: a frozen key/value gets none.
    func testFrozenKeyValueGetNoGradient() throws {
        let query = random([1, 3, 2, 4], 110).requiringGrad()
        let key = random([1, 3, 2, 4], 111)
        let value = random([1, 3, 2, 4], 112)
        let out = try Tensor.attention(query: query, key: key, value: value)
        try out.backward(seed: Tensor.ones(out.shape))
        XCTAssertNotNil(query.grad)
        XCTAssertNil(key.grad)
        XCTAssertNil(value.grad)
    }

    func testErrorsNameOpAndShapes() {
        func expectError(_ body: @autoclosure () throws -> Tensor, contains parts: [String], line: UInt = #line) {
            XCTAssertThrowsError(try body(), line: line) { error in
                let text = "\(error)"
                for part in parts { XCTAssertTrue(text.contains(part), "\(text) lacks \(part)", line: line) }
            }
        }
        let query = Tensor.zeros([2, 3, 4, 8])
        let key = Tensor.zeros([2, 3, 2, 8])
        // H % KVH != 0.
        expectError(try Tensor.attention(query: Tensor.zeros([2, 3, 3, 8]), key: key, value: key),
                    contains: ["attention", "H = 3", "KVH = 2", "[2, 3, 3, 8]", "[2, 3, 2, 8]"])
        // Mismatched head dimension.
        expectError(try Tensor.attention(query: Tensor.zeros([2, 3, 4, 6]), key: key, value: key),
                    contains: ["attention", "[2, 3, 4, 6]", "[2, 3, 2, 8]"])
        // Key and value differ.
        expectError(try Tensor.attention(query: query, key: key, value: Tensor.zeros([2, 4, 2, 8])),
                    contains: ["attention", "[2, 3, 2, 8]", "[2, 4, 2, 8]"])
        // Wrong mask shape.
        expectError(try Tensor.attention(query: query, key: key, value: key, mask: Tensor.zeros([2, 4])),
                    contains: ["attention", "[2, 4]", "[2, 3]"])
        // Prefix with the wrong kv heads.
        expectError(try Tensor.attention(query: query, key: key, value: key,
                                         prefixKey: Tensor.zeros([1, 3, 8]), prefixValue: Tensor.zeros([1, 3, 8])),
                    contains: ["attention", "[1, 3, 8]"])
        // Causal with fewer keys than queries.
        expectError(try Tensor.attention(query: query, key: Tensor.zeros([2, 2, 2, 8]), value: Tensor.zeros([2, 2, 2, 8])),
                    contains: ["attention", "S = 2", "T = 3"])
    }
}
