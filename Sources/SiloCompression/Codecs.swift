import Foundation

// n rows, d columns of the matrix a codec compresses; k centroids; b bits.

/// A malformed or mismatched encoding, or a request a codec cannot serve; the message says what and where.
public struct CodecError: Error, CustomStringConvertible, Equatable, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// A lossy (or lossless) encoding of an (n, d) Float32 matrix for the wire. Compression happens before
/// sealing (compress, then seal: ciphertext does not compress).
public protocol TensorCodec: Sendable {
    /// `none`, `q8`, `q4`, `kmeans-16` …
    var name: String { get }
    /// Whether the server can sum encodings without decoding each (what secure aggregation needs). Only
    /// the identity is: per-block scales and per-client codebooks make each client's code its own.
    var supportsSecureAggregation: Bool { get }
    func encode(_ values: [Float], rows: Int, columns: Int) throws -> [UInt8]
    /// - Throws: ``CodecError`` naming the field for a truncated, oversized or inconsistent encoding.
    func decode(_ bytes: [UInt8]) throws -> (values: [Float], rows: Int, columns: Int)
}

/// Parses a codec name: `none`, `q8`, `q4` (blockwise absmax, 64 values a block), `kmeans-K` (K row centroids).
public func makeCodec(_ name: String, seed: UInt64 = 0) throws -> any TensorCodec {
    switch name {
    case "none": return IdentityCodec()
    case "q8": return BlockwiseQuantizationCodec(bits: 8)
    case "q4": return BlockwiseQuantizationCodec(bits: 4)
    default:
        if name.hasPrefix("kmeans-"), let k = Int(name.dropFirst("kmeans-".count)), k >= 1 {
            return KMeansCodec(clusters: k, seed: seed)
        }
        throw CodecError("codec '\(name)' is not one of none, q8, q4, kmeans-K (K ≥ 1)")
    }
}

/// Refuses a codec that cannot be combined with secure aggregation, saying why.
public func checkSecureAggregationCompatible(_ codec: any TensorCodec) throws {
    guard codec.supportsSecureAggregation else {
        throw CodecError("codec \(codec.name) cannot be combined with secure aggregation: the server would have to decode each client's encoding (its own scales or codebook), which secure aggregation exists to prevent; use codec none, or switch secure aggregation off")
    }
}

/// The header every encoding starts with: magic "SLC1", codec id, n, d (UInt32 little-endian each).
struct CodecHeader {
    static let magic: [UInt8] = Array("SLC1".utf8)
    static let size = 16
    var codec: UInt8
    var parameter: UInt8
    var rows: Int
    var columns: Int

    func bytes() -> [UInt8] {
        var out = Self.magic + [codec, parameter, 0, 0]
        ByteWriter.append(UInt32(rows), to: &out)
        ByteWriter.append(UInt32(columns), to: &out)
        return out
    }

    static func read(_ bytes: [UInt8], codec expected: UInt8, name: String) throws -> CodecHeader {
        guard bytes.count >= size else { throw CodecError("\(name): \(bytes.count) bytes, shorter than the \(size)-byte header") }
        guard Array(bytes[0..<4]) == magic else { throw CodecError("\(name): bad magic \(Array(bytes[0..<4])) (expected SLC1)") }
        guard bytes[4] == expected else { throw CodecError("\(name): encoding of codec id \(bytes[4]), expected \(expected)") }
        let rows = Int(ByteWriter.uint32(bytes, at: 8)), columns = Int(ByteWriter.uint32(bytes, at: 12))
        guard rows.multipliedReportingOverflow(by: columns).partialValue <= 1 << 31 else {
            throw CodecError("\(name): header claims \(rows) × \(columns) values, more than 2^31")
        }
        return CodecHeader(codec: bytes[4], parameter: bytes[5], rows: rows, columns: columns)
    }
}

enum ByteWriter {
    static func append(_ value: UInt32, to out: inout [UInt8]) {
        out += [UInt8(value & 0xFF), UInt8((value >> 8) & 0xFF), UInt8((value >> 16) & 0xFF), UInt8(value >> 24)]
    }

    static func append(_ value: Float, to out: inout [UInt8]) { append(value.bitPattern, to: &out) }

    static func uint32(_ bytes: [UInt8], at offset: Int) -> UInt32 {
        UInt32(bytes[offset]) | UInt32(bytes[offset + 1]) << 8 | UInt32(bytes[offset + 2]) << 16 | UInt32(bytes[offset + 3]) << 24
    }

