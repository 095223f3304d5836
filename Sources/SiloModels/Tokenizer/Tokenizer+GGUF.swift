import Foundation

extension Tokenizer {
    /// GGUF token types (`tokenizer.ggml.token_type`, llama.cpp's `llama_token_type`).
    enum GGUFTokenType {
        static let normal = 1
        static let unknown = 2
        static let control = 3
        static let userDefined = 4
        static let unused = 5
        static let byte = 6
    }

    /// The `tokenizer.ggml.pre` names of the byte-level pre-tokenizers Silo implements.
    static let ggufPreTokenizers = ["gpt-2", "gpt2", "llama-bpe", "llama3", "llama-v3", "qwen2", "smollm"]

    /// Builds a tokenizer from vocabulary arrays, as a GGUF file's `tokenizer.ggml.*` metadata gives
    /// them, with llama.cpp's rules.
    ///
    /// - `model` "gpt2" (byte-level BPE: needs `merges`, ranked by position) or "llama"
    ///   (SentencePiece BPE: needs `scores`; a pair of adjacent symbols merges when their
    ///   concatenation is a normal token, highest score first; scalars without a token fall back to
    ///   `<0xXX>` byte tokens). A "llama" text gets "▁" in front when `addSpacePrefix` (default true),
    ///   and after every added token, and spaces become "▁".
    /// - `preTokenizer` (`tokenizer.ggml.pre`, byte-level only): "gpt-2" (also nil), "llama-bpe"
    ///   (Llama-3: its regex, and a word that is a token is not merged), "qwen2", or "smollm" (digits
    ///   one by one, then the GPT-2 regex).
    /// - Tokens of type unknown (2) and control (3), and the BOS/EOS/UNK/PAD tokens, are special added
    ///   tokens: matched in the text before pre-tokenization and dropped by
    ///   `decode(_:skipSpecialTokens: true)`; user-defined tokens (4) are matched but not special.
    /// - `encode(_:addSpecialTokens: true)` adds BOS when `addBOS` (default: true for "llama" and
    ///   Llama-3, false otherwise) and EOS when `addEOS` (default false).
    ///
    /// - Parameters:
    ///   - tokenTypes: one per token (GGUF `token_type`); nil treats every token as normal.
    ///   - source: names the origin (a GGUF file path) in error messages.
    /// - Throws: ``ModelError`` naming `source`: `.unsupportedTokenizer` for another model or
    ///   pre-tokenizer; `.malformedTokenizer` for missing merges or scores, arrays of different
    ///   lengths, a merge of unknown tokens or a special token id out of range.
    public convenience init(
        model: String, tokens: [String], scores: [Float]? = nil, tokenTypes: [Int]? = nil, merges: [String]? = nil,
        bosTokenID: Int? = nil, eosTokenID: Int? = nil, unknownTokenID: Int? = nil, paddingTokenID: Int? = nil,
        addBOS: Bool? = nil, addEOS: Bool? = nil, addSpacePrefix: Bool? = nil, preTokenizer: String? = nil,
        chatTemplate: String? = nil, source: String = "tokenizer arrays"
    ) throws {
        func malformed(_ message: String) -> ModelError { ModelError(.malformedTokenizer, "\(source): \(message)") }
        guard !tokens.isEmpty else { throw malformed("tokenizer.ggml.tokens is empty") }
        if let tokenTypes, tokenTypes.count != tokens.count {
            throw malformed("tokenizer.ggml.token_type has \(tokenTypes.count) entries for \(tokens.count) tokens")
        }
        for (key, id) in [("bos", bosTokenID), ("eos", eosTokenID), ("unknown", unknownTokenID), ("padding", paddingTokenID)] {
            if let id, !(0..<tokens.count).contains(id) {
                throw malformed("tokenizer.ggml.\(key)_token_id \(id) is outside the vocabulary of \(tokens.count) tokens")
            }
        }
        let vocabulary = BytePairEncoding.vocabulary(of: tokens)
        let bpe: BytePairEncoding
        var normalizer: Normalizer?
        var plan = PreTokenization()
        let decoder: TokenDecoder
        let addBOSDefault: Bool
        switch model {
        case "gpt2":
            guard let merges else { throw malformed("tokenizer.ggml.merges is missing (a \"gpt2\" tokenizer needs merges)") }
            let table: [UInt64: UInt64]
            do {
                table = try BytePairEncoding.rankMerges(BytePairEncoding.splitMerges(merges), vocabulary: vocabulary)
            } catch let error as BPEBuildError {
                throw malformed("tokenizer.ggml.merges: \(error.message)")
            }
            var ignoreMerges = false
            switch preTokenizer ?? "gpt-2" {
            case "gpt-2", "gpt2":
                plan.patterns = [.gpt2]
            case "llama-bpe", "llama3", "llama-v3":
                plan.patterns = [.llama3]
                ignoreMerges = true
            case "qwen2":
                plan.patterns = [.qwen2]
            case "smollm":
                plan.patterns = [.digits(individual: true), .gpt2]
            case let other:
                throw ModelError(.unsupportedTokenizer, "\(source): pre-tokenizer \"\(other)\" (tokenizer.ggml.pre); Silo implements \(Tokenizer.ggufPreTokenizers.joined(separator: ", "))")
            }
            plan.byteLevel = true
            addBOSDefault = ignoreMerges
            bpe = BytePairEncoding(tokens: tokens, merges: table, byteLevel: true, byteFallback: false,
                                   unknownID: nil, fuseUnknown: false, ignoreMerges: ignoreMerges, vocabulary: vocabulary)
            decoder = .byteLevel
        case "llama":
            guard let scores else { throw malformed("tokenizer.ggml.scores is missing (a \"llama\" tokenizer needs scores)") }
            guard scores.count == tokens.count else {
                throw malformed("tokenizer.ggml.scores has \(scores.count) entries for \(tokens.count) tokens")
            }
            let table = BytePairEncoding.scoreMerges(tokens: tokens, scores: scores, types: tokenTypes, vocabulary: vocabulary)
            let prefix = addSpacePrefix ?? true
            normalizer = prefix ? .sequence([.prepend("\u{2581}"), .replace(" ", "\u{2581}")]) : .replace(" ", "\u{2581}")
            addBOSDefault = true
            bpe = BytePairEncoding(tokens: tokens, merges: table, byteLevel: false, byteFallback: true,
                                   unknownID: unknownTokenID.map(Int32.init), fuseUnknown: true, ignoreMerges: false,
                                   vocabulary: vocabulary)
            decoder = .sequence([.replace("\u{2581}", " "), .byteFallback, .fuse, .strip(" ", start: prefix ? 1 : 0, stop: 0)])
        default:
            throw ModelError(.unsupportedTokenizer, "\(source): tokenizer model \"\(model)\" (tokenizer.ggml.model); Silo implements \"gpt2\" (byte-level BPE) and \"llama\" (SentencePiece BPE)")
        }

        let named = Set([bosTokenID, eosTokenID, unknownTokenID, paddingTokenID].compactMap { $0 })
        var added: [AddedToken] = []
        for (id, token) in tokens.enumerated() {
            let type = tokenTypes?[id] ?? GGUFTokenType.normal
            let special = type == GGUFTokenType.unknown || type == GGUFTokenType.control || named.contains(id)
            if special || type == GGUFTokenType.userDefined {
                added.append(AddedToken(content: token, id: Int32(id), special: special))
            }
        }
        var post = PostProcessor()
        if addBOS ?? addBOSDefault, let bosTokenID { post.prefix = [Int32(bosTokenID)] }
        if addEOS ?? false, let eosTokenID { post.suffix = [Int32(eosTokenID)] }
        self.init(model: bpe, addedTokens: added, normalizer: normalizer, preTokenization: plan, postProcessor: post,
                  decoder: decoder, bosTokenID: bosTokenID, eosTokenID: eosTokenID, paddingTokenID: paddingTokenID,
                  unknownTokenID: unknownTokenID, chatTemplate: chatTemplate)
    }

