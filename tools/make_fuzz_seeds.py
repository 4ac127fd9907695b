#!/usr/bin/env python3
"""Writes small seed corpora for the cargo-fuzz targets into fuzz/corpus/<target>/.

Every seed is generated here (a few hundred bytes to a few KiB each), so the corpora need not be
committed: run this before the first `cargo +nightly fuzz run`. DICOM seeds cover the layouts
and transfer syntaxes the decoder handles (explicit/implicit VR little endian, big endian,
deflate, a bare data set, RLE, JPEG baseline and JPEG 2000 when Pillow is installed), LUT
sequences, windows, MONOCHROME1, colour. Standard library only; Pillow is optional.

Usage: python3 tools/make_fuzz_seeds.py [OUT_DIR]   (default: fuzz/corpus)
"""

import io
import json
import struct
import sys
import zlib
from pathlib import Path

SHORT_VRS = {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO",
             b"LT", b"PN", b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"}
UNDEFINED = 0xFFFFFFFF

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
DEFLATED = "1.2.840.10008.1.2.1.99"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_2000 = "1.2.840.10008.1.2.4.90"
RLE = "1.2.840.10008.1.2.5"
CR = "1.2.840.10008.5.1.4.1.1.1"


def pad(value: bytes, vr: bytes) -> bytes:
    if len(value) % 2:
        value += b"\0" if vr in (b"UI", b"OB") else b" "
    return value


def element(tag, vr, value, explicit=True, big=False):
    """One data element; `value` is bytes, or a list of items (bytes) for SQ."""
    g, e = tag
    end = ">" if big else "<"
    if vr == b"SQ":
        body = b"".join(struct.pack(end + "HHI", 0xFFFE, 0xE000, len(i)) + i for i in value)
        value = body + struct.pack(end + "HHI", 0xFFFE, 0xE0DD, 0)
        length = UNDEFINED
    else:
        value = pad(value, vr)
        length = len(value)
    head = struct.pack(end + "HH", g, e)
    if not explicit:
        return head + struct.pack("<I", length) + value
    if vr in SHORT_VRS:
        return head + vr + struct.pack(end + "H", length) + value
    return head + vr + b"\0\0" + struct.pack(end + "I", length) + value


def us(v, big=False):
    return struct.pack(">H" if big else "<H", v)


def meta(ts):
    uid = pad(ts.encode(), b"UI")
    body = element((0x0002, 0x0010), b"UI", uid)
    return (b"\0" * 128 + b"DICM" + element((0x0002, 0x0000), b"UL", struct.pack("<I", len(body)))
            + body)


def image_elements(rows, cols, *, bits=16, stored=12, mono="MONOCHROME2", spp=1, signed=0,
                   big=False, explicit=True, extra=()):
    e = lambda tag, vr, v: element(tag, vr, v, explicit, big)  # noqa: E731
    els = [
        e((0x0008, 0x0016), b"UI", CR.encode()),
        e((0x0008, 0x0018), b"UI", b"2.25.1234"),
        e((0x0008, 0x0020), b"DA", b"20240131"),
        e((0x0008, 0x0060), b"CS", b"CR"),
        e((0x0010, 0x0020), b"LO", b"FUZZ-ID"),
        e((0x0010, 0x1010), b"AS", b"045Y"),
        e((0x0018, 0x5101), b"CS", b"PA"),
        e((0x0028, 0x0002), b"US", us(spp, big)),
        e((0x0028, 0x0004), b"CS", mono.encode()),
        e((0x0028, 0x0010), b"US", us(rows, big)),
        e((0x0028, 0x0011), b"US", us(cols, big)),
        e((0x0028, 0x0100), b"US", us(bits, big)),
        e((0x0028, 0x0101), b"US", us(stored, big)),
        e((0x0028, 0x0102), b"US", us(stored - 1, big)),
        e((0x0028, 0x0103), b"US", us(signed, big)),
    ]
    els += [e(*x) for x in extra]
    return els


def native_pixels(rows, cols, bits, spp=1, big=False):
    n = rows * cols * spp
    if bits == 8:
        return bytes((i * 7) % 256 for i in range(n))
    return struct.pack((">" if big else "<") + "%dH" % n, *((i * 37) % 4096 for i in range(n)))


def pixel_element(data, vr=b"OW", explicit=True, big=False):
    return element((0x7FE0, 0x0010), vr, data, explicit, big)


def encapsulated(frames):
    out = struct.pack("<HH", 0x7FE0, 0x0010) + b"OB\0\0" + struct.pack("<I", UNDEFINED)
    out += struct.pack("<HHI", 0xFFFE, 0xE000, 0)  # empty basic offset table
    for f in frames:
        f = pad(f, b"OB")
        out += struct.pack("<HHI", 0xFFFE, 0xE000, len(f)) + f
    return out + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)


