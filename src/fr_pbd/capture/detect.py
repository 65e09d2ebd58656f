"""Face detection: the first step of phase (a)."""

from __future__ import annotations

from functools import lru_cache

from fr_pbd import models
from fr_pbd.capture import yunet
from fr_pbd.capture.image import ImageSource, load_image
from fr_pbd.capture.yunet import Face, YuNet
from fr_pbd.runtime import create_session

__all__ = ["Face", "YuNet", "load_detector", "detect_faces"]


@lru_cache(maxsize=4)
def load_detector(threads: int | None = None) -> YuNet:
    """The YuNet detector from a verified model file, created once per process."""
    return YuNet(create_session(models.resolve(yunet.MODEL_NAME), threads=threads))


def detect_faces(image: ImageSource) -> list[Face]:
    """Every face in an image (path, bytes or BGR array), best first."""
    return load_detector().detect(load_image(image))
