import AmberCatalog
import AmberTensor
import ArgumentParser
import Foundation

@main
struct Amber: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "amber",
        abstract: "Ambiguity-aware cross-modal matching with a persistent memory bank.",
        subcommands: [DatabaseCommand.self, MigrateCommand.self, IngestCommand.self, EncodeCommand.self, ModelsCommand.self, ServeCommand.self, EncodeTextCommand.self, EvalCommand.self, TrainCommand.self, BaselineCommand.self, BenchCommand.self]
    )

    /// Chooses OpenBLAS's kernels (this may re-execute the process) before any command runs.
    static func main() async {
        BLASKernel.selectAtStartup { line in FileHandle.standardError.write(Data((line + "\n").utf8)) }
        do {
            var command = try parseAsRoot()
            if var asynchronous = command as? AsyncParsableCommand {
                try await asynchronous.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: error)
        }
    }
}
