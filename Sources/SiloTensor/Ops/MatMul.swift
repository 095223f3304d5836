import CBLAS

// Legend: M rows of the output, N columns of the output, K the contracted dimension; leading
// dimensions of batched products are "batch".

/// Low-level GEMM kernels: forward and backward of `out = op(a) · op(b)` straight to `cblas_sgemm`.
public enum MatMulKernel {
    /// out (M,N) = alpha · op(a) · op(b) + beta · out, row-major. `op(x)` is `xᵀ` when its flag is set;
    /// `lda`/`ldb`/`ldc` are row strides of the stored matrices.
    @inline(__always)
    public static func gemm(transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int,
                            alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
                            b: UnsafePointer<Float>, ldb: Int,
                            beta: Float = 0, out: UnsafeMutablePointer<Float>, ldc: Int) {
        if m == 0 || n == 0 { return }
        if k == 0 {
            for row in 0..<m {
                let line = out + row * ldc
                for column in 0..<n { line[column] = beta == 0 ? 0 : beta * line[column] }
            }
            return
        }
        if m == 1 || n == 1 {
            gemv(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: alpha,
                 a: a, lda: lda, b: b, ldb: ldb, beta: beta, out: out, ldc: ldc)
            return
        }
        cblas_sgemm(CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, out, Int32(ldc))
    }

    /// The one-row (M = 1) or one-column (N = 1) product through `cblas_sgemv`, same contract as
    /// ``gemm(transposeA:transposeB:m:n:k:alpha:a:lda:b:ldb:beta:out:ldc:)``. `sgemm` packs the whole
    /// matrix operand on every call, which dominates when the other side is a single vector (decoding
    /// one token); `sgemv` streams the matrix once.
    ///
    /// M = 1: out (1,N) = x (K) · op(b) (K,N), i.e. outᵀ = op(b)ᵀ · x with x = op(a)'s only row
    /// (stride 1 when a is stored (1,K), stride lda when stored (K,1) and transposed).
    /// N = 1: out (M,1) = op(a) (M,K) · x (K), x = op(b)'s only column (stride ldb when b is stored
    /// (K,1), stride 1 when stored (1,K) and transposed), written with stride ldc.
    @inline(__always)
    static func gemv(transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int, alpha: Float,
                     a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                     beta: Float, out: UnsafeMutablePointer<Float>, ldc: Int) {
        // BLAS scales y by beta first; with beta = 0 an uninitialised output could hold NaN, and
        // 0 · NaN is NaN in some sgemv builds, so clear it (gemm's contract ignores the old out).
        let outStride = m == 1 ? 1 : ldc
        let outCount = m == 1 ? n : m
        if beta == 0 {
            for index in 0..<outCount { out[index * outStride] = 0 }
        }
        if m == 1 {
            // Matrix op(b) stored row-major as (K,N) (not transposed) or (N,K) (transposed).
            let x = a, incx = transposeA ? lda : 1
            if transposeB {
                cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(n), Int32(k), alpha, b, Int32(ldb),
                            x, Int32(incx), beta, out, 1)
            } else {
                cblas_sgemv(CblasRowMajor, CblasTrans, Int32(k), Int32(n), alpha, b, Int32(ldb),
                            x, Int32(incx), beta, out, 1)
            }
        } else {
            // Matrix op(a) stored row-major as (M,K) (not transposed) or (K,M) (transposed).
            let x = b, incx = transposeB ? 1 : ldb
            if transposeA {
                cblas_sgemv(CblasRowMajor, CblasTrans, Int32(k), Int32(m), alpha, a, Int32(lda),
                            x, Int32(incx), beta, out, Int32(ldc))
            } else {
                cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(m), Int32(k), alpha, a, Int32(lda),
                            x, Int32(incx), beta, out, Int32(ldc))
            }
        }
    }
}

