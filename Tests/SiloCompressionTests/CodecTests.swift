import Foundation
import XCTest
@testable import SiloCompression

/// Codecs against numpy (blockwise quantisation) and scipy (Hungarian matching), round trips, byte
/// counts, malformed encodings and the secure-aggregation rule.
final class CodecTests: XCTestCase {
    struct Fixture: Decodable {
        struct Hungarian: Decodable { var cost: [[Double]]; var assignment: [Int]; var total: Double }
        struct Blockwise: Decodable { var bits: Int; var values: [Float]; var decoded: [Float] }
        var hungarian: [Hungarian]
        var blockwise: [Blockwise]
    }

    static let fixture: Fixture = {
        let url = Bundle.module.url(forResource: "codecs", withExtension: "json", subdirectory: "Fixtures")!
        return try! JSONDecoder().decode(Fixture.self, from: Data(contentsOf: url))
    }()

    func testHungarianMatchesScipy() throws {
        for case_ in Self.fixture.hungarian {
            let assignment = try HungarianMatching.assignment(cost: case_.cost)
            XCTAssertEqual(assignment, case_.assignment, "n = \(case_.cost.count)")
            let total = assignment.enumerated().reduce(0.0) { $0 + case_.cost[$1.offset][$1.element] }
            XCTAssertEqual(total, case_.total, accuracy: 1e-9)
        }
        XCTAssertThrowsError(try HungarianMatching.assignment(cost: [[1, 2], [3]])) { XCTAssertTrue("\($0)".contains("square"), "\($0)") }
    }

    func testAlignmentUndoesAPermutationOfCentroids() throws {
        let k = 6, d = 3
        let reference = (0..<(k * d)).map { Float($0 % 7) * 1.5 + Float($0 / 3) }
        let shuffle = [3, 0, 5, 1, 4, 2]
        let permuted = shuffle.flatMap { reference[($0 * d)..<(($0 + 1) * d)] }.map { $0 + 0.01 }
        let (reordered, _) = try HungarianMatching.align(permuted, to: reference, clusters: k, columns: d)
        for (a, b) in zip(reordered, reference) { XCTAssertEqual(a, b + 0.01, accuracy: 1e-6) }
    }

    func testBlockwiseQuantizationMatchesNumpy() throws {
        for case_ in Self.fixture.blockwise {
            let codec = BlockwiseQuantizationCodec(bits: case_.bits)
            let bytes = try codec.encode(case_.values, rows: 1, columns: case_.values.count)
            // Header 16, three block scales, then the codes.
            XCTAssertEqual(bytes.count, 16 + 3 * 4 + (case_.bits == 8 ? 150 : 75))
            let (decoded, rows, columns) = try codec.decode(bytes)
            XCTAssertEqual([rows, columns], [1, 150])
            XCTAssertEqual(decoded, case_.decoded, "q\(case_.bits)")
        }
    }

    func testKMeansCodecRoundTripPacksIndices() throws {
        // 40 rows drawn around 5 distinct points: 5 centroids recover every row up to the spread.
        let d = 4, rows = 40
        let centres: [[Float]] = (0..<5).map { c in (0..<d).map { Float(c * 10 + $0) } }
        var values: [Float] = []
        for row in 0..<rows {
            let jitter = Float(row % 3) * 0.01
            values += centres[row % 5].map { $0 + jitter }
        }
        let codec = KMeansCodec(clusters: 5, seed: 1)
        let bytes = try codec.encode(values, rows: rows, columns: d)
        // Header 16 + k 4 + codebook 5·4·4 + 40 indices of 3 bits = 15 bytes.
        XCTAssertEqual(bytes.count, 16 + 4 + 80 + 15)
        let (decoded, _, _) = try codec.decode(bytes)
        for (a, b) in zip(decoded, values) { XCTAssertEqual(a, b, accuracy: 0.02) }
        XCTAssertEqual(KMeansCodec.bits(for: 1), 0)
        XCTAssertEqual(KMeansCodec.bits(for: 2), 1)
        XCTAssertEqual(KMeansCodec.bits(for: 16), 4)
        XCTAssertEqual(KMeansCodec.bits(for: 17), 5)
        let packed = BitPacking.pack([5, 0, 7, 3, 1], bits: 3)
        XCTAssertEqual(BitPacking.unpack(packed, bits: 3, count: 5), [5, 0, 7, 3, 1])
    }

    func testMalformedEncodingsAreRejected() throws {
        let codec = BlockwiseQuantizationCodec(bits: 8)
        let bytes = try codec.encode([1, 2, 3], rows: 1, columns: 3)
        XCTAssertThrowsError(try codec.decode(Array(bytes.dropLast()))) { XCTAssertTrue("\($0)".contains("q8: 22 bytes for 1 × 3 values (expected 23)"), "\($0)") }
        XCTAssertThrowsError(try codec.decode(Array(bytes.prefix(5)))) { XCTAssertTrue("\($0)".contains("shorter than the 16-byte header"), "\($0)") }
        var corrupted = bytes
        corrupted[0] = 0x58
        XCTAssertThrowsError(try codec.decode(corrupted)) { XCTAssertTrue("\($0)".contains("bad magic"), "\($0)") }
        XCTAssertThrowsError(try BlockwiseQuantizationCodec(bits: 4).decode(bytes)) { XCTAssertTrue("\($0)".contains("codec id 8, expected 4"), "\($0)") }
        var k = try KMeansCodec(clusters: 2).encode([0, 0, 1, 1, 0, 0.1], rows: 3, columns: 2)
        k[16] = 9  // the centroid count
        XCTAssertThrowsError(try KMeansCodec(clusters: 2).decode(k)) { XCTAssertTrue("\($0)".contains("9 centroids for 3 rows"), "\($0)") }
        XCTAssertThrowsError(try codec.encode([1, .nan], rows: 1, columns: 2)) { XCTAssertTrue("\($0)".contains("value nan at index 1"), "\($0)") }
        XCTAssertThrowsError(try makeCodec("zip")) { XCTAssertTrue("\($0)".contains("not one of none, q8, q4, kmeans-K"), "\($0)") }
    }

    func testOnlyTheIdentityCombinesWithSecureAggregation() throws {
        XCTAssertNoThrow(try checkSecureAggregationCompatible(makeCodec("none")))
        for name in ["q8", "q4", "kmeans-16"] {
            XCTAssertThrowsError(try checkSecureAggregationCompatible(makeCodec(name))) {
                XCTAssertTrue("\($0)".contains("cannot be combined with secure aggregation"), "\($0)")
            }
        }
        let identity = IdentityCodec()
        let (values, _, _) = try identity.decode(identity.encode([1.5, -2, 3], rows: 3, columns: 1))
        XCTAssertEqual(values, [1.5, -2, 3])
    }
}
