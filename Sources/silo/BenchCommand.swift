import ArgumentParser
import Foundation
import SiloModels
import SiloTensor
import CBLAS
import SiloCompression
import SiloData
import SiloFederation

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Benchmarks that print numbers (not tests).",
        subcommands: [TrainStep.self, GEMMShapes.self, KMeansBench.self, NetworkBench.self, GreedyBench.self]
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

/// `silo bench gemm-shapes`: every GEMM of one GPT-2 training step, timed alone — the floor that BLAS
/// sets for `train-step`.
struct GEMMShapes: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gemm-shapes",
        abstract: "Time each GEMM shape of a GPT-2 training step on its own (best of 3) and sum them."
    )

    @Option(help: "Transformer blocks.") var layers = 12
    @Option(help: "Hidden size.") var hidden = 768
    @Option(help: "Vocabulary size.") var vocab = 50257
    @Option(help: "Tokens per step (batch × sequence).") var tokens = 1024
    @Flag(help: "Print one JSON object.") var json = false

    func run() throws {
        let c = hidden, n = tokens, f = 4 * hidden
        // (name, transposeA, transposeB, M, N, K, count per step): forward y = x·Wᵀ, backward
        // dx = dy·W and dW = dyᵀ·x, for the four projections of a block and the tied LM head.
        var shapes: [(String, Bool, Bool, Int, Int, Int, Int)] = []
        for (name, outputs, inputs) in [("qkv", 3 * c, c), ("attn.proj", c, c), ("mlp.fc", f, c), ("mlp.proj", c, f)] {
            shapes.append(("\(name) forward", false, true, n, outputs, inputs, layers))
            shapes.append(("\(name) dinput", false, false, n, inputs, outputs, layers))
            shapes.append(("\(name) dweight", true, false, outputs, inputs, n, layers))
        }
        shapes += [("head forward", false, true, n, vocab, c, 1), ("head dinput", false, false, n, c, vocab, 1),
                   ("head dweight", true, false, vocab, c, n, 1)]
        let largest = shapes.map { max($0.3 * $0.5, $0.5 * $0.4, $0.3 * $0.4) }.max() ?? 1
        let a = Tensor.randomNormal([largest], key: RandomKey(seed: 1))
        let b = Tensor.randomNormal([largest], key: RandomKey(seed: 2))
        let out = Tensor.empty([largest])
        var rows: [[String: Any]] = []
        var total = 0.0, flops = 0.0
        for (name, ta, tb, m, nn, k, count) in shapes {
            var best = Double.infinity
            for _ in 0..<3 {
                let start = DispatchTime.now().uptimeNanoseconds
                MatMulKernel.gemm(transposeA: ta, transposeB: tb, m: m, n: nn, k: k, a: a.pointer, lda: ta ? m : k,
                                  b: b.pointer, ldb: tb ? k : nn, out: out.pointer, ldc: nn)
                best = min(best, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
            }
            let work = 2 * Double(m) * Double(nn) * Double(k)
            total += best * Double(count)
            flops += work * Double(count)
            rows.append(["name": name, "m": m, "n": nn, "k": k, "count": count, "seconds": best, "gflops": work / best / 1e9])
            if !json { print(String(format: "%-18@ %6d x %6d x %6d  x%-3d %7.1f GFLOP/s  %.4f s", name, m, nn, k, count, work / best / 1e9, best)) }
        }
        if json {
            try printJSON(["shapes": rows, "total_seconds": total, "total_gflop": flops / 1e9,
                           "gflops": flops / total / 1e9, "blas_core": SGEMMProbe.coreName])
        } else {
            print(String(format: "all GEMMs of one step: %.3f s for %.1f GFLOP = %.1f GFLOP/s (%@)", total, flops / 1e9,
                         flops / total / 1e9, SGEMMProbe.coreName))
        }
    }
}

