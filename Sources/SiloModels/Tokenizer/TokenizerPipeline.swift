// The stages of a Hugging Face tokenizer around the BPE model: added tokens, normalizers,
// pre-tokenizers, post-processor and decoders. Each follows the `tokenizers` crate's behaviour for
// the configurations Silo's model families use; a tokenizer.json asking for anything else is
// rejected when it is loaded, not mis-tokenized later.

import Foundation

/// A token matched in the raw text before pre-tokenization (`added_tokens` of tokenizer.json, or
/// control and user-defined tokens of a GGUF vocabulary).
struct AddedToken: Sendable, Equatable {
    var content: String
    var id: Int32
    /// Dropped by `decode(_:skipSpecialTokens: true)`.
    var special: Bool
    /// Also swallows the whitespace before / after it.
    var leftStrip = false
    var rightStrip = false
    /// Only matches when not inside a word.
    var singleWord = false
}

/// A stretch of the input: text for the model, or an added token.
enum Segment: Equatable {
    case text(Range<Int>)
    case token(Int32)
}

/// Leftmost-longest matching of added tokens over UTF-8 bytes (a byte trie), as `tokenizers`'
/// `AddedVocabulary` does with Aho-Corasick.
struct AddedTokenMatcher: Sendable {
    let tokens: [AddedToken]
    /// Trie: `children[node]` sorted by byte; `terminal[node]` the token index ending there, or -1.
    private let children: [[(byte: UInt8, node: Int32)]]
    private let terminal: [Int32]
    private let startsToken: [Bool]

    init(_ tokens: [AddedToken]) {
        self.tokens = tokens
        var children: [[(byte: UInt8, node: Int32)]] = [[]]
        var terminal: [Int32] = [-1]
        var starts = [Bool](repeating: false, count: 256)
        for (index, token) in tokens.enumerated() where !token.content.isEmpty {
            var node = 0
            for byte in token.content.utf8 {
                if let child = children[node].first(where: { $0.byte == byte }) {
                    node = Int(child.node)
                } else {
                    children.append([])
                    terminal.append(-1)
                    children[node].append((byte, Int32(children.count - 1)))
                    node = children.count - 1
                }
            }
            if terminal[node] < 0 { terminal[node] = Int32(index) }
            starts[Int(token.content.utf8.first ?? 0)] = true
        }
        self.children = children
        self.terminal = terminal
        self.startsToken = starts
    }

    /// The index and end of the longest token matching at byte `i`.
    private func longestMatch(_ p: UnsafePointer<UInt8>, _ i: Int, _ end: Int) -> (index: Int, end: Int)? {
        var node = 0
        var best: (index: Int, end: Int)?
        var j = i
        while j < end {
            guard let child = children[node].first(where: { $0.byte == p[j] }) else { break }
            node = Int(child.node)
            j += 1
            if terminal[node] >= 0 { best = (Int(terminal[node]), j) }
        }
        return best
    }

    /// Splits `bytes` into text and added tokens.
    func segments(_ bytes: UnsafeBufferPointer<UInt8>) -> [Segment] {
        guard let p = bytes.baseAddress, !bytes.isEmpty else { return [] }
        let end = bytes.count
        if tokens.isEmpty { return [.text(0..<end)] }
        var result: [Segment] = []
        var textStart = 0
        var i = 0
        while i < end {
            guard startsToken[Int(p[i])], let match = longestMatch(p, i, end) else {
                i += 1
                continue
            }
            let token = tokens[match.index]
            if token.singleWord, !isWordBoundary(p, i, match.end, end) {
                i = match.end
                continue
            }
            var start = i
            if token.leftStrip {
                while start > textStart {
                    var k = start - 1
                    while k > textStart, p[k] & 0xC0 == 0x80 { k -= 1 }
                    if Scanner.characterClass(Scanner.scalar(p, k).value) != Scanner.space { break }
                    start = k
                }
            }
            var stop = match.end
            if token.rightStrip {
                while stop < end {
                    let (value, length) = Scanner.scalar(p, stop)
                    if Scanner.characterClass(value) != Scanner.space { break }
                    stop += length
                }
            }
            if textStart < start { result.append(.text(textStart..<start)) }
            result.append(.token(token.id))
            textStart = stop
            i = stop
        }
        if textStart < end { result.append(.text(textStart..<end)) }
        return result
    }

