import AmberCatalog
import CLibPQ
import Foundation

/// The rows of a completed command, decoded from libpq's binary results.
public final class PostgresResult {
    private let handle: OpaquePointer?
    /// Rows returned (or affected, see ``affectedRows``).
    public let rowCount: Int
    public let columnNames: [String]
    /// Rows changed by INSERT/UPDATE/DELETE/COPY.
    public let affectedRows: Int

    init(_ handle: OpaquePointer?) {
        self.handle = handle
        if let handle {
            rowCount = Int(PQntuples(handle))
            columnNames = (0..<PQnfields(handle)).map { String(cString: PQfname(handle, $0)) }
            affectedRows = Int(String(cString: PQcmdTuples(handle))) ?? 0
        } else {
            rowCount = 0
            columnNames = []
            affectedRows = 0
        }
    }

    deinit { if let handle { PQclear(handle) } }

    func columnIndex(_ name: String) throws -> Int {
        guard let index = columnNames.firstIndex(of: name) else {
            throw PostgresError(code: "", message: "no column '\(name)' in the result (columns: \(columnNames.joined(separator: ", ")))", kind: .other)
        }
        return index
    }

    /// Whether the value at `row`, `column` is NULL.
    public func isNull(row: Int, column: Int) -> Bool {
        PQgetisnull(handle, Int32(row), Int32(column)) == 1
    }

    /// The value at `row`, `column`, or `nil` for NULL.
    public func decode<T: PostgresDecodable>(_ type: T.Type, row: Int, column: Int) throws -> T? {
        precondition(row >= 0 && row < rowCount && column >= 0 && column < columnNames.count,
                     "PostgresResult: row \(row), column \(column) out of range (\(rowCount) × \(columnNames.count))")
        if isNull(row: row, column: column) { return nil }
        let length = Int(PQgetlength(handle, Int32(row), Int32(column)))
        let pointer = UnsafeRawPointer(PQgetvalue(handle, Int32(row), Int32(column))!)
        return try T.decode(type: PQftype(handle, Int32(column)), bytes: UnsafeRawBufferPointer(start: pointer, count: length))
    }

    /// The value at `row` in the column called `name`, or `nil` for NULL.
    public func decode<T: PostgresDecodable>(_ type: T.Type, row: Int, column name: String) throws -> T? {
        try decode(type, row: row, column: columnIndex(name))
    }

    /// The non-NULL value at `row`, `column`.
    public func value<T: PostgresDecodable>(_ type: T.Type, row: Int = 0, column: String) throws -> T {
        guard let value = try decode(type, row: row, column: columnIndex(column)) else {
            throw PostgresError(code: "", message: "column '\(column)' is NULL in row \(row)", kind: .invalidData)
        }
        return value
    }

    /// The first column of every row.
    public func column<T: PostgresDecodable>(_ type: T.Type, _ index: Int = 0) throws -> [T?] {
        try (0..<rowCount).map { try decode(type, row: $0, column: index) }
    }
}

/// A notification received on a `LISTEN`ed channel.
public struct PostgresNotification: Sendable, Equatable {
    public let channel: String
    public let payload: String
    /// Backend process that sent it.
    public let senderProcessID: Int
}

/// One connection to PostgreSQL through libpq. Its calls block: use it from one thread at a
/// time, off Swift's cooperative pool (``PostgresClient`` does this).
public final class PostgresConnection {
    private let handle: OpaquePointer
    /// Connection URL with any password removed, for logs.
    public let redactedURL: String

    /// Connects to `url` (`postgresql://user@host:port/db` or `postgresql:///db?host=/socket/dir`).
    /// - Parameter lockTimeout: seconds any statement may wait for a lock before it fails with
    ///   SQLSTATE 55P03 (``PostgresError/Kind/lockNotAvailable``, transient); nil waits as long as it takes.
    public convenience init(url: String, lockTimeout: Double?) throws {
        try self.init(url: url)
        if let lockTimeout { try execute("SELECT set_config('lock_timeout', $1, false)", [.text("\(Int(lockTimeout * 1000))ms")]) }
    }

    /// Connects to `url` (`postgresql://user@host:port/db` or `postgresql:///db?host=/socket/dir`).
    public init(url: String) throws {
        redactedURL = PostgresConnection.redact(url)
        guard let connection = PQconnectdb(url) else {
            throw PostgresError(code: "", message: "libpq could not allocate a connection", kind: .connectionFailure)
        }
        guard PQstatus(connection) == CONNECTION_OK else {
            let message = String(cString: PQerrorMessage(connection)).trimmingCharacters(in: .whitespacesAndNewlines)
            PQfinish(connection)
            throw PostgresError(code: "", message: "cannot connect to \(PostgresConnection.redact(url)): \(message)", kind: .connectionFailure)
        }
        handle = connection
        // Keep server notices (e.g. "relation already exists, skipping") out of stderr.
        PQsetNoticeProcessor(handle, { _, _ in }, nil)
    }

