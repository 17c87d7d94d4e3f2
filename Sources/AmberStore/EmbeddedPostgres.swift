import AmberCatalog
import Foundation

/// A private PostgreSQL cluster that Amber runs itself when no database URL is configured.
///
/// Layout under `home` (default `.amber`): `postgres/` the data directory, `run/` the unix
/// socket directory, `postgres.log` the server log. The server listens on the socket only (no
/// TCP unless `tcpHost` is given). PostgreSQL refuses to run as root, so when Amber runs as
/// root the cluster belongs to the `postgres` system user (created by Debian's packages) and
/// every server command runs through `runuser`.
public struct EmbeddedPostgres: Sendable {
    /// How durable the cluster is. `.ephemeral` turns off fsync: for tests only.
    public enum Durability: Sendable { case durable, ephemeral }

    public enum Status: Equatable, Sendable {
        case notInitialized
        case stopped
        case running(processID: Int)
    }

    public let home: String
    public let port: Int
    public let databaseName: String
    public let durability: Durability
    /// Address to listen on over TCP as well (on `port`), or `nil` for the socket only.
    public let tcpHost: String?

    public var dataDirectory: String { home + "/postgres" }
    public var socketDirectory: String { home + "/run" }
    public var logFile: String { home + "/postgres.log" }

    public init(home: String = ".amber", port: Int = 5432, databaseName: String = "amber",
                durability: Durability = .durable, tcpHost: String? = nil) {
        self.home = URL(fileURLWithPath: home).standardizedFileURL.path
        self.port = port
        self.databaseName = databaseName
        self.durability = durability
        self.tcpHost = tcpHost
    }

    /// URL of the cluster's `amber` database over the unix socket.
    public var url: String { url(database: databaseName) }

    public func url(database: String, user: String = "amber") -> String {
        "postgresql:///\(database)?host=\(socketDirectory)&port=\(port)&user=\(user)"
    }

    /// URL of the `amber` database for the services (`amber serve`, `amber train`): the
    /// least-privileged `amber_service` role (amber_app's rights; made by the migrations), not
    /// the owner `amber`, a superuser that migrations and operator commands use.
    public var serviceURL: String { url(database: databaseName, user: EmbeddedPostgres.serviceRole) }

    /// The login role of the services in the embedded cluster.
    public static let serviceRole = "amber_service"

    /// A problem starting or stopping the cluster, with what to do about it.
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    // MARK: Commands

    public func status() throws -> Status {
        guard FileManager.default.fileExists(atPath: dataDirectory + "/PG_VERSION") else { return .notInitialized }
        let result = try run(binary("pg_ctl"), ["status", "-D", dataDirectory])
        if result.status == 0, let line = result.output.split(separator: "\n").first(where: { $0.contains("PID:") }),
           let pid = line.split(separator: " ").last.flatMap({ Int($0.trimmingCharacters(in: CharacterSet(charactersIn: ")"))) }) {
            return .running(processID: pid)
        }
        return result.status == 0 ? .running(processID: 0) : .stopped
    }

    /// Initialises the cluster if needed, starts it if stopped, and creates the database.
    /// - Returns: whether this call started the server (so the caller may stop it on exit).
    @discardableResult
    public func start() throws -> Bool {
        try prepareDirectories()
        if try status() == .notInitialized { try initialize() }
        var startedHere = false
        if case .running = try status() {} else {
            let options = "-c listen_addresses='\(tcpHost ?? "")'"
            let result = try run(binary("pg_ctl"), ["start", "-w", "-t", "120", "-D", dataDirectory, "-l", logFile, "-o", options])
            if result.status != 0 {
                // Another Amber process may have started it at the same moment.
                if case .running = try status() {} else {
                    throw Failure(description: "PostgreSQL did not start (pg_ctl: \(result.output.trimmingCharacters(in: .whitespacesAndNewlines))); see \(logFile)")
                }
            } else {
                startedHere = true
            }
        }
        try createDatabaseIfMissing()
        return startedHere
    }

