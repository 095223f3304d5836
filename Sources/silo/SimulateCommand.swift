import ArgumentParser
import Foundation
import SiloData
import SiloFederation
import SiloModels
import SiloReport
import Yams

/// `silo simulate`: a whole federated run in one process (the main job).
struct Simulate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Simulate split federated fine-tuning in one process: clients, server, sealed sessions, evaluation, and the same run centralized.",
        discussion: """
        With no --config it runs the embedded default: SmolLM2-135M, BoolQ, 4 clients with IID shards, client-batching, \
        LoRA r=8 on q_proj/v_proj on both sides. A config file (YAML or JSON) changes any key; print the default with \
        --print-default-config. Writes OUTPUT/results.json and OUTPUT/report.html.
        """
    )

    @Option(help: "A YAML or JSON configuration file (keys as in --print-default-config; unknown keys are errors).")
    var config: String?

    @Option(help: "Folder for results.json and report.html.")
    var output = "silo-results"

    @Flag(help: "Also print results.json on standard output at the end.")
    var json = false

    @Flag(name: .customLong("print-default-config"), help: "Print the embedded default configuration as YAML and exit.")
    var printDefaultConfig = false

    func run() throws {
        if printDefaultConfig {
            print(try YAMLEncoder().encode(SimulationConfiguration()))
            return
        }
        let configuration = try loadConfiguration()
        let outputURL = URL(fileURLWithPath: output, isDirectory: true)
        try FileManager.default.createDirectory(at: outputURL, withIntermediateDirectories: true)

        var progress: ProgressLine?
        let results = try Simulation.run(configuration) { event in
            switch event {
            case .phase(let name, let total):
                progress?.finish()
                progress = nil
                if total > 0 {
                    progress = ProgressLine(total: total, label: name)
                } else {
                    standardError("» \(name)")
                }
            case .step(let completed, let loss, let seconds):
                progress?.update(completed: completed, fields: [("loss", String(format: "%.4f", loss)), ("step", String(format: "%.2fs", seconds))])
            case .message(let text):
                standardError("! \(text)")
            }
        }
        progress?.finish()

        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        let data = try encoder.encode(results)
        let resultsURL = outputURL.appendingPathComponent("results.json")
        try data.write(to: resultsURL, options: .atomic)
        let reportURL = outputURL.appendingPathComponent("report.html")
        try SimulationReport.make(results).write(to: reportURL)

        standardError(SimulationReport.summaryTable(results))
        standardError("results: \(resultsURL.path)\nreport:  \(reportURL.path)")
        if json { print(String(decoding: data, as: UTF8.self)) }
    }

    private func loadConfiguration() throws -> SimulationConfiguration {
        try config.map { try loadConfigurationFile($0) } ?? SimulationConfiguration()
    }
}

func standardError(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}

/// The report and the terminal table of a simulation.
enum SimulationReport {
    static func format(_ value: Double?) -> String {
        guard let value else { return "–" }
        return value.isFinite ? String(format: "%.4f", value) : "\(value)"
    }

    static func bytes(_ count: Int) -> String {
        let units = ["B", "KiB", "MiB", "GiB"]
        var value = Double(count)
        var unit = 0
        while value >= 1024, unit < units.count - 1 { value /= 1024; unit += 1 }
        return unit == 0 ? "\(count) B" : String(format: "%.1f %@", value, units[unit])
    }

    static func metricRows(_ results: SimulationResults) -> [[String]] {
        results.evalAfter.keys.sorted().map { name in
            [name, format(results.evalBefore[name]), format(results.evalAfter[name]), format(results.centralized?.evalAfter[name])]
        }
    }

    static func summaryTable(_ results: SimulationResults) -> String {
        var rows = metricRows(results)
        rows.append(["train loss (last)", "–", format(results.trainLoss.last), format(results.centralized?.trainLoss.last)])
        rows.append(["seconds per \(results.federated == nil && results.centroids == nil ? "step" : "round")", "–",
                     format(results.secondsPerStep["split"] ?? results.secondsPerStep["round"]), format(results.secondsPerStep["centralized"])])
        rows.append(["bytes sent", "–", bytes(results.bytes.values.reduce(0, +)), "–"])
        if let federated = results.federated {
            for (client, row) in federated.epsilon.sorted(by: { $0.key < $1.key }) {
                rows.append(["ε \(client) (δ = \(federated.delta))", "–", format(row["total"]), "–"])
            }
        }
        let isSplit = results.federated == nil && results.centroids == nil
        return TextTable(headers: ["", "before", isSplit ? "split (\(results.mode))" : results.mode, "centralized"], rows: rows).render()
    }

