import SiloTensor

// O output features (rows), C input features (columns), NB = C / 32 blocks per row, H heads.

/// How a checkpoint's weights are held in memory after loading.
public enum WeightPrecision: String, Sendable, CaseIterable {
    /// Every tensor expanded to Float32 (trainable; the default for training code).
    case float32
    /// Projections (and a tied LM head) stored in a GGUF file as Q4_0, Q4_1 or Q8_0 keep their
    /// quantised blocks and multiply through a fused kernel (``QuantizedLinear``): about 5x fewer bytes
    /// read per decoded token. Frozen: gradients reach the input, never these weights. Other tensors
    /// (norms, the embedding lookup table, projections of other types) are Float32 as before.
    case quantized
}

/// A fully connected layer `y = x·Wᵀ + b` whose weight W (O, C) stays in ggml's quantised blocks
/// (Q4_0, Q4_1, Q8_0): a frozen base projection for inference or adapter training.
///
/// A few rows (decoding one token) go through a fused kernel that unpacks the blocks in registers
/// (``QuantizedMatrix/multiply(_:rows:into:bias:)``); more rows (a prompt, a training batch) are
/// multiplied by `sgemm` against the weight dequantised chunk by chunk into a pooled scratch. Both give
/// `x · dequantize(W)ᵀ + b` up to summation order (≈1e-6 relative).
///
/// The weight is **not trainable**: gradients flow to the input (so layers before it, or adapters
/// around it, train) and to the Float32 bias, never to W. ``setParameter(_:to:)`` with `weight` throws;
/// to train the weight, load the model with ``WeightPrecision/float32``. ``namedParameters`` lists the
/// weight dequantised on demand (an O·C Float32 copy per access: for saving or inspection, not for a
/// hot loop).
public final class QuantizedLinear: LinearLayer {
    /// W (O, C) in its blocks.
    public let weight: QuantizedMatrix
    /// b (O), or nil.
    public private(set) var bias: Tensor?

    /// A layer over `weight` and `bias` (O).
    /// - Precondition: the bias, when given, is (O).
    public init(weight: QuantizedMatrix, bias: Tensor? = nil) {
        precondition(bias == nil || bias?.shape == [weight.rows],
                     "QuantizedLinear: bias \(bias?.shape ?? []) does not match weight (\(weight.rows), \(weight.columns))")
        self.weight = weight
        self.bias = bias?.contiguous()
    }

    /// The ggml types whose blocks this layer keeps: Q4_0, Q4_1, Q8_0.
    public static let supportedTypes: [GGMLType] = [.q4_0, .q4_1, .q8_0]

    /// A layer over ggml blocks as stored in a GGUF file: `rows` rows of `columns` elements of `type`,
    /// block after block (ggml's array-of-structs layout, half scales). The scales are widened to
    /// Float32 exactly and the blocks re-laid out structure-of-arrays; the bytes are copied, so
    /// `blocks` need not outlive the call.
    /// - Parameters:
    ///   - rowOrder: when given, row r of the layer is stored row `rowOrder[r]` (the Llama Q/K
    ///     un-permutation, ``llamaQKRowOrder(rows:heads:)``).
    /// - Returns: nil when `type` is not one of ``supportedTypes``.
    /// - Precondition: `blocks` holds rows·columns/32 blocks, `columns` is a multiple of 32 and
    ///   `rowOrder` is a permutation of 0..<rows.
    public static func ggmlBlocks(_ blocks: UnsafeRawBufferPointer, type: GGMLType, rows: Int, columns: Int,
                                  rowOrder: [Int]? = nil, bias: Tensor? = nil) -> QuantizedLinear? {
        let format: BlockQuantization
        switch type {
        case .q4_0: format = .q4_0
        case .q4_1: format = .q4_1
        case .q8_0: format = .q8_0
        default: return nil
        }
        let perRow = columns / 32
        precondition(columns % 32 == 0 && blocks.count >= rows * perRow * type.typeSize,
                     "QuantizedLinear: \(blocks.count) bytes cannot hold (\(rows), \(columns)) \(type)")
        precondition(rowOrder == nil || rowOrder?.count == rows, "QuantizedLinear: row order of \(rowOrder?.count ?? 0) for \(rows) rows")
        guard let source = blocks.baseAddress else {
            return QuantizedLinear(weight: QuantizedMatrix(format: format, rows: rows, columns: columns), bias: bias)
        }
        let matrix = QuantizedMatrix(format: format, rows: rows, columns: columns)
        let typeSize = type.typeSize, quantBytes = format.quantBytesPerBlock
        let headerBytes = typeSize - quantBytes  // 2 (d) or 4 (d, m)
        matrix.fill { storage in
            Parallel.forEachChunk(rows, costPerItem: columns) { range in
                for row in range {
                    let storedRow = rowOrder?[row] ?? row
                    for b in 0..<perRow {
                        let block = source + (storedRow * perRow + b) * typeSize
                        let index = row * perRow + b
                        storage.scales[index] = GGMLDequantizeKernel.half(block, 0)
                        storage.offsets?[index] = GGMLDequantizeKernel.half(block, 2)
                        (storage.quants + index * quantBytes).copyMemory(from: block + headerBytes, byteCount: quantBytes)
                    }
                }
            }
        }
        return QuantizedLinear(weight: matrix, bias: bias)
    }

