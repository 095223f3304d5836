import ArgumentParser
import Foundation
import SiloFederation
import SiloReport
import Yams

/// `silo attack …`: the attacks that measure what each defence buys.
struct Attack: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the built-in privacy attacks against split learning and federated LoRA.",
        subcommands: [Inversion.self, Membership.self]
    )

    /// `silo attack inversion`: decode a victim's text from the smashed activations the server receives.
    struct Inversion: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Invert smashed activations back to text (colluding-server setup of FL-GLM) across cuts, noise levels and codecs.",
            discussion: """
            With no --config: SmolLM2-135M, BoolQ passages (64 tokens), 384 shadow texts of a colluding client, 48 victim \
            texts; the client keeps the embedding only (k = 0), 1 block or 2 blocks; Gaussian noise multipliers 0, 0.001, \
            0.01, 0.1 on the clipped activations; codecs none, quantize-8 and kmeans-16 (16 centroids per text). Writes OUTPUT/results.json and OUTPUT/report.html; --json prints the \
            results object (its `results` rows have cut, noise, compression, bleu4, rouge1, token_recovery).
            """
        )

        @OptionGroup var options: AttackOptions
        @Option(help: "Folder for results.json and report.html.")
        var output = "silo-attack"

        func run() throws {
            guard let configuration: InversionAttackConfiguration = try options.configuration() else { return }
            let outputURL = try options.outputFolder(output)
            let report = try InversionAttack.run(configuration) { standardError("» \($0)") }
            let data = try resultsEncoder().encode(report)
            try data.write(to: outputURL.appendingPathComponent("results.json"), options: .atomic)
            try AttackReport.inversion(report).write(to: outputURL.appendingPathComponent("report.html"))
            standardError(AttackReport.inversionTable(report))
            standardError("results: \(outputURL.appendingPathComponent("results.json").path)\nreport:  \(outputURL.appendingPathComponent("report.html").path)")
            if options.json { print(String(decoding: data, as: UTF8.self)) }
        }
    }
}

extension Attack {
    /// `silo attack membership`: loss-threshold membership inference against adapters trained with and without DP.
    struct Membership: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Membership inference (loss threshold) on LoRA adapters trained without DP and with DP-SGD at several ε; prints AUC vs ε.",
            discussion: "Defaults: SmolLM2-135M, BoolQ; federated LoRA (FedAvg) over 2 clients of 16 examples, 6 rounds x 4 local steps, batches of 4; example-level DP-SGD at ε = 8, 4, 2 (δ = 1e-5); the attack scores client-1's 16 examples against 32 held-out ones (both half yes, half no)."
        )

        @OptionGroup var options: AttackOptions
        @Option(help: "Folder for results.json.")
        var output = "silo-attack-membership"

        func run() throws {
            guard let configuration: MembershipAttackConfiguration = try options.configuration() else { return }
            let outputURL = try options.outputFolder(output)
            let report = try MembershipInference.run(configuration) { standardError("» \($0)") }
            let data = try resultsEncoder().encode(report)
            try data.write(to: outputURL.appendingPathComponent("results.json"), options: .atomic)
            let rows = report.results.map { row in
                [row.targetEpsilon.map { String(format: "%g", $0) } ?? "no DP", row.epsilon.map { String(format: "%.2f", $0) } ?? "∞",
                 row.noiseMultiplier.map { String(format: "%.3f", $0) } ?? "0", String(format: "%.3f", row.auc),
                 String(format: "%.3f", row.memberLoss), String(format: "%.3f", row.nonMemberLoss), String(format: "%.3f", row.heldOutAccuracy)]
            }
            standardError(TextTable(headers: ["target ε", "ε spent", "noise z", "attack AUC", "member loss", "non-member loss", "held-out accuracy"], rows: rows).render())
            standardError("results: \(outputURL.appendingPathComponent("results.json").path)")
            if options.json { print(String(decoding: data, as: UTF8.self)) }
        }
    }
}

/// The options every attack command shares.
struct AttackOptions: ParsableArguments {
    @Option(help: "A YAML or JSON configuration file (keys as in --print-default-config; unknown keys are errors).")
    var config: String?

    @Flag(help: "Also print results.json on standard output at the end.")
    var json = false

    @Flag(name: .customLong("print-default-config"), help: "Print the default configuration as YAML and exit.")
    var printDefaultConfig = false

    /// The configuration to run, or nil after printing the default.
    func configuration<T: Codable>() throws -> T? where T: DefaultConstructible {
        if printDefaultConfig {
            print(try YAMLEncoder().encode(T()))
            return nil
        }
        return try config.map { try loadConfigurationFile($0) } ?? T()
    }

    func outputFolder(_ path: String) throws -> URL {
        let url = URL(fileURLWithPath: path, isDirectory: true)
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }
}

/// A configuration with an embedded default.
protocol DefaultConstructible { init() }
extension InversionAttackConfiguration: DefaultConstructible {}
extension MembershipAttackConfiguration: DefaultConstructible {}

