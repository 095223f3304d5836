import Foundation

/// A model together with the tokenizer its authors ship: what `silo generate`, `tokenize` and `score`
/// load from a name (`smollm2-135m`), a `.gguf` file or a Hugging Face folder.
public struct PretrainedModel {
    public let model: any LanguageModel
    public let tokenizer: Tokenizer
    /// Where it was loaded from.
    public let location: URL

    /// Loads the model and its tokenizer (from the GGUF metadata, or `tokenizer.json` +
    /// `tokenizer_config.json` beside `config.json`).
    /// - Throws: ``ModelError`` naming the file when the model, its tokenizer or the name is unknown.
    public static func load(_ nameOrPath: String, store: ModelStore = ModelStore()) throws -> PretrainedModel {
        let url = try store.resolve(nameOrPath)
        let model = try Checkpoint.load(url)
        let tokenizer: Tokenizer
        if url.pathExtension.lowercased() == "gguf" {
            tokenizer = try Tokenizer(ggufFile: GGUFFile(contentsOf: url))
        } else {
            tokenizer = try Tokenizer(directory: url)
        }
        return PretrainedModel(model: model, tokenizer: tokenizer, location: url)
    }

    /// Token ids of `text` with the tokenizer's special-token rule (BOS where the model expects it),
    /// as Hugging Face's `tokenizer(text)`.
    public func encodeWithSpecialTokens(_ text: String) -> [Int32] {
        tokenizer.encode(text, addSpecialTokens: true).map { Int32($0) }
    }

    /// Σ log p(token_i | tokens_<i) over positions 1..n-1 of `ids` (Float64 accumulation).
    /// - Throws: ``ModelError`` if fewer than two ids are given.
    public func sumLogProbability(of ids: [Int32]) throws -> Double {
        guard ids.count >= 2 else {
            throw ModelError(.invalidConfiguration, "score: needs at least two tokens, got \(ids.count)")
        }
        let logits = try model.logits(ids: ids, batch: 1, time: ids.count)
        let logProbabilities = try logits.logSoftmax(axis: -1).toArray()
        let vocabulary = model.vocabularySize
        var total = 0.0
        for position in 1..<ids.count {
            total += Double(logProbabilities[(position - 1) * vocabulary + Int(ids[position])])
        }
        return total
    }
}
