import XCTest
import SiloCompression
import SiloModels
import SiloSplitTestSupport
import SiloTensor
@testable import SiloFederation

/// Split learning against centralized training on a tiny Llama (V 40, C 16, 5 blocks, 4 heads / 2 KV
/// heads), every payload sealed by the real sessions.
final class SplitTrainingTests: XCTestCase {
    static let configuration = TinyLlama.configuration
    static let adapters = TinyLlama.adapters

    static func model(stages: Set<ModelStage>? = nil) throws -> LlamaModel { try TinyLlama.model(stages: stages) }

    static func batch(seed: UInt64, time: Int, padding: Int = 0, labelled: Int = 3) -> TrainingBatch {
        TinyLlama.batch(seed: seed, time: time, padding: padding, labelled: labelled)
    }

    enum OptimizerKind { case adamW, sgd }

    static func optimizer(_ kind: OptimizerKind) -> ([Tensor]) throws -> any Optimizer {
        switch kind {
        case .adamW: return { try AdamW(parameters: $0, learningRate: 0.05, weightDecay: 0.01) }
        case .sgd: return { try SGD(parameters: $0, learningRate: 0.5) }
        }
    }

    /// A split run: one coordinator, M clients with their batch lists, sealed in-memory transport.
    static func split(mode: SplitMode, clientBatches: [[TrainingBatch]], rounds: Int, localSteps: Int,
                      optimizer kind: OptimizerKind, adapters: AdapterSpecification = adapters,
                      plan: SplitPlan? = nil, clientAggregation: ClientAggregation = .gradients,
                      codec: (any TensorCodec)? = nil) throws -> (records: [StepRecord], coordinator: SplitCoordinator, clients: [SplitClient]) {
        let plan = try plan ?? SplitPlan(layerCount: configuration.layerCount)
        let key = RandomKey(seed: 5)
        var clients: [SplitClient] = []
        for (index, batches) in clientBatches.enumerated() {
            var iterator = batches.makeIterator()
            let id = "client-\(index)"
            clients.append(try SplitClient(clientID: id, plan: plan, model: model(stages: plan.clientStages), adapters: adapters,
                                           key: key, optimizer: optimizer(kind), batches: {
                guard let next = iterator.next() else { throw ProtocolError("\(id): out of batches") }
                return next
            }, codec: codec))
        }
        let server = try SplitServer(plan: plan, model: model(stages: plan.serverStages), adapters: adapters, key: key,
                                     optimizer: optimizer(kind))
        let transport = try InMemoryTransport(links: clients.map { try SessionProtection.link(for: $0) })
        let coordinator = SplitCoordinator(server: server, transport: transport,
                                           schedule: SplitSchedule(mode: mode, rounds: rounds, localSteps: localSteps,
                                                                   clientAggregation: clientAggregation), codec: codec)
        return (try coordinator.run(), coordinator, clients)
    }

    static func centralized(_ batches: [TrainingBatch], optimizer kind: OptimizerKind,
                            adapters: AdapterSpecification = adapters) throws -> (losses: [Double], trainer: CentralizedTrainer) {
        let trainer = try CentralizedTrainer(model: model(), adapters: adapters, key: RandomKey(seed: 5), optimizer: optimizer(kind))
        return (try batches.map { try trainer.step($0) }, trainer)
    }

    func assertRelativelyClose(_ split: [Double], _ reference: [Double], tolerance: Double = 1e-5,
                               file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(split.count, reference.count, file: file, line: line)
        for (index, (a, b)) in zip(split, reference).enumerated() {
            XCTAssertLessThanOrEqual(abs(a - b), tolerance * max(abs(b), 1e-3), "step \(index): split \(a) vs centralized \(b)", file: file, line: line)
        }
    }

    // MARK: One client: every mode equals centralized

    func testOneClientEveryModeMatchesCentralizedLosses() throws {
        let batches = (0..<8).map { Self.batch(seed: UInt64(100 + $0), time: 6 + $0 % 3, padding: $0 % 2) }
        let reference = try Self.centralized(batches, optimizer: .adamW).losses
        // The loss must move, or the comparison proves little.
        XCTAssertGreaterThan(abs(reference.first! - reference.last!), 0.05)
        for mode in SplitMode.allCases {
            let run = try Self.split(mode: mode, clientBatches: [batches], rounds: 4, localSteps: 2, optimizer: .adamW)
            assertRelativelyClose(run.records.map(\.loss), reference)
            XCTAssertTrue(run.coordinator.failures.isEmpty, "\(mode): \(run.coordinator.failures)")
        }
    }

