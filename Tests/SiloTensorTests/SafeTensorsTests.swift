import XCTest
@testable import SiloTensor

final class SafeTensorsTests: XCTestCase {
    private var directory: URL!

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("silo-safetensors-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: directory)
    }

    private func fixture(_ name: String) throws -> URL {
        try XCTUnwrap(Bundle.module.url(forResource: name, withExtension: "safetensors", subdirectory: "Fixtures"),
                      "Fixtures/\(name).safetensors is missing: run `make fixtures`")
    }

    private func random(_ shape: [Int], _ seed: UInt64, scale: Float = 1) -> Tensor {
        Tensor.randomNormal(shape, standardDeviation: scale, key: RandomKey(seed: seed))
    }

    /// Writes a hand-made file: the 8-byte header length (`declaredLength`, default the header's),
    /// the header and `data`.
    private func makeFile(_ header: String, data: [UInt8] = [], declaredLength: UInt64? = nil,
                          name: String = "model.safetensors") throws -> URL {
        var bytes: [UInt8] = []
        let headerBytes = Array(header.utf8)
        withUnsafeBytes(of: (declaredLength ?? UInt64(headerBytes.count)).littleEndian) { bytes += $0 }
        bytes += headerBytes + data
        let url = directory.appendingPathComponent(name)
        try Data(bytes).write(to: url)
        return url
    }

    /// The message of the `TensorError` thrown by `body`, checked to have `code`.
    private func errorMessage(_ code: TensorError.Code, file: StaticString = #filePath, line: UInt = #line,
                              _ body: () throws -> Void) -> String {
        do {
            try body()
            XCTFail("expected a \(code) error", file: file, line: line)
        } catch let error as TensorError {
            XCTAssertEqual(error.code, code, error.message, file: file, line: line)
            return error.message
        } catch {
            XCTFail("unexpected error \(error)", file: file, line: line)
        }
        return ""
    }

    // MARK: Conversions

    // Bit patterns of IEEE binary16 and bfloat16 under round-to-nearest-even, worked by hand:
    // F16 has 10 mantissa bits, so 1 + 2⁻¹¹ lies halfway between 1 (0x3C00, even) and 1 + 2⁻¹⁰ (0x3C01)
    // and goes to 0x3C00; 1 + 3·2⁻¹¹ lies halfway between 0x3C01 (odd) and 0x3C02 and goes up. The
    // smallest subnormal is 2⁻²⁴ = 0x0001; 2⁻²⁵ ties between 0 and it and goes to 0; 3·2⁻²⁵ ties
    // between 0x0001 and 0x0002 and goes to 0x0002. 65520 is halfway between 65504 (0x7BFF, odd) and
    // 65536 (out of range), so it overflows to infinity.
    func testHalfPrecisionBitPatterns() {
        let cases: [(Float, UInt16)] = [
            (1, 0x3C00), (-2, 0xC000), (0.5, 0x3800), (0, 0x0000), (-0.0, 0x8000),
            (65504, 0x7BFF), (65519, 0x7BFF), (65520, 0x7C00), (1e6, 0x7C00), (-1e6, 0xFC00),
            (0x1p-14, 0x0400), (0x1p-24, 0x0001), (0x1p-25, 0x0000), (3 * 0x1p-25, 0x0002), (0x1p-26, 0x0000),
            (0x1.8p-24, 0x0002),  // 1.5 units: tie, to even (2)
            (1 + 0x1p-11, 0x3C00), (1 + 3 * 0x1p-11, 0x3C02), (1 + 0x1p-11 + 0x1p-20, 0x3C01),
            (1.0 / 3, 0x3555), (.infinity, 0x7C00), (-.infinity, 0xFC00), (.nan, 0x7E00),
        ]
        for (value, bits) in cases {
            XCTAssertEqual(SafeTensorsFile.halfFromFloat(value), bits, "F16 of \(value)")
        }
        XCTAssertEqual(SafeTensorsFile.floatFromHalf(0x0001), 0x1p-24)
        XCTAssertEqual(SafeTensorsFile.floatFromHalf(0x3555), 0.333251953125)  // 1365/4096
        XCTAssertEqual(SafeTensorsFile.floatFromHalf(0x7BFF), 65504)
        XCTAssertEqual(SafeTensorsFile.floatFromHalf(0xFC00), -.infinity)
        XCTAssertEqual(SafeTensorsFile.floatFromHalf(0x8000).sign, .minus)
        XCTAssertTrue(SafeTensorsFile.floatFromHalf(0x7E00).isNaN)
    }