    /// The tokenizer stored in a GGUF file's metadata (`tokenizer.ggml.model`, `.tokens`, `.scores`,
    /// `.token_type`, `.merges`, `.bos_token_id`, `.eos_token_id`, `.unknown_token_id`,
    /// `.padding_token_id`, `.add_bos_token`, `.add_eos_token`, `.add_space_prefix`, `.pre`, and
    /// `tokenizer.chat_template`); see
    /// ``init(model:tokens:scores:tokenTypes:merges:bosTokenID:eosTokenID:unknownTokenID:paddingTokenID:addBOS:addEOS:addSpacePrefix:preTokenizer:chatTemplate:source:)``.
    /// - Throws: ``ModelError`` naming the file: `.malformedTokenizer` if the model or tokens are
    ///   missing or mistyped; otherwise as the array initializer.
    public convenience init(ggufFile file: GGUFFile) throws {
        let source = file.url.path
        func malformed(_ message: String) -> ModelError { ModelError(.malformedTokenizer, "\(source): \(message)") }
        guard let model = file.string("tokenizer.ggml.model") else {
            throw malformed("tokenizer.ggml.model is missing or not a string (is this a GGUF file with a vocabulary?)")
        }
        guard let tokens = file.stringArray("tokenizer.ggml.tokens") else {
            throw malformed("tokenizer.ggml.tokens is missing or not an array of strings")
        }
        func optional<T>(_ key: String, _ read: (String) -> T?) throws -> T? {
            guard file.metadata[key] != nil else { return nil }
            guard let value = read(key) else { throw malformed("\(key) has type \(file.metadata[key].map { "\($0.type)" } ?? "?")") }
            return value
        }
        try self.init(
            model: model, tokens: tokens,
            scores: try optional("tokenizer.ggml.scores", file.floatArray),
            tokenTypes: try optional("tokenizer.ggml.token_type", file.intArray),
            merges: try optional("tokenizer.ggml.merges", file.stringArray),
            bosTokenID: try optional("tokenizer.ggml.bos_token_id", file.int),
            eosTokenID: try optional("tokenizer.ggml.eos_token_id", file.int),
            unknownTokenID: try optional("tokenizer.ggml.unknown_token_id", file.int),
            paddingTokenID: try optional("tokenizer.ggml.padding_token_id", file.int),
            addBOS: try optional("tokenizer.ggml.add_bos_token", file.bool),
            addEOS: try optional("tokenizer.ggml.add_eos_token", file.bool),
            addSpacePrefix: try optional("tokenizer.ggml.add_space_prefix", file.bool),
            preTokenizer: try optional("tokenizer.ggml.pre", file.string),
            chatTemplate: try optional("tokenizer.chat_template", file.string),
            source: source)
    }
}
