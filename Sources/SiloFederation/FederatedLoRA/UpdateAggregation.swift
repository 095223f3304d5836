import Foundation
import SiloPrivacy
import SiloTensor

// d: number of trainable values (the flattened adapters); m: clients whose update arrived this round.

/// One client's contribution to a federated round: Δ = its adapters after local training − the round's
/// global adapters (flattened), and the examples it trained on.
public struct AdapterUpdate: Sendable {
    public var clientID: String
    public var delta: [Float]
    public var examples: Int

    public init(clientID: String, delta: [Float], examples: Int) {
        self.clientID = clientID
        self.delta = delta
        self.examples = examples
    }
}

/// Client-level differential privacy of the aggregate (DP-FedAvg, McMahan et al. 2018): every update is
/// clipped to L2 norm C, the clipped updates are averaged with equal weights (a client's influence must be
/// bounded, so example counts cannot weight it), and N(0, (z·C/m)²) is added to the mean.
public struct ClientLevelDP: Sendable, Equatable {
    public enum Clipping: Sendable, Equatable {
        /// A fixed norm C.
        case fixed
        /// Adaptive clipping (Andrew et al. 2021): C tracks the `targetQuantile` of the update norms,
        /// C ← C·exp(−η·(b̃ − γ)) where b̃ = (#{‖Δ‖ ≤ C} + N(0, σ_b²)) / m is the noisy fraction of updates
        /// that were *not* clipped. The count's noise costs privacy too: the updates' noise multiplier
        /// becomes z_Δ = (z⁻² − (2σ_b)⁻²)^(−1/2) so that the pair is as private as z alone.
        case adaptive(targetQuantile: Double, learningRate: Double, countStandardDeviation: Double)
    }

    /// z: the total noise multiplier (0: clipping only, nothing private).
    public var noiseMultiplier: Double
    /// C, or the initial C of adaptive clipping.
    public var clip: Double
    public var clipping: Clipping

    public init(noiseMultiplier: Double, clip: Double, clipping: Clipping = .fixed) {
        self.noiseMultiplier = noiseMultiplier
        self.clip = clip
        self.clipping = clipping
    }

    /// z_Δ, the noise multiplier left for the updates (= z with fixed clipping).
    /// - Throws: ``PrivacyParameterError`` if the count's noise alone exceeds the budget of z.
    public func updateNoiseMultiplier() throws -> Double {
        guard case .adaptive(_, _, let sigmaB) = clipping, noiseMultiplier > 0 else { return noiseMultiplier }
        guard sigmaB > 0, noiseMultiplier < 2 * sigmaB else {
            throw PrivacyParameterError("adaptive clipping: noise multiplier \(noiseMultiplier) must be below 2 x the clipped count's standard deviation (\(sigmaB)); raise privacy.client_dp.clipped_count_stddev")
        }
        return 1 / (1 / (noiseMultiplier * noiseMultiplier) - 1 / (4 * sigmaB * sigmaB)).squareRoot()
    }
}

/// Local DP (as DP-LoRA): each client clips its own update to C and adds N(0, (z·C)²) before it leaves.
public struct LocalDP: Sendable, Equatable {
    public var noiseMultiplier: Double
    public var clip: Double

    public init(noiseMultiplier: Double, clip: Double) {
        self.noiseMultiplier = noiseMultiplier
        self.clip = clip
    }
}

/// What one aggregation did, for the round's record.
public struct AggregationRecord: Codable, Sendable, Equatable {
    /// C used this round (client-level DP), and the next round's C (adaptive clipping).
    public var clip: Double?
    public var nextClip: Double?
    /// Fraction of updates whose norm was above C (they were scaled down).
    public var clippedFraction: Double?
    /// Standard deviation of the noise added to each coordinate of the mean update.
    public var noiseStandardDeviation: Double?
    /// L2 norm of each client's update before clipping.
    public var updateNorms: [String: Double] = [:]
    /// Values that secure aggregation's fixed-point encoding had to clamp (should be 0).
    public var clampedValues: Int?

    enum CodingKeys: String, CodingKey {
        case clip, nextClip = "next_clip", clippedFraction = "clipped_fraction", noiseStandardDeviation = "noise_standard_deviation",
             updateNorms = "update_norms", clampedValues = "clamped_values"
    }
}

