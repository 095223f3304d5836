// Pre-tokenizers: hand-written scanners for the split regexes of the byte-level BPE families, over
// the UTF-8 bytes of a text segment. Each scanner reproduces Oniguruma's leftmost-first alternation
// (what Hugging Face `tokenizers` runs) without a regex engine, and returns the pieces as byte ranges
// ("Isolated" split behaviour: every byte of the segment lands in exactly one piece).
//
// Character classes, as Oniguruma defines them for Unicode text:
//   \p{L}  general category L (Lu Ll Lt Lm Lo)
//   \p{N}  general category N (Nd Nl No)
//   \s     the White_Space property (U+0009-000D, U+0020, U+0085, U+00A0, U+1680, U+2000-200A,
//          U+2028, U+2029, U+202F, U+205F, U+3000)
// Everything else (marks, punctuation, symbols, controls, format characters) is "other".

/// A split regex of a Hugging Face pre-tokenizer that Silo implements as a scanner.
enum SplitPattern: Equatable, Sendable {
    /// GPT-2's `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
    /// (the `ByteLevel` pre-tokenizer with `use_regex: true`; also SmolLM's second step).
    case gpt2
    /// Llama-3's `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
    /// ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`.
    case llama3
    /// Qwen2's: Llama-3's with `\p{N}` (single digits) in place of `\p{N}{1,3}`.
    case qwen2
    /// The `Digits` pre-tokenizer: runs of \p{N} isolated (each digit alone when `individual`).
    case digits(individual: Bool)
    /// `Metaspace` with `split: true`: a cut before every replacement character (MergedWithNext).
    case metaspace(replacement: Unicode.Scalar)

    static let gpt2Regex = #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#
    static let llama3Regex = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
    static let qwen2Regex = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#

    /// The scanner for a `Split` pre-tokenizer's regex, if Silo has one.
    static func forRegex(_ regex: String) -> SplitPattern? {
        switch regex {
        case gpt2Regex: return .gpt2
        case llama3Regex: return .llama3
        case qwen2Regex: return .qwen2
        case #"\p{N}"#: return .digits(individual: true)
        case #"\p{N}+"#: return .digits(individual: false)
        default: return nil
        }
    }

    /// Splits `bytes[range]` (valid UTF-8) and appends the pieces, in order, to `pieces`.
    func split(_ bytes: UnsafePointer<UInt8>, _ range: Range<Int>, into pieces: inout [Range<Int>]) {
        switch self {
        case .gpt2: Scanner.splitGPT2(bytes, range, into: &pieces)
        case .llama3: Scanner.splitLlama3(bytes, range, maxDigits: 3, into: &pieces)
        case .qwen2: Scanner.splitLlama3(bytes, range, maxDigits: 1, into: &pieces)
        case .digits(let individual): Scanner.splitDigits(bytes, range, individual: individual, into: &pieces)
        case .metaspace(let replacement): Scanner.splitBefore(bytes, range, scalar: replacement.value, into: &pieces)
        }
    }
}

/// Unicode character classes and the scanners.
enum Scanner {
    static let other: UInt8 = 0
    static let letter: UInt8 = 1
    static let number: UInt8 = 2
    static let space: UInt8 = 4

    /// The class of every scalar of the Basic Multilingual Plane, computed once (64 KiB).
    static let bmpClasses: [UInt8] = (0..<0x10000).map { classify(UInt32($0)) }