    deinit { PQfinish(handle) }

    /// Removes a password from a URL for display.
    static func redact(_ url: String) -> String {
        guard let at = url.firstIndex(of: "@"), let scheme = url.range(of: "://"), scheme.upperBound < at else { return url }
        let credentials = url[scheme.upperBound..<at]
        guard let colon = credentials.firstIndex(of: ":") else { return url }
        return String(url[..<colon]) + ":***" + String(url[at...])
    }

    /// Whether the connection is still usable.
    public var isHealthy: Bool { PQstatus(handle) == CONNECTION_OK }

    /// The server's backend process id (to cancel or terminate it from another session).
    public var backendProcessID: Int { Int(PQbackendPID(handle)) }

    /// Runs one statement with parameters `$1…$n`; results come back in binary.
    @discardableResult
    public func execute(_ sql: String, _ parameters: [PostgresValue] = []) throws -> PostgresResult {
        let wires = parameters.map(\.wireFormat)
        let types = wires.map(\.type)
        let formats = wires.map { Int32($0.binary ? 1 : 0) }
        let lengths = wires.map { Int32($0.bytes?.count ?? 0) }
        // Copy every value into one buffer so the pointers stay valid for the call.
        var storage: [UInt8] = []
        var offsets: [Int?] = []
        for wire in wires {
            if let bytes = wire.bytes {
                offsets.append(storage.count)
                storage += bytes
            } else {
                offsets.append(nil)
            }
        }
        if storage.isEmpty { storage = [0] }
        let raw: OpaquePointer? = storage.withUnsafeBufferPointer { buffer in
            let base = UnsafeRawPointer(buffer.baseAddress!).assumingMemoryBound(to: CChar.self)
            let values: [UnsafePointer<CChar>?] = offsets.map { $0.map { base + $0 } }
            return values.withUnsafeBufferPointer { valuePointers in
                PQexecParams(handle, sql, Int32(parameters.count), types, valuePointers.baseAddress,
                             lengths, formats, 1)
            }
        }
        return try check(raw, sql: sql)
    }

    /// Runs one or more statements without parameters (text protocol; migrations, DDL).
    public func executeScript(_ sql: String) throws {
        // PQexec runs every statement and returns the last result; a failure stops the script
        // (and, inside a transaction, aborts it) and is what comes back.
        _ = try check(PQexec(handle, sql), sql: sql)
    }

    private func check(_ raw: OpaquePointer?, sql: String) throws -> PostgresResult {
        guard let raw else { throw connectionError() }
        let status = PQresultStatus(raw)
        switch status {
        case PGRES_COMMAND_OK, PGRES_TUPLES_OK, PGRES_EMPTY_QUERY, PGRES_COPY_IN:
            return PostgresResult(raw)
        default:
            let error = PostgresConnection.error(from: raw, connection: handle)
            PQclear(raw)
            throw error
        }
    }

    static func error(from result: OpaquePointer, connection: OpaquePointer) -> PostgresError {
        func field(_ code: Character) -> String? {
            guard let value = PQresultErrorField(result, Int32(code.asciiValue!)) else { return nil }
            return String(cString: value)
        }
        let code = field("C") ?? ""
        let message = field("M") ?? String(cString: PQresultErrorMessage(result)).trimmingCharacters(in: .whitespacesAndNewlines)
        if code.isEmpty && (PQstatus(connection) != CONNECTION_OK || isConnectionLoss(message)) {
            return PostgresError(code: "", message: message, kind: .connectionLost)
        }
        return PostgresError(code: code, message: message, detail: field("D"), hint: field("H"))
    }

    private func connectionError() -> PostgresError {
        let message = String(cString: PQerrorMessage(handle)).trimmingCharacters(in: .whitespacesAndNewlines)
        return PostgresError(code: "", message: message.isEmpty ? "no result from the server" : message,
                             kind: PQstatus(handle) == CONNECTION_OK && !PostgresConnection.isConnectionLoss(message) ? .other : .connectionLost)
    }

    /// Whether a libpq message (no SQLSTATE) says the connection is gone: libpq does not always
    /// mark the connection bad at once (during COPY, for one).
    static func isConnectionLoss(_ message: String) -> Bool {
        ["server closed the connection unexpectedly", "connection to server was lost", "no connection to the server",
         "could not send data to server", "could not receive data from server", "SSL SYSCALL error"].contains { message.contains($0) }
    }

