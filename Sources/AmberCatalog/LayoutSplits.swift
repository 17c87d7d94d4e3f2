import Foundation

/// Where a global/local layout's splits start, as its `meta.json` records them (`amber encode`
/// writes `dev_start` and `test_start`): images before `devStart` are train, from `devStart` dev,
/// from `testStart` test. Options given on the command line take precedence.
public struct LayoutSplits: Sendable, Equatable {
    public var devStart: Int?
    public var testStart: Int?

    public init(devStart: Int? = nil, testStart: Int? = nil) {
        self.devStart = devStart
        self.testStart = testStart
    }

    /// The boundaries in `directory/meta.json`, if it has them; none when there is no such file.
    /// - Throws: ``LayoutSplitsError`` naming the file when it is not JSON or a boundary is not an
    ///   integer within `0...imageCount` (or test starts before dev).
    public static func read(directory: String, imageCount: Int) throws -> LayoutSplits {
        let path = directory + "/meta.json"
        guard let data = FileManager.default.contents(atPath: path) else { return LayoutSplits() }
        struct Meta: Decodable {
            var dev_start: Int?
            var test_start: Int?
        }
        let meta: Meta
        do { meta = try JSONDecoder().decode(Meta.self, from: data) } catch {
            throw LayoutSplitsError(description: "\(path): dev_start and test_start must be integers in a JSON object (\(error))")
        }
        func boundary(_ key: String, _ value: Int?) throws -> Int? {
            guard let value else { return nil }
            guard (0...imageCount).contains(value) else {
                throw LayoutSplitsError(description: "\(path): \(key) must be in 0…\(imageCount) (the images), got \(value)")
            }
            return value
        }
        let splits = LayoutSplits(devStart: try boundary("dev_start", meta.dev_start), testStart: try boundary("test_start", meta.test_start))
        if let dev = splits.devStart, let test = splits.testStart, test < dev {
            throw LayoutSplitsError(description: "\(path): test_start (\(test)) is before dev_start (\(dev))")
        }
        return splits
    }
}

public struct LayoutSplitsError: Error, CustomStringConvertible {
    public let description: String
}
