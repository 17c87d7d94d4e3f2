@testable import AmberImage
import Foundation
import Testing

/// A minimal PNG writer for tests: one IDAT of stored (uncompressed) deflate blocks, filter 0,
/// any colour type and bit depth the caller packs rows for.
enum TestPNG {
    static func crc32(_ bytes: [UInt8]) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes {
            crc ^= UInt32(byte)
            for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1 }
        }
        return ~crc
    }

    static func be32(_ value: UInt32) -> [UInt8] { [UInt8(value >> 24), UInt8(value >> 16 & 255), UInt8(value >> 8 & 255), UInt8(value & 255)] }

    static func chunk(_ type: String, _ body: [UInt8]) -> [UInt8] {
        let typed = Array(type.utf8) + body
        return be32(UInt32(body.count)) + typed + be32(crc32(typed))
    }

    static func zlibStored(_ data: [UInt8]) -> [UInt8] {
        var out: [UInt8] = [0x78, 0x01]
        var position = 0
        repeat {
            let n = min(65_535, data.count - position)
            let last: UInt8 = position + n == data.count ? 1 : 0
            out += [last, UInt8(n & 255), UInt8(n >> 8), UInt8(~n & 255), UInt8((~n >> 8) & 255)]
            out += data[position ..< position + n]
            position += n
        } while position < data.count
        var a: UInt32 = 1, b: UInt32 = 0
        for byte in data { a = (a + UInt32(byte)) % 65_521; b = (b + a) % 65_521 }
        return out + be32(b << 16 | a)
    }

    /// A zlib stream of `1 + 258 × matches` copies of `byte` (below 144) in one fixed-Huffman block
    /// (the literal, then length-258 distance-1 copies): about 160 : 1, for decompression bombs.
    static func zlibRepeated(_ byte: UInt8, matches: Int) -> (stream: [UInt8], count: Int) {
        var out: [UInt8] = [0x78, 0x01]
        var accumulator: UInt64 = 0, bits = 0
        func put(_ value: UInt64, _ count: Int) {   // LSB first
            accumulator |= value << UInt64(bits)
            bits += count
            while bits >= 8 { out.append(UInt8(accumulator & 255)); accumulator >>= 8; bits -= 8 }
        }
        func code(_ value: UInt64, _ count: Int) {   // Huffman codes go MSB first
            var reversed: UInt64 = 0
            for i in 0..<count where value >> UInt64(i) & 1 == 1 { reversed |= 1 << UInt64(count - 1 - i) }
            put(reversed, count)
        }
        put(1, 1); put(1, 2)        // final block, fixed Huffman
        code(0x30 + UInt64(byte), 8)   // the literal
        for _ in 0..<matches {
            code(0xC5, 8)           // length code 285: 258
            code(0, 5)              // distance code 0: 1
        }
        code(0, 7)                  // end of block
        if bits > 0 { put(0, 8 - bits) }
        let count = 1 + 258 * matches
        let n = UInt64(count), v = UInt64(byte)
        let a = (1 + n * v) % 65_521, b = (n + v * (n * (n + 1) / 2 % 65_521)) % 65_521
        return (out + be32(UInt32(b << 16 | a)), count)
    }

    /// `rows`: each row's packed bytes (without the filter byte).
    static func encode(width: Int, height: Int, depth: UInt8, colour: UInt8, rows: [[UInt8]],
                       extra: [[UInt8]] = []) -> [UInt8] {
        let signature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
        let header = be32(UInt32(width)) + be32(UInt32(height)) + [depth, colour, 0, 0, 0]
        let raw: [UInt8] = rows.flatMap { [UInt8(0)] + $0 }
        return signature + chunk("IHDR", header) + extra.flatMap { $0 } + chunk("IDAT", zlibStored(raw)) + chunk("IEND", [])
    }
}

