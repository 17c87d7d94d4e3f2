@testable import AmberModel
import AmberCatalog
import AmberTensor
import AmberTestSupport
import Foundation
import Testing

@Suite("DRCL: label-supervised networks, losses and mAP")
struct LabelSupervisedTests {
    static func softmax(_ row: [Double]) -> [Double] {
        let peak = row.max() ?? 0
        let e = row.map { Foundation.exp($0 - peak) }
        let total = e.reduce(0, +)
        return e.map { $0 / total }
    }

    static func rows(_ t: Tensor) -> [[Double]] {
        let n = t.shape[0], d = t.shape[1]
        return (0..<n).map { i in (0..<d).map { Double(t.scalars[i * d + $0]) } }
    }

    /// GCE in Double: mean_b (1 − p_b^q)/q, −log p_b at q = 0.
    static func naiveGCE(_ logits: Tensor, _ targets: Tensor, q: Double) -> Double {
        let z = rows(logits), y = rows(targets)
        var total = 0.0
        for b in z.indices {
            let p = zip(softmax(z[b]), y[b]).map { $0 * $1 }.reduce(0, +)
            total += q == 0 ? -Foundation.log(p) : (1 - Foundation.pow(p, q)) / q
        }
        return total / Double(z.count)
    }

    @Test("generalised cross-entropy matches its formula and gradient", arguments: [Float(0), 0.3, 1])
    func generalizedCrossEntropy(q: Float) {
        let logits = randomTensor([5, 4], seed: 1, lower: -2, upper: 2)
        // Soft targets, as mixup makes them: λ one-hot + (1 − λ) another one-hot.
        var values = [Float](repeating: 0, count: 20)
        for b in 0..<5 { values[b * 4 + b % 4] += 0.9; values[b * 4 + (b + 1) % 4] += 0.1 }
        let targets = Tensor(shape: [5, 4], scalars: values)
        let value = LabelSupervisedLosses.generalizedCrossEntropy(logits: logits, targets: targets, q: q).scalar
        #expect(abs(Double(value) - Self.naiveGCE(logits, targets, q: Double(q))) < 1e-5)
        expectGradients([logits], epsilon: 1e-3) { LabelSupervisedLosses.generalizedCrossEntropy(logits: $0[0], targets: targets, q: q) }
    }

    @Test func gceIsBoundedAtQOneAndCrossEntropyAtZero() {
        // A confident wrong prediction: cross-entropy grows without bound, MAE stays ≤ 1.
        let logits = Tensor(shape: [1, 3], scalars: [20, 0, 0]), targets = Tensor(shape: [1, 3], scalars: [0, 1, 0])
        #expect(LabelSupervisedLosses.generalizedCrossEntropy(logits: logits, targets: targets, q: 0).scalar > 19)
        #expect(LabelSupervisedLosses.generalizedCrossEntropy(logits: logits, targets: targets, q: 1).scalar <= 1)
    }

    /// The consistency loss term by term in Double loops.
    static func naiveConsistency(_ f: Tensor, _ y: Tensor, _ w: Tensor, _ l: Tensor, q: Double, alpha: Double, beta: Double, eta: Double) -> Double {
        let F = rows(f), Y = rows(y), W = rows(w), L = rows(l)
        let B = F.count, D = F[0].count, C = Y[0].count
        let R = (0..<B).map { b in (0..<D).map { d in (0..<C).map { Y[b][$0] * L[$0][d] }.reduce(0, +) } }
        func cos2(_ a: [Double], _ b: [Double]) -> Double {
            let dot = zip(a, b).map { $0 * $1 }.reduce(0, +)
            return 2 * dot / ((a.map { $0 * $0 }.reduce(0, +)).squareRoot() * (b.map { $0 * $0 }.reduce(0, +)).squareRoot())
        }
        var within = 0.0, across = 0.0, squared = 0.0
        for i in 0..<B {
            for j in 0..<B {
                within += Foundation.pow(cos2(R[i], R[j]) - cos2(F[i], F[j]), 2)
                across += Foundation.pow(cos2(R[i], F[j]) - cos2(R[j], F[i]), 2)
            }
            for d in 0..<D { squared += Foundation.pow(R[i][d] - F[i][d], 2) }
        }
        let logits = Tensor(shape: [B, C], scalars: (0..<B).flatMap { b in (0..<C).map { c in Float((0..<D).map { F[b][$0] * W[$0][c] }.reduce(0, +)) } })
        let structure = within / Double(B * B) + across / Double(B * B)
        return alpha * structure + beta * squared / Double(B * D) + eta * naiveGCE(logits, y, q: q)
    }

