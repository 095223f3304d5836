import Foundation

/// One JSON value of a JSON Lines record.
enum JSONValue: Equatable, Sendable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    /// The JSON type's name, for messages ("a number", "an array").
    var typeDescription: String {
        switch self {
        case .null: return "null"
        case .bool: return "a boolean"
        case .number: return "a number"
        case .string: return "a string"
        case .array: return "an array"
        case .object: return "an object"
        }
    }
}

/// One line of a JSON Lines file, parsed into an object, with typed field access whose errors name
/// the file, the line and the field.
struct JSONRecord {
    let fields: [String: JSONValue]
    let location: SourceLocation

    /// The string in `field` (with `allowEmpty: false`, one that is not only whitespace).
    /// - Throws: ``DataError`` `.missingField` (absent or null, listing the fields present),
    ///   `.wrongType` or `.empty`, naming the file, line and field.
    func string(_ field: String, allowEmpty: Bool = true) throws -> String {
        guard let value = fields[field], value != .null else {
            let present = fields.keys.sorted().map { "'\($0)'" }.joined(separator: ", ")
            throw DataError(.missingField, "field '\(field)' is missing (the line has \(present.isEmpty ? "no fields" : present))", at: location)
        }
        guard case .string(let text) = value else {
            throw DataError(.wrongType, "field '\(field)' must be a string, found \(value.typeDescription)", at: location)
        }
        if !allowEmpty, text.allSatisfy(\.isWhitespace) {
            throw DataError(.empty, "field '\(field)' is empty", at: location)
        }
        return text
    }
}

/// Reads JSON Lines files: one JSON object per line, blank lines skipped.
enum JSONLines {
    /// The records of a file, each with its 1-based line number.
    /// - Throws: ``DataError`` `.unreadableFile`, `.invalidJSON` (naming the line and byte column) or
    ///   `.empty` when the file holds no record.
    static func read(_ url: URL) throws -> [JSONRecord] {
        let data: Data
        do {
            data = try Data(contentsOf: url)
        } catch {
            throw DataError(.unreadableFile, "\(url.path): cannot read the file: \(error.localizedDescription)")
        }
        return try parse(data, path: url.path)
    }

    /// The records of `data` (the contents of the file at `path`, which messages name).
    static func parse(_ data: Data, path: String) throws -> [JSONRecord] {
        var records: [JSONRecord] = []
        try data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
            let bytes = raw.bindMemory(to: UInt8.self)
            var lineNumber = 0
            var start = 0
            while start < bytes.count {
                lineNumber += 1
                var end = start
                while end < bytes.count, bytes[end] != 0x0A { end += 1 }
                var last = end
                if last > start, bytes[last - 1] == 0x0D { last -= 1 }  // CRLF
                let line = UnsafeBufferPointer(rebasing: bytes[start..<last])
                let location = SourceLocation(file: path, line: lineNumber)
                if !line.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) {
                    var parser = JSONParser(line)
                    let value: JSONValue
                    do {
                        value = try parser.document()
                    } catch let failure as JSONParser.Failure {
                        throw DataError(.invalidJSON, "not valid JSON at column \(failure.offset + 1): \(failure.message)", at: location)
                    }
                    guard case .object(let fields) = value else {
                        throw DataError(.invalidJSON, "each line must be a JSON object, found \(value.typeDescription)", at: location)
                    }
                    records.append(JSONRecord(fields: fields, location: location))
                }
                start = end + 1
            }
        }
        if records.isEmpty {
            throw DataError(.empty, "\(path): the file holds no examples (\(data.isEmpty ? "it is empty" : "only blank lines"))")
        }
        return records
    }
}

/// A strict JSON parser (RFC 8259) over the bytes of one line.
struct JSONParser {
    struct Failure: Error {
        let offset: Int
        let message: String
    }

    private let bytes: UnsafeBufferPointer<UInt8>
    private var index = 0
    private static let maximumDepth = 256

    init(_ bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

    /// Parses the whole buffer as one value.
    mutating func document() throws -> JSONValue {
        skipWhitespace()
        let value = try parseValue(depth: 0)
        skipWhitespace()
        guard index == bytes.count else { throw failure("unexpected text after the JSON value") }
        return value
    }

    private func failure(_ message: String) -> Failure {
        if index < bytes.count {
            let byte = bytes[index]
            let found = byte >= 0x20 && byte < 0x7F ? "'\(Character(Unicode.Scalar(byte)))'" : "byte \(byte)"
            return Failure(offset: index, message: "\(message) (found \(found))")
        }
        return Failure(offset: index, message: "\(message) (found the end of the line)")
    }

    private mutating func skipWhitespace() {
        while index < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[index]) { index += 1 }
    }

