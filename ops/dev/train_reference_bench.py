"""The PyTorch reference for `amber bench train --reference PYTHON`: Amber's matching model and its
training step written in PyTorch the way a PyTorch user would write them (torch ops, autograd,
torch.optim.AdamW), on inputs of the same shapes, batch, joint dimension and thread count, timed
as Amber times itself (median of the timed steps after 3 warm-up steps).

What one step does, as in Amber (Sources/AmberModel, Sources/AmberTrain/MatchingTrainer.swift):
  encoders  F = L W_l + b_l (fragment dropout 0.2, at least two kept), h = g W_g + b_g,
            l = 0.8 max2(F) + 0.2 attention(F; cos(F, h)), z = sigmoid([l; h] W_z + b_z),
            f = norm(z * norm(l) + (1 - z) * norm(h))
  triplet   bidirectional hinge, margin 0.2, pairs of one image not negatives
            (triplet-only: hardest negative; full: all negatives, as in the first 200 steps)
  graph     top-k (k = B/2) adjacency per block (exp(-distance) within, positive cosine across),
            two modality GCN layers and a joint one, residual + ReLU; triplet on the enhanced
            vectors and on their mixes with the plain ones (weight 0.5)
  prototype 64 prototypes, Sinkhorn-Knopp codes (eps 0.1, 3 iterations, double), swapped
            prediction at temperature 0.1 (weight 0.2)
  memory    momentum encoder (EMA 0.999) keys, two queues of 2,048 with same-image entries
            excluded and same-prototype entries down-weighted 0.5, InfoNCE at 0.07 (weight 0.5)
  then      gradient norm clipped at 2, AdamW (lr 5e-4, weight decay 1e-4), EMA, enqueue.

Set-up: ref-venv/bin/pip install "torch==2.13.0+cpu"
Usage: train_reference_bench.py BATCH DIMENSION STEPS THREADS
"""
import statistics
import sys
import time

import torch
import torch.nn.functional as F

B, D, STEPS, THREADS = (int(a) for a in sys.argv[1:5])
torch.set_num_threads(THREADS)
torch.manual_seed(1)


class Encoder(torch.nn.Module):
    def __init__(self, global_dim, fragment_dim, d):
        super().__init__()
        self.fragment = torch.nn.Linear(fragment_dim, d)
        self.glob = torch.nn.Linear(global_dim, d)
        self.gate = torch.nn.Linear(2 * d, d)

    def forward(self, g, frags, valid):
        # valid: [B, n] bool
        fr = self.fragment(frags)                                   # [B, n, D]
        h = self.glob(g)                                            # [B, D]
        neg = (~valid).unsqueeze(-1) * -1e9
        max2 = (fr + neg).topk(2, dim=1).values.mean(dim=1)
        cos = torch.bmm(F.normalize(fr, dim=-1), F.normalize(h, dim=-1).unsqueeze(-1))   # [B, n, 1]
        w = torch.softmax(cos + neg, dim=1)
        att = torch.bmm(w.transpose(1, 2), fr).squeeze(1)
        local = 0.8 * max2 + 0.2 * att
        z = torch.sigmoid(self.gate(torch.cat([local, h], dim=1)))
        ul, ug = F.normalize(local, dim=-1), F.normalize(h, dim=-1)
        return local, F.normalize(z * ul + (1 - z) * ug, dim=-1)


class Model(torch.nn.Module):
    def __init__(self, d):
        super().__init__()
        self.image = Encoder(1280, 1280, d)
        self.text = Encoder(384, 384, d)


