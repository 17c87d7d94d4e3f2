import AmberTensor

// Shape legend: `B` pairs in the batch; `S` `[B, B]` scores, `S[k, l] = s(image_k, text_l)`;
// pair k's positive is `S[k, k]`.

/// How a triplet loss treats the negatives of each positive.
public enum NegativeSelection: String, Sendable, Codable {
    /// Only the hardest (highest-scoring) negative (VSE++, Faghri et al. 2018).
    case hardest
    /// Every negative, summed (the warm-up of VSE++ and AAHR).
    case all
}

/// Bidirectional hinge triplet loss on a batch's score matrix (Faghri et al., VSE++, 2018):
/// ```
/// L = Σ_k  Σ_{l ∈ N(k)} [m + S[k,l] − S[k,k]]₊      (image k → texts)
///   + Σ_l  Σ_{k ∈ N(l)} [m + S[k,l] − S[l,l]]₊      (text l → images)
/// ```
/// with the inner sums replaced by a max for ``NegativeSelection/hardest``. A pair of the same
/// image is never a negative (`sameImage`), so a batch may hold several captions of one image.
public struct TripletLoss: Sendable {
    /// `m`. Default 0.2.
    public var margin: Float
    public var negatives: NegativeSelection

    public init(margin: Float = 0.2, negatives: NegativeSelection = .hardest) {
        self.margin = margin
        self.negatives = negatives
    }

    /// The loss, averaged over the batch (scalar).
    /// - Parameters:
    ///   - scores: `S` `[B, B]`.
    ///   - imageIDs: the image of each pair (pairs of the same image are not negatives).
    public func callAsFunction(scores: Tensor, imageIDs: [Int]) -> Tensor {
        let B = scores.shape[0]
        precondition(scores.shape == [B, B] && imageIDs.count == B, "TripletLoss: scores \(scores.shape) for \(imageIDs.count) pairs")
        precondition(B > 1, "TripletLoss: a batch needs at least two pairs, got \(B)")
        let diagonal = scores.gather((0..<B).map { $0 }, axis: 1)                    // [B, 1]: S[k, k]
        var notNegative = [Bool](repeating: false, count: B * B)
        for k in 0..<B { for l in 0..<B where imageIDs[k] == imageIDs[l] { notNegative[k * B + l] = true } }
        let imageToText = (scores + margin - diagonal).relu().maskedFill(notNegative, with: 0)            // row k vs S[k,k]
        let textToImage = (scores + margin - diagonal.reshaped([1, B])).relu().maskedFill(notNegative, with: 0) // column l vs S[l,l]
        switch negatives {
        case .hardest:
            return (imageToText.max(axis: 1).sum() + textToImage.max(axis: 0).sum()) * (1 / Float(B))
        case .all:
            return (imageToText.sum() + textToImage.sum()) * (1 / Float(B))
        }
    }
}
