"""Image input: every image enters fr-pbd through :func:`load_image`.

It returns an 8-bit, 3-channel BGR array (OpenCV's order) or raises
:class:`~fr_pbd.errors.ImageError` with a one-line reason.

Only the formats in :data:`ACCEPTED` are read: JPEG, PNG, BMP and PNM (PBM/PGM/PPM, binary and
ASCII), recognised by their first bytes as OpenCV recognises them, never by a file name. Every
other format OpenCV can decode (TIFF, WebP, GIF, JPEG 2000, AVIF, HDR, PFM, PAM, Sun raster,
...) is refused unread: each has a header of its own that a decompression bomb hides in (an
11 kB deflate TIFF declaring 30000 x 30000 pixels makes OpenCV allocate and fill all 2.7 GB). For the
accepted formats the width and height are read from the header, the way OpenCV's decoder reads
them, and checked against :data:`MAX_PIXELS` *before* OpenCV allocates anything; a header that
cannot be read is refused, never passed on. A PNG's chunk list is walked first too: libpng (as
OpenCV 5 drives it) allocates a chunk's *declared* length before reading it.

A second barrier: OpenCV checks every decoded size against ``OPENCV_IO_MAX_IMAGE_PIXELS``, which
it reads once, when cv2 is loaded. ``fr_pbd/__init__`` sets it to :data:`MAX_PIXELS` before any
module of fr-pbd imports cv2 (:mod:`fr_pbd.limits`; a lower value already set is kept), so a
header this module reads differently from OpenCV still cannot make it allocate more than the
budget. A program that imports cv2 before fr_pbd must set it itself; :data:`OPENCV_LIMIT_IN_FORCE`
says whether it holds.

Camera frames arrive as arrays (:func:`to_bgr8` checks their size): they are never decoded here.

Limits: :data:`MAX_FILE_BYTES` encoded bytes, :data:`MAX_PIXELS` pixels, :data:`MAX_PNG_CHUNKS`
PNG chunks, :data:`MAX_JPEG_SCANS` JPEG scans.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Union

import numpy as np

from fr_pbd.errors import ImageError
from fr_pbd.limits import MAX_IMAGE_PIXELS, opencv_limit_in_force, set_native_limits

MAX_PIXELS = MAX_IMAGE_PIXELS
"""Larger images are refused: no camera frame for face verification needs more."""

set_native_limits()  # done already by fr_pbd/__init__, before any cv2 import; a no-op here
#: False when cv2 was loaded before fr_pbd set the limit: OpenCV's default (2^30 pixels) applies then.
OPENCV_LIMIT_IN_FORCE = opencv_limit_in_force()

import cv2  # noqa: E402 - after the limit above: OpenCV reads it once, when it is loaded

MAX_FILE_BYTES = 200 * 1024 * 1024
"""Larger files are refused before they are read."""

MAX_PNG_CHUNKS = 100_000
"""More PNG chunks are refused: at libpng's 8 kB IDAT chunks that is 800 MB, over MAX_FILE_BYTES."""

MAX_JPEG_SCANS = 100
"""More scans are refused: libjpeg decodes every scan of a progressive JPEG over the whole image,
so a small file with thousands of scans is a time bomb under the pixel budget. Encoders write 1
(baseline) to about 20 (optimised progressive) scans."""

MAX_JPEG_MARKERS = 100_000
"""More JPEG markers are refused (each costs a step of the walk below); real files have dozens."""

ACCEPTED = "JPEG, PNG, BMP, PNM (PBM/PGM/PPM)"
"""The formats fr-pbd reads, as its errors name them."""

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

ImageSource = Union[str, Path, bytes, np.ndarray]

