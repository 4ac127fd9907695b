"""An 8-bit grey PNG from raw pixels, with the standard library alone: what the generated
archives of `make_tiny_pngs.py` and `benches/gpu.sh` are made of."""

import struct
import zlib


def _chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def grey_png(pixels, width, height):
    """PNG bytes of `pixels` (width * height bytes, row by row), compressed fast."""
    raw = b"".join(b"\0" + pixels[r * width:(r + 1) * width] for r in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(raw, 1)) + _chunk(b"IEND", b""))
