"""Process-wide limits that native libraries read once, when they are loaded, so they are set first.

``fr_pbd/__init__`` calls :func:`set_native_limits` before any fr-pbd module can import OpenCV:
OpenCV reads ``OPENCV_IO_MAX_IMAGE_PIXELS`` once, when cv2 is loaded, and checks every decoded
image against it. Set to :data:`MAX_IMAGE_PIXELS` (unless a lower value is set already), it is a
second barrier behind :mod:`fr_pbd.capture.image`'s header checks, whichever module of fr-pbd
happens to import cv2 first.
"""

from __future__ import annotations

import os
import sys

__all__ = ["MAX_IMAGE_PIXELS", "opencv_limit_in_force", "set_native_limits"]

#: Larger images are refused: no camera frame for face verification needs more.
MAX_IMAGE_PIXELS = 50_000_000


def _lower(name: str, value: int) -> None:
    current = os.environ.get(name, "")
    if not (current.isdigit() and 0 < int(current) <= value):
        os.environ[name] = str(value)


_in_force: bool | None = None


def set_native_limits() -> None:
    """OpenCV's own decoded-image limit, at fr-pbd's pixel budget (a lower one already set is kept)."""
    global _in_force
    if _in_force is None:  # the first call decides: was cv2 loaded before the variable was set?
        _in_force = "cv2" not in sys.modules
    _lower("OPENCV_IO_MAX_IMAGE_PIXELS", MAX_IMAGE_PIXELS)


def opencv_limit_in_force() -> bool:
    """Whether OpenCV read the limit: it was set before this process first loaded cv2."""
    return bool(_in_force)
