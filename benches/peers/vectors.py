"""Rows 3 and 5 peers: HNSW build time and queries/s against recall@10 on the vectors written
by vecdata.py, for faiss-cpu (IndexHNSWFlat, inner product) and hnswlib (space "ip"), with the
M and ef_construction our index uses.

Build uses --threads threads. Queries: for each ef of --efs, all queries in one call with one
thread (no Python loop in the timing), recall@10 against the exact top-10; then the smallest
ef reaching --target recall is measured again with --threads threads.

With --save PATH the built index is written there; with --load PATH a saved index is searched
instead of building one (no build row), so repeated search sweeps can share one build.

Usage: vectors.py --impl faiss|hnswlib --data-dir DIR --n N --threads T --efs 16,32,...
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np

from common import emit, log


def recall(found, truth):
    hits = sum(len(set(f[f >= 0]) & set(t)) for f, t in zip(found, truth))
    return hits / truth.size


class Faiss:
    def __init__(self, dim, m, efc):
        import faiss

        self.faiss = faiss
        self.index = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = efc

    def build(self, base, threads):
        self.faiss.omp_set_num_threads(threads)
        self.index.add(base)

    def save(self, path):
        self.faiss.write_index(self.index, str(path))

    def load(self, path):
        self.index = self.faiss.read_index(str(path))

    def search(self, queries, k, ef, threads):
        self.faiss.omp_set_num_threads(threads)
        self.index.hnsw.efSearch = ef
        return self.index.search(queries, k)[1]

    @staticmethod
    def version():
        import faiss

        return faiss.__version__


class Hnswlib:
    def __init__(self, dim, m, efc):
        import hnswlib

        self.index = hnswlib.Index(space="ip", dim=dim)
        self.m, self.efc = m, efc

    def build(self, base, threads):
        self.index.init_index(max_elements=len(base), ef_construction=self.efc, M=self.m,
                              random_seed=100)
        self.index.add_items(base, np.arange(len(base)), num_threads=threads)

    def save(self, path):
        self.index.save_index(str(path))

    def load(self, path):
        self.index.load_index(str(path))

    def search(self, queries, k, ef, threads):
        self.index.set_ef(ef)
        return self.index.knn_query(queries, k=k, num_threads=threads)[0].astype(np.int64)

    @staticmethod
    def version():
        from importlib.metadata import version

        return version("hnswlib")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--impl", choices=["faiss", "hnswlib"], required=True)
    ap.add_argument("--data-dir", required=True, type=Path)
    ap.add_argument("--n", required=True, type=int)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--efs", default="16,20,24,28,32,40,48,56,64,72,80,96,112,128,160,192,224,256,320,384,512")
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--ef-construction", type=int, default=200)
    ap.add_argument("--target", type=float, default=0.95)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--save", type=Path)
    ap.add_argument("--load", type=Path)
    a = ap.parse_args()
    meta = json.loads((a.data_dir / "meta.json").read_text())
    dim = meta["dim"]
    base = np.fromfile(a.data_dir / "base.f32", "<f4", count=a.n * dim).reshape(a.n, dim)
    queries = np.fromfile(a.data_dir / "queries.f32", "<f4").reshape(-1, dim)
    truth = np.fromfile(a.data_dir / f"gt-{a.n}.i32", "<i4").reshape(len(queries), -1)[:, :a.k]
    impl = {"faiss": Faiss, "hnswlib": Hnswlib}[a.impl](dim, a.m, a.ef_construction)
    common = dict(row="vectors", impl=a.impl, n=a.n, dim=dim, m=a.m,
                  ef_construction=a.ef_construction, version=impl.version())
    if a.load:
        impl.load(a.load)
    else:
        start = time.perf_counter()
        impl.build(base, a.threads)
        build_s = time.perf_counter() - start
        emit(**common, what="build", threads=a.threads, seconds=build_s)
        log(f"{a.impl} n={a.n}: build {build_s:.1f}s")
        if a.save:
            impl.save(a.save)
    chosen = None
    for ef in (int(e) for e in a.efs.split(",")):
        impl.search(queries[:10], a.k, ef, 1)  # warm-up
        start = time.perf_counter()
        found = impl.search(queries, a.k, ef, 1)
        secs = time.perf_counter() - start
        r = recall(found, truth)
        emit(**common, what="search", threads=1, ef=ef, recall=r, qps=len(queries) / secs)
        log(f"{a.impl} n={a.n} ef={ef}: recall {r:.4f}, {len(queries) / secs:.0f} q/s")
        if r >= a.target:
            chosen = ef
            break
    if chosen is not None and a.threads > 1:
        start = time.perf_counter()
        found = impl.search(queries, a.k, chosen, a.threads)
        secs = time.perf_counter() - start
        emit(**common, what="search", threads=a.threads, ef=chosen,
             recall=recall(found, truth), qps=len(queries) / secs)


if __name__ == "__main__":
    main()
