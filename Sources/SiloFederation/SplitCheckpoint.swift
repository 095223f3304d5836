import Foundation
import SiloTensor

/// The server's checkpoint of a networked split run: one safetensors file, written atomically
/// (temporary file, `fsync`, `rename`), holding the server's trainables, optimizer state and replicas,
/// and in its metadata the coordinator's ``SplitCoordinator/Snapshot`` (position, steps so far, clients
/// in and out) and the run's configuration. A crash while writing leaves the previous checkpoint whole.
///
/// The sealed sessions are not in it: a resumed server runs a fresh handshake with every client (new
/// keys, sequence numbers from zero), so nothing sealed before the crash can be replayed into the
/// resumed run, and no session key ever touches the disk.
public enum SplitCheckpoint {
    static let format = "silo-split-server-checkpoint-1"

    /// Writes the checkpoint of `server` at `snapshot` to `url`.
    /// - Throws: ``TensorError`` `.io` when the file cannot be written (the old one is then unchanged).
    public static func write(_ snapshot: SplitCoordinator.Snapshot, server: SplitServer, configurationJSON: String, to url: URL) throws {
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        let (tensors, replicaExamples) = server.checkpointState()
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        let metadata = [
            "format": format,
            "configuration": configurationJSON,
            "snapshot": String(decoding: try encoder.encode(snapshot), as: UTF8.self),
            "replica_examples": String(decoding: try encoder.encode(replicaExamples), as: UTF8.self),
            "dropout_calls": server.part.dropoutCalls.map(String.init).joined(separator: ","),
        ]
        try SafeTensorsFile.write(tensors, metadata: metadata, to: url)
    }

    /// Reads the checkpoint at `url`, restores `server` from it and returns the coordinator's snapshot.
    /// - Throws: ``ProtocolError`` naming the file when it is not a server checkpoint, was written for
    ///   another configuration (the differing keys are named) or does not fit the server's model;
    ///   ``TensorError`` for a missing, truncated or corrupt file. The server is unchanged then.
    public static func restore(_ server: SplitServer, from url: URL, configurationJSON: String) throws -> SplitCoordinator.Snapshot {
        let file = try SafeTensorsFile(contentsOf: url)
        guard file.metadata["format"] == format else {
            throw ProtocolError("\(url.path): not a Silo server checkpoint (format \(file.metadata["format"] ?? "missing"), expected \(format))")
        }
        let saved = file.metadata["configuration"] ?? ""
        if saved != configurationJSON {
            throw ProtocolError("\(url.path) was written for another configuration (differs in: \(differingKeys(saved, configurationJSON))); resume with the run's configuration, or start afresh without --resume")
        }
        let decoder = JSONDecoder()
        decoder.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        let snapshot: SplitCoordinator.Snapshot
        let replicaExamples: [String: Int]
        do {
            snapshot = try decoder.decode(SplitCoordinator.Snapshot.self, from: Data((file.metadata["snapshot"] ?? "").utf8))
            replicaExamples = try decoder.decode([String: Int].self, from: Data((file.metadata["replica_examples"] ?? "").utf8))
        } catch {
            throw ProtocolError("\(url.path): unreadable checkpoint metadata: \(error)")
        }
        let dropout = (file.metadata["dropout_calls"] ?? "").split(separator: ",").compactMap { UInt64($0) }
        guard dropout.count == server.part.dropoutCalls.count else {
            throw ProtocolError("\(url.path): \(dropout.count) LoRA dropout counters for the server's \(server.part.dropoutCalls.count) LoRA layers")
        }
        try server.restore(from: file, replicaExamples: replicaExamples)
        try server.part.setDropoutCalls(dropout)
        return snapshot
    }

    /// The top-level (and one level down) keys whose values differ between two JSON objects.
    static func differingKeys(_ first: String, _ second: String) -> String {
        func object(_ text: String) -> [String: Any] {
            (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] ?? [:]
        }
        func differences(_ a: [String: Any], _ b: [String: Any], prefix: String) -> [String] {
            Set(a.keys).union(b.keys).sorted().flatMap { key -> [String] in
                let (left, right) = (a[key], b[key])
                if let left = left as? [String: Any], let right = right as? [String: Any], prefix.isEmpty {
                    return differences(left, right, prefix: key + ".")
                }
                let same = left.map { NSDictionary(dictionary: ["v": $0]) } == right.map { NSDictionary(dictionary: ["v": $0]) }
                return same ? [] : [prefix + key]
            }
        }
        let keys = differences(object(first), object(second), prefix: "")
        return keys.isEmpty ? "unknown" : keys.joined(separator: ", ")
    }
}

extension ModelPart {
    /// The trainables (`values`, flattened) and the optimizer state (`optimizer/…`) of a party: what
    /// checkpoints store and what a rejoining client takes.
    func trainableState(optimizer: (any Optimizer)?) -> [String: Tensor] {
        var tensors: [String: Tensor] = [:]
        if trainableCount > 0 { tensors["values"] = flattenedValues() }
        tensors.insert(optimizer?.state() ?? [:], under: "optimizer/")
        return tensors
    }
}

extension SafeTensorsFile {
    /// The tensors whose names start with `prefix`, keyed by the rest of the name (a checkpoint's
    /// optimizer state under `optimizer/`, a replica's under `replica/ID/optimizer/`).
    /// - Throws: ``TensorError`` for a tensor that cannot be read.
    func tensors(under prefix: String) throws -> [String: Tensor] {
        var tensors: [String: Tensor] = [:]
        for name in names where name.hasPrefix(prefix) { tensors[String(name.dropFirst(prefix.count))] = try tensor(name) }
        return tensors
    }
}

extension Dictionary where Key == String, Value == Tensor {
    /// Adds `tensors` with each name prefixed by `prefix` (the writing side of ``SafeTensorsFile/tensors(under:)``).
    mutating func insert(_ tensors: [String: Tensor], under prefix: String) {
        for (name, tensor) in tensors { self[prefix + name] = tensor }
    }

    /// The tensors whose names start with `prefix`, the prefix removed (the inverse of ``insert(_:under:)``).
    func tensors(under prefix: String) -> [String: Tensor] {
        var tensors: [String: Tensor] = [:]
        for (name, tensor) in self where name.hasPrefix(prefix) { tensors[String(name.dropFirst(prefix.count))] = tensor }
        return tensors
    }
}
