"""Generates the vector-search data that our bench and the peers both read.

Clustered unit vectors of dimension --dim, seeded: 1,000 cluster centres ~ N(0, I); a point is
its centre plus a spread in a shared 32-dimensional subspace (embeddings of real models have a
low intrinsic dimension) plus a little isotropic noise, L2-normalised. Queries come from the
same distribution with another seed. Writes, under --out-dir:

  base.f32       --n-max rows of dim little-endian f32 (smaller sizes read a prefix)
  queries.f32    --queries rows
  gt-<n>.i32     for each size n: the exact top-10 (inner product) of each query among the
                 first n base rows, best first
  meta.json      what was generated

Usage: vecdata.py --out-dir DIR --sizes 10000,100000 [--dim 256] [--queries 1000] [--seed 0]
"""

import argparse
import json
from pathlib import Path

import numpy as np

from common import log

CLUSTERS, LATENT, K = 1000, 32, 10


def points(rng, centres, basis, n):
    c = rng.integers(0, len(centres), n)
    x = centres[c] + 0.9 * (rng.standard_normal((n, LATENT), dtype=np.float32) @ basis)
    x += 0.15 * rng.standard_normal(x.shape, dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def exact_top_k(base_path, dim, n, queries, chunk=50_000):
    best_s = np.full((len(queries), K), -np.inf, np.float32)
    best_i = np.zeros((len(queries), K), np.int64)
    base = np.memmap(base_path, dtype="<f4", mode="r", shape=(n, dim))
    for start in range(0, n, chunk):
        block = np.asarray(base[start:start + chunk])
        s = queries @ block.T
        i = np.argpartition(-s, K - 1, axis=1)[:, :K]
        cand_s = np.concatenate([best_s, np.take_along_axis(s, i, 1)], 1)
        cand_i = np.concatenate([best_i, i + start], 1)
        top = np.argsort(-cand_s, axis=1, kind="stable")[:, :K]
        best_s = np.take_along_axis(cand_s, top, 1)
        best_i = np.take_along_axis(cand_i, top, 1)
    return best_i.astype(np.int32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out-dir", required=True, type=Path)
    ap.add_argument("--sizes", required=True)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    sizes = sorted(int(s) for s in a.sizes.split(","))
    meta = dict(dim=a.dim, n_max=sizes[-1], queries=a.queries, seed=a.seed, sizes=sizes,
                clusters=CLUSTERS, latent=LATENT, k=K)
    a.out_dir.mkdir(parents=True, exist_ok=True)
    meta_path = a.out_dir / "meta.json"
    if meta_path.exists() and json.loads(meta_path.read_text()) == meta:
        log(f"vector data in {a.out_dir} is up to date")
        return
    rng = np.random.default_rng(a.seed)
    centres = rng.standard_normal((CLUSTERS, a.dim), dtype=np.float32)
    basis = rng.standard_normal((LATENT, a.dim), dtype=np.float32)
    with open(a.out_dir / "base.f32", "wb") as f:
        step = 100_000
        for start in range(0, sizes[-1], step):
            points(rng, centres, basis, min(step, sizes[-1] - start)).astype("<f4").tofile(f)
    queries = points(np.random.default_rng(a.seed + 1), centres, basis, a.queries)
    queries.astype("<f4").tofile(a.out_dir / "queries.f32")
    for n in sizes:
        exact_top_k(a.out_dir / "base.f32", a.dim, n, queries).astype("<i4").tofile(
            a.out_dir / f"gt-{n}.i32")
        log(f"exact top-{K} for {n} vectors written")
    meta_path.write_text(json.dumps(meta) + "\n")


if __name__ == "__main__":
    main()
