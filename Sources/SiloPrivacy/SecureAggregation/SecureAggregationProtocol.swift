// The four rounds of Bonawitz et al. 2017 as explicit client and server state machines.
//
// Composition with client-level DP: Silo uses central DP after unmasking — the server (trusted to add noise,
// but it sees only the sum) unmasks the sum and then adds N(0, (z·C)^2). For distributed noise instead, give each
// client a `perturbation` that adds N(0, sigma^2 / n) before encoding; the sum of n such noises is N(0, sigma^2).
import Crypto
import Foundation

/// Round 0 message: a client's two public keys.
public struct SecureAggregationAdvertisement: Sendable, Equatable {
    public let round: UInt64
    public let clientID: UInt32
    public let maskPublicKey: Data
    public let encryptionPublicKey: Data
}

/// Round 1 message: a client's encrypted shares, one ciphertext (AES-GCM combined form) per recipient.
public struct SecureAggregationShareMessage: Sendable, Equatable {
    public let round: UInt64
    public let clientID: UInt32
    public var ciphertexts: [UInt32: Data]
}

/// Round 2 message: a client's masked, encoded input.
public struct SecureAggregationMaskedInput: Sendable, Equatable {
    public let round: UInt64
    public let clientID: UInt32
    public let words: [UInt32]
}

/// Round 3 request from the server: who sent masked inputs (reveal their self-mask shares) and who dropped (reveal key shares).
public struct SecureAggregationUnmaskRequest: Sendable, Equatable {
    public let round: UInt64
    public let survivors: Set<UInt32>
    public let dropped: Set<UInt32>
}

/// Round 3 answer: shares of b_u for survivors, of s_u^SK for dropped clients.
public struct SecureAggregationUnmaskResponse: Sendable, Equatable {
    public let round: UInt64
    public let clientID: UInt32
    public let selfMaskShares: [UInt32: SecureAggregationShamir.Share]
    public let keyShares: [UInt32: SecureAggregationShamir.Share]
}

/// Protocol parameters shared by clients and server.
public struct SecureAggregationConfiguration: Sendable {
    public let round: UInt64
    public let threshold: Int
    public let clientCount: Int
    public let encoding: SecureAggregationEncoding
    public let vectorLength: Int

    /// - Parameters:
    ///   - threshold: t, the number of shares needed to reconstruct; the protocol's security against a
    ///     server colluding with clients assumes t > n/2 (otherwise two disjoint groups could each unmask).
    ///   - allowMinorityThreshold: accept t <= n/2 anyway (tests, honest-but-curious settings).
    /// - Throws: `.invalidConfiguration` naming the field.
    public init(round: UInt64, threshold: Int, clientCount: Int, encoding: SecureAggregationEncoding, vectorLength: Int, allowMinorityThreshold: Bool = false) throws {
        guard clientCount >= 2, clientCount <= encoding.maximumClients else {
            throw SecureAggregationError(.invalidConfiguration, "clientCount (\(clientCount)) must be in 2...encoding.maximumClients (\(encoding.maximumClients))")
        }
        guard threshold >= 1, threshold <= clientCount else {
            throw SecureAggregationError(.invalidConfiguration, "threshold (\(threshold)) must be in 1...clientCount (\(clientCount))")
        }
        guard allowMinorityThreshold || 2 * threshold > clientCount else {
            throw SecureAggregationError(.invalidConfiguration, "threshold (\(threshold)) <= clientCount/2 (\(clientCount)/2): the protocol assumes t > n/2 so that no two disjoint groups can each reconstruct a client's secrets; pass allowMinorityThreshold: true to accept")
        }
        guard vectorLength >= 0 else { throw SecureAggregationError(.invalidConfiguration, "vectorLength (\(vectorLength)) must be >= 0") }
        self.round = round; self.threshold = threshold; self.clientCount = clientCount; self.encoding = encoding; self.vectorLength = vectorLength
    }
}

func secureAggregationShareKey(_ privateKey: Curve25519.KeyAgreement.PrivateKey, _ peer: Curve25519.KeyAgreement.PublicKey, round: UInt64) throws -> SymmetricKey {
    var info = Data("silo-secagg-share".utf8)
    SecureAggregationPseudorandom.appendBigEndian(&info, round)
    return try SecureAggregationPseudorandom.seed(privateKey: privateKey, peerPublicKey: peer, info: info)
}

