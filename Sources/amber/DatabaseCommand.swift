import AmberCatalog
import AmberStore
import ArgumentParser
import Foundation

struct DatabaseCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "db",
        abstract: "Manage the embedded PostgreSQL cluster (used when no database URL is configured).",
        subcommands: [Start.self, Stop.self, Status.self, URLCommand.self]
    )

    struct Start: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Initialise (first time) and start the cluster; it keeps running.")
        @OptionGroup var database: DatabaseOptions
        @Option(help: "Also listen on TCP at this address (same port as the socket), e.g. 127.0.0.1.")
        var listen: String?

        func run() throws {
            let cluster = EmbeddedPostgres(home: database.resolvedHome, tcpHost: listen)
            let started = try cluster.start()
            print(started ? "started PostgreSQL in \(cluster.dataDirectory)" : "PostgreSQL already running in \(cluster.dataDirectory)")
            print("url: \(cluster.url)")
        }
    }

    struct Stop: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop the cluster (committed data stays).")
        @OptionGroup var database: DatabaseOptions

        func run() throws {
            let cluster = database.embedded
            try cluster.stop()
            print("stopped (data in \(cluster.dataDirectory))")
        }
    }

    struct Status: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Say whether the cluster is initialised and running.")
        @OptionGroup var database: DatabaseOptions

        func run() throws {
            let cluster = database.embedded
            switch try cluster.status() {
            case .notInitialized: print("not initialised (no cluster in \(cluster.dataDirectory)); `amber db start` creates it")
            case .stopped: print("stopped (data in \(cluster.dataDirectory))")
            case .running(let pid): print("running (pid \(pid), socket in \(cluster.socketDirectory))")
            }
        }
    }

    struct URLCommand: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "url", abstract: "Print the URL to connect with (psql \"$(amber db url)\").")
        @OptionGroup var database: DatabaseOptions

        func run() throws {
            print(database.configuredURL ?? database.embedded.url)
        }
    }
}
