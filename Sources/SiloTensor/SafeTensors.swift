#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// The safetensors format (huggingface/safetensors):
//   bytes 0..<8      N, the header length, UInt64 little-endian
//   bytes 8..<8+N    a JSON object: name -> {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]},
//                    plus an optional "__metadata__": {string: string}; padded with spaces
//   bytes 8+N...     the data section; offsets are relative to its start, values little-endian.

/// A safetensors file, memory-mapped read-only.
///
/// Opening the file maps it and parses and validates the whole header — every tensor's type, shape
/// and byte range against the file — so a truncated or corrupt file fails at once with a message
/// that names the file, the tensor and the byte offsets. Tensor data is only read when
/// ``tensor(_:)`` asks for it, and is converted to a new Float32 ``Tensor`` (the mapping is never
/// shared with tensors, so the file may be closed while they live).
///
/// ``write(_:metadata:to:dtype:)`` writes the format like the reference implementation (tensors
/// sorted by name, header padded with spaces to a multiple of 8 bytes), atomically.
///
/// The mapping assumes the file is not truncated by another process while it is open.
public final class SafeTensorsFile: @unchecked Sendable {
    /// A safetensors element type ("F32", "BF16", …). Names the format does not define are kept
    /// (so that a file with a new type still opens) but their tensors cannot be read.
    public struct DType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public let rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }

        public static let f64 = DType(rawValue: "F64")
        public static let f32 = DType(rawValue: "F32")
        public static let f16 = DType(rawValue: "F16")
        public static let bf16 = DType(rawValue: "BF16")
        public static let i64 = DType(rawValue: "I64")
        public static let i32 = DType(rawValue: "I32")
        public static let i16 = DType(rawValue: "I16")
        public static let i8 = DType(rawValue: "I8")
        public static let u64 = DType(rawValue: "U64")
        public static let u32 = DType(rawValue: "U32")
        public static let u16 = DType(rawValue: "U16")
        public static let u8 = DType(rawValue: "U8")
        public static let bool = DType(rawValue: "BOOL")
        public static let f8E4M3 = DType(rawValue: "F8_E4M3")
        public static let f8E5M2 = DType(rawValue: "F8_E5M2")

        /// Bytes per element, or `nil` for a type this reader does not know.
        public var byteSize: Int? {
            switch rawValue {
            case "F64", "I64", "U64": return 8
            case "F32", "I32", "U32": return 4
            case "F16", "BF16", "I16", "U16": return 2
            case "I8", "U8", "BOOL", "F8_E4M3", "F8_E5M2": return 1
            default: return nil
            }
        }

        /// Whether ``SafeTensorsFile/tensor(_:)`` converts this type to Float32.
        public var isReadable: Bool {
            byteSize != nil && self != .f8E4M3 && self != .f8E5M2
        }

        public var description: String { rawValue }
    }

    /// One header entry; `begin`/`end` are offsets into the data section.
    struct Entry {
        let name: String
        let dtype: DType
        let shape: [Int]
        let begin: Int
        let end: Int
    }

    /// Where the file came from (for messages).
    public let url: URL
    /// Tensor names, sorted.
    public let names: [String]
    /// The `__metadata__` strings of the header (empty if it has none).
    public let metadata: [String: String]

    let entries: [String: Entry]
    /// Offset of the data section from the start of the file (8 + header length).
    let dataStart: Int
    let fileSize: Int
    private let mapping: UnsafeMutableRawPointer
    private var label: String { url.path }

    /// Largest header accepted, as in the reference implementation (100 MB).
    static let maximumHeaderLength = 100_000_000

    /// Maps the file and validates its header.
    /// - Throws: ``TensorError`` `.io` if the file cannot be opened or mapped; `.corruptFile` if the
    ///   header length, the JSON, or any tensor's type, shape or byte range does not fit the file
    ///   (the message names the file, the tensor and the byte offsets).
    public init(contentsOf url: URL) throws {
        self.url = url
        let path = url.path
        let descriptor = open(path, O_RDONLY)
        guard descriptor >= 0 else {
            throw TensorError(errno == ENOENT ? .notFound : .io, "\(path): cannot open (\(String(cString: strerror(errno))))")
        }
        defer { close(descriptor) }
        var status = stat()
        guard fstat(descriptor, &status) == 0 else {
            throw TensorError(.io, "\(path): cannot stat (\(String(cString: strerror(errno))))")
        }
        let size = Int(status.st_size)
        guard size >= 8 else {
            throw TensorError(.corruptFile,
                              "\(path): the file is \(size) bytes, too short for the 8-byte header length (not a safetensors file, or truncated?)")
        }
        guard let mapped = mmap(nil, size, PROT_READ, MAP_PRIVATE, descriptor, 0), mapped != MAP_FAILED else {
            throw TensorError(.io, "\(path): cannot map \(size) bytes (\(String(cString: strerror(errno))))")
        }
        let header: (dataStart: Int, entries: [String: Entry], metadata: [String: String])
        do {
            header = try SafeTensorsFile.parseHeader(UnsafeRawBufferPointer(start: UnsafeRawPointer(mapped), count: size),
                                                     path: path)
        } catch {
            munmap(mapped, size)
            throw error
        }
        self.mapping = mapped
        self.fileSize = size
        self.dataStart = header.dataStart
        self.entries = header.entries
        self.metadata = header.metadata
        self.names = header.entries.keys.sorted(by: SafeTensorsFile.byteOrder)
    }

    deinit {
        munmap(mapping, fileSize)
    }

    /// Whether the file holds a tensor called `name`.
    public func contains(_ name: String) -> Bool { entries[name] != nil }

    /// The stored element type and shape of tensor `name`, or `nil` if the file has no such tensor.
    public func info(_ name: String) -> (dtype: DType, shape: [Int])? {
        entries[name].map { ($0.dtype, $0.shape) }
    }

    /// Tensor `name` converted to a new Float32 tensor of its stored shape.
    ///
    /// F32, F16, BF16 and F64 convert as floating point; integer and BOOL tensors convert to their
    /// Float32 values (exact up to 2²⁴).
    /// - Throws: ``TensorError`` `.notFound` if there is no such tensor; `.unsupportedType` naming the
    ///   tensor and its type if it cannot be converted (F8 or unknown types).
    public func tensor(_ name: String) throws -> Tensor {
        guard let entry = entries[name] else {
            let known = names.prefix(5).map { "'\($0)'" }.joined(separator: ", ")
            throw TensorError(.notFound,
                              "\(label): no tensor '\(name)' (the file holds \(names.count): \(known)\(names.count > 5 ? ", …" : ""))")
        }
        guard entry.dtype.isReadable else {
            throw TensorError(.unsupportedType,
                              "\(label): tensor '\(name)' has dtype \(entry.dtype), which cannot be converted to Float32 (supported: F32, F16, BF16, F64, I64, I32, I16, I8, U64, U32, U16, U8, BOOL)")
        }
        let out = Tensor.empty(entry.shape)
        let source = UnsafeRawPointer(mapping) + dataStart + entry.begin
        SafeTensorsFile.convert(source, dtype: entry.dtype, count: out.count, to: out.pointer)
        return out
    }

    /// The stored bytes of tensor `name` (tests and checksums).
    func rawBytes(_ name: String) -> [UInt8]? {
        guard let entry = entries[name] else { return nil }
        let start = UnsafeRawPointer(mapping) + dataStart + entry.begin
        return Array(UnsafeRawBufferPointer(start: start, count: entry.end - entry.begin))
    }

    // MARK: Header

    /// Reads and validates the header in `bytes` (the whole file).
    static func parseHeader(_ bytes: UnsafeRawBufferPointer, path: String)
        throws -> (dataStart: Int, entries: [String: Entry], metadata: [String: String]) {
        func corrupt(_ message: String) -> TensorError { TensorError(.corruptFile, "\(path): \(message)") }
        let size = bytes.count
        let declared = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 0, as: UInt64.self))
        guard declared <= UInt64(size - 8) else {
            throw corrupt("the header length \(declared) (bytes 0..8) runs past the end of the file: the header would need bytes 8..\(declared &+ 8) but the file ends at \(size) (truncated, or not a safetensors file?)")
        }
        let headerLength = Int(declared)
        guard headerLength <= maximumHeaderLength else {
            throw corrupt("the header length \(headerLength) exceeds the \(maximumHeaderLength)-byte limit")
        }
        let dataStart = 8 + headerLength
        let dataSize = size - dataStart
        let headerBytes = UnsafeRawBufferPointer(rebasing: bytes[8..<dataStart])

        var parser = JSONParser(bytes: headerBytes, fileOffset: 8, path: path)
        let root = try parser.parseDocument()
        guard case .object(let members) = root.value else {
            throw corrupt("the header (bytes 8..\(dataStart)) is not a JSON object")
        }

        var entries: [String: Entry] = [:]
        var metadata: [String: String] = [:]
        for (name, value) in members {
            let at = "at byte \(value.offset)"
            if name == "__metadata__" {
                guard case .object(let pairs) = value.value else {
                    throw corrupt("__metadata__ \(at) is not an object of strings")
                }
                for (key, item) in pairs {
                    guard case .string(let text) = item.value else {
                        throw corrupt("__metadata__ value '\(key)' at byte \(item.offset) is not a string")
                    }
                    metadata[key] = text
                }
                continue
            }
            guard entries[name] == nil else {
                throw corrupt("tensor '\(name)' appears twice in the header (second at byte \(value.offset))")
            }
            guard case .object(let fields) = value.value else {
                throw corrupt("tensor '\(name)' \(at): expected an object with dtype, shape and data_offsets")
            }
            func field(_ key: String) throws -> JSONParser.Located {
                guard let found = fields.last(where: { $0.0 == key })?.1 else {
                    throw corrupt("tensor '\(name)' \(at) has no \"\(key)\"")
                }
                return found
            }
            func integers(_ key: String) throws -> [Int] {
                let located = try field(key)
                guard case .array(let items) = located.value else {
                    throw corrupt("tensor '\(name)': \"\(key)\" at byte \(located.offset) is not an array")
                }
                return try items.map { item in
                    guard case .number(let text) = item.value, let number = Int(text), number >= 0 else {
                        throw corrupt("tensor '\(name)': \"\(key)\" at byte \(item.offset) holds \(item.value.summary), not a non-negative integer")
                    }
                    return number
                }
            }
            let dtypeField = try field("dtype")
            guard case .string(let dtypeName) = dtypeField.value else {
                throw corrupt("tensor '\(name)': \"dtype\" at byte \(dtypeField.offset) is not a string")
            }
            let dtype = DType(rawValue: dtypeName)
            let shape = try integers("shape")
            let offsets = try integers("data_offsets")
            guard offsets.count == 2 else {
                throw corrupt("tensor '\(name)': data_offsets at byte \(try field("data_offsets").offset) has \(offsets.count) numbers, expected [begin, end]")
            }
            let begin = offsets[0], end = offsets[1]
            guard begin <= end else {
                throw corrupt("tensor '\(name)': data_offsets [\(begin), \(end)] end before they begin")
            }
            guard end <= dataSize else {
                throw corrupt("tensor '\(name)' needs bytes \(dataStart &+ begin)..\(dataStart &+ end) but the file ends at \(size) (truncated?)")
            }
            if let elementSize = dtype.byteSize {
                var elements = 1
                for dimension in shape {
                    let (product, overflow) = elements.multipliedReportingOverflow(by: dimension)
                    guard !overflow else { throw corrupt("tensor '\(name)': shape \(shape) is too large") }
                    elements = product
                }
                let (expected, overflow) = elements.multipliedReportingOverflow(by: elementSize)
                guard !overflow, expected == end - begin else {
                    throw corrupt("tensor '\(name)' of dtype \(dtype) and shape \(shape) needs \(elements) × \(elementSize) bytes, but data_offsets [\(begin), \(end)] (bytes \(dataStart + begin)..\(dataStart + end) of the file) hold \(end - begin)")
                }
            }
            entries[name] = Entry(name: name, dtype: dtype, shape: shape, begin: begin, end: end)
        }

        // No two tensors may share bytes.
        let ordered = entries.values.filter { $0.end > $0.begin }
            .sorted { ($0.begin, $0.end) < ($1.begin, $1.end) }
        for (previous, next) in zip(ordered, ordered.dropFirst()) where next.begin < previous.end {
            throw corrupt("tensors '\(previous.name)' (bytes \(dataStart + previous.begin)..\(dataStart + previous.end)) and '\(next.name)' (bytes \(dataStart + next.begin)..\(dataStart + next.end)) overlap")
        }
        return (dataStart, entries, metadata)
    }

    /// Orders strings by their UTF-8 bytes (the order of the reference implementation).
    static func byteOrder(_ left: String, _ right: String) -> Bool {
        left.utf8.lexicographicallyPrecedes(right.utf8)
    }

    // MARK: Conversion

    /// Converts `count` little-endian elements of `dtype` at `source` (any alignment) to Float32.
    static func convert(_ source: UnsafeRawPointer, dtype: DType, count: Int, to destination: UnsafeMutablePointer<Float>) {
        func each<Element: FixedWidthInteger>(_ type: Element.Type, _ body: (Element) -> Float) {
            Parallel.forEachChunk(count, costPerItem: 2) { range in
                for index in range {
                    let raw = source.loadUnaligned(fromByteOffset: index * MemoryLayout<Element>.size, as: Element.self)
                    destination[index] = body(Element(littleEndian: raw))
                }
            }
        }
        switch dtype {
        case .f32:
            #if _endian(little)
            UnsafeMutableRawPointer(destination).copyMemory(from: source, byteCount: count * 4)
            #else
            each(UInt32.self) { Float(bitPattern: $0) }
            #endif
        case .f16: each(UInt16.self) { floatFromHalf($0) }
        case .bf16: each(UInt16.self) { Float(bitPattern: UInt32($0) << 16) }
        case .f64: each(UInt64.self) { Float(Double(bitPattern: $0)) }
        case .i64: each(Int64.self) { Float($0) }
        case .i32: each(Int32.self) { Float($0) }
        case .i16: each(Int16.self) { Float($0) }
        case .i8: each(Int8.self) { Float($0) }
        case .u64: each(UInt64.self) { Float($0) }
        case .u32: each(UInt32.self) { Float($0) }
        case .u16: each(UInt16.self) { Float($0) }
        case .u8, .bool: each(UInt8.self) { Float($0) }
        default: preconditionFailure("SafeTensorsFile.convert: unreadable dtype \(dtype)")
        }
    }

    /// The Float32 value of an IEEE binary16 bit pattern (exact).
    @inline(__always)
    static func floatFromHalf(_ half: UInt16) -> Float {
        let sign = UInt32(half & 0x8000) << 16
        let exponent = UInt32(half >> 10) & 0x1F
        let mantissa = UInt32(half & 0x3FF)
        if exponent == 0x1F {  // infinity or NaN (payload kept)
            return Float(bitPattern: sign | 0x7F80_0000 | (mantissa << 13))
        }
        if exponent == 0 {  // zero or subnormal: mantissa · 2⁻²⁴
            let magnitude = Float(mantissa) * 0x1p-24
            return sign != 0 ? -magnitude : magnitude
        }
        return Float(bitPattern: sign | ((exponent + 112) << 23) | (mantissa << 13))
    }

    /// The IEEE binary16 bit pattern nearest to `value`, ties to even (as PyTorch's `.half()`);
    /// overflow gives infinity, NaN stays a quiet NaN.
    @inline(__always)
    static func halfFromFloat(_ value: Float) -> UInt16 {
        let bits = value.bitPattern
        let sign = UInt16(truncatingIfNeeded: (bits >> 16) & 0x8000)
        let exponent = Int((bits >> 23) & 0xFF)
        let mantissa = bits & 0x7F_FFFF
        if exponent == 0xFF {
            return sign | 0x7C00 | (mantissa != 0 ? 0x0200 | UInt16(truncatingIfNeeded: mantissa >> 13) : 0)
        }
        let halfExponent = exponent - 112  // rebias 127 → 15
        if halfExponent >= 0x1F { return sign | 0x7C00 }
        if halfExponent <= 0 {
            // Subnormal in binary16: the 24-bit significand in units of 2⁻²⁴.
            if halfExponent < -10 { return sign }  // below 2⁻²⁵: rounds to zero
            let significand = mantissa | 0x80_0000
            let shift = UInt32(14 - halfExponent)
            var result = significand >> shift
            let remainder = significand & ((1 << shift) - 1)
            let halfway = UInt32(1) << (shift - 1)
            if remainder > halfway || (remainder == halfway && result & 1 == 1) { result += 1 }
            return sign | UInt16(truncatingIfNeeded: result)
        }
        var result = UInt32(halfExponent) << 10 | (mantissa >> 13)
        let remainder = mantissa & 0x1FFF
        if remainder > 0x1000 || (remainder == 0x1000 && result & 1 == 1) { result += 1 }  // may carry into infinity
        return sign | UInt16(truncatingIfNeeded: result)
    }

    /// The bfloat16 bit pattern nearest to `value`, ties to even (as PyTorch's `.bfloat16()`).
    @inline(__always)
    static func bfloat16FromFloat(_ value: Float) -> UInt16 {
        let bits = value.bitPattern
        if value.isNaN { return UInt16(truncatingIfNeeded: bits >> 16) | 0x0040 }
        let rounding = 0x7FFF + ((bits >> 16) & 1)
        return UInt16(truncatingIfNeeded: (bits &+ rounding) >> 16)
    }

    // MARK: Writing

    /// Writes `tensors` (in any order; stored sorted by name) as a safetensors file at `url`.
    ///
    /// The file is written to a temporary file in the same directory, flushed to disk (`fsync`) and
    /// renamed over `url`, so a crash leaves either the old file or the complete new one.
    /// - Parameters:
    ///   - tensors: names and values; a tensor may be a strided view or require gradients.
    ///   - metadata: strings for the header's `__metadata__` (omitted when empty).
    ///   - dtype: the stored element type: `.f32`, `.f16` or `.bf16` (rounded to nearest even).
    /// - Throws: ``TensorError`` `.invalidArgument` for a duplicate or reserved name, `.unsupportedType`
    ///   for another dtype, `.io` if the file cannot be written.
    public static func write(_ tensors: [(name: String, tensor: Tensor)], metadata: [String: String] = [:],
                             to url: URL, dtype: DType = .f32) throws {
        guard dtype == .f32 || dtype == .f16 || dtype == .bf16 else {
            throw TensorError(.unsupportedType, "SafeTensorsFile.write \(url.path): cannot write dtype \(dtype) (use F32, F16 or BF16)")
        }
        let sorted = tensors.sorted { byteOrder($0.name, $1.name) }
        for (previous, next) in zip(sorted, sorted.dropFirst()) where previous.name == next.name {
            throw TensorError(.invalidArgument, "SafeTensorsFile.write \(url.path): tensor name '\(next.name)' appears twice")
        }
        if sorted.contains(where: { $0.name == "__metadata__" }) {
            throw TensorError(.invalidArgument, "SafeTensorsFile.write \(url.path): '__metadata__' is reserved and cannot name a tensor")
        }
        let elementSize = dtype == .f32 ? 4 : 2

        // Header: compact JSON as serde_json writes it, then spaces up to a multiple of 8.
        var header = "{"
        var fields: [String] = []
        if !metadata.isEmpty {
            let pairs = metadata.keys.sorted(by: byteOrder).map { key in
                "\(jsonQuoted(key)):\(jsonQuoted(metadata[key] ?? ""))"
            }
            fields.append("\"__metadata__\":{\(pairs.joined(separator: ","))}")
        }
        var offset = 0
        for (name, tensor) in sorted {
            let byteCount = tensor.count * elementSize
            let shape = tensor.shape.map(String.init).joined(separator: ",")
            fields.append("\(jsonQuoted(name)):{\"dtype\":\"\(dtype)\",\"shape\":[\(shape)],\"data_offsets\":[\(offset),\(offset + byteCount)]}")
            offset += byteCount
        }
        header += fields.joined(separator: ",") + "}"
        var headerBytes = Array(header.utf8)
        headerBytes += Array(repeating: UInt8(ascii: " "), count: (8 - headerBytes.count % 8) % 8)

        try AtomicFileWriter.write(to: url) { sink in
            var length = UInt64(headerBytes.count).littleEndian
            try withUnsafeBytes(of: &length) { try sink.write($0) }
            try headerBytes.withUnsafeBytes { try sink.write($0) }
            let chunkElements = 1 << 18
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkElements * elementSize, alignment: 16)
            defer { buffer.deallocate() }
            for (_, tensor) in sorted {
                try tensor.withUnsafeBufferPointer { values in
                    var start = 0
                    while start < values.count {
                        let chunk = min(chunkElements, values.count - start)
                        encode(values, from: start, count: chunk, dtype: dtype, into: buffer)
                        try sink.write(UnsafeRawBufferPointer(rebasing: buffer[0..<(chunk * elementSize)]))
                        start += chunk
                    }
                }
            }
        }
    }

    /// Writes `tensors` (a dictionary; stored sorted by name) as a safetensors file at `url`, atomically.
    public static func write(_ tensors: [String: Tensor], metadata: [String: String] = [:],
                             to url: URL, dtype: DType = .f32) throws {
        try write(tensors.map { (name: $0.key, tensor: $0.value) }, metadata: metadata, to: url, dtype: dtype)
    }

    /// Encodes `count` values starting at `start` into `buffer` as little-endian `dtype`.
    private static func encode(_ values: UnsafeBufferPointer<Float>, from start: Int, count: Int, dtype: DType,
                               into buffer: UnsafeMutableRawBufferPointer) {
        guard let source = values.baseAddress.map({ $0 + start }), let target = buffer.baseAddress else { return }
        switch dtype {
        case .f16, .bf16:
            let halves = target.assumingMemoryBound(to: UInt16.self)
            let isHalf = dtype == .f16
            Parallel.forEachChunk(count, costPerItem: 4) { range in
                for index in range {
                    let bits = isHalf ? halfFromFloat(source[index]) : bfloat16FromFloat(source[index])
                    halves[index] = bits.littleEndian
                }
            }
        default:
            let words = target.assumingMemoryBound(to: UInt32.self)
            for index in 0..<count { words[index] = source[index].bitPattern.littleEndian }
        }
    }

    /// `text` as a JSON string literal, escaped as serde_json escapes it.
    static func jsonQuoted(_ text: String) -> String {
        var result = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": result += "\\\""
            case "\\": result += "\\\\"
            case "\n": result += "\\n"
            case "\r": result += "\\r"
            case "\t": result += "\\t"
            case "\u{08}": result += "\\b"
            case "\u{0C}": result += "\\f"
            default:
                if scalar.value < 0x20 {
                    let hex = String(scalar.value, radix: 16)
                    result += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    result.unicodeScalars.append(scalar)
                }
            }
        }
        return result + "\""
    }
}