/// JSON as the results files write it: sorted keys, non-finite numbers as strings.
func resultsEncoder() -> JSONEncoder {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
    return encoder
}

/// Reads a YAML (or JSON) configuration file; errors name the file and the key.
func loadConfigurationFile<T: Decodable>(_ path: String) throws -> T {
    let text: String
    do {
        text = try String(contentsOfFile: path, encoding: .utf8)
    } catch {
        throw ValidationError("cannot read the configuration \(path): \(error.localizedDescription)")
    }
    do {
        return try YAMLDecoder().decode(T.self, from: text)
    } catch let error as ConfigurationError {
        throw ValidationError("\(path): \(error)")
    } catch let DecodingError.typeMismatch(type, context), let DecodingError.valueNotFound(type, context) {
        throw ValidationError("\(path): \(context.codingPath.map(\.stringValue).joined(separator: ".")): expected \(type) (\(context.debugDescription))")
    } catch let DecodingError.dataCorrupted(context) {
        throw ValidationError("\(path): \(context.codingPath.map(\.stringValue).joined(separator: ".")): \(context.debugDescription)")
    } catch {
        throw ValidationError("\(path): \(error)")
    }
}

/// The HTML report and terminal table of the attacks.
enum AttackReport {
    static func rows(_ report: InversionAttack.Report) -> [[String]] {
        report.results.map { row in
            [String(row.cut), row.noise == 0 ? "0" : String(format: "%g", row.noise), row.compression,
             String(format: "%.1f", row.bleu4), String(format: "%.1f", row.rouge1), String(format: "%.1f", row.rougeL),
             String(format: "%.1f%%", 100 * row.tokenRecovery),
             row.epsilonPerStep.map { $0.isFinite ? String(format: "%.3g", $0) : "∞" } ?? "∞ (no noise)"]
        }
    }

    static let headers = ["k (client blocks)", "noise z", "codec", "BLEU-4", "ROUGE-1", "ROUGE-L", "tokens recovered", "ε per step"]

    static func inversionTable(_ report: InversionAttack.Report) -> String {
        TextTable(headers: headers, rows: rows(report)).render()
    }

    static func inversion(_ report: InversionAttack.Report) -> Report {
        var sections: [Report.Section] = []
        sections.append(Report.Section(title: "What the server recovers", blocks: [
            .table(Report.Table(caption: "Victim texts decoded from the activations the server received (\(report.victimTexts) texts, \(report.victimTokens) tokens)",
                                headers: headers, rows: rows(report))),
        ]))
        var charts: [Report.Block] = []
        for codec in Array(Set(report.results.map(\.compression))).sorted() {
            let noises = Array(Set(report.results.map(\.noise))).sorted()
            let cuts = Array(Set(report.results.map(\.cut))).sorted()
            let series = noises.map { noise in
                BarChart.Series(name: noise == 0 ? "no noise" : String(format: "z = %g", noise), values: cuts.map { cut in
                    report.results.first { $0.cut == cut && $0.noise == noise && $0.compression == codec }.map { 100 * $0.tokenRecovery } ?? .nan
                })
            }
            charts.append(.barChart(BarChart(title: "Tokens recovered (%) by blocks kept on the client, codec \(codec)", yLabel: "% of victim tokens",
                                             categories: cuts.map { "k = \($0)" }, series: series)))
        }
        sections.append(Report.Section(title: "Token recovery", blocks: charts))
        if let gradient = report.gradientAttack {
            sections.append(Report.Section(title: "Embedding-gradient attack (k = 0)", blocks: [
                .table(Report.Table(caption: "Tokens of one batch read off the non-zero rows of the embedding's gradient",
                                    headers: ["distinct tokens in the batch", "non-zero rows", "precision", "recall"],
                                    rows: [[String(gradient.batchTokens), String(gradient.nonZeroRows),
                                            String(format: "%.3f", gradient.precision), String(format: "%.3f", gradient.recall)]])),
            ]))
        }
        var samples: [Report.Block] = []
        for row in report.results where row.noise == 0 && row.compression == "none" {
            samples.append(.note(Report.Note(.info, title: "k = \(row.cut): reconstructed", text: row.sample)))
        }
        if let truth = report.results.first?.sampleTruth { samples.append(.note(Report.Note(.info, title: "true text", text: truth))) }
        sections.append(Report.Section(title: "One victim text", blocks: samples))
        sections.append(Report.Section(title: "Notes", blocks: report.notes.map { .note(Report.Note(.info, text: $0)) }))
        return Report(title: "Silo inversion attack: \(report.task) on \(report.model)",
                      subtitle: "a server colluding with one client decodes another client's activations",
                      metadata: [("shadow texts", String(report.shadowTexts)), ("victim texts", String(report.victimTexts)),
                                 ("seconds", String(format: "%.0f", report.seconds))],
                      sections: sections)
    }
}
