import AmberCatalog
import AmberTensor
import Foundation

// Shape legend: `N` items, `B` batch, `d` a modality's input features, `H` hidden width,
// `D` shared dimension, `C` classes.

/// Items of one modality with their classes: what label-supervised training reads. Unlike pairs,
/// nothing ties an image row to a text row; each modality is learnt on its own.
public struct LabelledItems: Sendable {
    /// `[N, d]`.
    public var features: Tensor
    /// The classes of each item (each in `0..<classCount`; at least one).
    public var labels: [[Int]]

    public init(features: Tensor, labels: [[Int]]) {
        precondition(features.rank == 2 && features.shape[0] == labels.count,
                     "LabelledItems: features \(features.shape) for \(labels.count) label sets")
        self.features = features
        self.labels = labels
    }

    public var count: Int { labels.count }

    /// `[N, C]`, 1 where an item has a class.
    public func labelMatrix(classCount: Int) -> Tensor {
        var values = [Float](repeating: 0, count: count * classCount)
        for (row, classes) in labels.enumerated() { for c in classes { values[row * classCount + c] = 1 } }
        return Tensor(shape: [count, classCount], scalars: values)
    }

    public func subset(_ rows: [Int]) -> LabelledItems {
        LabelledItems(features: features.indexSelect(rows), labels: rows.map { labels[$0] })
    }
}

/// A labelled cross-modal set: items of each modality with classes from one set of `classCount`.
public struct LabelledData: Sendable {
    public var items: [Modality: LabelledItems]
    public var classCount: Int
    /// The classes' names (class `c` is `classNames[c]`), when the set has names (a catalogue's labels).
    public var classNames: [String]?

    public init(items: [Modality: LabelledItems], classCount: Int, classNames: [String]? = nil) {
        precondition(classCount >= 2, "LabelledData: needs at least two classes, got \(classCount)")
        precondition(items.values.allSatisfy { $0.labels.allSatisfy { !$0.isEmpty && $0.allSatisfy { (0..<classCount).contains($0) } } },
                     "LabelledData: every item needs classes in 0..<\(classCount)")
        precondition(classNames.map { $0.count == classCount } ?? true, "LabelledData: \(classNames?.count ?? 0) names for \(classCount) classes")
        self.items = items
        self.classCount = classCount
        self.classNames = classNames
    }

    /// Reads a directory holding `image.npy` `[N, di]`, `text.npy` `[N, dt]` and `labels.npy`
    /// `[N]` (integer classes), optionally all prefixed `train_` (the layout of
    /// `../shared/data/wikipedia`). Every value is checked; a problem names the file.
    public static func load(_ directory: String) throws -> LabelledData {
        let manager = FileManager.default
        let prefix = manager.fileExists(atPath: directory + "/labels.npy") ? "" : "train_"
        func path(_ name: String) -> String { directory + "/" + prefix + name }
        guard manager.fileExists(atPath: path("labels.npy")) else {
            throw TensorFileError(path: directory, problem: "has neither labels.npy nor train_labels.npy (a labelled set: image.npy, text.npy, labels.npy)")
        }
        let labelPath = path("labels.npy")
        let raw = try NumpyFile.read(labelPath)
        guard raw.shape.count == 1, raw.shape[0] >= 1 else {
            throw TensorFileError(path: labelPath, problem: "must be one integer class per item, shape [N]; got \(raw.shape)")
        }
        let values = try raw.int64Values()
        if let bad = values.firstIndex(where: { $0 < 0 || $0 >= 100_000 }) {
            throw TensorFileError(path: labelPath, problem: "item \(bad) has class \(values[bad]); classes must be 0…99999")
        }
        let labels = values.map { [Int($0)] }
        let classCount = Int(values.max() ?? 0) + 1
        guard classCount >= 2 else { throw TensorFileError(path: labelPath, problem: "needs at least two classes, found \(classCount)") }
        var items: [Modality: LabelledItems] = [:]
        for modality in Modality.allCases where manager.fileExists(atPath: path("\(modality.rawValue).npy")) {
            let file = path("\(modality.rawValue).npy")
            let features = try NumpyFile.read(file).tensor()
            guard features.rank == 2, features.shape[0] == labels.count, (1...65_536).contains(features.shape[1]) else {
                throw TensorFileError(path: file, problem: "must be [\(labels.count), d] with 1 ≤ d ≤ 65536 (one row per label); got \(features.shape)")
            }
            let limits = FeatureLimits()
            if let index = limits.firstOutOfRange(features.scalars) {
                throw TensorFileError(path: file, problem: "value \(index) (row \(index / features.shape[1])) is \(features.scalars[index]); features must be finite with |x| ≤ \(limits.maximumMagnitude)")
            }
            items[modality] = LabelledItems(features: features, labels: labels)
        }
        guard !items.isEmpty else {
            throw TensorFileError(path: directory, problem: "has labels but no \(prefix)image.npy or \(prefix)text.npy")
        }
        return LabelledData(items: items, classCount: classCount)
    }

