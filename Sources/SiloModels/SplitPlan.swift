/// Where a model is cut for split learning (FL-GLM's U shape): each client keeps the *input part*
/// (embedding + the first k blocks) and the *output part* (the last j blocks + final norm + LM head); the
/// server keeps the blocks in between.
///
/// ```
/// client: embedding, block 0 ..< k  ──h_a──▶  server: block k ..< L − j  ──h_b──▶  client: block L − j ..< L, head
/// ```
///
/// k = 0 (the client keeps only the embedding) is allowed for the inversion-attack experiments and is
/// flagged ``isUnsafe``: the server then sees activations one lookup away from the tokens. A plan
/// always leaves the server at least one block and never gives it the embedding or the head, so a
/// server process loads neither (``serverStages``).
public struct SplitPlan: Codable, Sendable, Equatable, CustomStringConvertible {
    /// L: the model's blocks.
    public let layerCount: Int
    /// k: blocks after the embedding that stay on the client.
    public let inputBlocks: Int
    /// j: blocks before the head that stay on the client.
    public let outputBlocks: Int

    /// - Parameters:
    ///   - layerCount: L, the model's blocks.
    ///   - inputBlocks: k ≥ 1 (0 only with `allowingUnsafeCut`).
    ///   - outputBlocks: j ≥ 1.
    /// - Throws: ``ModelError`` `.invalidConfiguration` naming k, j and L when the cut is impossible or
    ///   k = 0 without `allowingUnsafeCut`.
    public init(layerCount: Int, inputBlocks: Int = 1, outputBlocks: Int = 1, allowingUnsafeCut: Bool = false) throws {
        guard inputBlocks >= 0, outputBlocks >= 1 else {
            throw ModelError(.invalidConfiguration, "split plan: k = \(inputBlocks) input blocks and j = \(outputBlocks) output blocks; need k ≥ 1 and j ≥ 1")
        }
        guard inputBlocks >= 1 || allowingUnsafeCut else {
            throw ModelError(.invalidConfiguration, "split plan: k = 0 leaves only the embedding on the client, so the server receives activations that are one table lookup away from the tokens (readily inverted); it is allowed only for attack experiments (allow_unsafe_cut)")
        }
        guard inputBlocks + outputBlocks < layerCount else {
            throw ModelError(.invalidConfiguration, "split plan: k = \(inputBlocks) + j = \(outputBlocks) blocks on the client leave no block for the server of a \(layerCount)-block model (need k + j < \(layerCount))")
        }
        self.layerCount = layerCount
        self.inputBlocks = inputBlocks
        self.outputBlocks = outputBlocks
    }

    private enum CodingKeys: String, CodingKey {
        case layerCount = "layer_count", inputBlocks = "k", outputBlocks = "j"
    }

    /// Decodes `layer_count`, `k`, `j` and checks them like ``init(layerCount:inputBlocks:outputBlocks:allowingUnsafeCut:)``
    /// (k = 0 is accepted: a decoded plan was checked when it was made).
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        try self.init(layerCount: try container.decode(Int.self, forKey: .layerCount),
                      inputBlocks: try container.decode(Int.self, forKey: .inputBlocks),
                      outputBlocks: try container.decode(Int.self, forKey: .outputBlocks), allowingUnsafeCut: true)
    }

    /// Whether the client keeps no block before the server (k = 0).
    public var isUnsafe: Bool { inputBlocks == 0 }

    /// Blocks on the client's input side: 0 ..< k.
    public var inputBlockRange: Range<Int> { 0..<inputBlocks }
    /// Blocks on the server: k ..< L − j.
    public var serverBlockRange: Range<Int> { inputBlocks..<(layerCount - outputBlocks) }
    /// Blocks on the client's output side: L − j ..< L.
    public var outputBlockRange: Range<Int> { (layerCount - outputBlocks)..<layerCount }

    /// The client's input part: the embedding and blocks 0 ..< k.
    public var clientInputStages: Set<ModelStage> { Set([.embedding] + inputBlockRange.map { .block($0) }) }
    /// The client's output part: blocks L − j ..< L and the head.
    public var clientOutputStages: Set<ModelStage> { Set(outputBlockRange.map { .block($0) } + [.head]) }
    /// Everything a client loads.
    public var clientStages: Set<ModelStage> { clientInputStages.union(clientOutputStages) }
    /// Everything the server loads: blocks k ..< L − j, never the embedding or the head.
    public var serverStages: Set<ModelStage> { Set(serverBlockRange.map { .block($0) }) }

    public var description: String {
        "client: embedding + blocks 0..<\(inputBlocks) | server: blocks \(inputBlocks)..<\(layerCount - outputBlocks) | client: blocks \(layerCount - outputBlocks)..<\(layerCount) + head\(isUnsafe ? " (UNSAFE: k = 0)" : "")"
    }
}