func secureAggregationAssociatedData(sender: UInt32, receiver: UInt32, round: UInt64) -> Data {
    var data = Data("silo-secagg-share-ad".utf8)
    SecureAggregationPseudorandom.appendBigEndian(&data, sender)
    SecureAggregationPseudorandom.appendBigEndian(&data, receiver)
    SecureAggregationPseudorandom.appendBigEndian(&data, round)
    return data
}

func secureAggregationPublicKey(_ data: Data, client: UInt32) throws -> Curve25519.KeyAgreement.PublicKey {
    do { return try Curve25519.KeyAgreement.PublicKey(rawRepresentation: data) } catch {
        throw SecureAggregationError(.malformedMessage, "client \(client) advertised a public key of \(data.count) bytes, expected 32")
    }
}

/// Adds (sign +1) or subtracts (sign -1) the PRG stream of `seed` into `words`, wrapping.
func secureAggregationApplyMask(_ words: inout [UInt32], seed: SymmetricKey, add: Bool) {
    let mask = SecureAggregationPseudorandom.words(seed: seed, count: words.count)
    if add { for i in words.indices { words[i] &+= mask[i] } } else { for i in words.indices { words[i] &-= mask[i] } }
}

/// One client of secure aggregation: advertise -> share keys -> masked input -> unmask.
public struct SecureAggregationClient: Sendable {
    public enum Stage: Sendable { case advertising, sharing, masking, unmasking, finished }
    public let clientID: UInt32
    public let configuration: SecureAggregationConfiguration
    /// Applied to the Float vector before encoding (e.g. distributed Gaussian noise N(0, sigma^2/n)); nil: none.
    public let perturbation: (@Sendable ([Float]) -> [Float])?
    public private(set) var stage: Stage = .advertising
    let maskKey = Curve25519.KeyAgreement.PrivateKey()
    let encryptionKey = Curve25519.KeyAgreement.PrivateKey()
    let selfMaskSeed = SymmetricKey(size: .bits256)
    var peers: [UInt32: SecureAggregationAdvertisement] = [:]
    var receivedShares: [UInt32: (selfMask: SecureAggregationShamir.Share, key: SecureAggregationShamir.Share)] = [:]
    var revealedSelfMask: Set<UInt32> = []
    var revealedKey: Set<UInt32> = []

    public init(clientID: UInt32, configuration: SecureAggregationConfiguration, perturbation: (@Sendable ([Float]) -> [Float])? = nil) {
        self.clientID = clientID; self.configuration = configuration; self.perturbation = perturbation
    }

    func expect(_ expected: Stage, _ step: String) throws {
        guard stage == expected else { throw SecureAggregationError(.wrongRound, "client \(clientID): \(step) called in stage \(stage), expected \(expected)") }
    }

    /// Round 0: the two public keys.
    public mutating func advertise() throws -> SecureAggregationAdvertisement {
        try expect(.advertising, "advertise")
        stage = .sharing
        return SecureAggregationAdvertisement(round: configuration.round, clientID: clientID,
            maskPublicKey: maskKey.publicKey.rawRepresentation, encryptionPublicKey: encryptionKey.publicKey.rawRepresentation)
    }

    /// Round 1: Shamir-share b_u and s_u^SK, encrypt share v for peer v under AES-GCM(c_uv), AD = sender|receiver|round.
    public mutating func shareKeys(roster: [SecureAggregationAdvertisement]) throws -> SecureAggregationShareMessage {
        try expect(.sharing, "shareKeys")
        guard roster.count >= configuration.threshold else {
            throw SecureAggregationError(.tooFewSurvivors, "cannot share keys: \(roster.count) clients advertised, threshold is \(configuration.threshold)")
        }
        for ad in roster {
            guard ad.round == configuration.round else { throw SecureAggregationError(.replayedMessage, "advertisement of client \(ad.clientID) is for round \(ad.round), this is round \(configuration.round)") }
            guard peers[ad.clientID] == nil else { throw SecureAggregationError(.duplicateMessage, "client \(ad.clientID) appears twice in the roster") }
            peers[ad.clientID] = ad
        }
        let n = configuration.clientCount
        let b = SecureAggregationShamir.split(elements: SecureAggregationShamir.elements(of: selfMaskSeed.withUnsafeBytes { Array($0) }), threshold: configuration.threshold, shareCount: n)
        let s = SecureAggregationShamir.split(elements: SecureAggregationShamir.elements(of: Array(maskKey.rawRepresentation)), threshold: configuration.threshold, shareCount: n)
        var ciphertexts: [UInt32: Data] = [:]
        for (peer, ad) in peers {
            guard Int(peer) < n else { throw SecureAggregationError(.unknownClient, "client id \(peer) is outside 0..<\(n)") }
            let key = try secureAggregationShareKey(encryptionKey, secureAggregationPublicKey(ad.encryptionPublicKey, client: peer), round: configuration.round)
            let plaintext = try JSONEncoder().encode([b[Int(peer)], s[Int(peer)]])
            let box = try AES.GCM.seal(plaintext, using: key, authenticating: secureAggregationAssociatedData(sender: clientID, receiver: peer, round: configuration.round))
            guard let combined = box.combined else { preconditionFailure("AES-GCM with the default nonce has a combined form") }
            ciphertexts[peer] = combined
        }
        stage = .masking
        return SecureAggregationShareMessage(round: configuration.round, clientID: clientID, ciphertexts: ciphertexts)
    }

