// Legend: N elements of one parameter (its gradient and optimizer state share its dense layout).

/// An optimizer: updates a fixed list of parameters in place from their accumulated gradients.
///
/// Parameters are leaf tensors (``Tensor/requiringGrad()``) whose storage the model owns. An optimizer
/// keeps copies of those `Tensor` values — which share the storage and the gradient node — and writes
/// the new values through ``Tensor/pointer``, so the model sees every update without re-binding.
/// The model must therefore never replace a parameter's storage behind the optimizer's back (for
/// example with `withUnsafeMutableBufferPointer`, which copies storage that is shared); write
/// parameters through `pointer` instead.
///
/// Optimizers are classes (reference semantics): their state (step counts, moments, momentum buffers)
/// is large, updated in place every step, and belongs with the parameters it describes. They are not
/// `Sendable`; keep one optimizer on one task.
public protocol Optimizer: AnyObject {
    /// The learning rate of the next ``step()`` (set it from a ``LearningRateSchedule`` each step).
    var learningRate: Float { get set }
    /// The parameters in optimizer order (state keys use ``parameterNames`` in the same order).
    var parameters: [Tensor] { get }
    /// One name per parameter: given in the ``ParameterGroup``s, else the parameter's global index.
    var parameterNames: [String] { get }
    /// Applies one update to every parameter that has a gradient (parameters whose ``Tensor/grad`` is
    /// `nil` are skipped, as in PyTorch).
    /// - Throws: ``TensorError`` (`.nonFinite`) naming the parameter if any gradient holds NaN or an
    ///   infinity; then no parameter and no state has been changed.
    func step() throws
    /// Drops the gradients of all parameters (PyTorch's `zero_grad(set_to_none=True)`).
    func zeroGrad()
    /// A snapshot of the optimizer state as named tensors (copies; later steps do not change them).
    /// Keys are `"<parameter name>.<field>"` with PyTorch's field names (`step`, `exp_avg`, …).
    func state() -> [String: Tensor]
    /// Replaces the optimizer state with one exported by ``state()``.
    /// - Throws: ``TensorError`` naming the key if a key is unknown, a field is missing, or a shape
    ///   differs; then the current state is unchanged.
    func load(state: [String: Tensor]) throws
}

/// Parameters that share hyperparameters (PyTorch's parameter groups), e.g. no weight decay on norms
/// and biases.
public struct ParameterGroup: Sendable {
    /// Leaf tensors to optimize.
    public var parameters: [Tensor]
    /// Names for error messages and state keys, one per parameter; `nil` uses the global index.
    public var names: [String]?
    /// Weight decay of this group; `nil` uses the optimizer's.
    public var weightDecay: Float?

    /// A group of `parameters`, optionally named, optionally with its own weight decay.
    public init(parameters: [Tensor], names: [String]? = nil, weightDecay: Float? = nil) {
        precondition(names == nil || names?.count == parameters.count,
                     "ParameterGroup: \(names?.count ?? 0) names for \(parameters.count) parameters")
        self.parameters = parameters
        self.names = names
        self.weightDecay = weightDecay
    }

    /// The usual GPT split: matrices (rank ≥ 2: linear and embedding weights) take the optimizer's
    /// weight decay; vectors (biases, norm weights) take none.
    /// - Returns: `[decayed, notDecayed]` (either may be empty).
    public static func splittingWeightDecay(parameters: [Tensor], names: [String]) -> [ParameterGroup] {
        precondition(names.count == parameters.count,
                     "ParameterGroup.splittingWeightDecay: \(names.count) names for \(parameters.count) parameters")
        var decayed = ParameterGroup(parameters: [], names: [])
        var plain = ParameterGroup(parameters: [], names: [], weightDecay: 0)
        for (parameter, name) in zip(parameters, names) {
            if parameter.rank >= 2 {
                decayed.parameters.append(parameter)
                decayed.names?.append(name)
            } else {
                plain.parameters.append(parameter)
                plain.names?.append(name)
            }
        }
        return [decayed, plain]
    }
}

/// The flattened parameter list of an optimizer: tensors, names and per-parameter weight decay.
struct ParameterTable {
    let tensors: [Tensor]
    let names: [String]
    let weightDecays: [Float]

