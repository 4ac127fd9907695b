#!/usr/bin/env python3
"""Image queries for the nih corpus, many more than the dev set's three: every image of
nih1000/train/ (which the nih corpus, valid/ + test/, does not hold) as an example-image
query, judged by the dev set's rule for image queries (../shared/bench/README.md): a document
is relevant 2 when it has every NIH label of the query image ("No Finding" counting as a
label), 1 when it has some of them, 0 (left out) otherwise.

    python3 tools/make_image_queries.py [--data ../shared/data] [--out DIR] [--splits valid,test]

Writes DIR/queries.jsonl and DIR/qrels.txt (default indexes/image-queries), for
`cxr eval INDEX --queries DIR/queries.jsonl --qrels DIR/qrels.txt --corpus nih`, INDEX holding
the images of --splits (the nih corpus: valid and test). Relevance
comes from NIH's text-mined labels, as in the dev set, not from a reader.
"""
import argparse
import csv
import json
import math
import os

DISCOUNTS = [1 / math.log2(r + 2) for r in range(5)]


def random_ndcg5(gains, n_docs):
    """Expected NDCG@5 of a random ranking: each rank holds a uniformly drawn document, so
    its expected gain is the mean gain over all documents."""
    ideal = sum(g * d for g, d in zip(sorted(gains, reverse=True), DISCOUNTS))
    return sum(gains) / n_docs * sum(DISCOUNTS) / ideal


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--out", default="indexes/image-queries")
    ap.add_argument("--splits", default="valid,test",
                    help="the folders of nih1000 whose images are the documents")
    args = ap.parse_args()

    nih = os.path.join(args.data, "nih1000")
    rows = list(csv.DictReader(open(os.path.join(nih, "labels.csv"), newline="")))
    labels = {r["path"]: set(r["Finding Labels"].split("|")) for r in rows}
    queries = sorted(p for p in labels if p.startswith("train/"))
    splits = tuple(f"{s.strip()}/" for s in args.splits.split(",") if s.strip())
    if "train/" in splits:
        ap.error("train/ holds the query images; it cannot be a document split")
    docs = sorted(p for p in labels if p.startswith(splits))
    stem = lambda p: os.path.splitext(os.path.basename(p))[0]

    os.makedirs(args.out, exist_ok=True)
    judged = 0
    random_sum = 0.0
    with open(os.path.join(args.out, "queries.jsonl"), "w") as q, \
            open(os.path.join(args.out, "qrels.txt"), "w") as r:
        for i, path in enumerate(queries):
            qid = f"img-nih-{i:03d}"
            asked = labels[path]
            rels = []
            for d in docs:
                shared = asked & labels[d]
                if shared:
                    rels.append((stem(d), 2 if shared == asked else 1))
            if not rels:
                continue  # nothing relevant: NDCG is undefined, trec_eval skips it too
            judged += 1
            random_sum += random_ndcg5([g for _, g in rels], len(docs))
            image = os.path.relpath(os.path.join(nih, path), args.out)
            q.write(json.dumps({"id": qid, "corpus": "nih", "group": "image", "image": image}) + "\n")
            for doc, rel in rels:
                r.write(f"{qid} 0 {doc} {rel}\n")
    print(f"{judged} image queries ({len(queries) - judged} without a relevant document) "
          f"over {len(docs)} documents -> {args.out}; expected NDCG@5 of a random ranking: "
          f"{random_sum / judged:.3f}")


if __name__ == "__main__":
    main()
