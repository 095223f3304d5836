import Foundation
import SiloTensor

// B batch, T time, C input features (in), O output features (out), R rank. LoRA (Hu et al., "LoRA:
// Low-Rank Adaptation of Large Language Models", 2021) as Hugging Face PEFT implements it:
// y = x·Wᵀ + b + (α/R) · dropout(x)·Aᵀ·Bᵀ, A (R, C) kaiming-uniform, B (O, R) zeros.

/// Which projections of a model get LoRA adapters, and their hyperparameters (PEFT's `LoraConfig`;
/// the `CodingKeys` are PEFT's `adapter_config.json` names).
public struct LoRAConfiguration: Codable, Sendable, Equatable {
    /// R: the rank of the update B·A.
    public var rank: Int
    /// α: the update is scaled by α / R.
    public var alpha: Float
    /// Probability of dropping an element of the adapter's input (not the base layer's) while training.
    public var dropout: Float
    /// Hugging Face module names or suffixes: a projection matches when its Hugging Face path equals a
    /// target or ends with `.` + target (PEFT's rule): `q_proj`, `self_attn.v_proj`, GPT-2's `c_attn`.
    public var targetModules: [String]
    /// Block indices to adapt (PEFT's `layers_to_transform`); nil adapts every block.
    public var layers: [Int]?

    enum CodingKeys: String, CodingKey {
        case rank = "r"
        case alpha = "lora_alpha"
        case dropout = "lora_dropout"
        case targetModules = "target_modules"
        case layers = "layers_to_transform"
    }

    public init(rank: Int = 8, alpha: Float = 16, dropout: Float = 0, targetModules: [String] = ["q_proj", "v_proj"],
                layers: [Int]? = nil) {
        self.rank = rank
        self.alpha = alpha
        self.dropout = dropout
        self.targetModules = targetModules
        self.layers = layers
    }

    /// α / R.
    public var scale: Float { alpha / Float(rank) }

    /// - Throws: ``ModelError`` `.invalidConfiguration` naming the field for a rank ≤ 0, a non-finite
    ///   α, a dropout outside [0, 1), no target module or a negative block index.
    public func validate() throws {
        try LoRAConfiguration.validate(rank: rank, alpha: alpha, dropout: dropout)
        guard !targetModules.isEmpty, !targetModules.contains(where: \.isEmpty) else {
            throw ModelError(.invalidConfiguration, "LoRA: target_modules \(targetModules) must name at least one module (e.g. [\"q_proj\", \"v_proj\"])")
        }
        if let negative = layers?.first(where: { $0 < 0 }) {
            throw ModelError(.invalidConfiguration, "LoRA: layers_to_transform holds a negative block index \(negative)")
        }
    }

    static func validate(rank: Int, alpha: Float, dropout: Float) throws {
        guard rank > 0 else { throw ModelError(.invalidConfiguration, "LoRA: rank r must be positive, got \(rank)") }
        guard alpha.isFinite else { throw ModelError(.invalidConfiguration, "LoRA: lora_alpha must be finite, got \(alpha)") }
        guard dropout >= 0, dropout < 1 else {
            throw ModelError(.invalidConfiguration, "LoRA: lora_dropout must be in [0, 1), got \(dropout)")
        }
    }

    /// Whether the projection with Hugging Face path `path` is a target (PEFT's suffix rule).
    public func targets(_ path: String) -> Bool {
        targetModules.contains { path == $0 || path.hasSuffix("." + $0) }
    }
}

