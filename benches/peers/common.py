"""Helpers shared by the Python peers: JSON lines on stdout, timing, raw .f32 files."""

import json
import sys
import time

import numpy as np


def emit(**fields):
    """Prints one JSON object as a line (what benches/collect.py reads)."""
    print(json.dumps(fields), flush=True)


def repeat_for(seconds, min_iters, fn):
    """Calls fn until `seconds` have passed and at least `min_iters` calls were made."""
    start = time.perf_counter()
    n = 0
    while n < min_iters or time.perf_counter() - start < seconds:
        fn()
        n += 1
    return n, time.perf_counter() - start


def read_f32(path, cols=None):
    a = np.fromfile(path, dtype="<f4")
    return a.reshape(-1, cols) if cols else a


def log(*args):
    print(*args, file=sys.stderr, flush=True)