    static func float(_ bytes: [UInt8], at offset: Int) -> Float { Float(bitPattern: uint32(bytes, at: offset)) }
}

/// Float32 as is (4 bytes a value). Linear, so secure aggregation can sum it (after fixed-point encoding).
public struct IdentityCodec: TensorCodec {
    public let name = "none"
    public let supportsSecureAggregation = true

    public init() {}

    public func encode(_ values: [Float], rows: Int, columns: Int) throws -> [UInt8] {
        guard values.count == rows * columns else { throw CodecError("none: \(values.count) values for \(rows) × \(columns)") }
        var out = CodecHeader(codec: 0, parameter: 0, rows: rows, columns: columns).bytes()
        out.reserveCapacity(out.count + 4 * values.count)
        for value in values { ByteWriter.append(value, to: &out) }
        return out
    }

    public func decode(_ bytes: [UInt8]) throws -> (values: [Float], rows: Int, columns: Int) {
        let header = try CodecHeader.read(bytes, codec: 0, name: name)
        let count = header.rows * header.columns
        guard bytes.count == CodecHeader.size + 4 * count else {
            throw CodecError("none: \(bytes.count) bytes for \(header.rows) × \(header.columns) values (expected \(CodecHeader.size + 4 * count))")
        }
        return ((0..<count).map { ByteWriter.float(bytes, at: CodecHeader.size + 4 * $0) }, header.rows, header.columns)
    }
}

/// Blockwise absmax quantisation (as bitsandbytes' blockwise 8-bit): the flattened values in blocks of 64,
/// each with a Float32 scale s = max|x| / (2^(b−1) − 1) and q = round(x / s) ∈ [−(2^(b−1) − 1), 2^(b−1) − 1],
/// stored in b bits (two's complement; 4-bit values two to a byte, low nibble first). Error ≤ s / 2.
/// Rounding is half to even (as numpy).
public struct BlockwiseQuantizationCodec: TensorCodec {
    public let bits: Int
    public static let blockSize = 64
    public var name: String { "q\(bits)" }
    public let supportsSecureAggregation = false

    public init(bits: Int) {
        precondition(bits == 8 || bits == 4, "BlockwiseQuantizationCodec: bits must be 8 or 4")
        self.bits = bits
    }

    var levels: Float { Float((1 << (bits - 1)) - 1) }

    func payloadSize(_ count: Int) -> Int {
        let blocks = (count + Self.blockSize - 1) / Self.blockSize
        return blocks * 4 + (bits == 8 ? count : (count + 1) / 2)
    }

    public func encode(_ values: [Float], rows: Int, columns: Int) throws -> [UInt8] {
        guard values.count == rows * columns else { throw CodecError("\(name): \(values.count) values for \(rows) × \(columns)") }
        if let bad = values.firstIndex(where: { !$0.isFinite }) { throw CodecError("\(name): value \(values[bad]) at index \(bad)") }
        var out = CodecHeader(codec: UInt8(bits), parameter: UInt8(Self.blockSize), rows: rows, columns: columns).bytes()
        var codes: [Int8] = []
        codes.reserveCapacity(values.count)
        var start = 0
        while start < values.count {
            let end = min(values.count, start + Self.blockSize)
            let absmax = values[start..<end].reduce(Float(0)) { max($0, abs($1)) }
            let scale = absmax / levels
            ByteWriter.append(scale, to: &out)
            for value in values[start..<end] {
                codes.append(scale > 0 ? Int8(max(-levels, min(levels, (value / scale).rounded(.toNearestOrEven)))) : 0)
            }
            start = end
        }
        if bits == 8 {
            out += codes.map { UInt8(bitPattern: $0) }
        } else {
            var index = 0
            while index < codes.count {
                let low = UInt8(bitPattern: codes[index]) & 0x0F
                let high = index + 1 < codes.count ? UInt8(bitPattern: codes[index + 1]) & 0x0F : 0
                out.append(low | high << 4)
                index += 2
            }
        }
        return out
    }

