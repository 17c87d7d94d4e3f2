import AmberCatalog
import Foundation

/// A file of item categories for `amber ingest --labels` (or `labels.tsv` in the ingested
/// folder): one `modality<TAB>external_id<TAB>label` per line (`image` or `text`; more labels
/// of an item are more lines); blank lines and lines starting with `#` are skipped. Every line is
/// checked before anything is written; a problem names the file and the line.
public struct LabelFile: Sendable, Equatable {
    public struct Entry: Sendable, Equatable {
        public var modality: Modality
        public var externalID: String
        public var label: String
        /// 1-based line in the file.
        public var line: Int

        public init(modality: Modality, externalID: String, label: String, line: Int) {
            self.modality = modality
            self.externalID = externalID
            self.label = label
            self.line = line
        }
    }

    public let path: String
    public var entries: [Entry]

    /// The name looked for in an ingested folder.
    public static let defaultName = "labels.tsv"

    /// Reads and checks `path`; `idPrefix` is put before every external id (as ingest puts it
    /// before the ids it stores).
    public static func read(_ path: String, idPrefix: String = "") throws -> LabelFile {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw IngestError(file: path, "cannot be read")
        }
        guard let text = String(data: data, encoding: .utf8) else { throw IngestError(file: path, "is not UTF-8 text") }
        var entries: [Entry] = []
        for (index, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.hasSuffix("\r") ? raw.dropLast() : raw
            let number = index + 1
            if line.allSatisfy({ $0 == " " || $0 == "\t" }) || line.hasPrefix("#") { continue }
            let fields = line.split(separator: "\t", omittingEmptySubsequences: false)
            guard fields.count == 3 else {
                throw IngestError(file: path, line: number, "needs 3 tab-separated fields (modality, external id, label), has \(fields.count)")
            }
            guard let modality = Modality(rawValue: String(fields[0])) else {
                throw IngestError(file: path, line: number, "modality must be image or text, not '\(fields[0])'")
            }
            let externalID = idPrefix + String(fields[1]), label = String(fields[2])
            if let problem = CatalogText.problem(externalID, field: "the external id", codePoints: 1...CatalogText.maximumExternalID)
                ?? CatalogText.labelProblem([label], field: "the label") {
                throw IngestError(file: path, line: number, problem.message.replacingOccurrences(of: "the label[0]", with: "the label"))
            }
            entries.append(Entry(modality: modality, externalID: externalID, label: label, line: number))
        }
        return LabelFile(path: path, entries: entries)
    }
}