    /// `single_word`: the match is neither preceded nor followed by a letter or digit.
    private func isWordBoundary(_ p: UnsafePointer<UInt8>, _ start: Int, _ stop: Int, _ end: Int) -> Bool {
        if start > 0 {
            var k = start - 1
            while k > 0, p[k] & 0xC0 == 0x80 { k -= 1 }
            let kind = Scanner.characterClass(Scanner.scalar(p, k).value)
            if kind == Scanner.letter || kind == Scanner.number { return false }
        }
        if stop < end {
            let kind = Scanner.characterClass(Scanner.scalar(p, stop).value)
            if kind == Scanner.letter || kind == Scanner.number { return false }
        }
        return true
    }
}

/// A text normalizer (`normalizer` of tokenizer.json), applied to each text segment.
indirect enum Normalizer: Sendable, Equatable {
    /// `Prepend`: the string before every non-empty segment (Llama-2's "▁").
    case prepend(String)
    /// `Replace` with a string pattern.
    case replace(String, String)
    case sequence([Normalizer])
    /// A Unicode normalization form: "NFC", "NFD", "NFKC" or "NFKD".
    case unicode(String)

    func apply(_ text: String) -> String {
        switch self {
        case .unicode(let form):
            switch form {
            case "NFC": return text.precomposedStringWithCanonicalMapping
            case "NFD": return text.decomposedStringWithCanonicalMapping
            case "NFKC": return text.precomposedStringWithCompatibilityMapping
            default: return text.decomposedStringWithCompatibilityMapping
            }
        case .prepend(let prefix):
            return text.isEmpty ? text : prefix + text
        case .replace(let pattern, let content):
            return replaceAll(text, pattern, content)
        case .sequence(let normalizers):
            return normalizers.reduce(text) { $1.apply($0) }
        }
    }
}

/// Every occurrence of `pattern` replaced, comparing Unicode scalars (no canonical equivalence, so a
/// space followed by a combining mark is still a space).
func replaceAll(_ text: String, _ pattern: String, _ content: String) -> String {
    let source = Array(text.utf8)
    let needle = Array(pattern.utf8)
    guard !needle.isEmpty, source.count >= needle.count else { return text }
    var output: [UInt8] = []
    output.reserveCapacity(source.count)
    var i = 0
    while i < source.count {
        if source[i] == needle[0], i + needle.count <= source.count, source[i..<(i + needle.count)].elementsEqual(needle) {
            output.append(contentsOf: content.utf8)
            i += needle.count
        } else {
            output.append(source[i])
            i += 1
        }
    }
    return String(decoding: output, as: UTF8.self)
}

/// When `Metaspace` puts its replacement character in front of a segment.
enum PrependScheme: String, Sendable {
    /// Every segment that does not already start with it.
    case always
    /// Only a segment at the very start of the input (`offsets_original().0 == 0`).
    case first
    case never
}

/// The pre-tokenizer of a tokenizer: optional text rewrites, then splits, in order.
struct PreTokenization: Sendable {
    /// `Metaspace`: spaces become `replacement`, which is prepended by `prepend`.
    var metaspace: (replacement: String, prepend: PrependScheme)?
    /// `ByteLevel` with `add_prefix_space`: a space in front of a segment not starting with one.
    var addPrefixSpace = false
    /// The splits, each applied to every piece of the previous one.
    var patterns: [SplitPattern] = []
    /// Whether the model sees bytes (a `ByteLevel` pre-tokenizer) rather than Unicode scalars.
    var byteLevel = false

    /// The rewritten segment, or nil when it is unchanged. `atStart`: the segment starts the input.
    func rewrite(_ text: String, atStart: Bool) -> String? {
        var text = text
        var changed = false
        if let metaspace {
            text = replaceAll(text, " ", metaspace.replacement)
            let prepend: Bool
            switch metaspace.prepend {
            case .always: prepend = !text.hasPrefixScalars(metaspace.replacement)
            case .first: prepend = atStart && !text.hasPrefixScalars(metaspace.replacement)
            case .never: prepend = false
            }
            if prepend { text = metaspace.replacement + text }
            changed = true
        }
        if addPrefixSpace, !text.utf8.starts(with: [0x20]) {
            text = " " + text
            changed = true
        }
        return changed ? text : nil
    }

    /// The pieces of `bytes[range]`.
    func split(_ bytes: UnsafePointer<UInt8>, _ range: Range<Int>) -> [Range<Int>] {
        var pieces = [range]
        for pattern in patterns {
            var next: [Range<Int>] = []
            next.reserveCapacity(pieces.count * 2)
            for piece in pieces { pattern.split(bytes, piece, into: &next) }
            pieces = next
        }
        return pieces
    }
}