func testImage(width: Int, height: Int) -> RGBImage {
    var pixels: [UInt8] = []
    for y in 0..<height {
        for x in 0..<width {
            pixels += [UInt8(x * 255 / max(width - 1, 1)), UInt8(y * 255 / max(height - 1, 1)), UInt8((x * 7 + y * 3) % 256)]
        }
    }
    return RGBImage(width: width, height: height, pixels: pixels)!
}

@Suite("Image decoding")
struct DecoderTests {
    @Test("PNG of every colour type decodes to RGB as PIL's convert(\"RGB\") does")
    func pngColourTypes() throws {
        // RGB 8-bit: exact.
        let image = testImage(width: 5, height: 3)
        let rgbRows = (0..<3).map { Array(image.pixels[($0 * 15) ..< ($0 * 15 + 15)]) }
        #expect(try ImageDecoder.decode(TestPNG.encode(width: 5, height: 3, depth: 8, colour: 2, rows: rgbRows)) == image)
        // RGBA: alpha dropped, not composited.
        let rgbaRows: [[UInt8]] = rgbRows.map { row in stride(from: 0, to: row.count, by: 3).flatMap { Array(row[$0 ..< $0 + 3]) + [UInt8(7)] } }
        #expect(try ImageDecoder.decode(TestPNG.encode(width: 5, height: 3, depth: 8, colour: 6, rows: rgbaRows)) == image)
        // 16-bit RGB: the high byte.
        let deepRows: [[UInt8]] = rgbRows.map { row in row.flatMap { [$0, UInt8(0xAB)] } }
        #expect(try ImageDecoder.decode(TestPNG.encode(width: 5, height: 3, depth: 16, colour: 2, rows: deepRows)) == image)
        // Grey 8-bit and grey + alpha: replicated.
        let grey = try ImageDecoder.decode(TestPNG.encode(width: 2, height: 1, depth: 8, colour: 0, rows: [[10, 200]]))
        #expect(grey.pixels == [10, 10, 10, 200, 200, 200])
        let greyAlpha = try ImageDecoder.decode(TestPNG.encode(width: 2, height: 1, depth: 8, colour: 4, rows: [[10, 0, 200, 255]]))
        #expect(greyAlpha.pixels == [10, 10, 10, 200, 200, 200])
        // 1-bit grey: 0 and 255; 2-bit: ×85.
        let bits = try ImageDecoder.decode(TestPNG.encode(width: 8, height: 1, depth: 1, colour: 0, rows: [[0b1010_0001]]))
        #expect(stride(from: 0, to: 24, by: 3).map { bits.pixels[$0] } == [255, 0, 255, 0, 0, 0, 0, 255])
        let twoBit = try ImageDecoder.decode(TestPNG.encode(width: 4, height: 1, depth: 2, colour: 0, rows: [[0b0001_1011]]))
        #expect(stride(from: 0, to: 12, by: 3).map { twoBit.pixels[$0] } == [0, 85, 170, 255])
        // Palette with transparency: the palette's colours, transparency ignored.
        let palette = TestPNG.chunk("PLTE", [255, 0, 0, 0, 255, 0, 0, 0, 255])
        let transparency = TestPNG.chunk("tRNS", [0, 128])
        let indexed = try ImageDecoder.decode(TestPNG.encode(width: 3, height: 1, depth: 8, colour: 3, rows: [[2, 0, 1]],
                                                             extra: [palette, transparency]))
        #expect(indexed.pixels == [0, 0, 255, 255, 0, 0, 0, 255, 0])
    }

    @Test("JPEG round trip through the encoder: size kept, pixels close; grey JPEG becomes RGB")
    func jpegRoundTrip() throws {
        let image = testImage(width: 64, height: 48)
        let bytes = try ImageEncoder.jpeg(image, quality: 95)
        #expect(ImageDecoder.format(of: bytes) == .jpeg)
        let decoded = try ImageDecoder.decode(bytes)
        #expect(decoded.width == 64 && decoded.height == 48)
        let error = zip(decoded.pixels, image.pixels).map { abs(Int($0) - Int($1)) }.reduce(0, +)
        #expect(Double(error) / Double(image.pixels.count) < 6, "mean absolute error \(Double(error) / Double(image.pixels.count))")
        // Decoding is deterministic.
        #expect(try ImageDecoder.decode(bytes) == decoded)
    }

