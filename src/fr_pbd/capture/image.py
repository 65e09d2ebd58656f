"""Image input: every image enters fr-pbd through :func:`load_image`.

It returns an 8-bit, 3-channel BGR array (OpenCV's order) or raises
:class:`~fr_pbd.errors.ImageError` with a one-line reason. Pixel dimensions
are read from the file header *before* decoding, so a decompression bomb is
refused without allocating it. A PNG's chunk list is walked first too: libpng (as
OpenCV 5 drives it) allocates a chunk's *declared* length before reading it, so a
single corrupted length field in a 44 kB file cost gigabytes and seconds.

Limits: :data:`MAX_FILE_BYTES` encoded bytes, :data:`MAX_PIXELS` pixels,
:data:`MAX_PNG_CHUNKS` PNG chunks.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Union

import cv2
import numpy as np

from fr_pbd.errors import ImageError

MAX_PIXELS = 50_000_000
"""Larger images are refused: no camera frame for face verification needs more."""

MAX_FILE_BYTES = 200 * 1024 * 1024
"""Larger files are refused before they are read."""

MAX_PNG_CHUNKS = 100_000
"""More PNG chunks are refused: at libpng's 8 kB IDAT chunks that is 800 MB, over MAX_FILE_BYTES."""

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

ImageSource = Union[str, Path, bytes, np.ndarray]


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the first SOF marker of a JPEG stream."""
    i = 2
    n = len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2:i + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if i + 9 > n:
                return None
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return w, h
        i += 2 + length
    return None


def _header_size(data: bytes) -> tuple[int, int] | None:
    if data[:8] == PNG_SIGNATURE and len(data) >= 24:
        w, h = struct.unpack(">II", data[16:24])
        return w, h
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    return None


def _looks_truncated(data: bytes) -> bool:
    if data[:2] == b"\xff\xd8":
        return b"\xff\xd9" not in data[-4096:]
    if data[:8] == PNG_SIGNATURE:
        return b"IEND" not in data[-64:]
    return False


def _check_png_chunks(data: bytes, what: str) -> None:
    """Every chunk from IHDR to IEND must lie inside the file (a length that does not is never allocated)."""
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
        if kind == b"IEND":
            return
        pos += 12 + length
    raise ImageError(f"{what} has more than {MAX_PNG_CHUNKS} PNG chunks")


def _check_pixels(w: int, h: int, what: str) -> None:
    if w <= 0 or h <= 0:
        raise ImageError(f"{what} has zero size ({w}x{h})")
    if w * h > MAX_PIXELS:
        raise ImageError(f"{what} is {w}x{h} = {w * h / 1e6:.0f} MP; the limit is {MAX_PIXELS / 1e6:.0f} MP")


def decode_image(data: bytes, what: str = "image") -> np.ndarray:
    """Decode encoded image bytes (JPEG, PNG, BMP, WebP, TIFF ... as OpenCV reads them)."""
    if len(data) == 0:
        raise ImageError(f"{what} is empty (0 bytes)")
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(f"{what} is {len(data) / 1e6:.0f} MB; the limit is {MAX_FILE_BYTES / 1e6:.0f} MB")
    size = _header_size(data)
    if size is not None:
        _check_pixels(*size, what)
    if _looks_truncated(data):
        raise ImageError(f"{what} is truncated (the file ends before the image does)")
    if data[:8] == PNG_SIGNATURE:
        _check_png_chunks(data, what)
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        # IMREAD_UNCHANGED keeps 16-bit and alpha; EXIF orientation is applied
        # separately below because UNCHANGED ignores it.
        img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    except cv2.error:
        img = None
    if img is None:
        raise ImageError(f"{what} is not an image fr-pbd can decode")
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
