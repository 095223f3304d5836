import XCTest
import SiloModels
import SiloTensor
@testable import SiloFederation

/// Checkpoints of a split run: a run resumed from the server's checkpoint, with its clients rolled back
/// to theirs, gives exactly the losses of the uninterrupted run (every mode; LoRA dropout on, so the
/// dropout counters are part of the state).
final class SplitCheckpointTests: XCTestCase {
    private var folder: URL!

    override func setUpWithError() throws {
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("silo-checkpoint-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: folder)
    }

    static let adapters = AdapterSpecification(lora: LoRAConfiguration(rank: 2, alpha: 4, dropout: 0.1, targetModules: ["q_proj", "v_proj"]))

    /// Three clients with seekable batch lists, their checkpoints in `folder/clients`.
    func parties(_ batches: [[TrainingBatch]]) throws -> (server: SplitServer, clients: [SplitClient]) {
        let plan = try SplitPlan(layerCount: SplitTrainingTests.configuration.layerCount)
        let key = RandomKey(seed: 5)
        let clients = try batches.enumerated().map { index, list -> SplitClient in
            let cursor = Cursor()
            let client = try SplitClient(clientID: "client-\(index)", plan: plan, model: SplitTrainingTests.model(stages: plan.clientStages),
                                         adapters: Self.adapters, key: key, optimizer: SplitTrainingTests.optimizer(.adamW),
                                         batches: { defer { cursor.value += 1 }; return list[cursor.value] },
                                         seekBatches: { cursor.value = $0 })
            client.checkpointDirectory = folder.appendingPathComponent("clients")
            return client
        }
        let server = try SplitServer(plan: plan, model: SplitTrainingTests.model(stages: plan.serverStages), adapters: Self.adapters,
                                     key: key, optimizer: SplitTrainingTests.optimizer(.adamW))
        return (server, clients)
    }

    final class Cursor { var value = 0 }

    func coordinator(_ server: SplitServer, _ clients: [SplitClient], schedule: SplitSchedule) throws -> SplitCoordinator {
        SplitCoordinator(server: server, transport: try InMemoryTransport(links: clients.map { try SessionProtection.link(for: $0) }),
                         schedule: schedule)
    }

    func testResumedRunEqualsTheUninterruptedRunInEveryMode() throws {
        let batches = (0..<3).map { client in (0..<12).map { SplitTrainingTests.batch(seed: UInt64(300 + 20 * client + $0), time: 5 + $0 % 3) } }
        let checkpoint = folder.appendingPathComponent("server.safetensors")
        let cases: [(SplitMode, ClientAggregation)] = [(.clientBatching, .gradients), (.clientBatching, .parameters),
                                                       (.serial, .gradients), (.serverHierarchical, .gradients)]
        for (mode, aggregation) in cases {
            let schedule = SplitSchedule(mode: mode, rounds: 3, localSteps: 2, clientAggregation: aggregation)
            let reference = try parties(batches)
            let expected = try coordinator(reference.server, reference.clients, schedule: schedule).run().map(\.loss)

            // The same run, checkpointing every 4 steps: checkpoints change nothing.
            let first = try parties(batches)
            let checkpointed = try coordinator(first.server, first.clients, schedule: schedule)
            checkpointed.checkpointEvery = 4
            var saved: [Int] = []
            checkpointed.saveCheckpoint = { snapshot in
                try SplitCheckpoint.write(snapshot, server: first.server, configurationJSON: "{\"mode\":\"\(mode)\"}", to: checkpoint)
                saved.append(snapshot.position.step)
            }
            XCTAssertEqual(try checkpointed.run().map(\.loss), expected, "\(mode), \(aggregation)")
            XCTAssertFalse(saved.isEmpty)
            let last = try XCTUnwrap(saved.last)
            XCTAssertLessThan(last, expected.count, "\(mode): the last checkpoint must precede the end")

            // The server "dies" after its last checkpoint; a new server process resumes from it, and the
            // clients — still alive, several steps further on — roll back to their own checkpoints.
            let (server, _) = try parties(batches)
            let snapshot = try SplitCheckpoint.restore(server, from: checkpoint, configurationJSON: "{\"mode\":\"\(mode)\"}")
            XCTAssertEqual(snapshot.position.step, last)
            XCTAssertEqual(snapshot.records.count, last)
            let resumed = try coordinator(server, first.clients, schedule: schedule)
            resumed.resume(from: snapshot)
            let losses = try resumed.run().map(\.loss)
            XCTAssertEqual(losses, expected, "\(mode), \(aggregation): resumed from step \(last)")
            XCTAssertTrue(resumed.failures.isEmpty, "\(resumed.failures)")
            // Only the two newest checkpoints of each client are kept.
            let files = try FileManager.default.contentsOfDirectory(atPath: folder.appendingPathComponent("clients").path)
            XCTAssertEqual(files.filter { $0.hasPrefix("client-0-") }.count, min(2, saved.count), "\(files)")
            try FileManager.default.removeItem(at: folder.appendingPathComponent("clients"))
        }
    }

    func testBadCheckpointsAreRefusedAndChangeNothing() throws {
        let batches = (0..<2).map { client in (0..<4).map { SplitTrainingTests.batch(seed: UInt64(500 + 10 * client + $0), time: 6) } }
        let first = try parties(batches)
        let run = try coordinator(first.server, first.clients, schedule: SplitSchedule(mode: .clientBatching, rounds: 2, localSteps: 1))
        run.checkpointEvery = 1
        let url = folder.appendingPathComponent("server.safetensors")
        run.saveCheckpoint = { try SplitCheckpoint.write($0, server: first.server, configurationJSON: "{\"seed\":1,\"split\":{\"k\":1}}", to: url) }
        try run.run()

        let (server, clients) = try parties(batches)
        let before = server.part.flattenedValues().toArray()
        // Another configuration: refused, naming the key that differs.
        XCTAssertThrowsError(try SplitCheckpoint.restore(server, from: url, configurationJSON: "{\"seed\":1,\"split\":{\"k\":2}}")) { error in
            XCTAssertTrue("\(error)".contains("split.k"), "\(error)")
        }
        // A truncated file: a clear error naming it.
        let bytes = try Data(contentsOf: url)
        let truncated = folder.appendingPathComponent("truncated.safetensors")
        try bytes.prefix(bytes.count / 2).write(to: truncated)
        XCTAssertThrowsError(try SplitCheckpoint.restore(server, from: truncated, configurationJSON: "{\"seed\":1,\"split\":{\"k\":1}}")) { error in
            XCTAssertTrue("\(error)".contains("truncated.safetensors"), "\(error)")
        }
        // A client checkpoint of another step does not exist: the client says where it looked.
        XCTAssertThrowsError(try clients[0].handle(SplitMessage(kind: .restore, round: 0, step: 7))) { error in
            XCTAssertTrue("\(error)".contains("no checkpoint of step 7"), "\(error)")
        }
        XCTAssertEqual(server.part.flattenedValues().toArray(), before)
        // Without a checkpoint folder a client refuses to checkpoint.
        clients[1].checkpointDirectory = nil
        XCTAssertThrowsError(try clients[1].handle(SplitMessage(kind: .checkpoint, round: 0, step: 1))) { error in
            XCTAssertTrue("\(error)".contains("no checkpoint folder"), "\(error)")
        }
    }

    /// A rejoining client takes another's trainables and AdamW state (message `sync_state`) and then
    /// steps exactly as that client does; a malformed or misfitting state is refused and changes nothing.
    func testRejoiningClientTakesTrainablesAndOptimizerStateOrRefusesThem() throws {
        let batches = (0..<2).map { client in (0..<3).map { SplitTrainingTests.batch(seed: UInt64(700 + 10 * client + $0), time: 6) } }
        let (server, clients) = try parties(batches)
        try coordinator(server, clients, schedule: SplitSchedule(mode: .clientBatching, rounds: 2, localSteps: 1)).run()
        let state = try clients[0].handle(SplitMessage(kind: .syncRequest, round: 2, step: 2))
        XCTAssertEqual(state.kind, .syncState)
        let tensors = try WireTensorBundle.decode(state.body, what: "test")
        let expected = try XCTUnwrap(clients[0].optimizer?.state())
        XCTAssertFalse(expected.isEmpty)
        XCTAssertEqual(tensors.keys.sorted(), (["values"] + expected.keys.map { "optimizer/" + $0 }).sorted())

        let (_, fresh) = try parties(batches)
        let rejoiner = fresh[1]
        let before = rejoiner.part.flattenedValues().toArray()
        func refuses(_ bundle: [UInt8], _ text: String, line: UInt = #line) {
            XCTAssertThrowsError(try rejoiner.handle(SplitMessage(kind: .syncState, round: 2, step: 2, body: bundle)), line: line) { error in
                XCTAssertTrue("\(error)".contains(text), "\(error)", line: line)
            }
            XCTAssertEqual(rejoiner.part.flattenedValues().toArray(), before, line: line)
            XCTAssertEqual(rejoiner.optimizer?.state().isEmpty, true, line: line)
        }
        refuses(Array(state.body.dropLast(3)), "truncated")
        refuses(state.body + [0], "1 bytes after the last tensor")
        refuses(Array("SLW1".utf8) + state.body.dropFirst(4), "bad magic")
        var extra = tensors; extra["secrets"] = Tensor.zeros([1])
        refuses(WireTensorBundle.encode(extra), "unexpected tensor 'secrets'")
        var short = tensors; short["values"] = Tensor.zeros([3])
        refuses(WireTensorBundle.encode(short), "3 trainable values")
        var misfit = tensors
        let key = try XCTUnwrap(expected.keys.sorted().first { $0.hasSuffix(".exp_avg") })
        misfit["optimizer/" + key] = Tensor.zeros([1, 2])
        refuses(WireTensorBundle.encode(misfit), key)
        var nan = tensors; nan["values"] = try Tensor(shape: [rejoiner.part.trainableCount], values: Array(repeating: .nan, count: rejoiner.part.trainableCount))
        refuses(WireTensorBundle.encode(nan), "not finite")

        // Taken: the same values and optimizer state, and the next step on the same gradient is identical.
        XCTAssertEqual(try rejoiner.handle(SplitMessage(kind: .syncState, round: 2, step: 2, body: state.body)).kind, .acknowledgement)
        XCTAssertEqual(rejoiner.part.flattenedValues().toArray(), clients[0].part.flattenedValues().toArray())
        let taken = try XCTUnwrap(rejoiner.optimizer?.state())
        for (name, tensor) in expected { XCTAssertEqual(taken[name]?.toArray(), tensor.toArray(), name) }
        let gradient = WireTensor(tensor: Tensor(shape: [rejoiner.part.trainableCount], repeating: 0.01)).encoded()
        for client in [clients[0], rejoiner] {
            _ = try client.handle(SplitMessage(kind: .gradientAggregate, round: 2, step: 2, body: gradient))
        }
        XCTAssertEqual(rejoiner.part.flattenedValues().toArray(), clients[0].part.flattenedValues().toArray())
    }
}