# Signatures of the formats OpenCV decodes and fr-pbd refuses, as OpenCV's decoders check them (or
# wider). They are tested before the accepted ones: a file that any of them matches is refused,
# so a polyglot that two of OpenCV's decoders could claim is never passed on, whatever the order
# in which OpenCV asks its decoders (BMP, GIF, AVIF, HDR, JPEG, WebP, Sun raster, PNM, PAM, PFM,
# TIFF, PNG, JPEG 2000, JPEG XL, OpenEXR in OpenCV 5).
_REFUSED: tuple[tuple[str, "re.Pattern[bytes]"], ...] = tuple(
    (name, re.compile(pattern, re.S)) for name, pattern in (
        ("TIFF", rb"II\*\x00|MM\x00\*|II\+\x00|MM\x00\+"),
        ("GIF", rb"GIF"),
        ("WebP", rb"RIFF"),
        ("AVIF/HEIF", rb"....ftyp"),
        ("Radiance HDR", rb"#\?"),
        ("Sun raster", rb"\x59\xa6\x6a\x95"),
        ("PAM", rb"P7"),
        ("PFM", rb"P[fF]"),
        ("JPEG 2000", rb"\x00\x00\x00\x0cjP  \r\n\x87\n|\xff\x4f\xff\x51"),
        ("JPEG XL", rb"\xff\x0a|\x00\x00\x00\x0cJXL \r\n\x87\n"),
        ("OpenEXR", rb"\x76\x2f\x31\x01"),
    ))
_PNM_SIGNATURE = re.compile(rb"P[1-6][ \t\n\v\f\r]")  # OpenCV: 'P', '1'..'6', isspace()


def image_format(data: bytes) -> str | None:
    """The format of encoded image bytes by their signature: an :data:`ACCEPTED` one, another
    format OpenCV decodes (refused), or None (OpenCV has no decoder for it either)."""
    for name, signature in _REFUSED:
        if signature.match(data):
            return name
    if data[:2] == b"BM":
        return "BMP"
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if _PNM_SIGNATURE.match(data):
        return "PNM"
    if data[:8] == PNG_SIGNATURE:
        return "PNG"
    return None


# --- JPEG ------------------------------------------------------------------------------------
# Frame headers: SOF0-3 (baseline, extended, progressive, lossless; Huffman), SOF5-7 (hierarchical),
# SOF9-11, SOF13-15 (arithmetic). Not C4 (DHT), C8 (JPG), CC (DAC).
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_MARKER = re.compile(rb"\xff+([^\x00\xff])")  # libjpeg's next_marker: skip to FF, skip fill FFs
_JPEG_MARKER_IN_SCAN = re.compile(rb"\xff+([^\x00\xff\xd0-\xd7])")  # RSTn belong to the scan


def _jpeg_size(data: bytes, what: str) -> tuple[int, int]:
    """(width, height) of a JPEG, from every frame header (SOF) in the stream up to EOI.

    The markers are walked as libjpeg reads them: segments by their length, and each scan's
    entropy-coded data to the next marker that is not a restart. Every SOF is checked against
    the budget (libjpeg uses the first and refuses a second); a stream without one before its
    first scan, or that ends inside a segment, is refused.
    """
    bad = f"{what} is not a JPEG fr-pbd can read"
    pos, n = 2, len(data)
    sizes: list[tuple[int, int]] = []
    scans = 0
    pattern = _JPEG_MARKER
    for _ in range(MAX_JPEG_MARKERS):
        found = pattern.search(data, pos)
        if found is None:
            raise ImageError(f"{what} is truncated (the JPEG ends before its end-of-image marker)")
        marker, pos = found.group(1)[0], found.end()
        if marker == 0xD9:  # EOI: what follows (a second picture, padding) is never decoded
            break
        if marker == 0xD8:
            raise ImageError(f"{bad} (a second start-of-image marker)")
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # TEM, RSTn: no length
            continue
        if pos + 2 > n:
            raise ImageError(f"{what} is truncated (the JPEG ends inside a marker)")
        (length,) = struct.unpack(">H", data[pos:pos + 2])
        if length < 2 or pos + length > n:
            raise ImageError(f"{what} is truncated or corrupt (a JPEG segment of {length} bytes, "
                             f"{n - pos} left in the file)")
        if marker in _JPEG_SOF:
            if length < 8:
                raise ImageError(f"{bad} (a frame header of {length} bytes)")
            h, w, components = struct.unpack(">HHB", data[pos + 3:pos + 8])
            if components not in (1, 3, 4):
                raise ImageError(f"{bad} ({components} colour components; 1, 3 or 4 are read)")
            _check_pixels(w, h, what, "JPEG")  # a height of 0 (set by a DNL marker later) is refused
            sizes.append((w, h))
        elif marker == 0xDA:  # SOS: a scan's entropy-coded data follows its header
            if not sizes:
                raise ImageError(f"{bad} (a scan before any frame header)")
            scans += 1
            if scans > MAX_JPEG_SCANS:
                raise ImageError(f"{what} has more than {MAX_JPEG_SCANS} JPEG scans")
            pattern = _JPEG_MARKER_IN_SCAN
        pos += length
    else:
        raise ImageError(f"{what} has more than {MAX_JPEG_MARKERS} JPEG markers")
    if not sizes or not scans:
        raise ImageError(f"{bad} (no frame header or no scan)")
    return sizes[0]


