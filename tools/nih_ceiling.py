#!/usr/bin/env python3
"""What the NIH data of ../shared/data can teach at best: supervised ceilings for issue 3.

A dual encoder trained on text made from these labels (as `cxr train` does) is supervised by
the same labels, and is not expected to beat by much a classifier trained on them directly.
This script trains such classifiers on the NIH train
split (600 images, 64x64) and scores ROC AUC on the test split (200 images) for the five
findings of the zero-shot target (Effusion, Cardiomegaly, Atelectasis, Infiltration, and
No Finding as "normal"):

- `logreg`: L2-regularised logistic regression on 32x32 pixels (standardised), C chosen on the
  valid split;
- `cnn`: a small CNN (4 conv blocks, batch norm, global pooling; 0.1M parameters), multi-label
  BCE, flips/shifts augmentation, AdamW, epochs chosen on the valid split;

each with a learning curve over 150 / 300 / 600 training images and several seeds. Used only to
measure the data's limit; the product's model is trained by `cxr train`.

    pip install -r tools/requirements-ceiling.txt
    python3 tools/nih_ceiling.py --data ../shared/data --out tools/results/nih-ceiling.json
"""

import argparse
import csv
import json
import os
import time

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

FINDINGS = ["Effusion", "Cardiomegaly", "Atelectasis", "Infiltration", "No Finding"]


def load_split(data, split):
    rows = list(csv.DictReader(open(os.path.join(data, "nih1000", "labels.csv"))))
    xs, ys = [], []
    for r in rows:
        if not r["path"].startswith(split + "/"):
            continue
        img = Image.open(os.path.join(data, "nih1000", r["path"])).convert("L")
        img = img.resize((64, 64), Image.BILINEAR)
        xs.append(np.asarray(img, dtype=np.float32) / 255.0)
        labels = set(r["Finding Labels"].split("|"))
        ys.append([1.0 if f in labels else 0.0 for f in FINDINGS])
    return np.stack(xs), np.array(ys, dtype=np.float32)


def auc(scores, labels):
    """ROC AUC by the rank-sum (Mann-Whitney) formula, ties averaged."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels) > 0.5
    pos, neg = labels.sum(), (~labels).sum()
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[labels].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def aucs(scores, ys):
    return [auc(scores[:, k], ys[:, k]) for k in range(len(FINDINGS))]


def logreg(train, valid, test, seed):
    def feats(x):
        t = torch.from_numpy(x)[:, None]
        return nn.functional.avg_pool2d(t, 2).flatten(1)

    xtr, xva, xte = feats(train[0]), feats(valid[0]), feats(test[0])
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    xtr, xva, xte = (xtr - mu) / sd, (xva - mu) / sd, (xte - mu) / sd
    ytr = torch.from_numpy(train[1])
    best = None
    for c in [1e-3, 1e-2, 1e-1, 1.0]:
        torch.manual_seed(seed)
        w = torch.zeros(xtr.shape[1], len(FINDINGS), requires_grad=True)
        b = torch.zeros(len(FINDINGS), requires_grad=True)
        opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = nn.functional.binary_cross_entropy_with_logits(xtr @ w + b, ytr)
            loss = loss + (w * w).sum() / (2 * c * len(xtr))
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            va = np.nanmean(aucs((xva @ w + b).numpy(), valid[1]))
            if best is None or va > best[0]:
                best = (va, c, (xte @ w + b).numpy())
    return aucs(best[2], test[1]), {"C": best[1]}


class SmallCnn(nn.Module):
    def __init__(self):
        super().__init__()
        layers, ch = [], 1
        for out in [16, 32, 64, 96]:
            layers += [
                nn.Conv2d(ch, out, 3, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            ch = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(ch, len(FINDINGS))

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


def augment(x, gen):
    if torch.rand(1, generator=gen).item() < 0.5:
        x = x.flip(3)
    dx, dy = torch.randint(-4, 5, (2,), generator=gen).tolist()
    return torch.roll(x, shifts=(dy, dx), dims=(2, 3))


def cnn(train, valid, test, seed, epochs=40):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    norm = lambda x: (torch.from_numpy(x)[:, None] - 0.5) / 0.25
    xtr, xva, xte = norm(train[0]), norm(valid[0]), norm(test[0])
    ytr = torch.from_numpy(train[1])
    model = SmallCnn()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=3e-3, total_steps=epochs * ((len(xtr) + 31) // 32)
    )
    best = None
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(xtr), generator=gen)
        for i in range(0, len(xtr), 32):
            idx = perm[i : i + 32]
            logits = model(augment(xtr[idx], gen))
            loss = nn.functional.binary_cross_entropy_with_logits(logits, ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            va = np.nanmean(aucs(model(xva).numpy(), valid[1]))
            if best is None or va > best[0]:
                best = (va, epoch + 1, model(xte).numpy())
    return aucs(best[2], test[1]), {"epoch": best[1], "valid_mean_auc": round(best[0], 4)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--out", default="tools/results/nih-ceiling.json")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    train, valid, test = (load_split(args.data, s) for s in ("train", "valid", "test"))
    results = []
    for n in [150, 300, 600]:
        for method, fn in [("logreg", logreg), ("cnn", cnn)]:
            per_seed = []
            for seed in range(args.seeds):
                rng = np.random.default_rng(seed)
                pick = np.sort(rng.choice(len(train[0]), size=n, replace=False))
                sub = (train[0][pick], train[1][pick])
                t0 = time.time()
                test_aucs, chosen = fn(sub, valid, test, seed)
                per_seed.append(test_aucs)
                print(
                    f"{method:6} n={n:3} seed={seed} test AUC "
                    + " ".join(f"{f[:5]}={a:.3f}" for f, a in zip(FINDINGS, test_aucs))
                    + f" mean={np.mean(test_aucs):.3f} {chosen} {time.time() - t0:.0f}s",
                    flush=True,
                )
            arr = np.array(per_seed)
            results.append(
                {
                    "method": method,
                    "train_images": n,
                    "seeds": args.seeds,
                    "test_auc": dict(zip(FINDINGS, arr.mean(0).round(4).tolist())),
                    "mean_test_auc": round(float(arr.mean()), 4),
                    "mean_test_auc_sd_over_seeds": round(float(arr.mean(1).std()), 4),
                }
            )
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(
            {"torch": torch.__version__, "findings": FINDINGS, "results": results}, f, indent=1
        )
    for r in results:
        print(
            f"{r['method']:6} n={r['train_images']:3} mean test AUC "
            f"{r['mean_test_auc']:.3f} ± {r['mean_test_auc_sd_over_seeds']:.3f}"
        )


if __name__ == "__main__":
    main()
