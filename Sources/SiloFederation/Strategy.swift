import Foundation
import SiloTensor

/// One client's contribution to an aggregation: its trainable values, flattened in the agreed order,
/// and its weight (examples trained on since the last aggregation).
public struct ClientUpdate {
    public let clientID: String
    public let values: Tensor
    public let weight: Double

    public init(clientID: String, values: Tensor, weight: Double) {
        self.clientID = clientID
        self.values = values
        self.weight = weight
    }
}

/// An error in aggregation: mismatched lengths, no usable update, a non-finite value.
public struct AggregationError: Error, CustomStringConvertible {
    public let message: String

    public init(_ message: String) { self.message = message }

    public var description: String { message }
}

/// Combines client updates into new values for everyone (Flower's "strategy"). Privacy (clipping and
/// noise, secure aggregation) and compression wrap a strategy as decorators.
public protocol AggregationStrategy: AnyObject {
    /// A short name for reports (`fedavg`).
    var name: String { get }
    /// The aggregated values from `updates` (at least one), given the values everyone held before the round.
    /// - Throws: ``AggregationError`` for updates of different lengths or non-finite values.
    func aggregate(_ updates: [ClientUpdate], previous: Tensor?) throws -> Tensor
}

/// FedAvg (McMahan et al. 2017): the weighted mean of the clients' values, weights = examples.
/// Accumulates in Double and in client-ID order, so the result does not depend on arrival order.
public final class FedAvg: AggregationStrategy {
    public let name = "fedavg"

    public init() {}

    public func aggregate(_ updates: [ClientUpdate], previous: Tensor?) throws -> Tensor {
        guard let first = updates.first else { throw AggregationError("fedavg: no client update to aggregate") }
        let count = first.values.count
        for update in updates where update.values.shape != [count] {
            throw AggregationError("fedavg: client \(update.clientID) sent \(update.values.shape) values, client \(first.clientID) sent [\(count)]")
        }
        for update in updates where !(update.weight.isFinite && update.weight >= 0) {
            throw AggregationError("fedavg: client \(update.clientID) has weight \(update.weight)")
        }
        let total = updates.reduce(0) { $0 + $1.weight }
        var sum = [Double](repeating: 0, count: count)
        for update in updates.sorted(by: { $0.clientID < $1.clientID }) {
            let weight = total > 0 ? update.weight / total : 1 / Double(updates.count)
            let values = update.values.isContiguous ? update.values : update.values.contiguous()
            for index in 0..<count {
                let value = values.pointer[index]
                guard value.isFinite else {
                    throw AggregationError("fedavg: client \(update.clientID) sent \(value) at index \(index)")
                }
                sum[index] += weight * Double(value)
            }
        }
        return try Tensor(shape: [count], values: sum.map { Float($0) })
    }
}