    /// Stops the server (fast shutdown: open transactions roll back, committed data stays).
    public func stop() throws {
        guard case .running = try status() else { return }
        let result = try run(binary("pg_ctl"), ["stop", "-w", "-t", "120", "-m", "fast", "-D", dataDirectory])
        guard result.status == 0 else {
            throw Failure(description: "PostgreSQL did not stop: \(result.output.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
    }

    // MARK: Steps

    private var runsAsRoot: Bool { geteuid() == 0 }
    private static let serverUser = "postgres"

    private func prepareDirectories() throws {
        let manager = FileManager.default
        for directory in [home, dataDirectory, socketDirectory] {
            try manager.createDirectory(atPath: directory, withIntermediateDirectories: true)
        }
        try manager.setAttributes([.posixPermissions: 0o700], ofItemAtPath: dataDirectory)
        let socketPath = socketDirectory + "/.s.PGSQL.\(port)"
        guard socketPath.utf8.count < 100 else {
            throw Failure(description: "the socket path \(socketPath) is too long for a unix socket (limit 107 bytes); set AMBER_HOME to a shorter directory")
        }
        guard runsAsRoot else { return }
        guard let user = getpwnam(EmbeddedPostgres.serverUser) else {
            throw Failure(description: "running as root, the embedded PostgreSQL needs the '\(EmbeddedPostgres.serverUser)' system user (install postgresql-15, or run Amber as an ordinary user)")
        }
        let uid = user.pointee.pw_uid, gid = user.pointee.pw_gid
        for directory in [home, dataDirectory, socketDirectory] { chown(directory, uid, gid) }
        if manager.fileExists(atPath: logFile) { chown(logFile, uid, gid) }
        // The server user must reach the directory through every parent.
        let probe = try run("/usr/bin/test", ["-w", dataDirectory])
        guard probe.status == 0 else {
            throw Failure(description: "the '\(EmbeddedPostgres.serverUser)' user cannot reach \(dataDirectory) (a parent directory is private, e.g. /root); set AMBER_HOME to a directory it can reach, such as /var/lib/amber")
        }
    }

    private func initialize() throws {
        let result = try run(binary("initdb"), [
            "-D", dataDirectory, "-U", "amber", "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-instructions",
        ])
        guard result.status == 0 else {
            throw Failure(description: "initdb failed: \(result.output.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        var settings = """

        # Amber's embedded cluster
        listen_addresses = ''
        unix_socket_directories = '\(socketDirectory)'
        port = \(port)
        max_connections = 100
        shared_buffers = 256MB
        """
        if durability == .ephemeral {
            settings += "\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
        }
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: dataDirectory + "/postgresql.conf"))
        try handle.seekToEnd()
        try handle.write(contentsOf: Data((settings + "\n").utf8))
        try handle.close()
    }

    private func createDatabaseIfMissing() throws {
        let connection = try connectWithRetry(url: url(database: "postgres"))
        let exists = try connection.execute("SELECT 1 FROM pg_database WHERE datname = $1", [.text(databaseName)]).rowCount > 0
        if !exists {
            do {
                try connection.executeScript("CREATE DATABASE \"\(databaseName)\"")
            } catch let error as PostgresError where error.code == "42P04" || error.kind == .uniqueViolation {
                // Created concurrently by another process.
            }
        }
    }

    private func connectWithRetry(url: String) throws -> PostgresConnection {
        var lastError: Error?
        for _ in 0..<50 {
            do { return try PostgresConnection(url: url) } catch {
                lastError = error
                usleep(100_000)
            }
        }
        throw lastError!
    }

    // MARK: Processes

    /// Directory of the PostgreSQL server binaries: `AMBER_PG_BIN`, else the newest
    /// `/usr/lib/postgresql/*/bin` (Debian), else `pg_config --bindir`.
    static func binaryDirectory() throws -> String {
        if let configured = ProcessInfo.processInfo.environment["AMBER_PG_BIN"] { return configured }
        let root = "/usr/lib/postgresql"
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? [])
            .compactMap(Int.init).sorted()
        if let newest = versions.last(where: { FileManager.default.isExecutableFile(atPath: "\(root)/\($0)/bin/initdb") }) {
            return "\(root)/\(newest)/bin"
        }
        throw Failure(description: "PostgreSQL server binaries not found (looked in \(root)/*/bin); install postgresql-15 (ops/setup does) or set AMBER_PG_BIN")
    }

    private func binary(_ name: String) throws -> String {
        try EmbeddedPostgres.binaryDirectory() + "/" + name
    }

    /// Runs a server command, as the `postgres` user when we are root, and collects its output.
    ///
    /// Uses `posix_spawn` and `waitpid` directly, with output going to a temporary file rather
    /// than a pipe: `pg_ctl start` leaves a server running, which must not hold our pipe open.
    private func run(_ executable: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
        let argv = runsAsRoot ? ["/usr/sbin/runuser", "-u", EmbeddedPostgres.serverUser, "--", executable] + arguments
                              : [executable] + arguments
        let outputPath = NSTemporaryDirectory() + "amber-pg-\(getpid())-\(UInt32.random(in: 0 ... .max)).out"
        defer { unlink(outputPath) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        var cArguments = argv.map { strdup($0) } + [nil]
        defer { for pointer in cArguments { free(pointer) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, argv[0], &actions, nil, &cArguments, environ)
        guard spawned == 0 else {
            throw Failure(description: "cannot run \(argv[0]): \(String(cString: strerror(spawned)))")
        }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            guard errno == EINTR else { throw Failure(description: "waiting for \(executable) failed: \(String(cString: strerror(errno)))") }
        }
        let output = (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
        // Exit code when it exited normally, else 128 + signal.
        let exited = status & 0x7F == 0
        return (exited ? (status >> 8) & 0xFF : 128 + (status & 0x7F), output)
    }
}
