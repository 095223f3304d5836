import SiloTensor

// B batch, T time (the longest example of the batch).

/// Encoded examples stacked into one right-padded batch.
///
/// `ids` and `labels` are row-major (B, T): row b holds example b's ids followed by padding. Padding
/// ids are ``paddingID``; padding labels are −100, so the loss ignores them. `lengths[b]` is the
/// number of real ids in row b (the attention window of a causal model never reaches the padding
/// to its right).
public struct Batch: Sendable, Hashable {
    public let ids: [Int32]
    public let labels: [Int32]
    public let lengths: [Int]
    /// B and T.
    public let batch: Int
    public let time: Int
    /// The id written into padding positions.
    public let paddingID: Int32
    /// The positions of the examples in the list the batch was drawn from (empty when built directly).
    public let exampleIndices: [Int]
    /// Where each row came from.
    public let sources: [SourceLocation]

    /// Stacks `examples`, padding each on the right to the longest.
    /// - Parameters:
    ///   - paddingID: the id of padding positions (the tokenizer's pad token, or 0).
    ///   - exampleIndices: optional positions of the examples in their data set.
    public init(_ examples: [EncodedExample], paddingID: Int32 = 0, exampleIndices: [Int] = []) {
        precondition(!examples.isEmpty, "Batch: needs at least one example")
        precondition(exampleIndices.isEmpty || exampleIndices.count == examples.count,
                     "Batch: \(exampleIndices.count) indices for \(examples.count) examples")
        let time = examples.map(\.ids.count).max() ?? 0
        var ids = [Int32](repeating: paddingID, count: examples.count * time)
        var labels = [Int32](repeating: EncodedExample.ignoredLabel, count: examples.count * time)
        for (row, example) in examples.enumerated() {
            precondition(example.labels.count == example.ids.count, "Batch: example \(example.source) has \(example.ids.count) ids but \(example.labels.count) labels")
            let base = row * time
            for position in 0..<example.ids.count {
                ids[base + position] = example.ids[position]
                labels[base + position] = example.labels[position]
            }
        }
        self.ids = ids
        self.labels = labels
        self.lengths = examples.map(\.ids.count)
        self.batch = examples.count
        self.time = time
        self.paddingID = paddingID
        self.exampleIndices = exampleIndices
        self.sources = examples.map(\.source)
    }

    /// Number of positions that carry a loss.
    public var targetCount: Int { labels.count { $0 != EncodedExample.ignoredLabel } }
}

/// Batches of a list of encoded examples in a seeded random order, for a number of epochs.
///
/// Epoch e visits the examples in the order of a Fisher–Yates permutation drawn from
/// `RandomKey(seed: seed).split(e)`, so the order depends only on the seed and the number of
/// examples (not on the Swift version's `shuffle`, nor on how other components draw numbers).
/// Batches do not cross epochs; the last, smaller batch of an epoch is dropped with `dropLast`.
public struct BatchIterator: Sequence, IteratorProtocol, Sendable {
    public let examples: [EncodedExample]
    public let batchSize: Int
    public let epochs: Int
    public let dropLast: Bool
    public let paddingID: Int32
    private let key: RandomKey
    private var epoch = 0
    private let shuffle: Bool
    private var currentOrder: [Int] = []
    private var position = 0

    /// - Parameters:
    ///   - examples: the data set.
    ///   - batchSize: B (≥ 1).
    ///   - epochs: passes over the data (≥ 1).
    ///   - seed: fixes the order.
    ///   - shuffle: visit examples in a seeded random order (else in their given order).
    ///   - dropLast: leave out each epoch's last batch when it is smaller than `batchSize`.
    ///   - paddingID: the id of padding positions.
    public init(examples: [EncodedExample], batchSize: Int, epochs: Int = 1, seed: UInt64,
                shuffle: Bool = true, dropLast: Bool = false, paddingID: Int32 = 0) {
        precondition(batchSize >= 1, "BatchIterator: batchSize must be at least 1, got \(batchSize)")
        precondition(epochs >= 0, "BatchIterator: epochs must not be negative, got \(epochs)")
        self.examples = examples
        self.batchSize = batchSize
        self.epochs = epochs
        self.dropLast = dropLast
        self.paddingID = paddingID
        self.key = RandomKey(seed: seed)
        self.shuffle = shuffle
    }

    /// Batches per epoch.
    public var batchesPerEpoch: Int {
        dropLast ? examples.count / batchSize : (examples.count + batchSize - 1) / batchSize
    }

    /// The visiting order of epoch `epoch`.
    public func order(epoch: Int) -> [Int] {
        shuffle ? seededPermutation(count: examples.count, key: key.split(UInt64(epoch))) : Array(examples.indices)
    }

    public mutating func next() -> Batch? {
        while epoch < epochs {
            if position == 0 && currentOrder.isEmpty { currentOrder = order(epoch: epoch) }
            let remaining = currentOrder.count - position
            if remaining > 0, remaining >= batchSize || !dropLast {
                let indices = Array(currentOrder[position..<(position + Swift.min(batchSize, remaining))])
                position += indices.count
                return Batch(indices.map { examples[$0] }, paddingID: paddingID, exampleIndices: indices)
            }
            epoch += 1
            position = 0
            currentOrder = []
        }
        return nil
    }
}

/// A permutation of 0..<count (Fisher–Yates, unbiased bounded draws by rejection) that depends only
/// on `key` and `count`.
public func seededPermutation(count: Int, key: RandomKey) -> [Int] {
    var generator = SeededGenerator(key: key)
    var values = Array(0..<count)
    var index = count - 1
    while index > 0 {
        let other = Int(boundedRandom(UInt64(index + 1), using: &generator))
        values.swapAt(index, other)
        index -= 1
    }
    return values
}

/// Uniform in 0..<bound (Lemire's multiply-shift with rejection).
func boundedRandom(_ bound: UInt64, using generator: inout SeededGenerator) -> UInt64 {
    precondition(bound > 0)
    var product = generator.next().multipliedFullWidth(by: bound)
    if product.low < bound {
        let threshold = (0 &- bound) % bound
        while product.low < threshold {
            product = generator.next().multipliedFullWidth(by: bound)
        }
    }
    return product.high
}
