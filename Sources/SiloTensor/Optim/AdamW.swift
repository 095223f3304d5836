#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// Legend: N elements of one parameter; p parameter, g gradient, m first moment (exp_avg),
// v second moment (exp_avg_sq), t the parameter's step count (from 1).

/// The AdamW update as one fused pass over a parameter (PyTorch's torch.optim.AdamW).
public enum AdamWKernel {
    /// One step over N elements in place, reading p, g, m, v once:
    ///
    ///     p ← p · decayFactor                      decayFactor = 1 − lr·weightDecay (decoupled)
    ///     m ← m + (1 − β1)·(g − m)                 (torch's lerp)
    ///     v ← β2·v + (1 − β2)·g²
    ///     p ← p − stepSize · m / (√v / biasCorrection2Root + ε)
    ///
    /// with stepSize = lr / (1 − β1ᵗ) and biasCorrection2Root = √(1 − β2ᵗ).
    /// - Parameters: param, expAvg, expAvgSq (N) are updated; grad (N) is read.
    public static func step(param: UnsafeMutablePointer<Float>, grad: UnsafePointer<Float>,
                            expAvg: UnsafeMutablePointer<Float>, expAvgSq: UnsafeMutablePointer<Float>,
                            count: Int, decayFactor: Float, beta1: Float, beta2: Float,
                            stepSize: Float, biasCorrection2Root: Float, epsilon: Float) {
        let lerpWeight = Float(1 - Double(beta1))
        let squareWeight = Float(1 - Double(beta2))
        Parallel.forEachChunk(count, costPerItem: 16) { range in
            let decay8 = SIMD8<Float>(repeating: decayFactor)
            let weight8 = SIMD8<Float>(repeating: lerpWeight)
            let beta2_8 = SIMD8<Float>(repeating: beta2)
            let square8 = SIMD8<Float>(repeating: squareWeight)
            let stepSize8 = SIMD8<Float>(repeating: stepSize)
            let root8 = SIMD8<Float>(repeating: biasCorrection2Root)
            let epsilon8 = SIMD8<Float>(repeating: epsilon)
            var i = range.lowerBound
            while i + 8 <= range.upperBound {
                let g = UnsafeRawPointer(grad + i).loadUnaligned(as: SIMD8<Float>.self)
                var p = UnsafeRawPointer(param + i).loadUnaligned(as: SIMD8<Float>.self)
                var m = UnsafeRawPointer(expAvg + i).loadUnaligned(as: SIMD8<Float>.self)
                var v = UnsafeRawPointer(expAvgSq + i).loadUnaligned(as: SIMD8<Float>.self)
                p = p * decay8
                m = m + weight8 * (g - m)
                v = v * beta2_8 + square8 * g * g
                p = p - stepSize8 * (m / (v.squareRoot() / root8 + epsilon8))
                UnsafeMutableRawPointer(param + i).storeBytes(of: p, as: SIMD8<Float>.self)
                UnsafeMutableRawPointer(expAvg + i).storeBytes(of: m, as: SIMD8<Float>.self)
                UnsafeMutableRawPointer(expAvgSq + i).storeBytes(of: v, as: SIMD8<Float>.self)
                i += 8
            }
            while i < range.upperBound {
                let g = grad[i]
                var p = param[i] * decayFactor
                let m = expAvg[i] + lerpWeight * (g - expAvg[i])
                let v = expAvgSq[i] * beta2 + squareWeight * g * g
                p = p - stepSize * (m / (v.squareRoot() / biasCorrection2Root + epsilon))
                param[i] = p
                expAvg[i] = m
                expAvgSq[i] = v
                i += 1
            }
        }
    }
}

/// Adam with decoupled weight decay, exactly as PyTorch's `torch.optim.AdamW` (Loshchilov & Hutter,
/// "Decoupled Weight Decay Regularization", 2019): bias-corrected moments, ε added outside the square
/// root of v̂, weight decay p ← p − lr·λ·p applied before the Adam update and not through the
/// gradient. Each parameter keeps its own step count, so a parameter that missed a step (no gradient)
/// is bias-corrected like PyTorch does.
///
/// State keys (``state()``): `"<name>.step"` (rank 0), `"<name>.exp_avg"`, `"<name>.exp_avg_sq"`
/// (the parameter's shape), for every parameter that has taken at least one step.
public final class AdamW: Optimizer {
    public var learningRate: Float
    /// Decay rates of the first and second moment estimates.
    public let beta1: Float, beta2: Float
    /// Added to √v̂ in the denominator.
    public let epsilon: Float
    /// The default weight decay (a ``ParameterGroup`` may override it).
    public let weightDecay: Float

    let table: ParameterTable
    private var steps: [Int]
    private var firstMoments: [Tensor?]
    private var secondMoments: [Tensor?]

    public var parameters: [Tensor] { table.tensors }
    public var parameterNames: [String] { table.names }
    /// The weight decay applied to each parameter, in optimizer order.
    public var parameterWeightDecays: [Float] { table.weightDecays }