    /// Round 2: decrypt the shares addressed to this client (keyed by sender) and send the masked input
    /// y_u = x_u + PRG(b_u) + sum_{v>u} PRG(s_uv) - sum_{v<u} PRG(s_uv) over the senders v.
    public mutating func maskedInput(shares inbox: [UInt32: Data], vector: [Float]) throws -> SecureAggregationMaskedInput {
        try expect(.masking, "maskedInput")
        precondition(vector.count == configuration.vectorLength, "vector length \(vector.count) != configured \(configuration.vectorLength)")
        for (sender, ciphertext) in inbox {
            guard let ad = peers[sender] else { throw SecureAggregationError(.unknownClient, "share from client \(sender), who did not advertise keys") }
            let key = try secureAggregationShareKey(encryptionKey, secureAggregationPublicKey(ad.encryptionPublicKey, client: sender), round: configuration.round)
            let plaintext: Data
            do {
                plaintext = try AES.GCM.open(AES.GCM.SealedBox(combined: ciphertext), using: key,
                    authenticating: secureAggregationAssociatedData(sender: sender, receiver: clientID, round: configuration.round))
            } catch {
                throw SecureAggregationError(.tamperedShare, "share from client \(sender) to client \(clientID) (round \(configuration.round)) failed authentication: tampered, misaddressed or from another round")
            }
            guard let pair = try? JSONDecoder().decode([SecureAggregationShamir.Share].self, from: plaintext), pair.count == 2 else {
                throw SecureAggregationError(.malformedMessage, "share from client \(sender) decrypted but does not hold two shares")
            }
            receivedShares[sender] = (pair[0], pair[1])
        }
        guard receivedShares.count >= configuration.threshold else {
            throw SecureAggregationError(.tooFewSurvivors, "cannot mask: \(receivedShares.count) clients shared keys, threshold is \(configuration.threshold)")
        }
        var words = configuration.encoding.encode(perturbation.map { $0(vector) } ?? vector)
        precondition(words.count == configuration.vectorLength, "perturbation changed the vector length")
        secureAggregationApplyMask(&words, seed: selfMaskSeed, add: true)
        for peer in receivedShares.keys where peer != clientID {
            guard let ad = peers[peer] else { continue }
            let seed = try SecureAggregationPseudorandom.seed(privateKey: maskKey, peerPublicKey: secureAggregationPublicKey(ad.maskPublicKey, client: peer),
                info: SecureAggregationPseudorandom.maskInfo(round: configuration.round, clientID, peer))
            secureAggregationApplyMask(&words, seed: seed, add: peer > clientID)
        }
        stage = .unmasking
        return SecureAggregationMaskedInput(round: configuration.round, clientID: clientID, words: words)
    }

    /// Round 3: reveal b_v shares of survivors and s_v^SK shares of dropped clients; never both for one peer.
    public mutating func unmask(_ request: SecureAggregationUnmaskRequest) throws -> SecureAggregationUnmaskResponse {
        try expect(.unmasking, "unmask")
        guard request.round == configuration.round else { throw SecureAggregationError(.replayedMessage, "unmask request for round \(request.round), this is round \(configuration.round)") }
        guard request.survivors.contains(clientID) else { throw SecureAggregationError(.wrongRound, "client \(clientID) is not listed as a survivor; it must not reveal shares") }
        let conflicts = request.survivors.intersection(request.dropped).union(request.survivors.intersection(revealedKey)).union(request.dropped.intersection(revealedSelfMask))
        guard conflicts.isEmpty else {
            throw SecureAggregationError(.conflictingReveal, "refusing to reveal both the self-mask and the key share of client(s) \(conflicts.sorted()): that would unmask an individual input")
        }
        guard request.survivors.count >= configuration.threshold else {
            throw SecureAggregationError(.tooFewSurvivors, "cannot unmask: \(request.survivors.count) of \(configuration.clientCount) clients answered, threshold is \(configuration.threshold)")
        }
        var selfMask: [UInt32: SecureAggregationShamir.Share] = [:], keys: [UInt32: SecureAggregationShamir.Share] = [:]
        for v in request.survivors { if let s = receivedShares[v] { selfMask[v] = s.selfMask } }
        for v in request.dropped { if let s = receivedShares[v] { keys[v] = s.key } }
        revealedSelfMask.formUnion(selfMask.keys); revealedKey.formUnion(keys.keys)
        stage = .finished
        return SecureAggregationUnmaskResponse(round: configuration.round, clientID: clientID, selfMaskShares: selfMask, keyShares: keys)
    }
}

