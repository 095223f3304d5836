#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import SiloTensor

/// One entry of a GGUF tensor directory.
public struct GGUFTensorInfo: Sendable, Equatable {
    /// The tensor's name in the file (`blk.0.attn_q.weight`).
    public let name: String
    /// Row-major shape, outermost first: GGUF's dims reversed, so a Hugging Face (out, in) weight,
    /// stored as dims [in, out], reads as [out, in].
    public let shape: [Int]
    /// How the elements are stored.
    public let type: GGMLType
    /// Byte offset of the first block from the start of the file.
    public let fileOffset: Int
    /// Bytes the tensor takes in the file.
    public let byteCount: Int

    /// Number of elements.
    public var elementCount: Int { shape.reduce(1, *) }
}

/// A GGUF checkpoint (llama.cpp's format, versions 2 and 3), memory-mapped.
///
/// Opening parses the header, every metadata key/value and the tensor directory, and checks that
/// every tensor lies inside the file; tensor data is read only by ``tensor(_:)``, which dequantises
/// to Float32 exactly as ggml's reference `dequantize_row_*` functions do.
///
/// Layout (little-endian): magic "GGUF", u32 version, u64 tensor count, u64 key/value count, the
/// key/values (string key, u32 type, value), the tensor infos (string name, u32 n_dims, u64 dims
/// fastest-first, u32 ggml type, u64 offset into the data section), padding to `general.alignment`
/// (default 32), the data section.
public final class GGUFFile: @unchecked Sendable {
    /// The file this was opened from.
    public let url: URL
    /// GGUF format version (2 or 3).
    public let version: Int
    /// Alignment of the data section and of every tensor in it (`general.alignment`, default 32).
    public let alignment: Int
    /// Every metadata key/value.
    public let metadata: [String: GGUFValue]
    /// The metadata keys in file order.
    public let metadataKeys: [String]
    /// The tensor directory in file order.
    public let tensorInfos: [GGUFTensorInfo]
    /// Byte offset of the data section from the start of the file.
    public let dataOffset: Int
    /// Size of the file in bytes.
    public let fileSize: Int

    private let tensorIndex: [String: Int]
    private let base: UnsafeRawPointer
    private let mappedBytes: Int

    /// The default alignment of GGUF data (`GGUF_DEFAULT_ALIGNMENT`).
    public static let defaultAlignment = 32

    /// Opens and parses a GGUF file.
    /// - Parameter url: a local `.gguf` file.
    /// - Throws: ``TensorError`` naming the file: `.notFound` or `.io` if it cannot be opened or
    ///   mapped; `.corruptFile` for a bad magic, a truncated file (naming the key or tensor and the
    ///   byte offset) or inconsistent fields; `.unsupportedType` for a GGUF version other than 2 or 3
    ///   or a ggml type number Silo does not know (naming the tensor and the number).
    public init(contentsOf url: URL) throws {
        let path = url.path
        self.url = url
        let descriptor = open(path, O_RDONLY)
        guard descriptor >= 0 else {
            let reason = String(cString: strerror(errno))
            throw TensorError(errno == ENOENT ? .notFound : .io, "\(path): cannot open GGUF file: \(reason)")
        }
        defer { close(descriptor) }
        var status = stat()
        guard fstat(descriptor, &status) == 0 else {
            throw TensorError(.io, "\(path): cannot read file status: \(String(cString: strerror(errno)))")
        }
        guard (status.st_mode & S_IFMT) == S_IFREG else {
            throw TensorError(.io, "\(path): not a regular file (a GGUF checkpoint is a single .gguf file)")
        }
        let size = Int(status.st_size)
        guard size >= 4 else {
            throw TensorError(.corruptFile, "\(path): truncated file: the GGUF magic needs 4 bytes at byte offset 0, but the file has only \(size) bytes")
        }
        guard let mapped = mmap(nil, size, PROT_READ, MAP_PRIVATE, descriptor, 0),
              mapped != UnsafeMutableRawPointer(bitPattern: -1) else {
            throw TensorError(.io, "\(path): cannot memory-map \(size) bytes: \(String(cString: strerror(errno)))")
        }
        self.base = UnsafeRawPointer(mapped)
        self.mappedBytes = size
        self.fileSize = size

        do {
            var reader = GGUFByteReader(base: base, size: size, path: path)
            let parsed = try reader.parseHeaderAndDirectory()
            self.version = parsed.version
            self.alignment = parsed.alignment
            self.metadata = parsed.metadata
            self.metadataKeys = parsed.metadataKeys
            self.tensorInfos = parsed.tensors
            self.dataOffset = parsed.dataOffset
            var index: [String: Int] = [:]
            for (position, info) in parsed.tensors.enumerated() { index[info.name] = position }
            self.tensorIndex = index
        } catch {
            munmap(mapped, size)
            throw error
        }
    }