    /// The row order that undoes llama.cpp's Q/K permutation (``GGUFFile/unpermuteLlamaQK(_:heads:)``):
    /// row `h·D + j·R + i` of the Hugging Face layout is stored row `h·D + 2i + j` (D = rows / H, R = D/2).
    /// - Precondition: rows is a multiple of 2·heads.
    public static func llamaQKRowOrder(rows: Int, heads: Int) -> [Int] {
        precondition(heads > 0 && rows % (2 * heads) == 0, "llamaQKRowOrder: \(rows) rows are not \(heads) heads of an even size")
        let headDimension = rows / heads, half = headDimension / 2
        return (0..<rows).map { row in
            let head = row / headDimension, within = row % headDimension
            return head * headDimension + 2 * (within % half) + within / half
        }
    }

    // MARK: LinearLayer

    public var inputSize: Int { weight.columns }
    public var outputSize: Int { weight.rows }

    /// `weight` (dequantised to a fresh (O, C) Float32 tensor on each access) and `bias`.
    public var namedParameters: [(name: String, tensor: Tensor)] {
        var list: [(name: String, tensor: Tensor)] = [("weight", weight.dequantized())]
        if let bias { list.append(("bias", bias)) }
        return list
    }

    /// Replaces the bias. The quantised weight cannot be replaced or trained.
    /// - Throws: ``ModelError`` `.invalidConfiguration` for `weight` (saying to load with
    ///   ``WeightPrecision/float32``), `.missingTensor` for another name or a bias the layer lacks,
    ///   `.wrongShape` for a bias of another shape.
    public func setParameter(_ name: String, to tensor: Tensor) throws {
        switch name {
        case "weight":
            throw ModelError(.invalidConfiguration, "weight is held as \(weight.format) blocks (WeightPrecision.quantized) and cannot be replaced or trained; load the model with WeightPrecision.float32 (silo generate: --weight-precision float32, the default) to change it")
        case "bias":
            guard let current = bias else { throw ModelError.missingTensor(name, expected: [outputSize]) }
            guard tensor.shape == current.shape else {
                throw ModelError.wrongShape(name, expected: current.shape, actual: tensor.shape)
            }
            bias = tensor.contiguous()
        default:
            throw ModelError(.missingTensor, "QuantizedLinear has no parameter '\(name)' (it has weight\(bias == nil ? "" : " and bias"))")
        }
    }

    /// y (…, O) = x (…, C) · Wᵀ + b (``Tensor/quantizedLinear(weight:bias:)``).
    /// - Throws: ``TensorError`` if the last axis of `x` is not C.
    public func callAsFunction(_ x: Tensor) throws -> Tensor {
        try x.quantizedLinear(weight: weight, bias: bias)
    }
}

/// A weight source that can hand out projections in their stored quantised blocks.
public protocol QuantizedWeightSource: WeightSource {
    /// Whether ``quantizedLinear(_:shape:bias:)`` returns layers (``WeightPrecision/quantized``).
    var weightPrecision: WeightPrecision { get }
    /// Projection `name` (a Hugging Face weight name, `….q_proj.weight`) as a ``QuantizedLinear`` of
    /// `shape` (O, C), or nil when its stored type has no fused kernel (the caller reads Float32).
    /// - Throws: ``ModelError`` `.missingTensor` / `.wrongShape` naming the key and both shapes.
    func quantizedLinear(_ name: String, shape: [Int], bias: Tensor?) throws -> QuantizedLinear?
}

extension GGUFLlamaWeights: QuantizedWeightSource {
    public func quantizedLinear(_ name: String, shape expected: [Int], bias: Tensor?) throws -> QuantizedLinear? {
        guard weightPrecision == .quantized, expected.count == 2 else { return nil }
        let stored = storedName(of: name)
        let key = stored == name ? name : "\(stored)' (Hugging Face '\(name))"
        guard let info = file.tensorInfo(stored) else {
            throw ModelError.missingTensor(key, expected: expected, file: location)
        }
        guard info.shape == expected else {
            throw ModelError.wrongShape(key, expected: expected, actual: info.shape, file: location)
        }
        guard QuantizedLinear.supportedTypes.contains(info.type) else { return nil }
        var order: [Int]? = nil
        if stored.hasSuffix(".attn_q.weight") { order = QuantizedLinear.llamaQKRowOrder(rows: expected[0], heads: heads) }
        if stored.hasSuffix(".attn_k.weight") { order = QuantizedLinear.llamaQKRowOrder(rows: expected[0], heads: keyValueHeads) }
        return try file.withUnsafeRawBytes(of: stored) { bytes in
            QuantizedLinear.ggmlBlocks(bytes, type: info.type, rows: expected[0], columns: expected[1],
                                       rowOrder: order, bias: bias)
        }
    }
}
