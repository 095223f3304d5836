// Legend: n elements of any shape, flattened (dense). σ(x) = 1 / (1 + e^−x).
//
// Every kernel is element-wise and chunk-parallel; each element goes through the same 16-lane
// arithmetic whatever the split, so results do not depend on the thread count. Backward kernels
// write dinp (they do not accumulate).

/// Which GELU formula to use.
public enum GELUApproximation: Sendable, Hashable {
    /// 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))): GPT-2's "gelu_new", PyTorch `approximate="tanh"`.
    case tanh
    /// x·Φ(x) = 0.5·x·(1 + erf(x/√2)): PyTorch's default `approximate="none"`.
    case exact
}

/// Forward/backward kernels of the element-wise activations.
public enum ActivationKernel {
    /// √(2/π).
    static let geluScale: Float = 0.797_884_560_802_865_4
    static let geluCubic: Float = 0.044_715
    /// 1/√2 and 1/√(2π).
    static let inverseSquareRootTwo: Float = 0.707_106_781_186_547_5
    static let inverseSquareRootTwoPi: Float = 0.398_942_280_401_432_7

    /// Splits 0..<count across the workers; `cost` is roughly the operations per element.
    @inline(__always)
    static func parallelMap(count: Int, cost: Int, _ body: (Range<Int>) -> Void) {
        Parallel.forEachChunk(count, costPerItem: cost, body)
    }

    // MARK: GELU (tanh)

