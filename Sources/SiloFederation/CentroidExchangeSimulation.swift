import Foundation
import SiloCompression
import SiloData
import SiloModels
import SiloTensor

// M clients; per matrix n rows, d columns, k = max(1, round(ratio·n)) centroids.

/// How clients' centroid j come to mean the same thing.
public enum CentroidAlignment: String, Codable, Sendable, CaseIterable {
    /// Every client starts Lloyd from the same k-means++ rows of the shared pretrained matrix, drawn with
    /// the round's seed (Trustformer's way): indices start aligned and usually stay so.
    case sharedSeed = "shared-seed"
    /// Every client seeds k-means on its own matrix; the server matches each client's centroids to the
    /// first client's by minimum total squared distance (Hungarian) before averaging, and sends each
    /// client the average in its own order.
    case hungarian
}

/// One Trustformer round over every 2-D matrix of the clients' models, as a pure function.
public enum CentroidRound {
    public struct Settings: Sendable {
        public var ratio: Double
        public var iterations: Int
        public var alignment: CentroidAlignment
        /// Send 1-D tensors (norm weights, biases) in full and average them; else they stay local.
        public var sendVectors: Bool

        public init(ratio: Double, iterations: Int = 10, alignment: CentroidAlignment = .sharedSeed, sendVectors: Bool = true) {
            self.ratio = ratio
            self.iterations = iterations
            self.alignment = alignment
            self.sendVectors = sendVectors
        }
    }

    public struct Outcome: Sendable {
        /// Each client's rebuilt tensors (its "simulated global model").
        public var clients: [[[Float]]]
        /// Bytes each client uploads (centroids + full vectors); the download is the same size.
        public var uploadBytes: Int
        /// What FedAvg of full weights would upload.
        public var fullBytes: Int
        /// Seconds of k-means per client (mean).
        public var compressionSeconds: Double
        /// Σ over matrices and clients of the squared distance moved by centroid alignment (0: aligned).
        public var misalignment: Double
    }

    static func clusters(rows n: Int, ratio: Double) -> Int { min(n, max(1, Int((ratio * Double(n)).rounded()))) }

    /// - Parameters:
    ///   - clients: per client, its tensors (flattened) after local training.
    ///   - shapes: the tensors' shapes; 2-D tensors are clustered by rows.
    ///   - reference: the shared pretrained tensors (shared-seed initialisation).
    ///   - weights: the clients' aggregation weights (examples).
    public static func exchange(_ clients: [[[Float]]], shapes: [[Int]], reference: [[Float]], weights: [Double], settings: Settings,
                                seed: UInt64) throws -> Outcome {
        guard let first = clients.first, clients.allSatisfy({ $0.count == shapes.count }), first.count == shapes.count,
              reference.count == shapes.count, weights.count == clients.count else {
            throw AggregationError("centroid exchange: \(clients.count) clients, \(shapes.count) shapes, \(reference.count) reference tensors, \(weights.count) weights")
        }
        var result = clients
        var upload = 0, full = 0, kmeansSeconds = 0.0, misalignment = 0.0
        for (index, shape) in shapes.enumerated() {
            let count = shape.reduce(1, *)
            full += count * 4
            guard shape.count == 2, shape[0] >= 2 else {
                guard settings.sendVectors else { continue }
                upload += count * 4
                let mean = try CentroidExchange.average(clients.map { $0[index] }, weights: weights)
                for client in result.indices { result[client][index] = mean }
                continue
            }
            let (n, d) = (shape[0], shape[1])
            let k = clusters(rows: n, ratio: settings.ratio)
            upload += k * d * 4
            let tensorSeed = seed &+ UInt64(index) &* 0x9E37_79B9
            let start = DispatchTime.now().uptimeNanoseconds
            var parts: [CentroidExchange.ClientPart] = []
            if settings.alignment == .sharedSeed || k == n {
                let initial = try CentroidExchange.sharedInitial(global: reference[index], rows: n, columns: d, clusters: k, seed: tensorSeed)
                for client in clients {
                    parts.append(try CentroidExchange.compress(client[index], rows: n, columns: d, clusters: k, initial: initial, iterations: settings.iterations))
                }
            } else {
                for (position, client) in clients.enumerated() {
                    let own = try CentroidExchange.sharedInitial(global: client[index], rows: n, columns: d, clusters: k, seed: tensorSeed &+ UInt64(position))
                    parts.append(try CentroidExchange.compress(client[index], rows: n, columns: d, clusters: k, initial: own, iterations: settings.iterations))
                }
            }
            kmeansSeconds += Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            // Alignment to the first client (Hungarian), then the index-wise average.
            var permutations: [[Int]] = []
            var aligned: [[Float]] = []
            for part in parts {
                if settings.alignment == .hungarian && k < n {
                    let (reordered, permutation) = try HungarianMatching.align(part.centroids, to: parts[0].centroids, clusters: k, columns: d)
                    misalignment += zip(reordered, part.centroids).reduce(0.0) { $0 + Double(($1.0 - $1.1) * ($1.0 - $1.1)) }
                    aligned.append(reordered)
                    permutations.append(permutation)
                } else {
                    aligned.append(part.centroids)
                    permutations.append(Array(0..<k))
                }
            }
            let global = try CentroidExchange.average(aligned, weights: weights)
            for client in result.indices {
                // The global centroid for this client's own index j is the one its j was matched to.
                var own = [Float](repeating: 0, count: k * d)
                for (slot, local) in permutations[client].enumerated() {
                    for column in 0..<d { own[local * d + column] = global[slot * d + column] }
                }
                result[client][index] = CentroidExchange.apply(clients[client][index], columns: d, part: parts[client], global: own)
            }
        }
        return Outcome(clients: result, uploadBytes: upload, fullBytes: full, compressionSeconds: kmeansSeconds / Double(clients.count),
                       misalignment: misalignment)
    }
}

