// N rows (all leading axes of the input folded), C input features, O output features.

/// The fully connected layer as one fused kernel pair: the bias is written into the output before the
/// GEMM accumulates onto it (beta = 1), so no separate pass adds it; the backward computes
/// dinp = dout · W, dweight = doutᵀ · inp and dbias = column sums of dout.
public enum LinearKernel {
    /// out (N,O) = inp (N,C) · weight (O,C)ᵀ + bias (O)
    ///
    /// One row (N = 1, decoding a token) goes through `cblas_sgemv` inside ``MatMulKernel/gemm``,
    /// which streams the weight once instead of packing it; the bias stays fused (beta = 1).
    public static func forward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>,
                               weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                               rows: Int, inputs: Int, outputs: Int) {
        if let bias {
            Parallel.forEachChunk(rows, costPerItem: outputs) { range in
                for row in range { (out + row * outputs).update(from: bias, count: outputs) }
            }
        }
        MatMulKernel.gemm(transposeA: false, transposeB: true, m: rows, n: outputs, k: inputs,
                          a: inp, lda: inputs, b: weight, ldb: inputs,
                          beta: bias == nil ? 0 : 1, out: out, ldc: outputs)
    }

    /// dinp (N,C) = dout (N,O) · weight (O,C)
    public static func backwardInput(dinp: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>,
                                     weight: UnsafePointer<Float>, rows: Int, inputs: Int, outputs: Int) {
        MatMulKernel.gemm(transposeA: false, transposeB: false, m: rows, n: inputs, k: outputs,
                          a: dout, lda: outputs, b: weight, ldb: inputs, out: dinp, ldc: inputs)
    }

    /// dweight (O,C) = dout (N,O)ᵀ · inp (N,C)
    public static func backwardWeight(dweight: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>,
                                      inp: UnsafePointer<Float>, rows: Int, inputs: Int, outputs: Int) {
        MatMulKernel.gemm(transposeA: true, transposeB: false, m: outputs, n: inputs, k: rows,
                          a: dout, lda: outputs, b: inp, ldb: inputs, out: dweight, ldc: inputs)
    }

    /// dbias (O) = Σ_rows dout (N,O), summed in a fixed order (columns split across workers).
    public static func backwardBias(dbias: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>,
                                    rows: Int, outputs: Int) {
        Parallel.forEachChunk(outputs, costPerItem: rows) { columns in
            let width = columns.count
            let target = dbias + columns.lowerBound
            target.update(repeating: 0, count: width)
            for row in 0..<rows {
                let source = dout + row * outputs + columns.lowerBound
                for column in 0..<width { target[column] += source[column] }
            }
        }
    }
}

extension Tensor {
    /// out (…, O) = self (…, C) · weight (O, C)ᵀ + bias (O), as `torch.nn.functional.linear`.
    /// The leading axes fold into one GEMM; the bias is fused into it.
    /// - Throws: ``TensorError`` naming both shapes if C differs or the bias is not (O).
    public func linear(weight: Tensor, bias: Tensor? = nil) throws -> Tensor {
        guard rank >= 1, weight.rank == 2, shape[rank - 1] == weight.shape[1] else {
            throw TensorError.shapeMismatch("linear", shape, weight.shape, detail: "input (…, C) needs weight (O, C)")
        }
        let outputs = weight.shape[0], inputs = weight.shape[1]
        if let bias, bias.shape != [outputs] {
            throw TensorError.shapeMismatch("linear", weight.shape, bias.shape, detail: "bias must be (O) = [\(outputs)]")
        }
        let x = isContiguous ? self : contiguousCopy()
        let w = weight.isContiguous ? weight : weight.contiguousCopy()
        let b = bias.map { $0.isContiguous ? $0 : $0.contiguousCopy() }
        let rows = count / max(inputs, 1)
        let out = Tensor.empty(Array(shape.dropLast()) + [outputs])
        LinearKernel.forward(out: out.pointer, inp: x.pointer, weight: w.pointer, bias: b?.pointer,
                             rows: rows, inputs: inputs, outputs: outputs)
        let inputs3: [Tensor] = bias.map { [self, weight, $0] } ?? [self, weight]
        return out.recorded("linear", inputs: inputs3) { gradOut, needs in
            var gradients: [Tensor?] = [nil, nil]
            if needs[0] {
                let dinp = Tensor.empty(x.shape)
                LinearKernel.backwardInput(dinp: dinp.pointer, dout: gradOut.pointer, weight: w.pointer,
                                           rows: rows, inputs: inputs, outputs: outputs)
                gradients[0] = dinp
            }
            if needs[1] {
                let dweight = Tensor.empty(w.shape)
                LinearKernel.backwardWeight(dweight: dweight.pointer, dout: gradOut.pointer, inp: x.pointer,
                                            rows: rows, inputs: inputs, outputs: outputs)
                gradients[1] = dweight
            }
            if b != nil {
                var dbias: Tensor? = nil
                if needs[2] {
                    let column = Tensor.empty([outputs])
                    LinearKernel.backwardBias(dbias: column.pointer, dout: gradOut.pointer, rows: rows, outputs: outputs)
                    dbias = column
                }
                gradients.append(dbias)
            }
            return gradients
        }
    }
}