    deinit {
        munmap(UnsafeMutableRawPointer(mutating: base), mappedBytes)
    }

    // MARK: Tensors

    /// Tensor names in file order.
    public var tensorNames: [String] { tensorInfos.map(\.name) }

    /// The directory entry of a tensor, or nil if the file has none of that name.
    public func tensorInfo(_ name: String) -> GGUFTensorInfo? {
        tensorIndex[name].map { tensorInfos[$0] }
    }

    /// A tensor dequantised to Float32, in row-major shape (GGUF dims reversed: (out, in) for a
    /// Hugging Face linear weight). Runs in parallel over blocks.
    /// - Throws: ``TensorError`` `.notFound` if there is no such tensor; `.unsupportedType` if its
    ///   ggml type is not one of ``GGMLType/dequantizable``.
    public func tensor(_ name: String) throws -> Tensor {
        guard let info = tensorInfo(name) else {
            let sample = tensorInfos.prefix(5).map { "'\($0.name)'" }.joined(separator: ", ")
            throw TensorError(.notFound, "\(url.path): no tensor named '\(name)' (the file has \(tensorInfos.count) tensors\(sample.isEmpty ? "" : ", e.g. \(sample)"))")
        }
        guard info.type.isDequantizable else {
            let supported = GGMLType.dequantizable.map(\.description).joined(separator: ", ")
            throw TensorError(.unsupportedType, "\(url.path): tensor '\(name)' has ggml type \(info.type) (\(info.type.rawValue)), which Silo cannot dequantise (supported: \(supported)); re-quantise the model to one of those, e.g. with llama.cpp's llama-quantize")
        }
        let result = Tensor.empty(info.shape)
        let type = info.type
        let blockCount = info.elementCount / type.blockSize
        let source = base + info.fileOffset
        let out = result.pointer
        Parallel.forEachChunk(blockCount, costPerItem: type.blockSize * 4) { blocks in
            GGMLDequantizeKernel.dequantize(type, source: source, out: out, blocks: blocks)
        }
        return result
    }

    /// Calls `body` with the raw stored bytes of a tensor (valid only during the call).
    /// - Throws: ``TensorError`` `.notFound` if there is no such tensor.
    public func withUnsafeRawBytes<R>(of name: String, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        guard let info = tensorInfo(name) else {
            throw TensorError(.notFound, "\(url.path): no tensor named '\(name)'")
        }
        return try body(UnsafeRawBufferPointer(start: base + info.fileOffset, count: info.byteCount))
    }

    // MARK: Metadata accessors

    /// `general.architecture` (`llama`, `qwen2`, `gpt2`, ...).
    public var architecture: String? { string("general.architecture") }

    /// A string value, or nil if the key is missing or not a string.
    public func string(_ key: String) -> String? { metadata[key]?.string }
    /// An integer value of any integer type, or nil.
    public func int(_ key: String) -> Int? { metadata[key]?.int }
    /// A float or integer value as Double, or nil.
    public func float(_ key: String) -> Double? { metadata[key]?.float }
    /// A bool value, or nil.
    public func bool(_ key: String) -> Bool? { metadata[key]?.bool }
    /// The elements of an array value, or nil.
    public func array(_ key: String) -> [GGUFValue]? { metadata[key]?.array }
    /// An array of strings (`tokenizer.ggml.tokens`, `tokenizer.ggml.merges`), or nil.
    public func stringArray(_ key: String) -> [String]? { metadata[key]?.stringArray }
    /// An array of integers (`tokenizer.ggml.token_type`), or nil.
    public func intArray(_ key: String) -> [Int]? { metadata[key]?.intArray }
    /// An array of numbers as Float (`tokenizer.ggml.scores`), or nil.
    public func floatArray(_ key: String) -> [Float]? { metadata[key]?.floatArray }