    @Test("Empty, foreign, truncated and corrupt bytes get an error of the right kind, never a crash")
    func refusesBadBytes() throws {
        func kind(_ bytes: [UInt8], limits: ImageLimits = .standard) -> ImageError.Kind? {
            do { _ = try ImageDecoder.decode(bytes, limits: limits); return nil } catch { return error.kind }
        }
        #expect(kind([]) == .corrupt)
        #expect(kind(Array("GIF89a....".utf8)) == .unsupported)
        #expect(kind(Array("%PDF-1.4".utf8)) == .unsupported)
        let jpeg = try ImageEncoder.jpeg(testImage(width: 40, height: 30))
        #expect(kind(Array(jpeg.prefix(jpeg.count / 2))) == .corrupt)
        #expect(kind(Array(jpeg.prefix(3))) == .corrupt)
        let png = TestPNG.encode(width: 2, height: 1, depth: 8, colour: 0, rows: [[1, 2]])
        #expect(kind(Array(png.prefix(png.count - 20))) == .corrupt)
        var badCRC = png
        badCRC[29] ^= 0xFF   // inside IHDR's CRC
        #expect(kind(badCRC) == .corrupt)
        // The message names the format and the problem.
        do { _ = try ImageDecoder.decode(Array(jpeg.prefix(jpeg.count / 2))) } catch {
            #expect(error.description.contains("JPEG") && error.description.contains("truncated"))
        }
    }

