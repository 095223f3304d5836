import Foundation

extension ModelError.Code {
    /// A tokenizer file that is not valid JSON, or lacks or mistypes a field.
    public static let malformedTokenizer = ModelError.Code(name: "malformed tokenizer")
    /// A tokenizer that needs a model, normalizer, pre-tokenizer, post-processor or decoder Silo does
    /// not implement (or a chat template it cannot render).
    public static let unsupportedTokenizer = ModelError.Code(name: "unsupported tokenizer")
}

extension Tokenizer {
    /// Loads a Hugging Face tokenizer: `tokenizer.json` (vocabulary, merges, added tokens and the
    /// pipeline) and optionally `tokenizer_config.json` (which token is BOS/EOS/PAD/UNK, and the chat
    /// template; a `chat_template.jinja` next to it is read when the config has none).
    ///
    /// Supported: `BPE` models (with `byte_fallback`, `unk_token`, `fuse_unk`, `ignore_merges`);
    /// normalizers `Prepend`, `Replace` (string patterns), `NFC`/`NFD`/`NFKC`/`NFKD`, `Sequence`;
    /// pre-tokenizers `ByteLevel`, `Split` with the GPT-2, Llama-3 or Qwen2 regex or `\p{N}`, `Digits`,
    /// `Metaspace`, `Sequence`; post-processors `TemplateProcessing`, `ByteLevel`, `RobertaProcessing`,
    /// `BertProcessing`, `Sequence`; decoders `ByteLevel`, `Replace`, `ByteFallback`, `Fuse`, `Strip`,
    /// `Metaspace`, `Sequence`. BOS/EOS are added on `encode` exactly when the post-processor says so.
    /// - Throws: ``ModelError`` naming the file: `.missingFile` if a file does not exist,
    ///   `.malformedTokenizer` for invalid JSON or a missing or mistyped field,
    ///   `.unsupportedTokenizer` for a model type (`WordPiece`, `Unigram`, ...) or pipeline step
    ///   Silo does not implement.
    public convenience init(tokenizerJSON: URL, tokenizerConfig: URL? = nil) throws {
        let file = HuggingFaceFile(url: tokenizerJSON)
        let document = try file.readObject()
        var config = JSONObject()
        var template: String?
        if let tokenizerConfig {
            let configFile = HuggingFaceFile(url: tokenizerConfig)
            config = try configFile.readObject()
            template = try configFile.chatTemplate(config)
            if template == nil {
                let jinja = tokenizerConfig.deletingLastPathComponent().appendingPathComponent("chat_template.jinja")
                if FileManager.default.fileExists(atPath: jinja.path) {
                    do {
                        template = try String(contentsOf: jinja, encoding: .utf8)
                    } catch {
                        throw ModelError(.missingFile, "\(jinja.path): cannot read the chat template: \(error.localizedDescription)")
                    }
                }
            }
        }
        let parts = try file.parseTokenizer(document)
        func configuredID(_ key: String) throws -> Int? {
            guard let name = try file.tokenName(config[key], key: key, in: "tokenizer_config.json") else { return nil }
            if let added = parts.added.first(where: { $0.content == name }) { return Int(added.id) }
            return parts.model.vocabulary[name].map(Int.init)
        }
        let unknownID = try configuredID("unk_token") ?? parts.model.unknownID.map(Int.init)
        self.init(model: parts.model, addedTokens: parts.added, normalizer: parts.normalizer,
                  preTokenization: parts.preTokenization, postProcessor: parts.postProcessor, decoder: parts.decoder,
                  bosTokenID: try configuredID("bos_token"), eosTokenID: try configuredID("eos_token"),
                  paddingTokenID: try configuredID("pad_token"), unknownTokenID: unknownID, chatTemplate: template)
    }

    /// Loads `tokenizer.json` from a Hugging Face model folder, with its `tokenizer_config.json` (and
    /// `chat_template.jinja`) when present.
    /// - Throws: as ``init(tokenizerJSON:tokenizerConfig:)``; `.missingFile` if the folder has no
    ///   tokenizer.json.
    public convenience init(directory: URL) throws {
        let json = directory.appendingPathComponent("tokenizer.json")
        let config = directory.appendingPathComponent("tokenizer_config.json")
        try self.init(tokenizerJSON: json,
                      tokenizerConfig: FileManager.default.fileExists(atPath: config.path) ? config : nil)
    }
}

