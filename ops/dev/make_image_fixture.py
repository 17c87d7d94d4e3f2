#!/usr/bin/env python3
"""Writes Tests/AmberImageTests/Fixtures/: a tiny EfficientNet-Lite-shaped network with random
weights (tiny_lite.safetensors), input images, PIL's bicubic resizes of them and the network's
expected features (image_fixture.json), so the Swift encoder's tests need no shared data.

Provenance: resizes come from PIL (Image.resize BICUBIC, the reference pipeline's call). Features
come from an independent NumPy implementation of the forward pass below (NCHW, explicit
TensorFlow-SAME padding, batch norm unfolded, float64), which this script first checks against
the real EfficientNet-Lite0 weights and the reference features in
../shared/data/flickr8k/reference-dev100 (cosine >= 0.9999 global, >= 0.999 local).

Usage: pip install numpy pillow; python3 ops/dev/make_image_fixture.py WEIGHTS.safetensors FLICKR8K_DIR
(WEIGHTS: the converted Lite0 file ops/setup writes to .amber/models/efficientnet-lite0/model.safetensors)
"""
import json, os, struct, sys
import numpy as np
from PIL import Image

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../Tests/AmberImageTests/Fixtures")
EPS = 1e-3


def read_safetensors(path):
    data = open(path, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    weights = {}
    for k, v in header.items():
        if k == "__metadata__" or v["dtype"] != "F32":
            continue
        a, b = v["data_offsets"]
        weights[k] = np.frombuffer(data[8 + n + a: 8 + n + b], dtype="<f4").reshape(v["shape"]).astype(np.float64)
    return weights


def write_safetensors(path, tensors):
    header, chunks, offset = {}, [], 0
    for k, v in tensors.items():
        raw = np.ascontiguousarray(v, dtype="<f4").tobytes()
        header[k] = {"dtype": "F32", "shape": list(v.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)) + encoded + b"".join(chunks))


def same_pad(x, k, s):
    _, _, h, w = x.shape
    def amounts(n):
        out = -(-n // s)
        total = max((out - 1) * s + k - n, 0)
        return total // 2, total - total // 2
    (t, b), (l, r) = amounts(h), amounts(w)
    return np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)))


def conv(x, w, s, groups=1):
    """x: (N, C, H, W); w: (O, C/groups, k, k); TF SAME padding."""
    k = w.shape[-1]
    x = same_pad(x, k, s)
    n, c, h, wd = x.shape
    oh, ow = (h - k) // s + 1, (wd - k) // s + 1
    o = w.shape[0]
    out = np.zeros((n, o, oh, ow))
    if groups == 1:
        for ky in range(k):
            for kx in range(k):
                patch = x[:, :, ky: ky + s * oh: s, kx: kx + s * ow: s]        # (N, C, oh, ow)
                out += np.einsum("nchw,oc->nohw", patch, w[:, :, ky, kx])
    else:  # depthwise
        for ky in range(k):
            for kx in range(k):
                patch = x[:, :, ky: ky + s * oh: s, kx: kx + s * ow: s]
                out += patch * w[None, :, 0, ky, kx, None, None]
    return out


def bn(x, p, name):
    g, b, m, v = (p[f"{name}.{s}"] for s in ("weight", "bias", "running_mean", "running_var"))
    return (x - m[None, :, None, None]) / np.sqrt(v[None, :, None, None] + EPS) * g[None, :, None, None] + b[None, :, None, None]


relu6 = lambda x: np.clip(x, 0, 6)


def forward(p, blocks, x):
    """blocks: (expansion, kernel, stride, input, output). Returns (N, cells, C) local vectors."""
    x = relu6(bn(conv(x, p["_conv_stem.weight"], 2), p, "_bn0"))
    for i, (e, k, s, cin, cout) in enumerate(blocks):
        q = f"_blocks.{i}."
        inp = x
        if e != 1:
            x = relu6(bn(conv(x, p[q + "_expand_conv.weight"], 1), p, q + "_bn0"))
        x = relu6(bn(conv(x, p[q + "_depthwise_conv.weight"], s, groups=x.shape[1]), p, q + "_bn1"))
        x = bn(conv(x, p[q + "_project_conv.weight"], 1), p, q + "_bn2")
        if s == 1 and cin == cout:
            x = x + inp
    x = relu6(bn(conv(x, p["_conv_head.weight"], 1), p, "_bn1"))
    n, c, h, w = x.shape
    return x.reshape(n, c, h * w).transpose(0, 2, 1)


def preprocess(img, size):
    img = img.convert("RGB").resize((size, size), Image.BICUBIC)
    a = np.asarray(img, dtype=np.float32) / np.float32(255.)
    return ((a - np.float32(0.498)) / np.float32(0.502)).transpose(2, 0, 1).astype(np.float64)


def stages(spec):
    out = []
    for r, k, s, e, i, o in spec:
        for j in range(r):
            out.append((e, k, s if j == 0 else 1, i if j == 0 else o, o))
    return out


