/// A BPE tokenizer of the GPT-2, Llama (SentencePiece and Llama-3), Qwen2 and SmolLM families,
/// token for token the same as Hugging Face `tokenizers` on the same tokenizer.json, and as
/// llama.cpp on the same GGUF vocabulary.
///
/// Encoding runs the Hugging Face pipeline: added tokens (`<|im_start|>`, `<s>`, ...) are cut out of
/// the raw text first; each remaining segment is normalized (Llama-2: `▁` prepended, spaces to `▁`),
/// pre-tokenized (the split regex of the family, implemented as a Unicode scanner) and merged by the
/// BPE model; the post-processor adds BOS/EOS when `addSpecialTokens` is true and the tokenizer says
/// so. Decoding reassembles bytes across tokens and replaces invalid UTF-8 as Hugging Face does.
///
/// Load one with ``init(tokenizerJSON:tokenizerConfig:)`` (Hugging Face files),
/// ``init(directory:)``, ``init(ggufFile:)`` or the array initializer
/// ``init(model:tokens:scores:tokenTypes:merges:bosTokenID:eosTokenID:unknownTokenID:paddingTokenID:addBOS:addEOS:addSpacePrefix:preTokenizer:chatTemplate:source:)``
/// (GGUF metadata). A tokenizer is immutable apart from an internal cache and safe to share across
/// threads.
///
/// Known differences from the references, all outside what the supported families use: added tokens
/// marked `normalized: true` are matched in the raw text, not the normalized one; the case-insensitive
/// contractions of Llama-3/Qwen2 fold ASCII letters and `ſ` only (Oniguruma folds all of Unicode);
/// a GGUF "gpt2" vocabulary drops a byte it has no token for before merging, as Hugging Face does,
/// where llama.cpp keeps it as a symbol that cannot merge.
public final class Tokenizer: Sendable {
    let model: BytePairEncoding
    let added: AddedTokenMatcher
    /// Added tokens by id and by content (index into `added.tokens`).
    let addedByID: [Int32: Int]
    let addedByContent: [String: Int]
    /// Contents of the special added tokens (a model token with the same string is special too).
    let specialContents: Set<String>
    let normalizer: Normalizer?
    let preTokenization: PreTokenization
    let postProcessor: PostProcessor
    let decoder: TokenDecoder?

    /// Beginning-of-sequence token, if the tokenizer names one.
    public let bosTokenID: Int?
    /// End-of-sequence token (the end of an assistant turn for chat models).
    public let eosTokenID: Int?
    public let paddingTokenID: Int?
    public let unknownTokenID: Int?
    /// The Jinja chat template as the tokenizer stores it, if any (see ``applyChatTemplate(_:addGenerationPrompt:)``).
    public let chatTemplate: String?
    /// One more than the largest token id (model vocabulary and added tokens).
    public let vocabularySize: Int

    init(model: BytePairEncoding, addedTokens: [AddedToken], normalizer: Normalizer?,
         preTokenization: PreTokenization, postProcessor: PostProcessor, decoder: TokenDecoder?,
         bosTokenID: Int?, eosTokenID: Int?, paddingTokenID: Int?, unknownTokenID: Int?, chatTemplate: String?) {
        self.model = model
        // Between added tokens with identical strings, the first one listed wins.
        self.added = AddedTokenMatcher(addedTokens)
        var byID: [Int32: Int] = [:]
        var byContent: [String: Int] = [:]
        for (index, token) in addedTokens.enumerated() {
            if byID[token.id] == nil { byID[token.id] = index }
            if byContent[token.content] == nil { byContent[token.content] = index }
        }
        self.addedByID = byID
        self.addedByContent = byContent
        self.specialContents = Set(addedTokens.filter(\.special).map(\.content))
        self.normalizer = normalizer
        self.preTokenization = preTokenization
        self.postProcessor = postProcessor
        self.decoder = decoder
        self.bosTokenID = bosTokenID
        self.eosTokenID = eosTokenID
        self.paddingTokenID = paddingTokenID
        self.unknownTokenID = unknownTokenID
        self.chatTemplate = chatTemplate
        let largestAdded = addedTokens.map { Int($0.id) }.max() ?? -1
        self.vocabularySize = max(model.tokens.count, largestAdded + 1)
    }

    // MARK: Encoding