class Graph(torch.nn.Module):
    def __init__(self, d):
        super().__init__()
        self.wi = torch.nn.Linear(d, d, bias=False)
        self.wt = torch.nn.Linear(d, d, bias=False)
        self.wj = torch.nn.Linear(d, d, bias=False)

    @staticmethod
    def adjacency(x_i, x_t):
        with torch.no_grad():
            n = x_i.shape[0]
            x = torch.cat([x_i, x_t], 0)
            u = F.normalize(x, dim=-1)
            dist = torch.cdist(x, x)
            a = torch.empty(2 * n, 2 * n)
            a[:n, :n] = torch.exp(-dist[:n, :n])
            a[n:, n:] = torch.exp(-dist[n:, n:])
            cross = (u[:n] @ u[n:].T).clamp(min=0)
            a[:n, n:] = cross
            a[n:, :n] = cross.T
            a.fill_diagonal_(float("-inf"))
            k = max(n // 2, 1)
            out = torch.zeros_like(a)
            for rows in (slice(0, n), slice(n, 2 * n)):
                for cols in (slice(0, n), slice(n, 2 * n)):
                    block = a[rows, cols]
                    values, index = block.topk(k, dim=1)
                    target = torch.zeros_like(block)
                    target.scatter_(1, index, values.clamp(min=0))
                    out[rows, cols] = target
            return out

    def forward(self, x_i, x_t):
        n = x_i.shape[0]
        a = self.adjacency(x_i, x_t)
        rn = lambda m: m / (m.sum(1, keepdim=True) + 1e-12)
        hi = x_i + torch.relu(self.wi(rn(a[:n, :n]) @ x_i))
        ht = x_t + torch.relu(self.wt(rn(a[n:, n:]) @ x_t))
        h = torch.cat([hi, ht], 0)
        g = h + torch.relu(self.wj(rn(a) @ h))
        return g[:n], g[n:]


def triplet(scores, image_ids, hardest, margin=0.2):
    same = image_ids.unsqueeze(0) == image_ids.unsqueeze(1)
    diag = scores.diagonal().unsqueeze(1)
    i2t = (scores + margin - diag).clamp(min=0).masked_fill(same, 0)
    t2i = (scores + margin - diag.T).clamp(min=0).masked_fill(same, 0)
    if hardest:
        return (i2t.max(1).values.sum() + t2i.max(0).values.sum()) / scores.shape[0]
    return (i2t.sum() + t2i.sum()) / scores.shape[0]


@torch.no_grad()
def sinkhorn(scores, eps=0.1, iterations=3):
    q = torch.exp((scores.double() - scores.max()) / eps)
    q /= q.sum()
    n, k = q.shape
    for _ in range(iterations):
        q /= q.sum(0, keepdim=True) * k
        q /= q.sum(1, keepdim=True) * n
    return (q * n).float()


def prototype_loss(protos, fi, ft, tau=0.1):
    c = F.normalize(protos, dim=-1)
    si, st = fi @ c.T, ft @ c.T
    qi, qt = sinkhorn(si.detach()), sinkhorn(st.detach())
    li, lt = torch.log_softmax(si / tau, 1), torch.log_softmax(st / tau, 1)
    loss = ((qt * li).sum() + (qi * lt).sum()) * (-0.5 / fi.shape[0])
    return loss, qi.argmax(1), qt.argmax(1)


class Queue:
    def __init__(self, capacity, d):
        self.keys = torch.zeros(capacity, d)
        self.images = torch.full((capacity,), -1, dtype=torch.long)
        self.protos = torch.full((capacity,), -1, dtype=torch.long)
        self.count, self.head, self.capacity = 0, 0, capacity

    def enqueue(self, keys, images, protos):
        n = keys.shape[0]
        slots = (self.head + torch.arange(n)) % self.capacity
        self.keys[slots], self.images[slots], self.protos[slots] = keys, images, protos
        self.head = (self.head + n) % self.capacity
        self.count = min(self.count + n, self.capacity)


def memory_loss(q, k, queue, q_images, q_protos, tau=0.07, soft_weight=0.5):
    m = queue.keys[:queue.count]
    pos = (q * k).sum(1, keepdim=True)
    neg = q @ m.T
    excluded = q_images.unsqueeze(1) == queue.images[:queue.count].unsqueeze(0)
    soft = (q_protos.unsqueeze(1) == queue.protos[:queue.count].unsqueeze(0)) & (q_protos.unsqueeze(1) >= 0)
    bias = torch.where(excluded, torch.tensor(-1e9), torch.where(soft, torch.tensor(torch.log(torch.tensor(soft_weight)).item() * tau), torch.tensor(0.0)))
    logits = torch.cat([pos, neg + bias], 1) / tau
    return -torch.log_softmax(logits, 1)[:, 0].mean()


def dropout_mask(counts, n, p=0.2):
    valid = torch.zeros(len(counts), n, dtype=torch.bool)
    for b, c in enumerate(counts):
        keep = torch.rand(c) >= p
        if keep.sum() < 2:
            keep[torch.randperm(c)[:2]] = True
        valid[b, :c] = keep
    return valid


# Data of the same shapes as Amber's benchmark: 200 images (1280 + 49 x 1280), 1,000 captions
# (384 + 10..18 x 384), five captions per image.
images_g, images_l = torch.randn(200, 1280), torch.randn(200, 49, 1280)
text_counts = [10 + i % 9 for i in range(1000)]
texts_g, texts_l = torch.randn(1000, 384), torch.randn(1000, 18, 384)


def batch():
    captions = torch.randperm(1000)[:B]
    image_ids = captions // 5
    counts = [text_counts[c] for c in captions.tolist()]
    n = max(counts)
    return (images_g[image_ids], images_l[image_ids], [49] * B, texts_g[captions], texts_l[captions, :n], counts, image_ids)


def timed(step, name):
    for _ in range(3):
        step()
    times = []
    for _ in range(STEPS):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    print(f"PyTorch {name}: step {median * 1000:.1f} ms (median of {STEPS}), {B / median:.0f} pairs/s")


# Triplet only (hardest negative), as `amber bench train`'s first line.
model = Model(D)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)