    /// An integer value that must be present.
    /// - Throws: ``TensorError`` `.notFound` naming the file and key if it is missing or not an integer.
    public func requiredInt(_ key: String) throws -> Int {
        guard let value = int(key) else { throw missingKey(key, expected: "an integer") }
        return value
    }

    /// A float (or integer) value that must be present.
    /// - Throws: ``TensorError`` `.notFound` naming the file and key if it is missing or not a number.
    public func requiredFloat(_ key: String) throws -> Double {
        guard let value = float(key) else { throw missingKey(key, expected: "a number") }
        return value
    }

    /// A string value that must be present.
    /// - Throws: ``TensorError`` `.notFound` naming the file and key if it is missing or not a string.
    public func requiredString(_ key: String) throws -> String {
        guard let value = string(key) else { throw missingKey(key, expected: "a string") }
        return value
    }

    private func missingKey(_ key: String, expected: String) -> TensorError {
        if let value = metadata[key] {
            return TensorError(.notFound, "\(url.path): metadata key '\(key)' is \(value.type) \(value), expected \(expected)")
        }
        return TensorError(.notFound, "\(url.path): metadata key '\(key)' is missing (expected \(expected))")
    }
}

// MARK: - Parsing

/// A bounds-checked little-endian cursor over the mapped file.
struct GGUFByteReader {
    let base: UnsafeRawPointer
    let size: Int
    let path: String
    var position = 0

    static let magic: [UInt8] = Array("GGUF".utf8)
    static let maxArrayDepth = 8

    struct Parsed {
        var version: Int
        var alignment: Int
        var metadata: [String: GGUFValue]
        var metadataKeys: [String]
        var tensors: [GGUFTensorInfo]
        var dataOffset: Int
    }

    var remaining: Int { size - position }

    func truncated(_ what: String, needs count: Int) -> TensorError {
        TensorError(.corruptFile, "\(path): truncated file: \(what) needs \(count) bytes at byte offset \(position), but the file has only \(size) bytes")
    }

    func corrupt(_ message: String) -> TensorError {
        TensorError(.corruptFile, "\(path): corrupt GGUF file: \(message)")
    }

    @inline(__always)
    mutating func require(_ count: Int, _ what: @autoclosure () -> String) throws {
        guard count >= 0, count <= remaining else { throw truncated(what(), needs: count) }
    }

    mutating func load<T: FixedWidthInteger>(_ type: T.Type, _ what: @autoclosure () -> String) throws -> T {
        try require(MemoryLayout<T>.size, what())
        let value = T(littleEndian: base.loadUnaligned(fromByteOffset: position, as: T.self))
        position += MemoryLayout<T>.size
        return value
    }

    mutating func count(_ what: @autoclosure () -> String) throws -> Int {
        let value = try load(UInt64.self, what())
        guard let count = Int(exactly: value), count <= size else {
            throw TensorError(.corruptFile, "\(path): truncated or corrupt file: \(what()) at byte offset \(position - 8) is \(value), more than a \(size)-byte file can hold")
        }
        return count
    }

    mutating func string(_ what: @autoclosure () -> String) throws -> String {
        let length = try count("the length of \(what())")
        try require(length, what())
        let text = String(decoding: UnsafeRawBufferPointer(start: base + position, count: length), as: UTF8.self)
        position += length
        return text
    }

