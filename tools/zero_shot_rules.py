#!/usr/bin/env python3
"""The comparisons behind two scoring rules of the engine, from the embeddings `cxr embed`
prints, so that the figures quoted in the README and the model card can be rerun.

`normal`: how an image's score for "normal" (NIH's No Finding) is made from the prompts'
embeddings. Prints the ROC AUC on NIH valid/ and test/ of each rule, per model and averaged
over the models given (the seeds of `tools/seed_spread.sh`). `cxr classify` uses
`ensemble, unit means` (src/classify.rs).

`text-match`: ways of ranking the nih corpus for a text query, tried and not adopted: the
engine's cosine against the query's margin and its finding profile (the dev set's 6 nih text
queries, and one query per NIH label).

`image-match`: how an example image is compared with indexed ones. Every NIH train/ image is
a query over valid/ (where the rule was chosen) and over valid/ + test/, judged as
`tools/make_image_queries.py` judges them; prints mean NDCG@5 and how many distinct documents
fill the queries' top 5. `cxr search --image` uses `margins` (src/search/findings.rs);
`appearance` is `--image-match appearance`.

    pip install -r tools/requirements-rules.txt
    python3 tools/zero_shot_rules.py normal models/default [MORE_MODEL_DIRS...]
    python3 tools/zero_shot_rules.py image-match models/default
    python3 tools/zero_shot_rules.py text-match models/default

CXR=path/to/cxr names the binary (default target/release/cxr, built by cargo build --release).
The prompts are those of src/classify.rs and src/train/vocab.rs, repeated here.
"""

import argparse
import csv
import json
import math
import os
import subprocess

import numpy as np

NORMAL = "no acute cardiopulmonary abnormality"
# The vocabulary's findings other than normal (src/train/vocab.rs, PHRASES).
FINDINGS = [
    "pleural effusion", "cardiomegaly", "atelectasis", "pulmonary infiltrate", "consolidation",
    "pneumonia", "pulmonary edema", "pneumothorax", "lung nodule or mass", "emphysema",
    "pulmonary fibrosis", "pleural thickening", "hiatal hernia", "covid-19 pneumonia",
]
# The single opposite of normal used before the ensemble.
ABNORMAL = "chest x-ray showing an acute abnormality"


def cxr():
    return os.environ.get("CXR", "target/release/cxr")


def embed(model, texts=(), images=()):
    """{text or image path: unit embedding} from `cxr embed`."""
    args = [cxr(), "embed", "--model", model, *images]
    for t in texts:
        args += ["--text", t]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    found = {}
    for line in out.splitlines():
        v = json.loads(line)
        found[v.get("text", v.get("image"))] = np.array(v["embedding"], dtype=np.float64)
    return found


def unit(v):
    return v / np.linalg.norm(v)


def nih(data):
    """(path relative to nih1000, split, label set) of every NIH image."""
    rows = csv.DictReader(open(os.path.join(data, "nih1000", "labels.csv"), newline=""))
    return [(r["path"], r["path"].split("/")[0], frozenset(r["Finding Labels"].split("|")))
            for r in rows]


def image_embeddings(model, data, images):
    root = os.path.join(data, "nih1000")
    e = embed(model, images=[os.path.join(root, p) for p, _, _ in images])
    return np.stack([e[os.path.join(root, p)] for p, _, _ in images])


def prompts(model):
    texts = [NORMAL, ABNORMAL] + FINDINGS + ["no " + f for f in FINDINGS]
    e = embed(model, texts=texts)
    pos = np.stack([e[f] for f in FINDINGS])
    neg = np.stack([e["no " + f] for f in FINDINGS])
    return e, pos, neg


def auc(scores, truth):
    s, y = np.asarray(scores), np.asarray(truth, dtype=bool)
    p, n = s[y], s[~y]
    return ((p[:, None] > n[None, :]).sum() + 0.5 * (p[:, None] == n[None, :]).sum()) / (
        len(p) * len(n))