    public func decode(_ bytes: [UInt8]) throws -> (values: [Float], rows: Int, columns: Int) {
        let header = try CodecHeader.read(bytes, codec: UInt8(bits), name: name)
        let count = header.rows * header.columns
        guard Int(header.parameter) == Self.blockSize else { throw CodecError("\(name): block size \(header.parameter), expected \(Self.blockSize)") }
        guard bytes.count == CodecHeader.size + payloadSize(count) else {
            throw CodecError("\(name): \(bytes.count) bytes for \(header.rows) × \(header.columns) values (expected \(CodecHeader.size + payloadSize(count)))")
        }
        let blocks = (count + Self.blockSize - 1) / Self.blockSize
        let codesStart = CodecHeader.size + 4 * blocks
        var values = [Float](repeating: 0, count: count)
        for block in 0..<blocks {
            let scale = ByteWriter.float(bytes, at: CodecHeader.size + 4 * block)
            guard scale.isFinite, scale >= 0 else { throw CodecError("\(name): block \(block) has scale \(scale)") }
            for index in (block * Self.blockSize)..<min(count, (block + 1) * Self.blockSize) {
                let code: Int8
                if bits == 8 {
                    code = Int8(bitPattern: bytes[codesStart + index])
                } else {
                    let byte = bytes[codesStart + index / 2]
                    let nibble = index % 2 == 0 ? byte & 0x0F : byte >> 4
                    code = Int8(bitPattern: nibble << 4) >> 4
                }
                values[index] = Float(code) * scale
            }
        }
        return (values, header.rows, header.columns)
    }
}

/// k-means over the rows (a codebook of k rows of d values, Float32) and each row's centroid index packed
/// at ⌈log₂ k⌉ bits, LSB first. Rows of an update or of activations become their centroid. Not linear:
/// it cannot be combined with secure aggregation.
public struct KMeansCodec: TensorCodec {
    public let clusters: Int
    public let iterations: Int
    public let seed: UInt64
    public var name: String { "kmeans-\(clusters)" }
    public let supportsSecureAggregation = false

    public init(clusters: Int, iterations: Int = 10, seed: UInt64 = 0) {
        self.clusters = clusters
        self.iterations = iterations
        self.seed = seed
    }

    static func bits(for k: Int) -> Int { k <= 1 ? 0 : Int.bitWidth - (k - 1).leadingZeroBitCount }

    public func encode(_ values: [Float], rows: Int, columns: Int) throws -> [UInt8] {
        guard values.count == rows * columns, rows >= 1 else { throw CodecError("\(name): \(values.count) values for \(rows) × \(columns)") }
        let k = min(clusters, rows)
        let result: KMeans.Result
        do {
            result = try KMeans(clusters: k, iterations: iterations, seed: seed).fit(values, rows: rows, columns: columns)
        } catch {
            throw CodecError("\(name): \(error)")
        }
        var out = CodecHeader(codec: 100, parameter: 0, rows: rows, columns: columns).bytes()
        ByteWriter.append(UInt32(k), to: &out)
        for value in result.centroids { ByteWriter.append(value, to: &out) }
        out += BitPacking.pack(result.assignments.map { UInt32($0) }, bits: Self.bits(for: k))
        return out
    }

    public func decode(_ bytes: [UInt8]) throws -> (values: [Float], rows: Int, columns: Int) {
        let header = try CodecHeader.read(bytes, codec: 100, name: "kmeans")
        guard bytes.count >= CodecHeader.size + 4 else { throw CodecError("kmeans: no centroid count after the header") }
        let k = Int(ByteWriter.uint32(bytes, at: CodecHeader.size))
        guard k >= 1, k <= max(1, header.rows) else { throw CodecError("kmeans: \(k) centroids for \(header.rows) rows") }
        let bits = Self.bits(for: k)
        let codebookStart = CodecHeader.size + 4, indexStart = codebookStart + 4 * k * header.columns
        let expected = indexStart + (header.rows * bits + 7) / 8
        guard bytes.count == expected else {
            throw CodecError("kmeans: \(bytes.count) bytes for \(k) centroids of \(header.columns) and \(header.rows) indices of \(bits) bits (expected \(expected))")
        }
        let codebook = (0..<(k * header.columns)).map { ByteWriter.float(bytes, at: codebookStart + 4 * $0) }
        let indices = BitPacking.unpack(Array(bytes[indexStart...]), bits: bits, count: header.rows)
        var values: [Float] = []
        values.reserveCapacity(header.rows * header.columns)
        for (row, index) in indices.enumerated() {
            guard Int(index) < k else { throw CodecError("kmeans: row \(row) names centroid \(index) of \(k)") }
            values += codebook[(Int(index) * header.columns)..<((Int(index) + 1) * header.columns)]
        }
        return (values, header.rows, header.columns)
    }
}

