import AmberCatalog
/// An error from PostgreSQL or from talking to it: the SQLSTATE, what kind of failure it is,
/// the server's words, and what to do about it.
public struct PostgresError: StoreError, CustomStringConvertible, Sendable {
    /// What went wrong, grouped by what a caller does about it.
    public enum Kind: String, Sendable {
        /// Could not connect (server down, wrong URL, authentication).
        case connectionFailure
        /// The connection broke during a command; the command's transaction did not commit.
        case connectionLost
        /// A unique constraint would be violated (23505).
        case uniqueViolation
        /// A foreign key would be violated (23503).
        case foreignKeyViolation
        /// A CHECK or NOT NULL constraint would be violated (23514, 23502).
        case constraintViolation
        /// The input was malformed for its type (22xxx).
        case invalidData
        /// Serialization failure or deadlock: retrying the transaction can succeed (40001, 40P01).
        case retryableConflict
        /// The role lacks a privilege (42501).
        case insufficientPrivilege
        /// A table, view, function or schema is missing (42P01, 42883, 3F000): migrations not applied.
        case undefinedObject
        /// The server is shutting down or starting up (57P01–57P03).
        case serverUnavailable
        /// The statement was cancelled (57014).
        case cancelled
        /// A lock was not granted within `lock_timeout` (55P03): another session holds it; retry.
        case lockNotAvailable
        /// Syntax errors and anything else.
        case other
    }

    /// Five-character SQLSTATE, or empty for client-side failures.
    public let code: String
    public let kind: Kind
    /// The primary message.
    public let message: String
    public let detail: String?
    public let hint: String?

    public init(code: String, message: String, detail: String? = nil, hint: String? = nil, kind: Kind? = nil) {
        self.code = code
        self.message = message
        self.detail = detail
        self.hint = hint
        self.kind = kind ?? PostgresError.kind(forSQLState: code)
    }

    static func kind(forSQLState code: String) -> Kind {
        switch code {
        case "23505": return .uniqueViolation
        case "23503": return .foreignKeyViolation
        case "23514", "23502": return .constraintViolation
        case "40001", "40P01": return .retryableConflict
        case "42501": return .insufficientPrivilege
        case "42P01", "42883", "3F000", "42704": return .undefinedObject
        case "57P01", "57P02", "57P03": return .serverUnavailable
        case "57014": return .cancelled
        case "55P03": return .lockNotAvailable
        default:
            if code.hasPrefix("08") { return .connectionLost }
            if code.hasPrefix("22") { return .invalidData }
            return .other
        }
    }

    /// Whether the same work may succeed if tried again (after reconnecting).
    public var isTransient: Bool {
        [.connectionFailure, .connectionLost, .retryableConflict, .serverUnavailable, .lockNotAvailable].contains(kind)
    }

    /// What an operator should do next.
    public var advice: String {
        switch kind {
        case .connectionFailure:
            return "check that PostgreSQL is running and the URL is right (AMBER_DATABASE_URL, or `amber db start` for the embedded cluster)"
        case .connectionLost:
            return "the server went away; Amber reconnects and retries transient work, the interrupted transaction was rolled back"
        case .uniqueViolation:
            return "the row already exists; use its existing id or a new external id"
        case .foreignKeyViolation:
            return "a referenced row is missing; ingest the items before the pairs that use them"
        case .constraintViolation:
            return "the data breaks a rule of the schema (see the detail); fix the input"
        case .invalidData:
            return "a value has the wrong format for its column; fix the input"
        case .retryableConflict:
            return "a concurrent transaction conflicted; retry"
        case .lockNotAvailable:
            return "another session holds a lock Amber needs (see pg_locks); retry, or end that session"
        case .insufficientPrivilege:
            return "the role lacks a privilege; connect as the owner role for migrations, amber_app for the service"
        case .undefinedObject:
            return "the schema is missing or out of date; run `amber migrate`"
        case .serverUnavailable:
            return "the server is shutting down or starting; wait and retry"
        case .cancelled:
            return "the statement was cancelled"
        case .other:
            return "see the server's message"
        }
    }

    public var description: String {
        var text = "PostgreSQL"
        if !code.isEmpty { text += " \(code)" }
        text += ": \(message)"
        if let detail, !detail.isEmpty { text += " (\(detail))" }
        if let hint, !hint.isEmpty { text += "; hint: \(hint)" }
        return text + " — \(advice)"
    }
}
