/// What Foundation's `JSONDecoder` lets through or cannot survive, checked on the raw bytes of a
/// request body before it is decoded: an object with the same key twice (the decoder silently
/// keeps one of them, so `{"k": 1, "k": 100}` would mean whatever it picks), and nesting deeper
/// than a body needs (a 4 MiB body of `[[[[…` must not reach a recursive parser).
///
/// One pass, no allocation but the keys of the object being read. A body that is not UTF-8 JSON
/// (a byte-order mark, UTF-16, a syntax error) is refused here, so what the decoder reads is
/// exactly what was checked.
enum JSONBodyCheck {
    /// Deepest nesting of arrays and objects a body may have (Amber's deepest is 4).
    static let maximumDepth = 32

    /// - Throws: ``APIError`` 400 naming the duplicate key's path, or the body when too deep.
    static func check(_ bytes: UnsafeRawBufferPointer) throws {
        var scanner = Scanner(bytes: bytes)
        try scanner.value()
        scanner.skipWhitespace()
        guard scanner.current == nil else { throw APIError.badRequest("body", "the body is not valid JSON (text after the value)") }
    }

    private struct Scanner {
        let bytes: UnsafeRawBufferPointer
        var position = 0
        /// Where the scanner is, for an error's field (built only when there is one).
        var path: [Component] = []

        enum Component {
            case key(String)
            case index(Int)
        }

        var pathString: String {
            var text = ""
            for component in path {
                switch component {
                case .key(let name): text += text.isEmpty ? name : "." + name
                case .index(let index): text += "[\(index)]"
                }
            }
            return text
        }

        init(bytes: UnsafeRawBufferPointer) {
            self.bytes = bytes
        }

        /// Not JSON from here on: stop; the decoder reports it.
        struct Malformed: Error {}

        var current: UInt8? { position < bytes.count ? bytes[position] : nil }

        mutating func skipWhitespace() {
            while let byte = current, byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D { position += 1 }
        }

        mutating func value() throws {
            do {
                try parseValue(depth: 0)
            } catch is Malformed {
                throw APIError.badRequest("body", "the body is not valid JSON (UTF-8, no byte-order mark)")
            }
        }

        private mutating func parseValue(depth: Int) throws {
            skipWhitespace()
            guard let byte = current else { throw Malformed() }
            switch byte {
            case UInt8(ascii: "{"):
                guard depth < JSONBodyCheck.maximumDepth else { throw tooDeep() }
                position += 1
                var keys = Set<[UInt8]>()
                skipWhitespace()
                if current == UInt8(ascii: "}") { position += 1; return }
                while true {
                    skipWhitespace()
                    guard current == UInt8(ascii: "\"") else { throw Malformed() }
                    let key = try string()
                    path.append(.key(String(decoding: key, as: UTF8.self)))
                    guard keys.insert(key).inserted else {
                        let field = pathString
                        throw APIError.badRequest(field, "\(field) is given twice; give each key once")
                    }
                    skipWhitespace()
                    guard current == UInt8(ascii: ":") else { throw Malformed() }
                    position += 1
                    try parseValue(depth: depth + 1)
                    path.removeLast()
                    skipWhitespace()
                    if current == UInt8(ascii: ",") { position += 1; continue }
                    if current == UInt8(ascii: "}") { position += 1; return }
                    throw Malformed()
                }
            case UInt8(ascii: "["):
                guard depth < JSONBodyCheck.maximumDepth else { throw tooDeep() }
                position += 1
                skipWhitespace()
                if current == UInt8(ascii: "]") { position += 1; return }
                var index = 0
                path.append(.index(0))
                while true {
                    path[path.count - 1] = .index(index)
                    try parseValue(depth: depth + 1)
                    index += 1
                    skipWhitespace()
                    if current == UInt8(ascii: ",") { position += 1; continue }
                    if current == UInt8(ascii: "]") { position += 1; path.removeLast(); return }
                    throw Malformed()
                }
            case UInt8(ascii: "\""):
                try skipString()
            default:
                // A number, true, false or null: up to the next delimiter.
                let start = position
                while let byte = current, !(byte == UInt8(ascii: ",") || byte == UInt8(ascii: "]") || byte == UInt8(ascii: "}")
                                           || byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D) {
                    position += 1
                }
                if position == start { throw Malformed() }
            }
        }

        func tooDeep() -> APIError {
            APIError.badRequest("body", "the body nests arrays and objects deeper than \(JSONBodyCheck.maximumDepth) levels")
        }

        /// Skips a string without decoding it.
        mutating func skipString() throws {
            position += 1
            while let byte = current {
                position += 1
                if byte == UInt8(ascii: "\\") {
                    guard current != nil else { throw Malformed() }
                    position += 1
                } else if byte == UInt8(ascii: "\"") {
                    return
                }
            }
            throw Malformed()
        }

        /// Reads a string, decoding its escapes (so `"k"` and `"\u006b"` are the same key), as UTF-8.
        mutating func string() throws -> [UInt8] {
            position += 1
            var result: [UInt8] = []
            while let byte = current {
                position += 1
                switch byte {
                case UInt8(ascii: "\""):
                    return result
                case UInt8(ascii: "\\"):
                    guard let escaped = current else { throw Malformed() }
                    position += 1
                    switch escaped {
                    case UInt8(ascii: "b"): result.append(0x08)
                    case UInt8(ascii: "f"): result.append(0x0C)
                    case UInt8(ascii: "n"): result.append(0x0A)
                    case UInt8(ascii: "r"): result.append(0x0D)
                    case UInt8(ascii: "t"): result.append(0x09)
                    case UInt8(ascii: "u"):
                        var unit = try hex4()
                        if (0xD800...0xDBFF).contains(unit), current == UInt8(ascii: "\\"), position + 1 < bytes.count, bytes[position + 1] == UInt8(ascii: "u") {
                            position += 2
                            let low = try hex4()
                            guard (0xDC00...0xDFFF).contains(low) else { throw Malformed() }
                            unit = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
                        }
                        guard let scalar = Unicode.Scalar(unit) else { throw Malformed() }   // a lone surrogate
                        result += Array(String(Character(scalar)).utf8)
                    default:
                        result.append(escaped)
                    }
                default:
                    result.append(byte)
                }
            }
            throw Malformed()
        }

        mutating func hex4() throws -> UInt32 {
            guard position + 4 <= bytes.count else { throw Malformed() }
            var value: UInt32 = 0
            for _ in 0..<4 {
                guard let digit = current, let nibble = Self.hexValue(digit) else { throw Malformed() }
                value = value << 4 | nibble
                position += 1
            }
            return value
        }

        static func hexValue(_ byte: UInt8) -> UInt32? {
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): return UInt32(byte - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): return UInt32(byte - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): return UInt32(byte - UInt8(ascii: "A") + 10)
            default: return nil
            }
        }
    }
}