# --- PNG -------------------------------------------------------------------------------------
def _png_size(data: bytes, what: str) -> tuple[int, int]:
    """(width, height) from IHDR; every chunk from IHDR to IEND must lie inside the file (a length
    that does not is never allocated), and an animation's frames (fcTL) inside the image."""
    if len(data) < 33:
        raise ImageError(f"{what} is truncated (the file ends inside the PNG header)")
    w, h = struct.unpack(">II", data[16:24])
    _check_pixels(w, h, what, "PNG")
    pos, n = len(PNG_SIGNATURE), len(data)
    for k in range(MAX_PNG_CHUNKS):
        if pos + 12 > n:
            raise ImageError(f"{what} is truncated (the file ends before the PNG's IEND chunk)")
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        if length > n - pos - 12:
            raise ImageError(f"{what} is truncated or corrupt (PNG chunk {k} declares {length} bytes, "
                             f"the file holds {n - pos - 12} more)")
        if k == 0 and (kind != b"IHDR" or length != 13):
            raise ImageError(f"{what} is not a valid PNG (the first chunk is not a 13-byte IHDR)")
        if kind == b"fcTL" and length >= 20:
            fw, fh, fx, fy = struct.unpack(">IIII", data[pos + 12:pos + 28])
            if not (0 < fw and 0 < fh and fx + fw <= w and fy + fh <= h):
                raise ImageError(f"{what} is not a valid PNG (an animation frame of {fw}x{fh} at "
                                 f"{fx},{fy} outside its {w}x{h} image)")
        if kind == b"IEND":
            return w, h
        pos += 12 + length
    raise ImageError(f"{what} has more than {MAX_PNG_CHUNKS} PNG chunks")


# --- BMP -------------------------------------------------------------------------------------
# (bits per pixel, compression) that OpenCV's BMP decoder reads: 0 none, 1 RLE8, 2 RLE4, 3 bit fields.
_BMP_KINDS = frozenset({(1, 0), (4, 0), (8, 0), (24, 0), (32, 0), (16, 0), (16, 3), (32, 3), (4, 2), (8, 1)})


def _bmp_size(data: bytes, what: str) -> tuple[int, int]:
    """(width, height) of a BMP, read as OpenCV reads them: a BITMAPINFOHEADER or later (36
    bytes or more: signed 32-bit sizes, a negative height for top-down rows) or an OS/2
    BITMAPCOREHEADER (12 bytes: unsigned 16-bit sizes); any other header is refused."""
    if len(data) < 26:
        raise ImageError(f"{what} is truncated (the file ends inside the BMP header)")
    (header,) = struct.unpack("<i", data[14:18])
    if header >= 36:
        w, h, _planes, bpp, compression = struct.unpack("<iiHHI", data[18:34])
    elif header == 12:
        w, h, bpp = struct.unpack("<HHH", data[18:22] + data[24:26])
        compression = 0
        if bpp not in (1, 4, 8, 24, 32):
            compression = -1
    else:
        raise ImageError(f"{what} is not a BMP fr-pbd can read (a {header}-byte header)")
    if (bpp, compression) not in _BMP_KINDS:
        raise ImageError(f"{what} is not a BMP fr-pbd can read ({bpp} bits per pixel, compression {compression})")
    if w <= 0 or h == 0 or h == -2**31:
        raise ImageError(f"{what} has zero or negative size ({w}x{h})")
    _check_pixels(w, abs(h), what, "BMP")
    return w, abs(h)


# --- PNM -------------------------------------------------------------------------------------
_PNM_SPACE = re.compile(rb"[ \t\n\v\f\r]+")
_PNM_LINE_END = re.compile(rb"[\r\n]")
_PNM_DIGITS = re.compile(rb"[0-9]+")
_PNM_MAX_TOKENS = 10_000