    /// Flattens `groups`, checking that every parameter is a dense leaf, that names are unique and
    /// that no two parameters share memory (a tied weight must be listed once).
    init(groups: [ParameterGroup], defaultWeightDecay: Float, optimizer: String) {
        var tensors: [Tensor] = []
        var names: [String] = []
        var decays: [Float] = []
        for group in groups {
            for (position, parameter) in group.parameters.enumerated() {
                let index = tensors.count
                let name = group.names?[position] ?? "\(index)"
                precondition(parameter.node.map { $0.inputs.isEmpty && $0.rule == nil } ?? false,
                             "\(optimizer): parameter \(index) ('\(name)') is not a leaf created with requiringGrad()")
                precondition(parameter.isContiguous,
                             "\(optimizer): parameter \(index) ('\(name)', shape \(parameter.shape)) is not dense")
                tensors.append(parameter)
                names.append(name)
                decays.append(group.weightDecay ?? defaultWeightDecay)
            }
        }
        precondition(Set(names).count == names.count, "\(optimizer): parameter names are not unique: \(names)")
        // No two parameters may overlap in memory: each is written in place.
        let ranges = tensors.indices.filter { tensors[$0].count > 0 }.map { index in
            (start: UInt(bitPattern: tensors[index].pointer), end: UInt(bitPattern: tensors[index].pointer + tensors[index].count), index: index)
        }.sorted { $0.start < $1.start }
        for (previous, next) in zip(ranges, ranges.dropFirst()) {
            precondition(next.start >= previous.end,
                         "\(optimizer): parameters \(previous.index) ('\(names[previous.index])') and \(next.index) ('\(names[next.index])') share memory; list a tied weight once")
        }
        self.tensors = tensors
        self.names = names
        self.weightDecays = decays
    }

    var count: Int { tensors.count }

    /// The dense gradient of parameter `index`, or `nil` if none arrived.
    func gradient(_ index: Int) -> Tensor? {
        guard let gradient = tensors[index].grad else { return nil }
        precondition(gradient.shape == tensors[index].shape,
                     "optimizer: gradient shape \(gradient.shape) of parameter \(index) ('\(names[index])') differs from its shape \(tensors[index].shape)")
        return gradient.isContiguous ? gradient : gradient.contiguousCopy()
    }

    /// The gradients of all parameters, after checking that every one is finite.
    /// - Throws: ``TensorError`` (`.nonFinite`) naming the first parameter with a NaN or infinity.
    func finiteGradients(optimizer: String) throws -> [Tensor?] {
        let gradients = tensors.indices.map(gradient)
        for (index, gradient) in gradients.enumerated() {
            guard let gradient else { continue }
            if let position = OptimizerKernel.firstNonFinite(gradient.pointer, count: gradient.count) {
                throw TensorError(.nonFinite,
                                  "\(optimizer).step: the gradient of parameter \(index) ('\(names[index])', shape \(tensors[index].shape)) holds \(gradient.pointer[position]) at element \(position); no parameter was updated. Lower the learning rate, clip gradients or check the loss")
            }
        }
        return gradients
    }

    func zeroGrad() {
        for tensor in tensors { tensor.zeroGrad() }
    }

    /// Checks that `state` holds, per parameter, either all of `fields` or none of them, with the
    /// shapes `shapeOf(field, parameter)`, and no other key.
    /// - Returns: per parameter, the tensors of its fields (`nil` when the parameter has no state).
    func validate(state: [String: Tensor], fields: [String], optimizer: String,
                  shapeOf: (String, Tensor) -> [Int]) throws -> [[String: Tensor]?] {
        var used = 0
        var result: [[String: Tensor]?] = []
        for (index, name) in names.enumerated() {
            let present = fields.filter { state["\(name).\($0)"] != nil }
            if present.isEmpty { result.append(nil); continue }
            var entries: [String: Tensor] = [:]
            for field in fields {
                let key = "\(name).\(field)"
                guard let tensor = state[key] else {
                    throw TensorError(.notFound,
                                      "\(optimizer).load(state:): key '\(key)' is missing (the state has '\(name).\(present[0])')")
                }
                let expected = shapeOf(field, tensors[index])
                guard tensor.shape == expected || (expected.isEmpty && tensor.count == 1) else {
                    throw TensorError.shapeMismatch("\(optimizer).load(state:)", expected, tensor.shape,
                                                    detail: "key '\(key)': expected the first shape, found the second")
                }
                entries[field] = tensor
                used += 1
            }
            result.append(entries)
        }
        if used != state.count {
            let known = Set(names.flatMap { name in fields.map { "\(name).\($0)" } })
            let unknown = state.keys.filter { !known.contains($0) }.sorted()
            throw TensorError(.invalidArgument,
                              "\(optimizer).load(state:): unknown key '\(unknown.first ?? "?")'\(unknown.count > 1 ? " and \(unknown.count - 1) more" : ""); the state is from another model or optimizer")
        }
        return result
    }
}

