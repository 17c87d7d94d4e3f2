import AmberCatalog
import AmberStore
import ArgumentParser

struct MigrateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "migrate",
        abstract: "Apply the schema migrations (`amber migrate`), revert some (`amber migrate down N`), or list them (`amber migrate status`)."
    )

    @Argument(help: "up (default), down, or status.")
    var direction: String = "up"

    @Argument(help: "For down: how many migrations to revert (default 1).")
    var steps: Int?

    @Option(help: "Directory of NNNN_verb_noun.{up,down}.sql files (default: $AMBER_MIGRATIONS, else the checkout's migrations/).")
    var migrations: String?

    @OptionGroup var database: DatabaseOptions

    func validate() throws {
        guard ["up", "down", "status"].contains(direction) else {
            throw ValidationError("direction must be up, down or status, not '\(direction)'")
        }
        if let steps, steps < 1 { throw ValidationError("steps must be at least 1") }
        if direction != "down" && steps != nil { throw ValidationError("a step count goes with `down` only") }
    }

    func run() throws {
        let migrator = try Migrator(directory: migrations ?? Migrator.defaultDirectory())
        try database.withDatabase { url in
            let connection = try PostgresConnection(url: url)
            switch direction {
            case "down":
                let reverted = try migrator.migrateDown(on: connection, steps: steps ?? 1)
                for migration in reverted { print("reverted \(label(migration))") }
                if reverted.isEmpty { print("nothing to revert") }
            case "status":
                let applied = Set(try migrator.applied(on: connection).map(\.version))
                for migration in migrator.migrations {
                    print("\(applied.contains(migration.version) ? "applied" : "pending")  \(label(migration))")
                }
            default:
                let applied = try migrator.migrateUp(on: connection)
                for migration in applied { print("applied \(label(migration))") }
                print(applied.isEmpty ? "schema up to date (\(migrator.migrations.count) migrations)" : "schema up to date")
            }
        }
    }

    private func label(_ migration: Migration) -> String {
        String(format: "%04d_", migration.version) + migration.name
    }
}
