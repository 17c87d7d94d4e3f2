import AmberCatalog
import AmberModel
import AmberStore
import ArgumentParser
import Foundation

struct ModelsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "models",
        abstract: "Model versions: list them, promote one, roll back to the one served before.",
        subcommands: [ListModelsCommand.self, PromoteModelCommand.self, RollbackModelCommand.self, AddModelCommand.self],
        defaultSubcommand: ListModelsCommand.self
    )
}

struct ListModelsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "The newest model versions, newest first.")

    @Option(help: "How many versions to show.") var limit: Int = 20
    @OptionGroup var database: DatabaseOptions

    func run() throws {
        guard limit >= 1 else { throw ValidationError("--limit must be at least 1, got \(limit)") }
        try database.withDatabase { url in
            let connection = try PostgresConnection(url: url)
            let versions = try ModelRegistry.list(on: connection, limit: limit)
            guard !versions.isEmpty else {
                print("no model versions yet (amber train --continuous writes them)")
                return
            }
            let format = DateFormatter()
            format.dateFormat = "yyyy-MM-dd HH:mm:ss"
            format.timeZone = TimeZone(identifier: "UTC")
            func left(_ text: String, _ width: Int) -> String { text.count >= width ? text : text + String(repeating: " ", count: width - text.count) }
            func right(_ text: String, _ width: Int) -> String { text.count >= width ? text : String(repeating: " ", count: width - text.count) + text }
            print("version  parent  run           step  status     dev rsum  created (UTC)        gate")
            for v in versions {
                print([right("\(v.version)", 7), right(v.parentVersion.map { "\($0)" } ?? "-", 6), left(String((v.run ?? "-").prefix(12)), 12),
                       right("\(v.step)", 5), left(v.status, 9), right(v.rsum.map { String(format: "%.1f", $0) } ?? "-", 8),
                       format.string(from: v.createdAt), v.gate ?? ""].joined(separator: "  "))
            }
        }
    }
}

struct PromoteModelCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "promote", abstract: "Serve a model version (the query service switches to it).")

    @Argument(help: "The version to serve.") var version: Int64
    @OptionGroup var database: DatabaseOptions

    func run() throws {
        try database.withDatabase { url in
            let connection = try PostgresConnection(url: url)
            do {
                let previous = try ModelRegistry.serving(on: connection)
                try ModelRegistry.promote(version, on: connection)
                print("serving model version \(version)" + (previous.map { " (was \($0))" } ?? ""))
            } catch let error as RegistryError {
                throw ValidationError(error.description)
            }
        }
    }
}

struct RollbackModelCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rollback", abstract: "Serve again the version promoted before the current one.")

    @OptionGroup var database: DatabaseOptions

    func run() throws {
        try database.withDatabase { url in
            let connection = try PostgresConnection(url: url)
            do {
                let previous = try ModelRegistry.serving(on: connection)
                let version = try ModelRegistry.rollback(on: connection)
                print("serving model version \(version)" + (previous.map { " (rolled back from \($0))" } ?? ""))
            } catch let error as RegistryError {
                throw ValidationError(error.description)
            }
        }
    }
}

struct AddModelCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "add", abstract: "Register a model file (amber train's best.safetensors) as a new version.")

    @Argument(help: "The model file.") var file: String
    @Flag(help: "Also promote it (serve it).") var promote = false
    @OptionGroup var database: DatabaseOptions

    func run() throws {
        let bytes: [UInt8]
        do { bytes = Array(try Data(contentsOf: URL(fileURLWithPath: file))) } catch { throw ValidationError("\(file) cannot be read: \(error.localizedDescription)") }
        // Checks it is a servable model (a matching model, or a label-supervised one with both networks) before storing it.
        let model: ServedModel
        do { model = try ServedModel.read(bytes: bytes, name: file) } catch { throw ValidationError("\(error)") }
        let step: Int, configuration: String, metrics: String
        switch model {
        case .matching(let trained):
            (step, configuration) = (trained.step, try MetadataJSON.encode(trained.encoder))
            metrics = try MetadataJSON.encode(["rsum": (trained.stageTwoMetrics ?? trained.metrics)?.rsum ?? 0])
        case .labels(let labelled):
            (step, configuration) = (0, try MetadataJSON.encode(labelled.configuration))
            metrics = try MetadataJSON.encode(["map_all": labelled.metrics?.mean ?? 0, "map_50": labelled.metrics?.meanAt50 ?? 0])
        }
        try database.withDatabase { url in
            let connection = try PostgresConnection(url: url)
            let version = try ModelRegistry.add(model: bytes, step: step, configuration: configuration, metrics: metrics, on: connection)
            if promote { try ModelRegistry.promote(version, on: connection) }
            print("added \(file) as model version \(version)" + (promote ? ", serving it" : ""))
        }
    }
}
