import ArgumentParser
import Foundation
import SiloModels
import SiloTensor

/// Options shared by the commands that load a model.
struct ModelOptions: ParsableArguments {
    @Option(help: "A model name (smollm2-135m), a .gguf file or a Hugging Face folder.")
    var model = "smollm2-135m"

    @Flag(help: "Print one JSON object.")
    var json = false
}

func printJSON(_ object: [String: Any]) throws {
    let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
    print(String(decoding: data, as: UTF8.self))
}

struct Models: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Fetch and locate models.",
        subcommands: [Fetch.self]
    )

    struct Fetch: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Download a known model into $SILO_HOME (default ~/.cache/silo) and print its path."
        )

        @Argument(help: "Model name: \(ModelStore.sources.keys.sorted().joined(separator: ", ")).")
        var name: String

        func run() throws {
            let url = try ModelStore().fetch(name) { message in
                FileHandle.standardError.write(Data((message + "\n").utf8))
            }
            print(url.path)
        }
    }
}

struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Generate text with a model (KV cache; greedy at temperature 0).")

    @OptionGroup var options: ModelOptions
    @Option(help: "The prompt.") var prompt: String
    @Option(name: .customLong("max-new-tokens"), help: "Tokens to generate.") var maxNewTokens = 64
    @Option(help: "Sampling temperature; 0 is greedy.") var temperature: Float = 0
    @Option(name: .customLong("top-k"), help: "Keep the k most likely tokens.") var topK: Int?
    @Option(name: .customLong("top-p"), help: "Keep the smallest set of tokens with this total probability.") var topP: Float?
    @Option(help: "Random seed for sampling.") var seed: UInt64 = 0
    @Option(name: .customLong("stop"), help: "Stop when the generated text contains this string (repeatable).")
    var stopStrings: [String] = []
    @Flag(help: "Wrap the prompt in the model's chat template as a user turn.") var chat = false
    @Flag(name: .customLong("ignore-eos"), help: "Do not stop at end-of-sequence tokens (always generate --max-new-tokens; for benchmarks).")
    var ignoreEndOfSequence = false
    @Option(name: .customLong("weight-precision"),
            help: "auto (default): quantized for a GGUF file on a CPU with AVX2 + FMA, else float32. float32: expand a GGUF's weights at load (OpenBLAS sgemv). quantized: keep Q4_0/Q4_1/Q8_0 projections and the tied head in their blocks (fused kernel; ~4x less weight memory; greedy tokens equal float32's, see BENCHMARKS.md).")
    var weightPrecision: String = "auto"

    func validate() throws {
        guard maxNewTokens >= 0 else { throw ValidationError("--max-new-tokens must be >= 0") }
        guard temperature >= 0 else { throw ValidationError("--temperature must be >= 0") }
        guard weightPrecision == "auto" || WeightPrecision(rawValue: weightPrecision) != nil else {
            throw ValidationError("--weight-precision must be one of auto, \(WeightPrecision.allCases.map(\.rawValue).joined(separator: ", ")), got '\(weightPrecision)'")
        }
    }

    func run() throws {
        // PretrainedModel.load, with the weight precision chosen here.
        let url = try ModelStore().resolve(options.model)
        let isGGUF = url.pathExtension.lowercased() == "gguf"
        let precision = WeightPrecision(rawValue: weightPrecision)
            ?? (isGGUF && QuantizedMatrix.hasVectorKernels ? .quantized : .float32)
        let model = try Checkpoint.load(url, weightPrecision: precision)
        let tokenizer = isGGUF
            ? try Tokenizer(ggufFile: GGUFFile(contentsOf: url)) : try Tokenizer(directory: url)
        let promptIds: [Int32]
        if chat {
            let text = try tokenizer.applyChatTemplate([.user(prompt)], addGenerationPrompt: true)
            promptIds = tokenizer.encode(text, addSpecialTokens: false).map { Int32($0) }
        } else {
            promptIds = tokenizer.encode(prompt, addSpecialTokens: true).map { Int32($0) }
        }
        var stopIds = Set(model.endOfSequenceTokenIds)
        if let eos = tokenizer.eosTokenID { stopIds.insert(Int32(eos)) }
        if ignoreEndOfSequence { stopIds.removeAll() }
        let result = try Tensor.withoutGradients {
            try model.generate(
                prompt: promptIds, maxNewTokens: maxNewTokens,
                sampling: Sampling(temperature: temperature, topK: topK, topP: topP),
                stopTokenIds: stopIds, stopStrings: stopStrings,
                decode: { tokenizer.decode($0.map { Int($0) }) }, key: RandomKey(seed: seed))
        }
        let text = tokenizer.decode(result.tokens.map { Int($0) }, skipSpecialTokens: true)
        if options.json {
            try printJSON(["prompt_ids": promptIds.map { Int($0) }, "new_ids": result.tokens.map { Int($0) },
                           "text": text, "finish_reason": "\(result.finishReason)",
                           "tokens_per_second": result.tokensPerSecond])
        } else {
            print(prompt + text)
            FileHandle.standardError.write(Data(String(format: "[%d tokens, %.1f tokens/s, %@]\n", result.tokens.count,
                                                       result.tokensPerSecond, "\(result.finishReason)").utf8))
        }
    }
}

struct Tokenize: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Token ids of a text (no special tokens).")

    @OptionGroup var options: ModelOptions
    @Option(help: "The text.") var text: String

    func run() throws {
        let pretrained = try PretrainedModel.load(options.model)
        let ids = pretrained.tokenizer.encode(text, addSpecialTokens: false)
        if options.json {
            try printJSON(["ids": ids])
        } else {
            print(ids.map(String.init).joined(separator: " "))
        }
    }
}

struct Score: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Sum of log-probabilities of a text's tokens under a model.")

    @OptionGroup var options: ModelOptions
    @Option(help: "The text.") var text: String

    func run() throws {
        let pretrained = try PretrainedModel.load(options.model)
        let ids = pretrained.encodeWithSpecialTokens(text)
        let total = try Tensor.withoutGradients { try pretrained.sumLogProbability(of: ids) }
        if options.json {
            try printJSON(["ids": ids.map { Int($0) }, "sum_logprob": total])
        } else {
            print(String(format: "%.6f over %d tokens", total, ids.count))
        }
    }
}