/// A frozen ``Linear`` plus a trainable low-rank update: y = x·Wᵀ + b + (α/R) · dropout(x)·Aᵀ·Bᵀ.
///
/// A (R, C) starts kaiming-uniform with a = √5 as PEFT does (uniform in ±1/√C), B (O, R) at zero, so a
/// fresh adapter leaves the model's output unchanged. Only A and B are gradient leaves: the wrapped
/// weight and bias are detached, so backward computes no gradient for them and an optimizer given
/// ``trainableParameters`` keeps no state for them.
///
/// Dropout (on the adapter's input only, as PEFT) is active while ``isTraining``, gradients are being
/// recorded (so evaluation and generation under `Tensor.withoutGradients` never drop, even if the
/// caller forgot to switch training off) and the probability is positive. Its mask is deterministic: call n of the layer uses `dropoutKey.split(n)` (n =
/// ``dropoutCalls``, then incremented), so a rerun with the same key and the same sequence of calls
/// drops the same elements; set ``dropoutCalls`` to resume.
///
/// ``merge()`` folds the update into a copy of the weight (W + (α/R)·B·A) for inference at the cost of a
/// plain projection; ``unmerge()`` returns to the exact original weight (kept, not recomputed by
/// subtraction). ``fused()`` returns that merged projection as a plain ``Linear``.
public final class LoRALinear: LinearLayer {
    /// The wrapped projection, W (O, C) and b (O), frozen.
    public private(set) var base: Linear
    /// A (R, C), a gradient leaf.
    public private(set) var loraA: Tensor
    /// B (O, R), a gradient leaf.
    public private(set) var loraB: Tensor
    /// α.
    public let alpha: Float
    /// Probability of dropping an adapter input element while training.
    public let dropoutProbability: Float
    /// The key dropout masks are split from.
    public let dropoutKey: RandomKey
    /// Forward calls that drew a dropout mask so far (the next call uses `dropoutKey.split(dropoutCalls)`).
    public var dropoutCalls: UInt64 = 0
    /// Whether dropout is applied (PyTorch's `module.training`) when gradients are recorded; set false
    /// to evaluate with gradients (e.g. a validation loss).
    public var isTraining = true
    /// The merged projection while ``isMerged``.
    private var mergedLayer: Linear?

    /// Wraps `linear` with a rank-`rank` adapter: A kaiming-uniform from `key`, B zero.
    /// - Parameters:
    ///   - alpha: the update is scaled by alpha / rank.
    ///   - dropout: probability in [0, 1) of dropping an adapter input element while training.
    ///   - key: A's values (element i depends on the key and i) and, through `key.split("dropout")`, the
    ///     dropout masks.
    /// - Throws: ``ModelError`` `.invalidConfiguration` for a rank ≤ 0, a non-finite alpha or a dropout
    ///   outside [0, 1).
    public init(wrapping linear: Linear, rank: Int, alpha: Float, dropout: Float = 0, key: RandomKey) throws {
        try LoRAConfiguration.validate(rank: rank, alpha: alpha, dropout: dropout)
        base = Tensor.withoutGradients { Linear(weight: linear.weight.detached(), bias: linear.bias?.detached()) }
        let bound = 1 / Float(linear.inputSize).squareRoot()
        loraA = Tensor.randomUniform([rank, linear.inputSize], low: -bound, high: bound, key: key).requiringGrad()
        loraB = Tensor.zeros([linear.outputSize, rank]).requiringGrad()
        self.alpha = alpha
        dropoutProbability = dropout
        dropoutKey = key.split("dropout")
    }

    /// Wraps `linear` with α = `scale` · R (MLX's spelling: `LoRALinear.from(linear, rank:, scale:)`).
    /// - Throws: as ``init(wrapping:rank:alpha:dropout:key:)``.
    public static func from(_ linear: Linear, rank: Int, scale: Float, dropout: Float = 0,
                            key: RandomKey) throws -> LoRALinear {
        try LoRALinear(wrapping: linear, rank: rank, alpha: scale * Float(rank), dropout: dropout, key: key)
    }

    /// R.
    public var rank: Int { loraA.shape[0] }
    /// α / R.
    public var scale: Float { alpha / Float(rank) }
    /// Whether the update is folded into the weight (see ``merge()``).
    public var isMerged: Bool { mergedLayer != nil }
    /// A and B, named relative to the layer as PEFT does.
    public var trainableParameters: [(name: String, tensor: Tensor)] {
        [("lora_A.weight", loraA), ("lora_B.weight", loraB)]
    }