    static func make(_ results: SimulationResults) -> Report {
        var sections: [Report.Section] = []
        var metricBlocks: [Report.Block] = [
            .table(Report.Table(caption: "Held-out evaluation (\(results.evaluationExamples) examples)",
                                headers: ["metric", "before", "after split", "after centralized"], rows: metricRows(results))),
        ]
        let names = results.evalAfter.keys.sorted()
        var series = [BarChart.Series(name: "before", values: names.map { results.evalBefore[$0] ?? .nan }),
                      BarChart.Series(name: "after split (\(results.mode))", values: names.map { results.evalAfter[$0] ?? .nan })]
        if let centralized = results.centralized {
            series.append(BarChart.Series(name: "after centralized", values: names.map { centralized.evalAfter[$0] ?? .nan }))
        }
        metricBlocks.append(.barChart(BarChart(title: "Metrics before and after fine-tuning", yLabel: "value", categories: names, series: series)))
        sections.append(Report.Section(title: "Metrics", blocks: metricBlocks))

        var curves = [ChartSeries(name: "split (\(results.mode))", values: results.trainLoss)]
        if let centralized = results.centralized {
            curves.append(ChartSeries(name: "centralized", values: centralized.trainLoss))
        }
        sections.append(Report.Section(title: "Training loss", blocks: [
            .lineChart(LineChart(title: results.federated == nil ? "Training loss per step" : "Mean local training loss per round",
                                 xLabel: results.federated == nil ? "step" : "round", yLabel: "mean loss over the answer tokens", series: curves)),
        ]))
        if let centroids = results.centroids {
            let perRound = centroids.bytesPerRoundPerClient
            sections.append(Report.Section(title: "Centroid exchange (ratio \(centroids.ratio), \(centroids.alignment))", blocks: [
                .table(Report.Table(caption: "Bytes per round per client, each way, and k-means seconds per client", headers: ["", "value"],
                                    rows: [["centroids" + (centroids.sendVectors ? " + vectors" : ""), bytes(perRound["upload"] ?? 0)],
                                           ["FedAvg of the full weights", bytes(perRound["full_model"] ?? 0)],
                                           ["k-means seconds per round (mean)", format(centroids.compressionSeconds.reduce(0, +) / Double(max(1, centroids.compressionSeconds.count)))]])),
            ]))
        }
        if let federated = results.federated {
            var blocks: [Report.Block] = []
            let clients = federated.epsilon.keys.sorted()
            if !clients.isEmpty {
                blocks.append(.lineChart(LineChart(title: "Privacy spent (ε at δ = \(federated.delta))", xLabel: "round", yLabel: "ε",
                                                   series: clients.map { client in ChartSeries(name: client, values: federated.rounds.map { $0.epsilon[client] ?? 0 }) })))
                let mechanisms = Array(Set(federated.epsilon.values.flatMap(\.keys))).sorted()
                blocks.append(.table(Report.Table(caption: "ε per client, by mechanism (each alone) and composed", headers: ["client"] + mechanisms,
                                                  rows: clients.map { client in [client] + mechanisms.map { format(federated.epsilon[client]?[$0]) } })))
            }
            let perRound = federated.bytesPerRoundPerClient
            blocks.append(.table(Report.Table(
                caption: "Bytes per round per client: LoRA adapters (\(federated.adapterParameters) values) vs full-model FedAvg (\(federated.modelParameters) values)",
                headers: ["", "download", "upload"],
                rows: [["adapters", bytes(perRound["adapters_download"] ?? 0), bytes(perRound["adapters_upload"] ?? 0)],
                       ["full model", bytes(perRound["full_model_download"] ?? 0), bytes(perRound["full_model_upload"] ?? 0)]])))
            sections.append(Report.Section(title: "Federated LoRA: \(federated.strategy), \(federated.loraAggregation)\(federated.secureAggregation ? ", secure aggregation" : "")", blocks: blocks))
        }

        let kinds = results.bytes.keys.sorted()
        sections.append(Report.Section(title: "Traffic and time", blocks: [
            trafficTable(results, kinds: kinds),
            .table(Report.Table(caption: "Seconds", headers: ["", "seconds"],
                                rows: results.secondsPerStep.keys.sorted().map { ["per step, \($0)", format(results.secondsPerStep[$0])] }
                                    + results.timings.keys.sorted().map { ["split total, \($0)", format(results.timings[$0])] })),
        ]))

        var notes: [Report.Block] = results.failures.map {
            .note(Report.Note(.warning, title: "client \($0.client) left out", text: $0.error))
        }
        notes += results.notes.map { .paragraph($0) }
        sections.append(Report.Section(title: "Notes", blocks: notes))

        return Report(title: "Silo simulation: \(results.task) on \(results.model)",
                      subtitle: results.federated == nil ? "split fine-tuning (\(results.mode)) with \(results.clients) clients vs the same run centralized"
                          : "federated LoRA with \(results.clients) clients",
                      metadata: [("model", results.model), ("task", results.task), ("mode", results.mode),
                                 ("clients", "\(results.clients)"), ("steps", "\(results.steps)"), ("split", results.plan),
                                 ("seconds", String(format: "%.0f", results.seconds))],
                      sections: sections)
    }
}

extension SimulationReport {
    /// Sealed bytes by message type; with `split.codec`, also what they would have been uncompressed.
    static func trafficTable(_ results: SimulationResults, kinds: [String]) -> Report.Block {
        let caption = results.federated == nil ? "Sealed bytes by message type (split run)" : "Bytes by message type"
        let total = ["total", "\(results.messages.values.reduce(0, +))", bytes(results.bytes.values.reduce(0, +))]
        guard let before = results.bytesUncompressed else {
            return .table(Report.Table(caption: caption, headers: ["message", "messages", "bytes"],
                                       rows: kinds.map { [$0, "\(results.messages[$0] ?? 0)", bytes(results.bytes[$0] ?? 0)] } + [total]))
        }
        let codec = results.configuration.split.codec
        return .table(Report.Table(caption: caption + ", compressed with \(codec)", headers: ["message", "messages", "bytes", "uncompressed"],
                                   rows: kinds.map { [$0, "\(results.messages[$0] ?? 0)", bytes(results.bytes[$0] ?? 0), bytes(before[$0] ?? 0)] }
                                       + [total + [bytes(before.values.reduce(0, +))]]))
    }
}
