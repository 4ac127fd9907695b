#!/usr/bin/env python3
"""Regenerate tests/fixtures/eval/: qrels, runs and the metric values trec_eval computes for them.

Why: `cxr eval` must give the numbers trec_eval gives (tests/eval_trec.rs checks it). The expected
values come from trec_eval's own C code (trec_eval 9.0.8 as bundled by the PyPI package
pytrec-eval-terrier, pinned in tools/requirements-eval.txt), never from a re-implementation.

Two fixtures:

- hand: a small qrels + run made to hit the corners: score ties (broken by docid in decreasing
  byte order, so `d9` before `d10`), a rank column that disagrees with the scores (ignored),
  scores equal only in single precision, -0 vs 0, unjudged documents, graded relevance 0/1/2,
  a negative qrels value, a query with fewer than 5 retrieved, a query with no relevant document,
  a judged query with no run lines, and a run query absent from the qrels.
  hand-run-dup.txt adds repeated docids: trec_eval refuses such a run ("duplicate docs", see its
  form_res_rels.c) and pytrec_eval cannot even represent one (a dict per query), so its expected
  values are trec_eval's on the run with each docid kept at its highest score, which is what our
  metric functions do with a repeated docid.
- dev: a seeded random run over the real dev qrels (../shared/bench/qrels-dev.txt, read in place
  by the test, which skips when shared/ is absent): per query up to 20 judged docids, 8 docids judged
  only for other queries of the same corpus (unjudged here), two-decimal scores (so some tie) and
  a few forced ties, in shuffled file order with the rank column numbering that order.

Run files are named *-run*.txt because the repository's .gitignore ignores *.run.

Usage, from the repository root:
    python3 -m venv .venv-eval && .venv-eval/bin/pip install -r tools/requirements-eval.txt
    .venv-eval/bin/python tools/make_trec_fixture.py
"""

from __future__ import annotations

import argparse
import json
import random
from collections import defaultdict
from importlib import metadata
from pathlib import Path

import pytrec_eval

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests" / "fixtures" / "eval"
BENCH = REPO.parent / "shared" / "bench"
MEASURES = {"ndcg_cut.5", "ndcg_cut.10", "P.5", "P.10"}
SEED = 20240917

HAND_QRELS = """\
h-ties 0 d1 1
h-ties 0 d10 0
h-ties 0 d9 2
h-ties 0 d2 1
h-ties 0 x 2
h-graded 0 a 2
h-graded 0 b 1
h-graded 0 c 0
h-graded 0 d 2
h-graded 0 e 1
h-graded 0 f 2
h-graded 0 g 1
h-unjudged 0 r1 1
h-unjudged 0 r2 1
h-unjudged 0 r3 2
h-short 0 p 2
h-short 0 q 1
h-short 0 s 1
h-norel 0 n1 0
h-norel 0 n2 0
h-neg 0 k1 -1
h-neg 0 k2 1
h-f32 0 a 1
h-f32 0 b 0
h-zero 0 m 1
h-zero 0 z 2
h-many 0 r06 1
h-many 0 r07 2
h-many 0 r08 0
h-many 0 r09 1
h-many 0 r11 2
h-many 0 r12 2
h-dup 0 a 2
h-dup 0 b 1
h-dup 0 c 0
h-empty 0 m 1
h-empty 0 n 2
"""

# Rank column deliberately wrong in places: trec_eval orders by score alone.
HAND_RUN = """\
# hand-made run for tests/eval_trec.rs; comments and blank lines are allowed
h-ties Q0 d1 1 1.0 hand
h-ties Q0 d2 2 1.0 hand
h-ties Q0 d9 3 1.0 hand
h-ties Q0 d10 4 1.0 hand
h-ties Q0 a 5 1.0 hand
h-ties Q0 top 6 2.5 hand

h-graded Q0 c 1 12 hand
h-graded Q0 e 2 11 hand
h-graded Q0 u1 3 10 hand
h-graded Q0 a 4 9 hand
h-graded Q0 b 5 8 hand
h-graded Q0 u2 6 7 hand
h-graded Q0 d 7 6 hand
h-graded Q0 u3 8 5 hand
h-graded Q0 u4 9 4 hand
h-graded Q0 u5 10 3 hand
h-graded Q0 f 11 2 hand
h-graded Q0 g 12 1 hand
h-unjudged Q0 u1 1 0.9 hand
h-unjudged Q0 u2 2 0.8 hand
h-unjudged Q0 r1 3 0.7 hand
h-unjudged Q0 u3 4 0.6 hand
h-unjudged Q0 r2 5 0.5 hand
h-unjudged Q0 u4 6 0.4 hand
h-unjudged Q0 r3 7 0.3 hand
h-short Q0 q 1 5 hand
h-short Q0 zz 2 4 hand
h-norel Q0 n1 1 3 hand
h-norel Q0 n2 2 2 hand
h-norel Q0 n3 3 1 hand
h-neg Q0 k1 1 2 hand
h-neg Q0 k2 2 1 hand
h-f32 Q0 a 1 0.30000001 hand
h-f32 Q0 b 2 0.3 hand
h-zero Q0 m 1 0 hand
h-zero Q0 z 2 -0 hand
h-zero Q0 y 3 -1e-3 hand
h-zero Q0 w 4 1e-3 hand
h-many Q0 n01 1 -1 hand
h-many Q0 n02 2 -2 hand
h-many Q0 n03 3 -3 hand
h-many Q0 n04 4 -4 hand
h-many Q0 n05 5 -5 hand
h-many Q0 r06 6 -6 hand
h-many Q0 r07 7 -7 hand
h-many Q0 r08 8 -8 hand
h-many Q0 r09 9 -9 hand
h-many Q0 n10 10 -10 hand
h-many Q0 r11 11 -11 hand
h-many Q0 r12 12 -12 hand
h-many Q0 n13 13 -13 hand
h-dup Q0 c 1 0.9 hand
h-dup Q0 a 2 0.5 hand
h-dup Q0 b 3 0.4 hand
h-not-judged Q0 a 1 1 hand
"""

