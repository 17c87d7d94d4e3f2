import AmberCatalog
import AmberStore
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
    public let url: String
    public let logger: Logger
    /// Seconds between attempts while the database is unreachable, and between checks of the
    /// serving pointer (a missed notification is caught up this way).
    public var retryDelay: Double = 5

    public init(service: QueryService, url: String, logger: Logger) {
        self.service = service
        self.url = url
        self.logger = logger
    }

    public func run() async throws {
        // A graceful shutdown (SIGTERM, SIGINT) cancels the wait for the next notification;
        // without this the service group waits for this loop forever and the server never stops.
        try await cancelWhenGracefulShutdown { try await self.watch() }
    }

    private func watch() async throws {
        let listener = PostgresListener(url: url, channels: ["amber_model_promoted", "amber_new_pairs", "amber_new_items"])
        while !Task.isCancelled {
            do {
                try await listener.connect()
                try await service.reload()
                // Wait for a promotion; check the pointer every so often anyway.
                if let notification = try await listener.next(timeout: retryDelay * 12) {
                    if notification.channel == "amber_model_promoted" {
                        logger.info("model promoted", metadata: ["serve.version": "\(notification.payload)"])
                    } else {
                        // A burst of ingests notifies once per transaction: take them together.
                        try await Task.sleep(for: .milliseconds(200))
                        while try await listener.next(timeout: 0) != nil {}
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
