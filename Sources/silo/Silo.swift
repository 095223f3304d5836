import ArgumentParser

@main
struct Silo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "silo",
        abstract: "Fine-tune language models on private data that never leaves its owners.",
        subcommands: [Simulate.self, Models.self, DataCommand.self, Generate.self, Tokenize.self, Score.self, Bench.self, Attack.self, Privacy.self, ServerCommand.self, ClientCommand.self, PKICommand.self]
    )
}