    private mutating func parseValue(depth: Int) throws -> JSONValue {
        guard depth < JSONParser.maximumDepth else { throw failure("nesting deeper than \(JSONParser.maximumDepth)") }
        guard index < bytes.count else { throw failure("expected a value") }
        switch bytes[index] {
        case UInt8(ascii: "{"): return try parseObject(depth: depth)
        case UInt8(ascii: "["): return try parseArray(depth: depth)
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"): try literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try literal("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try parseNumber())
        default: throw failure("expected a value")
        }
    }

    private mutating func literal(_ word: String) throws {
        for byte in word.utf8 {
            guard index < bytes.count, bytes[index] == byte else { throw failure("expected '\(word)'") }
            index += 1
        }
    }

    private mutating func parseObject(depth: Int) throws -> JSONValue {
        index += 1
        var fields: [String: JSONValue] = [:]
        skipWhitespace()
        if index < bytes.count, bytes[index] == UInt8(ascii: "}") { index += 1; return .object(fields) }
        while true {
            skipWhitespace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { throw failure("expected a field name in quotes") }
            let key = try parseString()
            skipWhitespace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { throw failure("expected ':' after field name \"\(key)\"") }
            index += 1
            skipWhitespace()
            fields[key] = try parseValue(depth: depth + 1)  // a repeated key keeps the last value, as Python's json does
            skipWhitespace()
            guard index < bytes.count else { throw failure("expected ',' or '}'") }
            if bytes[index] == UInt8(ascii: ",") { index += 1; continue }
            if bytes[index] == UInt8(ascii: "}") { index += 1; return .object(fields) }
            throw failure("expected ',' or '}'")
        }
    }

    private mutating func parseArray(depth: Int) throws -> JSONValue {
        index += 1
        var elements: [JSONValue] = []
        skipWhitespace()
        if index < bytes.count, bytes[index] == UInt8(ascii: "]") { index += 1; return .array(elements) }
        while true {
            skipWhitespace()
            elements.append(try parseValue(depth: depth + 1))
            skipWhitespace()
            guard index < bytes.count else { throw failure("expected ',' or ']'") }
            if bytes[index] == UInt8(ascii: ",") { index += 1; continue }
            if bytes[index] == UInt8(ascii: "]") { index += 1; return .array(elements) }
            throw failure("expected ',' or ']'")
        }
    }

    private mutating func parseNumber() throws -> Double {
        let start = index
        if bytes[index] == UInt8(ascii: "-") { index += 1 }
        func digits() -> Int {
            let from = index
            while index < bytes.count, bytes[index] >= UInt8(ascii: "0"), bytes[index] <= UInt8(ascii: "9") { index += 1 }
            return index - from
        }
        let integerStart = index
        let integerDigits = digits()
        guard integerDigits > 0 else { throw failure("expected a digit") }
        if integerDigits > 1, bytes[integerStart] == UInt8(ascii: "0") {
            index = integerStart + 1
            throw failure("a number must not start with 0")
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
            index += 1
            guard digits() > 0 else { throw failure("expected a digit after '.'") }
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
            index += 1
            if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") { index += 1 }
            guard digits() > 0 else { throw failure("expected a digit in the exponent") }
        }
        let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
        guard let value = Double(text) else { throw Failure(offset: start, message: "malformed number \(text)") }
        return value
    }

    private mutating func hexQuad() throws -> UInt32 {
        var value: UInt32 = 0
        for _ in 0..<4 {
            guard index < bytes.count else { throw failure("expected 4 hex digits after \\u") }
            let byte = bytes[index]
            let digit: UInt32
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(byte - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt32(byte - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt32(byte - UInt8(ascii: "A") + 10)
            default: throw failure("expected 4 hex digits after \\u")
            }
            value = value * 16 + digit
            index += 1
        }
        return value
    }

    private mutating func parseString() throws -> String {
        index += 1  // opening quote
        var output: [UInt8] = []
        var runStart = index
        while true {
            guard index < bytes.count else { throw failure("unterminated string") }
            let byte = bytes[index]
            if byte == UInt8(ascii: "\"") {
                output.append(contentsOf: bytes[runStart..<index])
                index += 1
                break
            }
            if byte < 0x20 { throw failure("control character inside a string (escape it)") }
            if byte != UInt8(ascii: "\\") { index += 1; continue }
            output.append(contentsOf: bytes[runStart..<index])
            index += 1
            guard index < bytes.count else { throw failure("unterminated escape") }
            let escape = bytes[index]
            index += 1
            switch escape {
            case UInt8(ascii: "\""): output.append(0x22)
            case UInt8(ascii: "\\"): output.append(0x5C)
            case UInt8(ascii: "/"): output.append(0x2F)
            case UInt8(ascii: "b"): output.append(0x08)
            case UInt8(ascii: "f"): output.append(0x0C)
            case UInt8(ascii: "n"): output.append(0x0A)
            case UInt8(ascii: "r"): output.append(0x0D)
            case UInt8(ascii: "t"): output.append(0x09)
            case UInt8(ascii: "u"):
                var scalar = try hexQuad()
                if scalar >= 0xD800, scalar < 0xDC00 {
                    // A high surrogate: combine with a following \uDC00-\uDFFF, else U+FFFD.
                    let saved = index
                    if index + 1 < bytes.count, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u") {
                        index += 2
                        let low = try hexQuad()
                        if low >= 0xDC00, low < 0xE000 {
                            scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                        } else {
                            index = saved
                            scalar = 0xFFFD
                        }
                    } else {
                        scalar = 0xFFFD
                    }
                } else if scalar >= 0xDC00, scalar < 0xE000 {
                    scalar = 0xFFFD
                }
                output.append(contentsOf: String(Character(Unicode.Scalar(scalar) ?? "\u{FFFD}")).utf8)
            default:
                index -= 1
                throw failure("unknown escape")
            }
            runStart = index
        }
        return String(decoding: output, as: UTF8.self)
    }
}