    func testOneClientWithPrefixTuningAndTwoBlockCutMatchesCentralized() throws {
        let adapters = AdapterSpecification(lora: LoRAConfiguration(rank: 2, alpha: 4, targetModules: ["v_proj", "down_proj"]),
                                            prefix: PrefixTuningConfiguration(length: 3))
        let batches = (0..<5).map { Self.batch(seed: UInt64(200 + $0), time: 7) }
        let reference = try Self.centralized(batches, optimizer: .adamW, adapters: adapters).losses
        let plan = try SplitPlan(layerCount: 5, inputBlocks: 2, outputBlocks: 1)
        let run = try Self.split(mode: .serial, clientBatches: [batches], rounds: 5, localSteps: 1, optimizer: .adamW,
                                 adapters: adapters, plan: plan)
        assertRelativelyClose(run.records.map(\.loss), reference)
    }

    // MARK: M clients batched equals centralized on the stacked batch

    /// Asserts that every client's and the server's trainables end where the centralized ones end.
    func assertSameTrainables(clients: [SplitClient], server: SplitServer, as trainer: CentralizedTrainer,
                              tolerance: Float = 2e-5, file: StaticString = #filePath, line: UInt = #line) throws {
        let centralValues = Dictionary(uniqueKeysWithValues: zip(trainer.part.trainableNames, trainer.part.trainableTensors))
        for part in clients.map(\.part) + [server.part] {
            for (name, tensor) in zip(part.trainableNames, part.trainableTensors) {
                let expected = try XCTUnwrap(centralValues[name], name, file: file, line: line)
                let error = zip(tensor.toArray(), expected.toArray()).map { abs($0 - $1) }.max() ?? 0
                XCTAssertLessThan(error, tolerance, name, file: file, line: line)
            }
        }
        // Client parts and the server part together cover every centralized trainable.
        let covered = Set((clients.first.map { $0.part.trainableNames } ?? []) + server.part.trainableNames)
        XCTAssertEqual(covered, Set(trainer.part.trainableNames), file: file, line: line)
    }

    func testClientBatchingEqualsCentralizedOnConcatenatedBatch() throws {
        // Three clients with different lengths and different loss-token counts, AdamW, two steps per
        // round: per-step gradient aggregation (the default) makes every client step on the gradient of
        // the stacked batch's mean loss with identical optimizer states, i.e. exactly centralized training.
        let steps = 6
        let clientBatches = (0..<3).map { client in
            (0..<steps).map { Self.batch(seed: UInt64(300 + 10 * client + $0), time: 6 + client, padding: client % 2, labelled: 2 + client) }
        }
        let stacked = (0..<steps).map { step in TrainingBatch.stacking(clientBatches.map { $0[step] }) }
        let (reference, trainer) = try Self.centralized(stacked, optimizer: .adamW)
        XCTAssertGreaterThan(abs(reference.first! - reference.last!), 0.05)
        let run = try Self.split(mode: .clientBatching, clientBatches: clientBatches, rounds: 3, localSteps: 2, optimizer: .adamW)
        XCTAssertTrue(run.coordinator.failures.isEmpty, "\(run.coordinator.failures)")
        assertRelativelyClose(run.records.map(\.loss), reference)
        try assertSameTrainables(clients: run.clients, server: run.coordinator.server, as: trainer)
        // Every step sent one combined gradient to each client.
        XCTAssertEqual(run.coordinator.transport.traffic.messages["gradient_aggregate"], 3 * steps)
        XCTAssertNil(run.coordinator.transport.traffic.messages["adapter_update"])
    }

    // MARK: Compressed step traffic (split.codec)

