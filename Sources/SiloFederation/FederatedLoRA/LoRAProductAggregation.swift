import Foundation

// r LoRA rank, n clients, O output features, I input features; A is (r, I), B is (O, r), ΔW = B·A.

/// How federated LoRA combines the clients' factors.
public enum LoRAAggregation: String, Codable, Sendable, CaseIterable {
    /// Average A and B separately (DP-LoRA, FedAvg of the flattened adapters). Cheap and linear (so it
    /// works with secure aggregation and central noise), but mean(B)·mean(A) ≠ mean(B·A): the result is
    /// not the average of the clients' weight updates.
    case factors
    /// Average the products ΔW = Σ p_i·B_i·A_i and re-factor it to rank r by truncated SVD
    /// (B = U_r·√S_r, A = √S_r·V_rᵀ): the best rank-r approximation of the true average (Eckart–Young).
    /// Exact when Σ_i rank(B_i·A_i) ≤ r. The server needs every client's factors, so it cannot be combined
    /// with secure aggregation or noise on the sum (local DP, on each client's factors, is fine).
    case product
}

/// The index ranges of each LoRA module's A and B in a flattened adapter vector.
public struct LoRALayout: Sendable {
    public struct Module: Sendable {
        public var name: String
        public var a: Range<Int>
        public var b: Range<Int>
        public var rank: Int
        public var inputs: Int
        public var outputs: Int
    }

    public let modules: [Module]

    /// Pairs `X.lora_A.weight` (r, I) with `X.lora_B.weight` (O, r) from the trainables' names and shapes
    /// (in flattened order). Other trainables (prefixes) are averaged as values.
    /// - Throws: ``AggregationError`` for an A without its B or shapes that do not pair.
    public init(names: [String], shapes: [[Int]]) throws {
        var offsets: [String: (Range<Int>, [Int])] = [:]
        var offset = 0
        for (name, shape) in zip(names, shapes) {
            let count = shape.reduce(1, *)
            offsets[name] = (offset..<(offset + count), shape)
            offset += count
        }
        var modules: [Module] = []
        for name in names where name.hasSuffix(".lora_A.weight") {
            let stem = String(name.dropLast(".lora_A.weight".count))
            guard let (aRange, aShape) = offsets[name], let (bRange, bShape) = offsets[stem + ".lora_B.weight"] else {
                throw AggregationError("LoRA product aggregation: \(name) has no matching \(stem).lora_B.weight")
            }
            guard aShape.count == 2, bShape.count == 2, aShape[0] == bShape[1] else {
                throw AggregationError("LoRA product aggregation: \(stem) has A \(aShape) and B \(bShape), expected (r, I) and (O, r)")
            }
            modules.append(Module(name: stem, a: aRange, b: bRange, rank: aShape[0], inputs: aShape[1], outputs: bShape[0]))
        }
        self.modules = modules
    }

    /// The flattened adapters of every client combined by ``LoRAAggregation/product``: each module's
    /// ΔW averaged with weights p (normalised here) and re-factored; other values averaged.
    public func productAverage(_ clients: [[Float]], weights: [Double]) throws -> [Float] {
        guard let first = clients.first, clients.count == weights.count else {
            throw AggregationError("LoRA product aggregation: \(clients.count) clients, \(weights.count) weights")
        }
        let total = weights.reduce(0, +)
        guard total > 0, weights.allSatisfy({ $0 >= 0 && $0.isFinite }) else {
            throw AggregationError("LoRA product aggregation: weights \(weights) must be non-negative with a positive sum")
        }
        let p = weights.map { $0 / total }
        var result = (0..<first.count).map { index in Float(zip(clients, p).reduce(0.0) { $0 + Double($1.0[index]) * $1.1 }) }
        for module in modules {
            let (a, b) = Self.refactor(module: module, clients: clients, weights: p)
            for (index, value) in a.enumerated() { result[module.a.lowerBound + index] = value }
            for (index, value) in b.enumerated() { result[module.b.lowerBound + index] = value }
        }
        return result
    }