    mutating func parseHeaderAndDirectory() throws -> Parsed {
        try require(4, "the GGUF magic")
        let magicBytes = (0..<4).map { base.load(fromByteOffset: $0, as: UInt8.self) }
        guard magicBytes == Self.magic else {
            let hex = magicBytes.map { String(format: "%02X", $0) }.joined(separator: " ")
            throw TensorError(.corruptFile, "\(path): not a GGUF file: it starts with bytes \(hex), expected 47 47 55 46 (\"GGUF\")")
        }
        position = 4
        let rawVersion = try load(UInt32.self, "the GGUF version")
        guard rawVersion == 2 || rawVersion == 3 else {
            let hint = rawVersion.byteSwapped == 2 || rawVersion.byteSwapped == 3
                ? " (this is a big-endian GGUF file; Silo reads little-endian files only)"
                : rawVersion == 1 ? " (GGUF v1 is obsolete: re-convert the model with a current llama.cpp)" : ""
            throw TensorError(.unsupportedType, "\(path): unsupported GGUF version \(rawVersion); Silo reads versions 2 and 3\(hint)")
        }
        let tensorCount = try count("the tensor count")
        let keyValueCount = try count("the metadata key/value count")

        // Metadata.
        var metadata: [String: GGUFValue] = [:]
        var keys: [String] = []
        keys.reserveCapacity(min(keyValueCount, remaining / 12))
        for entry in 0..<keyValueCount {
            let key = try string("the key of metadata entry #\(entry)")
            let rawType = try load(UInt32.self, "the type of metadata key '\(key)'")
            guard let type = GGUFValueType(rawValue: rawType) else {
                position -= 4
                throw corrupt("metadata key '\(key)' has unknown value type \(rawType) at byte offset \(position)")
            }
            let value = try value(of: type, key: key, depth: 0)
            guard metadata.updateValue(value, forKey: key) == nil else {
                throw corrupt("metadata key '\(key)' appears twice")
            }
            keys.append(key)
        }

        var alignment = GGUFFile.defaultAlignment
        if let value = metadata["general.alignment"] {
            guard let number = value.int, number > 0, number & (number - 1) == 0 else {
                throw corrupt("general.alignment is \(value.type) \(value), expected a power of two")
            }
            alignment = number
        }

        // Tensor directory.
        struct Entry { var name: String; var dims: [Int]; var type: GGMLType; var offset: Int; var at: Int }
        var entries: [Entry] = []
        entries.reserveCapacity(min(tensorCount, remaining / 24))
        var seen = Set<String>()
        for index in 0..<tensorCount {
            let name = try string("the name of tensor #\(index)")
            let at = position
            let dimensionCount = Int(try load(UInt32.self, "the dimension count of tensor '\(name)'"))
            guard dimensionCount <= 4 else {
                throw corrupt("tensor '\(name)' has \(dimensionCount) dimensions at byte offset \(at) (GGUF allows at most 4)")
            }
            var dims: [Int] = []
            for axis in 0..<dimensionCount {
                let raw = try load(UInt64.self, "dimension \(axis) of tensor '\(name)'")
                guard let dim = Int(exactly: raw) else {
                    throw corrupt("tensor '\(name)' has dimension \(axis) = \(raw) at byte offset \(position - 8)")
                }
                dims.append(dim)
            }
            let rawType = try load(UInt32.self, "the ggml type of tensor '\(name)'")
            guard let type = GGMLType(rawValue: rawType) else {
                throw TensorError(.unsupportedType, "\(path): tensor '\(name)' has unknown ggml type \(rawType) (at byte offset \(position - 4)); Silo knows ggml types \(GGMLType.allCases.map { "\($0) (\($0.rawValue))" }.joined(separator: ", "))")
            }
            let rawOffset = try load(UInt64.self, "the data offset of tensor '\(name)'")
            guard let offset = Int(exactly: rawOffset) else {
                throw corrupt("tensor '\(name)' has data offset \(rawOffset)")
            }
            guard seen.insert(name).inserted else { throw corrupt("tensor '\(name)' appears twice in the directory") }
            entries.append(Entry(name: name, dims: dims, type: type, offset: offset, at: at))
        }

        let dataOffset = (position + alignment - 1) / alignment * alignment
        var tensors: [GGUFTensorInfo] = []
        tensors.reserveCapacity(entries.count)
        for entry in entries {
            let type = entry.type
            var elements = 1
            for dim in entry.dims {
                let (product, overflow) = elements.multipliedReportingOverflow(by: dim)
                guard !overflow else { throw corrupt("tensor '\(entry.name)' has dims \(entry.dims): too many elements") }
                elements = product
            }
            let innermost = entry.dims.first ?? 1
            guard innermost % type.blockSize == 0 else {
                throw corrupt("tensor '\(entry.name)' (\(type)) has a row of \(innermost) elements, not a multiple of the \(type) block size \(type.blockSize)")
            }
            let (byteCount, overflow) = (elements / type.blockSize).multipliedReportingOverflow(by: type.typeSize)
            guard !overflow else { throw corrupt("tensor '\(entry.name)' is too large") }
            guard entry.offset % alignment == 0 else {
                throw corrupt("tensor '\(entry.name)' has data offset \(entry.offset), not a multiple of the alignment \(alignment)")
            }
            let (start, startOverflow) = dataOffset.addingReportingOverflow(entry.offset)
            let (end, endOverflow) = start.addingReportingOverflow(byteCount)
            guard !startOverflow, !endOverflow, end <= size else {
                throw TensorError(.corruptFile, "\(path): truncated file: tensor '\(entry.name)' (\(type), \(byteCount) bytes) starts at byte offset \(startOverflow ? "\(dataOffset) + \(entry.offset)" : "\(start)") and ends at byte offset \(startOverflow || endOverflow ? "beyond Int.max" : "\(end)"), but the file has only \(size) bytes")
            }
            tensors.append(GGUFTensorInfo(name: entry.name, shape: entry.dims.reversed(), type: type,
                                          fileOffset: start, byteCount: byteCount))
        }
        return Parsed(version: Int(rawVersion), alignment: alignment, metadata: metadata, metadataKeys: keys,
                      tensors: tensors, dataOffset: dataOffset)
    }