    /// Runs `body` in a transaction: COMMIT if it returns, ROLLBACK if it throws.
    @discardableResult
    public func transaction<R>(isolation: String? = nil, _ body: () throws -> R) throws -> R {
        try executeScript(isolation.map { "BEGIN ISOLATION LEVEL \($0)" } ?? "BEGIN")
        do {
            let result = try body()
            try executeScript("COMMIT")
            return result
        } catch {
            if isHealthy { try? executeScript("ROLLBACK") }
            throw error
        }
    }

    /// Bulk load with `COPY table (columns) FROM STDIN (FORMAT binary)`. `produce` appends rows;
    /// data is sent in chunks of about 4 MiB as it is produced.
    /// - Returns: rows copied.
    @discardableResult
    public func copy(into table: String, columns: [String], _ produce: (inout CopySink) throws -> Void) throws -> Int {
        let sql = "COPY \(table) (\(columns.joined(separator: ", "))) FROM STDIN (FORMAT binary)"
        let start = PQexec(handle, sql)
        guard let start else { throw connectionError() }
        guard PQresultStatus(start) == PGRES_COPY_IN else {
            let error = PostgresConnection.error(from: start, connection: handle)
            PQclear(start)
            throw error
        }
        PQclear(start)
        var sink = CopySink(connection: self, columnCount: columns.count)
        do {
            try produce(&sink)
            try sink.flush(force: true)
            try send(BinaryCopyWriter.trailer)
            guard PQputCopyEnd(handle, nil) == 1 else { throw connectionError() }
        } catch {
            _ = PQputCopyEnd(handle, "aborted by client: \(error)")
            while let result = PQgetResult(handle) { PQclear(result) }
            throw error
        }
        var firstError: PostgresError?
        var rows = 0
        while let result = PQgetResult(handle) {
            if PQresultStatus(result) != PGRES_COMMAND_OK, firstError == nil {
                firstError = PostgresConnection.error(from: result, connection: handle)
            } else {
                rows = Int(String(cString: PQcmdTuples(result))) ?? rows
            }
            PQclear(result)
        }
        if let firstError { throw firstError }
        return rows
    }

    func send(_ bytes: [UInt8]) throws {
        let status = bytes.withUnsafeBytes { buffer in
            PQputCopyData(handle, buffer.baseAddress!.assumingMemoryBound(to: CChar.self), Int32(buffer.count))
        }
        guard status == 1 else { throw connectionError() }
    }

    /// Starts listening on `channel` (an identifier: letters, digits, underscores).
    public func listen(_ channel: String) throws {
        precondition(channel.allSatisfy { $0.isLetter || $0.isNumber || $0 == "_" }, "listen: bad channel name '\(channel)'")
        try executeScript("LISTEN \(channel)")
    }

    /// Sends `payload` on `channel`.
    public func notify(_ channel: String, payload: String = "") throws {
        try execute("SELECT pg_notify($1, $2)", [.text(channel), .text(payload)])
    }

    /// Waits up to `timeout` seconds for a notification; `nil` when none arrived.
    public func waitForNotification(timeout: Double) throws -> PostgresNotification? {
        if let pending = try takeNotification() { return pending }
        let socket = PQsocket(handle)
        guard socket >= 0 else { throw connectionError() }
        var descriptor = pollfd(fd: socket, events: Int16(POLLIN), revents: 0)
        let ready = poll(&descriptor, 1, Int32(max(0, timeout * 1000)))
        if ready < 0 && errno != EINTR { throw PostgresError(code: "", message: "poll failed: \(String(cString: strerror(errno)))", kind: .connectionLost) }
        return try takeNotification()
    }

    private func takeNotification() throws -> PostgresNotification? {
        guard PQconsumeInput(handle) == 1 else { throw connectionError() }
        guard let raw = PQnotifies(handle) else { return nil }
        defer { PQfreemem(raw) }
        return PostgresNotification(channel: String(cString: raw.pointee.relname),
                                    payload: String(cString: raw.pointee.extra),
                                    senderProcessID: Int(raw.pointee.be_pid))
    }
}

/// Rows for a running `COPY`, sent in chunks.
public struct CopySink {
    let connection: PostgresConnection
    var writer: BinaryCopyWriter
    /// Rows appended so far.
    public var rowCount: Int { writer.rowCount }

    init(connection: PostgresConnection, columnCount: Int) {
        self.connection = connection
        self.writer = BinaryCopyWriter(columnCount: columnCount)
    }

    /// Appends a row (values in the COPY's column order).
    public mutating func append(_ values: [PostgresValue]) throws {
        writer.append(values)
        try flush(force: false)
    }

    mutating func flush(force: Bool) throws {
        guard force || writer.buffer.count >= 4 << 20, !writer.buffer.isEmpty else { return }
        try connection.send(writer.buffer)
        writer.buffer.removeAll(keepingCapacity: true)
    }
}
