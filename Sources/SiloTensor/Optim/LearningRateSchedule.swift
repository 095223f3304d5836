#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A learning rate per optimizer step: linear warm-up from 0 to the peak rate, then constant, linear or
/// cosine decay to a minimum rate at `totalSteps` — the schedules of Hugging Face transformers
/// (`get_constant_schedule_with_warmup`, `get_linear_schedule_with_warmup`,
/// `get_cosine_schedule_with_warmup`, `get_cosine_with_min_lr_schedule_with_warmup` with
/// `min_lr_rate = minimumRate / peakRate`) driven by PyTorch's `LambdaLR`.
///
/// Steps count completed optimizer steps, as `LambdaLR` does: `learningRate(at: 0)` is the rate of the
/// first step (0 when there is a warm-up), `learningRate(at: warmupSteps)` is the peak. Warm-up rate
/// at step s < warmupSteps: peak · s / warmupSteps. After it, with the progress
/// x = (s − warmupSteps) / max(1, totalSteps − warmupSteps):
/// - constant: peak;
/// - linear: minimum + (peak − minimum) · max(0, (totalSteps − s) / max(1, totalSteps − warmupSteps));
/// - cosine: minimum + (peak − minimum) · ½ (1 + cos(π·x)).
///
/// Values equal transformers' for every step in 0...totalSteps. After `totalSteps` the linear and cosine
/// schedules stay at the minimum rate (transformers' half-cosine would start to rise again).
public struct LearningRateSchedule: Sendable, Codable, Equatable {
    /// What happens after the warm-up.
    public enum Decay: String, Sendable, Codable, CaseIterable {
        /// Stay at the peak rate.
        case constant
        /// Decrease linearly to the minimum rate at `totalSteps`.
        case linear
        /// Follow a half cosine down to the minimum rate at `totalSteps`.
        case cosine
    }

    /// The rate at the end of the warm-up.
    public let peakRate: Float
    /// Steps of linear warm-up from 0 to `peakRate`.
    public let warmupSteps: Int
    /// The step at which the decay reaches `minimumRate` (ignored by `.constant`).
    public let totalSteps: Int
    /// The shape of the decay.
    public let decay: Decay
    /// The rate at and after `totalSteps` (0 in transformers' linear and cosine schedules).
    public let minimumRate: Float

    /// A schedule; see the type's documentation for the formulas.
    /// - Throws: ``TensorError`` (`.invalidArgument`) if a rate is negative or not finite, the minimum
    ///   exceeds the peak, or the step counts are negative or `totalSteps < warmupSteps`.
    public init(peakRate: Float, warmupSteps: Int = 0, totalSteps: Int, decay: Decay = .cosine,
                minimumRate: Float = 0) throws {
        guard peakRate.isFinite, peakRate >= 0, minimumRate.isFinite, minimumRate >= 0, minimumRate <= peakRate else {
            throw TensorError(.invalidArgument,
                              "LearningRateSchedule: need finite rates with 0 ≤ minimumRate ≤ peakRate, got peak \(peakRate) and minimum \(minimumRate)")
        }
        guard warmupSteps >= 0, totalSteps >= warmupSteps else {
            throw TensorError(.invalidArgument,
                              "LearningRateSchedule: need 0 ≤ warmupSteps ≤ totalSteps, got \(warmupSteps) warm-up and \(totalSteps) total steps")
        }
        self.peakRate = peakRate
        self.warmupSteps = warmupSteps
        self.totalSteps = totalSteps
        self.decay = decay
        self.minimumRate = minimumRate
    }

    /// A constant rate with no warm-up.
    public static func constant(_ rate: Float) throws -> LearningRateSchedule {
        try LearningRateSchedule(peakRate: rate, totalSteps: 0, decay: .constant)
    }

    /// The rate for the optimizer step that follows `step` completed steps (`step` ≥ 0).
    public func learningRate(at step: Int) -> Float {
        precondition(step >= 0, "LearningRateSchedule.learningRate(at:): negative step \(step)")
        let peak = Double(peakRate)
        if step < warmupSteps {
            return Float(peak * (Double(step) / Double(max(1, warmupSteps))))
        }
        if decay == .constant { return peakRate }
        if step > totalSteps { return minimumRate }
        let span = Double(max(1, totalSteps - warmupSteps))
        let factor: Double
        switch decay {
        case .constant: factor = 1
        case .linear: factor = max(0, Double(totalSteps - step) / span)
        case .cosine: factor = 0.5 * (1 + cos(Double.pi * (Double(step - warmupSteps) / span)))
        }
        let minimum = Double(minimumRate)
        return Float(minimum + (peak - minimum) * factor)
    }
}