    @Test func reversibleConsistencyMatchesItsDefinitionAndGradient() throws {
        let B = 5, D = 6, C = 3
        var generator = RandomGenerator(seed: 3)
        let prior = DoubleMatrix.orthonormalColumns(rows: D, columns: C, using: &generator).tensor
        let inverse = try DoubleMatrix(prior).pseudoInverse().tensor
        let features = Tensor.randomNormal([B, D], using: &generator).l2Normalized(axis: -1)
        var labelValues = [Float](repeating: 0, count: B * C)
        for b in 0..<B { labelValues[b * C + b % C] = 0.9; labelValues[b * C + (b + 2) % C] += 0.1 }
        let labels = Tensor(shape: [B, C], scalars: labelValues)
        let loss = ReversibleConsistencyLoss(alpha: 0.1, beta: 0.7, eta: 1)
        let value = loss(features: features, labels: labels, prior: prior, inverse: inverse, q: 0.4).total.scalar
        let expected = Self.naiveConsistency(features, labels, prior, inverse, q: 0.4, alpha: 0.1, beta: 0.7, eta: 1)
        #expect(abs(Double(value) - expected) < 1e-4 * max(1, abs(expected)))
        expectGradients([features], epsilon: 1e-3, absoluteTolerance: 3e-3) {
            loss(features: $0[0], labels: labels, prior: prior, inverse: inverse, q: 0.4).total
        }
        // Features at their targets with the structure of the targets: only the GCE term is left.
        let targets = Tensor.matmul(Tensor(shape: [B, C], scalars: (0..<B * C).map { $0 % C == ($0 / C) % C ? 1 : 0 }), inverse)
        let oneHot = Tensor(shape: [B, C], scalars: (0..<B * C).map { $0 % C == ($0 / C) % C ? 1 : 0 })
        let parts = loss(features: targets, labels: oneHot, prior: prior, inverse: inverse, q: 0.4)
        #expect(parts.structure.scalar < 1e-5 && parts.squared.scalar < 1e-10)
    }

    @Test func encoderMatchesANaiveForwardPassAndItsGradient() {
        var generator = RandomGenerator(seed: 4)
        let data = randomTensor([6, 5], seed: 5, lower: -3, upper: 3)
        let statistics = LabelEncoder.standardization(of: data)
        let encoder = LabelEncoder(modality: .image, inputDimension: 5, configuration: .init(hidden: [7, 4], output: 3),
                                   standardization: statistics, generator: &generator)
        #expect(encoder.parameters.map(\.name) == ["image.hidden0.weight", "image.hidden0.bias", "image.hidden1.weight", "image.hidden1.bias", "image.output.weight"])
        let declared = LabelEncoder.parameterShapes(modality: .image, inputDimension: 5, configuration: .init(hidden: [7, 4], output: 3))
        #expect(declared.map(\.name) == encoder.parameters.map(\.name) && declared.map(\.shape) == encoder.parameters.map(\.shape))
        let x = randomTensor([4, 5], seed: 6, lower: -3, upper: 3)
        // Naive: standardise, two ReLU layers, no-bias output, unit length.
        let X = Self.rows(x), mean = statistics.mean.scalars.map(Double.init), scale = statistics.scale.scalars.map(Double.init)
        var h = X.map { row in row.indices.map { (row[$0] - mean[$0]) * scale[$0] } }
        for layer in encoder.hidden {
            let W = Self.rows(layer.weight.value), b = layer.bias.value.scalars.map(Double.init)
            h = h.map { row in b.indices.map { j in max(0, row.indices.map { row[$0] * W[$0][j] }.reduce(0, +) + b[j]) } }
        }
        let O = Self.rows(encoder.output.value)
        let out = h.map { row -> [Double] in
            let y = (0..<3).map { j in row.indices.map { row[$0] * O[$0][j] }.reduce(0, +) }
            let norm = y.map { $0 * $0 }.reduce(0, +).squareRoot()
            return y.map { $0 / norm }
        }
        expectClose(encoder(x), out.flatMap { $0.map(Float.init) }, shape: [4, 3], tolerance: 1e-5)
        #expect(encoder.embed(x, chunkSize: 3).isApproximatelyEqual(to: encoder(x), tolerance: 1e-6))
        // Standardisation: per-dimension mean 0 and deviation 1 on the data it came from.
        let standardized = (data - statistics.mean) * statistics.scale
        #expect(standardized.mean(axis: 0).abs().max(axis: 0).scalar < 1e-5)
        #expect(abs(standardized.squared().mean(axis: 0).mean().scalar - 1) < 1e-4)
        expectGradients([x], epsilon: 1e-3, absoluteTolerance: 3e-3) { encoder($0[0]) }
    }