    /// The class of a scalar from its Unicode properties.
    static func classify(_ value: UInt32) -> UInt8 {
        guard let scalar = Unicode.Scalar(value) else { return other }
        let properties = scalar.properties
        if properties.isWhitespace { return space }
        switch properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
            return letter
        case .decimalNumber, .letterNumber, .otherNumber:
            return number
        default:
            return other
        }
    }

    @inline(__always)
    static func characterClass(_ value: UInt32) -> UInt8 {
        value < 0x10000 ? bmpClasses.withUnsafeBufferPointer { $0[Int(value)] } : classify(value)
    }

    /// The scalar starting at byte `i` of valid UTF-8, and its length in bytes.
    @inline(__always)
    static func scalar(_ p: UnsafePointer<UInt8>, _ i: Int) -> (value: UInt32, length: Int) {
        let b0 = UInt32(p[i])
        if b0 < 0x80 { return (b0, 1) }
        if b0 < 0xE0 { return ((b0 & 0x1F) << 6 | UInt32(p[i + 1] & 0x3F), 2) }
        if b0 < 0xF0 {
            return ((b0 & 0x0F) << 12 | UInt32(p[i + 1] & 0x3F) << 6 | UInt32(p[i + 2] & 0x3F), 3)
        }
        return ((b0 & 0x07) << 18 | UInt32(p[i + 1] & 0x3F) << 12 | UInt32(p[i + 2] & 0x3F) << 6
                | UInt32(p[i + 3] & 0x3F), 4)
    }

    /// The end of the run of scalars of class `kind` starting at byte `i`.
    @inline(__always)
    static func runEnd(_ p: UnsafePointer<UInt8>, from i: Int, to end: Int, kind: UInt8) -> Int {
        var j = i
        while j < end {
            let (value, length) = scalar(p, j)
            if characterClass(value) != kind { break }
            j += length
        }
        return j
    }

    /// The length in bytes of a contraction suffix (`s t m d` or `re ve ll`) after an apostrophe at
    /// `i - 1`, or nil. Case-insensitive matching follows Unicode simple case folding, under which
    /// `ſ` (U+017F) matches `s`.
    @inline(__always)
    static func contraction(_ p: UnsafePointer<UInt8>, _ i: Int, _ end: Int, caseInsensitive: Bool) -> Int? {
        guard i < end else { return nil }
        let fold: UInt8 = caseInsensitive ? 0x20 : 0
        let c = p[i] | (p[i] >= 0x41 && p[i] <= 0x5A ? fold : 0)
        switch c {
        case UInt8(ascii: "s"), UInt8(ascii: "t"), UInt8(ascii: "m"), UInt8(ascii: "d"):
            return 1
        case UInt8(ascii: "r"), UInt8(ascii: "v"), UInt8(ascii: "l"):
            guard i + 1 < end else { return nil }
            let d = p[i + 1] | (p[i + 1] >= 0x41 && p[i + 1] <= 0x5A ? fold : 0)
            let expected = c == UInt8(ascii: "l") ? UInt8(ascii: "l") : UInt8(ascii: "e")
            return d == expected ? 2 : nil
        case 0xC5 where caseInsensitive && i + 1 < end && p[i + 1] == 0xBF:  // ſ
            return 2
        default:
            return nil
        }
    }

    /// GPT-2: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`.
    static func splitGPT2(_ p: UnsafePointer<UInt8>, _ range: Range<Int>, into pieces: inout [Range<Int>]) {
        let end = range.upperBound
        var i = range.lowerBound
        while i < end {
            let (c, n) = scalar(p, i)
            // 's|'t|'re|'ve|'m|'ll|'d
            if c == 0x27, let length = contraction(p, i + 1, end, caseInsensitive: false) {
                pieces.append(i..<(i + 1 + length))
                i += 1 + length
                continue
            }
            // ` ?X+` for X in \p{L}, \p{N}, [^\s\p{L}\p{N}]: a space joins the run that follows it.
            if c == 0x20, i + 1 < end {
                let (d, m) = scalar(p, i + 1)
                let kind = characterClass(d)
                if kind != space {
                    let j = runEnd(p, from: i + 1 + m, to: end, kind: kind)
                    pieces.append(i..<j)
                    i = j
                    continue
                }
            }
            let kind = characterClass(c)
            if kind != space {
                let j = runEnd(p, from: i + n, to: end, kind: kind)
                pieces.append(i..<j)
                i = j
                continue
            }
            i = whitespace(p, i, n, end, into: &pieces)
        }
    }

    /// `\s+(?!\S)|\s+` at a whitespace scalar at `i` (length `n`): the whole run when it ends the
    /// text or is one scalar long, else the run without its last scalar (which then joins what
    /// follows). Returns where the next match starts.
    @inline(__always)
    static func whitespace(_ p: UnsafePointer<UInt8>, _ i: Int, _ n: Int, _ end: Int,
                           into pieces: inout [Range<Int>]) -> Int {
        var last = i
        var j = i + n
        while j < end {
            let (d, m) = scalar(p, j)
            if characterClass(d) != space { break }
            last = j
            j += m
        }
        let stop = (j == end || last == i) ? j : last
        pieces.append(i..<stop)
        return stop
    }

    /// Llama-3 (`maxDigits` 3) and Qwen2 (`maxDigits` 1):
    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,maxDigits}|
    /// ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`.
    static func splitLlama3(_ p: UnsafePointer<UInt8>, _ range: Range<Int>, maxDigits: Int,
                            into pieces: inout [Range<Int>]) {
        let end = range.upperBound
        var i = range.lowerBound
        while i < end {
            let (c, n) = scalar(p, i)
            if c == 0x27, let length = contraction(p, i + 1, end, caseInsensitive: true) {
                pieces.append(i..<(i + 1 + length))
                i += 1 + length
                continue
            }
            let kind = characterClass(c)
            // [^\r\n\p{L}\p{N}]?\p{L}+
            if kind == letter {
                let j = runEnd(p, from: i + n, to: end, kind: letter)
                pieces.append(i..<j)
                i = j
                continue
            }
            if kind != number, c != 0x0D, c != 0x0A, i + n < end {
                let (d, m) = scalar(p, i + n)
                if characterClass(d) == letter {
                    let j = runEnd(p, from: i + n + m, to: end, kind: letter)
                    pieces.append(i..<j)
                    i = j
                    continue
                }
            }
            // \p{N}{1,maxDigits}
            if kind == number {
                var j = i + n
                var count = 1
                while count < maxDigits, j < end {
                    let (d, m) = scalar(p, j)
                    if characterClass(d) != number { break }
                    j += m
                    count += 1
                }
                pieces.append(i..<j)
                i = j
                continue
            }
            // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
            var runStart = -1
            if kind == other {
                runStart = i
            } else if c == 0x20, i + 1 < end, characterClass(scalar(p, i + 1).value) == other {
                runStart = i + 1
            }
            if runStart >= 0 {
                var j = runEnd(p, from: runStart, to: end, kind: other)
                while j < end, p[j] == 0x0D || p[j] == 0x0A { j += 1 }
                pieces.append(i..<j)
                i = j
                continue
            }
            // Whitespace: `\s*[\r\n]+` ends after the run's last CR or LF, if it has one.
            var lastNewline = -1
            var j = i
            while j < end {
                let (d, m) = scalar(p, j)
                if characterClass(d) != space { break }
                if d == 0x0D || d == 0x0A { lastNewline = j }
                j += m
            }
            if lastNewline >= 0 {
                pieces.append(i..<(lastNewline + 1))
                i = lastNewline + 1
                continue
            }
            i = whitespace(p, i, n, end, into: &pieces)
        }
    }

    /// `Digits`: runs of \p{N} as pieces of their own (single scalars when `individual`), the text
    /// between them as pieces too.
    static func splitDigits(_ p: UnsafePointer<UInt8>, _ range: Range<Int>, individual: Bool,
                            into pieces: inout [Range<Int>]) {
        let end = range.upperBound
        var i = range.lowerBound
        var pending = i
        while i < end {
            let (c, n) = scalar(p, i)
            guard characterClass(c) == number else {
                i += n
                continue
            }
            if pending < i { pieces.append(pending..<i) }
            let j = individual ? i + n : runEnd(p, from: i + n, to: end, kind: number)
            pieces.append(i..<j)
            i = j
            pending = j
        }
        if pending < end { pieces.append(pending..<end) }
    }

    /// A cut before every occurrence of `scalar` (the delimiter stays at the start of its piece).
    static func splitBefore(_ p: UnsafePointer<UInt8>, _ range: Range<Int>, scalar delimiter: UInt32,
                            into pieces: inout [Range<Int>]) {
        let end = range.upperBound
        var i = range.lowerBound
        var pending = i
        while i < end {
            let (c, n) = scalar(p, i)
            if c == delimiter, i > pending {
                pieces.append(pending..<i)
                pending = i
            }
            i += n
        }
        if pending < end { pieces.append(pending..<end) }
    }
}

