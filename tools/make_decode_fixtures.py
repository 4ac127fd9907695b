#!/usr/bin/env python3
"""Reference fixtures for the DICOM decoder (`src/ingest/dicom.rs`).

Decodes every file in ../shared/data/dicom with pydicom and its pylibjpeg plugins (an
implementation independent of dicom-rs), applies the same display pipeline as the Rust decoder,
subsamples the [0, 1] result on a fixed grid and writes, per file, under
tests/fixtures/decode/:

  <stem>.json  header: size, grid, window used, SHA-256 of the source file, decoder versions
  <stem>.u12   the grid values q = round(v * 4095), row-major, packed two 12-bit values in three
               bytes (big-endian nibble order: a[11:4] | a[3:0] b[11:8] | b[7:0]); an odd count is
               padded with a zero value. 12 bits keep the largest fixture (1955x1841 at stride 8)
               under 100 KB while the quantisation error (at most 0.5/4095) stays far below the
               test tolerances.

Pipeline (same order as the Rust decoder; PS3.3 C.11 and C.7.6.3.1.2):
  1. stored values (pydicom's pixel_array, first frame only);
  2. Modality LUT: pydicom.pixels.apply_modality_lut (Modality LUT Sequence if present, else
     Rescale Slope/Intercept);
  3. VOI: VOI LUT Sequence (first item) if present, else the first Window Center/Width with
     VOI LUT Function LINEAR / LINEAR_EXACT / SIGMOID via pydicom.pixels.apply_windowing, whose
     output range is normalised back to [0, 1]; with neither, the 0.5th..99.5th percentile window
     (numpy's default linear-interpolated percentile) of the modality-LUT output;
  4. MONOCHROME1: v -> 1 - v.
  Colour images (RGB/YBR) are reduced to Rec. 601 luma and scaled by 2^BitsStored - 1.

Usage:  python tools/make_decode_fixtures.py [DICOM_DIR] [OUT_DIR]
Install: pip install -r tools/requirements-fixtures.txt
"""

import hashlib
import json
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut, apply_windowing
from pydicom.uid import ImplicitVRLittleEndian

STRIDE = 8
SCALE = 4095
REPO = Path(__file__).resolve().parent.parent
DEFAULT_DICOM_DIR = REPO / ".." / "shared" / "data" / "dicom"
DEFAULT_OUT_DIR = REPO / "tests" / "fixtures" / "decode"
LOW_PCT, HIGH_PCT = 0.5, 99.5


def read(path: Path) -> pydicom.Dataset:
    ds = pydicom.dcmread(path, force=True)
    # A raw data set with no file meta group: pydicom guessed the encoding while reading; tell
    # the pixel handlers it is implicit VR little endian (the only encoding such files may use).
    if "TransferSyntaxUID" not in getattr(ds, "file_meta", {}):
        ds.file_meta = pydicom.dataset.FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    return ds


