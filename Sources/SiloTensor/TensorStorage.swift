#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// A reference-counted buffer of Float32 values: the memory behind one or more ``Tensor`` views.
///
/// Large buffers come from ``BufferPool`` and go back to it when the last reference drops, so a
/// training loop that allocates the same activations every step stops touching the system allocator
/// (and the kernel's page-fault path) after its first step.
public final class TensorStorage: @unchecked Sendable {
    /// First element. Valid for `count` elements; aligned to 64 bytes.
    public let pointer: UnsafeMutablePointer<Float>
    /// Number of Float32 elements.
    public let count: Int
    private let capacity: Int

    /// Allocates `count` uninitialised elements.
    public init(uninitializedCount count: Int) {
        precondition(count >= 0, "TensorStorage: negative element count \(count)")
        let (pointer, capacity) = BufferPool.shared.take(count)
        self.pointer = pointer
        self.count = count
        self.capacity = capacity
    }

    /// Allocates `count` elements set to `value`.
    public convenience init(count: Int, repeating value: Float) {
        self.init(uninitializedCount: count)
        if value == 0 {
            memset(pointer, 0, count * MemoryLayout<Float>.stride)
        } else {
            pointer.update(repeating: value, count: count)
        }
    }

    deinit {
        BufferPool.shared.give(pointer, capacity: capacity)
    }
}

/// A cache of freed large buffers, keyed by rounded capacity.
///
/// Small buffers (under 16 KiB) go straight to `malloc`. Larger ones are rounded up to one of four
/// sizes per power of two and kept for reuse, up to `limitBytes` in total (default 4 GiB, or
/// `SILO_POOL_MB`). Thread-safe.
public final class BufferPool: Sendable {
    public static let shared = BufferPool(limitBytes: {
        if let text = getenv("SILO_POOL_MB"), let megabytes = Int(String(cString: text)) {
            return max(0, megabytes) << 20
        }
        return 4 << 30
    }())

    private struct State: ~Copyable {
        var free: [Int: [UInt]] = [:]  // capacity -> addresses
        var cachedBytes = 0
    }

    private let state = Mutex(State())
    private let limitBytes: Int
    private static let smallLimit = 4096  // elements

    init(limitBytes: Int) {
        self.limitBytes = limitBytes
    }

    /// Bytes currently held in the cache (not in use by any tensor).
    public var cachedBytes: Int { state.withLock { $0.cachedBytes } }

    /// Releases every cached buffer back to the system.
    public func drain() {
        let buffers = state.withLock { state -> [UInt] in
            let all = state.free.values.flatMap { $0 }
            state.free.removeAll()
            state.cachedBytes = 0
            return all
        }
        for buffer in buffers { free(UnsafeMutableRawPointer(bitPattern: buffer)) }
    }

    static func roundedCapacity(_ count: Int) -> Int {
        if count <= smallLimit { return max(count, 1) }
        // Four buckets per power of two: waste at most 25%.
        let high = Int.bitWidth - 1 - count.leadingZeroBitCount  // floor(log2(count))
        let quarter = 1 << (high - 2)
        return (count + quarter - 1) / quarter * quarter
    }

    func take(_ count: Int) -> (UnsafeMutablePointer<Float>, Int) {
        let capacity = Self.roundedCapacity(count)
        if capacity > Self.smallLimit {
            let reused = state.withLock { state -> UInt? in
                guard var list = state.free[capacity], let buffer = list.popLast() else { return nil }
                state.free[capacity] = list
                state.cachedBytes -= capacity * 4
                return buffer
            }
            if let reused, let raw = UnsafeMutableRawPointer(bitPattern: reused) {
                return (raw.assumingMemoryBound(to: Float.self), capacity)
            }
        }
        var raw: UnsafeMutableRawPointer? = nil
        let status = posix_memalign(&raw, 64, capacity * MemoryLayout<Float>.stride)
        guard status == 0, let raw else {
            fatalError("Silo: out of memory allocating \(capacity * 4) bytes for a tensor")
        }
        return (raw.bindMemory(to: Float.self, capacity: capacity), capacity)
    }

    func give(_ pointer: UnsafeMutablePointer<Float>, capacity: Int) {
        let raw = UnsafeMutableRawPointer(pointer)
        if capacity > Self.smallLimit {
            let kept = state.withLock { state -> Bool in
                guard state.cachedBytes + capacity * 4 <= limitBytes else { return false }
                state.free[capacity, default: []].append(UInt(bitPattern: raw))
                state.cachedBytes += capacity * 4
                return true
            }
            if kept { return }
        }
        free(raw)
    }
}
