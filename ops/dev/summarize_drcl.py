#!/usr/bin/env python3
"""Tables of ops/dev/drcl-wikipedia's runs: validation mAP@all and mAP@50 per run, and mean ± std
over the seeds of each setting.
    summarize_drcl.py [OUTPUT_DIR]"""
import glob, os, re, statistics, sys

out = sys.argv[1] if len(sys.argv) > 1 else ".amber/drcl"
pattern = re.compile(r"mAP@all i→t ([0-9.]+) t→i ([0-9.]+) \(mean ([0-9.]+)\); mAP@50 i→t ([0-9.]+) t→i ([0-9.]+) \(mean ([0-9.]+)\)")
runs = {}
for log in sorted(glob.glob(os.path.join(out, "*-s[0-9].log"))):
    name = os.path.basename(log)[:-4]
    text = open(log).read()
    found = [l for l in text.splitlines() if l.startswith("validation:")]
    if not found:
        continue
    m = pattern.search(found[-1])
    setting, seed = name.rsplit("-s", 1)
    runs.setdefault(setting, {})[int(seed)] = [float(v) for v in m.groups()]
print("| run | seed | mAP@all i→t | t→i | mean | mAP@50 i→t | t→i | mean |")
print("|---|---|---|---|---|---|---|---|")
for setting, seeds in runs.items():
    for seed, v in sorted(seeds.items()):
        print(f"| {setting} | {seed} | " + " | ".join(f"{x:.4f}" for x in v) + " |")
print()
print("| setting | seeds | mAP@all i→t | t→i | mean | mAP@50 mean |")
print("|---|---|---|---|---|---|")
for setting, seeds in runs.items():
    values = list(seeds.values())
    def cell(i):
        xs = [v[i] for v in values]
        return f"{statistics.mean(xs):.4f} ± {statistics.stdev(xs):.4f}" if len(xs) > 1 else f"{xs[0]:.4f}"
    print(f"| {setting} | {','.join(map(str, sorted(seeds)))} | {cell(0)} | {cell(1)} | {cell(2)} | {cell(5)} |")