    @Test func meanAveragePrecisionFollowsTheDefinition() {
        // One query, gallery scored 0.9, 0.8, 0.7, 0.6 (unit 2-d vectors at decreasing cosines);
        // relevant at ranks 1 and 3: AP = (1/1 + 2/3) / 2.
        let angles: [Float] = [0.1, 0.5, 0.9, 1.3]
        let gallery = Tensor(shape: [4, 2], scalars: angles.flatMap { [cosf($0), sinf($0)] })
        let query = Tensor(shape: [1, 2], scalars: [1, 0])
        let labels = [[1], [0], [1], [2]]
        let ap = LabelRetrievalMetrics.meanAveragePrecision(queries: query, queryLabels: [[1]], gallery: gallery, galleryLabels: labels, depth: nil)
        #expect(abs(ap - (1 + 2.0 / 3) / 2) < 1e-12)
        // Depth 2: only the hit at rank 1 counts: AP@2 = 1.
        #expect(LabelRetrievalMetrics.meanAveragePrecision(queries: query, queryLabels: [[1]], gallery: gallery, galleryLabels: labels, depth: 2) == 1)
        // A query with no relevant item scores 0; multi-label relevance is "shares a class".
        #expect(LabelRetrievalMetrics.meanAveragePrecision(queries: query, queryLabels: [[5]], gallery: gallery, galleryLabels: labels, depth: nil) == 0)
        let multi = LabelRetrievalMetrics.meanAveragePrecision(queries: query, queryLabels: [[0, 2]], gallery: gallery, galleryLabels: labels, depth: nil)
        #expect(abs(multi - (1.0 / 2 + 2.0 / 4) / 2) < 1e-12)
        // Magnitudes do not matter (cosine).
        #expect(LabelRetrievalMetrics.meanAveragePrecision(queries: query * 5, queryLabels: [[1]], gallery: gallery * 0.1, galleryLabels: labels, depth: nil) == ap)
        // Both directions and the means.
        let metrics = LabelRetrievalMetrics.evaluate(images: gallery, imageLabels: labels, texts: gallery, textLabels: labels)
        #expect(metrics.imageToText == metrics.textToImage && metrics.mean == metrics.imageToText)
    }

    static func writeSet(_ directory: String, prefix: String = "", images: Tensor, texts: Tensor, labels: [Int64]) throws {
        try NumpyFile.write(images, to: "\(directory)/\(prefix)image.npy")
        try NumpyFile.write(texts, to: "\(directory)/\(prefix)text.npy")
        try NumpyFile.write(labels, shape: [labels.count], to: "\(directory)/\(prefix)labels.npy")
    }

