import Foundation

// n rows, d columns, k clusters, M clients.

/// Trustformer's round (centroid exchange) as pure functions: each client clusters the rows of a weight
/// matrix into k centroids L with assignments c, sends L; the server averages the clients' centroids
/// index by index; each client rebuilds W[j] += G[c(j)] − L[c(j)].
///
/// Centroid j of one client must mean the same thing as centroid j of another. Here alignment comes
/// from a shared initialisation: every client starts Lloyd from the same centroids, drawn from the
/// round's global matrix with the round's seed (Trustformer's way), so the indices start aligned.
public enum CentroidExchange {
    /// What a client sends (centroids) and keeps (assignments).
    public struct ClientPart: Sendable {
        public var centroids: [Float]
        public var assignments: [Int32]
    }

    /// Shared initial centroids for a round: k rows of the global matrix picked by the round's seed
    /// (k-means++ on the global rows), identical on every client.
    public static func sharedInitial(global: [Float], rows n: Int, columns d: Int, clusters k: Int, seed: UInt64) throws -> [Float] {
        guard k < n else { return global }
        let rowNorms = (0..<n).map { row in (0..<d).reduce(Float(0)) { $0 + global[row * d + $1] * global[row * d + $1] } }
        return KMeans(clusters: k, iterations: 0, seed: seed).plusPlus(global, rows: n, columns: d, rowNorms: rowNorms)
    }

    /// The client's step: Lloyd from the shared centroids. With k = n every row is its own centroid
    /// (assignment j → j), which is the paper's argument that the method contains FedAvg.
    public static func compress(_ weights: [Float], rows n: Int, columns d: Int, clusters k: Int, initial: [Float],
                                iterations: Int = 10) throws -> ClientPart {
        if k == n { return ClientPart(centroids: weights, assignments: (0..<n).map(Int32.init)) }
        let result = try KMeans(clusters: k, iterations: iterations).fit(weights, rows: n, columns: d, initial: initial)
        return ClientPart(centroids: result.centroids, assignments: result.assignments)
    }

    /// The server's step: the index-wise weighted mean of the clients' centroids (weights: examples).
    public static func average(_ centroids: [[Float]], weights: [Double]) throws -> [Float] {
        guard let count = centroids.first?.count, centroids.allSatisfy({ $0.count == count }), weights.count == centroids.count else {
            throw KMeansError("centroid exchange: \(centroids.count) centroid sets of lengths \(centroids.map(\.count)) with \(weights.count) weights")
        }
        let total = weights.reduce(0, +)
        guard total > 0 else { throw KMeansError("centroid exchange: the weights sum to \(total)") }
        var sum = [Double](repeating: 0, count: count)
        for (set, weight) in zip(centroids, weights) {
            for index in 0..<count { sum[index] += weight / total * Double(set[index]) }
        }
        return sum.map { Float($0) }
    }

    /// The client's rebuild: W[j] += G[c(j)] − L[c(j)].
    public static func apply(_ weights: [Float], columns d: Int, part: ClientPart, global: [Float]) -> [Float] {
        var out = weights
        for (row, cluster) in part.assignments.enumerated() {
            let base = Int(cluster) * d
            for column in 0..<d { out[row * d + column] += global[base + column] - part.centroids[base + column] }
        }
        return out
    }
}