    @Test("Pixel and byte limits are checked from the header, before decoding")
    func limits() throws {
        // A PNG header claiming 60,000 × 60,000 with no image data behind it.
        let huge = TestPNG.encode(width: 60_000, height: 60_000, depth: 8, colour: 2, rows: [])
        do { _ = try ImageDecoder.decode(huge); Issue.record("a 3.6-gigapixel PNG decoded") } catch {
            #expect(error.kind == .tooLarge && error.description.contains("60000"))
        }
        // A JPEG whose frame header is rewritten to 50,000 × 50,000.
        var jpeg = try ImageEncoder.jpeg(testImage(width: 16, height: 16))
        guard let sof = (0 ..< jpeg.count - 9).first(where: { jpeg[$0] == 0xFF && (jpeg[$0 + 1] == 0xC0 || jpeg[$0 + 1] == 0xC2) }) else {
            Issue.record("no SOF marker"); return
        }
        jpeg[sof + 5] = 0xC3; jpeg[sof + 6] = 0x50; jpeg[sof + 7] = 0xC3; jpeg[sof + 8] = 0x50
        do { _ = try ImageDecoder.decode(jpeg); Issue.record("a 2.5-gigapixel JPEG decoded") } catch {
            #expect(error.kind == .tooLarge)
        }
        let small = ImageLimits(maximumPixels: 100, maximumBytes: 1 << 20, maximumScans: 10)
        let image = try ImageEncoder.jpeg(testImage(width: 11, height: 10))
        #expect(throws: ImageError.self) { try ImageDecoder.decode(image, limits: small) }
        let tight = ImageLimits(maximumPixels: 1_000_000, maximumBytes: 10, maximumScans: 10)
        do { _ = try ImageDecoder.decode(image, limits: tight) } catch { #expect(error.kind == .tooLarge) }
    }

    @Test("A PNG's text and profile chunks are skipped unread: 120 zTXt chunks of 15 MB each do not inflate")
    func pngChunkBomb() throws {
        // Text of 15.7 million 'A's (libpng keeps zTXt text up to its first NUL: zeros would not do).
        let letters = TestPNG.zlibRepeated(UInt8(ascii: "A"), matches: 61_000)
        #expect(letters.count > 15_000_000 && letters.stream.count < 110_000)
        let text = TestPNG.chunk("zTXt", Array("Comment".utf8) + [0, 0] + letters.stream)
        let profile = TestPNG.chunk("iCCP", Array("icc".utf8) + [0, 0] + letters.stream)
        let png = TestPNG.encode(width: 3, height: 2, depth: 8, colour: 0, rows: [[1, 2, 3], [4, 5, 6]],
                                 extra: [profile] + Array(repeating: text, count: 120))
        #expect(png.count < ImageLimits.standard.maximumBytes)
        func peakResidentBytes() -> Int {
            var usage = rusage()
            getrusage(RUSAGE_SELF.rawValue, &usage)
            return usage.ru_maxrss * 1024
        }
        let before = peakResidentBytes()
        let image = try ImageDecoder.decode(png)
        // Held as text, the chunks would be 1.8 GB at once; skipped, the peak does not move by a
        // tenth of that.
        #expect(peakResidentBytes() - before < 180_000_000)
        #expect(image.width == 3 && image.height == 2 && image.pixels == [1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5, 6, 6, 6])
        // An unknown critical chunk is still refused, as PNG requires.
        let critical = TestPNG.encode(width: 1, height: 1, depth: 8, colour: 0, rows: [[7]], extra: [TestPNG.chunk("QQQQ", [1])])
        #expect(throws: ImageError.self) { try ImageDecoder.decode(critical) }
    }

    @Test("A PNG wider than libpng's default limit is refused as too large, naming its size")
    func widePNG() throws {
        let wide = TestPNG.encode(width: 3_000_000, height: 20, depth: 8, colour: 0, rows: [])
        do { _ = try ImageDecoder.decode(wide); Issue.record("a 60-megapixel PNG decoded") } catch {
            #expect(error.kind == .tooLarge && error.description.contains("3000000"))
        }
    }

    @Test("Fuzz: 2,000 seeded mutations of valid JPEG and PNG files decode or throw, and never crash")
    func fuzz() throws {
        let seeds: [[UInt8]] = [
            try ImageEncoder.jpeg(testImage(width: 33, height: 17)),
            TestPNG.encode(width: 5, height: 3, depth: 8, colour: 2, rows: (0..<3).map { _ in [UInt8](repeating: 9, count: 15) }),
            TestPNG.encode(width: 8, height: 2, depth: 1, colour: 0, rows: [[0xAA], [0x55]]),
        ]
        var noise = Noise(state: 42)
        var decoded = 0, refused = 0
        for round in 0..<2_000 {
            var bytes = seeds[round % seeds.count]
            let edits = 1 + Int(abs(noise.next()) * 8)
            for _ in 0..<edits {
                let at = Int(abs(noise.next()) * Float(bytes.count - 1))
                switch Int(abs(noise.next()) * 4) {
                case 0: bytes[at] = UInt8(truncatingIfNeeded: Int(noise.next() * 1000))
                case 1: bytes.removeSubrange(at ..< min(bytes.count, at + 1 + Int(abs(noise.next()) * 30)))
                case 2: bytes.insert(contentsOf: [UInt8](repeating: 0xFF, count: 1 + Int(abs(noise.next()) * 5)), at: at)
                default: bytes[at] ^= 1 << UInt8(Int(abs(noise.next()) * 7))
                }
                if bytes.count < 2 { break }
            }
            do {
                let image = try ImageDecoder.decode(bytes)
                #expect(image.pixels.count == image.width * image.height * 3)
                decoded += 1
            } catch {
                refused += 1
            }
        }
        #expect(decoded + refused == 2_000 && refused > 0)
    }
}

@Suite("EXIF orientation")
struct OrientationTests {
    /// A JPEG with an APP1 Exif segment holding orientation `value`, little- or big-endian.
    func jpeg(_ image: RGBImage, orientation value: Int, littleEndian: Bool) throws -> [UInt8] {
        let plain = try ImageEncoder.jpeg(image, quality: 100)
        func u16(_ v: Int) -> [UInt8] { littleEndian ? [UInt8(v & 255), UInt8(v >> 8)] : [UInt8(v >> 8), UInt8(v & 255)] }
        func u32(_ v: Int) -> [UInt8] { littleEndian ? u16(v & 0xFFFF) + u16(v >> 16) : u16(v >> 16) + u16(v & 0xFFFF) }
        let tiff = (littleEndian ? [0x49, 0x49] : [0x4D, 0x4D]) + u16(42) + u32(8)
            + u16(2) + u16(0x010F) + u16(2) + u32(1) + u32(0) + u16(0x0112) + u16(3) + u32(1) + u16(value) + u16(0) + u32(0)
        let body = Array("Exif".utf8) + [0, 0] + tiff
        let segment: [UInt8] = [0xFF, 0xE1, UInt8((body.count + 2) >> 8), UInt8((body.count + 2) & 255)] + body
        return Array(plain.prefix(2)) + segment + Array(plain.dropFirst(2))
    }

