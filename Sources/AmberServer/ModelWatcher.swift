import AmberCatalog
import Foundation
import Logging
import ServiceLifecycle

/// Keeps the query service on the promoted model and the stored items: loads it at start
/// (retrying while the database is unreachable), then reloads whenever `amber.promote_model`
/// notifies `amber_model_promoted`, and grows the galleries when pairs arrive
/// (`amber_new_pairs`, sent by every pair insert) or items alone (`amber_new_items`, sent by
/// `POST /v1/items`). A reload builds
/// the new engine beside the old one and swaps it in whole; queries in flight finish on the
/// engine they started with.
public struct ModelWatcher: Service {
    public let service: QueryService
    public let feed: any ChangeFeed
    public let logger: Logger
    /// Seconds between attempts while the database is unreachable, and between checks of the
    /// serving pointer (a missed notification is caught up this way).
    public var retryDelay: Double = 5

    public init(service: QueryService, feed: any ChangeFeed, logger: Logger) {
        self.service = service
        self.feed = feed
        self.logger = logger
    }

    public func run() async throws {
        // A graceful shutdown (SIGTERM, SIGINT) cancels the wait for the next notification;
        // without this the service group waits for this loop forever and the server never stops.
        try await cancelWhenGracefulShutdown { try await self.watch() }
    }

    private func watch() async throws {
        while !Task.isCancelled {
            do {
                try await feed.connect()
                try await service.reload()
                // Wait for a promotion; check the pointer every so often anyway.
                if let change = try await feed.next(timeout: retryDelay * 12) {
                    if case .modelPromoted(let version) = change {
                        logger.info("model promoted", metadata: ["serve.version": "\(version)"])
                    } else {
                        // A burst of ingests notifies once per transaction: take them together.
                        try await Task.sleep(for: .milliseconds(200))
                        while try await feed.next(timeout: 0) != nil {}
                    }
                }
            } catch is CancellationError {
                return
            } catch {
                logger.warning("cannot load the serving model now; retrying", metadata: ["error": "\(error)", "serve.retry_seconds": "\(retryDelay)"])
                try? await Task.sleep(for: .seconds(retryDelay))
            }
        }
    }
}

/// What changed in the catalogue, as the query service hears it.
public enum CatalogChange: Sendable, Equatable {
    /// A model version was promoted (its version, as the notification gave it).
    case modelPromoted(String)
    /// Pairs were stored (a page of new training data, or feedback).
    case pairsAdded
    /// Items were stored without pairs.
    case itemsAdded
}

/// Where the query service hears of changes made by others (the trainer, other servers, an
/// operator): the store's notifications. ``next(timeout:)`` may miss nothing it was connected
/// for; the watcher also re-reads the serving pointer every so often, so a missed one costs time,
/// not correctness.
public protocol ChangeFeed: Sendable {
    /// Connects (again, if the connection broke).
    func connect() async throws
    /// The next change, or nil after `timeout` seconds; throws `CancellationError` when the task
    /// is cancelled, and the store's error when the connection breaks.
    func next(timeout: Double) async throws -> CatalogChange?
}
