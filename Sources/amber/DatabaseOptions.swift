import AmberCatalog
import AmberStore
import ArgumentParser
import Foundation

/// Where Amber's database is: a URL, or the embedded cluster under AMBER_HOME.
struct DatabaseOptions: ParsableArguments {
    @Option(name: .customLong("database-url"),
            help: "PostgreSQL URL (default: $AMBER_DATABASE_URL, else the embedded cluster under $AMBER_HOME or .amber).")
    var databaseURL: String?

    @Option(help: "Directory of Amber's local state: the embedded cluster, models (default: $AMBER_HOME or .amber).")
    var home: String?

    var resolvedHome: String {
        home ?? ProcessInfo.processInfo.environment["AMBER_HOME"] ?? ".amber"
    }

    var configuredURL: String? {
        databaseURL ?? ProcessInfo.processInfo.environment["AMBER_DATABASE_URL"].flatMap { $0.isEmpty ? nil : $0 }
    }

    var embedded: EmbeddedPostgres { EmbeddedPostgres(home: resolvedHome) }

    /// The URL a service (`amber serve`, `amber train`) connects with: the configured one, or
    /// the embedded cluster's least-privileged service role (the owner URL `ownerURL` is for
    /// migrations and operator commands). Checks that the role exists (migrations applied).
    func serviceURL(ownerURL: String) throws -> String {
        if let url = configuredURL { return url }
        let owner = try PostgresConnection(url: ownerURL)
        let role = try owner.execute("SELECT 1 FROM pg_roles WHERE rolname = $1", [.text(EmbeddedPostgres.serviceRole)])
        guard role.rowCount == 1 else {
            throw ValidationError("the database is not migrated (no role \(EmbeddedPostgres.serviceRole)): run amber migrate first")
        }
        return embedded.serviceURL
    }

    /// Runs `body` with a database URL. With no URL configured, starts the embedded cluster if
    /// it is not running, and stops it again afterwards if this call started it.
    func withDatabase<R>(_ body: (String) throws -> R) throws -> R {
        if let url = configuredURL { return try body(url) }
        let cluster = embedded
        let startedHere = try cluster.start()
        defer {
            if startedHere { try? cluster.stop() }
        }
        return try body(cluster.url)
    }
}

/// Prints a one-line progress bar to stderr: redrawn in place on a terminal, every 10 % otherwise.
final class ProgressBar {
    let label: String
    private let started = Date()
    private var lastFraction = -1.0
    private var lastPhase = ""
    private var phaseStarted = Date()
    private let isTerminal = isatty(STDERR_FILENO) == 1

    init(label: String) { self.label = label }

    func update(phase: String, done: Int, total: Int, unit: String = "rows") {
        let fraction = total == 0 ? 1 : Double(done) / Double(total)
        if phase != lastPhase {
            if isTerminal && !lastPhase.isEmpty { FileHandle.standardError.write(Data("\n".utf8)) }
            lastPhase = phase
            lastFraction = -1
            phaseStarted = Date()
        }
        guard isTerminal || fraction >= lastFraction + 0.1 || (fraction == 1 && lastFraction < 1) else { return }
        lastFraction = fraction
        let elapsed = Date().timeIntervalSince(started)
        let width = 30
        let filled = Int(fraction * Double(width))
        let bar = String(repeating: "█", count: filled) + String(repeating: "·", count: width - filled)
        var line = String(format: "%@ %@ [%@] %3.0f%% %d/%d %@ %.1fs", label, phase, bar, fraction * 100, done, total, unit, elapsed)
        let phaseSeconds = Date().timeIntervalSince(phaseStarted)
        if done > 0 && phaseSeconds > 0.5 {
            let rate = Double(done) / phaseSeconds
            line += String(format: ", %.1f %@/s", rate, unit)
            if done < total { line += String(format: ", ETA %.0fs", Double(total - done) / rate) }
        }
        FileHandle.standardError.write(Data(((isTerminal ? "\r" : "") + line + (isTerminal ? "" : "\n")).utf8))
    }

    func finish() {
        if isTerminal { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}