def normal_rules(e, pos, neg):
    margins = pos - neg
    ens_pos = np.vstack([e[NORMAL][None], neg]).mean(0)
    return {
        "single pair (before)": e[NORMAL] - e[ABNORMAL],
        "normal prompt alone": e[NORMAL],
        "against mean finding phrase": e[NORMAL] - pos.mean(0),
        "minus mean finding margin": -margins.mean(0),
        "single pair + mean margin": e[NORMAL] - e[ABNORMAL] - margins.mean(0),
        "ensemble": ens_pos - pos.mean(0),
        "ensemble, unit means": unit(ens_pos) - unit(pos.mean(0)),
    }, {
        # Not a direction: the largest margin over findings, negated.
        "minus largest finding margin": lambda x: -(x @ margins.T).max(1),
    }


def cmd_normal(args):
    images = nih(args.data)
    table = {}
    for model in args.models:
        e, pos, neg = prompts(model)
        linear, other = normal_rules(e, pos, neg)
        for split in ("valid", "test"):
            chosen = [im for im in images if im[1] == split]
            x = image_embeddings(model, args.data, chosen)
            y = ["No Finding" in labels for _, _, labels in chosen]
            for name, d in linear.items():
                table.setdefault(name, {}).setdefault(split, []).append(auc(x @ d, y))
            for name, f in other.items():
                table.setdefault(name, {}).setdefault(split, []).append(auc(f(x), y))
    print(f"No Finding AUC per model ({', '.join(args.models)}) and mean")
    print(f"{'rule':32s} {'valid':>28s} {'test':>28s}")
    for name, by_split in table.items():
        cells = []
        for split in ("valid", "test"):
            v = by_split[split]
            cells.append(" ".join(f"{a:.3f}" for a in v) + f" | {np.mean(v):.3f}")
        print(f"{name:32s} {cells[0]:>28s} {cells[1]:>28s}")


def ndcg5(order, gains):
    discount = [1 / math.log2(r + 2) for r in range(5)]
    dcg = sum(gains[i] * d for i, d in zip(order[:5], discount))
    ideal = sum(g * d for g, d in zip(sorted(gains, reverse=True), discount))
    return dcg / ideal if ideal > 0 else None


def cmd_image_match(args):
    images = nih(args.data)
    model = args.model
    e, pos, neg = prompts(model)
    x = image_embeddings(model, args.data, images)
    linear, _ = normal_rules(e, pos, neg)
    axes = np.vstack([linear["ensemble, unit means"][None], pos - neg])
    vecs = np.vstack([e[NORMAL][None], pos, neg])  # every prompt, for the subspace rules
    _, _, vt = np.linalg.svd(vecs, full_matrices=False)
    centred = vecs - vecs.mean(0)

    def through(m, normalise=False):
        """Images compared by their coordinates along the rows of m (inner product, or cosine)."""
        def score(q, d):
            a, c = q @ m.T, d @ m.T
            if normalise:
                a = a / np.linalg.norm(a, axis=1, keepdims=True)
                c = c / (np.linalg.norm(c, axis=1, keepdims=True) + 1e-12)
            return a @ c.T
        return score

    rules = {
        "appearance (cosine)": lambda q, d: q @ d.T,
        "projection, top 1": through(vt[:1]),
        "projection, top 2": through(vt[:2]),
        "projection, top 4": through(vt[:4]),
        "projection, all": through(vt),
        "projection, top 2, normalised": through(vt[:2], True),
        "prompt Gram": through(vecs),
        "prompt Gram, centred": through(centred),
        "margins": through(axes),
        "margins, normalised": through(axes, True),
    }
    queries = [i for i, im in enumerate(images) if im[1] == "train"]
    print(f"{'rule':32s} {'-> valid NDCG@5':>16s} {'docs':>5s} {'-> valid+test':>14s} {'docs':>5s}")
    results = {}
    for splits in (("valid",), ("valid", "test")):
        docs = [i for i, im in enumerate(images) if im[1] in splits]
        gains = []
        for q in queries:
            asked = images[q][2]
            gains.append([2 if asked <= images[d][2] else (1 if asked & images[d][2] else 0)
                          for d in docs])
        for name, rule in rules.items():
            s = rule(x[queries], x[docs])
            orders = np.argsort(-s, axis=1, kind="stable")
            vals = [ndcg5(orders[a], gains[a]) for a in range(len(queries))]
            vals = [v for v in vals if v is not None]
            top = len({docs[o] for row in orders for o in row[:5]})
            results.setdefault(name, []).append((np.mean(vals), top))
    for name, ((v1, t1), (v2, t2)) in results.items():
        print(f"{name:32s} {v1:16.3f} {t1:5d} {v2:14.3f} {t2:5d}")
    docs = x[[i for i, im in enumerate(images) if im[1] in ("valid", "test")]]
    cos = (docs @ docs.T)[np.triu_indices(len(docs), 1)]
    print(f"cosine between two valid+test images: mean {cos.mean():.4f}, min {cos.min():.4f}")


