import Foundation

/// What each client has spent, by mechanism: every noisy release that touched its data is recorded as
/// an ``RDPAccountant/Event`` (noise multiplier, sampling rate, count), and its ε is the RDP composition
/// of all of them converted at the ledger's δ. Codable, so a checkpoint or a results file carries it and a
/// resumed run continues from what was already spent.
///
/// Mechanisms (names are free-form; Silo uses):
/// - `dp-sgd`: example-level DP-SGD steps of local training (q = expected batch / client examples);
/// - `local-dp`: the client clipped and noised its own update before upload (q = 1, one per round);
/// - `client-dp`: client-level DP of the aggregate (DP-FedAvg; q = sampled clients / clients, one per
///   round, recorded for every client whether sampled or not).
/// Example-level and client-level guarantees protect different units (one example vs a client's whole
/// data); the ledger composes them per client as a conservative total and also reports each alone.
public struct PrivacyLedger: Codable, Sendable, Equatable {
    public struct Entry: Codable, Sendable, Equatable {
        public var mechanism: String
        public var event: RDPAccountant.Event

        public init(mechanism: String, event: RDPAccountant.Event) {
            self.mechanism = mechanism
            self.event = event
        }
    }

    /// δ of every ε the ledger reports.
    public let delta: Double
    /// ε a client may spend (nil: no limit).
    public let budget: Double?
    /// Entries by client; equal (mechanism, z, q) entries are merged by adding their counts.
    public private(set) var entries: [String: [Entry]] = [:]

    /// - Throws: ``PrivacyParameterError`` for δ outside (0, 1) or a budget that is not a positive number.
    public init(delta: Double, budget: Double? = nil) throws {
        try RDPAccountant.validate(delta: delta)
        if let budget, !(budget.isFinite && budget > 0) {
            throw PrivacyParameterError("privacy budget epsilon \(budget) must be a finite number > 0")
        }
        self.delta = delta
        self.budget = budget
    }

    /// Records `steps` releases of a sampled Gaussian mechanism for `client`.
    /// - Throws: ``PrivacyParameterError`` for invalid parameters.
    public mutating func record(client: String, mechanism: String, noiseMultiplier: Double, sampleRate: Double, steps: Int = 1) throws {
        let event = try RDPAccountant.Event(noiseMultiplier: noiseMultiplier, sampleRate: sampleRate, steps: steps)
        entries[client] = Self.merging(entries[client] ?? [], Entry(mechanism: mechanism, event: event))
    }

    static func merging(_ list: [Entry], _ entry: Entry) -> [Entry] {
        var list = list
        if let index = list.firstIndex(where: {
            $0.mechanism == entry.mechanism && $0.event.noiseMultiplier == entry.event.noiseMultiplier
                && $0.event.sampleRate == entry.event.sampleRate
        }) {
            list[index].event.steps += entry.event.steps
        } else {
            list.append(entry)
        }
        return list
    }

    /// The client's ε over everything recorded (0 when nothing was), optionally with `pending` entries
    /// added (to ask whether a release would overspend before making it).
    public func epsilon(client: String, adding pending: [Entry] = [], mechanism: String? = nil) throws -> Double {
        var list = entries[client] ?? []
        for entry in pending { list = Self.merging(list, entry) }
        if let mechanism { list = list.filter { $0.mechanism == mechanism } }
        guard !list.isEmpty else { return 0 }
        return try RDPAccountant.epsilon(rdp: RDPAccountant.rdp(list.map(\.event)), delta: delta).epsilon
    }

    /// Whether the client may still make the `pending` releases within the budget.
    public func allows(client: String, _ pending: [Entry]) throws -> Bool {
        guard let budget else { return true }
        return try epsilon(client: client, adding: pending) <= budget
    }

    /// Per client: total ε and ε of each mechanism alone.
    public func summary() throws -> [String: [String: Double]] {
        var result: [String: [String: Double]] = [:]
        for (client, list) in entries {
            var row = ["total": try epsilon(client: client)]
            for mechanism in Set(list.map(\.mechanism)) { row[mechanism] = try epsilon(client: client, mechanism: mechanism) }
            result[client] = row
        }
        return result
    }
}