    /// Splits off a validation part: in each class (an item's first), a `share` of the rows
    /// chosen by `seed`. When every modality has the same rows with the same labels (pairs, as a
    /// loaded directory has), row `k` goes to the same side in every modality, so pairs stay
    /// pairs; otherwise each modality is split on its own.
    public func split(validationShare share: Double, seed: UInt64) -> (train: LabelledData, validation: LabelledData) {
        func held(_ labels: [[Int]], _ generator: inout RandomGenerator) -> [Int] {
            var byClass = [[Int]](repeating: [], count: classCount)
            for (row, classes) in labels.enumerated() { byClass[classes[0]].append(row) }
            var validation: [Int] = []
            for var rows in byClass where !rows.isEmpty {
                generator.shuffle(&rows)
                validation += rows.prefix(Int((Double(rows.count) * share).rounded()))
            }
            return validation.sorted()
        }
        let labelSets = items.values.map(\.labels)
        let paired = labelSets.dropFirst().allSatisfy { $0 == labelSets.first }
        var train: [Modality: LabelledItems] = [:], validation: [Modality: LabelledItems] = [:]
        var shared = RandomGenerator(seed: seed)
        let sharedRows = paired ? held(labelSets.first ?? [], &shared) : []
        for (modality, set) in items {
            var own = RandomGenerator(seed: seed &+ (modality == .image ? 0x1000 : 0x2000))
            let rows = paired ? sharedRows : held(set.labels, &own)
            let heldSet = Set(rows)
            train[modality] = set.subset(set.labels.indices.filter { !heldSet.contains($0) })
            validation[modality] = set.subset(rows)
        }
        return (LabelledData(items: train, classCount: classCount, classNames: classNames),
                LabelledData(items: validation, classCount: classCount, classNames: classNames))
    }
}

/// One modality's network of DRCL (Pu et al., IEEE TMM 2025): standardised input, then
/// `d → H₁ → … → D`, ReLU between, the last layer without bias, output L2-normalised:
/// `f = norm(relu(… relu(((x − μ) ⊙ σ⁻¹) W₁ + b₁) …) W_out)`.
/// `μ` and `σ⁻¹` are the training features' statistics, fixed (not trained).
public struct LabelEncoder: Sendable {
    public struct Configuration: Sendable, Codable, Equatable {
        /// Hidden widths (DRCL: 4096, 4096).
        public var hidden: [Int] = [4096, 4096]
        /// `D`, the shared space (DRCL: 2048).
        public var output = 2048

        public init(hidden: [Int] = [4096, 4096], output: Int = 2048) {
            self.hidden = hidden
            self.output = output
        }

        /// What is wrong with this configuration, or nil.
        public var problem: String? {
            if hidden.count > 8 { return "at most 8 hidden layers, got \(hidden.count)" }
            if let bad = hidden.first(where: { !(1...16_384).contains($0) }) { return "hidden widths must be 1…16384, got \(bad)" }
            if !(1...16_384).contains(output) { return "the output dimension must be 1…16384, got \(output)" }
            return nil
        }
    }

    public let modality: Modality
    public let configuration: Configuration
    /// `[d]` each.
    public let inputMean: Tensor, inputScale: Tensor
    public let hidden: [Linear]
    /// `[H_last, D]` (no bias).
    public let output: Parameter