/// The server of secure aggregation: it learns the sum of the survivors' inputs and nothing else.
public struct SecureAggregationServer: Sendable {
    public enum Stage: Sendable { case advertising, sharing, collecting, unmasking, finished }
    public let configuration: SecureAggregationConfiguration
    public private(set) var stage: Stage = .advertising
    var advertisements: [UInt32: SecureAggregationAdvertisement] = [:]
    var shareMessages: [UInt32: SecureAggregationShareMessage] = [:]
    var inputs: [UInt32: [UInt32]] = [:]
    var request: SecureAggregationUnmaskRequest?
    var responses: [UInt32: SecureAggregationUnmaskResponse] = [:]

    public init(configuration: SecureAggregationConfiguration) { self.configuration = configuration }

    func check(_ expected: Stage, round: UInt64, client: UInt32, what: String) throws {
        guard round == configuration.round else { throw SecureAggregationError(.replayedMessage, "\(what) from client \(client) is for round \(round), this is round \(configuration.round)") }
        guard stage == expected else { throw SecureAggregationError(.wrongRound, "\(what) from client \(client) arrived in stage \(stage), expected \(expected)") }
        guard Int(client) < configuration.clientCount else { throw SecureAggregationError(.unknownClient, "client \(client) is outside 0..<\(configuration.clientCount)") }
    }

    /// Round 0: record an advertisement.
    public mutating func receive(_ message: SecureAggregationAdvertisement) throws {
        try check(.advertising, round: message.round, client: message.clientID, what: "advertisement")
        guard advertisements[message.clientID] == nil else { throw SecureAggregationError(.duplicateMessage, "client \(message.clientID) advertised twice") }
        advertisements[message.clientID] = message
    }
    /// Ends round 0; returns the roster to broadcast.
    public mutating func finishAdvertising() throws -> [SecureAggregationAdvertisement] {
        guard stage == .advertising else { throw SecureAggregationError(.wrongRound, "finishAdvertising in stage \(stage)") }
        try requireThreshold(advertisements.count, "advertised keys")
        stage = .sharing
        return advertisements.keys.sorted().compactMap { advertisements[$0] }
    }
    /// Round 1: record a client's encrypted shares.
    public mutating func receive(_ message: SecureAggregationShareMessage) throws {
        try check(.sharing, round: message.round, client: message.clientID, what: "share message")
        guard advertisements[message.clientID] != nil else { throw SecureAggregationError(.unknownClient, "client \(message.clientID) sent shares without advertising keys") }
        guard shareMessages[message.clientID] == nil else { throw SecureAggregationError(.duplicateMessage, "client \(message.clientID) sent shares twice") }
        shareMessages[message.clientID] = message
    }
    /// Ends round 1; returns each recipient's inbox (ciphertexts keyed by sender).
    public mutating func finishSharing() throws -> [UInt32: [UInt32: Data]] {
        guard stage == .sharing else { throw SecureAggregationError(.wrongRound, "finishSharing in stage \(stage)") }
        try requireThreshold(shareMessages.count, "shared keys")
        var inboxes: [UInt32: [UInt32: Data]] = [:]
        for (sender, message) in shareMessages { for (receiver, c) in message.ciphertexts where shareMessages[receiver] != nil { inboxes[receiver, default: [:]][sender] = c } }
        stage = .collecting
        return inboxes
    }
    /// Round 2: record a masked input.
    public mutating func receive(_ message: SecureAggregationMaskedInput) throws {
        try check(.collecting, round: message.round, client: message.clientID, what: "masked input")
        guard shareMessages[message.clientID] != nil else { throw SecureAggregationError(.unknownClient, "client \(message.clientID) sent a masked input without sharing keys") }
        guard inputs[message.clientID] == nil else { throw SecureAggregationError(.duplicateMessage, "client \(message.clientID) sent its masked input twice") }
        guard message.words.count == configuration.vectorLength else { throw SecureAggregationError(.malformedMessage, "masked input of client \(message.clientID) has \(message.words.count) words, expected \(configuration.vectorLength)") }
        inputs[message.clientID] = message.words
    }
    /// Ends round 2; returns the unmask request for the survivors.
    public mutating func finishCollection() throws -> SecureAggregationUnmaskRequest {
        guard stage == .collecting else { throw SecureAggregationError(.wrongRound, "finishCollection in stage \(stage)") }
        try requireThreshold(inputs.count, "sent masked inputs")
        let r = SecureAggregationUnmaskRequest(round: configuration.round, survivors: Set(inputs.keys), dropped: Set(shareMessages.keys).subtracting(inputs.keys))
        request = r; stage = .unmasking
        return r
    }
    /// Round 3: record an unmask response.
    public mutating func receive(_ message: SecureAggregationUnmaskResponse) throws {
        try check(.unmasking, round: message.round, client: message.clientID, what: "unmask response")
        guard inputs[message.clientID] != nil else { throw SecureAggregationError(.unknownClient, "client \(message.clientID) answered the unmask request but is not a survivor") }
        guard responses[message.clientID] == nil else { throw SecureAggregationError(.duplicateMessage, "client \(message.clientID) answered twice") }
        responses[message.clientID] = message
    }