// MARK: - Atomic writes

#if canImport(Glibc)
private let systemWrite = Glibc.write
#else
private let systemWrite = Darwin.write
#endif

/// Writes a file through a temporary file in the same directory, `fsync` and `rename`.
enum AtomicFileWriter {
    /// Appends bytes to the open temporary file.
    struct Sink {
        let descriptor: Int32
        let path: String

        func write(_ bytes: UnsafeRawBufferPointer) throws {
            guard var pointer = bytes.baseAddress else { return }
            var remaining = bytes.count
            while remaining > 0 {
                let written = systemWrite(descriptor, pointer, remaining)
                if written < 0 {
                    if errno == EINTR { continue }
                    throw TensorError(.io, "\(path): write failed (\(String(cString: strerror(errno))))")
                }
                pointer += written
                remaining -= written
            }
        }
    }

    /// Runs `body` to fill a temporary file next to `url`, then makes it `url` in one rename.
    static func write(to url: URL, _ body: (Sink) throws -> Void) throws {
        let path = url.path
        let directory = url.deletingLastPathComponent().path
        let temporary = "\(directory)/.\(url.lastPathComponent).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else {
            throw TensorError(.io, "\(path): cannot create temporary file \(temporary) (\(String(cString: strerror(errno))))")
        }
        var finished = false
        defer {
            if !finished { unlink(temporary) }
        }
        do {
            try body(Sink(descriptor: descriptor, path: temporary))
            guard fsync(descriptor) == 0 else {
                throw TensorError(.io, "\(path): fsync of \(temporary) failed (\(String(cString: strerror(errno))))")
            }
        } catch {
            close(descriptor)
            throw error
        }
        guard close(descriptor) == 0 else {
            throw TensorError(.io, "\(path): closing \(temporary) failed (\(String(cString: strerror(errno))))")
        }
        guard rename(temporary, path) == 0 else {
            throw TensorError(.io, "\(path): cannot rename \(temporary) into place (\(String(cString: strerror(errno))))")
        }
        finished = true
        // Make the rename itself durable.
        let directoryDescriptor = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if directoryDescriptor >= 0 {
            _ = fsync(directoryDescriptor)
            close(directoryDescriptor)
        }
    }
}