    /// AdamW over `parameters`, all with the same weight decay (PyTorch's defaults).
    /// - Throws: ``TensorError`` (`.invalidArgument`) for a negative rate, ε or weight decay, or a β
    ///   outside [0, 1).
    public convenience init(parameters: [Tensor], learningRate: Float = 1e-3, betas: (Float, Float) = (0.9, 0.999),
                            epsilon: Float = 1e-8, weightDecay: Float = 1e-2) throws {
        try self.init(groups: [ParameterGroup(parameters: parameters)], learningRate: learningRate, betas: betas,
                      epsilon: epsilon, weightDecay: weightDecay)
    }

    /// AdamW over parameter groups; a group's `weightDecay` overrides `weightDecay`.
    /// - Throws: ``TensorError`` (`.invalidArgument`) for a negative rate, ε or weight decay, or a β
    ///   outside [0, 1).
    public init(groups: [ParameterGroup], learningRate: Float = 1e-3, betas: (Float, Float) = (0.9, 0.999),
                epsilon: Float = 1e-8, weightDecay: Float = 1e-2) throws {
        try checkHyperparameter("AdamW", "learningRate", learningRate, valid: learningRate >= 0)
        try checkHyperparameter("AdamW", "epsilon", epsilon, valid: epsilon >= 0)
        try checkHyperparameter("AdamW", "beta1", betas.0, valid: betas.0 >= 0 && betas.0 < 1, range: "in [0, 1)")
        try checkHyperparameter("AdamW", "beta2", betas.1, valid: betas.1 >= 0 && betas.1 < 1, range: "in [0, 1)")
        for decay in [weightDecay] + groups.compactMap(\.weightDecay) {
            try checkHyperparameter("AdamW", "weightDecay", decay, valid: decay >= 0)
        }
        self.learningRate = learningRate
        self.beta1 = betas.0
        self.beta2 = betas.1
        self.epsilon = epsilon
        self.weightDecay = weightDecay
        self.table = ParameterTable(groups: groups, defaultWeightDecay: weightDecay, optimizer: "AdamW")
        self.steps = Array(repeating: 0, count: table.count)
        self.firstMoments = Array(repeating: nil, count: table.count)
        self.secondMoments = Array(repeating: nil, count: table.count)
    }

    /// The number of updates parameter `index` has taken.
    public func stepCount(ofParameter index: Int) -> Int { steps[index] }

    public func step() throws {
        try checkHyperparameter("AdamW", "learningRate", learningRate, valid: learningRate >= 0)
        let gradients = try table.finiteGradients(optimizer: "AdamW")
        let rate = Double(learningRate)
        for (index, gradient) in gradients.enumerated() {
            guard let gradient else { continue }
            let parameter = table.tensors[index]
            let count = parameter.count
            let m = firstMoments[index] ?? Tensor.zeros(parameter.shape)
            let v = secondMoments[index] ?? Tensor.zeros(parameter.shape)
            firstMoments[index] = m
            secondMoments[index] = v
            steps[index] += 1
            let t = Double(steps[index])
            let biasCorrection1 = 1 - pow(Double(beta1), t)
            let biasCorrection2 = 1 - pow(Double(beta2), t)
            AdamWKernel.step(param: parameter.pointer, grad: gradient.pointer, expAvg: m.pointer, expAvgSq: v.pointer,
                             count: count, decayFactor: Float(1 - rate * Double(table.weightDecays[index])),
                             beta1: beta1, beta2: beta2, stepSize: Float(rate / biasCorrection1),
                             biasCorrection2Root: Float(biasCorrection2.squareRoot()), epsilon: epsilon)
        }
    }

    public func zeroGrad() { table.zeroGrad() }

    public func state() -> [String: Tensor] {
        var result: [String: Tensor] = [:]
        for (index, name) in table.names.enumerated() {
            guard steps[index] > 0, let m = firstMoments[index], let v = secondMoments[index] else { continue }
            result["\(name).step"] = Tensor(scalar: Float(steps[index]))
            result["\(name).exp_avg"] = denseState(m)
            result["\(name).exp_avg_sq"] = denseState(v)
        }
        return result
    }

    public func load(state: [String: Tensor]) throws {
        let entries = try table.validate(state: state, fields: ["step", "exp_avg", "exp_avg_sq"], optimizer: "AdamW") {
            field, parameter in field == "step" ? [] : parameter.shape
        }
        var newSteps = Array(repeating: 0, count: table.count)
        for (index, entry) in entries.enumerated() {
            guard let step = entry?["step"] else { continue }
            newSteps[index] = try parseStepCount(step, key: "\(table.names[index]).step", optimizer: "AdamW")
        }
        steps = newSteps
        firstMoments = entries.map { $0?["exp_avg"].map(denseState) }
        secondMoments = entries.map { $0?["exp_avg_sq"].map(denseState) }
    }
}

/// Throws an `.invalidArgument` error naming the optimizer and hyperparameter unless `valid`.
func checkHyperparameter(_ optimizer: String, _ name: String, _ value: Float, valid: Bool,
                         range: String = "≥ 0") throws {
    guard valid && value.isFinite else {
        throw TensorError(.invalidArgument, "\(optimizer): \(name) must be finite and \(range), got \(value)")
    }
}
