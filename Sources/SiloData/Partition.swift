#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import SiloTensor

/// How a data set is divided among N clients. Every scheme returns disjoint shards of example
/// positions that together cover all examples, each shard in ascending order, and depends only on
/// its inputs and the seed.
///
/// - `iid`: a seeded shuffle cut into N shards whose sizes differ by at most one.
/// - `labelSkew(classesPerClient:)`: client i holds the classes (o + i), (o + i + 1), ... (mod C) for a
///   seeded offset o, `classesPerClient` of them (the "#C = k" partition of Li et al., 2022, "Federated
///   learning on non-IID data silos"); each class's examples are shuffled and split evenly among the
///   clients that hold it. Needs N · classesPerClient ≥ C so that every class has a holder.
/// - `dirichlet(alpha:)`: for each class, client proportions p ~ Dir(alpha, ..., alpha) and the class's
///   shuffled examples are cut at the cumulative proportions (Hsu et al., 2019, "Measuring the effects
///   of non-identical data distribution"). Small alpha concentrates each class on few clients; large
///   alpha approaches IID. A client may receive no example at small alpha.
public enum Partition: Sendable, Hashable, Codable {
    case iid
    case labelSkew(classesPerClient: Int)
    case dirichlet(alpha: Double)

    /// Splits examples with the given class labels (0..<C; only the count matters for `iid`) among
    /// `clients` clients.
    /// - Returns: `clients` arrays of positions into `labels`.
    /// - Throws: ``DataError`` `.invalidArgument` for clients < 1, a negative label, alpha ≤ 0 or too
    ///   few classes per client.
    public func assign(labels: [Int], clients: Int, seed: UInt64) throws -> [[Int]] {
        guard clients >= 1 else { throw DataError(.invalidArgument, "partition: clients must be at least 1, got \(clients)") }
        if let negative = labels.firstIndex(where: { $0 < 0 }) {
            throw DataError(.invalidArgument, "partition: label \(labels[negative]) at position \(negative) is negative")
        }
        let key = RandomKey(seed: seed)
        switch self {
        case .iid:
            let order = seededPermutation(count: labels.count, key: key.split("iid"))
            var shards: [[Int]] = []
            var start = 0
            for client in 0..<clients {
                let size = labels.count / clients + (client < labels.count % clients ? 1 : 0)
                shards.append(order[start..<(start + size)].sorted())
                start += size
            }
            return shards
        case .labelSkew(let classesPerClient):
            let classCount = (labels.max() ?? -1) + 1
            guard classesPerClient >= 1 else {
                throw DataError(.invalidArgument, "partition: label skew needs at least 1 class per client, got \(classesPerClient)")
            }
            guard clients * classesPerClient >= classCount else {
                throw DataError(.invalidArgument, "partition: label skew with \(clients) clients of \(classesPerClient) classes each leaves some of the \(classCount) classes without a client; use at least \((classCount + clients - 1) / clients) classes per client")
            }
            let offset = classCount == 0 ? 0 : Int(boundedRandomValue(UInt64(classCount), key: key.split("offset")))
            var holders = [[Int]](repeating: [], count: classCount)
            for client in 0..<clients {
                for step in 0..<min(classesPerClient, classCount) {
                    holders[(offset + client + step) % classCount].append(client)
                }
            }
            var shards = [[Int]](repeating: [], count: clients)
            for (label, members) in Partition.byClass(labels, classCount: classCount).enumerated() {
                let order = seededPermutation(count: members.count, key: key.split("class").split(UInt64(label)))
                let owners = holders[label]
                for (rank, position) in order.enumerated() {
                    shards[owners[rank % owners.count]].append(members[position])
                }
            }
            return shards.map { $0.sorted() }
        case .dirichlet(let alpha):
            guard alpha > 0, alpha.isFinite else {
                throw DataError(.invalidArgument, "partition: Dirichlet alpha must be a positive number, got \(alpha)")
            }
            let classCount = (labels.max() ?? -1) + 1
            var shards = [[Int]](repeating: [], count: clients)
            for (label, members) in Partition.byClass(labels, classCount: classCount).enumerated() {
                let classKey = key.split("class").split(UInt64(label))
                let proportions = Partition.dirichletSample(alpha: alpha, count: clients, key: classKey.split("proportions"))
                let order = seededPermutation(count: members.count, key: classKey.split("order"))
                var cumulative = 0.0
                var start = 0
                for client in 0..<clients {
                    cumulative += proportions[client]
                    let end = client == clients - 1 ? members.count : min(members.count, Int((cumulative * Double(members.count)).rounded()))
                    if end > start {
                        shards[client].append(contentsOf: order[start..<end].map { members[$0] })
                        start = end
                    }
                }
            }
            return shards.map { $0.sorted() }
        }
    }