    /// The token ids of `text`.
    /// - Parameters:
    ///   - text: any string; added tokens written in it (`<|im_start|>`) become their ids.
    ///   - addSpecialTokens: add what the post-processor adds (BOS for Llama-2; nothing for GPT-2,
    ///     SmolLM2 or Qwen2), as Hugging Face's `add_special_tokens=True`.
    public func encode(_ text: String, addSpecialTokens: Bool = true) -> [Int] {
        var ids: [Int32] = []
        if addSpecialTokens { ids.append(contentsOf: postProcessor.prefix) }
        let utf8 = Array(text.utf8)
        utf8.withUnsafeBufferPointer { bytes in
            for segment in added.segments(bytes) {
                switch segment {
                case .token(let id):
                    ids.append(id)
                case .text(let range):
                    encodeSegment(bytes, range, into: &ids)
                }
            }
        }
        if addSpecialTokens { ids.append(contentsOf: postProcessor.suffix) }
        return ids.map(Int.init)
    }

    /// Normalizes, pre-tokenizes and merges one text segment.
    private func encodeSegment(_ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>, into ids: inout [Int32]) {
        var rewritten: String?
        if let normalizer {
            rewritten = normalizer.apply(String(decoding: UnsafeBufferPointer(rebasing: bytes[range]), as: UTF8.self))
        }
        if preTokenization.metaspace != nil || preTokenization.addPrefixSpace {
            let text = rewritten ?? String(decoding: UnsafeBufferPointer(rebasing: bytes[range]), as: UTF8.self)
            rewritten = preTokenization.rewrite(text, atStart: range.lowerBound == 0) ?? text
        }
        guard let rewritten else {
            encodePieces(bytes, range, into: &ids)
            return
        }
        let copy = Array(rewritten.utf8)
        copy.withUnsafeBufferPointer { buffer in encodePieces(buffer, 0..<buffer.count, into: &ids) }
    }

    private func encodePieces(_ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>, into ids: inout [Int32]) {
        guard let base = bytes.baseAddress, !range.isEmpty else { return }
        for piece in preTokenization.split(base, range) {
            model.encode(bytes, piece, into: &ids)
        }
    }

    // MARK: Decoding

    /// The text of `ids`: bytes are reassembled across tokens; invalid UTF-8 (a sequence cut in the
    /// middle) becomes U+FFFD as in Hugging Face's `decode`. Unknown ids are skipped.
    /// - Parameter skipSpecialTokens: leave out special added tokens (`<s>`, `<|im_end|>`).
    public func decode(_ ids: [Int], skipSpecialTokens: Bool = false) -> String {
        var tokens: [String] = []
        tokens.reserveCapacity(ids.count)
        for id in ids {
            guard let id32 = Int32(exactly: id) else { continue }
            if let index = addedByID[id32] {
                let token = added.tokens[index]
                if skipSpecialTokens && token.special { continue }
                tokens.append(token.content)
            } else if id >= 0, id < model.tokens.count {
                let text = model.tokens[id]
                if skipSpecialTokens, specialContents.contains(text) { continue }
                tokens.append(text)
            }
        }
        guard let decoder else { return tokens.joined(separator: " ") }
        return decoder.decode(tokens).joined()
    }

    // MARK: Vocabulary

    /// The string of a token id (an added token's content, or the model's spelling: `Ġthe`, `▁the`).
    public func token(forID id: Int) -> String? {
        guard let id32 = Int32(exactly: id) else { return nil }
        if let index = addedByID[id32] { return added.tokens[index].content }
        return id >= 0 && id < model.tokens.count ? model.tokens[id] : nil
    }

    /// The id of a token string (added tokens first, then the model's vocabulary).
    public func id(forToken token: String) -> Int? {
        if let index = addedByContent[token] { return Int(added.tokens[index].id) }
        return model.vocabulary[token].map(Int.init)
    }

    /// Whether `id` is a special added token (dropped by `decode(_:skipSpecialTokens: true)`).
    public func isSpecialToken(_ id: Int) -> Bool {
        guard let id32 = Int32(exactly: id), let index = addedByID[id32] else { return false }
        return added.tokens[index].special
    }

    /// The ids of the special added tokens, ascending.
    public var specialTokenIDs: [Int] {
        added.tokens.filter(\.special).map { Int($0.id) }.sorted()
    }
}
