"""Makes an archive of --n PNG radiographs for the end-to-end row: the 64x64 NIH images of
../shared/data/nih1000 replicated, each copy with a small seeded perturbation (a 0-2 px shift,
a brightness change of at most 3 grey levels, Gaussian noise of 2 grey levels), so no two files
are identical. Files go into sub-folders of 1,000. Does nothing if --out already holds --n
files made with the same seed.

Usage: make_images.py --src DIR --out DIR --n N [--seed 0]
"""

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from common import log


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--n", required=True, type=int)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    stamp = a.out / "made.json"
    want = {"n": a.n, "seed": a.seed}
    if stamp.exists() and json.loads(stamp.read_text()) == want:
        log(f"{a.out} is up to date")
        return
    sources = sorted(p for p in a.src.rglob("*.png") if Image.open(p).size == (64, 64))
    if not sources:
        raise SystemExit(f"no 64x64 PNGs under {a.src}")
    pixels = [np.asarray(Image.open(p).convert("L"), np.float32) for p in sources]
    rng = np.random.default_rng(a.seed)
    for i in range(a.n):
        img = np.roll(pixels[i % len(pixels)], tuple(rng.integers(0, 3, 2)), axis=(0, 1))
        img = img + rng.uniform(-3, 3) + rng.normal(0, 2, img.shape)
        folder = a.out / f"{i // 1000:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        stem = sources[i % len(sources)].stem
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(
            folder / f"{i:07d}_{stem}.png")
    stamp.write_text(json.dumps(want) + "\n")
    log(f"{a.n} images written to {a.out}")


if __name__ == "__main__":
    main()
