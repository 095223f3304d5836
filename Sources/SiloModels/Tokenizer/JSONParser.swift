/// A small JSON parser for tokenizer files: a Llama-3 tokenizer.json (128k vocabulary entries, 280k
/// merges, 9 MB) loads in a fraction of the time Foundation's JSONSerialization plus bridging casts
/// take on Linux. Values come out as native Swift values typed `Any`: ``JSONParser/Null``, `Bool`,
/// `Int` (integers that fit), `Double`, `String`, `[Any]` and ``JSONObject`` (members in file order,
/// not a `[String: Any]`: Swift's `String` equality is canonical equivalence, which would merge
/// vocabulary entries such as "é" and "e\u{301}"). Strings are decoded from UTF-8 with escapes
/// (`\uXXXX` surrogate pairs combined; a lone surrogate becomes U+FFFD).
struct JSONParser {
    /// JSON `null`.
    struct Null: Equatable {}

    struct Failure: Error {
        let offset: Int
        let message: String
    }

    private let bytes: UnsafeBufferPointer<UInt8>
    private var i = 0
    private static let maximumDepth = 512

    private init(_ bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

    /// Parses a whole document.
    /// - Throws: ``Failure`` with the byte offset of the first error.
    static func parse(_ bytes: UnsafeBufferPointer<UInt8>) throws -> Any {
        var parser = JSONParser(bytes)
        parser.skipWhitespace()
        let value = try parser.value(depth: 0)
        parser.skipWhitespace()
        guard parser.i == bytes.count else { throw parser.failure("unexpected data after the top-level value") }
        return value
    }

    private func failure(_ message: String) -> Failure {
        let found: String
        if i < bytes.count {
            let byte = bytes[i]
            found = byte >= 0x20 && byte < 0x7F ? " (found '\(Character(Unicode.Scalar(byte)))')" : " (found byte \(byte))"
        } else {
            found = " (found the end of the file)"
        }
        return Failure(offset: i, message: message + found)
    }

    @inline(__always)
    private mutating func skipWhitespace() {
        while i < bytes.count {
            switch bytes[i] {
            case 0x20, 0x0A, 0x0D, 0x09: i += 1
            default: return
            }
        }
    }

    private mutating func expect(_ literal: StaticString, _ value: Any) throws -> Any {
        let count = literal.utf8CodeUnitCount
        guard i + count <= bytes.count else { throw failure("truncated literal") }
        let matches = literal.withUTF8Buffer { expected in
            (0..<count).allSatisfy { bytes[i + $0] == expected[$0] }
        }
        guard matches else { throw failure("invalid literal") }
        i += count
        return value
    }

    private mutating func value(depth: Int) throws -> Any {
        guard depth < JSONParser.maximumDepth else { throw failure("nesting deeper than \(JSONParser.maximumDepth)") }
        guard i < bytes.count else { throw failure("expected a value") }
        switch bytes[i] {
        case UInt8(ascii: "{"): return try object(depth: depth)
        case UInt8(ascii: "["): return try array(depth: depth)
        case UInt8(ascii: "\""): return try string()
        case UInt8(ascii: "t"): return try expect("true", true)
        case UInt8(ascii: "f"): return try expect("false", false)
        case UInt8(ascii: "n"): return try expect("null", Null())
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try number()
        default: throw failure("expected a value")
        }
    }

    private mutating func object(depth: Int) throws -> JSONObject {
        i += 1
        var result = JSONObject()
        skipWhitespace()
        if i < bytes.count, bytes[i] == UInt8(ascii: "}") {
            i += 1
            return result
        }
        while true {
            skipWhitespace()
            guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") else { throw failure("expected a string key") }
            let key = try string()
            skipWhitespace()
            guard i < bytes.count, bytes[i] == UInt8(ascii: ":") else { throw failure("expected ':'") }
            i += 1
            skipWhitespace()
            result.members.append((key, try value(depth: depth + 1)))
            skipWhitespace()
            guard i < bytes.count else { throw failure("unterminated object") }
            if bytes[i] == UInt8(ascii: ",") {
                i += 1
            } else if bytes[i] == UInt8(ascii: "}") {
                i += 1
                return result
            } else {
                throw failure("expected ',' or '}'")
            }
        }
    }

    private mutating func array(depth: Int) throws -> [Any] {
        i += 1
        var result: [Any] = []
        skipWhitespace()
        if i < bytes.count, bytes[i] == UInt8(ascii: "]") {
            i += 1
            return result
        }
        while true {
            skipWhitespace()
            result.append(try value(depth: depth + 1))
            skipWhitespace()
            guard i < bytes.count else { throw failure("unterminated array") }
            if bytes[i] == UInt8(ascii: ",") {
                i += 1
            } else if bytes[i] == UInt8(ascii: "]") {
                i += 1
                return result
            } else {
                throw failure("expected ',' or ']'")
            }
        }
    }

    private mutating func string() throws -> String {
        i += 1
        let start = i
        while i < bytes.count {
            let byte = bytes[i]
            if byte == UInt8(ascii: "\"") {
                let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<i]), as: UTF8.self)
                i += 1
                return text
            }
            if byte == UInt8(ascii: "\\") { break }
            if byte < 0x20 { throw failure("control character in a string") }
            i += 1
        }
        // Escapes: decode into a buffer.
        var buffer = Array(bytes[start..<i])
        while i < bytes.count {
            let byte = bytes[i]
            if byte == UInt8(ascii: "\"") {
                i += 1
                return String(decoding: buffer, as: UTF8.self)
            }
            if byte < 0x20 { throw failure("control character in a string") }
            guard byte == UInt8(ascii: "\\") else {
                buffer.append(byte)
                i += 1
                continue
            }
            i += 1
            guard i < bytes.count else { break }
            let escape = bytes[i]
            i += 1
            switch escape {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): buffer.append(escape)
            case UInt8(ascii: "b"): buffer.append(0x08)
            case UInt8(ascii: "f"): buffer.append(0x0C)
            case UInt8(ascii: "n"): buffer.append(0x0A)
            case UInt8(ascii: "r"): buffer.append(0x0D)
            case UInt8(ascii: "t"): buffer.append(0x09)
            case UInt8(ascii: "u"):
                var value = try hex4()
                if (0xD800..<0xDC00).contains(value), i + 1 < bytes.count, bytes[i] == UInt8(ascii: "\\"),
                   bytes[i + 1] == UInt8(ascii: "u") {
                    let saved = i
                    i += 2
                    let low = try hex4()
                    if (0xDC00..<0xE000).contains(low) {
                        value = 0x10000 + ((value - 0xD800) << 10) + (low - 0xDC00)
                    } else {
                        i = saved
                    }
                }
                let scalar = Unicode.Scalar(value) ?? "\u{FFFD}"
                buffer.append(contentsOf: String(scalar).utf8)
            default:
                i -= 1
                throw failure("invalid escape")
            }
        }
        throw failure("unterminated string")
    }

    private mutating func hex4() throws -> UInt32 {
        guard i + 4 <= bytes.count else { throw failure("truncated \\u escape") }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let c = bytes[i]
            let digit: UInt8
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = c - UInt8(ascii: "A") + 10
            default: throw failure("invalid \\u escape")
            }
            value = value << 4 | UInt32(digit)
            i += 1
        }
        return value
    }

    private mutating func number() throws -> Any {
        let start = i
        var integral = true
        if bytes[i] == UInt8(ascii: "-") { i += 1 }
        while i < bytes.count {
            switch bytes[i] {
            case UInt8(ascii: "0")...UInt8(ascii: "9"):
                i += 1
            case UInt8(ascii: "."), UInt8(ascii: "e"), UInt8(ascii: "E"), UInt8(ascii: "+"), UInt8(ascii: "-"):
                integral = false
                i += 1
            default:
                return try finishNumber(start, integral)
            }
        }
        return try finishNumber(start, integral)
    }

    private func finishNumber(_ start: Int, _ integral: Bool) throws -> Any {
        let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<i]), as: UTF8.self)
        if integral, let integer = Int(text) { return integer }
        guard let number = Double(text) else { throw Failure(offset: start, message: "invalid number '\(text)'") }
        return number
    }
}

/// A JSON object: its members in file order.
struct JSONObject {
    var members: [(key: String, value: Any)] = []

    /// The value of the last member named `key` (JSON's usual rule for repeated keys).
    subscript(key: String) -> Any? {
        for member in members.reversed() where member.key.utf8.elementsEqual(key.utf8) { return member.value }
        return nil
    }
}