    /// Reads one value of `type` for metadata key `key` (arrays recurse).
    mutating func value(of type: GGUFValueType, key: String, depth: Int) throws -> GGUFValue {
        let what = "the value of metadata key '\(key)'"
        switch type {
        case .uint8: return .uint8(try load(UInt8.self, what))
        case .int8: return .int8(try load(Int8.self, what))
        case .uint16: return .uint16(try load(UInt16.self, what))
        case .int16: return .int16(try load(Int16.self, what))
        case .uint32: return .uint32(try load(UInt32.self, what))
        case .int32: return .int32(try load(Int32.self, what))
        case .uint64: return .uint64(try load(UInt64.self, what))
        case .int64: return .int64(try load(Int64.self, what))
        case .float32: return .float32(Float(bitPattern: try load(UInt32.self, what)))
        case .float64: return .float64(Double(bitPattern: try load(UInt64.self, what)))
        case .bool: return .bool(try load(UInt8.self, what) != 0)
        case .string: return .string(try string(what))
        case .array:
            guard depth < Self.maxArrayDepth else {
                throw corrupt("metadata key '\(key)' nests arrays deeper than \(Self.maxArrayDepth) at byte offset \(position)")
            }
            let rawElementType = try load(UInt32.self, "the element type of metadata array '\(key)'")
            guard let elementType = GGUFValueType(rawValue: rawElementType) else {
                position -= 4
                throw corrupt("metadata array '\(key)' has unknown element type \(rawElementType) at byte offset \(position)")
            }
            let countAt = position
            let count = try count("the element count of metadata array '\(key)'")
            // Each element takes at least this many bytes: reject impossible counts before allocating.
            let minimumSize = elementType.fixedSize ?? (elementType == .string ? 8 : 12)
            guard count <= remaining / minimumSize else {
                position = countAt
                throw truncated("metadata array '\(key)' of \(count) \(elementType) elements", needs: count * minimumSize + 8)
            }
            var values: [GGUFValue] = []
            values.reserveCapacity(count)
            for _ in 0..<count {
                values.append(try value(of: elementType, key: key, depth: depth + 1))
            }
            return .array(elementType, values)
        }
    }
}
