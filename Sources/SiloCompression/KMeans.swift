import CBLAS
import Foundation
import SiloTensor

// n rows, d columns, k clusters.

/// An invalid k-means request: the message names what and why.
public struct KMeansError: Error, CustomStringConvertible, Equatable, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Lloyd's k-means over the rows of an (n, d) Float32 matrix, with the distance step as one GEMM per
/// row tile (‖x‖² − 2x·c + ‖c‖²), k-means++ seeding (one candidate per centre, seeded), deterministic
/// empty-cluster repair and an optional tolerance.
public struct KMeans: Sendable {
    public struct Result: Sendable {
        /// (k, d), row-major.
        public var centroids: [Float]
        /// The centroid of each row (n).
        public var assignments: [Int32]
        /// Σ over rows of the squared distance to the assigned centroid (final centroids).
        public var inertia: Double
        /// Lloyd iterations run.
        public var iterations: Int
    }

    public var clusters: Int
    public var iterations: Int
    /// Stop when the total squared centroid shift falls to `tolerance` × the mean per-column variance
    /// (sklearn's rule); 0 runs every iteration unless the assignments stop changing.
    public var tolerance: Double
    public var seed: UInt64

    public init(clusters: Int, iterations: Int = 20, tolerance: Double = 0, seed: UInt64 = 0) {
        self.clusters = clusters
        self.iterations = iterations
        self.tolerance = tolerance
        self.seed = seed
    }

    static let tileRows = 2048

    /// Clusters `data` (n × d, row-major); `initial` (k × d) replaces k-means++ when given.
    /// - Throws: ``KMeansError`` for k outside 1 ... n, a size mismatch or a non-finite value.
    public func fit(_ data: [Float], rows n: Int, columns d: Int, initial: [Float]? = nil) throws -> Result {
        let k = clusters
        guard n >= 1, d >= 1, data.count == n * d else { throw KMeansError("k-means: \(data.count) values for \(n) × \(d) rows") }
        guard k >= 1, k <= n else { throw KMeansError("k-means: k = \(k) clusters for \(n) rows (need 1 ≤ k ≤ rows)") }
        guard iterations >= 0 else { throw KMeansError("k-means: iterations \(iterations) must be ≥ 0") }
        if let bad = data.firstIndex(where: { !$0.isFinite }) {
            throw KMeansError("k-means: value \(data[bad]) at row \(bad / d), column \(bad % d)")
        }
        let rowNorms = (0..<n).map { row in data.withUnsafeBufferPointer { cblas_sdot(Int32(d), $0.baseAddress! + row * d, 1, $0.baseAddress! + row * d, 1) } }
        var centroids: [Float]
        if let initial {
            guard initial.count == k * d else { throw KMeansError("k-means: initial centroids have \(initial.count) values, expected \(k) × \(d)") }
            centroids = initial
        } else {
            centroids = plusPlus(data, rows: n, columns: d, rowNorms: rowNorms)
        }
        var assignments = [Int32](repeating: -1, count: n)
        var distances = [Float](repeating: 0, count: n)
        var run = 0
        let variance = tolerance > 0 ? meanColumnVariance(data, rows: n, columns: d) : 0
        while run < iterations {
            let changed = assign(data, rows: n, columns: d, rowNorms: rowNorms, centroids: centroids, assignments: &assignments, distances: &distances)
            run += 1
            let updated = update(data, rows: n, columns: d, assignments: &assignments, distances: &distances, previous: centroids)
            var shift = 0.0
            for index in 0..<updated.count { let delta = Double(updated[index] - centroids[index]); shift += delta * delta }
            centroids = updated
            if (run > 1 && changed == 0) || (tolerance > 0 && shift <= tolerance * variance) { break }
        }
        _ = assign(data, rows: n, columns: d, rowNorms: rowNorms, centroids: centroids, assignments: &assignments, distances: &distances)
        let inertia = distances.reduce(0.0) { $0 + Double($1) }
        return Result(centroids: centroids, assignments: assignments, inertia: inertia, iterations: run)
    }