    /// The best rank-r factors of Σ p_i·B_i·A_i: with B̂ = [√p_i B_i] (O, nr) and Â = [√p_i A_i] (nr, I),
    /// QR of B̂ and of Âᵀ reduce the SVD to the small (nr, nr) core R_B·R_Aᵀ.
    static func refactor(module: LoRALayout.Module, clients: [[Float]], weights: [Double]) -> (a: [Float], b: [Float]) {
        let r = module.rank, n = clients.count, k = n * r, o = module.outputs, i = module.inputs
        // Column-major stacks: bHat[column][row] (O each), aHatT[column][input] (I each).
        var bHat: [[Double]] = [], aHatT: [[Double]] = []
        for (client, weight) in zip(clients, weights) {
            let scale = weight.squareRoot()
            for rankIndex in 0..<r {
                bHat.append((0..<o).map { Double(client[module.b.lowerBound + $0 * r + rankIndex]) * scale })
                aHatT.append((0..<i).map { Double(client[module.a.lowerBound + rankIndex * i + $0]) * scale })
            }
        }
        let (qB, rB) = householderlessQR(bHat)
        let (qA, rA) = householderlessQR(aHatT)
        // core = R_B · R_Aᵀ (k × k), row-major.
        var core = [Double](repeating: 0, count: k * k)
        for row in 0..<k {
            for column in 0..<k {
                var sum = 0.0
                for inner in 0..<k { sum += rB[row * k + inner] * rA[column * k + inner] }
                core[row * k + column] = sum
            }
        }
        let (u, s, v) = jacobiSVD(core, size: k)
        var a = [Float](repeating: 0, count: r * i), b = [Float](repeating: 0, count: o * r)
        for component in 0..<min(r, k) {
            let root = s[component].squareRoot()
            // Left vector Q_B·u_c (O), right vector Q_A·v_c (I).
            for row in 0..<o {
                var sum = 0.0
                for inner in 0..<k { sum += qB[inner][row] * u[inner * k + component] }
                b[row * r + component] = Float(sum * root)
            }
            for column in 0..<i {
                var sum = 0.0
                for inner in 0..<k { sum += qA[inner][column] * v[inner * k + component] }
                a[component * i + column] = Float(sum * root)
            }
        }
        return (a, b)
    }

    /// Thin QR of the columns (modified Gram–Schmidt, twice for stability): Q's columns orthonormal (a
    /// column that is dependent on the previous ones becomes zero), R (k × k, row-major) upper triangular.
    static func householderlessQR(_ columns: [[Double]]) -> (q: [[Double]], r: [Double]) {
        let k = columns.count
        var q = columns
        var r = [Double](repeating: 0, count: k * k)
        let scale = columns.map { $0.reduce(0) { $0 + $1 * $1 } }.max().map { $0.squareRoot() } ?? 0
        for j in 0..<k {
            for _ in 0..<2 {
                for p in 0..<j {
                    let dot = zip(q[p], q[j]).reduce(0) { $0 + $1.0 * $1.1 }
                    r[p * k + j] += dot
                    for index in q[j].indices { q[j][index] -= dot * q[p][index] }
                }
            }
            let norm = q[j].reduce(0) { $0 + $1 * $1 }.squareRoot()
            if norm > 1e-12 * max(scale, 1e-300) {
                r[j * k + j] = norm
                for index in q[j].indices { q[j][index] /= norm }
            } else {
                for index in q[j].indices { q[j][index] = 0 }
            }
        }
        return (q, r)
    }

    /// SVD of a small square matrix (row-major) by one-sided Jacobi rotations: M = U·diag(s)·Vᵀ with s
    /// sorted descending; U and V row-major (k × k), columns are the singular vectors.
    static func jacobiSVD(_ matrix: [Double], size k: Int) -> (u: [Double], s: [Double], v: [Double]) {
        var work = matrix // columns of work converge to U·S
        var v = [Double](repeating: 0, count: k * k)
        for index in 0..<k { v[index * k + index] = 1 }
        for _ in 0..<60 {
            var rotated = false
            for p in 0..<k {
                for q in (p + 1)..<max(p + 1, k) {
                    var alpha = 0.0, beta = 0.0, gamma = 0.0
                    for row in 0..<k {
                        let x = work[row * k + p], y = work[row * k + q]
                        alpha += x * x; beta += y * y; gamma += x * y
                    }
                    guard abs(gamma) > 1e-15 * (alpha * beta).squareRoot(), gamma != 0 else { continue }
                    rotated = true
                    let zeta = (beta - alpha) / (2 * gamma)
                    let t = (zeta >= 0 ? 1 : -1) / (abs(zeta) + (1 + zeta * zeta).squareRoot())
                    let c = 1 / (1 + t * t).squareRoot(), s = c * t
                    for row in 0..<k {
                        let x = work[row * k + p], y = work[row * k + q]
                        work[row * k + p] = c * x - s * y
                        work[row * k + q] = s * x + c * y
                        let vx = v[row * k + p], vy = v[row * k + q]
                        v[row * k + p] = c * vx - s * vy
                        v[row * k + q] = s * vx + c * vy
                    }
                }
            }
            if !rotated { break }
        }
        var singular = (0..<k).map { column in (0..<k).reduce(0.0) { $0 + work[$1 * k + column] * work[$1 * k + column] }.squareRoot() }
        let order = (0..<k).sorted { singular[$0] > singular[$1] }
        var u = [Double](repeating: 0, count: k * k), sortedV = [Double](repeating: 0, count: k * k)
        for (target, source) in order.enumerated() {
            for row in 0..<k {
                u[row * k + target] = singular[source] > 0 ? work[row * k + source] / singular[source] : 0
                sortedV[row * k + target] = v[row * k + source]
            }
        }
        singular = order.map { singular[$0] }
        return (u, singular, sortedV)
    }
}
