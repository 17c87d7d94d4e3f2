import CImageCodecs
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An 8-bit RGB image: `width × height × 3` bytes, interleaved, row-major.
public struct RGBImage: Sendable, Equatable {
    public let width: Int
    public let height: Int
    public var pixels: [UInt8]

    /// nil unless `width, height > 0` and `pixels.count == width * height * 3`.
    public init?(width: Int, height: Int, pixels: [UInt8]) {
        guard width > 0, height > 0, pixels.count == width * height * 3 else { return nil }
        self.width = width
        self.height = height
        self.pixels = pixels
    }

    init(unchecked width: Int, _ height: Int, _ pixels: [UInt8]) {
        self.width = width
        self.height = height
        self.pixels = pixels
    }

    /// The pixel at column `x`, row `y`.
    public subscript(x: Int, y: Int) -> (UInt8, UInt8, UInt8) {
        let i = (y * width + x) * 3
        return (pixels[i], pixels[i + 1], pixels[i + 2])
    }
}

/// Why bytes are not an image Amber can take. `description` is the sentence to show: it names
/// the kind of problem; the caller prefixes the file or field.
public struct ImageError: Error, Equatable, Sendable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// Not decodable: bad, truncated or empty data.
        case corrupt
        /// A valid image that is more than the limits allow (pixels, bytes, scans).
        case tooLarge
        /// Not JPEG or PNG, or a variant of them this decoder does not take.
        case unsupported
        /// A file that cannot be opened or read.
        case unreadable
    }

    public let kind: Kind
    public let problem: String

    public init(_ kind: Kind, _ problem: String) {
        self.kind = kind
        self.problem = problem
    }

    public var description: String {
        switch kind {
        case .corrupt: "not a readable image: \(problem)"
        case .tooLarge: "image too large: \(problem)"
        case .unsupported: "unsupported image: \(problem)"
        case .unreadable: "image file \(problem)"
        }
    }
}

/// Limits on what the decoder accepts: a decompression-bomb guard.
public struct ImageLimits: Sendable, Equatable {
    /// Width × height, checked from the header before any pixel memory is allocated.
    public var maximumPixels: Int
    /// Bytes of encoded data.
    public var maximumBytes: Int
    /// Scans of a progressive JPEG (each one is a pass over the whole image).
    public var maximumScans: Int

    /// 40 megapixels (a 7,700 × 5,200 photo), 32 MB, 200 scans: every camera's output.
    public static let standard = ImageLimits(maximumPixels: 40_000_000, maximumBytes: 32 << 20, maximumScans: 200)

    public init(maximumPixels: Int, maximumBytes: Int, maximumScans: Int) {
        self.maximumPixels = maximumPixels
        self.maximumBytes = maximumBytes
        self.maximumScans = maximumScans
    }
}

/// JPEG and PNG decoding to RGB, as PIL's `Image.open(…).convert("RGB")` decodes them, plus the
/// EXIF orientation of a JPEG applied (a phone's portrait photo stands upright).
public enum ImageDecoder {
    public enum Format: String, Sendable { case jpeg, png }

