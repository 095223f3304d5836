import Foundation
@testable import SiloData
import SiloModels
import XCTest

/// A byte-level GPT-2 tokenizer without merges: every UTF-8 byte is one token (id = byte), so token
/// counts are byte counts and ids are readable. Token 256 is `<|endoftext|>`.
func byteTokenizer(addBOS: Bool = false) throws -> Tokenizer {
    // GPT-2's bytes_to_unicode: printable bytes map to themselves, the rest to U+0100 + n.
    var tokens = [String](repeating: "", count: 256)
    var shifted = 0
    for byte in 0..<256 {
        let printable = (33...126).contains(byte) || (161...172).contains(byte) || (174...255).contains(byte)
        let scalar = printable ? byte : 256 + shifted
        if !printable { shifted += 1 }
        tokens[byte] = String(Character(Unicode.Scalar(UInt32(scalar))!))
    }
    tokens.append("<|endoftext|>")
    var types = [Int](repeating: 1, count: 256)
    types.append(3)
    return try Tokenizer(model: "gpt2", tokens: tokens, tokenTypes: types, merges: [],
                         bosTokenID: 256, eosTokenID: 256, addBOS: addBOS, preTokenizer: "gpt-2")
}

func bytes(_ text: String) -> [Int32] { text.utf8.map { Int32($0) } }

/// Asserts that `body` throws a DataError with `code` whose message contains every string of `parts`.
func assertDataError<T>(_ code: DataError.Code, _ parts: [String], file: StaticString = #filePath, line: UInt = #line,
                        _ body: () throws -> T) {
    do {
        _ = try body()
        XCTFail("expected a '\(code)' error", file: file, line: line)
    } catch let error as DataError {
        XCTAssertEqual(error.code, code, error.message, file: file, line: line)
        for part in parts {
            XCTAssertTrue(error.message.contains(part), "'\(error.message)' does not contain '\(part)'", file: file, line: line)
        }
    } catch {
        XCTFail("expected a DataError, got \(error)", file: file, line: line)
    }
}
