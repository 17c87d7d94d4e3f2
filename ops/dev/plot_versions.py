#!/usr/bin/env python3
"""The continuous run's picture: dev rsum of every model version against the minute it was
written (dots), the served version's dev rsum over time (a step line), and when each chunk of
training images arrived (ticks). Reads what ops/dev/continuous-f8k exports from the database.
    plot_versions.py VERSIONS_TSV CHUNKS_TSV START_EPOCH OUT_SVG [TITLE]
VERSIONS_TSV: version, created (epoch s), step, dev rsum (stage 1), served rsum, promoted (epoch s or empty)
CHUNKS_TSV:   chunk, arrived (epoch s), images added"""
import sys

versions_path, chunks_path, start, out = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
title = sys.argv[5] if len(sys.argv) > 5 else "continuous training"
versions = []
for line in open(versions_path):
    f = line.rstrip("\n").split("\t")
    if len(f) < 6 or not f[3]:
        continue
    versions.append({"version": int(f[0]), "t": (float(f[1]) - start) / 60, "step": int(f[2]), "rsum": float(f[3]),
                     "served": float(f[4]) if f[4] else float(f[3]), "promoted": (float(f[5]) - start) / 60 if f[5] else None})
chunks = [((float(f[1]) - start) / 60, int(f[0]), int(f[2])) for f in (l.rstrip("\n").split("\t") for l in open(chunks_path)) if len(f) >= 3]
if not versions:
    sys.exit("no model versions with a dev rsum")
W, H, L, R, T, B = 760, 400, 60, 20, 40, 50
end = max([v["t"] for v in versions] + [c[0] for c in chunks] + [1]) * 1.03
low = min(v["rsum"] for v in versions)
high = max(max(v["rsum"], v["served"]) for v in versions)
low, high = low - 0.05 * (high - low + 1), high + 0.05 * (high - low + 1)
x = lambda t: L + (W - L - R) * t / end
y = lambda r: T + (H - T - B) * (1 - (r - low) / (high - low))
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>', f'<text x="{L}" y="20" font-size="14">{title}</text>',
       f'<line x1="{L}" y1="{H - B}" x2="{W - R}" y2="{H - B}" stroke="black"/>', f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H - B}" stroke="black"/>']
for i in range(6):
    r = low + (high - low) * i / 5
    svg.append(f'<text x="{L - 6}" y="{y(r) + 4:.1f}" text-anchor="end">{r:.0f}</text>')
    svg.append(f'<line x1="{L}" y1="{y(r):.1f}" x2="{W - R}" y2="{y(r):.1f}" stroke="#eee"/>')
for i in range(6):
    t = end * i / 5
    svg.append(f'<text x="{x(t):.1f}" y="{H - B + 16}" text-anchor="middle">{t:.0f}</text>')
svg.append(f'<text x="{(L + W - R) / 2}" y="{H - 12}" text-anchor="middle">minutes since the first chunk</text>')
svg.append(f'<text x="16" y="{(T + H - B) / 2}" transform="rotate(-90 16 {(T + H - B) / 2})" text-anchor="middle">dev rsum</text>')
for t, k, n in chunks:
    svg.append(f'<line x1="{x(t):.1f}" y1="{H - B}" x2="{x(t):.1f}" y2="{H - B - 8}" stroke="#d62728"/>')
# The served version over time: each promotion holds until the next.
promoted = sorted((v["promoted"], v["served"]) for v in versions if v["promoted"] is not None)
points = []
for i, (t, r) in enumerate(promoted):
    t_next = promoted[i + 1][0] if i + 1 < len(promoted) else end
    points += [(x(t), y(r)), (x(t_next), y(r))]
if points:
    svg.append('<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="' + " ".join(f"{a:.1f},{b:.1f}" for a, b in points) + '"/>')
for v in versions:
    svg.append(f'<circle cx="{x(v["t"]):.1f}" cy="{y(v["rsum"]):.1f}" r="3.5" fill="{"#1f77b4" if v["promoted"] is not None else "#999"}">'
               f'<title>version {v["version"]}, step {v["step"]}: stage 1 {v["rsum"]:.1f}, served {v["served"]:.1f}</title></circle>')
legend = [("#999", "candidate (stage-1 dev rsum)"), ("#1f77b4", "promoted; line: served dev rsum"), ("#d62728", "a chunk of training images arrives")]
for i, (colour, text) in enumerate(legend):
    svg.append(f'<rect x="{W - R - 250}" y="{T + 4 + 16 * i}" width="10" height="10" fill="{colour}"/><text x="{W - R - 235}" y="{T + 13 + 16 * i}">{text}</text>')
svg.append("</svg>")
open(out, "w").write("\n".join(svg) + "\n")
print(f"wrote {out}: {len(versions)} versions, {len(promoted)} promotions, {len(chunks)} chunks")