extension String {
    /// Prefix test on UTF-8 bytes (`hasPrefix` compares grapheme clusters).
    func hasPrefixScalars(_ prefix: String) -> Bool { utf8.starts(with: prefix.utf8) }
}

/// Special tokens around an encoded sequence (`post_processor`), used when `addSpecialTokens`.
struct PostProcessor: Sendable, Equatable {
    var prefix: [Int32] = []
    var suffix: [Int32] = []
}

/// A decoder step (`decoder` of tokenizer.json): maps the list of token strings.
indirect enum TokenDecoder: Sendable, Equatable {
    /// GPT-2 characters back to bytes, all tokens fused, invalid UTF-8 replaced by U+FFFD per
    /// maximal invalid subsequence (Rust's `String::from_utf8_lossy`).
    case byteLevel
    /// `Replace` with a string pattern, in each token.
    case replace(String, String)
    /// Runs of `<0xXX>` tokens become their bytes as text; a run that is not valid UTF-8 becomes one
    /// U+FFFD per byte.
    case byteFallback
    /// All tokens into one.
    case fuse
    /// Up to `start` leading and `stop` trailing `content` scalars removed from each token.
    case strip(Unicode.Scalar, start: Int, stop: Int)
    /// `Metaspace`: the replacement becomes a space, except in the first token (unless the prepend
    /// scheme is `never`).
    case metaspace(Unicode.Scalar, PrependScheme)
    case sequence([TokenDecoder])

    func decode(_ tokens: [String]) -> [String] {
        switch self {
        case .byteLevel:
            var bytes: [UInt8] = []
            for token in tokens {
                if let raw = ByteLevelMap.decode(token) {
                    bytes.append(contentsOf: raw)
                } else {
                    bytes.append(contentsOf: token.utf8)
                }
            }
            return [String(decoding: bytes, as: UTF8.self)]
        case .replace(let pattern, let content):
            return tokens.map { replaceAll($0, pattern, content) }
        case .byteFallback:
            var result: [String] = []
            var pending: [UInt8] = []
            func flush() {
                guard !pending.isEmpty else { return }
                if let text = String(validatingUTF8Bytes: pending) {
                    result.append(text)
                } else {
                    result.append(contentsOf: repeatElement("\u{FFFD}", count: pending.count))
                }
                pending.removeAll()
            }
            for token in tokens {
                if let byte = TokenDecoder.fallbackByte(token) {
                    pending.append(byte)
                } else {
                    flush()
                    result.append(token)
                }
            }
            flush()
            return result
        case .fuse:
            return [tokens.joined()]
        case .strip(let content, let start, let stop):
            return tokens.map { token in
                let scalars = Array(token.unicodeScalars)
                var head = 0
                while head < start, head < scalars.count, scalars[head] == content { head += 1 }
                var tail = scalars.count
                var removed = 0
                while removed < stop, tail > head, scalars[tail - 1] == content {
                    tail -= 1
                    removed += 1
                }
                var view = String.UnicodeScalarView()
                view.append(contentsOf: scalars[head..<tail])
                return String(view)
            }
        case .metaspace(let replacement, let scheme):
            return tokens.enumerated().map { index, token in
                var view = String.UnicodeScalarView()
                for scalar in token.unicodeScalars {
                    if scalar == replacement {
                        if index == 0 && scheme != .never { continue }
                        view.append(" ")
                    } else {
                        view.append(scalar)
                    }
                }
                return String(view)
            }
        case .sequence(let decoders):
            return decoders.reduce(tokens) { $1.decode($0) }
        }
    }

    /// The byte of a `<0xXX>` token (six characters, two hex digits of either case).
    static func fallbackByte(_ token: String) -> UInt8? {
        let bytes = Array(token.utf8)
        guard bytes.count == 6, bytes[0] == UInt8(ascii: "<"), bytes[1] == UInt8(ascii: "0"),
              bytes[2] == UInt8(ascii: "x"), bytes[5] == UInt8(ascii: ">") else { return nil }
        func digit(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
            default: return nil
            }
        }
        guard let high = digit(bytes[3]), let low = digit(bytes[4]) else { return nil }
        return high << 4 | low
    }
}

extension String {
    /// The string of valid UTF-8 bytes, or nil if they are not valid UTF-8.
    init?(validatingUTF8Bytes bytes: [UInt8]) {
        var iterator = bytes.makeIterator()
        var decoder = UTF8()
        var scalars = String.UnicodeScalarView()
        loop: while true {
            switch decoder.decode(&iterator) {
            case .scalarValue(let scalar): scalars.append(scalar)
            case .emptyInput: break loop
            case .error: return nil
            }
        }
        self = String(scalars)
    }
}