/// The k-means-centroids part of `results.json`.
public struct CentroidResults: Codable, Sendable {
    public var ratio: Double
    public var alignment: String
    public var sendVectors: Bool
    /// Per round per client, each way: centroids (+ vectors) vs FedAvg of the full weights.
    public var bytesPerRoundPerClient: [String: Int]
    /// Mean k-means seconds per client, per round.
    public var compressionSeconds: [Double]
    /// Per round: squared distance moved by Hungarian alignment (0 with shared seeds).
    public var misalignment: [Double]

    enum CodingKeys: String, CodingKey {
        case ratio, alignment, sendVectors = "send_vectors", bytesPerRoundPerClient = "bytes_per_round_per_client",
             compressionSeconds = "compression_seconds", misalignment
    }
}

/// Trustformer (PAPERS.md §3) in one process: every client fine-tunes the whole model locally, then
/// clusters the rows of each weight matrix and sends only the centroids; the server averages them
/// index-wise (after alignment); each client rebuilds W[j] += G[c(j)] − L[c(j)] and trains on from its own
/// rebuilt model. Ratio 1 (k = n) is FedAvg of the full weights.
public enum CentroidExchangeSimulation {
    public static func run(_ configuration: SimulationConfiguration, modelStore: ModelStore = ModelStore(),
                           dataStore: DataStore = DataStore(), onEvent: @escaping (SimulationEvent) -> Void = { _ in }) throws -> SimulationResults {
        let started = DispatchTime.now().uptimeNanoseconds
        let settings = configuration.federated, centroids = configuration.centroids
        let prepared = try Simulation.prepare(configuration, modelStore: modelStore, dataStore: dataStore, onEvent: onEvent)
        var notes = prepared.notes
        let clientIDs = prepared.clientIDs.filter { prepared.clientExamples[$0] != nil }

        onEvent(.phase("loading \(configuration.model) (every client fine-tunes the whole model)", total: 0))
        let model = try Checkpoint.load(prepared.modelURL)
        let part = try ModelPart(model: model, adapters: AdapterSpecification(lora: nil, prefix: nil), key: RandomKey(seed: configuration.seed))
        let parameters = try model.makeTrainable()
        let tensors = parameters.map(\.tensor), shapes = tensors.map(\.shape)
        let pretrained = tensors.map { $0.toArray() }
        func load(_ values: [[Float]]) {
            for (tensor, array) in zip(tensors, values) { array.withUnsafeBufferPointer { tensor.pointer.update(from: $0.baseAddress!, count: tensor.count) } }
        }

        onEvent(.phase("evaluating before training (\(prepared.evaluationCount) examples)", total: 0))
        let before = try prepared.evaluate(CentralizedScorer(part: part))

        var iterators: [String: BatchIterator] = [:]
        for (index, id) in clientIDs.enumerated() {
            let examples = prepared.clientExamples[id] ?? []
            let perEpoch = max(1, examples.count / configuration.data.batchSize)
            iterators[id] = BatchIterator(examples: examples, batchSize: configuration.data.batchSize,
                                          epochs: (settings.rounds * settings.localSteps + perEpoch - 1) / perEpoch,
                                          seed: configuration.seed &+ UInt64(index + 1))
        }
        var local = Dictionary(uniqueKeysWithValues: clientIDs.map { ($0, pretrained) })
        let roundSettings = CentroidRound.Settings(ratio: centroids.ratio, iterations: centroids.iterations,
                                                   alignment: centroids.alignment, sendVectors: centroids.sendVectors)
        var trainLoss: [Double] = [], compression: [Double] = [], misalignment: [Double] = []
        var upload = 0, full = 0
        onEvent(.phase("k-means centroids (ratio \(centroids.ratio), \(centroids.alignment.rawValue)), \(clientIDs.count) clients", total: settings.rounds))
        let trainStart = DispatchTime.now().uptimeNanoseconds
        for round in 1...settings.rounds {
            let roundStart = DispatchTime.now().uptimeNanoseconds
            var trained: [[[Float]]] = [], losses: [Double] = []
            for id in clientIDs {
                load(local[id] ?? pretrained)
                let optimizer = try AdamW(parameters: tensors, learningRate: centroids.learningRate, weightDecay: 0)
                var iterator = iterators[id]!
                for _ in 0..<settings.localSteps {
                    guard let batch = iterator.next() else { throw ProtocolError("\(id): the client's batches ran out") }
                    let hidden = try part.embedAndRun(ids: batch.ids, batch: batch.batch, time: batch.time, blocks: 0..<0)
                    let (loss, _) = try part.loss(hidden: hidden, labels: batch.labels, blocks: 0..<model.layerCount)
                    let value = Double(loss.toArray()[0])
                    guard value.isFinite else { throw ProtocolError("\(id): round \(round): loss is \(value)") }
                    losses.append(value)
                    try loss.backward()
                    try optimizer.step()
                    optimizer.zeroGrad()
                }
                iterators[id] = iterator
                trained.append(tensors.map { $0.toArray() })
            }
            let outcome = try CentroidRound.exchange(trained, shapes: shapes, reference: pretrained,
                                                     weights: clientIDs.map { Double(prepared.clientExamples[$0]?.count ?? 0) },
                                                     settings: roundSettings, seed: configuration.seed &+ UInt64(round))
            for (index, id) in clientIDs.enumerated() { local[id] = outcome.clients[index] }
            upload = outcome.uploadBytes
            full = outcome.fullBytes
            compression.append(outcome.compressionSeconds)
            misalignment.append(outcome.misalignment)
            let loss = losses.reduce(0, +) / Double(max(1, losses.count))
            trainLoss.append(loss)
            onEvent(.step(completed: round, loss: loss, seconds: Double(DispatchTime.now().uptimeNanoseconds - roundStart) / 1e9))
        }
        let trainSeconds = Double(DispatchTime.now().uptimeNanoseconds - trainStart) / 1e9
        guard let evaluated = clientIDs.first else { throw ProtocolError("no client has usable data") }
        load(local[evaluated] ?? pretrained)
        try model.freeze()
        onEvent(.phase("evaluating \(evaluated)'s rebuilt model", total: 0))
        let after = try prepared.evaluate(CentralizedScorer(part: part))
        notes.append("evaluated: \(evaluated)'s simulated global model after the last round (every client keeps its own)")
        notes.append("centroids: k = max(1, round(\(centroids.ratio) x rows)) per matrix with 2+ dimensions, \(centroids.iterations) Lloyd iterations; 1-D tensors \(centroids.sendVectors ? "sent in full and averaged" : "kept local")")
        var results = SimulationResults(
            mode: "kmeans-centroids", clients: configuration.clients, steps: trainLoss.count, model: configuration.model,
            task: prepared.task.rawValue, plan: "every client fine-tunes all \(model.layerCount) blocks", trainLoss: trainLoss,
            evalBefore: before, evalAfter: after, centralized: nil,
            bytes: ["centroids": upload * trainLoss.count * clientIDs.count, "global_centroids": upload * trainLoss.count * clientIDs.count],
            messages: ["centroids": trainLoss.count * clientIDs.count, "global_centroids": trainLoss.count * clientIDs.count],
            secondsPerStep: ["round": trainSeconds / Double(max(1, trainLoss.count))],
            timings: ["training": trainSeconds, "kmeans": compression.reduce(0, +) * Double(clientIDs.count)],
            examplesPerClient: prepared.examplesPerClient, evaluationExamples: prepared.evaluationCount, failures: prepared.failures,
            notes: notes, configuration: configuration, seconds: Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9)
        results.centroids = CentroidResults(ratio: centroids.ratio, alignment: centroids.alignment.rawValue, sendVectors: centroids.sendVectors,
                                            bytesPerRoundPerClient: ["upload": upload, "download": upload, "full_model": full],
                                            compressionSeconds: compression, misalignment: misalignment)
        return results
    }
}
