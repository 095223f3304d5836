import Foundation
import Synchronization

/// The BPE model: initial symbols of a pre-token, then merges by rank, as Hugging Face `tokenizers`
/// (`models::bpe::Word::merge_all`) and llama.cpp (`llm_tokenizer_bpe` / `llm_tokenizer_spm`) do.
///
/// The merge loop takes, among the adjacent pairs that have a merge, the one of lowest rank, leftmost
/// on ties, until none is left. Ranks come from a merges list (byte-level BPE, Hugging Face files)
/// or from token scores (SentencePiece vocabularies in GGUF files: a pair merges when its
/// concatenation is a token, higher score first; see ``scoreMerges(tokens:scores:types:vocabulary:)``).
///
/// Symbols are the bytes of the pre-token (byte-level: each byte stands for its GPT-2 character) or
/// its Unicode scalars (SentencePiece). A scalar without a token becomes its `<0xXX>` byte tokens
/// under byte fallback, else the unknown token (consecutive ones fused when `fuseUnknown`), else it
/// is dropped, exactly as `tokenizers` does.
final class BytePairEncoding: Sendable {
    /// Token strings by id (the model's vocabulary; ids of added tokens beyond it are not here).
    let tokens: [String]
    /// Ids by token string.
    let vocabulary: Vocabulary
    /// `(left << 32) | right` -> `(rank << 32) | merged`.
    let merges: [UInt64: UInt64]
    /// Byte-level symbols (true) or Unicode scalars (false).
    let byteLevel: Bool
    /// Byte-level: the id of each byte's character, -1 if the vocabulary lacks it.
    let byteSymbols: [Int32]
    /// Scalar-level: ids of one-scalar tokens.
    let scalarSymbols: [UInt32: Int32]
    /// `<0xXX>` token ids when byte fallback is on (256 entries, -1 where missing), else empty.
    let byteFallback: [Int32]
    let unknownID: Int32?
    let fuseUnknown: Bool
    /// Emit a pre-token that is itself a token without merging (`ignore_merges`, Llama-3).
    let ignoreMerges: Bool

    /// Pre-token -> ids, for pre-tokens of at most `cacheableLength` bytes.
    private let cache = Mutex<[UInt64: CacheEntry]>([:])
    private static let cacheableLength = 64
    private static let cacheCapacity = 1 << 17

    init(tokens: [String], merges: [UInt64: UInt64], byteLevel: Bool, byteFallback: Bool,
         unknownID: Int32?, fuseUnknown: Bool, ignoreMerges: Bool, vocabulary: Vocabulary? = nil) {
        self.tokens = tokens
        let vocabulary = vocabulary ?? BytePairEncoding.vocabulary(of: tokens)
        self.vocabulary = vocabulary
        self.merges = merges
        self.byteLevel = byteLevel
        self.unknownID = unknownID
        self.fuseUnknown = fuseUnknown
        self.ignoreMerges = ignoreMerges
        if byteLevel {
            byteSymbols = ByteLevelMap.characters.map { vocabulary[String($0)] ?? -1 }
            scalarSymbols = [:]
        } else {
            byteSymbols = []
            var scalars: [UInt32: Int32] = [:]
            for (key, id) in vocabulary.ids {
                let view = key.text.unicodeScalars
                if let first = view.first, view.index(after: view.startIndex) == view.endIndex { scalars[first.value] = id }
            }
            scalarSymbols = scalars
        }
        if byteFallback {
            self.byteFallback = (0..<256).map { vocabulary[BytePairEncoding.byteToken(UInt8($0))] ?? -1 }
        } else {
            self.byteFallback = []
        }
    }

    /// `<0x0A>`: the byte-fallback token of a byte (two upper-case hex digits, as `tokenizers`).
    static func byteToken(_ byte: UInt8) -> String {
        let digits = Array("0123456789ABCDEF")
        return "<0x\(digits[Int(byte >> 4)])\(digits[Int(byte & 15)])>"
    }

    /// Ids by string; on a duplicated string the lowest id wins.
    static func vocabulary(of tokens: [String]) -> Vocabulary {
        var vocabulary = Vocabulary(minimumCapacity: tokens.count)
        for (id, token) in tokens.enumerated() where vocabulary[token] == nil { vocabulary[token] = Int32(id) }
        return vocabulary
    }

    @inline(__always)
    static func pairKey(_ left: Int32, _ right: Int32) -> UInt64 {
        UInt64(UInt32(bitPattern: left)) << 32 | UInt64(UInt32(bitPattern: right))
    }