/// Unsigned integers of `bits` bits each (0 ... 32), packed LSB first into bytes.
public enum BitPacking {
    public static func pack(_ values: [UInt32], bits: Int) -> [UInt8] {
        precondition(bits >= 0 && bits <= 32, "BitPacking: bits \(bits) outside 0 ... 32")
        var out = [UInt8](repeating: 0, count: (values.count * bits + 7) / 8)
        var position = 0
        for value in values {
            for bit in 0..<bits where value >> UInt32(bit) & 1 == 1 {
                out[(position + bit) / 8] |= 1 << UInt8((position + bit) % 8)
            }
            position += bits
        }
        return out
    }

    public static func unpack(_ bytes: [UInt8], bits: Int, count: Int) -> [UInt32] {
        precondition(bytes.count * 8 >= count * bits, "BitPacking: \(bytes.count) bytes cannot hold \(count) values of \(bits) bits")
        var out = [UInt32](repeating: 0, count: count)
        var position = 0
        for index in 0..<count {
            var value: UInt32 = 0
            for bit in 0..<bits where bytes[(position + bit) / 8] >> UInt8((position + bit) % 8) & 1 == 1 {
                value |= 1 << UInt32(bit)
            }
            out[index] = value
            position += bits
        }
        return out
    }
}

/// The minimum-cost assignment of a square cost matrix (the Hungarian method with potentials, O(n³);
/// Kuhn 1955, Munkres 1957): `assignment[i]` is the column given to row i. Aligns one client's centroids
/// with another's (or the global ones) by squared distance when their seeds do not already align them.
public enum HungarianMatching {
    /// - Throws: ``CodecError`` for a non-square or non-finite matrix.
    public static func assignment(cost: [[Double]]) throws -> [Int] {
        let n = cost.count
        guard cost.allSatisfy({ $0.count == n }) else { throw CodecError("Hungarian matching: the cost matrix must be square (\(n) rows)") }
        guard cost.allSatisfy({ $0.allSatisfy(\.isFinite) }) else { throw CodecError("Hungarian matching: the costs must be finite") }
        guard n > 0 else { return [] }
        // 1-based arrays of the classic potential formulation; p[j] = row matched to column j.
        var u = [Double](repeating: 0, count: n + 1), v = [Double](repeating: 0, count: n + 1)
        var p = [Int](repeating: 0, count: n + 1), way = [Int](repeating: 0, count: n + 1)
        for i in 1...n {
            p[0] = i
            var j0 = 0
            var minimum = [Double](repeating: .infinity, count: n + 1)
            var used = [Bool](repeating: false, count: n + 1)
            repeat {
                used[j0] = true
                let i0 = p[j0]
                var delta = Double.infinity, j1 = 0
                for j in 1...n where !used[j] {
                    let current = cost[i0 - 1][j - 1] - u[i0] - v[j]
                    if current < minimum[j] { minimum[j] = current; way[j] = j0 }
                    if minimum[j] < delta { delta = minimum[j]; j1 = j }
                }
                for j in 0...n {
                    if used[j] { u[p[j]] += delta; v[j] -= delta } else { minimum[j] -= delta }
                }
                j0 = j1
            } while p[j0] != 0
            repeat {
                let j1 = way[j0]
                p[j0] = p[j1]
                j0 = j1
            } while j0 != 0
        }
        var result = [Int](repeating: 0, count: n)
        for j in 1...n where p[j] > 0 { result[p[j] - 1] = j - 1 }
        return result
    }

    /// The permutation of `centroids` (k × d) that best matches `reference` (k × d) by total squared
    /// distance: `reordered[i]` is the centroid matched to reference centroid i.
    public static func align(_ centroids: [Float], to reference: [Float], clusters k: Int, columns d: Int) throws -> (reordered: [Float], permutation: [Int]) {
        guard centroids.count == k * d, reference.count == k * d else {
            throw CodecError("Hungarian matching: \(centroids.count) and \(reference.count) values for \(k) centroids of \(d)")
        }
        let cost = (0..<k).map { i in
            (0..<k).map { j in (0..<d).reduce(0.0) { let t = Double(reference[i * d + $1]) - Double(centroids[j * d + $1]); return $0 + t * t } }
        }
        let permutation = try assignment(cost: cost)
        return (permutation.flatMap { centroids[($0 * d)..<(($0 + 1) * d)] }, permutation)
    }
}
