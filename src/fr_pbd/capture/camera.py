"""Camera sources: a device index, a V4L2 path, a GStreamer pipeline, or a video file.

Frames are read on a worker thread so that a camera that stops delivering
frames gives a :class:`~fr_pbd.errors.CameraError` after ``timeout_s`` instead
of a hang. A recorded video file stands in for a camera in tests; the same
code path serves both. Frames stay in memory: nothing is recorded.
"""

from __future__ import annotations

import queue
import re
import threading
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from fr_pbd.errors import CameraError, CameraUnavailableError

DEFAULT_TIMEOUT_S = 5.0


def _open_capture(source: str | int) -> cv2.VideoCapture:
    """Interpret a source spec: ``0``, ``/dev/video0``, a GStreamer pipeline (has ``!``), a file."""
    if isinstance(source, int) or (isinstance(source, str) and re.fullmatch(r"\d+", source)):
        return cv2.VideoCapture(int(source))
    if "!" in source:
        return cv2.VideoCapture(source, cv2.CAP_GSTREAMER)
    if source.startswith("/dev/video"):
        return cv2.VideoCapture(source, cv2.CAP_V4L2)
    if not Path(source).exists():
        raise CameraUnavailableError(f"camera source {source}: no such device or file")
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
