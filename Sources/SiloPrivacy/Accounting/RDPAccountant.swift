import Foundation

/// Invalid privacy parameters: the message names the parameter and says why.
public struct PrivacyParameterError: Error, CustomStringConvertible, Equatable, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Rényi differential privacy of the Poisson-subsampled Gaussian mechanism (Mironov, Talwar & Zhang
/// 2019), composed over steps, and its conversion to (ε, δ) with the improved bound of Balle et al. 2020
/// (Proposition 12; also Canonne, Kamath & Steinke 2020) — the method of Google's `dp_accounting`
/// `RdpAccountant`, written here from the papers and checked against it (`AccountantTests`).
public enum RDPAccountant {
    /// dp_accounting's default orders: 1.1 … 10.9 in steps of 0.1, 11 … 63, 128, 256, 512, 1024.
    public static let defaultOrders: [Double] = {
        let fine: [Double] = (1..<100).map { (step: Int) -> Double in 1 + Double(step) / 10 }
        let whole: [Double] = (11..<64).map { (order: Int) -> Double in Double(order) }
        let large: [Double] = [128, 256, 512, 1024]
        return fine + whole + large
    }()

    /// One kind of step: the sampled Gaussian mechanism with noise multiplier z (σ / sensitivity) and
    /// Poisson sampling rate q, repeated `steps` times.
    public struct Event: Codable, Sendable, Equatable {
        public var noiseMultiplier: Double
        public var sampleRate: Double
        public var steps: Int

        public init(noiseMultiplier: Double, sampleRate: Double, steps: Int) throws {
            try RDPAccountant.validate(noiseMultiplier: noiseMultiplier, sampleRate: sampleRate, steps: steps)
            self.noiseMultiplier = noiseMultiplier
            self.sampleRate = sampleRate
            self.steps = steps
        }

        enum CodingKeys: String, CodingKey { case noiseMultiplier = "noise_multiplier", sampleRate = "sample_rate", steps }
    }

    /// - Throws: ``PrivacyParameterError`` naming the parameter.
    public static func validate(noiseMultiplier: Double, sampleRate: Double, steps: Int) throws {
        guard noiseMultiplier.isFinite, noiseMultiplier > 0 else {
            throw PrivacyParameterError("noise multiplier \(noiseMultiplier) must be a finite number > 0: it is the noise's standard deviation over the clipping norm, and without noise nothing is private")
        }
        guard sampleRate.isFinite, sampleRate > 0, sampleRate <= 1 else {
            throw PrivacyParameterError("sample rate \(sampleRate) is outside (0, 1]: it is the probability that an example joins a batch")
        }
        guard steps >= 1 else { throw PrivacyParameterError("steps \(steps) must be at least 1") }
    }

    /// - Throws: ``PrivacyParameterError`` for δ outside (0, 1).
    public static func validate(delta: Double) throws {
        guard delta.isFinite, delta > 0, delta < 1 else {
            throw PrivacyParameterError("delta \(delta) is outside (0, 1): it is the probability that the ε guarantee fails, and should be well below 1 / (number of examples)")
        }
    }

    /// RDP ε(α) of one step of the sampled Gaussian mechanism at each order.
    public static func rdp(noiseMultiplier z: Double, sampleRate q: Double, orders: [Double] = defaultOrders) -> [Double] {
        orders.map { alpha in
            if q == 1 { return alpha / (2 * z * z) }
            return logA(q: q, sigma: z, alpha: alpha) / (alpha - 1)
        }
    }

    /// RDP of a composition of events (RDP adds up).
    public static func rdp(_ events: [Event], orders: [Double] = defaultOrders) -> [Double] {
        var total = [Double](repeating: 0, count: orders.count)
        for event in events {
            let one = rdp(noiseMultiplier: event.noiseMultiplier, sampleRate: event.sampleRate, orders: orders)
            for index in orders.indices { total[index] += Double(event.steps) * one[index] }
        }
        return total
    }

    /// The smallest ε over the orders for δ (improved conversion), and the order that gives it.
    public static func epsilon(rdp: [Double], orders: [Double] = defaultOrders, delta: Double) throws -> (epsilon: Double, order: Double) {
        try validate(delta: delta)
        precondition(rdp.count == orders.count, "epsilon: \(rdp.count) RDP values for \(orders.count) orders")
        var best = (epsilon: Double.infinity, order: orders.first ?? 0)
        for (alpha, r) in zip(orders, rdp) {
            let value: Double
            if r < 0 || delta * delta + expm1(-r) > 0 {
                value = 0
            } else if alpha > 1.01 {
                value = r + log1p(-1 / alpha) - log(delta * alpha) / (alpha - 1)
            } else {
                value = .infinity
            }
            if value < best.epsilon { best = (value, alpha) }
        }
        return (max(0, best.epsilon), best.order)
    }

    /// ε after `steps` steps of the Poisson-subsampled Gaussian mechanism.
    public static func epsilon(noiseMultiplier: Double, sampleRate: Double, steps: Int, delta: Double) throws -> (epsilon: Double, order: Double) {
        let event = try Event(noiseMultiplier: noiseMultiplier, sampleRate: sampleRate, steps: steps)
        return try epsilon(rdp: rdp([event]), delta: delta)
    }

    /// The smallest noise multiplier whose ε after `steps` steps is at most `epsilon` (bisection on
    /// the monotone ε(z), relative tolerance 1e-6 on z).
    /// - Throws: ``PrivacyParameterError`` for invalid parameters or a target no noise below 1e6 reaches.
    public static func noiseMultiplier(epsilon target: Double, sampleRate: Double, steps: Int, delta: Double) throws -> Double {
        guard target.isFinite, target > 0 else {
            throw PrivacyParameterError("epsilon \(target) must be a finite number > 0")
        }
        try validate(delta: delta)
        try validate(noiseMultiplier: 1, sampleRate: sampleRate, steps: steps)
        func eps(_ z: Double) throws -> Double { try epsilon(noiseMultiplier: z, sampleRate: sampleRate, steps: steps, delta: delta).epsilon }
        var high = 1.0
        while try eps(high) > target {
            high *= 2
            if high > 1e6 { throw PrivacyParameterError("epsilon \(target) is not reachable with noise multipliers up to 1e6 (sample rate \(sampleRate), \(steps) steps, delta \(delta))") }
        }
        var low = high / 2
        while low > 1e-6, try eps(low) <= target { high = low; low /= 2 }
        while (high - low) > 1e-6 * high {
            let middle = (low + high) / 2
            if try eps(middle) > target { low = middle } else { high = middle }
        }
        return high
    }

    // MARK: log A_α

    static func logAdd(_ x: Double, _ y: Double) -> Double {
        let (a, b) = (min(x, y), max(x, y))
        if a == -.infinity { return b }
        return log1p(exp(a - b)) + b
    }

    static func logComb(_ n: Double, _ k: Double) -> Double { lgamma(n + 1) - lgamma(k + 1) - lgamma(n - k + 1) }

    /// log erfc(x), accurate for large x (asymptotic series where erfc underflows).
    static func logErfc(_ x: Double) -> Double {
        if x < 5 { return log(erfc(x)) }
        let x2 = x * x
        return -log(Double.pi) / 2 - log(x) - x2 - 0.5 / x2 + 0.625 / (x2 * x2) - 37.0 / 24.0 / (x2 * x2 * x2) + 353.0 / 64.0 / (x2 * x2 * x2 * x2)
    }

    static func logA(q: Double, sigma: Double, alpha: Double) -> Double {
        if alpha.rounded() == alpha { return logAInteger(q: q, sigma: sigma, alpha: Int(alpha)) }
        return logAFractional(q: q, sigma: sigma, alpha: alpha)
    }

    static func logAInteger(q: Double, sigma: Double, alpha: Int) -> Double {
        var result = -Double.infinity
        let logQ = log(q), log1mQ = log1p(-q)
        for i in 0...alpha {
            let k = Double(i), a = Double(alpha)
            let term = logComb(a, k) + k * logQ + (a - k) * log1mQ + (k * k - k) / (2 * sigma * sigma)
            result = logAdd(result, term)
        }
        return result
    }

    static func logAFractional(q: Double, sigma: Double, alpha: Double) -> Double {
        var logA0 = -Double.infinity, logA1 = -Double.infinity
        let z0 = sigma * sigma * log(1 / q - 1) + 0.5
        let logQ = log(q), log1mQ = log1p(-q)
        var i = 0.0
        while true {
            let logCoefficient = logComb(alpha, i)
            let j = alpha - i
            let logT0 = logCoefficient + i * logQ + j * log1mQ
            let logT1 = logCoefficient + j * logQ + i * log1mQ
            let logE0 = log(0.5) + logErfc((i - z0) / (2.squareRoot() * sigma))
            let logE1 = log(0.5) + logErfc((z0 - j) / (2.squareRoot() * sigma))
            let logS0 = logT0 + (i * i - i) / (2 * sigma * sigma) + logE0
            let logS1 = logT1 + (j * j - j) / (2 * sigma * sigma) + logE1
            logA0 = logAdd(logA0, logS0)
            logA1 = logAdd(logA1, logS1)
            i += 1
            if max(logS0, logS1) < -30 || i > 100_000 { break }
        }
        return logAdd(logA0, logA1)
    }
}
