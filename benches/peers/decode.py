"""Row 1 peers: DICOM decode + preprocess to the model's 224 px input, images/s per file.

pydicom: pydicom (pixel data through pylibjpeg's libjpeg / openjpeg plugins) + numpy doing the
same grey pipeline as cxr-search (Modality LUT, first VOI window with the DICOM LINEAR formula or
the 0.5..99.5 percentile window when the file has none, MONOCHROME1 inversion), then a Pillow
bilinear (antialiased triangle filter) resize to 224x224 and (v - mean) / std. With N threads,
N processes each loop over the file (the GIL rules out threads).

dcmtk: `dcm2pnm` per image (`dcmj2pnm` for JPEG, `dcml2pnm` for JPEG-LS; one
process per image, as it is used), first window of the file
(`+Wi 1`) or a histogram window ignoring 1% (`+Wh 1`) where it has none, scaled to 224 columns
(dcmtk cannot change the aspect ratio; our input squashes to 224x224, the same work for square
images) and written as an 8-bit PGM. With N threads, N conversions run at once.

Usage: decode.py --impl pydicom|dcmtk --dicom-dir DIR --threads N --seconds S [--ours-dump DIR]
"""

import argparse
import multiprocessing as mp
import os
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from common import emit, log, repeat_for

SIZE, MEAN, STD = 224, 0.5, 0.25


def read_dataset(path):
    import pydicom
    from pydicom.uid import ImplicitVRLittleEndian

    ds = pydicom.dcmread(path, force=True)
    if "TransferSyntaxUID" not in getattr(ds, "file_meta", {}):
        # A bare data set without file meta: its encoding is implicit VR little endian.
        ds.file_meta = pydicom.dataset.FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    return ds


def linear_window(values, center, width):
    """DICOM PS3.3 C.11.2.1.2.1 LINEAR window onto [0, 1]."""
    lo = center - 0.5 - (width - 1) / 2
    out = (values - (center - 0.5)) / (width - 1) + 0.5
    out = np.where(values <= lo, 0.0, out)
    return np.clip(out, 0.0, 1.0)


def first(value):
    try:
        return float(value[0])
    except TypeError:
        return float(value)


def grey(ds):
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    arr = ds.pixel_array
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        arr = arr[0]
    if int(ds.get("SamplesPerPixel", 1)) > 1:
        rgb = arr.astype(np.float32)
        luma = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
        return np.clip(luma / float(2 ** int(ds.BitsStored) - 1), 0, 1)
    values = apply_modality_lut(arr, ds).astype(np.float32)
    if "VOILUTSequence" in ds:
        out = apply_voi_lut(values, ds).astype(np.float32)
        out = (out - out.min()) / max(float(out.max() - out.min()), 1e-6)
    elif "WindowCenter" in ds and "WindowWidth" in ds and first(ds.WindowWidth) >= 1:
        out = linear_window(values, first(ds.WindowCenter), first(ds.WindowWidth))
    else:
        lo, hi = np.percentile(values, [0.5, 99.5])
        out = np.clip((values - lo) / (hi - lo), 0, 1) if hi > lo else (values > lo) * 1.0
    if str(ds.PhotometricInterpretation).strip() == "MONOCHROME1":
        out = 1.0 - out
    return out.astype(np.float32)


def pydicom_input(path):
    from PIL import Image

    plane = grey(read_dataset(path))
    img = Image.fromarray(plane).resize((SIZE, SIZE), Image.BILINEAR)
    return (np.asarray(img, dtype=np.float32) - MEAN) / STD


def _pydicom_worker(job):
    path, seconds = job
    pydicom_input(path)  # warm-up
    return repeat_for(seconds, 3, lambda: pydicom_input(path))


# dcmtk's tool per transfer syntax: dcmj2pnm registers the JPEG codecs, dcml2pnm JPEG-LS; the
# open-source dcmtk has no JPEG 2000 codec.
DCMTK_TOOL = {"1.2.840.10008.1.2.4.50": "dcmj2pnm", "1.2.840.10008.1.2.4.51": "dcmj2pnm",
              "1.2.840.10008.1.2.4.57": "dcmj2pnm", "1.2.840.10008.1.2.4.70": "dcmj2pnm",
              "1.2.840.10008.1.2.4.80": "dcml2pnm", "1.2.840.10008.1.2.4.81": "dcml2pnm"}