/// What a tokenizer.json describes, parsed.
struct TokenizerParts {
    var model: BytePairEncoding
    var added: [AddedToken]
    var normalizer: Normalizer?
    var preTokenization: PreTokenization
    var postProcessor: PostProcessor
    var decoder: TokenDecoder?
}

/// A Hugging Face JSON file being read; every error names it.
struct HuggingFaceFile {
    let url: URL
    var path: String { url.path }

    func malformed(_ message: String) -> ModelError { ModelError(.malformedTokenizer, "\(path): \(message)") }
    func unsupported(_ message: String) -> ModelError { ModelError(.unsupportedTokenizer, "\(path): \(message)") }

    func readData() throws -> Data {
        guard FileManager.default.fileExists(atPath: path) else {
            throw ModelError(.missingFile, "\(path): no such file")
        }
        do {
            return try Data(contentsOf: url, options: .mappedIfSafe)
        } catch {
            throw ModelError(.missingFile, "\(path): cannot read: \(error.localizedDescription)")
        }
    }

    /// The file's top-level JSON object.
    func readObject() throws -> JSONObject {
        let data = try readData()
        let value: Any
        do {
            value = try data.withUnsafeBytes { raw in
                try JSONParser.parse(raw.bindMemory(to: UInt8.self))
            }
        } catch let error as JSONParser.Failure {
            throw malformed("not valid JSON: \(error.message) at byte offset \(error.offset)")
        }
        guard let object = value as? JSONObject else { throw malformed("the top level is not a JSON object") }
        return object
    }

    // MARK: Field access

    func object(_ value: Any?, _ what: String) throws -> JSONObject? {
        guard let value, !(value is JSONParser.Null) else { return nil }
        guard let object = value as? JSONObject else { throw malformed("\(what) is not an object") }
        return object
    }

    func string(_ object: JSONObject, _ key: String, _ what: String) throws -> String? {
        guard let value = object[key], !(value is JSONParser.Null) else { return nil }
        guard let text = value as? String else { throw malformed("\(what).\(key) is not a string") }
        return text
    }

    func bool(_ object: JSONObject, _ key: String, _ what: String) throws -> Bool? {
        guard let value = object[key], !(value is JSONParser.Null) else { return nil }
        if let flag = value as? Bool { return flag }
        throw malformed("\(what).\(key) is not true or false")
    }

    func int(_ value: Any?, _ what: String) throws -> Int? {
        guard let value, !(value is JSONParser.Null) else { return nil }
        if let number = value as? Int { return number }
        if let number = value as? Double, let exact = Int(exactly: number) { return exact }
        throw malformed("\(what) is not an integer")
    }

    func type(_ object: JSONObject, _ what: String) throws -> String {
        guard let type = try string(object, "type", what) else { throw malformed("\(what) has no \"type\"") }
        return type
    }

    /// A single-scalar string field (`replacement`, `content` of `Strip`).
    func scalar(_ object: JSONObject, _ key: String, _ what: String) throws -> Unicode.Scalar {
        guard let text = try string(object, key, what) else { throw malformed("\(what) has no \"\(key)\"") }
        guard let first = text.unicodeScalars.first, text.unicodeScalars.count == 1 else {
            throw malformed("\(what).\(key) is not a single character: \"\(text)\"")
        }
        return first
    }

    /// A `{"String": s}` pattern (a `{"Regex": r}` pattern is unsupported for these steps).
    func stringPattern(_ object: JSONObject, _ what: String) throws -> String {
        guard let pattern = try self.object(object["pattern"], "\(what).pattern") else {
            throw malformed("\(what) has no \"pattern\"")
        }
        if let text = pattern["String"] as? String { return text }
        if let regex = pattern["Regex"] as? String { throw unsupported("\(what) with a regex pattern (\(regex))") }
        throw malformed("\(what).pattern is neither {\"String\": ...} nor {\"Regex\": ...}")
    }

    /// A token named in tokenizer_config.json: a string, or an object with a "content" string.
    func tokenName(_ value: Any?, key: String, in what: String) throws -> String? {
        guard let value, !(value is JSONParser.Null) else { return nil }
        if let text = value as? String { return text }
        if let object = value as? JSONObject, let text = object["content"] as? String { return text }
        throw malformed("\(what) \"\(key)\" is neither a string nor an object with \"content\"")
    }

