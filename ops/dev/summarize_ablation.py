#!/usr/bin/env python3
"""Summarises the logs of ops/dev/ablation: dev rsum per variant, mean ± std over seeds.

Columns: best stage-1 rsum over all evaluations (the start included); best over the evaluations
after training began (step >= 50); the best model's stage 1 with querybank normalisation (β chosen
on dev); and the ranking as served (β, then the stage-2 α, both chosen on dev).
Usage: summarize_ablation.py DIR
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
    trained = max(r for s, r in evaluations if s > 0)
    betas = {float(b): float(r) for b, r in re.findall(r"β +([0-9.]+)  rsum ([0-9.]+)", text)}
    served = re.search(r"served ranking on dev \(β ([0-9.]+), α ([0-9.]+)\): .*rsum ([0-9.]+)", text)
    beta, alpha, served_rsum = (float(served.group(1)), float(served.group(2)), float(served.group(3))) if served else (0.0, 1.0, best)
    rate = re.findall(r"(\d+) pairs/s", text)
    return best, trained, (beta, betas.get(beta, best)), (alpha, served_rsum), int(rate[-1]) if rate else 0


def main():
    directory = sys.argv[1]
    runs = {}
    for path in sorted(glob.glob(os.path.join(directory, "*-s[0-9]*.log"))):
        name, seed = re.match(r"(.*)-s(\d+)\.log", os.path.basename(path)).groups()
        result = parse(path)
        if result:
            runs.setdefault(name, []).append((int(seed), result))

    def stats(values):
        mean = statistics.mean(values)
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{mean:.1f} ± {std:.1f}"

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


if __name__ == "__main__":
    main()