/// A GEMM operand: dense memory plus whether it is used transposed.
struct GEMMOperand {
    var tensor: Tensor
    var transposed: Bool
    var rows: Int { tensor.shape[tensor.rank - 2] }
    var columns: Int { tensor.shape[tensor.rank - 1] }
    /// Row stride of the stored matrix.
    var leading: Int { tensor.strides[tensor.rank - 2] }

    /// Prepares `tensor` for BLAS without copying when it is contiguous or a transposed view of
    /// contiguous memory (the last two axes swapped).
    init(_ tensor: Tensor, transposed: Bool) {
        if tensor.isContiguous {
            self.tensor = tensor
            self.transposed = transposed
            return
        }
        let rank = tensor.rank
        var swapped = tensor
        swapped.shape.swapAt(rank - 2, rank - 1)
        swapped.strides.swapAt(rank - 2, rank - 1)
        if swapped.isContiguous {
            self.tensor = swapped
            self.transposed = !transposed
        } else {
            self.tensor = tensor.contiguousCopy()
            self.transposed = transposed
        }
    }

    /// Shape of op(x): (rows, columns) after the transpose flag.
    var logicalRows: Int { transposed ? columns : rows }
    var logicalColumns: Int { transposed ? rows : columns }
}

extension Tensor {
    /// out (batch…, M, N) = op(self) (batch…, M, K) · op(other) (batch…, K, N).
    ///
    /// `other` may be 2-D (a weight shared by every batch item: the batch folds into M and the product
    /// is one GEMM) or have the same leading dimensions as `self`. `transposeA`/`transposeB` use the
    /// transposed last two axes without copying; transposed views are recognised and passed to BLAS.
    /// - Throws: ``TensorError`` naming both shapes if the inner dimensions or batch dimensions differ.
    public func matmul(_ other: Tensor, transposeA: Bool = false, transposeB: Bool = false) throws -> Tensor {
        guard rank >= 2, other.rank >= 2 else {
            throw TensorError.shapeMismatch("matmul", shape, other.shape, detail: "both operands need at least 2 dimensions")
        }
        let a = GEMMOperand(self, transposed: transposeA)
        let b = GEMMOperand(other, transposed: transposeB)
        let m = a.logicalRows, k = a.logicalColumns, n = b.logicalColumns
        guard b.logicalRows == k else {
            throw TensorError.shapeMismatch("matmul", shape, other.shape,
                                            detail: "inner dimensions \(k) and \(b.logicalRows) differ (transposeA: \(transposeA), transposeB: \(transposeB))")
        }
        let batchShape = Array(shape.dropLast(2))
        if other.rank > 2 && Array(other.shape.dropLast(2)) != batchShape {
            throw TensorError.shapeMismatch("matmul", shape, other.shape, detail: "batch dimensions differ")
        }
        var out = Tensor.empty(batchShape + [m, n])
        Tensor.gemmForward(a, b, out: &out, m: m, n: n, k: k)

        let savedA = a, savedB = b
        return out.recorded("matmul", inputs: [self, other]) { gradOut, needs in
            var gradA: Tensor? = nil
            var gradB: Tensor? = nil
            let dOut = GEMMOperand(gradOut, transposed: false)
            if needs[0] {
                // d op(A) = dOut · op(B)ᵀ ; if A is used transposed, dA = op(B) · dOutᵀ.
                var dA = Tensor.empty(savedA.tensor.shape)
                if !savedA.transposed {
                    Tensor.gemmForward(dOut, savedB.flipped, out: &dA, m: m, n: k, k: n)
                } else {
                    Tensor.gemmForward(savedB, dOut.flipped, out: &dA, m: k, n: m, k: n)
                }
                gradA = dA.restoringLayout(of: self, wasSwapped: savedA.transposed != transposeA)
            }
            if needs[1] {
                // d op(B) = op(A)ᵀ · dOut ; if B is used transposed, dB = dOutᵀ · op(A).
                var dB = Tensor.empty(savedB.tensor.shape)
                if !savedB.transposed {
                    Tensor.gemmAccumulatingBatch(savedA.flipped, dOut, out: &dB, m: k, n: n, k: m, batchFolds: other.rank == 2)
                } else {
                    Tensor.gemmAccumulatingBatch(dOut.flipped, savedA, out: &dB, m: n, n: k, k: m, batchFolds: other.rank == 2)
                }
                gradB = dB.restoringLayout(of: other, wasSwapped: savedB.transposed != transposeB)
            }
            return [gradA, gradB]
        }
    }