// MARK: - Header JSON

/// A small JSON parser for safetensors headers: exact byte offsets in errors, integers kept as text,
/// nesting limited (headers are two levels deep).
struct JSONParser {
    indirect enum Value {
        case object([(String, Located)])
        case array([Located])
        case string(String)
        case number(String)
        case bool(Bool)
        case null

        var summary: String {
            switch self {
            case .object: return "an object"
            case .array: return "an array"
            case .string(let text): return "the string \"\(text.prefix(40))\""
            case .number(let text): return text
            case .bool(let flag): return "\(flag)"
            case .null: return "null"
            }
        }
    }

    /// A value and the file offset where it starts.
    struct Located {
        let value: Value
        let offset: Int
    }

    let bytes: UnsafeRawBufferPointer
    let fileOffset: Int
    let path: String
    var position = 0
    static let maximumDepth = 32

    init(bytes: UnsafeRawBufferPointer, fileOffset: Int, path: String) {
        self.bytes = bytes
        self.fileOffset = fileOffset
        self.path = path
    }

    private func error(_ message: String, at index: Int? = nil) -> TensorError {
        let where_ = fileOffset + (index ?? position)
        return TensorError(.corruptFile, "\(path): the header is not valid JSON: \(message) at byte \(where_) of the file (header bytes \(fileOffset)..\(fileOffset + bytes.count))")
    }