    /// k-means++ (Arthur & Vassilvitskii 2007): the first centre uniformly, each next one with
    /// probability ∝ its squared distance to the nearest chosen centre; distances updated by one GEMV.
    func plusPlus(_ data: [Float], rows n: Int, columns d: Int, rowNorms: [Float]) -> [Float] {
        let key = RandomKey(seed: seed).split("k-means++")
        var centroids = [Float](repeating: 0, count: clusters * d)
        var nearest = [Float](repeating: .infinity, count: n)
        var products = [Float](repeating: 0, count: n)
        var chosen = Int(key.bits(0) % UInt64(n))
        for cluster in 0..<clusters {
            centroids.replaceSubrange((cluster * d)..<((cluster + 1) * d), with: data[(chosen * d)..<((chosen + 1) * d)])
            if cluster == clusters - 1 { break }
            data.withUnsafeBufferPointer { x in
                products.withUnsafeMutableBufferPointer { y in
                    cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(n), Int32(d), 1, x.baseAddress!, Int32(d),
                                x.baseAddress! + chosen * d, 1, 0, y.baseAddress!, 1)
                }
            }
            var total = 0.0
            let centreNorm = rowNorms[chosen]
            for row in 0..<n {
                let distance = max(rowNorms[row] - 2 * products[row] + centreNorm, 0)
                if distance < nearest[row] { nearest[row] = distance }
                total += Double(nearest[row])
            }
            guard total > 0 else { chosen = (chosen + 1) % n; continue }
            var target = Double(key.uniform(UInt64(cluster + 1))) * total
            chosen = n - 1
            for row in 0..<n {
                target -= Double(nearest[row])
                if target < 0 { chosen = row; break }
            }
        }
        return centroids
    }

    /// Nearest centroid of every row (distances by GEMM over row tiles); returns how many changed.
    func assign(_ data: [Float], rows n: Int, columns d: Int, rowNorms: [Float], centroids: [Float],
                assignments: inout [Int32], distances: inout [Float]) -> Int {
        let k = clusters
        let centroidNorms = (0..<k).map { c in centroids.withUnsafeBufferPointer { cblas_sdot(Int32(d), $0.baseAddress! + c * d, 1, $0.baseAddress! + c * d, 1) } }
        var products = [Float](repeating: 0, count: Self.tileRows * k)
        var changed = 0
        var start = 0
        while start < n {
            let rows = min(Self.tileRows, n - start)
            data.withUnsafeBufferPointer { x in
                centroids.withUnsafeBufferPointer { c in
                    products.withUnsafeMutableBufferPointer { p in
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(rows), Int32(k), Int32(d), 1,
                                    x.baseAddress! + start * d, Int32(d), c.baseAddress!, Int32(d), 0, p.baseAddress!, Int32(k))
                    }
                }
            }
            for row in 0..<rows {
                var best = 0
                var bestScore = Float.infinity
                let base = row * k
                for cluster in 0..<k {
                    let score = centroidNorms[cluster] - 2 * products[base + cluster]
                    if score < bestScore { bestScore = score; best = cluster }
                }
                let index = start + row
                if assignments[index] != Int32(best) { changed += 1; assignments[index] = Int32(best) }
                distances[index] = max(rowNorms[index] + bestScore, 0)
            }
            start += rows
        }
        return changed
    }

    /// Centroids as the means of their rows (Double sums); an empty cluster takes the row farthest from
    /// its centroid (lowest index on ties), which then leaves its old cluster.
    func update(_ data: [Float], rows n: Int, columns d: Int, assignments: inout [Int32], distances: inout [Float],
                previous: [Float]) -> [Float] {
        let k = clusters
        var counts = [Int](repeating: 0, count: k)
        for cluster in assignments { counts[Int(cluster)] += 1 }
        for cluster in 0..<k where counts[cluster] == 0 {
            var farthest = -1
            var farthestDistance: Float = -1
            for row in 0..<n where counts[Int(assignments[row])] > 1 && distances[row] > farthestDistance {
                farthest = row; farthestDistance = distances[row]
            }
            guard farthest >= 0 else { continue }
            counts[Int(assignments[farthest])] -= 1
            assignments[farthest] = Int32(cluster)
            distances[farthest] = 0
            counts[cluster] = 1
        }
        var sums = [Double](repeating: 0, count: k * d)
        for row in 0..<n {
            let base = Int(assignments[row]) * d
            for column in 0..<d { sums[base + column] += Double(data[row * d + column]) }
        }
        var centroids = previous
        for cluster in 0..<k where counts[cluster] > 0 {
            let scale = 1 / Double(counts[cluster])
            for column in 0..<d { centroids[cluster * d + column] = Float(sums[cluster * d + column] * scale) }
        }
        return centroids
    }

    func meanColumnVariance(_ data: [Float], rows n: Int, columns d: Int) -> Double {
        var total = 0.0
        for column in 0..<d {
            var mean = 0.0, square = 0.0
            for row in 0..<n { let v = Double(data[row * d + column]); mean += v; square += v * v }
            mean /= Double(n)
            total += square / Double(n) - mean * mean
        }
        return total / Double(d)
    }
}