    /// Ends round 3: reconstructs the self masks of survivors and the pairwise masks of dropped clients and
    /// returns the sum of the survivors' encoded inputs (ring words; decode with the encoding).
    public mutating func finish() throws -> [UInt32] {
        guard stage == .unmasking, let request else { throw SecureAggregationError(.wrongRound, "finish in stage \(stage)") }
        guard responses.count >= configuration.threshold else {
            throw SecureAggregationError(.tooFewSurvivors, "cannot unmask: \(responses.count) of \(configuration.clientCount) clients answered, threshold is \(configuration.threshold)")
        }
        var sum = [UInt32](repeating: 0, count: configuration.vectorLength)
        for words in inputs.values { for i in sum.indices { sum[i] &+= words[i] } }
        for u in request.survivors {
            let bytes = try reconstruct(u, \.selfMaskShares, what: "self-mask seed")
            secureAggregationApplyMask(&sum, seed: SymmetricKey(data: bytes), add: false)
        }
        for u in request.dropped {
            let bytes = try reconstruct(u, \.keyShares, what: "mask key")
            guard let key = try? Curve25519.KeyAgreement.PrivateKey(rawRepresentation: bytes) else {
                throw SecureAggregationError(.malformedMessage, "reconstructed mask key of client \(u) is not an X25519 key")
            }
            for v in request.survivors {
                guard let ad = advertisements[v] else { continue }
                let seed = try SecureAggregationPseudorandom.seed(privateKey: key, peerPublicKey: secureAggregationPublicKey(ad.maskPublicKey, client: v),
                    info: SecureAggregationPseudorandom.maskInfo(round: configuration.round, u, v))
                // v added +PRG if u > v and -PRG if u < v: remove it.
                secureAggregationApplyMask(&sum, seed: seed, add: u < v)
            }
        }
        stage = .finished
        return sum
    }

    func reconstruct(_ u: UInt32, _ field: KeyPath<SecureAggregationUnmaskResponse, [UInt32: SecureAggregationShamir.Share]>, what: String) throws -> [UInt8] {
        let shares = responses.values.compactMap { $0[keyPath: field][u] }
        guard shares.count >= configuration.threshold else {
            throw SecureAggregationError(.tooFewSurvivors, "cannot unmask: \(shares.count) of \(configuration.clientCount) clients answered with shares of client \(u)'s \(what), threshold is \(configuration.threshold)")
        }
        guard let bytes = SecureAggregationShamir.bytes(of: SecureAggregationShamir.reconstruct(Array(shares.prefix(configuration.threshold))), byteCount: 32) else {
            throw SecureAggregationError(.tamperedShare, "shares of client \(u)'s \(what) do not reconstruct a 32-byte secret")
        }
        return bytes
    }

    func requireThreshold(_ count: Int, _ what: String) throws {
        guard count >= configuration.threshold else {
            throw SecureAggregationError(.tooFewSurvivors, "cannot unmask: \(count) of \(configuration.clientCount) clients \(what), threshold is \(configuration.threshold)")
        }
    }
}