    func testCodecCompressesEveryStepTensorAndTrainingFollowsTheUncompressedRun() throws {
        let steps = 4
        let clientBatches = (0..<2).map { client in (0..<steps).map { Self.batch(seed: UInt64(700 + 10 * client + $0), time: 8) } }
        let plain = try Self.split(mode: .clientBatching, clientBatches: clientBatches, rounds: 2, localSteps: 2, optimizer: .adamW)
        let coded = try Self.split(mode: .clientBatching, clientBatches: clientBatches, rounds: 2, localSteps: 2, optimizer: .adamW,
                                   codec: BlockwiseQuantizationCodec(bits: 8))
        XCTAssertTrue(coded.coordinator.failures.isEmpty, "\(coded.coordinator.failures)")
        // 8-bit blockwise absmax keeps every value within half a step of 1/127 of its block's maximum:
        // the losses follow the uncompressed run closely but not exactly.
        let plainLosses = plain.records.map(\.loss), codedLosses = coded.records.map(\.loss)
        for (a, b) in zip(codedLosses, plainLosses) {
            XCTAssertEqual(a, b, accuracy: 0.02 * b)
            XCTAssertNotEqual(a, b)
        }
        let traffic = coded.coordinator.transport.traffic, plainTraffic = plain.coordinator.transport.traffic
        for kind in ["activations", "server_output", "output_gradients", "activation_gradients"] {
            let sent = try XCTUnwrap(traffic.bytes[kind]), before = try XCTUnwrap(traffic.uncompressedBytes[kind])
            // What the messages would have been uncompressed is exactly what the plain run sent.
            XCTAssertEqual(before, plainTraffic.bytes[kind], kind)
            XCTAssertGreaterThan(Double(before) / Double(sent), 2.5, "\(kind): \(before) → \(sent) bytes")
        }
        // Messages without a tensor worth compressing are unchanged, and without a codec nothing differs.
        XCTAssertEqual(traffic.bytes["step_begin"], traffic.uncompressedBytes["step_begin"])
        XCTAssertEqual(plainTraffic.bytes, plainTraffic.uncompressedBytes)
    }

    func testCompressedMessageIsRefusedByAPartyWithoutThatCodec() throws {
        let tensor = Tensor.randomNormal([2, 3, 16], standardDeviation: 1, key: RandomKey(seed: 3))
        let bytes = try WireTensor(tensor: tensor, scalars: [7]).encoded(codec: BlockwiseQuantizationCodec(bits: 8))
        XCTAssertEqual(WireTensor.uncompressedSize(of: bytes), WireTensor(tensor: tensor, scalars: [7]).encoded().count)
        let decoded = try WireTensor.decode(bytes, expectedRank: 3, what: "activations", codec: BlockwiseQuantizationCodec(bits: 8))
        XCTAssertEqual(decoded.tensor.shape, [2, 3, 16])
        XCTAssertEqual(decoded.scalars, [7])
        for (a, b) in zip(decoded.tensor.toArray(), tensor.toArray()) { XCTAssertEqual(a, b, accuracy: 0.03) }
        XCTAssertThrowsError(try WireTensor.decode(bytes, expectedRank: 3, what: "activations", codec: nil)) {
            XCTAssertTrue("\($0)".contains("configured without a codec"), "\($0)")
        }
        XCTAssertThrowsError(try WireTensor.decode(bytes, expectedRank: 3, what: "activations", codec: BlockwiseQuantizationCodec(bits: 4))) {
            XCTAssertTrue("\($0)".contains("'q8'"), "\($0)")
        }
        XCTAssertThrowsError(try WireTensor.decode(Array(bytes.dropLast(5)), expectedRank: 3, what: "activations", codec: BlockwiseQuantizationCodec(bits: 8)))
        XCTAssertThrowsError(try WireTensor.decode(bytes, expectedRank: 3, what: "activations", codec: BlockwiseQuantizationCodec(bits: 8)) { shape in
            guard shape == [2, 3, 32] else { throw ProtocolError("shape \(shape)") }
        })
    }

    func testSerialWithGradientAggregationEqualsCentralizedSequence() throws {
        // Two clients taking turns (two steps each per round): every client applies every step's gradient,
        // so the clients move as one model through the serial order of batches.
        let clientBatches = (0..<2).map { client in
            (0..<4).map { Self.batch(seed: UInt64(400 + 10 * client + $0), time: 5 + 2 * client, labelled: 2 + client) }
        }
        let sequence = Simulation.centralizedBatches(clientBatches: clientBatches,
                                                     schedule: SplitSchedule(mode: .serial, rounds: 2, localSteps: 2))
        let (reference, trainer) = try Self.centralized(sequence, optimizer: .adamW)
        let run = try Self.split(mode: .serial, clientBatches: clientBatches, rounds: 2, localSteps: 2, optimizer: .adamW)
        assertRelativelyClose(run.records.map(\.loss), reference)
        try assertSameTrainables(clients: run.clients, server: run.coordinator.server, as: trainer)
    }

