import AmberCatalog
import Foundation

/// A training report as a self-contained SVG: each loss term and the total over steps (left),
/// dev rsum over steps with the best evaluation marked (right). Opens in any browser.
public enum TrainingReport {
    public static func svg(history: [TrainingEvaluation], title: String) -> String {
        let width = 1000.0, height = 380.0, panelWidth = 400.0, panelHeight = 260.0
        let top = 60.0, lefts = [70.0, 550.0]
        var out = """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" viewBox="0 0 \(Int(width)) \(Int(height))" font-family="sans-serif" font-size="12">
        <rect width="100%" height="100%" fill="white"/>
        <text x="20" y="28" font-size="16" font-weight="bold">\(escape(title))</text>

        """
        guard !history.isEmpty else { return out + "<text x=\"20\" y=\"60\">no evaluation yet</text>\n</svg>\n" }
        let steps = history.map { Double($0.step) }
        let stepRange = (steps.min()! == steps.max()! ? 0 : steps.min()!) ... steps.max()!
        let names = ["total"] + Array(Set(history.flatMap(\.terms.keys))).sorted()
        let palette = ["#222222", "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
        func series(_ name: String) -> [(Double, Double)] {
            history.compactMap { e in
                let v = name == "total" ? e.loss : e.terms[name]
                return v.flatMap { $0.isFinite ? (Double(e.step), Double($0)) : nil }
            }
        }
        // Left: losses, on a log scale when they are all positive (they span decades).
        let rawLosses = names.map { (name: $0, points: series($0)) }
        let logScale = rawLosses.allSatisfy { $0.points.allSatisfy { $0.1 > 0 } }
        let losses = rawLosses.map { line in (name: line.name, points: line.points.map { ($0.0, logScale ? log10($0.1) : $0.1) }) }
        let lossValues = losses.flatMap { $0.points.map(\.1) }
        // Log scale: whole decades, four of them or a multiple, so the five ticks fall on powers of 10.
        let lowDecade = floor(lossValues.min() ?? 0)
        let decades = max(4, 4 * ceil((ceil(lossValues.max() ?? 1) - lowDecade) / 4))
        let lossRange = logScale
            ? lowDecade ... lowDecade + decades
            : niceRange(lossValues.min() ?? 0, lossValues.max() ?? 1, includeZero: true)
        out += panel(x: lefts[0], y: top, width: panelWidth, height: panelHeight, xRange: stepRange, yRange: lossRange,
                     xLabel: "step", yLabel: "training loss (mean since last evaluation\(logScale ? ", log scale" : ""))",
                     yFormat: logScale ? { String(format: "%g", pow(10, $0)) } : format)
        for (index, line) in losses.enumerated() where !line.points.isEmpty {
            out += polyline(line.points, x: lefts[0], y: top, width: panelWidth, height: panelHeight, xRange: stepRange, yRange: lossRange,
                            colour: palette[index % palette.count], dashed: index == 0)
            out += "<text x=\"\(lefts[0] + 10)\" y=\"\(top + 16 + 15 * Double(index))\" fill=\"\(palette[index % palette.count])\">\(escape(line.name))</text>\n"
        }
        // Right: dev rsum.
        let rsum = history.map { (Double($0.step), $0.metrics.rsum) }
        let rsumRange = niceRange(rsum.map(\.1).min()!, rsum.map(\.1).max()!, includeZero: false)
        out += panel(x: lefts[1], y: top, width: panelWidth, height: panelHeight, xRange: stepRange, yRange: rsumRange,
                     xLabel: "step", yLabel: "dev rsum (R@1+5+10, both directions)", yFormat: format)
        out += polyline(rsum, x: lefts[1], y: top, width: panelWidth, height: panelHeight, xRange: stepRange, yRange: rsumRange, colour: palette[1], dashed: false)
        if let best = history.max(by: { $0.metrics.rsum < $1.metrics.rsum }) {
            let px = lefts[1] + scale(Double(best.step), stepRange, panelWidth)
            let py = top + panelHeight - scale(best.metrics.rsum, rsumRange, panelHeight)
            out += "<circle cx=\"\(px)\" cy=\"\(py)\" r=\"4\" fill=\"#d62728\"/>\n"
            out += "<text x=\"\(lefts[1] + 10)\" y=\"\(top + 16)\" fill=\"#d62728\">best \(String(format: "%.1f", best.metrics.rsum)) at step \(best.step)</text>\n"
        }
        return out + "</svg>\n"
    }

    private static func scale(_ value: Double, _ range: ClosedRange<Double>, _ length: Double) -> Double {
        range.upperBound == range.lowerBound ? length / 2 : (value - range.lowerBound) / (range.upperBound - range.lowerBound) * length
    }

    private static func niceRange(_ low: Double, _ high: Double, includeZero: Bool) -> ClosedRange<Double> {
        var low = includeZero ? min(0, low) : low, high = high
        if high - low < 1e-9 { low -= 1; high += 1 }
        let pad = (high - low) * 0.05
        return (includeZero && low == 0 ? 0 : low - pad) ... high + pad
    }

    private static func format(_ value: Double) -> String {
        abs(value) >= 100 ? String(format: "%.0f", value) : String(format: "%.2g", value)
    }

    private static func panel(x: Double, y: Double, width: Double, height: Double, xRange: ClosedRange<Double>, yRange: ClosedRange<Double>,
                              xLabel: String, yLabel: String, yFormat: (Double) -> String) -> String {
        var out = "<rect x=\"\(x)\" y=\"\(y)\" width=\"\(width)\" height=\"\(height)\" fill=\"none\" stroke=\"#888\"/>\n"
        for i in 0...4 {
            let fraction = Double(i) / 4
            let gy = y + height - fraction * height
            let gx = x + fraction * width
            out += "<line x1=\"\(x)\" y1=\"\(gy)\" x2=\"\(x + width)\" y2=\"\(gy)\" stroke=\"#eee\"/>\n"
            out += "<text x=\"\(x - 6)\" y=\"\(gy + 4)\" text-anchor=\"end\">\(yFormat(yRange.lowerBound + fraction * (yRange.upperBound - yRange.lowerBound)))</text>\n"
            out += "<text x=\"\(gx)\" y=\"\(y + height + 16)\" text-anchor=\"middle\">\(format(xRange.lowerBound + fraction * (xRange.upperBound - xRange.lowerBound)))</text>\n"
        }
        out += "<text x=\"\(x + width / 2)\" y=\"\(y + height + 34)\" text-anchor=\"middle\">\(escape(xLabel))</text>\n"
        out += "<text x=\"\(x)\" y=\"\(y - 8)\">\(escape(yLabel))</text>\n"
        return out
    }

    private static func polyline(_ points: [(Double, Double)], x: Double, y: Double, width: Double, height: Double,
                                 xRange: ClosedRange<Double>, yRange: ClosedRange<Double>, colour: String, dashed: Bool) -> String {
        let coordinates = points.map { p in
            String(format: "%.1f,%.1f", x + scale(p.0, xRange, width), y + height - scale(p.1, yRange, height))
        }.joined(separator: " ")
        return "<polyline points=\"\(coordinates)\" fill=\"none\" stroke=\"\(colour)\" stroke-width=\"1.8\"\(dashed ? " stroke-dasharray=\"5,3\"" : "")/>\n"
    }

    private static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }
}