LITE0 = stages([(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
                (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)])
# Tiny: every layer kind, stride 2 on odd sizes (asymmetric padding), k3 and k5, channel counts
# that are not multiples of 16, residuals and a non-residual stride-1 block.
TINY_STAGES = [(1, 3, 1, 1, 8, 8), (2, 3, 2, 3, 8, 12), (2, 5, 2, 2, 12, 20), (1, 3, 1, 4, 20, 24)]
TINY = stages(TINY_STAGES)
TINY_SIZE, TINY_STEM, TINY_HEAD = 37, 8, 40


def check_against_reference(weights_path, flickr):
    p = read_safetensors(weights_path)
    ref = f"{flickr}/reference-dev100"
    ids = open(f"{ref}/image_ids.txt").read().split()
    G = np.load(f"{ref}/ims_global.npy"); L = np.load(f"{ref}/ims_local.npy").astype(np.float64)
    for j in (0, 1):
        loc = forward(p, LITE0, preprocess(Image.open(f"{flickr}/images/{ids[j]}"), 224)[None])[0]
        glob = loc.mean(0)
        cg = glob @ G[j] / np.linalg.norm(glob) / np.linalg.norm(G[j])
        cl = (np.sum(loc * L[j], 1) / np.linalg.norm(loc, axis=1) / np.linalg.norm(L[j], axis=1)).min()
        print(f"numpy vs reference on {ids[j]}: global cosine {cg:.7f}, worst local {cl:.6f}")
        assert cg >= 0.9999 and cl >= 0.999


def tiny_weights(rng):
    p = {}
    def conv_w(name, o, c, k):
        p[name] = rng.normal(0, (2.0 / (c * k * k)) ** 0.5, (o, c, k, k))
    def bn_w(name, c):
        p[name + ".weight"] = rng.uniform(0.5, 1.5, c); p[name + ".bias"] = rng.normal(0, 0.2, c)
        p[name + ".running_mean"] = rng.normal(0, 0.2, c); p[name + ".running_var"] = rng.uniform(0.3, 2.0, c)
    conv_w("_conv_stem.weight", TINY_STEM, 3, 3); bn_w("_bn0", TINY_STEM)
    for i, (e, k, s, cin, cout) in enumerate(TINY):
        q = f"_blocks.{i}."
        mid = cin * e
        if e != 1:
            conv_w(q + "_expand_conv.weight", mid, cin, 1); bn_w(q + "_bn0", mid)
        conv_w(q + "_depthwise_conv.weight", mid, 1, k); bn_w(q + "_bn1", mid)
        conv_w(q + "_project_conv.weight", cout, mid, 1); bn_w(q + "_bn2", cout)
    conv_w("_conv_head.weight", TINY_HEAD, TINY[-1][4], 1); bn_w("_bn1", TINY_HEAD)
    return {k: v.astype(np.float32).astype(np.float64) for k, v in p.items()}


def main(weights_path, flickr):
    check_against_reference(weights_path, flickr)
    rng = np.random.default_rng(20261202)
    p = tiny_weights(rng)
    write_safetensors(f"{OUT}/tiny_lite.safetensors", p)
    # Inputs: a smooth gradient with texture at 37x37 (no resize), 50x29 (downscale in x, upscale in y),
    # 16x80; all encoded through PIL's resize to 37x37.
    images = []
    for (w, h) in [(37, 37), (50, 29), (16, 80)]:
        yy, xx = np.mgrid[0:h, 0:w]
        a = np.stack([(xx * 255 // max(w - 1, 1)), (yy * 255 // max(h - 1, 1)), rng.integers(0, 256, (h, w))], -1)
        images.append(a.astype(np.uint8))
    x = np.stack([preprocess(Image.fromarray(a), TINY_SIZE) for a in images])
    loc = forward(p, TINY, x)
    resizes = []
    targets = [(0, 9, 7), (1, 64, 40), (2, 61, 100), (1, 37, 37), (2, 37, 37), (2, 20, 33)]
    for source, w, h in targets:
        r = np.asarray(Image.fromarray(images[source]).resize((w, h), Image.BICUBIC))
        resizes.append({"source": source, "width": w, "height": h, "pixels": r.reshape(-1).tolist()})
    fixture = {
        "architecture": {"stages": TINY_STAGES, "stem": TINY_STEM, "head": TINY_HEAD, "image_size": TINY_SIZE},
        "images": [{"width": int(a.shape[1]), "height": int(a.shape[0]), "pixels": a.reshape(-1).tolist()} for a in images],
        "resized": resizes,
        "local": [l.astype(np.float32).reshape(-1).tolist() for l in loc],
        "global": [l.mean(0).astype(np.float32).tolist() for l in loc],
        "cells": int(loc.shape[1]), "channels": int(loc.shape[2]),
    }
    json.dump(fixture, open(f"{OUT}/image_fixture.json", "w"))
    print(f"wrote {OUT}: {len(images)} images, {loc.shape[1]} cells x {loc.shape[2]} channels")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