def triplet_step():
    ig, il, ic, tg, tl, tc, ids = batch()
    _, fi = model.image(ig, il, dropout_mask(ic, il.shape[1]))
    _, ft = model.text(tg, tl, dropout_mask(tc, tl.shape[1]))
    loss = triplet(fi @ ft.T, ids, hardest=True)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 2)
    optimizer.step()


timed(triplet_step, "triplet only")

# The full model.
model, key_model = Model(D), Model(D)
key_model.load_state_dict(model.state_dict())
for p in key_model.parameters():
    p.requires_grad_(False)
graph = Graph(D)
prototypes = torch.nn.Parameter(F.normalize(torch.randn(64, D), dim=-1))
params = list(model.parameters()) + [prototypes] + list(graph.parameters())
optimizer = torch.optim.AdamW(params, lr=5e-4, weight_decay=1e-4)
image_queue, text_queue = Queue(2048, D), Queue(2048, D)


def full_step():
    ig, il, ic, tg, tl, tc, ids = batch()
    li, fi = model.image(ig, il, dropout_mask(ic, il.shape[1]))
    lt, ft = model.text(tg, tl, dropout_mask(tc, tl.shape[1]))
    loss = triplet(fi @ ft.T, ids, hardest=False)
    gi, gt = graph(li, lt)
    gi, gt, ni, nt = F.normalize(gi, dim=-1), F.normalize(gt, dim=-1), F.normalize(li, dim=-1), F.normalize(lt, dim=-1)
    loss = loss + 0.5 * (triplet(gi @ gt.T, ids, False) + 0.5 * (triplet(gi @ nt.T, ids, False) + triplet(ni @ gt.T, ids, False)))
    proto, pi, pt = prototype_loss(prototypes, fi, ft)
    loss = loss + 0.2 * proto
    with torch.no_grad():
        ki = F.normalize(key_model.image(ig, il, torch.arange(il.shape[1]) < 49)[0], dim=-1)
        tvalid = torch.arange(tl.shape[1]).unsqueeze(0) < torch.tensor(tc).unsqueeze(1)
        kt = F.normalize(key_model.text(tg, tl, tvalid)[0], dim=-1)
    if image_queue.count > 0:
        loss = loss + 0.25 * (memory_loss(ni, kt, text_queue, ids, pi) + memory_loss(nt, ki, image_queue, ids, pt))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 2)
    optimizer.step()
    with torch.no_grad():
        for target, source in zip(key_model.parameters(), model.parameters()):
            target.mul_(0.999).add_(source, alpha=0.001)
        c = F.normalize(prototypes, dim=-1)
        image_queue.enqueue(ki, ids, (ki @ c.T).argmax(1))
        text_queue.enqueue(kt, ids, (kt @ c.T).argmax(1))


timed(full_step, "full model (triplet + memory bank + prototypes + graph)")
print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