/// `silo bench kmeans`: k-means++ and exactly I Lloyd iterations on the rows of a 2-D safetensors tensor.
struct KMeansBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kmeans",
        abstract: "Cluster the rows of a 2-D tensor (k-means++ seeding, exactly I Lloyd iterations unless converged); print seconds (without loading) and inertia."
    )

    @Option(help: "A .safetensors file.") var input: String
    @Option(help: "The name of a 2-D tensor in it.") var tensor: String
    @Option(help: "Clusters.") var k: Int
    @Option(help: "Lloyd iterations.") var iterations: Int = 20
    @Option(help: "Seed of the k-means++ initialisation.") var seed: UInt64 = 0
    @Flag(help: "Print one JSON object.") var json = false

    func run() throws {
        let file = try SafeTensorsFile(contentsOf: URL(fileURLWithPath: input))
        guard let info = file.info(tensor) else {
            throw ValidationError("\(input): no tensor named '\(tensor)' (it has \(file.names.prefix(5).joined(separator: ", "))\(file.names.count > 5 ? ", …" : ""))")
        }
        guard info.shape.count == 2 else { throw ValidationError("\(input): tensor '\(tensor)' has shape \(info.shape), expected 2-D (rows, columns)") }
        guard k >= 1, k <= info.shape[0] else { throw ValidationError("--k \(k) must be in 1 ... \(info.shape[0]) (the rows of '\(tensor)')") }
        let values = try file.tensor(tensor).toArray()
        let start = DispatchTime.now().uptimeNanoseconds
        let result = try KMeans(clusters: k, iterations: iterations, seed: seed).fit(values, rows: info.shape[0], columns: info.shape[1])
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        if json {
            print("{\"seconds\": \(seconds), \"inertia\": \(result.inertia), \"iterations\": \(result.iterations), \"rows\": \(info.shape[0]), \"columns\": \(info.shape[1]), \"k\": \(k)}")
        } else {
            print(String(format: "k-means: %d x %d into %d clusters, %d iterations: %.3f s, inertia %.6g", info.shape[0], info.shape[1], k, result.iterations, seconds, result.inertia))
        }
    }
}

/// `silo bench greedy`: the generation metrics' greedy decoding with a KV cache against recomputing the
/// whole sequence per token (what evaluation did before), same model, prompts and process.
struct GreedyBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "greedy",
        abstract: "Seconds of greedy decoding for the generation metrics (held-out prompts of a task): KV-cached vs recomputing every token; checks both give the same tokens."
    )

    @Option(help: "Model name or path.") var model = "smollm2-135m"
    @Option(help: "A generation task: xsum or fiqa.") var task = "xsum"
    @Option(help: "Held-out prompts (the first N).") var examples = 8
    @Option(help: "Prompt budget in tokens (data.max_length).") var maxLength = 256
    @Option(help: "New tokens at most (evaluation.max_new_tokens).") var maxNewTokens = 32
    @Flag(help: "Print one JSON object.") var json = false

    func run() throws {
        guard let name = TaskName(rawValue: task), !name.template.isClassification else {
            throw ValidationError("--task \(task): not a generation task (xsum or fiqa)")
        }
        guard examples >= 1 else { throw ValidationError("--examples must be at least 1") }
        let url = try ModelStore().resolve(model)
        let tokenizer = url.pathExtension.lowercased() == "gguf" ? try Tokenizer(ggufFile: GGUFFile(contentsOf: url)) : try Tokenizer(directory: url)
        let held = try DataStore().load(name).evaluation.prefix(examples)
        let prompts = try held.map { try name.template.encodePrompt($0, tokenizer: tokenizer, maxLength: maxLength) }
        let scorer = CentralizedScorer(part: try ModelPart(model: try Checkpoint.load(url), adapters: AdapterSpecification(lora: nil), key: RandomKey(seed: 0)))
        let stop = Set(tokenizer.eosTokenID.map { [Int32($0)] } ?? [])
        func timed(_ model: any LogProbabilityModel) throws -> (seconds: Double, outputs: [[Int32]]) {
            let start = DispatchTime.now().uptimeNanoseconds
            let outputs = try Evaluator.greedy(prompts, model: model, maxNewTokens: maxNewTokens, stop: stop)
            return (Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9, outputs)
        }
        let cached = try timed(scorer)
        let recomputed = try timed(RecomputingScorer(scorer))
        let tokens = cached.outputs.reduce(0) { $0 + $1.count }
        let same = cached.outputs == recomputed.outputs
        let promptTokens = prompts.reduce(0) { $0 + $1.count }
        if json {
            print("{\"examples\": \(prompts.count), \"prompt_tokens\": \(promptTokens), \"new_tokens\": \(tokens), \"cached_seconds\": \(cached.seconds), \"recomputed_seconds\": \(recomputed.seconds), \"speedup\": \(recomputed.seconds / cached.seconds), \"same_tokens\": \(same)}")
        } else {
            print(String(format: "greedy decoding, %@, %d prompts (%d prompt tokens), %d new tokens: KV cache %.2f s, recomputing %.2f s (%.1fx); same tokens: %@",
                         task, prompts.count, promptTokens, tokens, cached.seconds, recomputed.seconds, recomputed.seconds / cached.seconds, same ? "yes" : "NO"))
        }
        if !same { throw ExitCode(1) }
    }
}
