import AmberTensor

/// A model file being read: its metadata fields and tensors, every problem a `TensorFileError`
/// naming the file (what a stored model or a file on disk must never do is trap).
struct ModelFile {
    let file: SafetensorsFile

    init(_ file: SafetensorsFile, format: String, kind: String) throws {
        self.file = file
        guard file.metadata["format"] == format else {
            throw TensorFileError(path: file.path, problem: "not an Amber \(kind) (format \(file.metadata["format"] ?? "missing"), expected \(format))")
        }
    }

    func fail(_ problem: String) -> TensorFileError { TensorFileError(path: file.path, problem: problem) }

    /// The JSON field `name` of the metadata.
    func field<T: Decodable>(_ name: String, as type: T.Type) throws -> T {
        guard let text = file.metadata[name] else { throw fail("metadata has no '\(name)'") }
        do { return try MetadataJSON.decode(type, from: text) } catch { throw fail("metadata '\(name)' does not decode: \(error)") }
    }

    /// The JSON field `name`, or nil when the file has none.
    func optionalField<T: Decodable>(_ name: String, as type: T.Type) throws -> T? {
        file.metadata[name] == nil ? nil : try field(name, as: type)
    }

    /// The tensor `name`, which must have `shape` and finite values.
    func tensor(_ name: String, shape: [Int]) throws -> Tensor {
        guard file.arrays[name] != nil else { throw fail("has no tensor '\(name)'") }
        let value = try file.tensor(name)
        guard value.shape == shape else { throw fail("'\(name)' has shape \(value.shape), the configuration needs \(shape)") }
        guard value.scalars.allSatisfy(\.isFinite) else { throw fail("'\(name)' holds NaN or infinite values") }
        return value
    }
}
