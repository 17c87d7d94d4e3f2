/// Resizing as PIL's `Image.resize(size, Image.BICUBIC)` does it for 8-bit RGB, to the byte: the
/// reference pipeline's features were made that way.
///
/// PIL's algorithm (`libImaging/Resample.c`): a separable convolution with the cubic kernel
/// (a = −0.5) whose support widens with the downscaling factor (an antialiasing filter), weights
/// normalised per output pixel and rounded to fixed point with 22 fractional bits, the horizontal
/// pass first (over only the rows the vertical pass needs), each pass rounded and clipped to 8
/// bits. The same size in and out is a copy.
public enum Resample {
    static let precisionBits = 32 - 8 - 2

    static func cubic(_ value: Double) -> Double {
        let a = -0.5
        let x = abs(value)
        if x < 1 { return ((a + 2) * x - (a + 3)) * x * x + 1 }
        if x < 2 { return (((x - 5) * x + 8) * x - 4) * a }
        return 0
    }

    /// Per output position: the first input position, the number of inputs and their
    /// fixed-point weights (`taps` per output, unused ones zero).
    struct Coefficients {
        var first: [Int]
        var count: [Int]
        var weights: [Int32]
        var taps: Int
    }

    static func coefficients(input: Int, output: Int) -> Coefficients {
        let scale = Double(input) / Double(output)
        let filterScale = max(scale, 1)
        let support = 2 * filterScale
        let taps = Int(support.rounded(.up)) * 2 + 1
        var first = [Int](repeating: 0, count: output)
        var count = [Int](repeating: 0, count: output)
        var weights = [Int32](repeating: 0, count: output * taps)
        var row = [Double](repeating: 0, count: taps)
        for position in 0..<output {
            let center = (Double(position) + 0.5) * scale
            let inverse = 1 / filterScale
            let low = max(Int(center - support + 0.5), 0)
            let high = min(Int(center + support + 0.5), input)
            let n = max(high - low, 0)
            var total = 0.0
            for i in 0..<n {
                let w = cubic((Double(i + low) - center + 0.5) * inverse)
                row[i] = w
                total += w
            }
            for i in 0..<taps {
                var w = i < n ? row[i] : 0
                if i < n, total != 0 { w /= total }
                let fixed = w * Double(1 << precisionBits)
                weights[position * taps + i] = Int32(w < 0 ? fixed - 0.5 : fixed + 0.5)
            }
            first[position] = low
            count[position] = n
        }
        return Coefficients(first: first, count: count, weights: weights, taps: taps)
    }

    @inline(__always)
    static func clip8(_ accumulator: Int32) -> UInt8 {
        let value = accumulator >> Int32(precisionBits)
        return UInt8(clamping: value)
    }

    /// `image` at `width × height` (bicubic, as PIL).
    ///
    /// Pass order: the Pillow Resample.c we read runs the horizontal pass first. Pillow 13 (the reference
    /// pipeline's) runs the vertical pass first when the height shrinks and the width does not,
    /// and sometimes when both shrink by a rule we have not pinned down; here the vertical pass
    /// goes first exactly when the height shrinks and the width does not. Byte-exact with Pillow
    /// 13 whenever a side keeps its size, on every enlargement and on most reductions (7 of 8
    /// common photo sizes to 224 × 224); elsewhere some pixels differ by ±1 (docs/decisions.md).
    public static func bicubic(_ image: RGBImage, width: Int, height: Int) -> RGBImage {
        precondition(width > 0 && height > 0, "Resample.bicubic: the target size is the caller's constant")
        if width == image.width && height == image.height { return image }
        let needHorizontal = width != image.width, needVertical = height != image.height
        if needHorizontal && needVertical && height < image.height && width >= image.width {
            let vertical = verticalPass(image.pixels, width: image.width, rowOffset: 0,
                                        coefficients: coefficients(input: image.height, output: height))
            let horizontal = horizontalPass(vertical, width: image.width, firstRow: 0, rows: height,
                                            coefficients: coefficients(input: image.width, output: width))
            return RGBImage(unchecked: width, height, horizontal)
        }
        let verticalCoefficients = coefficients(input: image.height, output: height)
        var pixels = image.pixels
        var rowOffset = 0
        if needHorizontal {
            // Only the rows the vertical pass reads.
            let firstRow = needVertical ? verticalCoefficients.first[0] : 0
            let lastRow = needVertical ? verticalCoefficients.first[height - 1] + verticalCoefficients.count[height - 1] : image.height
            pixels = horizontalPass(pixels, width: image.width, firstRow: firstRow, rows: lastRow - firstRow,
                                    coefficients: coefficients(input: image.width, output: width))
            rowOffset = firstRow
        }
        if needVertical {
            pixels = verticalPass(pixels, width: width, rowOffset: rowOffset, coefficients: verticalCoefficients)
        }
        return RGBImage(unchecked: width, height, pixels)
    }

    /// Rows `firstRow ..< firstRow + rows` of a `width`-wide image, resampled along x.
    static func horizontalPass(_ source: [UInt8], width sourceWidth: Int, firstRow: Int, rows: Int,
                               coefficients c: Coefficients) -> [UInt8] {
        let width = c.first.count
        let half = Int32(1) << Int32(precisionBits - 1)
        var output = [UInt8](repeating: 0, count: rows * width * 3)
        source.withUnsafeBufferPointer { input in
            output.withUnsafeMutableBufferPointer { output in
                for y in 0..<rows {
                    let inputRow = (y + firstRow) * sourceWidth * 3
                    for x in 0..<width {
                        let start = c.first[x], k = x * c.taps
                        var r = half, g = half, b = half
                        for i in 0..<c.count[x] {
                            let w = c.weights[k + i]
                            let p = inputRow + (start + i) * 3
                            r &+= Int32(input[p]) &* w
                            g &+= Int32(input[p + 1]) &* w
                            b &+= Int32(input[p + 2]) &* w
                        }
                        let o = (y * width + x) * 3
                        output[o] = clip8(r)
                        output[o + 1] = clip8(g)
                        output[o + 2] = clip8(b)
                    }
                }
            }
        }
        return output
    }

    /// A `width`-wide image resampled along y; its row 0 is the source's row `rowOffset`.
    static func verticalPass(_ source: [UInt8], width: Int, rowOffset: Int, coefficients c: Coefficients) -> [UInt8] {
        let height = c.first.count
        let half = Int32(1) << Int32(precisionBits - 1)
        var output = [UInt8](repeating: 0, count: width * height * 3)
        source.withUnsafeBufferPointer { input in
            output.withUnsafeMutableBufferPointer { output in
                for y in 0..<height {
                    let start = c.first[y] - rowOffset, k = y * c.taps
                    for x in 0..<width {
                        var r = half, g = half, b = half
                        for i in 0..<c.count[y] {
                            let w = c.weights[k + i]
                            let p = ((start + i) * width + x) * 3
                            r &+= Int32(input[p]) &* w
                            g &+= Int32(input[p + 1]) &* w
                            b &+= Int32(input[p + 2]) &* w
                        }
                        let o = (y * width + x) * 3
                        output[o] = clip8(r)
                        output[o + 1] = clip8(g)
                        output[o + 2] = clip8(b)
                    }
                }
            }
        }
        return output
    }
}