    func testParameterAggregationWithSGDEqualsCentralizedOnConcatenatedBatch() throws {
        // Value aggregation (FedAvg every round): with SGD, one step per round and equal loss-token
        // counts, the average of the clients' updates is exactly the centralized update.
        let steps = 4
        let clientBatches = (0..<3).map { client in
            (0..<steps).map { Self.batch(seed: UInt64(300 + 10 * client + $0), time: 5 + client, padding: client % 2) }
        }
        let stacked = (0..<steps).map { step in TrainingBatch.stacking(clientBatches.map { $0[step] }) }
        let (reference, trainer) = try Self.centralized(stacked, optimizer: .sgd)
        XCTAssertGreaterThan(abs(reference.first! - reference.last!), 0.05)
        let run = try Self.split(mode: .clientBatching, clientBatches: clientBatches, rounds: steps, localSteps: 1,
                                 optimizer: .sgd, clientAggregation: .parameters)
        assertRelativelyClose(run.records.map(\.loss), reference)
        try assertSameTrainables(clients: run.clients, server: run.coordinator.server, as: trainer)
        XCTAssertEqual(run.coordinator.transport.traffic.messages["adapter_update"], 3 * steps)
    }

    func testParameterAggregationWithAdamDiffersFromCentralized() throws {
        // Why gradients are the default: with AdamW and unequal token counts, per-client optimizer states
        // and FedAvg of values leave the clients away from centralized training.
        let clientBatches = (0..<2).map { client in
            (0..<4).map { Self.batch(seed: UInt64(500 + 10 * client + $0), time: 6, labelled: 1 + 3 * client) }
        }
        let stacked = (0..<4).map { step in TrainingBatch.stacking(clientBatches.map { $0[step] }) }
        let (reference, _) = try Self.centralized(stacked, optimizer: .adamW)
        let run = try Self.split(mode: .clientBatching, clientBatches: clientBatches, rounds: 2, localSteps: 2,
                                 optimizer: .adamW, clientAggregation: .parameters)
        let gap = zip(run.records.map(\.loss), reference).map { abs($0 - $1) / max(abs($1), 1e-3) }.max() ?? 0
        XCTAssertGreaterThan(gap, 1e-4)
    }

    // MARK: Parties and payloads

    func testServerNeverHoldsEmbeddingOrHead() throws {
        let plan = try SplitPlan(layerCount: 5)
        XCTAssertEqual(plan.serverStages, [.block(1), .block(2), .block(3)])
        XCTAssertThrowsError(try SplitServer(plan: plan, model: Self.model(), adapters: Self.adapters, key: RandomKey(seed: 1),
                                             optimizer: Self.optimizer(.sgd))) { error in
            XCTAssertTrue("\(error)".contains("embedding or the head"), "\(error)")
        }
        XCTAssertThrowsError(try SplitPlan(layerCount: 5, inputBlocks: 0)) { XCTAssertTrue("\($0)".contains("k = 0")) }
        XCTAssertThrowsError(try SplitPlan(layerCount: 4, inputBlocks: 2, outputBlocks: 2)) { XCTAssertTrue("\($0)".contains("no block for the server")) }
        XCTAssertTrue(try SplitPlan(layerCount: 5, inputBlocks: 0, allowingUnsafeCut: true).isUnsafe)
    }

    /// Everything a client sends the server is activations (B, T, C), gradients (B, T, C) with one count,
    /// step results and adapter values: sizes leave no room for token ids or labels, and changing a
    /// client's labels leaves its activations bit for bit unchanged.
    func testClientPayloadsCarryNoTokensOrLabels() throws {
        let plan = try SplitPlan(layerCount: 5)
        func activationBytes(labelShift: Int32) throws -> [UInt8] {
            var batch = Self.batch(seed: 9, time: 6)
            batch.labels = batch.labels.map { $0 == -100 ? -100 : ($0 + labelShift) % 40 }
            let client = try SplitClient(clientID: "a", plan: plan, model: Self.model(stages: plan.clientStages), adapters: Self.adapters,
                                         key: RandomKey(seed: 5), optimizer: Self.optimizer(.sgd), batches: { batch })
            let response = try client.handle(SplitMessage(kind: .stepBegin, round: 0, step: 0))
            XCTAssertEqual(response.kind, .activations)
            let decoded = try WireTensor.decode(response.body, expectedRank: 3, what: "test")
            XCTAssertEqual(decoded.tensor.shape, [2, 6, 16])
            XCTAssertEqual(decoded.scalars, [])
            XCTAssertEqual(response.body.count, 4 + 1 + 3 * 4 + 4 + 4 * 2 * 6 * 16)
            return response.body
        }
        XCTAssertEqual(try activationBytes(labelShift: 0), try activationBytes(labelShift: 7))
    }