def dcmtk_command(path, out):
    ds = read_dataset(path)
    tool = DCMTK_TOOL.get(str(ds.file_meta.TransferSyntaxUID), "dcm2pnm")
    window = ["+Wi", "1"] if "WindowCenter" in ds else ["+Wh", "1"]
    return [tool, "-q", *window, "-a", "+Sxv", str(SIZE), "+op",
            str(path), str(out)]


def run_dcmtk(cmd):
    return subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE).returncode


def read_pgm(path):
    data = Path(path).read_bytes()
    # P5 header: magic, width, height, maxval, each followed by whitespace.
    parts, pos = [], 0
    while len(parts) < 4:
        while data[pos:pos + 1].isspace():
            pos += 1
        start = pos
        while not data[pos:pos + 1].isspace():
            pos += 1
        parts.append(data[start:pos])
    w, h = int(parts[1]), int(parts[2])
    return np.frombuffer(data[pos + 1:pos + 1 + w * h], np.uint8).reshape(h, w)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--impl", choices=["pydicom", "dcmtk"], required=True)
    ap.add_argument("--dicom-dir", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--ours-dump", help="folder of our model inputs (<stem>.f32) to compare")
    a = ap.parse_args()
    files = sorted(Path(a.dicom_dir).glob("*.dcm"))
    tmp = Path(tempfile.mkdtemp(prefix="cxr-bench-dcmtk-"))
    try:
        for path in files:
            row = dict(row="decode", impl=a.impl, file=path.name, threads=a.threads)
            ours = None
            if a.ours_dump and (Path(a.ours_dump) / f"{path.stem}.f32").exists():
                ours = np.fromfile(Path(a.ours_dump) / f"{path.stem}.f32", "<f4")
                ours = ours.reshape(SIZE, SIZE) * STD + MEAN  # back to [0, 1] grey
            if a.impl == "pydicom":
                try:
                    x = pydicom_input(path)
                except Exception as e:  # a syntax no installed plugin decodes
                    emit(**row, error=f"{type(e).__name__}: {e}"[:300])
                    continue
                if ours is not None:
                    diff = np.abs(x * STD + MEAN - ours)
                    row.update(max_abs_diff=float(diff.max()), mean_abs_diff=float(diff.mean()))
                if a.threads <= 1:
                    n, secs = repeat_for(a.seconds, 3, lambda: pydicom_input(path))
                    rate = n / secs
                else:
                    with mp.get_context("fork").Pool(a.threads) as pool:
                        res = pool.map(_pydicom_worker, [(path, a.seconds)] * a.threads)
                    n = sum(r[0] for r in res)
                    rate = sum(r[0] / r[1] for r in res)
                    secs = max(r[1] for r in res)
            else:
                outs = [tmp / f"out{i}.pgm" for i in range(a.threads)]
                cmds = [dcmtk_command(path, o) for o in outs]
                rc = subprocess.run(cmds[0], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                if rc.returncode != 0 or not outs[0].exists():
                    emit(**row, tool=cmds[0][0],
                         error=rc.stderr.decode(errors="replace").strip()[:300] or "failed")
                    continue
                if ours is not None:
                    from PIL import Image

                    pgm = read_pgm(outs[0])
                    if pgm.shape != ours.shape:  # dcmtk keeps the aspect ratio
                        pgm = np.asarray(Image.fromarray(pgm).resize((SIZE, SIZE)))
                    diff = np.abs(pgm.astype(np.float32) / 255.0 - ours)
                    row.update(max_abs_diff=float(diff.max()), mean_abs_diff=float(diff.mean()))
                if a.threads <= 1:
                    n, secs = repeat_for(a.seconds, 3, lambda: run_dcmtk(cmds[0]))
                else:
                    start, n = time.perf_counter(), 0
                    with ThreadPoolExecutor(a.threads) as ex:
                        while n < 3 * a.threads or time.perf_counter() - start < a.seconds:
                            list(ex.map(run_dcmtk, cmds))
                            n += a.threads
                    secs = time.perf_counter() - start
                rate = n / secs
            if a.impl == "dcmtk":
                row["tool"] = cmds[0][0]
            emit(**row, images=n, seconds=secs, images_per_s=rate)
            log(f"{a.impl} {path.name} x{a.threads}: {rate:.2f} images/s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