def _pnm_number(data: bytes, pos: int, what: str) -> tuple[int, int]:
    """One header number and the position after it, as OpenCV's ReadNumber reads it: whitespace
    and ``#`` comments (to the end of the line) before it, one byte of any kind after it."""
    for _ in range(_PNM_MAX_TOKENS):
        space = _PNM_SPACE.match(data, pos)
        if space:
            pos = space.end()
        elif data[pos:pos + 1] == b"#":
            end = _PNM_LINE_END.search(data, pos)
            if end is None:
                break
            pos = end.end()
        else:
            digits = _PNM_DIGITS.match(data, pos)
            if digits is None or digits.end() >= len(data):
                break
            text = digits.group().lstrip(b"0") or b"0"
            if len(text) > 10 or int(text) > 2**31 - 1:
                raise ImageError(f"{what} is not a PNM fr-pbd can read (a header number over 2^31)")
            return int(text), digits.end() + 1
    raise ImageError(f"{what} is not a PNM fr-pbd can read (its header does not hold its size)")


def _pnm_size(data: bytes, what: str) -> tuple[int, int]:
    """(width, height) of a PBM/PGM/PPM (P1-P6), read as OpenCV reads them; maxval 1-65535."""
    w, pos = _pnm_number(data, 2, what)
    h, pos = _pnm_number(data, pos, what)
    if data[1:2] not in (b"1", b"4"):
        maxval, pos = _pnm_number(data, pos, what)
        if not 0 < maxval <= 65535:
            raise ImageError(f"{what} is not a PNM fr-pbd can read (maxval {maxval}; 1 to 65535 are read)")
    if w <= 0 or h <= 0:
        raise ImageError(f"{what} has zero size ({w}x{h})")
    _check_pixels(w, h, what, "PNM")
    return w, h


_SIZE_READERS = {"JPEG": _jpeg_size, "PNG": _png_size, "BMP": _bmp_size, "PNM": _pnm_size}


def _check_pixels(w: int, h: int, what: str, fmt: str = "") -> None:
    if w <= 0 or h <= 0:
        raise ImageError(f"{what} has zero size ({w}x{h})")
    if w * h > MAX_PIXELS:
        header = f" by its {fmt} header" if fmt else ""
        raise ImageError(f"{what} is {w}x{h} = {w * h / 1e6:.0f} MP{header}; the limit is {MAX_PIXELS / 1e6:.0f} MP")


def _looks_truncated(data: bytes) -> bool:
    if data[:2] == b"\xff\xd8":
        return b"\xff\xd9" not in data[-4096:]
    if data[:8] == PNG_SIGNATURE:
        return b"IEND" not in data[-64:]
    return False


def decode_image(data: bytes, what: str = "image") -> np.ndarray:
    """Decode encoded image bytes: JPEG, PNG, BMP or PNM, within :data:`MAX_PIXELS`; anything else refused."""
    if len(data) == 0:
        raise ImageError(f"{what} is empty (0 bytes)")
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(f"{what} is {len(data) / 1e6:.0f} MB; the limit is {MAX_FILE_BYTES / 1e6:.0f} MB")
    fmt = image_format(data)
    if fmt is None:
        raise ImageError(f"{what} is not an image fr-pbd can decode (it reads {ACCEPTED})")
    if fmt not in _SIZE_READERS:
        raise ImageError(f"{what} is a {fmt} image; fr-pbd reads only {ACCEPTED}")
    if _looks_truncated(data):
        raise ImageError(f"{what} is truncated (the file ends before the image does)")
    try:
        w, h = _SIZE_READERS[fmt](data, what)
    except (struct.error, IndexError):  # a field past the end: the readers check lengths, this is the net
        raise ImageError(f"{what} is truncated (the file ends inside its {fmt} header)") from None
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        # IMREAD_UNCHANGED keeps 16-bit and alpha; EXIF orientation is applied
        # separately below because UNCHANGED ignores it.
        img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    except cv2.error:
        img = None
    if img is None:
        raise ImageError(f"{what} is not an image fr-pbd can decode (a {fmt} that OpenCV could not read)")
    if img.shape[:2] != (h, w):
        raise ImageError(f"{what} decoded to {img.shape[1]}x{img.shape[0]}, not the {w}x{h} its {fmt} header says")
    img = _apply_exif_orientation(img, data)
    return to_bgr8(img, what)