    func testClientWithBadDataIsDroppedAndOthersCarryOn() throws {
        let plan = try SplitPlan(layerCount: 5)
        let key = RandomKey(seed: 5)
        var clients: [SplitClient] = []
        for index in 0..<3 {
            let good = Self.batch(seed: UInt64(index), time: 6)
            clients.append(try SplitClient(clientID: "c\(index)", plan: plan, model: Self.model(stages: plan.clientStages),
                                           adapters: Self.adapters, key: key, optimizer: Self.optimizer(.sgd), batches: {
                if index == 1 { throw ProtocolError("data/c1.jsonl:3: field 'answer' is missing") }
                return good
            }))
        }
        let server = try SplitServer(plan: plan, model: Self.model(stages: plan.serverStages), adapters: Self.adapters, key: key,
                                     optimizer: Self.optimizer(.sgd))
        let transport = try InMemoryTransport(links: clients.map { try SessionProtection.link(for: $0) })
        let coordinator = SplitCoordinator(server: server, transport: transport, schedule: SplitSchedule(mode: .clientBatching, rounds: 2, localSteps: 2))
        let records = try coordinator.run()
        XCTAssertEqual(records.count, 4)
        XCTAssertEqual(coordinator.activeClients, ["c0", "c2"])
        XCTAssertEqual(coordinator.failures.map(\.clientID), ["c1"])
        XCTAssertTrue(coordinator.failures[0].error.contains("data/c1.jsonl:3"), coordinator.failures[0].error)
        XCTAssertEqual(Set(records[3].clientLosses.keys), ["c0", "c2"])
        XCTAssertGreaterThan(transport.traffic.bytes["activations"] ?? 0, 0)
    }

    func testGarbageResponseDropsOnlyThatClient() throws {
        let plan = try SplitPlan(layerCount: 5)
        let key = RandomKey(seed: 5)
        let clients = try (0..<2).map { index in
            try SplitClient(clientID: "c\(index)", plan: plan, model: Self.model(stages: plan.clientStages), adapters: Self.adapters,
                            key: key, optimizer: Self.optimizer(.sgd), batches: { Self.batch(seed: UInt64(index), time: 5) })
        }
        let server = try SplitServer(plan: plan, model: Self.model(stages: plan.serverStages), adapters: Self.adapters, key: key,
                                     optimizer: Self.optimizer(.sgd))
        let transport = try InMemoryTransport(links: clients.map { try SessionProtection.link(for: $0) })
        transport.injectResponse(Array(repeating: 0xAB, count: 64), for: "c0")
        let coordinator = SplitCoordinator(server: server, transport: transport, schedule: SplitSchedule(mode: .serial, rounds: 1, localSteps: 2))
        let records = try coordinator.run()
        XCTAssertEqual(coordinator.activeClients, ["c1"])
        XCTAssertEqual(records.count, 2)
        XCTAssertEqual(coordinator.failures.count, 1)
    }

    /// A response sealed with another client's session (a peer client replaying its own traffic into
    /// this channel) fails to open: the client is dropped with an authentication error, the rest train on.
    func testPayloadSealedForAnotherClientIsRejected() throws {
        let plan = try SplitPlan(layerCount: 5)
        let key = RandomKey(seed: 5)
        let clients = try (0..<2).map { index in
            try SplitClient(clientID: "c\(index)", plan: plan, model: Self.model(stages: plan.clientStages), adapters: Self.adapters,
                            key: key, optimizer: Self.optimizer(.sgd), batches: { Self.batch(seed: UInt64(index), time: 5) })
        }
        let links = try clients.map { try SessionProtection.link(for: $0) }
        let eavesdropped = try SessionProtection.link(for: clients[1])  // another session of client c1
        let foreign = try eavesdropped.clientSide.seal(SplitMessage(kind: .activations, round: 0, step: 0,
                                                                body: WireTensor(tensor: Tensor.zeros([2, 5, 16])).encoded()))
        let server = try SplitServer(plan: plan, model: Self.model(stages: plan.serverStages), adapters: Self.adapters, key: key,
                                     optimizer: Self.optimizer(.sgd))
        let transport = InMemoryTransport(links: links)
        transport.injectResponse(foreign, for: "c0")
        let coordinator = SplitCoordinator(server: server, transport: transport, schedule: SplitSchedule(mode: .clientBatching, rounds: 1, localSteps: 1))
        _ = try coordinator.run()
        XCTAssertEqual(coordinator.activeClients, ["c1"])
        XCTAssertEqual(coordinator.failures.map(\.clientID), ["c0"])
        XCTAssertTrue(coordinator.failures[0].error.contains("sealed for another client"), coordinator.failures[0].error)
    }
}