    /// Appends the ids of one pre-token, the UTF-8 bytes `bytes[range]`, to `output`.
    func encode(_ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>, into output: inout [Int32]) {
        guard !range.isEmpty, let base = bytes.baseAddress else { return }
        guard range.count <= BytePairEncoding.cacheableLength else {
            encodeUncached(base, range, into: &output)
            return
        }
        let word = UnsafeRawBufferPointer(start: base + range.lowerBound, count: range.count)
        let key = BytePairEncoding.hash(word)
        let hit: [Int32]? = cache.withLock { table in
            guard let entry = table[key], entry.bytes.elementsEqual(word) else { return nil }
            return entry.ids
        }
        if let hit {
            output.append(contentsOf: hit)
            return
        }
        let start = output.count
        encodeUncached(base, range, into: &output)
        let entry = CacheEntry(bytes: Array(word), ids: Array(output[start...]))
        cache.withLock { table in
            if table.count >= BytePairEncoding.cacheCapacity { table.removeAll(keepingCapacity: true) }
            table[key] = entry
        }
    }

    /// FNV-1a over the bytes (the cache checks the bytes themselves on a hit).
    @inline(__always)
    static func hash(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in bytes {
            hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3
        }
        return hash
    }

    private func encodeUncached(_ p: UnsafePointer<UInt8>, _ range: Range<Int>, into output: inout [Int32]) {
        if ignoreMerges, let id = wholeToken(p, range) {
            output.append(id)
            return
        }
        var symbols = initialSymbols(p, range)
        merge(&symbols)
        output.append(contentsOf: symbols)
    }

    /// The id of the pre-token itself, if it is a token.
    private func wholeToken(_ p: UnsafePointer<UInt8>, _ range: Range<Int>) -> Int32? {
        let buffer = UnsafeBufferPointer(start: p + range.lowerBound, count: range.count)
        let text = byteLevel ? ByteLevelMap.encode(buffer) : String(decoding: buffer, as: UTF8.self)
        return vocabulary[text]
    }

    /// The symbols a pre-token starts as (see the type's documentation for unknown scalars).
    private func initialSymbols(_ p: UnsafePointer<UInt8>, _ range: Range<Int>) -> [Int32] {
        var symbols: [Int32] = []
        symbols.reserveCapacity(range.count)
        var pendingUnknown = false
        var i = range.lowerBound
        while i < range.upperBound {
            let id: Int32
            let length: Int
            if byteLevel {
                id = byteSymbols[Int(p[i])]
                length = 1
            } else {
                let (value, n) = Scanner.scalar(p, i)
                id = scalarSymbols[value] ?? -1
                length = n
            }
            defer { i += length }
            if id >= 0 {
                if pendingUnknown, let unknownID { symbols.append(unknownID) }
                pendingUnknown = false
                symbols.append(id)
                continue
            }
            if !byteFallback.isEmpty {
                var fallback: [Int32] = []
                for k in i..<(i + length) {
                    let byteID = byteFallback[Int(p[k])]
                    if byteID < 0 { break }
                    fallback.append(byteID)
                }
                if fallback.count == length {
                    // `tokenizers` adds byte tokens without first flushing a pending unknown token.
                    symbols.append(contentsOf: fallback)
                    continue
                }
            }
            if let unknownID {
                if pendingUnknown && !fuseUnknown { symbols.append(unknownID) }
                pendingUnknown = true
            }
        }
        if pendingUnknown, let unknownID { symbols.append(unknownID) }
        return symbols
    }

    /// Merges adjacent symbols in place: lowest rank first, leftmost on ties.
    func merge(_ symbols: inout [Int32]) {
        if symbols.count < 2 || merges.isEmpty { return }
        if symbols.count <= 48 {
            mergeByScanning(&symbols)
        } else {
            mergeWithHeap(&symbols)
        }
    }

    /// O(n²) merge for short words: rescans the pairs after each merge.
    private func mergeByScanning(_ symbols: inout [Int32]) {
        // ranks[k]: the (rank << 32 | merged) of pair (k, k + 1), or UInt64.max.
        var ranks = [UInt64](repeating: .max, count: symbols.count - 1)
        for k in 0..<(symbols.count - 1) {
            ranks[k] = merges[BytePairEncoding.pairKey(symbols[k], symbols[k + 1])] ?? .max
        }
        while true {
            var best = UInt64.max
            var at = -1
            for k in 0..<ranks.count where ranks[k] >> 32 < best >> 32 {
                best = ranks[k]
                at = k
            }
            if at < 0 { return }
            symbols[at] = Int32(truncatingIfNeeded: best & 0xFFFF_FFFF)
            symbols.remove(at: at + 1)
            ranks.remove(at: at)
            if at > 0 { ranks[at - 1] = merges[BytePairEncoding.pairKey(symbols[at - 1], symbols[at])] ?? .max }
            if at < ranks.count { ranks[at] = merges[BytePairEncoding.pairKey(symbols[at], symbols[at + 1])] ?? .max }
        }
    }

