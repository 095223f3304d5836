#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Dispatch
import CBLAS

/// Thread settings for the kernels. GEMMs get their parallelism from OpenBLAS; the element-wise,
/// normalisation and attention kernels split their outer loop across ``threadCount`` workers.
public enum Parallel {
    /// Number of worker threads: `SILO_NUM_THREADS`, else `OPENBLAS_NUM_THREADS`, else the core count.
    public static let threadCount: Int = {
        for name in ["SILO_NUM_THREADS", "OPENBLAS_NUM_THREADS"] {
            if let text = getenv(name), let value = Int(String(cString: text)), value > 0 { return value }
        }
        return max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
    }()

    /// Runs `body` over `0..<count` split into contiguous chunks, in parallel when the work is large
    /// enough (`count * costPerItem` above about 32k operations). Chunks are fixed by `count` and the
    /// thread count, so results never depend on scheduling.
    @inline(__always)
    public static func forEachChunk(_ count: Int, costPerItem: Int = 1, _ body: (Range<Int>) -> Void) {
        let workers = min(threadCount, count)
        if workers <= 1 || count * costPerItem < 32_768 {
            if count > 0 { body(0..<count) }
            return
        }
        let chunk = (count + workers - 1) / workers
        withoutActuallyEscaping(body) { body in
            let box = UncheckedSendable(body)
            DispatchQueue.concurrentPerform(iterations: workers) { worker in
                let start = worker * chunk
                let end = min(count, start + chunk)
                if start < end { box.value(start..<end) }
            }
        }
    }

    /// Runs `body(i)` for every `i` in `0..<count` across workers (for independent heavy items).
    @inline(__always)
    public static func forEach(_ count: Int, _ body: (Int) -> Void) {
        if threadCount <= 1 || count <= 1 {
            for index in 0..<count { body(index) }
            return
        }
        withoutActuallyEscaping(body) { body in
            let box = UncheckedSendable(body)
            DispatchQueue.concurrentPerform(iterations: count) { box.value($0) }
        }
    }
}

/// Wraps a value that is safe to share because the caller guarantees disjoint access (kernels write
/// disjoint ranges of their outputs from different workers).
public struct UncheckedSendable<Value>: @unchecked Sendable {
    public let value: Value
    public init(_ value: Value) { self.value = value }
}