    /// `chat_template` of tokenizer_config.json: a string, or a list of `{name, template}` (the one
    /// named "default" is used).
    func chatTemplate(_ config: JSONObject) throws -> String? {
        guard let value = config["chat_template"], !(value is JSONParser.Null) else { return nil }
        if let text = value as? String { return text }
        if let list = value as? [JSONObject] {
            let chosen = list.first { ($0["name"] as? String) == "default" } ?? list.first
            if let text = chosen?["template"] as? String { return text }
        }
        throw malformed("\"chat_template\" is neither a string nor a list of {name, template}")
    }

    // MARK: tokenizer.json

    func parseTokenizer(_ root: JSONObject) throws -> TokenizerParts {
        guard let modelObject = try object(root["model"], "model") else { throw malformed("\"model\" is missing") }
        let added = try addedTokens(root["added_tokens"])
        let normalizer = try self.normalizer(root["normalizer"], "normalizer")
        var plan = PreTokenization()
        if let pre = try object(root["pre_tokenizer"], "pre_tokenizer") {
            try preTokenizer(pre, "pre_tokenizer", into: &plan)
        }
        let model = try bpeModel(modelObject, byteLevel: plan.byteLevel)
        let vocabulary = model.vocabulary
        func idOf(_ token: String) -> Int32? {
            added.first(where: { $0.content == token })?.id ?? vocabulary[token]
        }
        var post = PostProcessor()
        if let processor = try object(root["post_processor"], "post_processor") {
            try postProcessor(processor, "post_processor", idOf: idOf, into: &post)
        }
        let decoder = try self.decoder(root["decoder"], "decoder")
        return TokenizerParts(model: model, added: added, normalizer: normalizer, preTokenization: plan,
                              postProcessor: post, decoder: decoder)
    }

    func addedTokens(_ value: Any?) throws -> [AddedToken] {
        guard let value, !(value is JSONParser.Null) else { return [] }
        guard let list = value as? [Any] else { throw malformed("\"added_tokens\" is not a list") }
        return try list.enumerated().map { index, entry in
            let what = "added_tokens[\(index)]"
            guard let object = try object(entry, what) else { throw malformed("\(what) is null") }
            guard let id = try int(object["id"], "\(what).id"), let id32 = Int32(exactly: id), id >= 0 else {
                throw malformed("\(what) has no valid \"id\"")
            }
            guard let content = try string(object, "content", what) else { throw malformed("\(what) has no \"content\"") }
            return AddedToken(content: content, id: id32, special: try bool(object, "special", what) ?? false,
                              leftStrip: try bool(object, "lstrip", what) ?? false,
                              rightStrip: try bool(object, "rstrip", what) ?? false,
                              singleWord: try bool(object, "single_word", what) ?? false)
        }
    }