/// Combines the clients' updates into the round's mean update Δ̄, with client-level DP and secure
/// aggregation as optional layers. Every variant is a sum of per-client vectors followed by server-side
/// post-processing, so the same code runs with a plain sum or a secure one:
///
///     client i:  p_i = [w_i · clip_C(Δ_i), w_i, 1[‖Δ_i‖ ≤ C]]      (w_i = n_i / Σn, or 1 under DP)
///     server:    S = Σ_i p_i;  Δ̄ = S[0..<d] / (Σ w_i, or m under DP) + N(0, (z_Δ·C/m)²)
///
/// Under secure aggregation the server sees S only: clipping happens on the client (the server announces
/// C), example weights are normalised by the announced Σn of the round's clients, and the server adds the
/// noise after unmasking (central DP: the server is trusted to add noise, not to see updates).
public final class UpdateAggregator {
    public let clientDP: ClientLevelDP?
    public let secureAggregation: Bool
    /// The current C (adaptive clipping moves it between rounds).
    public private(set) var clip: Double?

    public init(clientDP: ClientLevelDP?, secureAggregation: Bool) {
        self.clientDP = clientDP
        self.secureAggregation = secureAggregation
        self.clip = clientDP?.clip
    }

    /// The vector client `update` uploads (plain or to be masked): see the type's description.
    /// - Parameter totalExamples: Σ n_i of the round's clients (announced by the server).
    public func payload(for update: AdapterUpdate, totalExamples: Int) -> [Float] {
        let norm = Self.norm(update.delta)
        var values = update.delta
        var weight = 1.0
        if let clip {
            if norm > clip { let factor = clip / norm; values = values.map { Float(Double($0) * factor) } }
        } else {
            weight = Double(update.examples) / Double(max(1, totalExamples))
            values = values.map { Float(Double($0) * weight) }
        }
        return values + [Float(weight), (clip.map { norm <= $0 } ?? true) ? 1 : 0]
    }

    /// Δ̄ from the sum of the round's payloads; updates C for adaptive clipping.
    /// - Parameters:
    ///   - sum: Σ of ``payload(for:totalExamples:)`` over the m clients (d + 2 values, in Double).
    ///   - norms: each update's norm (recorded when the server sees updates; empty under secure aggregation).
    ///   - key: the round's noise key.
    public func finish(sum: [Double], clients m: Int, norms: [String: Double], key: RandomKey) throws -> (delta: [Float], record: AggregationRecord) {
        let d = sum.count - 2
        guard d >= 0, m >= 1 else { throw AggregationError("aggregation: \(m) clients, sum of \(sum.count) values") }
        var record = AggregationRecord(updateNorms: norms)
        var mean: [Double]
        if let clientDP, let clip {
            mean = sum[0..<d].map { $0 / Double(m) }
            let unclipped = sum[d + 1]
            record.clip = clip
            record.clippedFraction = 1 - unclipped / Double(m)
            let z = try clientDP.updateNoiseMultiplier()
            if z > 0 {
                let deviation = z * clip / Double(m)
                let noise = Tensor.randomNormal([d], standardDeviation: Float(deviation), key: key.split("update")).toArray()
                for index in 0..<d { mean[index] += Double(noise[index]) }
                record.noiseStandardDeviation = deviation
            }
            if case .adaptive(let target, let rate, let sigmaB) = clientDP.clipping {
                let countNoise = clientDP.noiseMultiplier > 0 && sigmaB > 0
                    ? Double(Tensor.randomNormal([1], standardDeviation: Float(sigmaB), key: key.split("count")).toArray()[0]) : 0
                let fraction = (unclipped + countNoise) / Double(m)
                self.clip = clip * exp(-rate * (fraction - target))
                record.nextClip = self.clip
            }
        } else {
            let weights = sum[d]
            guard weights > 0 else { throw AggregationError("aggregation: the clients' weights sum to \(weights)") }
            mean = sum[0..<d].map { $0 / weights }
        }
        for (index, value) in mean.enumerated() where !value.isFinite {
            throw AggregationError("aggregation: the mean update is \(value) at index \(index)")
        }
        return (mean.map { Float($0) }, record)
    }

    /// Plain aggregation (the server sees every update): validates, sums in client-ID order, finishes.
    public func aggregate(_ updates: [AdapterUpdate], key: RandomKey) throws -> (delta: [Float], record: AggregationRecord) {
        guard let first = updates.first else { throw AggregationError("aggregation: no client update") }
        try Self.validate(updates, length: first.delta.count)
        let total = updates.reduce(0) { $0 + $1.examples }
        var sum = [Double](repeating: 0, count: first.delta.count + 2)
        var norms: [String: Double] = [:]
        for update in updates.sorted(by: { $0.clientID < $1.clientID }) {
            norms[update.clientID] = Self.norm(update.delta)
            for (index, value) in payload(for: update, totalExamples: total).enumerated() { sum[index] += Double(value) }
        }
        return try finish(sum: sum, clients: updates.count, norms: norms, key: key)
    }

