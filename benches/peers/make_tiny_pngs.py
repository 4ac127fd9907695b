"""Makes an archive of --n distinct 16x16 grey PNGs (about 340 bytes each) in a folder tree
shaped like an export (site-S/patient-P/study-K/image-N.png, 100 images a patient): for
measuring what `cxr index` holds per file rather than per pixel, such as its memory on a re-run
over a large archive. No third-party packages.

With --gradients K, also K smooth grey ramps (in DIR/z-gradients/, walked last): images unlike all the
others, which HNSW can leave unreachable in its graph (see benches/README.md, Not done).

Usage: make_tiny_pngs.py --out DIR --n N [--gradients K]
"""

import argparse
from pathlib import Path

from grey_png import grey_png


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--n", required=True, type=int)
    ap.add_argument("--gradients", type=int, default=0)
    a = ap.parse_args()
    for i in range(a.n):
        folder = a.out / f"site-{i // 50000}/patient-{i // 100:05d}/study-{i // 20 % 5}"
        if i % 20 == 0:
            folder.mkdir(parents=True, exist_ok=True)
        # Three bytes of i spread over the pixels: no two images alike.
        pixels = bytes((i >> (8 * (k % 3))) & 255 ^ (k * 7 & 255) for k in range(256))
        (folder / f"image-{i:07d}.png").write_bytes(grey_png(pixels, 16, 16))
    if a.gradients:
        (a.out / "z-gradients").mkdir(parents=True, exist_ok=True)
    for g in range(a.gradients):
        pixels = bytes((g * 37 + k) & 255 for k in range(256))
        (a.out / "z-gradients" / f"ramp-{g}.png").write_bytes(grey_png(pixels, 16, 16))


if __name__ == "__main__":
    main()
