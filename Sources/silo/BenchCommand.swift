import ArgumentParser
import Foundation
import SiloModels
import SiloTensor
import CBLAS

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Benchmarks that print numbers (not tests).",
        subcommands: [TrainStep.self]
    )
}

/// `silo bench train-step`: forward + backward + AdamW on a GPT-2-shaped model with random weights.
struct TrainStep: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train-step",
        abstract: "Time training steps of a GPT-2-shaped model (forward, backward, AdamW) and report MFU."
    )

    @Option(help: "Transformer blocks.") var layers = 12
    @Option(help: "Hidden size (n_embd).") var hidden = 768
    @Option(help: "Attention heads.") var heads = 12
    @Option(help: "Vocabulary size.") var vocab = 50257
    @Option(help: "Sequences per step.") var batch = 4
    @Option(help: "Tokens per sequence.") var seq = 256
    @Option(help: "Timed steps (after one warm-up step).") var steps = 5
    @Option(help: "Random seed.") var seed: UInt64 = 1
    @Flag(help: "Print one JSON object instead of text.") var json = false

    func validate() throws {
        guard layers > 0, hidden > 0, heads > 0, vocab > 0, batch > 0, seq > 0, steps > 0 else {
            throw ValidationError("every size and --steps must be positive")
        }
        guard hidden % heads == 0 else { throw ValidationError("--hidden \(hidden) is not divisible by --heads \(heads)") }
    }

    struct Report: Encodable {
        let tokensPerSecond: Double
        let stepSeconds: Double
        let stepSecondsAll: [Double]
        let gflops: Double
        let sgemmGflops: Double
        let mfu: Double
        let parameters: Int
        let flopsPerStep: Double
        let threads: Int
        let peakRSSMiB: Double
        let losses: [Float]
        let forwardSeconds: Double
        let backwardSeconds: Double
        let optimizerSeconds: Double
        let blasCore: String
        let blasCheckError: Double
        enum CodingKeys: String, CodingKey {
            case tokensPerSecond = "tokens_per_second", stepSeconds = "step_seconds", stepSecondsAll = "step_seconds_all"
            case gflops, sgemmGflops = "sgemm_gflops", mfu, parameters, flopsPerStep = "flops_per_step"
            case threads, peakRSSMiB = "peak_rss_mib", losses, forwardSeconds = "forward_seconds"
            case backwardSeconds = "backward_seconds", optimizerSeconds = "optimizer_seconds", blasCore = "blas_core"
            case blasCheckError = "blas_check_error"
        }
    }

    func run() throws {
        let configuration = GPT2Configuration(vocabularySize: vocab, maximumPositions: seq, hiddenSize: hidden,
                                              layerCount: layers, headCount: heads)
        let key = RandomKey(seed: seed)
        let model = try GPT2Model(configuration: configuration, key: key.split("weights"))
        let optimizer = try AdamW(parameters: model.parameters, learningRate: 1e-4, betas: (0.9, 0.999),
                              epsilon: 1e-8, weightDecay: 0.01)
        var generator = SeededGenerator(key: key.split("data"))
        let ids = (0..<(batch * seq)).map { _ in Int32(generator.next() % UInt64(vocab)) }
        var targets = Array(ids.dropFirst()) + [-100]
        for row in 1...batch { targets[row * seq - 1] = -100 }

        var times: [Double] = []
        var phases: [[Double]] = [[], [], []]  // forward, backward, optimizer
        var losses: [Float] = []
        func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }
        for step in 0...steps {
            let start = now()
            optimizer.zeroGrad()
            let loss = try model.loss(ids: ids, targets: targets, batch: batch, time: seq)
            let forwardEnd = now()
            try loss.backward()
            let backwardEnd = now()
            try optimizer.step()
            let end = now()
            let seconds = Double(end - start) / 1e9
            losses.append(loss.scalar)
            if step > 0 {
                times.append(seconds)
                phases[0].append(Double(forwardEnd - start) / 1e9)
                phases[1].append(Double(backwardEnd - forwardEnd) / 1e9)
                phases[2].append(Double(end - backwardEnd) / 1e9)
            }
            if !json {
                print(String(format: "step %d: loss %.4f, %.3f s%@", step, loss.scalar, seconds, step == 0 ? " (warm-up)" : ""))
            }
        }
        func middle(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }
        let median = middle(times)
        let tokens = Double(batch * seq)
        // Model FLOPs: 6·N per token for every weight (tied LM head counted once as a matmul) plus
        // attention's 12·L·C·T per token (QKᵀ and PV, forward and backward, full square as in PaLM).
        let n = Double(configuration.parameterCount)
        let flops = 6 * n * tokens + 12 * Double(layers) * Double(hidden) * Double(seq) * tokens
        let blasError = SGEMMProbe.verify()
        guard blasError < 1e-4 else {
            throw ValidationError("OpenBLAS (\(SGEMMProbe.coreName) kernels) computed a product with relative error \(blasError): this BLAS build is unsafe on this CPU; set OPENBLAS_CORETYPE to another kernel family")
        }
        let sgemm = SGEMMProbe.measure()
        let gflops = flops / median / 1e9
        let report = Report(tokensPerSecond: tokens / median, stepSeconds: median, stepSecondsAll: times,
                            gflops: gflops, sgemmGflops: sgemm, mfu: gflops / sgemm,
                            parameters: configuration.parameterCount, flopsPerStep: flops,
                            threads: Parallel.threadCount, peakRSSMiB: ResourceUsage.peakResidentMiB(),
                            losses: losses, forwardSeconds: middle(phases[0]), backwardSeconds: middle(phases[1]),
                            optimizerSeconds: middle(phases[2]), blasCore: SGEMMProbe.coreName,
                            blasCheckError: blasError)
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
        } else {
            print(String(format: "%.1f tokens/s, %.3f s/step (forward %.3f, backward %.3f, optimizer %.3f), %.1f GFLOP/s model, %.1f GFLOP/s sgemm (%@), MFU %.2f, peak RSS %.0f MiB",
                         report.tokensPerSecond, median, report.forwardSeconds, report.backwardSeconds,
                         report.optimizerSeconds, gflops, sgemm, report.blasCore, report.mfu, report.peakRSSMiB))
        }
    }
}

