import SiloFederation
import SiloModels
import SiloTensor

/// The tiny Llama of the split-learning tests (V 40, C 16, 5 blocks, 4 heads / 2 KV heads, tied
/// embeddings) with random weights, shared by SiloFederationTests and SiloTransportTests so that a
/// networked run can be compared with an in-memory one on exactly the same parties.
public enum TinyLlama {
    public static let configuration = LlamaConfiguration(vocabularySize: 40, hiddenSize: 16, intermediateSize: 24, layerCount: 5,
                                                         attentionHeads: 4, keyValueHeads: 2, rmsNormEpsilon: 1e-5,
                                                         ropeTheta: 10000, tieWordEmbeddings: true)

    /// Random weights, the same for every party of a test (std 0.2, norms 1).
    public static let weights: [String: Tensor] = {
        let key = RandomKey(seed: 11)
        var tensors: [String: Tensor] = [:]
        let c = configuration.hiddenSize, f = configuration.intermediateSize, d = c / configuration.attentionHeads
        func add(_ name: String, _ shape: [Int]) { tensors[name] = Tensor.randomNormal(shape, standardDeviation: 0.2, key: key.split(name)) }
        add("model.embed_tokens.weight", [configuration.vocabularySize, c])
        tensors["model.norm.weight"] = Tensor.ones([c])
        for layer in 0..<configuration.layerCount {
            let p = "model.layers.\(layer)."
            tensors[p + "input_layernorm.weight"] = Tensor.ones([c])
            tensors[p + "post_attention_layernorm.weight"] = Tensor.ones([c])
            add(p + "self_attn.q_proj.weight", [c, c])
            add(p + "self_attn.k_proj.weight", [2 * d, c])
            add(p + "self_attn.v_proj.weight", [2 * d, c])
            add(p + "self_attn.o_proj.weight", [c, c])
            add(p + "mlp.gate_proj.weight", [f, c])
            add(p + "mlp.up_proj.weight", [f, c])
            add(p + "mlp.down_proj.weight", [c, f])
        }
        return tensors
    }()

    /// LoRA rank 2 on q and v.
    public static let adapters = AdapterSpecification(lora: LoRAConfiguration(rank: 2, alpha: 4, targetModules: ["q_proj", "v_proj"]))

    /// The model, or the stages of it one party holds.
    public static func model(stages: Set<ModelStage>? = nil) throws -> LlamaModel {
        try LlamaModel(configuration: configuration, weights: TensorDictionary(weights), stages: stages)
    }

    /// Two rows, T tokens each, exactly `labelled` labelled positions per row (3 by default, so every
    /// client has the same number of loss tokens), the rest prompt; row 1 is right-padded by `padding`
    /// positions.
    public static func batch(seed: UInt64, time: Int, padding: Int = 0, labelled: Int = 3) -> TrainingBatch {
        var generator = SeededGenerator(seed: seed)
        var ids: [Int32] = [], labels: [Int32] = []
        for row in 0..<2 {
            let length = row == 1 ? time - padding : time
            let rowIds = (0..<time).map { $0 < length ? Int32.random(in: 1..<40, using: &generator) : 0 }
            ids += rowIds
            labels += (0..<time).map { position in
                position >= length - 1 - labelled && position < length - 1 ? rowIds[position + 1] : -100
            }
        }
        return TrainingBatch(ids: ids, labels: labels, batch: 2, time: time)
    }
}