    /// The input statistics DRCL's features are standardised with: per dimension the mean and the
    /// inverse standard deviation of `features` `[N, d]` (1 where a dimension does not vary).
    public static func standardization(of features: Tensor) -> (mean: Tensor, scale: Tensor) {
        withoutGradients {
            let mean = features.mean(axis: 0)
            let deviation = (features - mean).squared().mean(axis: 0).sqrt()
            return (mean, Tensor(shape: mean.shape, scalars: deviation.scalars.map { $0 > 1e-6 ? 1 / $0 : 1 }))
        }
    }

    /// A freshly initialised network (input statistics given, or none: `μ = 0`, `σ⁻¹ = 1`).
    public init(modality: Modality, inputDimension: Int, configuration: Configuration,
                standardization: (mean: Tensor, scale: Tensor)?, generator: inout RandomGenerator) {
        precondition(standardization.map { $0.mean.shape == [inputDimension] && $0.scale.shape == [inputDimension] } ?? true,
                     "LabelEncoder: standardization statistics must be [\(inputDimension)]")
        self.modality = modality
        self.configuration = configuration
        inputMean = standardization?.mean ?? Tensor.zeros([inputDimension])
        inputScale = standardization?.scale ?? Tensor.ones([inputDimension])
        var width = inputDimension, layers: [Linear] = []
        for (index, next) in configuration.hidden.enumerated() {
            layers.append(Linear(inputs: width, outputs: next, name: "\(modality.rawValue).hidden\(index)", generator: &generator))
            width = next
        }
        hidden = layers
        let limit = (6 / Float(width + configuration.output)).squareRoot()
        output = Parameter(Tensor.randomUniform([width, configuration.output], lower: -limit, upper: limit, using: &generator),
                           name: "\(modality.rawValue).output.weight")
    }

    public var inputDimension: Int { inputMean.shape[0] }

    /// The name and shape of every parameter a network of this configuration has, in
    /// ``parameters`` order (what a model file must hold before a network is built from it).
    public static func parameterShapes(modality: Modality, inputDimension: Int, configuration: Configuration) -> [(name: String, shape: [Int])] {
        var width = inputDimension, shapes: [(String, [Int])] = []
        for (index, next) in configuration.hidden.enumerated() {
            shapes += [("\(modality.rawValue).hidden\(index).weight", [width, next]), ("\(modality.rawValue).hidden\(index).bias", [next])]
            width = next
        }
        return shapes + [("\(modality.rawValue).output.weight", [width, configuration.output])]
    }
    public var parameters: [Parameter] { hidden.flatMap(\.parameters) + [output] }

    /// `x` `[B, d]` → `[B, D]`, unit rows.
    public func callAsFunction(_ x: Tensor) -> Tensor {
        var h = (x - inputMean) * inputScale
        for layer in hidden { h = layer(h).relu() }
        return Tensor.matmul(h, output.tensor).l2Normalized(axis: -1)
    }

    /// Embeddings of many rows without gradients, in chunks.
    public func embed(_ x: Tensor, chunkSize: Int = 1024) -> Tensor {
        withoutGradients {
            let n = x.shape[0]
            guard n > chunkSize else { return self(x) }
            return Tensor.concatenate(stride(from: 0, to: n, by: chunkSize).map { self(x.slice(axis: 0, $0 ..< Swift.min($0 + chunkSize, n))) }, axis: 0)
        }
    }

    /// Copies parameter values from `other` (same shapes): keeps a best epoch.
    public func copyParameters(from other: LabelEncoder) {
        for (target, source) in zip(parameters, other.parameters) { target.assign(source.value) }
    }
}

/// The losses of DRCL.
public enum LabelSupervisedLosses {
    /// Generalised cross-entropy (Zhang & Sabuncu 2018) of `softmax(logits)` against (possibly
    /// soft) `targets` `[B, C]`: `mean_b (1 − p_b^q) / q` with `p_b = Σ_c y_bc softmax(z_b)_c`;
    /// `q → 0` is cross-entropy (`−log p_b`, used at `q = 0`), `q = 1` the mean absolute error.
    public static func generalizedCrossEntropy(logits: Tensor, targets: Tensor, q: Float) -> Tensor {
        precondition(logits.shape == targets.shape && logits.rank == 2, "generalizedCrossEntropy: \(logits.shape) vs \(targets.shape)")
        let p = (logits.softmax(axis: 1) * targets).sum(axis: 1)
        if q == 0 { return -p.log().mean() }
        return ((1 - (p.log() * q).exp()) / q).mean()
    }

