"""Hostile images made on the fly (no binary fixtures): decompression bombs and polyglots.

Each returns the bytes of a small file whose header declares far more pixels than
:data:`fr_pbd.capture.image.MAX_PIXELS`; the ones marked *real* also hold data enough for
OpenCV to fill the whole image when nothing stops it.
"""

from __future__ import annotations

import struct
import zlib

BIG = 30_000  #: 30000 x 30000 = 900 MP, 18 times the pixel budget


def tiff_bomb(w: int = BIG, h: int = BIG) -> bytes:
    """*Real*: a deflate RGB TIFF (about 11 kB) whose every strip points at one compressed block of zeros."""
    rows = 100
    block = zlib.compress(b"\0" * (w * 3 * rows), 9)
    n = -(-h // rows)
    tags = [(256, 4, 1, w), (257, 4, 1, h), (258, 3, 3, "bits"), (259, 3, 1, 8), (262, 3, 1, 2),
            (273, 4, n, "offsets"), (277, 3, 1, 3), (278, 4, 1, rows), (279, 4, n, "counts")]
    at = {"offsets": 8 + 2 + 12 * len(tags) + 4}
    at["counts"] = at["offsets"] + 4 * n
    at["bits"] = at["counts"] + 4 * n
    data_at = at["bits"] + 6
    out = bytearray(b"II*\0" + struct.pack("<IH", 8, len(tags)))
    for tag, typ, count, value in tags:
        if isinstance(value, str):
            out += struct.pack("<HHII", tag, typ, count, at[value])
        elif typ == 3:
            out += struct.pack("<HHIHH", tag, typ, count, value, 0)
        else:
            out += struct.pack("<HHII", tag, typ, count, value)
    out += struct.pack("<I", 0) + struct.pack(f"<{n}I", *[data_at] * n) + struct.pack(f"<{n}I", *[len(block)] * n)
    return bytes(out + struct.pack("<3H", 8, 8, 8) + block)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bomb(w: int = BIG, h: int = BIG) -> bytes:
    """An 8-bit grey PNG declaring w x h, with the zlib stream of its first 64 rows of zeros."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * ((w + 1) * 64), 9)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def bmp_bomb(w: int = BIG, h: int = -BIG) -> bytes:
    """*Real*: an 8-bit RLE8 BMP (BITMAPINFOHEADER, top-down) whose only code is 'end of bitmap':
    OpenCV fills the whole image with palette colour 0."""
    palette = bytes([0, 0, 255, 0]) + bytes(4 * 255)  # a colour palette: 3 channels out
    offset = 14 + 40 + len(palette)
    rle = b"\x00\x01"
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 8, 1, len(rle), 2835, 2835, 256, 0)
    return b"BM" + struct.pack("<IHHI", offset + len(rle), 0, 0, offset) + info + palette + rle


def bmp_core_bomb(w: int = 32_000, h: int = 32_000) -> bytes:
    """An OS/2 BMP (12-byte BITMAPCOREHEADER, unsigned 16-bit sizes) declaring w x h at 24 bits, one row of data."""
    offset = 14 + 12
    core = struct.pack("<IHHHH", 12, w, h, 1, 24)
    return b"BM" + struct.pack("<IHHI", offset + 3 * w, 0, 0, offset) + core + bytes(3 * w)


def pnm_bomb(magic: bytes = b"P6", w: int = BIG, h: int = BIG, maxval: int = 65535) -> bytes:
    """A PNM whose header (with comments) declares w x h; one row of data follows."""
    head = magic + b"\n# made by a test\n" + str(w).encode() + b" # width\n" + str(h).encode() + b"\n"
    if magic not in (b"P1", b"P4"):
        head += b"# maxval next\n" + str(maxval).encode() + b"\n"
    return head + (b"0 " * w if magic in (b"P1", b"P2", b"P3") else bytes(w))


def jpeg_with_size(jpeg: bytes, w: int, h: int, sof: int | None = None) -> bytes:
    """A real JPEG with its SOF's width and height (and optionally its SOF type) rewritten."""
    i = 2
    while i + 4 <= len(jpeg):
        marker = jpeg[i + 1]
        (length,) = struct.unpack(">H", jpeg[i + 2:i + 4])
        if marker in (0xC0, 0xC1, 0xC2):
            out = bytearray(jpeg)
            out[i + 5:i + 9] = struct.pack(">HH", h, w)
            if sof is not None:
                out[i + 1] = sof
            return bytes(out)
        i += 2 + length
    raise ValueError("no SOF0/1/2 in this JPEG")


def webp_bomb(w: int = 16_383, h: int = 16_383) -> bytes:
    """A lossless WebP (VP8L) header declaring w x h, followed by a few bytes of bitstream."""
    bits = (w - 1) | ((h - 1) << 14)
    vp8l = b"\x2f" + struct.pack("<I", bits) + bytes(16)
    body = b"WEBP" + b"VP8L" + struct.pack("<I", len(vp8l)) + vp8l
    return b"RIFF" + struct.pack("<I", len(body)) + body


def gif_bomb(w: int = 32_000, h: int = 32_000) -> bytes:
    """*Real*: a GIF89a whose screen and only frame are w x h, with an LZW stream of clear + end
    (OpenCV 5 allocates and fills its canvas: 8 GB)."""
    screen = struct.pack("<HHBBB", w, h, 0x80, 0, 0) + bytes(6)  # global colour table of 2 entries
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, w, h, 0)
    lzw = b"\x02" + b"\x02\x4c\x01\x00"  # min code size 2; one sub-block: clear, end
    return b"GIF89a" + screen + frame + lzw + b"\x3b"


#: Formats fr-pbd does not accept: a header that declares a huge image in each (the magic is what counts).
OTHER_FORMATS: dict[str, bytes] = {
    "TIFF": tiff_bomb(),
    "BigTIFF": b"II+\0\x08\0\0\0" + bytes(64),
    "WebP": webp_bomb(),
    "GIF": gif_bomb(),
    "JPEG 2000": b"\0\0\0\x0cjP  \r\n\x87\n" + bytes(64),
    "JPEG 2000 codestream": b"\xff\x4f\xff\x51\0\x2f\0\0" + struct.pack(">II", BIG, BIG) + bytes(64),
    "JPEG XL": b"\xff\x0a" + bytes(64),
    "OpenEXR": b"\x76\x2f\x31\x01" + bytes(64),
    "Radiance HDR": b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 30000 +X 30000\n" + bytes(64),
    "PFM": b"PF\n30000 30000\n-1.0\n" + bytes(64),
    "PAM": b"P7\nWIDTH 30000\nHEIGHT 30000\nDEPTH 3\nMAXVAL 255\nTUPLTYPE RGB\nENDHDR\n" + bytes(64),
    "Sun raster": b"\x59\xa6\x6a\x95" + struct.pack(">IIII", BIG, BIG, 24, 0) + bytes(64),
    "AVIF/HEIF": b"\0\0\0\x1cftypavif\0\0\0\0avifmif1miaf" + bytes(64),
}