    /// out (n) = x·σ(2u), u = √(2/π)·(x + 0.044715·x³) — equal to 0.5·x·(1 + tanh u), without the
    /// cancellation of 1 + tanh u for large negative x.
    public static func geluTanhForward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, count: Int) {
        parallelMap(count: count, cost: 24) { range in
            FastMath.map(inp + range.lowerBound, out + range.lowerBound, count: range.count) { x in
                let u = geluScale * (x + geluCubic * x * x * x)
                return x * FastMath.sigmoid(u + u)
            }
        }
    }

    /// dinp (n) = dout · (σ(2u) + x·σ(2u)(1 − σ(2u))·2√(2/π)(1 + 3·0.044715·x²)).
    public static func geluTanhBackward(dinp: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>,
                                        inp: UnsafePointer<Float>, count: Int) {
        parallelMap(count: count, cost: 32) { range in
            FastMath.map(inp + range.lowerBound, dout + range.lowerBound, dinp + range.lowerBound, count: range.count) { x, g in
                let x2 = x * x
                let u = geluScale * (x + geluCubic * x2 * x)
                let s = FastMath.sigmoid(u + u)
                let du = 2 * geluScale * (1 + 3 * geluCubic * x2)
                return g * (s + x * s * (1 - s) * du)
            }
        }
    }

    // MARK: GELU (exact)

    /// out (n) = x·Φ(x) = 0.5·x·(1 + erf(x/√2)), computed as 0.5·x·erfc(−x/√2) so that the negative
    /// tail keeps its relative accuracy (1 + erf cancels there).
    public static func geluExactForward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, count: Int) {
        parallelMap(count: count, cost: 48) { range in
            FastMath.map(inp + range.lowerBound, out + range.lowerBound, count: range.count) { x in
                0.5 * x * FastMath.erfc(-x * inverseSquareRootTwo)
            }
        }
    }

    /// dinp (n) = dout · (Φ(x) + x·φ(x)), φ(x) = e^(−x²/2)/√(2π).
    public static func geluExactBackward(dinp: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>,
                                         inp: UnsafePointer<Float>, count: Int) {
        parallelMap(count: count, cost: 64) { range in
            FastMath.map(inp + range.lowerBound, dout + range.lowerBound, dinp + range.lowerBound, count: range.count) { x, g in
                let cdf = 0.5 * FastMath.erfc(-x * inverseSquareRootTwo)
                let pdf = FastMath.exp(-0.5 * x * x) * inverseSquareRootTwoPi
                return g * (cdf + x * pdf)
            }
        }
    }

    // MARK: SiLU, sigmoid, tanh

    /// out (n) = x·σ(x).
    public static func siluForward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, count: Int) {
        parallelMap(count: count, cost: 16) { range in
            FastMath.map(inp + range.lowerBound, out + range.lowerBound, count: range.count) { x in
                x * FastMath.sigmoid(x)
            }
        }
    }

    /// dinp (n) = dout · σ(x)·(1 + x·(1 − σ(x))).
    public static func siluBackward(dinp: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>,
                                    inp: UnsafePointer<Float>, count: Int) {
        parallelMap(count: count, cost: 20) { range in
            FastMath.map(inp + range.lowerBound, dout + range.lowerBound, dinp + range.lowerBound, count: range.count) { x, g in
                let s = FastMath.sigmoid(x)
                return g * s * (1 + x * (1 - s))
            }
        }
    }

    /// out (n) = σ(x).
    public static func sigmoidForward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, count: Int) {
        parallelMap(count: count, cost: 16) { range in
            FastMath.map(inp + range.lowerBound, out + range.lowerBound, count: range.count) { FastMath.sigmoid($0) }
        }
    }

    /// dinp (n) = dout · out·(1 − out), from the forward's output.
    public static func sigmoidBackward(dinp: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>,
                                       out: UnsafePointer<Float>, count: Int) {
        parallelMap(count: count, cost: 4) { range in
            FastMath.map(out + range.lowerBound, dout + range.lowerBound, dinp + range.lowerBound, count: range.count) { y, g in
                g * y * (1 - y)
            }
        }
    }

    /// out (n) = tanh(x).
    public static func tanhForward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, count: Int) {
        parallelMap(count: count, cost: 24) { range in
            FastMath.map(inp + range.lowerBound, out + range.lowerBound, count: range.count) { FastMath.tanh($0) }
        }
    }

    /// dinp (n) = dout · (1 − out²), from the forward's output.
    public static func tanhBackward(dinp: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>,
                                    out: UnsafePointer<Float>, count: Int) {
        parallelMap(count: count, cost: 4) { range in
            FastMath.map(out + range.lowerBound, dout + range.lowerBound, dinp + range.lowerBound, count: range.count) { y, g in
                g * (1 - y * y)
            }
        }
    }

    // MARK: SwiGLU

    /// out (n) = silu(gate) ⊙ up = gate·σ(gate)·up.
    public static func swigluForward(out: UnsafeMutablePointer<Float>, gate: UnsafePointer<Float>,
                                     up: UnsafePointer<Float>, count: Int) {
        parallelMap(count: count, cost: 16) { range in
            FastMath.map(gate + range.lowerBound, up + range.lowerBound, out + range.lowerBound, count: range.count) { a, b in
                a * FastMath.sigmoid(a) * b
            }
        }
    }

    /// dgate (n) = dout · up · σ(gate)(1 + gate(1 − σ(gate))); dup (n) = dout · gate·σ(gate).
    /// Each is written only when non-nil.
    public static func swigluBackward(dgate: UnsafeMutablePointer<Float>?, dup: UnsafeMutablePointer<Float>?,
                                      dout: UnsafePointer<Float>, gate: UnsafePointer<Float>,
                                      up: UnsafePointer<Float>, count: Int) {
        parallelMap(count: count, cost: 24) { range in
            let start = range.lowerBound
            var i = start
            while i < range.upperBound {
                let lanes = min(16, range.upperBound - i)
                let a: FastMath.Vector, b: FastMath.Vector, g: FastMath.Vector
                if lanes == 16 {
                    a = FastMath.load(gate + i); b = FastMath.load(up + i); g = FastMath.load(dout + i)
                } else {
                    a = FastMath.loadPartial(gate + i, count: lanes)
                    b = FastMath.loadPartial(up + i, count: lanes)
                    g = FastMath.loadPartial(dout + i, count: lanes)
                }
                let s = FastMath.sigmoid(a)
                if let dgate {
                    let value = g * b * s * (1 + a * (1 - s))
                    if lanes == 16 { FastMath.store(value, dgate + i) } else { FastMath.storePartial(value, dgate + i, count: lanes) }
                }
                if let dup {
                    let value = g * a * s
                    if lanes == 16 { FastMath.store(value, dup + i) } else { FastMath.storePartial(value, dup + i, count: lanes) }
                }
                i += lanes
            }
        }
    }
}