    /// O(n log n) merge for long words: a doubly linked list of symbols and a min-heap of candidate
    /// pairs keyed by `rank << 32 | position` (so ties go to the leftmost). A popped candidate is
    /// stale, and skipped, when its left symbol is gone or the pair there now has another rank; a
    /// pair that changed but kept the rank may merge from the old entry, which is the same
    /// (rank, position) its own entry has.
    private func mergeWithHeap(_ symbols: inout [Int32]) {
        let count = symbols.count
        precondition(count < Int(UInt32.max), "BytePairEncoding: a pre-token of \(count) symbols is too long")
        var previous = [Int](0..<count).map { $0 - 1 }
        var next = [Int](0..<count).map { $0 + 1 }
        var alive = [Bool](repeating: true, count: count)
        var heap = MergeHeap()
        heap.reserve(count)
        for k in 0..<(count - 1) {
            if let value = merges[BytePairEncoding.pairKey(symbols[k], symbols[k + 1])] {
                heap.push((value & 0xFFFF_FFFF_0000_0000) | UInt64(k))
            }
        }
        while let top = heap.pop() {
            let left = Int(top & 0xFFFF_FFFF)
            guard alive[left], next[left] < count else { continue }
            let right = next[left]
            guard let value = merges[BytePairEncoding.pairKey(symbols[left], symbols[right])],
                  value >> 32 == top >> 32 else { continue }
            symbols[left] = Int32(truncatingIfNeeded: value & 0xFFFF_FFFF)
            alive[right] = false
            next[left] = next[right]
            if next[right] < count { previous[next[right]] = left }
            if previous[left] >= 0 {
                let before = previous[left]
                if let value = merges[BytePairEncoding.pairKey(symbols[before], symbols[left])] {
                    heap.push((value & 0xFFFF_FFFF_0000_0000) | UInt64(before))
                }
            }
            if next[left] < count {
                if let value = merges[BytePairEncoding.pairKey(symbols[left], symbols[next[left]])] {
                    heap.push((value & 0xFFFF_FFFF_0000_0000) | UInt64(left))
                }
            }
        }
        var result: [Int32] = []
        result.reserveCapacity(count)
        var k = 0
        while k < count {
            result.append(symbols[k])
            k = next[k]
        }
        symbols = result
    }

    // MARK: Building merge tables

    /// The merge table of a merges list (`"a b"` strings or `[a, b]` pairs as strings): rank = index.
    /// - Throws: a description of the first bad entry (the caller names the file).
    static func rankMerges(_ pairs: [(String, String)], vocabulary: Vocabulary) throws -> [UInt64: UInt64] {
        var table: [UInt64: UInt64] = [:]
        table.reserveCapacity(pairs.count)
        for (rank, (left, right)) in pairs.enumerated() {
            guard let leftID = vocabulary[left], let rightID = vocabulary[right] else {
                throw BPEBuildError("merge \(rank) ('\(left) \(right)') uses a token that is not in the vocabulary")
            }
            guard let merged = vocabulary[left + right] else {
                throw BPEBuildError("merge \(rank) ('\(left) \(right)') makes '\(left + right)', which is not in the vocabulary")
            }
            let key = pairKey(leftID, rightID)
            if table[key] == nil { table[key] = UInt64(rank) << 32 | UInt64(UInt32(bitPattern: merged)) }
        }
        return table
    }

    /// Splits `"a b"` merges at their single space.
    static func splitMerges(_ merges: [String]) throws -> [(String, String)] {
        var pairs: [(String, String)] = []
        pairs.reserveCapacity(merges.count)
        for (index, merge) in merges.enumerated() {
            let parts = merge.split(separator: " ", omittingEmptySubsequences: false)
            guard parts.count == 2 else {
                throw BPEBuildError("merge \(index) ('\(merge)') is not two tokens separated by one space")
            }
            pairs.append((String(parts[0]), String(parts[1])))
        }
        return pairs
    }

