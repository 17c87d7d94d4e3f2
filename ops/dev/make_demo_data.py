#!/usr/bin/env python3
"""Cuts the demo set in data/demo/ from the shared Flickr8k photographs (see data/README.md).

The 80 photographs of the earlier feature demo (every 10th image of the retired flickr8k-800
set, listed in data/demo/captions.tsv's order), copied as they are (224 x 224 JPEG), with their
five captions each from the shared set's captions.tsv; the last ten photos are dev.
Usage: python3 ops/dev/make_demo_data.py ../shared/data/flickr8k data/demo IMAGE_LIST
(IMAGE_LIST: one file name per line, the photos to take, in order)
"""
import os, shutil, sys

source, target, listing = sys.argv[1], sys.argv[2], sys.argv[3]
names = [line.strip() for line in open(listing, encoding="utf-8") if line.strip()]
rows = [line.rstrip("\n").split("\t") for line in open(os.path.join(source, "captions.tsv"), encoding="utf-8")][1:]
captions = {}
for image, _split, caption in rows:
    captions.setdefault(image, []).append(caption)
os.makedirs(os.path.join(target, "images"), exist_ok=True)
with open(os.path.join(target, "captions.tsv"), "w", encoding="utf-8") as out:
    out.write("image\tsplit\tcaption\n")
    for index, name in enumerate(names):
        shutil.copyfile(os.path.join(source, "images", name), os.path.join(target, "images", name))
        split = "dev" if index >= len(names) - 10 else "train"
        for caption in captions[name]:
            out.write(f"{name}\t{split}\t{caption}\n")
print(f"{len(names)} photos, {sum(len(captions[n]) for n in names)} captions -> {target}")