    /// `C(a, b) = 2 · cos(a_i, b_j)`, `[A, B]`.
    public static func doubledCosine(_ a: Tensor, _ b: Tensor) -> Tensor {
        Tensor.matmul(a.l2Normalized(axis: -1), b.l2Normalized(axis: -1), transposeB: true) * 2
    }
}

/// DRCL's reversible semantic consistency: features `F` `[B, D]` of one modality learn the
/// label targets `R = Y L` recast through the prior's pseudo-inverse `L = W*⁺` `[C, D]`:
/// ```
/// α · [mean((C(R,R) − C(F,F))²) + mean((C(R,F) − C(R,F)ᵀ)²)] + β · mean((R − F)²) + η · GCE(F W*, Y; q)
/// ```
public struct ReversibleConsistencyLoss: Sendable {
    public var alpha: Float = 0.1, beta: Float = 0.1, eta: Float = 1

    public init(alpha: Float = 0.1, beta: Float = 0.1, eta: Float = 1) {
        self.alpha = alpha
        self.beta = beta
        self.eta = eta
    }

    /// The loss and its terms (structure, MSE, GCE). `labels` `[B, C]` may be soft (mixup).
    public func callAsFunction(features: Tensor, labels: Tensor, prior: Tensor, inverse: Tensor, q: Float)
        -> (total: Tensor, structure: Tensor, squared: Tensor, classification: Tensor) {
        let targets = Tensor.matmul(labels, inverse)                                         // [B, D]
        let withinTargets = LabelSupervisedLosses.doubledCosine(targets, targets)
        let within = LabelSupervisedLosses.doubledCosine(features, features)
        let across = LabelSupervisedLosses.doubledCosine(targets, features)
        let structure = (withinTargets - within).squared().mean() + (across - across.transposed()).squared().mean()
        let squared = (targets - features).squared().mean()
        let classification = LabelSupervisedLosses.generalizedCrossEntropy(logits: Tensor.matmul(features, prior), targets: labels, q: q)
        return (structure * alpha + squared * beta + classification * eta, structure, squared, classification)
    }
}

/// Label-based retrieval quality: mean average precision (relevant = shares a class), cosine.
public struct LabelRetrievalMetrics: Sendable, Codable, Equatable, CustomStringConvertible {
    public var imageToText: Double
    public var textToImage: Double
    public var imageToTextAt50: Double
    public var textToImageAt50: Double

    public init(imageToText: Double, textToImage: Double, imageToTextAt50: Double, textToImageAt50: Double) {
        self.imageToText = imageToText
        self.textToImage = textToImage
        self.imageToTextAt50 = imageToTextAt50
        self.textToImageAt50 = textToImageAt50
    }

    public var mean: Double { (imageToText + textToImage) / 2 }
    public var meanAt50: Double { (imageToTextAt50 + textToImageAt50) / 2 }

    /// Both directions between image embeddings and text embeddings with their classes.
    public static func evaluate(images: Tensor, imageLabels: [[Int]], texts: Tensor, textLabels: [[Int]]) -> LabelRetrievalMetrics {
        func map(_ q: Tensor, _ ql: [[Int]], _ g: Tensor, _ gl: [[Int]], _ depth: Int?) -> Double {
            meanAveragePrecision(queries: q, queryLabels: ql, gallery: g, galleryLabels: gl, depth: depth)
        }
        return LabelRetrievalMetrics(imageToText: map(images, imageLabels, texts, textLabels, nil),
                                     textToImage: map(texts, textLabels, images, imageLabels, nil),
                                     imageToTextAt50: map(images, imageLabels, texts, textLabels, 50),
                                     textToImageAt50: map(texts, textLabels, images, imageLabels, 50))
    }

