import AmberCatalog
import Dispatch
import Foundation
import Logging

/// A small pool of libpq connections for async code.
///
/// libpq blocks, so each connection lives on its own serial dispatch queue and every call runs
/// there, never on Swift's cooperative threads. `withConnection` lends a connection to a closure
/// that runs on that queue. Broken connections are dropped and replaced on the next use.
public final class PostgresClient: Sendable {
    public let url: String
    public let maximumConnections: Int
    /// Seconds a statement waits for a lock before failing (transient, 55P03); nil: no limit.
    public let lockTimeout: Double?
    let logger: Logger
    private let pool: ConnectionPool

    public init(url: String, maximumConnections: Int = 4, lockTimeout: Double? = 5, logger: Logger = Logger(label: "amber.store")) {
        precondition(maximumConnections >= 1, "PostgresClient: maximumConnections must be at least 1")
        self.url = url
        self.maximumConnections = maximumConnections
        self.lockTimeout = lockTimeout
        self.logger = logger
        self.pool = ConnectionPool(limit: maximumConnections)
    }

    /// Runs `body` with a connection, on that connection's own thread.
    public func withConnection<R: Sendable>(_ body: @escaping @Sendable (PostgresConnection) throws -> R) async throws -> R {
        let lease = try await pool.acquire()
        do {
            let result: R = try await withCheckedThrowingContinuation { continuation in
                lease.queue.async { [url, lockTimeout] in
                    do {
                        if lease.connection == nil || lease.connection?.isHealthy == false {
                            lease.connection = try PostgresConnection(url: url, lockTimeout: lockTimeout)
                        }
                        continuation.resume(returning: try body(lease.connection!))
                    } catch {
                        if let connection = lease.connection, !connection.isHealthy { lease.connection = nil }
                        continuation.resume(throwing: error)
                    }
                }
            }
            await pool.release(lease)
            return result
        } catch {
            await pool.release(lease)
            throw error
        }
    }

    /// Runs `body` in a transaction on a pooled connection.
    public func transaction<R: Sendable>(_ body: @escaping @Sendable (PostgresConnection) throws -> R) async throws -> R {
        try await withConnection { connection in try connection.transaction { try body(connection) } }
    }

    /// Closes idle connections.
    public func shutdown() async { await pool.drain() }
}

/// A connection and the serial queue it is used on.
final class ConnectionLease: @unchecked Sendable {
    let queue: DispatchQueue
    /// Touched only on `queue`.
    var connection: PostgresConnection?

    init(index: Int) {
        queue = DispatchQueue(label: "amber.postgres.connection.\(index)")
    }
}

actor ConnectionPool {
    let limit: Int
    private var idle: [ConnectionLease] = []
    private var created = 0
    private var waiters: [CheckedContinuation<ConnectionLease, Never>] = []

    init(limit: Int) { self.limit = limit }

    func acquire() async throws -> ConnectionLease {
        try Task.checkCancellation()
        if let lease = idle.popLast() { return lease }
        if created < limit {
            created += 1
            return ConnectionLease(index: created)
        }
        return await withCheckedContinuation { waiters.append($0) }
    }

    func release(_ lease: ConnectionLease) {
        if !waiters.isEmpty {
            waiters.removeFirst().resume(returning: lease)
        } else {
            idle.append(lease)
        }
    }

    func drain() {
        for lease in idle { lease.queue.sync { lease.connection = nil } }
        idle.removeAll()
    }
}

/// A dedicated connection that `LISTEN`s and hands notifications to async code. Waiting honours
/// task cancellation (checked every `pollInterval` seconds).
public final class PostgresListener: Sendable {
    private let lease = ConnectionLease(index: 0)
    public let url: String
    public let channels: [String]
    let pollInterval: Double

    public init(url: String, channels: [String], pollInterval: Double = 0.2) {
        self.url = url
        self.channels = channels
        self.pollInterval = pollInterval
    }

    /// Connects (again, if the connection broke) and listens on every channel.
    public func connect() async throws {
        try await onQueue { lease in
            if lease.connection?.isHealthy != true {
                let connection = try PostgresConnection(url: self.url)
                for channel in self.channels { try connection.listen(channel) }
                lease.connection = connection
            }
        }
    }

    /// The next notification, or `nil` after `timeout` seconds. Throws `CancellationError` when
    /// the task is cancelled, and a ``PostgresError`` when the connection breaks.
    public func next(timeout: Double) async throws -> PostgresNotification? {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            try Task.checkCancellation()
            let remaining = deadline.timeIntervalSinceNow
            let slice = min(pollInterval, max(remaining, 0))
            if let notification = try await onQueue({ lease -> PostgresNotification? in
                guard let connection = lease.connection else {
                    throw PostgresError(code: "", message: "listener is not connected; call connect()", kind: .connectionLost)
                }
                return try connection.waitForNotification(timeout: slice)
            }) {
                return notification
            }
            if remaining <= 0 { return nil }
        }
    }

    private func onQueue<R: Sendable>(_ body: @escaping @Sendable (ConnectionLease) throws -> R) async throws -> R {
        let lease = self.lease
        return try await withCheckedThrowingContinuation { continuation in
            lease.queue.async {
                continuation.resume(with: Result { try body(lease) })
            }
        }
    }
}