    static func directory() -> String {
        let path = NSTemporaryDirectory() + "amber-labels-\(UUID().uuidString)"
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    @Test func loadsALabelledSetAndNamesTheFileOfEveryProblem() throws {
        let directory = Self.directory()
        let labels: [Int64] = (0..<20).map { Int64($0 % 3) }
        try Self.writeSet(directory, prefix: "train_", images: randomTensor([20, 4], seed: 1), texts: randomTensor([20, 2], seed: 2), labels: labels)
        let data = try LabelledData.load(directory)
        #expect(data.classCount == 3 && data.items[.image]?.count == 20 && data.items[.text]?.features.shape == [20, 2])
        #expect(data.items[.image]?.labels == labels.map { [Int($0)] })
        // A stratified, seeded split that keeps rows paired.
        let (train, validation) = data.split(validationShare: 0.25, seed: 0)
        #expect(train.items[.image]!.count + validation.items[.image]!.count == 20)
        #expect(validation.items[.image]!.labels == validation.items[.text]!.labels)
        for c in 0..<3 { #expect(validation.items[.text]!.labels.filter { $0 == [c] }.count >= 1) }
        let again = data.split(validationShare: 0.25, seed: 0).validation
        #expect(again.items[.image]!.features.scalars == validation.items[.image]!.features.scalars)

        let bad = Self.directory()
        try Self.writeSet(bad, images: randomTensor([20, 4], seed: 1), texts: randomTensor([19, 2], seed: 2), labels: labels)
        #expect(throws: TensorFileError.self) { try LabelledData.load(bad) }
        do { _ = try LabelledData.load(bad) } catch let error as TensorFileError { #expect(error.path == bad + "/text.npy") }
        try Self.writeSet(bad, images: randomTensor([20, 4], seed: 1), texts: randomTensor([20, 2], seed: 2), labels: labels.map { $0 == 2 ? -1 : $0 })
        do { _ = try LabelledData.load(bad); Issue.record("a negative class must be refused") } catch let error as TensorFileError {
            #expect(error.path == bad + "/labels.npy" && error.problem.contains("class -1"))
        }
        var poisoned = randomTensor([20, 4], seed: 1)
        poisoned[3, 1] = .nan
        try Self.writeSet(bad, images: poisoned, texts: randomTensor([20, 2], seed: 2), labels: labels)
        do { _ = try LabelledData.load(bad); Issue.record("NaN features must be refused") } catch let error as TensorFileError {
            #expect(error.path == bad + "/image.npy" && error.problem.contains("row 3"))
        }
        #expect(throws: TensorFileError.self) { try LabelledData.load(Self.directory()) }
    }

    @Test func modelFileRoundTripsAndRefusesDamage() throws {
        var generator = RandomGenerator(seed: 8)
        let configuration = LabelEncoder.Configuration(hidden: [6], output: 4)
        let image = LabelEncoder(modality: .image, inputDimension: 5, configuration: configuration,
                                 standardization: LabelEncoder.standardization(of: randomTensor([9, 5], seed: 9)), generator: &generator)
        let text = LabelEncoder(modality: .text, inputDimension: 3, configuration: configuration, standardization: nil, generator: &generator)
        let prior = DoubleMatrix.orthonormalColumns(rows: 4, columns: 3, using: &generator).tensor
        let model = LabelSupervisedModel(configuration: configuration, classCount: 3, prior: prior, priorModality: .text,
                                         encoders: [.image: image, .text: text],
                                         metrics: LabelRetrievalMetrics(imageToText: 0.5, textToImage: 0.25, imageToTextAt50: 0.6, textToImageAt50: 0.3))
        let path = Self.directory() + "/model.safetensors"
        try model.write(to: path)
        let read = try LabelSupervisedModel.read(from: path)
        #expect(read.prior.scalars == prior.scalars && read.priorModality == .text && read.classCount == 3 && read.metrics == model.metrics)
        let x = randomTensor([4, 5], seed: 10), t = randomTensor([4, 3], seed: 11)
        #expect(read.encoders[.image]!(x).scalars == image(x).scalars)
        #expect(read.encoders[.text]!(t).scalars == text(t).scalars)
        // Damage: a different format, a missing tensor.
        var bytes = Array(try Data(contentsOf: URL(fileURLWithPath: path)))
        let key = Array("amber-label-model".utf8)
        let offset = try #require((0...(bytes.count - key.count)).first { Array(bytes[$0 ..< $0 + key.count]) == key })
        bytes[offset] = UInt8(ascii: "x")
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        #expect(throws: TensorFileError.self) { try LabelSupervisedModel.read(from: path) }
        // A small file whose metadata claims huge layers is refused before any layer is built.
        let huge = LabelEncoder.Configuration(hidden: [16_384, 16_384, 16_384], output: 16_384)
        let claims: [String: String] = ["format": "amber-label-model/1", "configuration": try MetadataJSON.encode(huge), "classes": "3",
                                        "prior_modality": "image", "inputs": #"{"image": 5}"#]
        let lying = Self.directory() + "/lying.safetensors"
        try SafetensorsFile.write(["prior": .float(Tensor.zeros([16_384, 3]), .float32), "image.input.mean": .float(Tensor.zeros([5]), .float32),
                                   "image.input.scale": .float(Tensor.ones([5]), .float32)], metadata: claims, to: lying)
        do { _ = try LabelSupervisedModel.read(from: lying); Issue.record("a file without its layers must be refused") } catch let error as TensorFileError {
            #expect(error.problem.contains("has no tensor 'image.hidden0.weight'"), "\(error.problem)")
        }
        #expect(throws: TensorFileError.self) { try LabelSupervisedModel.read(from: path + ".missing") }
    }
}
