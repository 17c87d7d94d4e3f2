import ArgumentParser

@main
struct Amber: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "amber",
        abstract: "Ambiguity-aware cross-modal matching with a persistent memory bank.",
        subcommands: [DatabaseCommand.self, MigrateCommand.self, IngestCommand.self, ModelsCommand.self, ServeCommand.self, EncodeTextCommand.self, EvalCommand.self, TrainCommand.self, BaselineCommand.self, BenchCommand.self]
    )
}
