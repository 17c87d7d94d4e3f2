import AmberTensor

/// A user of the search, simulated for experiments on learning from feedback: shown a
/// ranked list, the user looks at the first `patience` results, chooses the first one that is
/// right and rejects every result ranked above it; when none of those is right, the user says
/// nothing. The feedback a real user sends through `POST /v1/feedback` has the same shape.
public struct SimulatedUser: Sendable, Equatable {
    /// Results the user looks at. Default 10.
    public var patience: Int

    public init(patience: Int = 10) {
        precondition(patience >= 1, "SimulatedUser: patience \(patience) must be at least 1")
        self.patience = patience
    }

    /// What the user chose (with its 1-based rank) and rejected.
    public struct Feedback: Sendable, Equatable {
        public var chosen: Int
        public var rank: Int
        public var rejected: [Int]

        public init(chosen: Int, rank: Int, rejected: [Int]) {
            self.chosen = chosen
            self.rank = rank
            self.rejected = rejected
        }
    }

    /// The feedback on `ranking` (gallery indices, best first) when the right results are
    /// `isRight`; nil when none of the first `patience` is right.
    public func feedback(on ranking: [Int], isRight: (Int) -> Bool) -> Feedback? {
        for (position, item) in ranking.prefix(patience).enumerated() where isRight(item) {
            return Feedback(chosen: item, rank: position + 1, rejected: Array(ranking.prefix(position)))
        }
        return nil
    }

    /// The `count` best gallery indices of `scores` (highest first; ties to the lower index).
    public static func ranking(_ scores: UnsafeBufferPointer<Float>, count: Int) -> [Int] {
        TopScores.indices(of: scores, k: count)
    }
}