/// GPT-2's reversible map from bytes to printable Unicode characters (`bytes_to_unicode`): the
/// printable Latin-1 bytes `!`...`~`, `¡`...`¬`, `®`...`ÿ` map to themselves, the 68 others to
/// U+0100, U+0101, ... in byte order. Byte-level vocabularies spell every token with these.
enum ByteLevelMap {
    /// `characters[b]`: the scalar standing for byte b.
    static let characters: [Unicode.Scalar] = {
        var table = [Unicode.Scalar](repeating: "\0", count: 256)
        var next: UInt32 = 256
        for byte in 0..<256 {
            let printable = (0x21...0x7E).contains(byte) || (0xA1...0xAC).contains(byte) || (0xAE...0xFF).contains(byte)
            if printable {
                table[byte] = Unicode.Scalar(UInt8(byte))
            } else {
                table[byte] = Unicode.Scalar(next) ?? "\0"
                next += 1
            }
        }
        return table
    }()

    /// The byte a scalar stands for, or nil if the scalar is not in the map.
    static func byte(for scalar: Unicode.Scalar) -> UInt8? {
        let value = scalar.value
        if value < 256 {
            let byte = UInt8(value)
            return characters[Int(byte)] == scalar ? byte : nil
        }
        return inverse[value]
    }

    private static let inverse: [UInt32: UInt8] = {
        var table: [UInt32: UInt8] = [:]
        for (byte, scalar) in characters.enumerated() where scalar.value >= 256 { table[scalar.value] = UInt8(byte) }
        return table
    }()

    /// The byte-level spelling of raw bytes (`Ġhello` for " hello").
    static func encode<S: Sequence>(_ bytes: S) -> String where S.Element == UInt8 {
        var text = String.UnicodeScalarView()
        for byte in bytes { text.append(characters[Int(byte)]) }
        return String(text)
    }

    /// The raw bytes of a byte-level spelling, or nil if a scalar is outside the map.
    static func decode(_ text: String) -> [UInt8]? {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.unicodeScalars.count)
        for scalar in text.unicodeScalars {
            guard let byte = byte(for: scalar) else { return nil }
            bytes.append(byte)
        }
        return bytes
    }
}