    // MARK: LinearLayer

    public var inputSize: Int { base.inputSize }
    public var outputSize: Int { base.outputSize }

    /// `weight` (the merged weight while merged), `bias`, `lora_A.weight`, `lora_B.weight`.
    public var namedParameters: [(name: String, tensor: Tensor)] {
        (mergedLayer ?? base).namedParameters + trainableParameters
    }

    /// Replaces `weight` or `bias` of the wrapped projection (detached; re-merged if merged), or A or B.
    /// A new A or B is used as given: pass a leaf (`requiringGrad()`) to keep training it.
    /// - Throws: ``ModelError`` `.missingTensor` for another name, `.wrongShape` naming both shapes.
    public func setParameter(_ name: String, to tensor: Tensor) throws {
        switch name {
        case "lora_A.weight":
            guard tensor.shape == loraA.shape else { throw ModelError.wrongShape(name, expected: loraA.shape, actual: tensor.shape) }
            loraA = tensor.contiguous()
        case "lora_B.weight":
            guard tensor.shape == loraB.shape else { throw ModelError.wrongShape(name, expected: loraB.shape, actual: tensor.shape) }
            loraB = tensor.contiguous()
        case "weight", "bias":
            try base.setParameter(name, to: tensor.detached())
            if isMerged { try merge(refreshing: true) }
        default:
            throw ModelError(.missingTensor, "LoRALinear has no parameter '\(name)' (it has weight\(base.bias == nil ? "" : ", bias"), lora_A.weight and lora_B.weight)")
        }
    }

    /// y (…, O) = x (…, C)·Wᵀ + b + (α/R) · (dropout(x)·Aᵀ)·Bᵀ: the base GEMM, then two thin GEMMs through
    /// R (the scale applied to the (…, R) intermediate, the cheapest place). While merged: one GEMM with
    /// the merged weight.
    /// - Throws: ``TensorError`` if the last axis of `x` is not C.
    public func callAsFunction(_ x: Tensor) throws -> Tensor {
        if let mergedLayer { return try mergedLayer(x) }
        guard x.rank >= 2 else { return try self(x.reshaped([1, x.count])).reshaped([outputSize]) }
        let y = try base(x)
        var input = x
        if isTraining && dropoutProbability > 0 && Tensor.isRecordingGradients {
            input = try x.dropout(probability: dropoutProbability, key: dropoutKey.split(dropoutCalls))
            dropoutCalls &+= 1
        }
        let low = try input.matmul(loraA, transposeB: true).scaled(by: scale)
        return try y + low.matmul(loraB, transposeB: true)
    }

    // MARK: Merging

    /// ΔW (O, C) = (α/R) · B·A, without gradient history.
    public func deltaWeight() throws -> Tensor {
        try Tensor.withoutGradients { try loraB.matmul(loraA).scaled(by: scale) }
    }

    /// The projection with the update folded in: a plain ``Linear`` with W + (α/R)·B·A and b (no
    /// gradient history), e.g. to export a merged checkpoint or to serve without adapters.
    /// - Throws: ``TensorError`` only on an internal shape error.
    public func fused() throws -> Linear {
        let weight = try Tensor.withoutGradients { try base.weight + deltaWeight() }
        return Linear(weight: weight, bias: base.bias)
    }

    /// Folds the update into the weight for inference (a no-op when already merged). The original weight
    /// is kept, so ``unmerge()`` is exact. While merged the forward pass does not depend on A and B:
    /// they receive no gradient; unmerge before training again.
    public func merge() throws {
        try merge(refreshing: false)
    }

    /// Merges, recomputing the merged weight when `refreshing` (after A, B or W changed in place).
    func merge(refreshing: Bool) throws {
        guard refreshing || mergedLayer == nil else { return }
        mergedLayer = try fused()
    }

    /// Returns to the unmerged forward pass (exactly the original weight).
    public func unmerge() {
        mergedLayer = nil
    }
}