    /// mAP of `queries` `[Q, D]` over `gallery` `[G, D]` by cosine, over the top `depth` (nil:
    /// all). As in DRCL's and DSCMR's evaluation, a query's AP is the mean of the precision at
    /// each relevant result within the depth (0 when none is); ties keep gallery order.
    public static func meanAveragePrecision(queries: Tensor, queryLabels: [[Int]], gallery: Tensor, galleryLabels: [[Int]], depth: Int?) -> Double {
        let Q = queries.shape[0], G = gallery.shape[0]
        guard Q > 0, G > 0 else { return 0 }
        let scores = withoutGradients { Tensor.matmul(queries.l2Normalized(axis: -1), gallery.l2Normalized(axis: -1), transposeB: true) }.scalars
        let k = Swift.min(depth ?? G, G)
        let galleryClasses = galleryLabels.map(Set.init)
        var total = 0.0
        for q in 0..<Q {
            let row = scores[(q * G) ..< ((q + 1) * G)]
            let order = (0..<G).sorted { a, b in
                let (sa, sb) = (row[row.startIndex + a], row[row.startIndex + b])
                return sa != sb ? sa > sb : a < b
            }
            var hits = 0, precision = 0.0
            for (rank, g) in order.prefix(k).enumerated() where !galleryClasses[g].isDisjoint(with: queryLabels[q]) {
                hits += 1
                precision += Double(hits) / Double(rank + 1)
            }
            total += hits == 0 ? 0 : precision / Double(hits)
        }
        return total / Double(Q)
    }

    public var description: String {
        String(format: "mAP@all i→t %.4f t→i %.4f (mean %.4f); mAP@50 i→t %.4f t→i %.4f (mean %.4f)",
               imageToText, textToImage, mean, imageToTextAt50, textToImageAt50, meanAt50)
    }
}

/// A label-supervised model as kept and served: one network per modality into a shared space,
/// and the fixed classifier prior `W*` `[D, C]` every modality was trained against (so a
/// modality added later is trained against the same prior).
public struct LabelSupervisedModel: Sendable {
    public var configuration: LabelEncoder.Configuration
    public var classCount: Int
    /// `W*` `[D, C]`.
    public var prior: Tensor
    /// The modality whose classifier became the prior.
    public var priorModality: Modality
    public var encoders: [Modality: LabelEncoder]
    /// Validation metrics when both modalities are present.
    public var metrics: LabelRetrievalMetrics?
    /// The classes' names, when it was trained on named labels (a catalogue's).
    public var classNames: [String]?

    public init(configuration: LabelEncoder.Configuration, classCount: Int, prior: Tensor, priorModality: Modality,
                encoders: [Modality: LabelEncoder], metrics: LabelRetrievalMetrics? = nil, classNames: [String]? = nil) {
        precondition(prior.shape == [configuration.output, classCount], "LabelSupervisedModel: prior \(prior.shape), needs [\(configuration.output), \(classCount)]")
        self.configuration = configuration
        self.classCount = classCount
        self.prior = prior
        self.priorModality = priorModality
        self.encoders = encoders
        self.metrics = metrics
        self.classNames = classNames
    }

    static let format = "amber-label-model/1"

    /// Writes the model atomically (temp file, fsync, rename).
    public func write(to path: String) throws {
        try AtomicFile.write(encodedChunks(), to: path)
    }

    /// The model file's bytes (what ``write(to:)`` writes), e.g. for a database row.
    public func encoded() throws -> [UInt8] {
        try encodedChunks().flatMap { $0 }
    }

    private func encodedChunks() throws -> [[UInt8]] {
        var entries: [String: SafetensorsFile.Entry] = ["prior": .float(prior, .float32)]
        var inputs: [String: Int] = [:]
        for (modality, encoder) in encoders {
            for parameter in encoder.parameters { entries[parameter.name] = .float(parameter.value, .float32) }
            entries["\(modality.rawValue).input.mean"] = .float(encoder.inputMean, .float32)
            entries["\(modality.rawValue).input.scale"] = .float(encoder.inputScale, .float32)
            inputs[modality.rawValue] = encoder.inputDimension
        }
        var metadata = try [
            "format": Self.format,
            "configuration": MetadataJSON.encode(configuration),
            "classes": String(classCount),
            "prior_modality": priorModality.rawValue,
            "inputs": MetadataJSON.encode(inputs),
        ]
        if let metrics { metadata["metrics"] = try MetadataJSON.encode(metrics) }
        if let classNames { metadata["class_names"] = try MetadataJSON.encode(classNames) }
        return try SafetensorsFile.encode(entries, metadata: metadata)
    }