def rle_frame(data: bytes) -> bytes:
    """One RLE segment of literal runs (PS3.5 G.3.1) for 8-bit single-sample data."""
    seg = b""
    for i in range(0, len(data), 128):
        chunk = data[i:i + 128]
        seg += bytes([len(chunk) - 1]) + chunk
    header = struct.pack("<16I", 1, 64, *([0] * 14))
    return header + seg


def lut_item(entries, first, bits, data):
    return (element((0x0028, 0x3002), b"US", struct.pack("<3H", entries, first, bits))
            + element((0x0028, 0x3006), b"OW", struct.pack("<%dH" % len(data), *data)))


def dicom_seeds():
    seeds = {}
    rows, cols = 8, 6
    px = native_pixels(rows, cols, 16)
    window = [((0x0028, 0x1050), b"DS", b"2000\\100"), ((0x0028, 0x1051), b"DS", b"4000\\10")]
    rescale = [((0x0028, 0x1052), b"DS", b"-1000"), ((0x0028, 0x1053), b"DS", b"2")]

    seeds["explicit-le-window.dcm"] = meta(EXPLICIT_LE) + b"".join(
        image_elements(rows, cols, extra=window)) + pixel_element(px)
    seeds["explicit-le-mono1-rescale.dcm"] = meta(EXPLICIT_LE) + b"".join(
        image_elements(rows, cols, mono="MONOCHROME1", extra=rescale + window
                       + [((0x0028, 0x1056), b"CS", b"SIGMOID")])) + pixel_element(px)
    seeds["implicit-le.dcm"] = meta(IMPLICIT_LE) + b"".join(
        image_elements(rows, cols, explicit=False)) + pixel_element(px, explicit=False)
    seeds["bare-implicit-no-meta.dcm"] = b"".join(
        image_elements(rows, cols, explicit=False, mono="MONOCHROME1")) + pixel_element(
        px, explicit=False)
    seeds["bare-explicit-no-meta.dcm"] = b"".join(image_elements(rows, cols)) + pixel_element(px)
    seeds["explicit-be.dcm"] = meta(EXPLICIT_BE) + b"".join(
        image_elements(rows, cols, big=True)) + pixel_element(
        native_pixels(rows, cols, 16, big=True), big=True)
    seeds["signed.dcm"] = meta(EXPLICIT_LE) + b"".join(
        image_elements(rows, cols, signed=1)) + pixel_element(px)
    seeds["eight-bit.dcm"] = meta(EXPLICIT_LE) + b"".join(
        image_elements(rows, cols, bits=8, stored=8)) + pixel_element(
        native_pixels(rows, cols, 8), vr=b"OB")
    seeds["rgb.dcm"] = meta(EXPLICIT_LE) + b"".join(
        image_elements(rows, cols, bits=8, stored=8, spp=3, mono="RGB",
                       extra=[((0x0028, 0x0006), b"US", us(0))])) + pixel_element(
        native_pixels(rows, cols, 8, spp=3), vr=b"OB")
    body = b"".join(image_elements(rows, cols, extra=window)) + pixel_element(px)
    deflater = zlib.compressobj(9, zlib.DEFLATED, -15)
    seeds["deflated.dcm"] = meta(DEFLATED) + deflater.compress(body) + deflater.flush()
    luts = [
        ((0x0028, 0x3000), b"SQ", [lut_item(3, 1, 16, [10, 20, 30])]),
        ((0x0028, 0x3010), b"SQ", [lut_item(12, 10, 8, [0] * 10 + [128, 255])]),
    ]
    seeds["lut-sequences.dcm"] = meta(EXPLICIT_LE) + b"".join(
        image_elements(rows, cols, extra=luts)) + pixel_element(px)
    seeds["no-pixels-sr.dcm"] = meta(EXPLICIT_LE) + element(
        (0x0008, 0x0016), b"UI", b"1.2.840.10008.5.1.4.1.1.88.11") + element(
        (0x0008, 0x0060), b"CS", b"SR")
    seeds["multi-frame.dcm"] = meta(EXPLICIT_LE) + b"".join(
        image_elements(rows, cols, extra=[((0x0028, 0x0008), b"IS", b"2")])) + pixel_element(
        px + px)
    eight = native_pixels(rows, cols, 8)
    seeds["rle.dcm"] = meta(RLE) + b"".join(
        image_elements(rows, cols, bits=8, stored=8)) + encapsulated([rle_frame(eight)])

    try:
        from PIL import Image
    except ImportError:
        print("Pillow absent: no JPEG or JPEG 2000 DICOM seeds", file=sys.stderr)
        return seeds
    img = Image.frombytes("L", (cols * 2, rows * 2), bytes((i * 5) % 256
                                                          for i in range(rows * cols * 4)))
    for name, ts, fmt in [("jpeg-baseline.dcm", JPEG_BASELINE, "JPEG"),
                          ("jpeg2000.dcm", JPEG_2000, "JPEG2000")]:
        buf = io.BytesIO()
        img.save(buf, fmt)
        seeds[name] = meta(ts) + b"".join(
            image_elements(rows * 2, cols * 2, bits=8, stored=8)) + encapsulated([buf.getvalue()])
    return seeds