    /// The format of encoded bytes from their signature; nil when neither.
    public static func format(of bytes: some Collection<UInt8>) -> Format? {
        let head = Array(bytes.prefix(8))
        if head.count >= 3, head[0] == 0xFF, head[1] == 0xD8, head[2] == 0xFF { return .jpeg }
        if head == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] { return .png }
        return nil
    }

    /// Reads and decodes the JPEG or PNG file at `path`; its size is checked against the limit
    /// before any of it is read, so a huge file is refused without being loaded.
    /// - Throws: ``ImageError`` (`.unreadable` when the file cannot be opened or read).
    public static func decode(file path: String, limits: ImageLimits = .standard) throws(ImageError) -> RGBImage {
        try decode(readFile(path, limits: limits), limits: limits)
    }

    /// The bytes of the file at `path`, at most `limits.maximumBytes` of them.
    /// - Throws: ``ImageError``: `.tooLarge` past the limit, `.unreadable` when it cannot be read.
    public static func readFile(_ path: String, limits: ImageLimits = .standard) throws(ImageError) -> [UInt8] {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw ImageError(.unreadable, "cannot be opened (\(String(cString: strerror(errno))))") }
        defer { close(descriptor) }
        var status = stat()
        guard fstat(descriptor, &status) == 0, (status.st_mode & S_IFMT) == S_IFREG else {
            throw ImageError(.unreadable, "is not a regular file")
        }
        guard Int(status.st_size) <= limits.maximumBytes else {
            throw ImageError(.tooLarge, "\(status.st_size) bytes, more than the \(limits.maximumBytes) allowed")
        }
        // The size it has, plus one byte to notice a file that grows while it is read.
        var bytes = [UInt8](repeating: 0, count: Int(status.st_size) + 1)
        var count = 0
        while count < bytes.count {
            let n = bytes.withUnsafeMutableBytes { buffer -> Int in
                guard let base = buffer.baseAddress else { return 0 }
                return read(descriptor, base + count, buffer.count - count)
            }
            if n == 0 { break }
            if n < 0 {
                if errno == EINTR { continue }
                throw ImageError(.unreadable, "cannot be read (\(String(cString: strerror(errno))))")
            }
            count += n
        }
        guard count <= Int(status.st_size) else { throw ImageError(.unreadable, "changed while it was read") }
        bytes.removeSubrange(count...)
        return bytes
    }

    /// Decodes a JPEG or PNG.
    /// - Throws: ``ImageError``; never traps on any input.
    public static func decode(_ bytes: [UInt8], limits: ImageLimits = .standard,
                              applyOrientation: Bool = true) throws(ImageError) -> RGBImage {
        guard !bytes.isEmpty else { throw ImageError(.corrupt, "no bytes") }
        guard bytes.count <= limits.maximumBytes else {
            throw ImageError(.tooLarge, "\(bytes.count) bytes, more than the \(limits.maximumBytes) allowed")
        }
        guard let format = format(of: bytes) else {
            let head = bytes.prefix(4).map { String($0, radix: 16, uppercase: true) }.joined(separator: " ")
            throw ImageError(.unsupported, "not a JPEG or PNG (the data starts with bytes \(head))")
        }
        var image = amber_rgb_image()
        var message = [CChar](repeating: 0, count: 256)
        let status: Int32 = bytes.withUnsafeBufferPointer { data in
            message.withUnsafeMutableBufferPointer { text in
                switch format {
                case .jpeg:
                    amber_jpeg_decode(data.baseAddress, data.count, limits.maximumPixels, Int32(clamping: limits.maximumScans),
                                      &image, text.baseAddress, text.count)
                case .png:
                    amber_png_decode(data.baseAddress, data.count, limits.maximumPixels, &image, text.baseAddress, text.count)
                }
            }
        }
        guard status == Int32(AMBER_CODEC_OK), let pointer = image.pixels, image.width > 0, image.height > 0 else {
            let problem = message.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
            let named = "\(format == .jpeg ? "JPEG" : "PNG"): \(problem.isEmpty ? "undecodable" : problem)"
            switch status {
            case Int32(AMBER_CODEC_TOO_LARGE): throw ImageError(.tooLarge, named)
            case Int32(AMBER_CODEC_UNSUPPORTED): throw ImageError(.unsupported, named)
            case Int32(AMBER_CODEC_OUT_OF_MEMORY): throw ImageError(.tooLarge, named)
            default: throw ImageError(.corrupt, named)
            }
        }
        defer { amber_codecs_free(pointer) }
        let width = Int(image.width), height = Int(image.height)
        let pixels = Array(UnsafeBufferPointer(start: pointer, count: width * height * 3))
        let decoded = RGBImage(unchecked: width, height, pixels)
        guard applyOrientation, format == .jpeg, let orientation = ExifOrientation.read(jpeg: bytes) else { return decoded }
        return orientation.apply(to: decoded)
    }
}

/// Baseline JPEG encoding (thumbnails).
public enum ImageEncoder {
    /// - Throws: ``ImageError`` for an image libjpeg refuses (wider than 65,500 pixels).
    public static func jpeg(_ image: RGBImage, quality: Int = 85) throws(ImageError) -> [UInt8] {
        var output: UnsafeMutablePointer<UInt8>?
        var length = 0
        var message = [CChar](repeating: 0, count: 256)
        let status = image.pixels.withUnsafeBufferPointer { pixels in
            message.withUnsafeMutableBufferPointer { text in
                amber_jpeg_encode(pixels.baseAddress, Int32(clamping: image.width), Int32(clamping: image.height),
                                  Int32(clamping: quality), &output, &length, text.baseAddress, text.count)
            }
        }
        guard status == Int32(AMBER_CODEC_OK), let output else {
            let problem = message.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
            throw ImageError(.unsupported, "JPEG encoding: \(problem)")
        }
        defer { amber_codecs_free(output) }
        return Array(UnsafeBufferPointer(start: output, count: length))
    }
}

/// A picture to show for an image item: the longer side at most `maximumSide` pixels (never
/// enlarged), bicubic, baseline JPEG.
public enum Thumbnail {
    public static func make(_ image: RGBImage, maximumSide: Int = 256, quality: Int = 85) throws(ImageError) -> (width: Int, height: Int, jpeg: [UInt8]) {
        let side = max(1, maximumSide)
        let scale = min(1, Double(side) / Double(max(image.width, image.height)))
        let width = max(1, Int((Double(image.width) * scale).rounded()))
        let height = max(1, Int((Double(image.height) * scale).rounded()))
        let small = Resample.bicubic(image, width: width, height: height)
        return (width, height, try ImageEncoder.jpeg(small, quality: quality))
    }
}