    /// Splits `examples` of a classification task by their labels (any task for `iid`).
    /// - Throws: ``DataError`` `.invalidArgument` when a skewed scheme is used on a generation task.
    public func assign(_ examples: [Example], clients: Int, seed: UInt64) throws -> [[Example]] {
        var labels: [Int] = []
        labels.reserveCapacity(examples.count)
        for example in examples {
            if let label = example.label {
                labels.append(label)
            } else if self == .iid {
                labels.append(0)
            } else {
                throw DataError(.invalidArgument, "partition: \(self) needs class labels, but \(example.task) example at \(example.source) has none (use iid for generation tasks)")
            }
        }
        return try assign(labels: labels, clients: clients, seed: seed).map { $0.map { examples[$0] } }
    }

    /// Positions of each class, in ascending order.
    static func byClass(_ labels: [Int], classCount: Int) -> [[Int]] {
        var members = [[Int]](repeating: [], count: classCount)
        for (position, label) in labels.enumerated() { members[label].append(position) }
        return members
    }

    /// A draw from Dir(alpha, ..., alpha) of dimension `count`: normalised Gamma(alpha, 1) draws,
    /// computed in log space so that tiny alpha (0.01) does not underflow to all zeros.
    static func dirichletSample(alpha: Double, count: Int, key: RandomKey) -> [Double] {
        var generator = SeededGenerator(key: key)
        let logs = (0..<count).map { _ in logGamma(shape: alpha, using: &generator) }
        let largest = logs.max() ?? 0
        let weights = logs.map { exp($0 - largest) }
        let total = weights.reduce(0, +)
        return weights.map { $0 / total }
    }

    /// log of a Gamma(shape, 1) draw: Marsaglia & Tsang (2000), "A simple method for generating gamma
    /// variables"; for shape < 1, Gamma(shape) = Gamma(shape + 1) · U^(1/shape).
    static func logGamma(shape: Double, using generator: inout SeededGenerator) -> Double {
        if shape < 1 {
            let u = uniformOpen(&generator)
            return logGamma(shape: shape + 1, using: &generator) + log(u) / shape
        }
        let d = shape - 1.0 / 3.0
        let c = 1.0 / (9.0 * d).squareRoot()
        while true {
            var x = 0.0, v = 0.0
            repeat {
                x = standardNormal(&generator)
                v = 1 + c * x
            } while v <= 0
            v = v * v * v
            let u = uniformOpen(&generator)
            if u < 1 - 0.0331 * x * x * x * x { return log(d * v) }
            if log(u) < 0.5 * x * x + d * (1 - v + log(v)) { return log(d * v) }
        }
    }

    /// Uniform in (0, 1) with 53 random bits.
    static func uniformOpen(_ generator: inout SeededGenerator) -> Double {
        (Double(generator.next() >> 11) + 0.5) * 0x1p-53
    }

    /// A standard normal (Box–Muller, one of the pair).
    static func standardNormal(_ generator: inout SeededGenerator) -> Double {
        let u1 = uniformOpen(&generator)
        let u2 = uniformOpen(&generator)
        return (-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2)
    }
}

/// Uniform in 0..<bound from a key's stream.
func boundedRandomValue(_ bound: UInt64, key: RandomKey) -> UInt64 {
    var generator = SeededGenerator(key: key)
    return boundedRandom(bound, using: &generator)
}