def png_chunk(kind, data):
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def png(width, height, bit_depth, colour_type, samples):
    bytes_per_px = max(1, bit_depth // 8) * samples
    raw = b"".join(b"\0" + bytes((x * 13 + y * 7) % 256 for x in range(width * bytes_per_px))
                   for y in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    chunks = png_chunk(b"IHDR", ihdr)
    if colour_type == 3:
        chunks += png_chunk(b"PLTE", bytes(range(48)))
    return b"\x89PNG\r\n\x1a\n" + chunks + png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(
        b"IEND", b"")


def raster_seeds():
    seeds = {
        "grey8.png": png(8, 6, 8, 0, 1),
        "grey16.png": png(8, 6, 16, 0, 1),
        "rgb8.png": png(8, 6, 8, 2, 3),
        "rgba8.png": png(5, 3, 8, 6, 4),
        "palette.png": png(4, 4, 8, 3, 1),
    }
    try:
        from PIL import Image
    except ImportError:
        print("Pillow absent: no JPEG seeds", file=sys.stderr)
        return seeds
    grey = Image.frombytes("L", (16, 12), bytes((i * 3) % 256 for i in range(192)))
    rgb = Image.frombytes("RGB", (16, 12), bytes((i * 5) % 256 for i in range(576)))
    for name, img, kw in [("grey.jpg", grey, {}), ("rgb.jpg", rgb, {}),
                          ("progressive.jpg", rgb, {"progressive": True})]:
        buf = io.BytesIO()
        img.save(buf, "JPEG", **kw)
        seeds[name] = buf.getvalue()
    return seeds


REPORTS = [
    "Heart size normal. No pleural effusion or pneumothorax. Lungs are clear.",
    "FINDINGS: Small left pleural effusion with left basilar atelectasis; no pneumothorax.\n"
    "IMPRESSION: Possible early pneumonia in the right lower lobe. Cannot exclude "
    "consolidation.",
    "No acute cardiopulmonary abnormality. Dr. XXXX was notified at 3.5 p.m.",
    "Without evidence of free air. Negative for focal consolidation, effusion, or edema, "
    "but there is mild cardiomegaly.",
    "Résumé: épanchement pleural — pas de pneumothorax. 肺 正常.",
]


def report_seeds():
    seeds = {f"text-{i}.txt": r.encode() for i, r in enumerate(REPORTS)}
    lines = [json.dumps({"id": f"CXR{i}", "findings": r, "impression": r[:40],
                         "view": "PA", "sex": "female", "age": "45Y"})
             for i, r in enumerate(REPORTS)]
    seeds["table.jsonl"] = ("\n".join(lines) + "\n").encode()
    seeds["table.csv"] = (
        "\ufeffImage Index,report,View Position,Patient Gender,Patient Age\n"
        + "".join(f'img{i}.png,"{r.replace(chr(34), chr(39))}",AP,M,{30 + i}\n'
                  for i, r in enumerate(REPORTS))).encode()
    return seeds


def query_seeds():
    return {
        "filters.txt": b"view=PA,AP\nsex=F\nage=40..60\ndate=2004-01-01..\nbody-part=chest\n",
        "bad-filters.txt": b"age=forty\ndate=2004-13-01..x\nnope=1\n=\n",
        "snippet.txt": b"pleural effusion\nHeart size normal. Small left pleural effusion.\n",
        "queries.jsonl": (json.dumps({"id": "q1", "corpus": "iu", "group": "effusion",
                                      "text": "small left pleural effusion"}) + "\n"
                          + json.dumps({"id": "q2", "corpus": "dicom", "group": "view",
                                        "image": "img/a.png"}) + "\n").encode(),
        "qrels.txt": b"q1 0 CXR1 2\nq1 0 CXR2 1\nq2 0 doc3 0\n",
        "run.txt": b"q1 Q0 CXR1 1 7.18 cxr\nq1 Q0 CXR2 2 6.9 cxr\n",
    }


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "fuzz/corpus")
    for target, seeds in [("dicom_ingest", dicom_seeds()), ("raster_ingest", raster_seeds()),
                          ("report_parse", report_seeds()), ("query_parse", query_seeds())]:
        d = out / target
        d.mkdir(parents=True, exist_ok=True)
        for name, data in seeds.items():
            (d / name).write_bytes(data)
        print(f"{d}: {len(seeds)} seeds, {sum(map(len, seeds.values()))} bytes")


if __name__ == "__main__":
    main()
