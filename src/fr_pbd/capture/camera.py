"""Camera sources: a device index, a V4L2 path, a GStreamer pipeline, or a video file.

Frames are read on a worker thread so that a camera that stops delivering
frames gives a :class:`~fr_pbd.errors.CameraError` after ``timeout_s`` instead
of a hang. A recorded video file stands in for a camera in tests; the same
code path serves both. Frames stay in memory: nothing is recorded.

A still image is not a camera. OpenCV opens a file through FFmpeg, whose image demuxers read
stills (by their first bytes, or by the file name alone) and decode them with none of
:mod:`fr_pbd.capture.image`'s checks (a 1 kB BMP declaring 16000 x 16000 is decoded in full
while it is opened, and again at the first read). So a regular file whose first bytes :func:`~fr_pbd.capture.image.image_format`
recognises (an accepted format or a refused one), or whose name ends in a still-image suffix, is
refused before OpenCV sees it; and any source whose frame size, as the backend reports it at
open, exceeds :data:`~fr_pbd.capture.image.MAX_PIXELS` is closed before its first frame is read.
Limits: FFmpeg recognises a few more still formats by content (QOI, PCX, SGI, XWD, ...); one
with no image suffix reaches FFmpeg, which may decode it while opening it, and is then refused by
the size check (``tests/test_camera_bombs.py``: a QOI declaring 12000 x 12000). A video whose
frames are larger than its container says is not checked before its frames are decoded.
"""

from __future__ import annotations

import queue
import re
import threading
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from fr_pbd.capture.image import MAX_PIXELS, image_format
from fr_pbd.errors import CameraError, CameraUnavailableError

DEFAULT_TIMEOUT_S = 5.0

#: File name suffixes of still-image formats (those FFmpeg's image2 demuxer picks by name alone,
#: libavformat/img2.c, and OpenCV's): such a file is refused as a camera whatever its bytes.
STILL_SUFFIXES = frozenset(
    ".bmp .dds .dib .dng .dpx .exr .gif .hdr .im1 .im24 .im32 .im8 .j2c .j2k .jls .jp2 .jpc .jpe .jpeg .jpg "
    ".jps .jxl .ljpg .mpo .pam .pbm .pcd .pcx .pfm .pgm .pgmyuv .pgx .phm .pic .pix .png .pnm .ppm .psd .ptx "
    ".qoi .ras .rs .sgi .sun .sunras .svg .tga .tif .tiff .vbn .webp .xbm .xface .xpm .xwd".split())
#: Major brands of an ISO-BMFF file that is an image (HEIF/AVIF), not a video (``ftyp`` is both).
_STILL_BRANDS = frozenset({b"avif", b"avis", b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1"})


def _still_image(path: Path) -> str | None:
    """The still-image format of a regular file (by its first bytes or its name), else None."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as exc:
        raise CameraUnavailableError(f"camera source {path}: {exc.strerror or exc}") from None
    fmt = image_format(head)
    if fmt == "WebP" and head[8:12] != b"WEBP":
        fmt = None  # RIFF is also AVI's container
    elif fmt == "AVIF/HEIF" and head[8:12] not in _STILL_BRANDS:
        fmt = None  # ftyp is also MP4's and QuickTime's
    if fmt is None and path.suffix.lower() in STILL_SUFFIXES:
        fmt = f"a {path.suffix.lower()} file"
    return fmt


def _open_capture(source: str | int) -> cv2.VideoCapture:
    """The opened source, refused (released, CameraUnavailableError) if its frames exceed the pixel budget."""
    cap = _new_capture(source)
    if cap.isOpened():
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
        if w * h > MAX_PIXELS:
            cap.release()
            raise CameraUnavailableError(f"camera source {source} gives {w}x{h} frames, more than the "
                                         f"{MAX_PIXELS // 1_000_000} MP any frame may have; nothing was read")
    return cap


def _new_capture(source: str | int) -> cv2.VideoCapture:
    """Interpret a source spec: ``0``, ``/dev/video0``, a GStreamer pipeline (has ``!``), a file (never a still)."""
    if isinstance(source, int) or (isinstance(source, str) and re.fullmatch(r"\d+", source)):
        return cv2.VideoCapture(int(source))
    if "!" in source:
        return cv2.VideoCapture(source, cv2.CAP_GSTREAMER)
    if source.startswith("/dev/video"):
        return cv2.VideoCapture(source, cv2.CAP_V4L2)
    path = Path(source)
    if not path.exists():
        raise CameraUnavailableError(f"camera source {source}: no such device or file")
    if path.is_file():
        fmt = _still_image(path)
        if fmt is not None:
            raise CameraUnavailableError(f"camera source {source} is a still image ({fmt}), not a camera or a "
                                         "video; nothing was read")
    return cv2.VideoCapture(source)


class CameraSource:
    """Frames from a camera, with a timeout on every read. Use as a context manager."""

    def __init__(self, source: str | int, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        if timeout_s <= 0:
            raise CameraError("camera timeout must be positive")
        self.source = source
        self.timeout_s = timeout_s
        self._cap = _open_capture(source)
        if not self._cap.isOpened():
            self._cap.release()
            raise CameraUnavailableError(f"camera source {source} could not be opened")
        self._frames: queue.Queue = queue.Queue(maxsize=2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fr-pbd-camera", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            ok, frame = self._cap.read()
            item = frame if ok and frame is not None and frame.size else None
            while not self._stop.is_set():
                try:
                    self._frames.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if item is None:
                return

    def read(self) -> np.ndarray:
        """The next frame (BGR uint8), or CameraError on end of stream or timeout."""
        try:
            frame = self._frames.get(timeout=self.timeout_s)
        except queue.Empty:
            raise CameraError(f"camera source {self.source} delivered no frame within {self.timeout_s:g} s") from None
        if frame is None:
            raise CameraError(f"camera source {self.source} stopped delivering frames")
        return frame

    def frames(self) -> Iterator[np.ndarray]:
        """Frames as they are asked for (one verification attempt takes several); CameraError ends it."""
        while True:
            yield self.read()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)
        self._cap.release()

    def __enter__(self) -> "CameraSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