    // BF16 keeps the top 16 bits of a Float32 with 7 mantissa bits: 1 + 2⁻⁸ ties between 0x3F80 (even)
    // and 0x3F81; 1 + 3·2⁻⁸ ties between 0x3F81 and 0x3F82 (even); π = 0x40490FDB rounds down to 0x4049;
    // the largest Float32 rounds up to infinity.
    func testBFloat16BitPatterns() {
        let cases: [(Float, UInt16)] = [
            (1, 0x3F80), (-2, 0xC000), (1 + 0x1p-8, 0x3F80), (1 + 3 * 0x1p-8, 0x3F82), (1 + 0x1p-8 + 0x1p-20, 0x3F81),
            (.pi, 0x4049), (.greatestFiniteMagnitude, 0x7F80), (.infinity, 0x7F80), (-.infinity, 0xFF80),
            (-0.0, 0x8000), (.nan, 0x7FC0), (0x1p-130, 0x0008),  // 2⁻¹³⁰ = 2¹⁹·2⁻¹⁴⁹ stays subnormal
        ]
        for (value, bits) in cases {
            XCTAssertEqual(SafeTensorsFile.bfloat16FromFloat(value), bits, "BF16 of \(value)")
        }
    }

    // Every binary16 value converts to Float32 and back unchanged, and the conversion from Float32
    // agrees with Swift's own Float16 (round to nearest even) over many magnitudes.
    func testHalfPrecisionAgreesWithFloat16() {
        for bits in 0...UInt16.max {
            let value = SafeTensorsFile.floatFromHalf(bits)
            if value.isNaN {
                XCTAssertTrue(SafeTensorsFile.floatFromHalf(SafeTensorsFile.halfFromFloat(value)).isNaN)
                continue
            }
            XCTAssertEqual(SafeTensorsFile.halfFromFloat(value), bits, "round trip of 0x\(String(bits, radix: 16))")
            #if !(os(macOS) && arch(x86_64))
            XCTAssertEqual(value, Float(Float16(bitPattern: bits)))
            #endif
        }
        #if !(os(macOS) && arch(x86_64))
        var generator = SeededGenerator(seed: 3)
        for _ in 0..<20_000 {
            // Random bit patterns cover every exponent, subnormals and ties (low bits zero half the time).
            var bits = UInt32(truncatingIfNeeded: generator.next())
            if bits & 1 == 0 { bits &= 0xFFFF_E000 | 0x1000 }
            let value = Float(bitPattern: bits)
            guard !value.isNaN else { continue }
            XCTAssertEqual(SafeTensorsFile.halfFromFloat(value), Float16(value).bitPattern, "F16 of \(value)")
        }
        #endif
    }

    // MARK: Round trips