    /// Reads a model written by ``write(to:)``; any problem is a `TensorFileError` naming the file.
    public static func read(from path: String) throws -> LabelSupervisedModel {
        try read(SafetensorsFile(path: path))
    }

    /// Reads a model from the bytes of its file; `name` stands for the file in errors.
    public static func read(bytes: [UInt8], name: String) throws -> LabelSupervisedModel {
        try read(SafetensorsFile(bytes: bytes, name: name))
    }

    static func read(_ safetensors: SafetensorsFile) throws -> LabelSupervisedModel {
        let file = try ModelFile(safetensors, format: format, kind: "label-supervised model")
        let fail = file.fail
        let configuration = try file.field("configuration", as: LabelEncoder.Configuration.self)
        if let problem = configuration.problem { throw fail("configuration: \(problem)") }
        guard let classCount = safetensors.metadata["classes"].flatMap(Int.init), (2...100_000).contains(classCount) else {
            throw fail("metadata 'classes' must be an integer 2…100000")
        }
        guard let priorModality = safetensors.metadata["prior_modality"].flatMap(Modality.init(rawValue:)) else {
            throw fail("metadata 'prior_modality' must be image or text")
        }
        let prior = try file.tensor("prior", shape: [configuration.output, classCount])
        var encoders: [Modality: LabelEncoder] = [:]
        for (name, dimension) in try file.field("inputs", as: [String: Int].self) {
            guard let modality = Modality(rawValue: name) else { throw fail("metadata 'inputs' names '\(name)', not image or text") }
            guard (1...65_536).contains(dimension) else { throw fail("input dimension of \(name) must be 1…65536, got \(dimension)") }
            // Every tensor is checked against the metadata before a network is allocated: a small
            // file that claims huge layers is refused, not built.
            for (parameter, shape) in LabelEncoder.parameterShapes(modality: modality, inputDimension: dimension, configuration: configuration) {
                guard let stored = safetensors.arrays[parameter] else { throw fail("has no tensor '\(parameter)'") }
                guard stored.shape == shape else { throw fail("'\(parameter)' has shape \(stored.shape), the configuration needs \(shape)") }
            }
            var generator = RandomGenerator(seed: 0)
            let mean = try file.tensor("\(name).input.mean", shape: [dimension]), scale = try file.tensor("\(name).input.scale", shape: [dimension])
            let encoder = LabelEncoder(modality: modality, inputDimension: dimension, configuration: configuration,
                                       standardization: (mean, scale), generator: &generator)
            for parameter in encoder.parameters { parameter.assign(try file.tensor(parameter.name, shape: parameter.shape)) }
            encoders[modality] = encoder
        }
        guard !encoders.isEmpty else { throw fail("has no modality's network") }
        let classNames = try file.optionalField("class_names", as: [String].self)
        if let classNames, classNames.count != classCount { throw fail("metadata 'class_names' has \(classNames.count) names for \(classCount) classes") }
        return LabelSupervisedModel(configuration: configuration, classCount: classCount, prior: prior, priorModality: priorModality,
                                    encoders: encoders, metrics: try file.optionalField("metrics", as: LabelRetrievalMetrics.self),
                                    classNames: classNames)
    }

    /// Validation metrics of this model on `data` (needs both modalities in both).
    public func evaluate(on data: LabelledData) -> LabelRetrievalMetrics? {
        guard let images = data.items[.image], let texts = data.items[.text],
              let imageEncoder = encoders[.image], let textEncoder = encoders[.text] else { return nil }
        return LabelRetrievalMetrics.evaluate(images: imageEncoder.embed(images.features), imageLabels: images.labels,
                                              texts: textEncoder.embed(texts.features), textLabels: texts.labels)
    }
}