    @Test("Each orientation turns a 3 × 2 image as EXIF defines", arguments: ExifOrientation.allCases)
    func transforms(_ orientation: ExifOrientation) {
        // Pixels numbered by position: p(x, y) = 10·y + x in the red channel.
        let w = 3, h = 2
        let image = RGBImage(width: w, height: h, pixels: (0..<h).flatMap { y in (0..<w).flatMap { x in [UInt8(10 * y + x), 0, 0] } })!
        let turned = orientation.apply(to: image)
        let swapped = orientation.rawValue >= 5
        #expect(turned.width == (swapped ? h : w) && turned.height == (swapped ? w : h))
        // Where the stored top-left, top-right and bottom-left corners end up.
        let expected: [(Int, Int)] = switch orientation {
        case .upright: [(0, 0), (2, 0), (0, 1)]
        case .mirrored: [(2, 0), (0, 0), (2, 1)]
        case .upsideDown: [(2, 1), (0, 1), (2, 0)]
        case .mirroredUpsideDown: [(0, 1), (2, 1), (0, 0)]
        case .transposed: [(0, 0), (0, 2), (1, 0)]
        case .rotatedLeft: [(1, 0), (1, 2), (0, 0)]
        case .transversed: [(1, 2), (1, 0), (0, 2)]
        case .rotatedRight: [(0, 2), (0, 0), (1, 2)]
        }
        for ((x, y), value) in zip(expected, [0, 2, 10]) {
            #expect(turned[x, y].0 == UInt8(value), "\(orientation): pixel \(value) expected at (\(x), \(y))")
        }
    }

    @Test("The orientation is read from either byte order and applied by decode; bad EXIF is ignored")
    func readsAndApplies() throws {
        let image = testImage(width: 24, height: 8)
        for little in [true, false] {
            let bytes = try jpeg(image, orientation: 6, littleEndian: little)
            #expect(ExifOrientation.read(jpeg: bytes) == .rotatedLeft)
            let decoded = try ImageDecoder.decode(bytes)
            #expect(decoded.width == 8 && decoded.height == 24)
            #expect(try ImageDecoder.decode(bytes, applyOrientation: false).width == 24)
        }
        #expect(ExifOrientation.read(jpeg: try jpeg(image, orientation: 9, littleEndian: true)) == nil)
        #expect(ExifOrientation.read(jpeg: try ImageEncoder.jpeg(image)) == nil)
        // A segment whose IFD offset points past its end.
        var broken = try jpeg(image, orientation: 3, littleEndian: true)
        broken[2 + 4 + 6 + 4] = 0xF0
        #expect(ExifOrientation.read(jpeg: broken) == nil)
        #expect(try ImageDecoder.decode(broken).width == 24)
    }
}
