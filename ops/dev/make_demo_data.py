#!/usr/bin/env python3
"""Cuts the demo set in data/demo/ from flickr8k-800 (see data/README.md).

Every 10th image (80 images, their 400 captions), same layout and conventions as the source;
the global vectors are stored as float16 like the local ones, to keep the set under 20 MB.
Usage: python3 ops/dev/make_demo_data.py ../shared/data/flickr8k-800 data/demo
"""
import json
import os
import sys

import numpy as np

source, target = sys.argv[1], sys.argv[2]
step = 10
os.makedirs(target, exist_ok=True)
ims_global = np.load(os.path.join(source, "ims_global.npy"))
ims_local = np.load(os.path.join(source, "ims_local.npy"), mmap_mode="r")
caps_global = np.load(os.path.join(source, "caps_global.npy"))
caps_tokens = np.load(os.path.join(source, "caps_tokens.npy"), mmap_mode="r")
offsets = np.load(os.path.join(source, "caps_tok_offsets.npy"))
captions = open(os.path.join(source, "caps.txt"), encoding="utf-8").read().splitlines()
image_ids = open(os.path.join(source, "image_ids.txt"), encoding="utf-8").read().splitlines()

images = list(range(0, len(image_ids), step))
caps = [5 * i + k for i in images for k in range(5)]
np.save(os.path.join(target, "ims_global.npy"), ims_global[images].astype(np.float16))
np.save(os.path.join(target, "ims_local.npy"), np.ascontiguousarray(ims_local[images]).astype(np.float16))
np.save(os.path.join(target, "caps_global.npy"), caps_global[caps].astype(np.float16))
tokens, new_offsets = [], [0]
for c in caps:
    rows = np.asarray(caps_tokens[offsets[c]:offsets[c + 1]], dtype=np.float16)
    tokens.append(rows)
    new_offsets.append(new_offsets[-1] + len(rows))
np.save(os.path.join(target, "caps_tokens.npy"), np.concatenate(tokens))
np.save(os.path.join(target, "caps_tok_offsets.npy"), np.array(new_offsets, dtype=np.int64))
with open(os.path.join(target, "caps.txt"), "w", encoding="utf-8") as out:
    out.write("\n".join(captions[c] for c in caps) + "\n")
with open(os.path.join(target, "image_ids.txt"), "w", encoding="utf-8") as out:
    out.write("\n".join(image_ids[i] for i in images) + "\n")
meta = json.load(open(os.path.join(source, "meta.json"), encoding="utf-8"))
meta.update({"n_images": len(images), "n_captions": len(caps),
             "cut_from": "flickr8k-800, every %dth image (positions 0, %d, ..., %d) with its 5 captions; global vectors as float16" % (step, step, images[-1])})
with open(os.path.join(target, "meta.json"), "w", encoding="utf-8") as out:
    json.dump(meta, out, indent=1)
    out.write("\n")
