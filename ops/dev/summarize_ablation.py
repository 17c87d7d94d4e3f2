#!/usr/bin/env python3
"""Summarises the logs of ops/dev/ablation: dev rsum per variant, mean ± std over seeds.

Columns: best stage-1 rsum over all evaluations (the start included); best over the evaluations
after training began (step > 0); the best model's stage 1 with querybank normalisation (β chosen
on dev); and the ranking as served (β, then the stage-2 α, both chosen on dev).
Then each variant's paired difference against `full` (the same seed with and without the part),
mean ± std over the seeds both have, and the learning curves (mean dev rsum per evaluation step).
Usage: summarize_ablation.py DIR [--svg PATH]
"""
import glob
import os
import re
import statistics
import sys


def parse(path):
    text = open(path).read()
    evaluations = [(int(m.group(1)), float(m.group(2)))
                   for m in re.finditer(r"step +(\d+)/\d+ .*?rsum ([0-9.]+)", text)]
    if not evaluations or "best on dev" not in text:
        return None
    best = max(r for _, r in evaluations)
    trained = max((r for s, r in evaluations if s > 0), default=0.0)
    betas = {float(b): float(r) for b, r in re.findall(r"β +([0-9.]+)  rsum ([0-9.]+)", text)}
    served = re.search(r"served ranking on dev \(β ([0-9.]+), α ([0-9.]+)\): .*rsum ([0-9.]+)", text)
    beta, alpha, served_rsum = (float(served.group(1)), float(served.group(2)), float(served.group(3))) if served else (0.0, 1.0, best)
    rate = re.findall(r"(\d+) pairs/s", text)
    return best, trained, (beta, betas.get(beta, best)), (alpha, served_rsum), int(rate[-1]) if rate else 0, evaluations


def curves_svg(curves, path):
    """Mean dev rsum against step, one line per variant: a plain SVG, no dependencies."""
    width, height, left, right, top, bottom = 720, 420, 60, 190, 20, 45
    steps = sorted({s for points in curves.values() for s, _ in points})
    values = [r for points in curves.values() for s, r in points if s > 0]   # the untrained start is drawn at the floor
    if not steps or not values:
        return
    low = max(0.0, min(values) - 10) if min(values) > 100 else 0.0
    high = max(values) + 5
    x = lambda s: left + (width - left - right) * (s - steps[0]) / max(1, steps[-1] - steps[0])
    y = lambda r: top + (height - top - bottom) * (1 - (max(r, low) - low) / (high - low))
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf", "#bcbd22"]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>']
    for i in range(6):
        r = low + (high - low) * i / 5
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y(r):.1f}" y2="{y(r):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{y(r) + 4:.1f}" text-anchor="end">{r:.0f}</text>')
    for s in steps:
        out.append(f'<text x="{x(s):.1f}" y="{height - bottom + 16}" text-anchor="middle">{s}</text>')
    out.append(f'<text x="{(left + width - right) / 2}" y="{height - 8}" text-anchor="middle">training step</text>')
    out.append(f'<text x="14" y="{(top + height - bottom) / 2}" transform="rotate(-90 14 {(top + height - bottom) / 2})" text-anchor="middle">dev rsum, stage 1 (mean over seeds)</text>')
    for i, (name, points) in enumerate(curves.items()):
        colour = colours[i % len(colours)]
        path_points = " ".join(f"{x(s):.1f},{y(r):.1f}" for s, r in points)
        out.append(f'<polyline points="{path_points}" fill="none" stroke="{colour}" stroke-width="2"/>')
        ly = top + 16 * i + 10
        out.append(f'<line x1="{width - right + 10}" x2="{width - right + 30}" y1="{ly}" y2="{ly}" stroke="{colour}" stroke-width="2"/>')
        out.append(f'<text x="{width - right + 36}" y="{ly + 4}">{name}</text>')
    out.append("</svg>")
    open(path, "w").write("\n".join(out) + "\n")


def main():
    directory = sys.argv[1]
    svg = sys.argv[sys.argv.index("--svg") + 1] if "--svg" in sys.argv else None
    runs = {}
    for path in sorted(glob.glob(os.path.join(directory, "*-s[0-9]*.log"))):
        name, seed = re.match(r"(.*)-s(\d+)\.log", os.path.basename(path)).groups()
        result = parse(path)
        if result:
            runs.setdefault(name, []).append((int(seed), result))

    def stats(values):
        mean = statistics.mean(values)
        if len(values) < 2:
            return f"{mean:.1f} (one seed)"
        return f"{mean:.1f} ± {statistics.stdev(values):.1f}"

    print("| variant | seeds | stage 1, best on dev (start included) | best after training began | + querybank norm. (β per seed) | served: + stage 2 (α per seed) | pairs/s |")
    print("|---|---|---|---|---|---|---|")
    for name, results in runs.items():
        results.sort()
        seeds = ",".join(str(s) for s, _ in results)
        best = [r[0] for _, r in results]
        trained = [r[1] for _, r in results]
        normalised = [r[2][1] for _, r in results]
        betas = "/".join(f"{r[2][0]:g}" for _, r in results)
        served = [r[3][1] for _, r in results]
        alphas = "/".join(f"{r[3][0]:g}" for _, r in results)
        rate = statistics.median(r[4] for _, r in results)
        print(f"| {name} | {seeds} | {stats(best)} | {stats(trained)} | {stats(normalised)} (β {betas}) | {stats(served)} (α {alphas}) | {rate:.0f} |")

    full = dict(runs.get("full", []))
    if full:
        print()
        print("| variant − full (same seed) | seeds | stage 1 | + querybank | served | per seed (stage 1) |")
        print("|---|---|---|---|---|---|")
        for name, results in runs.items():
            if name == "full":
                continue
            pairs = [(seed, r, full[seed]) for seed, r in sorted(results) if seed in full]
            if not pairs:
                continue
            first = [r[0] - f[0] for _, r, f in pairs]
            normalised = [r[2][1] - f[2][1] for _, r, f in pairs]
            served = [r[3][1] - f[3][1] for _, r, f in pairs]
            seeds = ",".join(str(seed) for seed, _, _ in pairs)
            each = " / ".join(f"{d:+.1f}" for d in first)
            print(f"| {name} | {seeds} | {stats(first)} | {stats(normalised)} | {stats(served)} | {each} |")

    curves = {}
    for name, results in runs.items():
        by_step = {}
        for _, r in results:
            for step, rsum in r[5]:
                by_step.setdefault(step, []).append(rsum)
        curves[name] = [(step, statistics.mean(v)) for step, v in sorted(by_step.items()) if len(v) == len(results)]
    if not curves:
        return
    print()
    print("| variant | " + " | ".join(str(s) for s, _ in max(curves.values(), key=len)) + " |")
    print("|---|" + "---|" * len(max(curves.values(), key=len)))
    for name, points in curves.items():
        print(f"| {name} | " + " | ".join(f"{r:.1f}" for _, r in points) + " |")
    if svg:
        curves_svg(curves, svg)
        print(f"\nlearning curves: {svg}")


if __name__ == "__main__":
    main()