    func bpeModel(_ model: JSONObject, byteLevel: Bool) throws -> BytePairEncoding {
        let type = try string(model, "type", "model") ?? (model["merges"] != nil ? "BPE" : "unknown")
        guard type == "BPE" else {
            throw unsupported("model type \"\(type)\" (Silo implements BPE tokenizers: GPT-2, Llama, Qwen2, SmolLM)")
        }
        guard let vocab = model["vocab"] as? JSONObject else { throw malformed("model.vocab is missing or not an object") }
        var vocabulary = Vocabulary(minimumCapacity: vocab.members.count)
        var largest = -1
        for (token, value) in vocab.members {
            guard let id = value as? Int, id >= 0, let id32 = Int32(exactly: id) else {
                throw malformed("model.vocab[\"\(token)\"] is not a valid id: \(value)")
            }
            vocabulary[token] = id32
            largest = max(largest, id)
        }
        var tokens = [String](repeating: "", count: largest + 1)
        for (key, id) in vocabulary.ids { tokens[Int(id)] = key.text }

        var pairs: [(String, String)] = []
        if let list = model["merges"] as? [Any] {
            pairs.reserveCapacity(list.count)
            for (index, entry) in list.enumerated() {
                if let merge = entry as? String {
                    let parts = merge.split(separator: " ", omittingEmptySubsequences: false)
                    guard parts.count == 2 else {
                        throw malformed("model.merges[\(index)] ('\(merge)') is not two tokens separated by one space")
                    }
                    pairs.append((String(parts[0]), String(parts[1])))
                } else if let pair = entry as? [Any], pair.count == 2, let left = pair[0] as? String, let right = pair[1] as? String {
                    pairs.append((left, right))
                } else {
                    throw malformed("model.merges[\(index)] is neither \"a b\" nor [\"a\", \"b\"]")
                }
            }
        } else if let merges = model["merges"], !(merges is JSONParser.Null) {
            throw malformed("model.merges is not a list")
        }
        let merges: [UInt64: UInt64]
        do {
            merges = try BytePairEncoding.rankMerges(pairs, vocabulary: vocabulary)
        } catch let error as BPEBuildError {
            throw malformed("model.merges: \(error.message)")
        }
        for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
            if let affix = try string(model, key, "model"), !affix.isEmpty {
                throw unsupported("model.\(key) \"\(affix)\" (subword affixes are not implemented)")
            }
        }
        if let rate = model["dropout"] as? Double ?? (model["dropout"] as? Int).map(Double.init), rate > 0 {
            throw unsupported("model.dropout \(rate) (BPE dropout is a training-time augmentation)")
        }
        var unknownID: Int32?
        if let unknown = try string(model, "unk_token", "model") {
            guard let id = vocabulary[unknown] else { throw malformed("model.unk_token \"\(unknown)\" is not in the vocabulary") }
            unknownID = id
        }
        return BytePairEncoding(tokens: tokens, merges: merges, byteLevel: byteLevel,
                                byteFallback: try bool(model, "byte_fallback", "model") ?? false,
                                unknownID: unknownID, fuseUnknown: try bool(model, "fuse_unk", "model") ?? false,
                                ignoreMerges: try bool(model, "ignore_merges", "model") ?? false,
                                vocabulary: vocabulary)
    }

    func normalizer(_ value: Any?, _ what: String) throws -> Normalizer? {
        guard let object = try object(value, what) else { return nil }
        let type = try self.type(object, what)
        switch type {
        case "Sequence":
            guard let list = object["normalizers"] as? [Any] else { throw malformed("\(what).normalizers is not a list") }
            let steps = try list.enumerated().compactMap { try normalizer($1, "\(what).normalizers[\($0)]") }
            return .sequence(steps)
        case "Prepend":
            guard let prefix = try string(object, "prepend", what) else { throw malformed("\(what) has no \"prepend\"") }
            return .prepend(prefix)
        case "Replace":
            let pattern = try stringPattern(object, what)
            guard let content = try string(object, "content", what) else { throw malformed("\(what) has no \"content\"") }
            return .replace(pattern, content)
        case "NFC", "NFD", "NFKC", "NFKD":
            return .unicode(type)
        default:
            throw unsupported("\(what) of type \"\(type)\"")
        }
    }

    func preTokenizer(_ object: JSONObject, _ what: String, into plan: inout PreTokenization) throws {
        let type = try self.type(object, what)
        if plan.byteLevel {
            throw unsupported("\(what) \"\(type)\" after a ByteLevel pre-tokenizer (ByteLevel must come last)")
        }
        switch type {
        case "Sequence":
            guard let list = object["pretokenizers"] as? [Any] else { throw malformed("\(what).pretokenizers is not a list") }
            for (index, entry) in list.enumerated() {
                guard let step = try self.object(entry, "\(what).pretokenizers[\(index)]") else { continue }
                try preTokenizer(step, "\(what).pretokenizers[\(index)]", into: &plan)
            }
        case "ByteLevel":
            if try bool(object, "add_prefix_space", what) ?? true {
                guard plan.patterns.isEmpty, plan.metaspace == nil else {
                    throw unsupported("\(what): ByteLevel with add_prefix_space after another split")
                }
                plan.addPrefixSpace = true
            }
            if try bool(object, "use_regex", what) ?? true { plan.patterns.append(.gpt2) }
            plan.byteLevel = true
        case "Split":
            guard let pattern = try self.object(object["pattern"], "\(what).pattern") else {
                throw malformed("\(what) has no \"pattern\"")
            }
            guard let regex = pattern["Regex"] as? String else {
                throw unsupported("\(what) with a string pattern \(pattern)")
            }
            guard let scanner = SplitPattern.forRegex(regex) else {
                throw unsupported("\(what) regex \(regex) (Silo has scanners for the GPT-2, Llama-3 and Qwen2 regexes and \\p{N})")
            }
            let behavior = try string(object, "behavior", what) ?? "Isolated"
            guard behavior == "Isolated", try bool(object, "invert", what) != true else {
                throw unsupported("\(what) with behavior \(behavior) / invert (only Isolated, not inverted)")
            }
            plan.patterns.append(scanner)
        case "Digits":
            plan.patterns.append(.digits(individual: try bool(object, "individual_digits", what) ?? false))
        case "Metaspace":
            guard plan.patterns.isEmpty, plan.metaspace == nil, !plan.addPrefixSpace else {
                throw unsupported("\(what): Metaspace after another pre-tokenizer")
            }
            let replacement = try scalar(object, "replacement", what)
            let scheme = try prependScheme(object, what)
            plan.metaspace = (String(replacement), scheme)
            if try bool(object, "split", what) ?? true { plan.patterns.append(.metaspace(replacement: replacement)) }
        default:
            throw unsupported("\(what) of type \"\(type)\"")
        }
    }

    func prependScheme(_ object: JSONObject, _ what: String) throws -> PrependScheme {
        if let name = try string(object, "prepend_scheme", what) {
            guard let scheme = PrependScheme(rawValue: name) else { throw malformed("\(what).prepend_scheme \"\(name)\"") }
            return scheme
        }
        return try bool(object, "add_prefix_space", what) ?? true ? .always : .never
    }

    func postProcessor(_ object: JSONObject, _ what: String, idOf: (String) -> Int32?,
                       into post: inout PostProcessor) throws {
        let type = try self.type(object, what)
        switch type {
        case "ByteLevel":
            break
        case "Sequence":
            guard let list = object["processors"] as? [Any] else { throw malformed("\(what).processors is not a list") }
            for (index, entry) in list.enumerated() {
                guard let step = try self.object(entry, "\(what).processors[\(index)]") else { continue }
                try postProcessor(step, "\(what).processors[\(index)]", idOf: idOf, into: &post)
            }
        case "TemplateProcessing":
            guard let single = object["single"] as? [Any] else { throw malformed("\(what).single is not a list") }
            let specials = try self.object(object["special_tokens"], "\(what).special_tokens") ?? JSONObject()
            var seenSequence = false
            for (index, item) in single.enumerated() {
                guard let entry = item as? JSONObject else { throw malformed("\(what).single[\(index)] is not an object") }
                if entry["Sequence"] != nil {
                    seenSequence = true
                    continue
                }
                guard let special = entry["SpecialToken"] as? JSONObject, let name = special["id"] as? String else {
                    throw malformed("\(what).single[\(index)] is neither a Sequence nor a SpecialToken")
                }
                var ids: [Int32] = []
                if let declared = specials[name] as? JSONObject, let list = declared["ids"] as? [Any] {
                    for value in list {
                        guard let id = try int(value, "\(what).special_tokens[\"\(name)\"].ids"), let id32 = Int32(exactly: id) else { continue }
                        ids.append(id32)
                    }
                } else if let id = idOf(name) {
                    ids = [id]
                } else {
                    throw malformed("\(what): special token \"\(name)\" has no id")
                }
                if seenSequence { post.suffix += ids } else { post.prefix += ids }
            }
        case "RobertaProcessing", "BertProcessing":
            for (key, isPrefix) in [("cls", true), ("sep", false)] {
                guard let pair = object[key] as? [Any], pair.count == 2, let id = try int(pair[1], "\(what).\(key)[1]"),
                      let id32 = Int32(exactly: id) else {
                    throw malformed("\(what).\(key) is not a [token, id] pair")
                }
                if isPrefix { post.prefix.append(id32) } else { post.suffix.append(id32) }
            }
        default:
            throw unsupported("\(what) of type \"\(type)\"")
        }
    }

    func decoder(_ value: Any?, _ what: String) throws -> TokenDecoder? {
        guard let object = try object(value, what) else { return nil }
        let type = try self.type(object, what)
        switch type {
        case "ByteLevel":
            return .byteLevel
        case "Replace":
            let pattern = try stringPattern(object, what)
            guard let content = try string(object, "content", what) else { throw malformed("\(what) has no \"content\"") }
            return .replace(pattern, content)
        case "ByteFallback":
            return .byteFallback
        case "Fuse":
            return .fuse
        case "Strip":
            let content = try scalar(object, "content", what)
            let start = try int(object["start"], "\(what).start") ?? 0
            let stop = try int(object["stop"], "\(what).stop") ?? 0
            return .strip(content, start: start, stop: stop)
        case "Metaspace":
            return .metaspace(try scalar(object, "replacement", what), try prependScheme(object, what))
        case "Sequence":
            guard let list = object["decoders"] as? [Any] else { throw malformed("\(what).decoders is not a list") }
            return .sequence(try list.enumerated().compactMap { try decoder($1, "\(what).decoders[\($0)]") })
        default:
            throw unsupported("\(what) of type \"\(type)\"")
        }
    }
}