    /// Every update has `length` finite values and a non-negative example count.
    public static func validate(_ updates: [AdapterUpdate], length: Int) throws {
        for update in updates {
            guard update.delta.count == length else {
                throw AggregationError("aggregation: client \(update.clientID) sent \(update.delta.count) values, expected \(length)")
            }
            guard update.examples >= 0 else { throw AggregationError("aggregation: client \(update.clientID) reports \(update.examples) examples") }
            if let index = update.delta.firstIndex(where: { !$0.isFinite }) {
                throw AggregationError("aggregation: client \(update.clientID) sent \(update.delta[index]) at index \(index)")
            }
        }
    }

    static func norm(_ values: [Float]) -> Double {
        values.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
    }
}

/// The server's step on the mean update Δ̄ (Reddi et al. 2021, "Adaptive Federated Optimization"):
/// FedAvg adds η·Δ̄ (η = 1: the plain average); FedAdagrad, FedAdam and FedYogi keep a momentum
/// m ← β₁m + (1−β₁)Δ̄ and a second moment v (Adagrad v ← v + Δ̄², Adam v ← β₂v + (1−β₂)Δ̄²,
/// Yogi v ← v − (1−β₂)Δ̄²·sign(v − Δ̄²)) and add η·m / (√v + τ). FedAdam also corrects both moments'
/// bias at round t (η·√(1−β₂ᵗ)/(1−β₁ᵗ)), as Flower does.
public final class ServerOptimizer {
    public enum Kind: String, Codable, Sendable, CaseIterable {
        case fedavg, fedadagrad, fedadam, fedyogi
    }

    public let kind: Kind
    public let learningRate: Double
    public let beta1: Double
    public let beta2: Double
    public let tau: Double
    private var momentum: [Double] = []
    private var secondMoment: [Double] = []
    public private(set) var round = 0

    public init(kind: Kind, learningRate: Double, beta1: Double = 0.9, beta2: Double = 0.99, tau: Double = 1e-9) {
        self.kind = kind
        self.learningRate = learningRate
        self.beta1 = beta1
        self.beta2 = beta2
        self.tau = tau
    }

    /// Flower's defaults: η = 1 for FedAvg (the plain mean), 0.1 for FedAdagrad/FedAdam, 0.01 for FedYogi;
    /// τ = 1e-9 (1e-3 for FedYogi).
    public static func defaults(_ kind: Kind) -> (learningRate: Double, tau: Double) {
        switch kind {
        case .fedavg: return (1, 0)
        case .fedadagrad, .fedadam: return (0.1, 1e-9)
        case .fedyogi: return (0.01, 1e-3)
        }
    }

    /// Applies Δ̄ to `global` in place.
    public func apply(_ delta: [Float], to global: inout [Float]) throws {
        guard delta.count == global.count else {
            throw AggregationError("server optimizer: update of \(delta.count) values for \(global.count) parameters")
        }
        round += 1
        if kind == .fedavg {
            for index in global.indices { global[index] = Float(Double(global[index]) + learningRate * Double(delta[index])) }
            return
        }
        if momentum.isEmpty {
            momentum = [Double](repeating: 0, count: delta.count)
            secondMoment = [Double](repeating: 0, count: delta.count)
        }
        var rate = learningRate
        if kind == .fedadam {
            rate *= (1 - pow(beta2, Double(round))).squareRoot() / (1 - pow(beta1, Double(round)))
        }
        for index in global.indices {
            let g = Double(delta[index])
            momentum[index] = beta1 * momentum[index] + (1 - beta1) * g
            let v = secondMoment[index]
            switch kind {
            case .fedadagrad: secondMoment[index] = v + g * g
            case .fedadam: secondMoment[index] = beta2 * v + (1 - beta2) * g * g
            case .fedyogi:
                let difference = v - g * g
                secondMoment[index] = v - (1 - beta2) * g * g * (difference > 0 ? 1 : difference < 0 ? -1 : 0)
            case .fedavg: break
            }
            global[index] = Float(Double(global[index]) + rate * momentum[index] / (secondMoment[index].squareRoot() + tau))
        }
    }
}