    func testRoundTripEachDType() throws {
        let matrix = random([3, 5], 1, scale: 10)
        // A strided view (the transpose of a (2, 3) matrix) is written in logical order.
        let dense = try Tensor(shape: [2, 3], values: [1, 2, 3, 4, 5, 6])
        var transposed = dense
        transposed.shape = [3, 2]
        transposed.strides = [1, 3]
        let tensors: [String: Tensor] = [
            "b.matrix": matrix, "a.scalar": Tensor(scalar: -1.5), "c.empty": Tensor.zeros([0, 4]),
            "d.transposed": transposed, "e.grad": random([4], 2).requiringGrad(),
        ]
        for dtype in [SafeTensorsFile.DType.f32, .f16, .bf16] {
            let url = directory.appendingPathComponent("round-\(dtype).safetensors")
            try SafeTensorsFile.write(tensors, metadata: ["format": "pt", "note": "quote \" and\nnewline"], to: url, dtype: dtype)
            let file = try SafeTensorsFile(contentsOf: url)
            XCTAssertEqual(file.names, ["a.scalar", "b.matrix", "c.empty", "d.transposed", "e.grad"])
            XCTAssertEqual(file.metadata, ["format": "pt", "note": "quote \" and\nnewline"])
            XCTAssertEqual(file.dataStart % 8, 0, "header padded to 8 bytes")
            for (name, original) in tensors {
                let info = try XCTUnwrap(file.info(name))
                XCTAssertEqual(info.dtype, dtype)
                XCTAssertEqual(info.shape, original.shape)
                let read = try file.tensor(name)
                XCTAssertEqual(read.shape, original.shape)
                let expected: [Float] = original.toArray().map { value in
                    switch dtype {
                    case .f16: return SafeTensorsFile.floatFromHalf(SafeTensorsFile.halfFromFloat(value))
                    case .bf16: return Float(bitPattern: UInt32(SafeTensorsFile.bfloat16FromFloat(value)) << 16)
                    default: return value
                    }
                }
                XCTAssertEqual(read.toArray(), expected, "\(name) as \(dtype)")
            }
            XCTAssertEqual(try file.tensor("d.transposed").toArray(), [1, 4, 2, 5, 3, 6])
            // Rounding really happened (so the comparison above is not vacuous for F16/BF16).
            if dtype != .f32 { XCTAssertNotEqual(try file.tensor("b.matrix").toArray(), matrix.toArray()) }
        }
    }

