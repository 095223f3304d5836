import Foundation
import SiloTensor

/// Clipping and Gaussian noise: the building blocks of DP-SGD (Abadi et al. 2016) and DP-FedAvg.
public enum GaussianMechanism {
    /// `vector` scaled to L2 norm at most `clip` (norm computed in Double): min(1, clip / ‖v‖) · v.
    public static func clipped(_ vector: [Float], to clip: Double) -> [Float] {
        precondition(clip > 0, "clipped: clip \(clip) must be > 0")
        let norm = vector.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
        guard norm > clip else { return vector }
        let factor = clip / norm
        return vector.map { Float(Double($0) * factor) }
    }

    /// DP-SGD's private gradient of one batch: each example's gradient clipped to `clip`, summed,
    /// N(0, (z·clip)²) added to every coordinate, divided by `expectedBatchSize` (q·n under Poisson
    /// sampling, so that the scale does not leak the batch's actual size).
    /// - Parameter key: the noise's seed (one per step).
    public static func privateGradient(perExample gradients: [[Float]], count: Int, clip: Double, noiseMultiplier z: Double,
                                       expectedBatchSize: Double, key: RandomKey) -> [Float] {
        precondition(gradients.allSatisfy { $0.count == count }, "privateGradient: every gradient must have \(count) values")
        precondition(expectedBatchSize > 0 && z >= 0, "privateGradient: expected batch \(expectedBatchSize), noise \(z)")
        var sum = [Double](repeating: 0, count: count)
        for gradient in gradients {
            for (index, value) in clipped(gradient, to: clip).enumerated() { sum[index] += Double(value) }
        }
        let noise = z > 0 ? Tensor.randomNormal([count], standardDeviation: Float(z * clip), key: key).toArray() : [Float](repeating: 0, count: count)
        return (0..<count).map { Float((sum[$0] + Double(noise[$0])) / expectedBatchSize) }
    }
}