/// The BLAS rate on a 1024×768×3072 product in this process (best of several timed runs).
enum SGEMMProbe {
    /// OpenBLAS's kernel family in use (OPENBLAS_CORETYPE or auto-detected).
    static var coreName: String { openblas_get_corename().map { String(cString: $0) } ?? "unknown" }

    /// Largest error of sgemm against a Float64 reference over the four transpose combinations of an
    /// odd-sized product, relative to the largest |entry| of the result: catches a BLAS kernel family
    /// that computes wrong results on this CPU.
    static func verify(m: Int = 67, n: Int = 129, k: Int = 257) -> Double {
        let a = Tensor.randomNormal([m * k], key: RandomKey(seed: 21)).toArray()
        let b = Tensor.randomNormal([k * n], key: RandomKey(seed: 22)).toArray()
        var worst = 0.0
        for transposeA in [false, true] {
            for transposeB in [false, true] {
                var out = [Float](repeating: 0, count: m * n)
                a.withUnsafeBufferPointer { pa in
                    b.withUnsafeBufferPointer { pb in
                        out.withUnsafeMutableBufferPointer { po in
                            MatMulKernel.gemm(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k,
                                              a: pa.baseAddress!, lda: transposeA ? m : k,
                                              b: pb.baseAddress!, ldb: transposeB ? k : n,
                                              out: po.baseAddress!, ldc: n)
                        }
                    }
                }
                var scale = 0.0, error = 0.0
                for i in 0..<m {
                    for j in 0..<n {
                        var reference = 0.0
                        for p in 0..<k {
                            let x = Double(transposeA ? a[p * m + i] : a[i * k + p])
                            let y = Double(transposeB ? b[j * k + p] : b[p * n + j])
                            reference += x * y
                        }
                        scale = max(scale, abs(reference))
                        error = max(error, abs(reference - Double(out[i * n + j])))
                    }
                }
                worst = max(worst, error / max(scale, 1e-30))
            }
        }
        return worst
    }

    static func measure(m: Int = 1024, k: Int = 768, n: Int = 3072, repeats: Int = 8) -> Double {
        let a = Tensor.randomNormal([m, k], key: RandomKey(seed: 11))
        let b = Tensor.randomNormal([k, n], key: RandomKey(seed: 12))
        let out = Tensor.empty([m, n])
        var best = Double.infinity
        for _ in 0..<repeats {
            let start = DispatchTime.now().uptimeNanoseconds
            MatMulKernel.gemm(transposeA: false, transposeB: false, m: m, n: n, k: k,
                              a: a.pointer, lda: k, b: b.pointer, ldb: n, out: out.pointer, ldc: n)
            best = min(best, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        }
        return 2 * Double(m) * Double(n) * Double(k) / best / 1e9
    }
}

enum ResourceUsage {
    /// Peak resident set size of this process in MiB (getrusage; Linux reports KiB).
    static func peakResidentMiB() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Double(usage.ru_maxrss) / 1024
    }
}