extension Tensor {
    /// GELU, element-wise: `.tanh` is GPT-2's "gelu_new" (PyTorch `approximate="tanh"`), `.exact`
    /// is x·Φ(x) with the error function. Same shape as `self`.
    public func gelu(_ approximation: GELUApproximation = .tanh) -> Tensor {
        let input = isContiguous ? self : contiguousCopy()
        let out = Tensor.empty(shape)
        switch approximation {
        case .tanh: ActivationKernel.geluTanhForward(out: out.pointer, inp: input.pointer, count: count)
        case .exact: ActivationKernel.geluExactForward(out: out.pointer, inp: input.pointer, count: count)
        }
        return out.recorded("gelu", inputs: [self]) { gradOut, needs in
            guard needs[0] else { return [nil] }
            let dinp = Tensor.empty(input.shape)
            switch approximation {
            case .tanh:
                ActivationKernel.geluTanhBackward(dinp: dinp.pointer, dout: gradOut.pointer, inp: input.pointer, count: dinp.count)
            case .exact:
                ActivationKernel.geluExactBackward(dinp: dinp.pointer, dout: gradOut.pointer, inp: input.pointer, count: dinp.count)
            }
            return [dinp]
        }
    }

    /// SiLU (swish), element-wise: x·σ(x). Same shape as `self`.
    public func silu() -> Tensor {
        let input = isContiguous ? self : contiguousCopy()
        let out = Tensor.empty(shape)
        ActivationKernel.siluForward(out: out.pointer, inp: input.pointer, count: count)
        return out.recorded("silu", inputs: [self]) { gradOut, needs in
            guard needs[0] else { return [nil] }
            let dinp = Tensor.empty(input.shape)
            ActivationKernel.siluBackward(dinp: dinp.pointer, dout: gradOut.pointer, inp: input.pointer, count: dinp.count)
            return [dinp]
        }
    }

    /// The logistic sigmoid, element-wise: 1 / (1 + e^−x). Same shape as `self`.
    public func sigmoid() -> Tensor {
        let input = isContiguous ? self : contiguousCopy()
        let out = Tensor.empty(shape)
        ActivationKernel.sigmoidForward(out: out.pointer, inp: input.pointer, count: count)
        return out.recorded("sigmoid", inputs: [self]) { gradOut, needs in
            guard needs[0] else { return [nil] }
            let dinp = Tensor.empty(out.shape)
            ActivationKernel.sigmoidBackward(dinp: dinp.pointer, dout: gradOut.pointer, out: out.pointer, count: dinp.count)
            return [dinp]
        }
    }

    /// The hyperbolic tangent, element-wise. Same shape as `self`.
    public func tanh() -> Tensor {
        let input = isContiguous ? self : contiguousCopy()
        let out = Tensor.empty(shape)
        ActivationKernel.tanhForward(out: out.pointer, inp: input.pointer, count: count)
        return out.recorded("tanh", inputs: [self]) { gradOut, needs in
            guard needs[0] else { return [nil] }
            let dinp = Tensor.empty(out.shape)
            ActivationKernel.tanhBackward(dinp: dinp.pointer, dout: gradOut.pointer, out: out.pointer, count: dinp.count)
            return [dinp]
        }
    }

    /// SwiGLU, fused: silu(gate) ⊙ up (the Llama MLP's gated activation). Same shape as the inputs.
    /// - Throws: ``TensorError`` naming both shapes if `gate` and `up` differ in shape (no broadcasting).
    public static func swiglu(gate: Tensor, up: Tensor) throws -> Tensor {
        guard gate.shape == up.shape else {
            throw TensorError.shapeMismatch("swiglu", gate.shape, up.shape, detail: "gate and up must have the same shape")
        }
        let denseGate = gate.isContiguous ? gate : gate.contiguousCopy()
        let denseUp = up.isContiguous ? up : up.contiguousCopy()
        let out = Tensor.empty(gate.shape)
        ActivationKernel.swigluForward(out: out.pointer, gate: denseGate.pointer, up: denseUp.pointer, count: out.count)
        return out.recorded("swiglu", inputs: [gate, up]) { gradOut, needs in
            let dgate = needs[0] ? Tensor.empty(denseGate.shape) : nil
            let dup = needs[1] ? Tensor.empty(denseUp.shape) : nil
            ActivationKernel.swigluBackward(dgate: dgate?.pointer, dup: dup?.pointer, dout: gradOut.pointer,
                                            gate: denseGate.pointer, up: denseUp.pointer, count: gradOut.count)
            return [dgate, dup]
        }
    }
}