    /// The merge table of a SentencePiece vocabulary with scores (llama.cpp's `llm_tokenizer_spm`):
    /// every split of a token into two tokens is a merge, ranked by the merged token's score (higher
    /// first; equal scores share a rank, so the leftmost pair wins, as in llama.cpp). Only normal
    /// tokens (type 1, or every token when `types` is nil) are merge results.
    static func scoreMerges(tokens: [String], scores: [Float], types: [Int]?, vocabulary: Vocabulary) -> [UInt64: UInt64] {
        var candidates: [(score: Float, left: Int32, right: Int32, merged: Int32)] = []
        for (id, token) in tokens.enumerated() {
            if let types, id < types.count, types[id] != 1 { continue }
            let scalars = Array(token.unicodeScalars)
            if scalars.count < 2 { continue }
            for cut in 1..<scalars.count {
                var left = String.UnicodeScalarView()
                left.append(contentsOf: scalars[..<cut])
                guard let leftID = vocabulary[String(left)] else { continue }
                var right = String.UnicodeScalarView()
                right.append(contentsOf: scalars[cut...])
                guard let rightID = vocabulary[String(right)] else { continue }
                candidates.append((id < scores.count ? scores[id] : 0, leftID, rightID, Int32(id)))
            }
        }
        candidates.sort { $0.score > $1.score }
        var table: [UInt64: UInt64] = [:]
        table.reserveCapacity(candidates.count)
        var rank: UInt64 = 0
        var previousScore = candidates.first?.score ?? 0
        for candidate in candidates {
            if candidate.score != previousScore {
                rank += 1
                previousScore = candidate.score
            }
            let key = pairKey(candidate.left, candidate.right)
            if table[key] == nil { table[key] = rank << 32 | UInt64(UInt32(bitPattern: candidate.merged)) }
        }
        return table
    }
}

/// A token string hashed and compared by its UTF-8 bytes. Swift's `String` equality is canonical
/// equivalence, under which distinct tokens such as "é" (U+00E9) and "e\u{301}" would be one key;
/// tokenizers compare bytes. Hashing bytes is also much faster for non-ASCII strings (`Ġthe`).
struct TokenKey: Hashable, Sendable {
    let text: String

    init(_ text: String) {
        var text = text
        text.makeContiguousUTF8()
        self.text = text
    }

    static func == (a: TokenKey, b: TokenKey) -> Bool {
        var a = a.text
        var b = b.text
        return a.withUTF8 { x in
            b.withUTF8 { y in
                guard x.count == y.count, let p = x.baseAddress, let q = y.baseAddress else { return x.count == y.count }
                return memcmp(p, q, x.count) == 0
            }
        }
    }

    func hash(into hasher: inout Hasher) {
        var text = self.text
        text.withUTF8 { hasher.combine(bytes: UnsafeRawBufferPointer($0)) }
    }
}

/// Token ids by token string, compared byte for byte (see ``TokenKey``).
struct Vocabulary: Sendable {
    private(set) var ids: [TokenKey: Int32] = [:]

    init(minimumCapacity: Int = 0) { ids.reserveCapacity(minimumCapacity) }

    subscript(text: String) -> Int32? {
        get { ids[TokenKey(text)] }
        set { ids[TokenKey(text)] = newValue }
    }

    var count: Int { ids.count }
}

/// A cached pre-token: its bytes (to rule out hash collisions) and its ids.
struct CacheEntry: Sendable {
    let bytes: [UInt8]
    let ids: [Int32]
}

/// A problem in a vocabulary or merges list; the loader adds the file name.
struct BPEBuildError: Error {
    let message: String
    init(_ message: String) { self.message = message }
}

/// A binary min-heap of merge candidates, `rank << 32 | position`.
struct MergeHeap {
    private var items: [UInt64] = []

    mutating func reserve(_ capacity: Int) { items.reserveCapacity(capacity) }

    mutating func push(_ item: UInt64) {
        items.append(item)
        items.withUnsafeMutableBufferPointer { heap in
            var child = heap.count - 1
            while child > 0 {
                let parent = (child - 1) / 2
                if heap[parent] <= item { break }
                heap[child] = heap[parent]
                child = parent
            }
            heap[child] = item
        }
    }

    mutating func pop() -> UInt64? {
        guard let first = items.first else { return nil }
        let last = items.removeLast()
        if items.isEmpty { return first }
        items.withUnsafeMutableBufferPointer { heap in
            let count = heap.count
            var parent = 0
            while true {
                var child = 2 * parent + 1
                if child >= count { break }
                if child + 1 < count, heap[child + 1] < heap[child] { child += 1 }
                if last <= heap[child] { break }
                heap[parent] = heap[child]
                parent = child
            }
            heap[parent] = last
        }
        return first
    }
}