    /// Parses one value followed only by whitespace (the padding).
    mutating func parseDocument() throws -> Located {
        skipWhitespace()
        guard position < bytes.count else { throw error("the header is empty") }
        guard bytes[position] == UInt8(ascii: "{") else { throw error("expected '{'") }
        let value = try parseValue(depth: 0)
        skipWhitespace()
        guard position == bytes.count else { throw error("unexpected \(describe(bytes[position])) after the closing '}'") }
        return value
    }

    private func describe(_ byte: UInt8) -> String {
        (0x21...0x7E).contains(byte) ? "'\(Character(Unicode.Scalar(byte)))'" : "byte 0x\(String(byte, radix: 16))"
    }

    private mutating func skipWhitespace() {
        while position < bytes.count {
            switch bytes[position] {
            case 0x20, 0x09, 0x0A, 0x0D: position += 1
            default: return
            }
        }
    }

    private mutating func expect(_ character: Unicode.Scalar) throws {
        skipWhitespace()
        guard position < bytes.count else { throw error("the header ends where '\(character)' was expected") }
        guard bytes[position] == UInt8(ascii: character) else {
            throw error("expected '\(character)' but found \(describe(bytes[position]))")
        }
        position += 1
    }

    private mutating func parseValue(depth: Int) throws -> Located {
        guard depth < Self.maximumDepth else { throw error("nesting deeper than \(Self.maximumDepth)") }
        skipWhitespace()
        guard position < bytes.count else { throw error("the header ends where a value was expected") }
        let start = fileOffset + position
        switch bytes[position] {
        case UInt8(ascii: "{"):
            position += 1
            var members: [(String, Located)] = []
            skipWhitespace()
            if position < bytes.count && bytes[position] == UInt8(ascii: "}") {
                position += 1
                return Located(value: .object(members), offset: start)
            }
            while true {
                skipWhitespace()
                guard position < bytes.count, bytes[position] == UInt8(ascii: "\"") else {
                    throw error(position < bytes.count ? "expected a quoted key but found \(describe(bytes[position]))"
                                                       : "the header ends inside an object")
                }
                let key = try parseString()
                try expect(":")
                let value = try parseValue(depth: depth + 1)
                members.append((key, value))
                skipWhitespace()
                guard position < bytes.count else { throw error("the header ends inside an object") }
                if bytes[position] == UInt8(ascii: ",") { position += 1; continue }
                if bytes[position] == UInt8(ascii: "}") { position += 1; break }
                throw error("expected ',' or '}' but found \(describe(bytes[position]))")
            }
            return Located(value: .object(members), offset: start)
        case UInt8(ascii: "["):
            position += 1
            var items: [Located] = []
            skipWhitespace()
            if position < bytes.count && bytes[position] == UInt8(ascii: "]") {
                position += 1
                return Located(value: .array(items), offset: start)
            }
            while true {
                items.append(try parseValue(depth: depth + 1))
                skipWhitespace()
                guard position < bytes.count else { throw error("the header ends inside an array") }
                if bytes[position] == UInt8(ascii: ",") { position += 1; continue }
                if bytes[position] == UInt8(ascii: "]") { position += 1; break }
                throw error("expected ',' or ']' but found \(describe(bytes[position]))")
            }
            return Located(value: .array(items), offset: start)
        case UInt8(ascii: "\""):
            return Located(value: .string(try parseString()), offset: start)
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return Located(value: .number(try parseNumber()), offset: start)
        case UInt8(ascii: "t"):
            try literal("true")
            return Located(value: .bool(true), offset: start)
        case UInt8(ascii: "f"):
            try literal("false")
            return Located(value: .bool(false), offset: start)
        case UInt8(ascii: "n"):
            try literal("null")
            return Located(value: .null, offset: start)
        default:
            throw error("unexpected \(describe(bytes[position]))")
        }
    }