def _exif_orientation(data: bytes) -> int:
    """EXIF orientation tag (1-8) of a JPEG, 1 if absent or unreadable."""
    if data[:2] != b"\xff\xd8":
        return 1
    i = 2
    n = len(data)
    while i + 4 <= n and data[i] == 0xFF:
        marker = data[i + 1]
        (length,) = struct.unpack(">H", data[i + 2:i + 4])
        if marker == 0xE1 and data[i + 4:i + 10] == b"Exif\x00\x00":
            tiff = data[i + 10:i + 2 + length]
            return _tiff_orientation(tiff)
        if marker == 0xDA:  # start of scan: no more headers
            break
        i += 2 + length
    return 1


def _tiff_orientation(tiff: bytes) -> int:
    try:
        endian = {b"II": "<", b"MM": ">"}[tiff[:2]]
        (ifd,) = struct.unpack(endian + "I", tiff[4:8])
        (count,) = struct.unpack(endian + "H", tiff[ifd:ifd + 2])
        for k in range(count):
            off = ifd + 2 + 12 * k
            tag, typ = struct.unpack(endian + "HH", tiff[off:off + 4])
            if tag == 0x0112 and typ == 3:
                (value,) = struct.unpack(endian + "H", tiff[off + 8:off + 10])
                return value if 1 <= value <= 8 else 1
    except (KeyError, struct.error, IndexError):
        return 1
    return 1


def _apply_exif_orientation(img: np.ndarray, data: bytes) -> np.ndarray:
    o = _exif_orientation(data)
    if o == 1:
        return img
    ops = {
        2: lambda a: cv2.flip(a, 1),
        3: lambda a: cv2.rotate(a, cv2.ROTATE_180),
        4: lambda a: cv2.flip(a, 0),
        5: lambda a: cv2.flip(cv2.rotate(a, cv2.ROTATE_90_CLOCKWISE), 1),
        6: lambda a: cv2.rotate(a, cv2.ROTATE_90_CLOCKWISE),
        7: lambda a: cv2.flip(cv2.rotate(a, cv2.ROTATE_90_COUNTERCLOCKWISE), 1),
        8: lambda a: cv2.rotate(a, cv2.ROTATE_90_COUNTERCLOCKWISE),
    }
    return ops[o](img)


def to_bgr8(img: np.ndarray, what: str = "image") -> np.ndarray:
    """Grey, BGR or BGRA; 8- or 16-bit -> contiguous 8-bit BGR."""
    if not isinstance(img, np.ndarray):
        raise ImageError(f"{what} must be a numpy array, not {type(img).__name__}")
    if img.ndim not in (2, 3):
        raise ImageError(f"{what} has shape {img.shape}; expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)")
    h, w = img.shape[:2]
    _check_pixels(w, h, what)
    if img.ndim == 3 and img.shape[2] not in (1, 3, 4):
        raise ImageError(f"{what} has {img.shape[2]} channels; expected 1, 3 or 4")
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ImageError(f"{what} has dtype {img.dtype}; expected uint8 or uint16")
    if img.ndim == 2 or img.shape[2] == 1:
        return cv2.cvtColor(img.reshape(h, w), cv2.COLOR_GRAY2BGR)
    if img.shape[2] == 4:
        # Composite over black: fully opaque pixels are unchanged.
        alpha = img[:, :, 3:4].astype(np.uint16)
        return np.ascontiguousarray(((img[:, :, :3].astype(np.uint16) * alpha + 127) // 255).astype(np.uint8))
    return np.ascontiguousarray(img)


def load_image(source: ImageSource) -> np.ndarray:
    """An image from a path, encoded bytes, or an array (BGR, as OpenCV uses)."""
    if isinstance(source, np.ndarray):
        return to_bgr8(source, "image array")
    if isinstance(source, (bytes, bytearray, memoryview)):
        return decode_image(bytes(source))
    if isinstance(source, (str, Path)):
        path = Path(source)
        what = str(path)
        if not path.exists():
            raise ImageError(f"{what}: no such file")
        if not path.is_file():
            raise ImageError(f"{what} is not a regular file")
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ImageError(f"{what} is {size / 1e6:.0f} MB; the limit is {MAX_FILE_BYTES / 1e6:.0f} MB")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ImageError(f"{what}: cannot read ({exc.strerror})") from None
        return decode_image(data, what)
    raise ImageError(f"cannot read an image from a {type(source).__name__}")
