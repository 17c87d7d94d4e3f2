/// NumPy `.npy` files (format versions 1.0–3.0): little-endian float16, float32 and int64, in C
/// order (mapped in place) or Fortran order (copied into C order on reading). Anything else is rejected with an error naming the file and the problem.
///
/// Layout: magic `\x93NUMPY`, major and minor version bytes, header length (2 bytes in 1.0,
/// 4 bytes later), an ASCII Python dict `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`
/// padded with spaces and a newline so the data starts on a 64-byte boundary, then the data.
public enum NumpyFile {
    /// Maps and parses the file at `path`; the data is not copied.
    public static func read(_ path: String) throws -> RawArray {
        let file = try MappedFile(path: path)
        return try parse(file)
    }

    static func parse(_ file: MappedFile) throws -> RawArray {
        let bytes = file.bytes
        func fail(_ problem: String) -> TensorFileError { TensorFileError(path: file.path, problem: problem) }
        let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]
        guard bytes.count >= 10, Array(bytes[0..<6]) == magic else {
            throw fail("not a .npy file (missing the \\x93NUMPY magic; \(bytes.count) bytes)")
        }
        let major = bytes[6]
        let headerLength: Int
        let headerStart: Int
        switch major {
        case 1:
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
            headerStart = 10
        case 2, 3:
            guard bytes.count >= 12 else { throw fail("truncated header") }
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8 | Int(bytes[10]) << 16 | Int(bytes[11]) << 24
            headerStart = 12
        default:
            throw fail("unsupported .npy format version \(major).\(bytes[7])")
        }
        guard headerStart + headerLength <= bytes.count else {
            throw fail("truncated header: needs \(headerLength) bytes, file has \(bytes.count - headerStart)")
        }
        let header = String(decoding: bytes[headerStart ..< headerStart + headerLength], as: UTF8.self)
        let descr = try stringValue(of: "descr", in: header, fail: fail)
        let elementType: ElementType
        switch descr {
        case "<f2": elementType = .float16
        case "<f4": elementType = .float32
        case "<i8": elementType = .int64
        case "|u1", "|i1", "<i4", "<f8", "<u8", "<i2", "<u2", "<u4", "|b1":
            throw fail("element type '\(descr)' is not supported; store float16 (<f2), float32 (<f4) or int64 (<i8)")
        default:
            if descr.hasPrefix(">") { throw fail("big-endian data ('\(descr)') is not supported; save it little-endian") }
            throw fail("element type '\(descr)' is not supported; store float16 (<f2), float32 (<f4) or int64 (<i8)")
        }
        guard let fortranRange = header.range(of: "'fortran_order':") else { throw fail("header has no 'fortran_order'") }
        let afterFortran = header[fortranRange.upperBound...].drop(while: { $0 == " " })
        let fortranOrder = afterFortran.hasPrefix("True")
        guard fortranOrder || afterFortran.hasPrefix("False") else { throw fail("cannot read 'fortran_order' in the header") }
        let shape = try shapeValue(in: header, fail: fail)
        let dataStart = headerStart + headerLength
        let expected = Tensor.elementCount(shape) * elementType.byteCount
        let available = bytes.count - dataStart
        guard available >= expected else {
            throw fail("truncated data: shape \(shape) of \(elementType.rawValue) needs \(expected) bytes, file has \(available)")
        }
        guard available == expected else {
            throw fail("\(available - expected) unexpected bytes after the data of shape \(shape)")
        }
        let data = UnsafeRawBufferPointer(rebasing: bytes[dataStart ..< dataStart + expected])
        if fortranOrder && shape.count >= 2 {
            let copy = MappedFile(copying: cOrder(fortran: data, shape: shape, elementSize: elementType.byteCount), name: file.path)
            return RawArray(shape: shape, elementType: elementType, bytes: copy.bytes, path: file.path, owner: copy)
        }
        return RawArray(shape: shape, elementType: elementType, bytes: data, path: file.path, owner: file)
    }

    /// The bytes of a Fortran-order (first index fastest) array rearranged in C order.
    static func cOrder(fortran data: UnsafeRawBufferPointer, shape: [Int], elementSize: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: data.count)
        let count = Tensor.elementCount(shape)
        guard count > 0 else { return out }
        var fortranStrides = [Int](repeating: 1, count: shape.count)
        for axis in 1..<shape.count { fortranStrides[axis] = fortranStrides[axis - 1] * shape[axis - 1] }
        var index = [Int](repeating: 0, count: shape.count)
        var source = 0
        for element in 0..<count {
            for b in 0..<elementSize { out[element * elementSize + b] = data[source * elementSize + b] }
            // Next C-order multi-index (last axis fastest), keeping its Fortran offset.
            var axis = shape.count - 1
            while axis >= 0 {
                index[axis] += 1
                source += fortranStrides[axis]
                if index[axis] < shape[axis] { break }
                source -= fortranStrides[axis] * shape[axis]
                index[axis] = 0
                axis -= 1
            }
        }
        return out
    }

    private static func stringValue(of key: String, in header: String, fail: (String) -> TensorFileError) throws -> String {
        guard let keyRange = header.range(of: "'\(key)':") else { throw fail("header has no '\(key)'") }
        let rest = header[keyRange.upperBound...].drop(while: { $0 == " " })
        guard let quote = rest.first, quote == "'" || quote == "\"" else { throw fail("cannot read '\(key)' in the header") }
        let body = rest.dropFirst()
        guard let end = body.firstIndex(of: quote) else { throw fail("cannot read '\(key)' in the header") }
        return String(body[..<end])
    }

    private static func shapeValue(in header: String, fail: (String) -> TensorFileError) throws -> [Int] {
        guard let keyRange = header.range(of: "'shape':") else { throw fail("header has no 'shape'") }
        let rest = header[keyRange.upperBound...].drop(while: { $0 == " " })
        guard rest.first == "(", let close = rest.firstIndex(of: ")") else { throw fail("cannot read 'shape' in the header") }
        let inside = rest[rest.index(after: rest.startIndex) ..< close]
        var shape: [Int] = []
        for part in inside.split(separator: ",") {
            let trimmed = part.trimmingCharacters(in: " L")
            if trimmed.isEmpty { continue }
            guard let extent = Int(trimmed), extent >= 0 else { throw fail("bad extent '\(trimmed)' in 'shape'") }
            shape.append(extent)
        }
        return shape
    }

    /// Writes `tensor` as `.npy` (float32 or float16), atomically.
    public static func write(_ tensor: Tensor, to path: String, as elementType: ElementType = .float32) throws {
        precondition(elementType == .float32 || elementType == .float16,
                     "NumpyFile.write: \(elementType) is not a float type .npy stores here; use float32 or float16")
        let descr = elementType == .float16 ? "<f2" : "<f4"
        try AtomicFile.write([header(descr: descr, shape: tensor.shape), ElementEncoding.encode(tensor, as: elementType)], to: path)
    }

    /// Writes integers as an int64 `.npy`, atomically.
    public static func write(_ values: [Int64], shape: [Int], to path: String) throws {
        precondition(Tensor.elementCount(shape) == values.count, "NumpyFile.write: \(values.count) values for shape \(shape)")
        try AtomicFile.write([header(descr: "<i8", shape: shape), ElementEncoding.encode(values)], to: path)
    }

    static func header(descr: String, shape: [Int]) -> [UInt8] {
        let shapeText = shape.count == 1 ? "(\(shape[0]),)" : "(" + shape.map(String.init).joined(separator: ", ") + ")"
        var dict = "{'descr': '\(descr)', 'fortran_order': False, 'shape': \(shapeText), }"
        // Pad so magic + version + length + dict + newline is a multiple of 64 bytes.
        let prefix = 10
        let unpadded = prefix + dict.utf8.count + 1
        dict += String(repeating: " ", count: (64 - unpadded % 64) % 64) + "\n"
        let length = dict.utf8.count
        precondition(length <= 65_535, "npy header too long for format 1.0")
        return [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 1, 0, UInt8(length & 0xFF), UInt8(length >> 8)] + Array(dict.utf8)
    }
}

private extension Substring {
    func trimmingCharacters(in set: String) -> Substring {
        var result = self
        while let first = result.first, set.contains(first) { result = result.dropFirst() }
        while let last = result.last, set.contains(last) { result = result.dropLast() }
        return result
    }
}
