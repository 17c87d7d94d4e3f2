"""The FAISS peer for `amber bench search --reference PYTHON`: the same gallery and queries
(gallery.npy, queries.npy written by Amber; the first 3 queries warm up), one query at a time as
Amber times them, k = 10: IndexFlatIP (exact, the truth for recall@10) and IndexIVFFlat
(nlist = 2·√N, trained on 64k gallery vectors, inner product) at several nprobe.

Set-up: ref-venv/bin/pip install faiss-cpu numpy
Usage: faiss_bench.py DIR THREADS
"""
import sys, time
import numpy as np, faiss

directory, threads = sys.argv[1], int(sys.argv[2])
faiss.omp_set_num_threads(threads)
gallery = np.load(f"{directory}/gallery.npy", mmap_mode="r")
queries = np.ascontiguousarray(np.load(f"{directory}/queries.npy"), dtype=np.float32)
n, d = gallery.shape
gallery = np.ascontiguousarray(gallery, dtype=np.float32)

def timed(index, label, setup=None):
    if setup: setup()
    for q in queries[:3]: index.search(q[None], 10)
    times, results = [], []
    for q in queries[3:]:
        t0 = time.perf_counter(); _, ids = index.search(q[None], 10); times.append((time.perf_counter() - t0) * 1000); results.append(ids[0])
    times.sort()
    p = lambda f: times[min(len(times) - 1, int(round((len(times) - 1) * f)))]
    return times, results, p(0.5), p(0.99)

flat = faiss.IndexFlatIP(d)
t0 = time.perf_counter(); flat.add(gallery); built = time.perf_counter() - t0
times, truth, p50, p99 = timed(flat, "flat")
print(f"    IndexFlatIP (exact):          p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  {1000 / np.mean(times):.0f} queries/s  (add {built:.1f} s)")
nlist = int(2 * np.sqrt(n))
quantizer = faiss.IndexFlatIP(d)
ivf = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
rng = np.random.default_rng(1)
sample = gallery[np.sort(rng.choice(n, size=min(n, max(64 * 1024, 40 * nlist)), replace=False))]
t0 = time.perf_counter(); ivf.train(sample); ivf.add(gallery); built = time.perf_counter() - t0
print(f"    IndexIVFFlat nlist {nlist}: trained and added in {built:.0f} s")
for nprobe in (4, 16, 64, 256):
    ivf.nprobe = nprobe
    times, results, p50, p99 = timed(ivf, f"ivf{nprobe}")
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth, results)])
    print(f"    IndexIVFFlat nprobe {nprobe:4d}:      p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  recall@10 {recall:.3f}  {1000 / np.mean(times):.0f} queries/s")
print(f"    faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads")