    /// A gradient computed in the layout of a dense operand, returned in the shape of the original
    /// (possibly transposed-view) input.
    private func restoringLayout(of original: Tensor, wasSwapped: Bool) -> Tensor {
        guard wasSwapped else { return self }
        var view = self
        view.shape.swapAt(rank - 2, rank - 1)
        view.strides.swapAt(rank - 2, rank - 1)
        precondition(view.shape == original.shape)
        return view
    }

    /// out = op(a) · op(b) over the batch (a's leading dims), folding the batch into M when b is 2-D.
    fileprivate static func gemmForward(_ a: GEMMOperand, _ b: GEMMOperand, out: inout Tensor, m: Int, n: Int, k: Int) {
        let batch = out.count / max(m * n, 1)
        let aMatrix = a.rows * a.columns
        let bShared = b.tensor.rank == 2
        let bMatrix = b.rows * b.columns
        if bShared && !a.transposed {
            // (batch·M, K) · (K, N): one GEMM.
            MatMulKernel.gemm(transposeA: false, transposeB: b.transposed, m: batch * m, n: n, k: k,
                              a: a.tensor.pointer, lda: a.leading, b: b.tensor.pointer, ldb: b.leading,
                              out: out.pointer, ldc: n)
            return
        }
        let aBase = a.tensor.pointer, bBase = b.tensor.pointer, outBase = out.pointer
        let body: (Int) -> Void = { item in
            MatMulKernel.gemm(transposeA: a.transposed, transposeB: b.transposed, m: m, n: n, k: k,
                              a: aBase + (a.tensor.rank == 2 ? 0 : item * aMatrix), lda: a.leading,
                              b: bBase + (bShared ? 0 : item * bMatrix), ldb: b.leading,
                              out: outBase + item * m * n, ldc: n)
        }
        for item in 0..<batch { body(item) }
    }

    /// The weight gradient of a batched product: summed over the batch when the weight was shared
    /// (one GEMM with the batch folded into K), per item otherwise.
    fileprivate static func gemmAccumulatingBatch(_ a: GEMMOperand, _ b: GEMMOperand, out: inout Tensor,
                                                  m: Int, n: Int, k: Int, batchFolds: Bool) {
        if batchFolds && a.transposed && !b.transposed && a.tensor.isContiguous && b.tensor.isContiguous {
            // Both stored as (batch·K, …): one GEMM with the batch folded into the contracted dimension.
            let totalK = a.tensor.count / m
            MatMulKernel.gemm(transposeA: true, transposeB: false, m: m, n: n, k: totalK,
                              a: a.tensor.pointer, lda: m, b: b.tensor.pointer, ldb: n,
                              out: out.pointer, ldc: n)
        } else if batchFolds {
            // Shared weight but batch items not foldable: accumulate item by item (beta = 1).
            let batch = a.tensor.count / (a.rows * a.columns)
            for item in 0..<batch {
                MatMulKernel.gemm(transposeA: a.transposed, transposeB: b.transposed, m: m, n: n, k: k,
                                  a: a.tensor.pointer + item * a.rows * a.columns, lda: a.leading,
                                  b: b.tensor.pointer + item * b.rows * b.columns, ldb: b.leading,
                                  beta: item == 0 ? 0 : 1, out: out.pointer, ldc: n)
            }
        } else {
            gemmForward(a, b, out: &out, m: m, n: n, k: k)
        }
    }
}

extension GEMMOperand {
    /// The same memory used with the opposite transpose flag.
    var flipped: GEMMOperand {
        var copy = self
        copy.transposed.toggle()
        return copy
    }
}