/// Reads a step count stored as a one-element tensor.
func parseStepCount(_ tensor: Tensor, key: String, optimizer: String) throws -> Int {
    let value = tensor.toArray()[0]
    guard value.isFinite, value >= 0, value == value.rounded(), value < 16_777_216 else {
        throw TensorError(.invalidArgument, "\(optimizer).load(state:): key '\(key)' holds \(value), not a step count")
    }
    return Int(value)
}

/// A dense copy of `tensor` without gradient history (the state of a parameter uses its layout).
func denseState(_ tensor: Tensor) -> Tensor { tensor.contiguousCopy() }

/// Element-wise helpers shared by the optimizers and gradient clipping.
enum OptimizerKernel {
    /// Elements per block of the block-parallel loops: blocks are fixed by N alone, so reductions
    /// over blocks add up in the same order whatever the thread count.
    static let blockSize = 1 << 14

    /// Index of the first NaN or infinity among `count` elements, or `nil` if all are finite.
    static func firstNonFinite(_ values: UnsafePointer<Float>, count: Int) -> Int? {
        let blocks = (count + blockSize - 1) / blockSize
        let flags = UnsafeMutablePointer<Bool>.allocate(capacity: max(blocks, 1))
        defer { flags.deallocate() }
        Parallel.forEachChunk(blocks, costPerItem: blockSize) { range in
            for block in range {
                let start = block * blockSize
                let end = min(count, start + blockSize)
                // x · 0 is 0 for finite x and NaN for NaN and ±∞.
                var accumulator = SIMD8<Float>(repeating: 0)
                var index = start
                while index + 8 <= end {
                    accumulator += UnsafeRawPointer(values + index).loadUnaligned(as: SIMD8<Float>.self) * 0
                    index += 8
                }
                var tail: Float = 0
                while index < end { tail += values[index] * 0; index += 1 }
                flags[block] = accumulator.sum() + tail != 0  // NaN != 0 holds
            }
        }
        for block in 0..<blocks where flags[block] {
            let start = block * blockSize
            for index in start..<min(count, start + blockSize) where !values[index].isFinite { return index }
        }
        return nil
    }

    /// Σ x² over `count` elements, accumulated in Float64 (blocked, deterministic for any thread count).
    static func sumOfSquares(_ values: UnsafePointer<Float>, count: Int) -> Double {
        let blocks = (count + blockSize - 1) / blockSize
        let sums = UnsafeMutablePointer<Double>.allocate(capacity: max(blocks, 1))
        defer { sums.deallocate() }
        Parallel.forEachChunk(blocks, costPerItem: blockSize) { range in
            for block in range {
                let start = block * blockSize
                let end = min(count, start + blockSize)
                var accumulator = SIMD8<Double>(repeating: 0)
                var index = start
                while index + 8 <= end {
                    let x = SIMD8<Double>(UnsafeRawPointer(values + index).loadUnaligned(as: SIMD8<Float>.self))
                    accumulator += x * x
                    index += 8
                }
                var total = accumulator.sum()
                while index < end { total += Double(values[index]) * Double(values[index]); index += 1 }
                sums[block] = total
            }
        }
        var total = 0.0
        for block in 0..<blocks { total += sums[block] }
        return total
    }

    /// x (N) *= factor, in place.
    static func scale(_ values: UnsafeMutablePointer<Float>, count: Int, by factor: Float) {
        Parallel.forEachChunk(count, costPerItem: 2) { range in
            var index = range.lowerBound
            let splat = SIMD8<Float>(repeating: factor)
            while index + 8 <= range.upperBound {
                let raw = UnsafeMutableRawPointer(values + index)
                raw.storeBytes(of: raw.loadUnaligned(as: SIMD8<Float>.self) * splat, as: SIMD8<Float>.self)
                index += 8
            }
            while index < range.upperBound { values[index] *= factor; index += 1 }
        }
    }
}