    private mutating func literal(_ word: String) throws {
        for byte in word.utf8 {
            guard position < bytes.count, bytes[position] == byte else { throw error("invalid literal (expected '\(word)')") }
            position += 1
        }
    }

    private mutating func parseNumber() throws -> String {
        let start = position
        func digits() -> Int {
            let first = position
            while position < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[position]) { position += 1 }
            return position - first
        }
        if bytes[position] == UInt8(ascii: "-") { position += 1 }
        let integerStart = position
        let integerDigits = digits()
        guard integerDigits > 0 else { throw error("invalid number") }
        if integerDigits > 1 && bytes[integerStart] == UInt8(ascii: "0") { throw error("invalid number (leading zero)", at: integerStart) }
        if position < bytes.count && bytes[position] == UInt8(ascii: ".") {
            position += 1
            guard digits() > 0 else { throw error("invalid number (no digits after '.')") }
        }
        if position < bytes.count && (bytes[position] == UInt8(ascii: "e") || bytes[position] == UInt8(ascii: "E")) {
            position += 1
            if position < bytes.count && (bytes[position] == UInt8(ascii: "+") || bytes[position] == UInt8(ascii: "-")) { position += 1 }
            guard digits() > 0 else { throw error("invalid number (empty exponent)") }
        }
        return String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<position]), as: UTF8.self)
    }

    private mutating func parseString() throws -> String {
        let opening = position
        position += 1  // the opening quote
        var scalars = String.UnicodeScalarView()
        var runStart = position
        func flushRun(_ end: Int) throws {
            guard end > runStart else { return }
            let run = UnsafeRawBufferPointer(rebasing: bytes[runStart..<end])
            guard let text = String(validating: run, as: UTF8.self) else {
                throw error("invalid UTF-8 in a string", at: runStart)
            }
            scalars.append(contentsOf: text.unicodeScalars)
        }
        while true {
            guard position < bytes.count else { throw error("unterminated string", at: opening) }
            let byte = bytes[position]
            if byte == UInt8(ascii: "\"") {
                try flushRun(position)
                position += 1
                return String(scalars)
            }
            if byte < 0x20 { throw error("control character in a string") }
            if byte != UInt8(ascii: "\\") { position += 1; continue }
            try flushRun(position)
            position += 1
            guard position < bytes.count else { throw error("unterminated escape", at: position - 1) }
            let escape = bytes[position]
            position += 1
            switch escape {
            case UInt8(ascii: "\""): scalars.append("\"")
            case UInt8(ascii: "\\"): scalars.append("\\")
            case UInt8(ascii: "/"): scalars.append("/")
            case UInt8(ascii: "b"): scalars.append("\u{08}")
            case UInt8(ascii: "f"): scalars.append("\u{0C}")
            case UInt8(ascii: "n"): scalars.append("\n")
            case UInt8(ascii: "r"): scalars.append("\r")
            case UInt8(ascii: "t"): scalars.append("\t")
            case UInt8(ascii: "u"):
                var code = try hex4()
                if (0xD800..<0xDC00).contains(code) {
                    guard position + 1 < bytes.count, bytes[position] == UInt8(ascii: "\\"), bytes[position + 1] == UInt8(ascii: "u") else {
                        throw error("unpaired surrogate \\u\(String(code, radix: 16))")
                    }
                    position += 2
                    let low = try hex4()
                    guard (0xDC00..<0xE000).contains(low) else { throw error("invalid low surrogate") }
                    code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                }
                guard let scalar = Unicode.Scalar(code) else { throw error("invalid \\u escape") }
                scalars.append(scalar)
            default:
                throw error("invalid escape '\\\(Character(Unicode.Scalar(escape)))'", at: position - 2)
            }
            runStart = position
        }
    }

    private mutating func hex4() throws -> UInt32 {
        guard position + 4 <= bytes.count else { throw error("truncated \\u escape") }
        var code: UInt32 = 0
        for _ in 0..<4 {
            let byte = bytes[position]
            let digit: UInt32
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(byte - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt32(byte - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt32(byte - UInt8(ascii: "A") + 10)
            default: throw error("invalid hex digit in \\u escape")
            }
            code = code << 4 | digit
            position += 1
        }
        return code
    }
}
