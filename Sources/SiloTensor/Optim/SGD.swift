// Legend: N elements of one parameter; p parameter, g gradient, b momentum buffer, μ momentum,
// τ dampening, λ weight decay.

/// The SGD update as one fused pass over a parameter (PyTorch's torch.optim.SGD).
public enum SGDKernel {
    /// One step over N elements in place:
    ///
    ///     d ← g + λ·p
    ///     b ← d                       on the first step with momentum (`momentumBuffer` is overwritten)
    ///     b ← μ·b + (1 − τ)·d         on later steps
    ///     d ← d + μ·b  (Nesterov)  or  d ← b
    ///     p ← p − lr·d
    ///
    /// - Parameters: param (N) is updated; grad (N) is read; momentumBuffer (N) is updated when
    ///   `momentum != 0` and ignored (may be `nil`) otherwise.
    public static func step(param: UnsafeMutablePointer<Float>, grad: UnsafePointer<Float>,
                            momentumBuffer: UnsafeMutablePointer<Float>?, count: Int,
                            learningRate: Float, momentum: Float, dampening: Float, weightDecay: Float,
                            nesterov: Bool, firstStep: Bool) {
        let keep = Float(1 - Double(dampening))
        Parallel.forEachChunk(count, costPerItem: 8) { range in
            let rate8 = SIMD8<Float>(repeating: learningRate)
            let decay8 = SIMD8<Float>(repeating: weightDecay)
            let momentum8 = SIMD8<Float>(repeating: momentum)
            let keep8 = SIMD8<Float>(repeating: keep)
            var i = range.lowerBound
            while i + 8 <= range.upperBound {
                let p = UnsafeRawPointer(param + i).loadUnaligned(as: SIMD8<Float>.self)
                var d = UnsafeRawPointer(grad + i).loadUnaligned(as: SIMD8<Float>.self)
                if weightDecay != 0 { d = d + decay8 * p }
                if let momentumBuffer {
                    var b = d
                    if !firstStep {
                        b = UnsafeRawPointer(momentumBuffer + i).loadUnaligned(as: SIMD8<Float>.self) * momentum8 + keep8 * d
                    }
                    UnsafeMutableRawPointer(momentumBuffer + i).storeBytes(of: b, as: SIMD8<Float>.self)
                    d = nesterov ? d + momentum8 * b : b
                }
                UnsafeMutableRawPointer(param + i).storeBytes(of: p - rate8 * d, as: SIMD8<Float>.self)
                i += 8
            }
            while i < range.upperBound {
                let p = param[i]
                var d = grad[i]
                if weightDecay != 0 { d = d + weightDecay * p }
                if let momentumBuffer {
                    let b = firstStep ? d : momentumBuffer[i] * momentum + keep * d
                    momentumBuffer[i] = b
                    d = nesterov ? d + momentum * b : b
                }
                param[i] = p - learningRate * d
                i += 1
            }
        }
    }
}

/// Stochastic gradient descent with momentum, dampening, weight decay (L2, through the gradient) and
/// Nesterov momentum, exactly as PyTorch's `torch.optim.SGD`: the momentum buffer starts as the first
/// (decayed) gradient, dampening applies from the second step on.
///
/// State keys (``state()``): `"<name>.momentum_buffer"` (the parameter's shape) for every parameter
/// that has a buffer (momentum ≠ 0 and at least one step taken).
public final class SGD: Optimizer {
    public var learningRate: Float
    /// Momentum factor μ (0: plain SGD, no state).
    public let momentum: Float
    /// Dampening τ of the momentum: b ← μ·b + (1 − τ)·d.
    public let dampening: Float
    /// The default weight decay (a ``ParameterGroup`` may override it).
    public let weightDecay: Float
    /// Whether to use Nesterov momentum.
    public let nesterov: Bool

    let table: ParameterTable
    private var buffers: [Tensor?]

    public var parameters: [Tensor] { table.tensors }
    public var parameterNames: [String] { table.names }
    /// The weight decay applied to each parameter, in optimizer order.
    public var parameterWeightDecays: [Float] { table.weightDecays }

    /// SGD over `parameters`, all with the same weight decay.
    /// - Throws: ``TensorError`` (`.invalidArgument`) for a negative rate, momentum or weight decay, or
    ///   Nesterov without momentum or with dampening (as PyTorch).
    public convenience init(parameters: [Tensor], learningRate: Float, momentum: Float = 0, dampening: Float = 0,
                            weightDecay: Float = 0, nesterov: Bool = false) throws {
        try self.init(groups: [ParameterGroup(parameters: parameters)], learningRate: learningRate,
                      momentum: momentum, dampening: dampening, weightDecay: weightDecay, nesterov: nesterov)
    }

    /// SGD over parameter groups; a group's `weightDecay` overrides `weightDecay`.
    /// - Throws: ``TensorError`` (`.invalidArgument`) for a negative rate, momentum or weight decay, or
    ///   Nesterov without momentum or with dampening (as PyTorch).
    public init(groups: [ParameterGroup], learningRate: Float, momentum: Float = 0, dampening: Float = 0,
                weightDecay: Float = 0, nesterov: Bool = false) throws {
        try checkHyperparameter("SGD", "learningRate", learningRate, valid: learningRate >= 0)
        try checkHyperparameter("SGD", "momentum", momentum, valid: momentum >= 0)
        try checkHyperparameter("SGD", "dampening", dampening, valid: true, range: "a number")
        for decay in [weightDecay] + groups.compactMap(\.weightDecay) {
            try checkHyperparameter("SGD", "weightDecay", decay, valid: decay >= 0)
        }
        if nesterov && (momentum <= 0 || dampening != 0) {
            throw TensorError(.invalidArgument,
                              "SGD: Nesterov momentum needs momentum > 0 and dampening 0, got momentum \(momentum) and dampening \(dampening)")
        }
        self.learningRate = learningRate
        self.momentum = momentum
        self.dampening = dampening
        self.weightDecay = weightDecay
        self.nesterov = nesterov
        self.table = ParameterTable(groups: groups, defaultWeightDecay: weightDecay, optimizer: "SGD")
        self.buffers = Array(repeating: nil, count: table.count)
    }

    public func step() throws {
        try checkHyperparameter("SGD", "learningRate", learningRate, valid: learningRate >= 0)
        let gradients = try table.finiteGradients(optimizer: "SGD")
        for (index, gradient) in gradients.enumerated() {
            guard let gradient else { continue }
            let parameter = table.tensors[index]
            var buffer: Tensor? = nil
            var firstStep = false
            if momentum != 0 {
                firstStep = buffers[index] == nil
                buffer = buffers[index] ?? Tensor.empty(parameter.shape)
                buffers[index] = buffer
            }
            SGDKernel.step(param: parameter.pointer, grad: gradient.pointer, momentumBuffer: buffer?.pointer,
                           count: parameter.count, learningRate: learningRate, momentum: momentum,
                           dampening: dampening, weightDecay: table.weightDecays[index], nesterov: nesterov,
                           firstStep: firstStep)
        }
    }

    public func zeroGrad() { table.zeroGrad() }

    public func state() -> [String: Tensor] {
        var result: [String: Tensor] = [:]
        for (index, name) in table.names.enumerated() {
            guard let buffer = buffers[index] else { continue }
            result["\(name).momentum_buffer"] = denseState(buffer)
        }
        return result
    }

    public func load(state: [String: Tensor]) throws {
        let entries = try table.validate(state: state, fields: ["momentum_buffer"], optimizer: "SGD") {
            _, parameter in parameter.shape
        }
        buffers = entries.map { $0?["momentum_buffer"].map(denseState) }
    }
}
