import Foundation

/// Hands a value to `concurrentPerform`, whose iterations only touch disjoint parts of it.
public struct UncheckedSendable<Value>: @unchecked Sendable {
    public let value: Value
    public init(_ value: Value) { self.value = value }
}

/// Work split over the cores.
public enum Parallel {
    private static let serialKey = "amber.parallel.serial"

    /// Whether ``map(_:minimum:_:)`` runs on the calling thread only (inside ``serially(_:)``).
    public static var isSerial: Bool { Thread.current.threadDictionary[serialKey] != nil }

    /// Runs `body` with ``map(_:minimum:_:)`` kept on this thread: for work that already runs
    /// once per core (a loaded server), where fanning out again would only add threads.
    public static func serially<T>(_ body: () throws -> T) rethrows -> T {
        let dictionary = Thread.current.threadDictionary
        let outer = dictionary[serialKey] != nil
        dictionary[serialKey] = true
        defer { if !outer { dictionary.removeObject(forKey: serialKey) } }
        return try body()
    }

    /// `body` over `0..<count` in one chunk per core, results in chunk order (empty chunks are
    /// skipped); one call on the whole range when `count < minimum` (the hand-off would cost more
    /// than it saves) or there is one core.
    public static func map<T>(_ count: Int, minimum: Int, _ body: (Range<Int>) -> T) -> [T] {
        let cores = ProcessInfo.processInfo.activeProcessorCount
        guard count >= minimum, cores > 1, !isSerial else { return [body(0..<count)] }
        let chunk = (count + cores - 1) / cores
        var results = [T?](repeating: nil, count: cores)
        results.withUnsafeMutableBufferPointer { slots in
            withoutActuallyEscaping(body) { body in
                let box = UncheckedSendable((body, slots))
                DispatchQueue.concurrentPerform(iterations: cores) { part in
                    let range = (part * chunk) ..< min((part + 1) * chunk, count)
                    box.value.1[part] = range.isEmpty ? nil : box.value.0(range)
                }
            }
        }
        return results.compactMap { $0 }
    }
}