# Appended to HAND_RUN for hand-run-dup.txt: `a` again, higher (it moves to the top), `c` again,
# lower (ignored), and `b` twice at the same score.
HAND_DUP_EXTRA = """\
h-dup Q0 a 4 0.95 hand
h-dup Q0 c 5 0.1 hand
h-dup Q0 b 6 0.4 hand
"""

# Judged queries with no run line: trec_eval skips them (without -c); pytrec_eval evaluates them
# when given an empty ranking, which is how `cxr eval` treats a query whose search found nothing.
EMPTY_RUN_QUERIES = ["h-empty"]


def parse_qrels(text: str) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    for line in text.splitlines():
        if not line.strip():
            continue
        qid, _, docid, rel = line.split()
        assert docid not in qrels[qid], f"duplicate qrels line {line!r}"
        qrels[qid][docid] = int(rel)
    return dict(qrels)


def parse_run(text: str, keep_best_duplicate: bool = False) -> dict[str, dict[str, float]]:
    run: dict[str, dict[str, float]] = defaultdict(dict)
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        qid, _, docid, _, score, _ = line.split()[:6]
        value = float(score)
        if docid in run[qid]:
            assert keep_best_duplicate, f"duplicate run line {line!r}"
            # trec_eval would refuse the file; keep the best-placed occurrence.
            value = max(value, run[qid][docid])
        run[qid][docid] = value
    return dict(run)


def evaluate(qrels, run, empty_queries=()) -> dict:
    run = dict(run)
    for qid in empty_queries:
        assert qid not in run
        run[qid] = {}
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, MEASURES)
    per_query = evaluator.evaluate(run)
    names = sorted(next(iter(per_query.values())).keys())
    queries = {qid: {m: per_query[qid][m] for m in names} for qid in sorted(per_query)}
    mean = {m: sum(q[m] for q in queries.values()) / len(queries) for m in names}
    return {"queries": queries, "mean": mean}


def write_expected(path: Path, result: dict, note: str) -> None:
    doc = {
        "generator": "tools/make_trec_fixture.py",
        "trec_eval": "trec_eval 9.0.8 via pytrec_eval-terrier "
        + metadata.version("pytrec_eval-terrier"),
        "note": note,
        **result,
    }
    path.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")


def make_hand() -> None:
    (OUT / "hand-qrels.txt").write_text(HAND_QRELS)
    (OUT / "hand-run.txt").write_text(HAND_RUN)
    (OUT / "hand-run-dup.txt").write_text(HAND_RUN + HAND_DUP_EXTRA)
    qrels = parse_qrels(HAND_QRELS)
    write_expected(
        OUT / "hand-expected.json",
        evaluate(qrels, parse_run(HAND_RUN), EMPTY_RUN_QUERIES),
        "per query: queries in both run and qrels, plus h-empty evaluated with an empty ranking",
    )
    write_expected(
        OUT / "hand-dup-expected.json",
        evaluate(qrels, parse_run(HAND_RUN + HAND_DUP_EXTRA, keep_best_duplicate=True),
                 EMPTY_RUN_QUERIES),
        "trec_eval refuses hand-run-dup.txt; these are its values with each repeated docid "
        "kept at its highest score",
    )


def make_dev(bench: Path) -> None:
    # The qrels and queries stay in ../shared/bench; the test reads them in place.
    text = (bench / "qrels-dev.txt").read_text()
    qrels = parse_qrels(text)
    rng = random.Random(SEED)
    corpus_of = {qid: qid.split("-")[1] for qid in qrels}
    lines = []
    for qid in sorted(qrels):
        judged = sorted(qrels[qid])
        picked = rng.sample(judged, min(20, len(judged)))
        others = sorted(
            {d for o in qrels if corpus_of[o] == corpus_of[qid] and o != qid for d in qrels[o]}
            - set(judged)
        )
        picked += rng.sample(others, min(8, len(others)))
        scores = [round(rng.random(), 2) for _ in picked]
        for i in rng.sample(range(1, len(picked)), 3):
            scores[i] = scores[i - 1]  # forced ties
        rows = list(zip(picked, scores))
        rng.shuffle(rows)
        for rank, (docid, score) in enumerate(rows, start=1):
            lines.append(f"{qid} Q0 {docid} {rank} {score!r} seeded\n")
    run_text = "".join(lines)
    (OUT / "dev-run.txt").write_text(run_text)
    write_expected(
        OUT / "dev-expected.json",
        evaluate(qrels, parse_run(run_text)),
        f"seeded random run (seed {SEED}) over the dev qrels",
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench", type=Path, default=BENCH,
                    help="folder with queries-dev.jsonl and qrels-dev.txt (default: ../shared/bench)")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    make_hand()
    make_dev(args.bench)
    print(f"wrote {', '.join(sorted(p.name for p in OUT.iterdir()))}")


if __name__ == "__main__":
    main()