def percentile_window(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    lo, hi = np.percentile(finite, [LOW_PCT, HIGH_PCT])
    return float(lo), float(hi)


def linear_window(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if hi <= lo:
        return (values > lo).astype(np.float64)
    return np.clip((values - lo) / (hi - lo), 0.0, 1.0)


def windowing_output_range(ds: pydicom.Dataset) -> tuple[float, float]:
    """The output range pydicom's apply_windowing maps a window onto (mirrors its code)."""
    bits = int(ds.BitsStored)
    if ds.get("ModalityLUTSequence"):
        y_min, y_max = 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    elif int(ds.PixelRepresentation) == 0:
        y_min, y_max = 0.0, float(2**bits - 1)
    else:
        y_min, y_max = float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        y_min = y_min * float(slope) + float(intercept)
        y_max = y_max * float(slope) + float(intercept)
    return y_min, y_max


def voi_lut_sequence(ds: pydicom.Dataset, values: np.ndarray) -> np.ndarray:
    """First VOI LUT Sequence item (PS3.3 C.11.2.1.1), normalised to [0, 1]."""
    item = ds.VOILUTSequence[0]
    n, first, bits = (int(v) for v in item.LUTDescriptor)
    n = n or 65536
    if int(ds.get("PixelRepresentation", 0)) == 1 and first > 32767:
        first -= 65536
    raw = item.LUTData
    lut = np.asarray(raw if not isinstance(raw, bytes) else np.frombuffer(raw, "<u2"), float)
    lut = lut[:n]
    idx = np.clip(np.round(values) - first, 0, len(lut) - 1).astype(np.int64)
    # Scaled by the bits the largest entry needs, not the declared bits: some writers declare
    # 16 bits for 12-bit tables (PS3.3 C.11.2.1.1); the Rust decoder does the same.
    used_bits = int(lut.max()).bit_length() or bits
    return lut[idx] / float(2**used_bits - 1)


def first_value(elem_value):
    return float(elem_value[0]) if isinstance(elem_value, (list, pydicom.multival.MultiValue)) else float(elem_value)


def display(ds: pydicom.Dataset) -> tuple[np.ndarray, dict]:
    arr = ds.pixel_array
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    spp = int(ds.get("SamplesPerPixel", 1))
    if frames > 1:
        arr = arr[0]
    pi = str(ds.PhotometricInterpretation).strip()
    if spp > 1:
        # pydicom converts YBR to RGB by default for pixel_array.
        rgb = arr.astype(np.float64)
        luma = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
        return np.clip(luma / float(2 ** int(ds.BitsStored) - 1), 0, 1), {"kind": "colour-luma"}

    modality = apply_modality_lut(arr, ds).astype(np.float64)
    if "VOILUTSequence" in ds:
        out = voi_lut_sequence(ds, modality)
        window = {"kind": "voi-lut-sequence"}
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        y_min, y_max = windowing_output_range(ds)
        out = (apply_windowing(modality, ds) - y_min) / (y_max - y_min)
        window = {
            "kind": "window",
            "center": first_value(ds.WindowCenter),
            "width": first_value(ds.WindowWidth),
            "function": str(ds.get("VOILUTFunction", "LINEAR")),
        }
    else:
        lo, hi = percentile_window(modality)
        out = linear_window(modality, lo, hi)
        window = {"kind": "percentile", "low": lo, "high": hi}
    out = np.clip(out, 0.0, 1.0)
    if pi == "MONOCHROME1":
        out = 1.0 - out
    return out, window


def pack12(q: np.ndarray) -> bytes:
    q = q.astype(np.uint16).ravel()
    if len(q) % 2:
        q = np.append(q, np.uint16(0))
    a, b = q[0::2].astype(np.uint32), q[1::2].astype(np.uint32)
    packed = np.stack([a >> 4, ((a & 0xF) << 4) | (b >> 8), b & 0xFF], axis=1)
    return packed.astype(np.uint8).tobytes()


def main() -> None:
    dicom_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DICOM_DIR
    out_dir = Path(sys.argv[2]) if len(sys.argv) > 2 else DEFAULT_OUT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    versions = {p: version(p) for p in
                ["pydicom", "pylibjpeg", "pylibjpeg-libjpeg", "pylibjpeg-openjpeg", "numpy"]}
    for path in sorted(dicom_dir.glob("*.dcm")):
        ds = read(path)
        img, window = display(ds)
        grid = img[::STRIDE, ::STRIDE]
        q = np.round(grid * SCALE).astype(np.uint16)
        header = {
            "source": path.name,
            "source_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "transfer_syntax": str(ds.file_meta.TransferSyntaxUID),
            "photometric_interpretation": str(ds.PhotometricInterpretation).strip(),
            "width": int(img.shape[1]),
            "height": int(img.shape[0]),
            "stride": STRIDE,
            "grid_width": int(grid.shape[1]),
            "grid_height": int(grid.shape[0]),
            "encoding": "u12-packed",
            "scale": SCALE,
            "full_mean": float(img.mean()),
            "window": window,
            "reference": versions,
        }
        (out_dir / f"{path.stem}.json").write_text(json.dumps(header, indent=2) + "\n")
        (out_dir / f"{path.stem}.u12").write_bytes(pack12(q))
        print(f"{path.name}: {img.shape[1]}x{img.shape[0]} window={window['kind']} "
              f"mean={img.mean():.4f}")


if __name__ == "__main__":
    main()