    func testWriteIsAtomicAndReplacesExistingFile() throws {
        let url = directory.appendingPathComponent("model.safetensors")
        try SafeTensorsFile.write(["x": Tensor([1, 2])], to: url)
        try SafeTensorsFile.write(["x": Tensor([3, 4, 5])], to: url)
        XCTAssertEqual(try SafeTensorsFile(contentsOf: url).tensor("x").toArray(), [3, 4, 5])
        // A write that fails part-way leaves the old file and no temporary file behind.
        struct Interrupted: Error {}
        XCTAssertThrowsError(try AtomicFileWriter.write(to: url) { sink in
            try [UInt8](repeating: 0, count: 100).withUnsafeBytes { try sink.write($0) }
            throw Interrupted()
        })
        XCTAssertEqual(try SafeTensorsFile(contentsOf: url).tensor("x").toArray(), [3, 4, 5])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory.path), ["model.safetensors"])
        // A missing directory is an i/o error naming the path.
        let nowhere = directory.appendingPathComponent("missing/model.safetensors")
        let message = errorMessage(.io) { try SafeTensorsFile.write(["x": Tensor([1])], to: nowhere) }
        XCTAssertTrue(message.contains("missing/model.safetensors"), message)
    }

    func testWriteRejectsBadArguments() {
        let url = directory.appendingPathComponent("bad.safetensors")
        let duplicate = errorMessage(.invalidArgument) {
            try SafeTensorsFile.write([(name: "w", tensor: Tensor([1])), (name: "w", tensor: Tensor([2]))], to: url)
        }
        XCTAssertTrue(duplicate.contains("'w' appears twice"), duplicate)
        _ = errorMessage(.invalidArgument) { try SafeTensorsFile.write(["__metadata__": Tensor([1])], to: url) }
        let dtype = errorMessage(.unsupportedType) { try SafeTensorsFile.write(["w": Tensor([1])], to: url, dtype: .i64) }
        XCTAssertTrue(dtype.contains("I64"), dtype)
        XCTAssertFalse(FileManager.default.fileExists(atPath: url.path))
    }

    // MARK: Files written by Python

    func testReadsFileWrittenByPythonSafetensors() throws {
        let file = try SafeTensorsFile(contentsOf: try fixture("formats"))
        XCTAssertEqual(file.metadata, ["source": "Scripts/make_fixtures.py"])
        XCTAssertEqual(file.names, ["empty", "flags", "ints_i32", "ints_i64", "ints_u8", "scalar",
                                    "values", "values_bf16", "values_f16", "values_f64"])
        XCTAssertEqual(file.info("values_bf16")?.dtype, .bf16)
        XCTAssertEqual(file.info("ints_i64")?.shape, [2, 3])
        XCTAssertNil(file.info("nothing"))

        let values = try file.tensor("values").toArray()
        XCTAssertEqual(values.count, 95)
        XCTAssertEqual(Array(values.prefix(3)), [0, -0.0, 1])
        // torch's .half() and .bfloat16() rounded these; ours must give the same bits.
        let halfBytes = try XCTUnwrap(file.rawBytes("values_f16"))
        let bfloatBytes = try XCTUnwrap(file.rawBytes("values_bf16"))
        let half = try file.tensor("values_f16").toArray()
        for (index, value) in values.enumerated() {
            let stored = UInt16(halfBytes[2 * index]) | UInt16(halfBytes[2 * index + 1]) << 8
            let storedBFloat = UInt16(bfloatBytes[2 * index]) | UInt16(bfloatBytes[2 * index + 1]) << 8
            if value.isNaN {
                // torch's vectorised BF16 path writes NaN as 0xFFFF, its scalar path (and ours) 0x7FC0.
                XCTAssertTrue(stored & 0x7C00 == 0x7C00 && stored & 0x3FF != 0, "F16 NaN")
                XCTAssertTrue(storedBFloat & 0x7F80 == 0x7F80 && storedBFloat & 0x7F != 0, "BF16 NaN")
                continue
            }
            XCTAssertEqual(SafeTensorsFile.halfFromFloat(value), stored, "F16 of values[\(index)] = \(value)")
            XCTAssertEqual(SafeTensorsFile.bfloat16FromFloat(value), storedBFloat, "BF16 of values[\(index)] = \(value)")
            let widened = SafeTensorsFile.floatFromHalf(stored)
            XCTAssertTrue(half[index] == widened || (half[index].isNaN && widened.isNaN), "values_f16[\(index)]")
        }
        let double = try file.tensor("values_f64").toArray()
        XCTAssertTrue(zip(values, double).allSatisfy { $0 == $1 || ($0.isNaN && $1.isNaN) })
        XCTAssertEqual(try file.tensor("ints_i64").toArray(), [-3, 0, 7, 16_777_216, -100, 42])
        XCTAssertEqual(try file.tensor("ints_i32").toArray(), [-2_147_483_648, 5, 2_147_483_647])
        XCTAssertEqual(try file.tensor("ints_u8").toArray(), [0, 1, 255])
        XCTAssertEqual(try file.tensor("flags").toArray(), [1, 0, 1])
        XCTAssertEqual(try file.tensor("empty").shape, [0, 3])
        let scalar = try file.tensor("scalar")
        XCTAssertEqual(scalar.shape, [])
        XCTAssertEqual(scalar.scalar, 2.5)
    }

    // Silo writes the same bytes as the reference implementation for the same tensors and metadata.
    func testWritesSameBytesAsPythonSafetensors() throws {
        let source = try SafeTensorsFile(contentsOf: try fixture("formats_f32"))
        let tensors = try source.names.map { (name: $0, tensor: try source.tensor($0)) }
        for (suffix, dtype) in [("f32", SafeTensorsFile.DType.f32), ("f16", .f16), ("bf16", .bf16)] {
            let url = directory.appendingPathComponent("\(suffix).safetensors")
            try SafeTensorsFile.write(tensors.reversed(), metadata: source.metadata, to: url, dtype: dtype)
            let written = try Data(contentsOf: url)
            let reference = try Data(contentsOf: try fixture("formats_\(suffix)"))
            XCTAssertEqual(written, reference, "\(suffix): \(String(decoding: written.prefix(120), as: UTF8.self))")
        }
    }

    // MARK: Corrupt files

    func testTruncatedFileNamesTensorAndOffsets() throws {
        let url = directory.appendingPathComponent("model.safetensors")
        try SafeTensorsFile.write(["h.0.attn.c_attn.weight": random([4, 6], 3), "a": Tensor([1, 2])], to: url)
        var bytes = try Data(contentsOf: url)
        let full = bytes.count
        bytes.removeLast(10)
        try bytes.write(to: url)
        let message = errorMessage(.corruptFile) { _ = try SafeTensorsFile(contentsOf: url) }
        // "a" holds data bytes 0..8, the weight 8..104: file bytes dataStart + 8 ... dataStart + 104 = full.
        let dataStart = full - 104
        XCTAssertTrue(message.contains("model.safetensors"), message)
        XCTAssertTrue(message.contains("tensor 'h.0.attn.c_attn.weight' needs bytes \(dataStart + 8)..\(full) but the file ends at \(full - 10) (truncated?)"), message)
    }

    func testTooShortFileAndHeaderLengthBeyondFile() throws {
        let tiny = directory.appendingPathComponent("tiny.safetensors")
        try Data([1, 2, 3]).write(to: tiny)
        let short = errorMessage(.corruptFile) { _ = try SafeTensorsFile(contentsOf: tiny) }
        XCTAssertTrue(short.contains("tiny.safetensors") && short.contains("3 bytes"), short)

        let url = try makeFile(#"{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, data: [0, 0, 0, 0],
                               declaredLength: 1_000_000)
        let message = errorMessage(.corruptFile) { _ = try SafeTensorsFile(contentsOf: url) }
        XCTAssertTrue(message.contains("header length 1000000"), message)
        XCTAssertTrue(message.contains("file ends at 66"), message)  // 8 + 54 + 4 bytes

        let missing = errorMessage(.notFound) { _ = try SafeTensorsFile(contentsOf: directory.appendingPathComponent("none.safetensors")) }
        XCTAssertTrue(missing.contains("none.safetensors"), missing)
    }

    func testBadJSONNamesByteOffset() throws {
        // Byte 8 of the file is the '{'; the stray second "," is at header index 20, file byte 28.
        let url = try makeFile(#"{"x":{"dtype":"F32",,"shape":[1],"data_offsets":[0,4]}}"#, data: [0, 0, 0, 0])
        let message = errorMessage(.corruptFile) { _ = try SafeTensorsFile(contentsOf: url) }
        XCTAssertTrue(message.contains("not valid JSON"), message)
        XCTAssertTrue(message.contains("at byte 28"), message)

        let unterminated = try makeFile(#"{"x":{"dtype":"F32"#, name: "b.safetensors")
        XCTAssertTrue(errorMessage(.corruptFile) { _ = try SafeTensorsFile(contentsOf: unterminated) }.contains("unterminated string"))
        let notObject = try makeFile("[1, 2]  ", name: "c.safetensors")
        XCTAssertTrue(errorMessage(.corruptFile) { _ = try SafeTensorsFile(contentsOf: notObject) }.contains("expected '{'"))
        let trailing = try makeFile("{} x", name: "d.safetensors")
        XCTAssertTrue(errorMessage(.corruptFile) { _ = try SafeTensorsFile(contentsOf: trailing) }.contains("after the closing"))
        let badShape = try makeFile(#"{"x":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#, data: [0, 0, 0, 0], name: "e.safetensors")
        let shapeMessage = errorMessage(.corruptFile) { _ = try SafeTensorsFile(contentsOf: badShape) }
        XCTAssertTrue(shapeMessage.contains("tensor 'x'") && shapeMessage.contains("-1"), shapeMessage)
        let metadata = try makeFile(#"{"__metadata__":{"n":1}}"#, name: "f.safetensors")
        XCTAssertTrue(errorMessage(.corruptFile) { _ = try SafeTensorsFile(contentsOf: metadata) }.contains("'n'"))
        // Escapes and padding are accepted.
        let escaped = try makeFile(#"{"__metadata__":{"k":"a\"\u00e9\ud83d\ude00"},"x\/y":{"dtype":"F32","shape":[],"data_offsets":[0,4]}}    "#,
                                   data: [0, 0, 0x80, 0x3F], name: "g.safetensors")
        let file = try SafeTensorsFile(contentsOf: escaped)
        XCTAssertEqual(file.metadata["k"], "a\"é😀")
        XCTAssertEqual(try file.tensor("x/y").scalar, 1)
    }

    func testOffsetsOutOfRangeReversedOrWrongSize() throws {
        let beyond = try makeFile(#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}}"#, data: Array(repeating: 0, count: 16))
        let message = errorMessage(.corruptFile) { _ = try SafeTensorsFile(contentsOf: beyond) }
        // Header 55 bytes: data starts at 63, the tensor needs 71..87, the file is 79 bytes.
        XCTAssertTrue(message.contains("tensor 'w' needs bytes 71..87 but the file ends at 79"), message)

        let reversed = try makeFile(#"{"w":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}}"#, data: Array(repeating: 0, count: 16),
                                    name: "r.safetensors")
        let reversedMessage = errorMessage(.corruptFile) { _ = try SafeTensorsFile(contentsOf: reversed) }
        XCTAssertTrue(reversedMessage.contains("tensor 'w'") && reversedMessage.contains("[8, 4]"), reversedMessage)

        let wrongSize = try makeFile(#"{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}}"#, data: Array(repeating: 0, count: 16),
                                     name: "s.safetensors")
        let sizeMessage = errorMessage(.corruptFile) { _ = try SafeTensorsFile(contentsOf: wrongSize) }
        XCTAssertTrue(sizeMessage.contains("tensor 'w'") && sizeMessage.contains("4 × 4 bytes") && sizeMessage.contains("hold 12"), sizeMessage)

        let noOffsets = try makeFile(#"{"w":{"dtype":"F32","shape":[1]}}"#, name: "t.safetensors")
        XCTAssertTrue(errorMessage(.corruptFile) { _ = try SafeTensorsFile(contentsOf: noOffsets) }.contains("no \"data_offsets\""))
    }

    func testOverlappingTensorsAreRejected() throws {
        let header = #"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}}"#
        let url = try makeFile(header, data: Array(repeating: 0, count: 24))
        let message = errorMessage(.corruptFile) { _ = try SafeTensorsFile(contentsOf: url) }
        let dataStart = 8 + header.utf8.count
        XCTAssertTrue(message.contains("'a' (bytes \(dataStart)..\(dataStart + 16)) and 'b' (bytes \(dataStart + 8)..\(dataStart + 24)) overlap"), message)
        // Adjacent and empty tensors do not overlap.
        let fine = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"e":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#
        XCTAssertNoThrow(try SafeTensorsFile(contentsOf: try makeFile(fine, data: Array(repeating: 0, count: 16), name: "fine.safetensors")))
    }

    func testUnknownAndUnreadableDTypesAndMissingNames() throws {
        let header = #"{"q":{"dtype":"Q4_K","shape":[3],"data_offsets":[0,7]},"f8":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[7,9]},"ok":{"dtype":"BF16","shape":[1],"data_offsets":[10,12]}}"#
        let url = try makeFile(header, data: Array(repeating: 0, count: 10) + [0x80, 0x3F])
        let file = try SafeTensorsFile(contentsOf: url)
        XCTAssertEqual(file.info("q")?.dtype.rawValue, "Q4_K")
        XCTAssertEqual(try file.tensor("ok").toArray(), [1])
        let unknown = errorMessage(.unsupportedType) { _ = try file.tensor("q") }
        XCTAssertTrue(unknown.contains("tensor 'q'") && unknown.contains("Q4_K"), unknown)
        let f8 = errorMessage(.unsupportedType) { _ = try file.tensor("f8") }
        XCTAssertTrue(f8.contains("tensor 'f8'") && f8.contains("F8_E4M3"), f8)
        let missing = errorMessage(.notFound) { _ = try file.tensor("lm_head.weight") }
        XCTAssertTrue(missing.contains("'lm_head.weight'") && missing.contains("'f8'"), missing)

        let duplicate = #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#
        let twice = errorMessage(.corruptFile) { _ = try SafeTensorsFile(contentsOf: try makeFile(duplicate, data: Array(repeating: 0, count: 8), name: "dup.safetensors")) }
        XCTAssertTrue(twice.contains("'a' appears twice"), twice)
    }
}