def cmd_text_match(args):
    """Text queries ranked three ways over the nih corpus (valid/ + test/): the engine's cosine,
    the margin of the query against "no <query>", and the query's similarity to each finding's
    positive side carried through the margins (as image queries by findings are)."""
    images = nih(args.data)
    model = args.model
    docs = [im for im in images if im[1] in ("valid", "test")]
    stem = lambda p: os.path.splitext(os.path.basename(p))[0]
    ids = [stem(p) for p, _, _ in docs]
    x = image_embeddings(model, args.data, docs)
    bench = args.bench
    qrels = {}
    for line in open(os.path.join(bench, "qrels-dev.txt")):
        q, _, d, r = line.split()
        qrels.setdefault(q, {})[d] = int(r)
    queries = [json.loads(line) for line in open(os.path.join(bench, "queries-dev.jsonl"))]
    sets = {"dev nih text": [(q["text"], qrels.get(q["id"], {})) for q in queries
                             if q["corpus"] == "nih" and "text" in q]}
    # One query per NIH label, its vocabulary phrase, judged by the label.
    label_phrases = {
        "Effusion": "pleural effusion", "Cardiomegaly": "cardiomegaly",
        "Atelectasis": "atelectasis", "Infiltration": "pulmonary infiltrate",
        "Consolidation": "consolidation", "Pneumonia": "pneumonia", "Edema": "pulmonary edema",
        "Pneumothorax": "pneumothorax", "Nodule": "pulmonary nodule", "Mass": "lung mass",
        "Emphysema": "emphysema", "Fibrosis": "pulmonary fibrosis",
        "Pleural_Thickening": "pleural thickening", "Hernia": "hiatal hernia",
        "No Finding": NORMAL,
    }
    sets["NIH labels (14 with a document)"] = [
        (phrase, {ids[i]: 2 for i, (_, _, labels) in enumerate(docs) if label in labels})
        for label, phrase in label_phrases.items()]
    opposite = lambda t: t[3:] if t.startswith("no ") else "no " + t
    texts = sorted({t for qs in sets.values() for t, _ in qs}
                   | {opposite(t) for qs in sets.values() for t, _ in qs})
    e, pos, neg = prompts(model)
    e.update(embed(model, texts=texts))
    linear, _ = normal_rules(e, pos, neg)
    axes = np.vstack([linear["ensemble, unit means"][None], pos - neg])
    positive = np.vstack([unit(np.vstack([e[NORMAL][None], neg]).mean(0))[None], pos])
    rules = {
        "cosine (the engine's)": lambda t: e[t],
        "margin against 'no <query>'": lambda t: e[t] - e[opposite(t)],
        "finding profile via margins": lambda t: axes.T @ (positive @ e[t] - (positive @ e[t]).mean()),
    }
    print(f"{'rule':32s} " + " ".join(f"{name:>32s}" for name in sets))
    for name, rule in rules.items():
        cells = []
        for qs in sets.values():
            vals = []
            for t, rel in qs:
                gains = [rel.get(i, 0) for i in ids]
                if not any(gains):
                    continue
                vals.append(ndcg5(np.argsort(-(x @ rule(t)), kind="stable"), gains))
            cells.append(f"{np.mean(vals):.3f} ({len(vals)})")
        print(f"{name:32s} " + " ".join(f"{c:>32s}" for c in cells))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="../shared/data")
    sub = ap.add_subparsers(dest="cmd", required=True)
    n = sub.add_parser("normal", help="ways of scoring normal (No Finding)")
    n.add_argument("models", nargs="+")
    m = sub.add_parser("image-match", help="ways of comparing an example image")
    m.add_argument("model")
    t = sub.add_parser("text-match", help="ways of ranking images for a text query")
    t.add_argument("model")
    t.add_argument("--bench", default="../shared/bench")
    args = ap.parse_args()
    {"normal": cmd_normal, "image-match": cmd_image_match,
     "text-match": cmd_text_match}[args.cmd](args)


if __name__ == "__main__":
    main()
