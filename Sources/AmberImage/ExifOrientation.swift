/// The EXIF orientation of a JPEG (TIFF tag 0x0112 in the APP1 "Exif" segment): how the stored
/// pixels must be turned to stand upright. Values as EXIF numbers them.
public enum ExifOrientation: Int, Sendable, CaseIterable {
    case upright = 1
    case mirrored = 2            // flip left–right
    case upsideDown = 3          // rotate 180°
    case mirroredUpsideDown = 4  // flip top–bottom
    case transposed = 5          // mirror across the main diagonal
    case rotatedLeft = 6         // stored turned 90° anticlockwise: rotate 90° clockwise to fix
    case transversed = 7         // mirror across the anti-diagonal
    case rotatedRight = 8        // stored turned 90° clockwise: rotate 90° anticlockwise to fix

    /// The orientation a JPEG's EXIF data gives; nil when it has none (or an unreadable one,
    /// which is treated as none, as every viewer does).
    public static func read(jpeg bytes: [UInt8]) -> ExifOrientation? {
        guard bytes.count >= 4, bytes[0] == 0xFF, bytes[1] == 0xD8 else { return nil }
        var position = 2
        while position + 4 <= bytes.count {
            guard bytes[position] == 0xFF else { return nil }
            let marker = bytes[position + 1]
            if marker == 0xFF { position += 1; continue }                 // fill byte
            if marker == 0xD8 || marker == 0x01 || (0xD0...0xD7).contains(marker) { position += 2; continue }
            if marker == 0xDA || marker == 0xD9 { return nil }           // start of scan / end: no EXIF before it
            let length = Int(bytes[position + 2]) << 8 | Int(bytes[position + 3])
            guard length >= 2, position + 2 + length <= bytes.count else { return nil }
            let body = (position + 4) ..< (position + 2 + length)
            if marker == 0xE1, let orientation = fromExifSegment(bytes[body]) { return orientation }
            position += 2 + length
        }
        return nil
    }

    /// The orientation in the body of an APP1 segment ("Exif\0\0" + TIFF).
    static func fromExifSegment(_ segment: ArraySlice<UInt8>) -> ExifOrientation? {
        let data = Array(segment)
        guard data.count >= 14, data[0..<6].elementsEqual([0x45, 0x78, 0x69, 0x66, 0, 0]) else { return nil }
        let tiff = 6
        let little: Bool
        switch (data[tiff], data[tiff + 1]) {
        case (0x49, 0x49): little = true
        case (0x4D, 0x4D): little = false
        default: return nil
        }
        func u16(_ at: Int) -> Int? {
            guard at >= 0, at + 2 <= data.count else { return nil }
            return little ? Int(data[at]) | Int(data[at + 1]) << 8 : Int(data[at]) << 8 | Int(data[at + 1])
        }
        func u32(_ at: Int) -> Int? {
            guard let a = u16(at), let b = u16(at + 2) else { return nil }
            return little ? a | b << 16 : a << 16 | b
        }
        guard u16(tiff + 2) == 42, let ifd = u32(tiff + 4), let count = u16(tiff + ifd) else { return nil }
        for entry in 0..<min(count, 1000) {
            let at = tiff + ifd + 2 + entry * 12
            guard let tag = u16(at) else { return nil }
            guard tag == 0x0112 else { continue }
            guard u16(at + 2) == 3, let value = u16(at + 8) else { return nil }   // SHORT
            return ExifOrientation(rawValue: value)
        }
        return nil
    }

    /// The image turned upright.
    public func apply(to image: RGBImage) -> RGBImage {
        let w = image.width, h = image.height
        let swaps = rawValue >= 5
        let outWidth = swaps ? h : w, outHeight = swaps ? w : h
        // For each output pixel, the source pixel it comes from.
        let source: (Int, Int) -> (Int, Int)
        switch self {
        case .upright: return image
        case .mirrored: source = { x, y in (w - 1 - x, y) }
        case .upsideDown: source = { x, y in (w - 1 - x, h - 1 - y) }
        case .mirroredUpsideDown: source = { x, y in (x, h - 1 - y) }
        case .transposed: source = { x, y in (y, x) }
        case .rotatedLeft: source = { x, y in (y, h - 1 - x) }
        case .transversed: source = { x, y in (w - 1 - y, h - 1 - x) }
        case .rotatedRight: source = { x, y in (w - 1 - y, x) }
        }
        var pixels = [UInt8](repeating: 0, count: outWidth * outHeight * 3)
        image.pixels.withUnsafeBufferPointer { input in
            pixels.withUnsafeMutableBufferPointer { output in
                for y in 0..<outHeight {
                    for x in 0..<outWidth {
                        let (sx, sy) = source(x, y)
                        let from = (sy * w + sx) * 3, to = (y * outWidth + x) * 3
                        output[to] = input[from]
                        output[to + 1] = input[from + 1]
                        output[to + 2] = input[from + 2]
                    }
                }
            }
        }
        return RGBImage(unchecked: outWidth, outHeight, pixels)
    }
}
