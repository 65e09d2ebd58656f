"""Face detection: the first step of phase (a)."""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

from fr_pbd import models
from fr_pbd.capture import yunet
from fr_pbd.capture.image import ImageSource, load_image
from fr_pbd.capture.yunet import AdaptiveYuNet, Face, YuNet
from fr_pbd.errors import ModelNotFoundError
from fr_pbd.runtime import create_session

__all__ = ["AdaptiveYuNet", "Face", "YuNet", "create_detector", "load_detector", "detect_faces",
           "VARIANT_MODELS"]

# Input-size variants, by (w, h): manifest names (built by fr_pbd.build.yunet_variants).
VARIANT_MODELS: dict[tuple[int, int], str] = {
    (640, 480): "yunet-2023mar-640x480",
    (320, 256): "yunet-2023mar-320x256",
    (160, 128): "yunet-2023mar-160x128",
}


def _useful_sizes(max_input: tuple[int, int]) -> list[tuple[int, int]]:
    """Variants the policy can pick for this ``max_input``, by area, up to the first that holds it.

    A scaled frame always spans ``max_input``'s full width or full height, so a graph
    narrower *and* lower than ``max_input`` is never picked (e.g. 160x128 at 640x640).
    """
    out = []
    for size in sorted(VARIANT_MODELS, key=lambda s: s[0] * s[1]):
        if size[0] < max_input[0] and size[1] < max_input[1]:
            continue
        out.append(size)
        if size[0] >= max_input[0] and size[1] >= max_input[1]:
            break
    return out


def create_detector(threads: int | None = None, score_threshold: float = yunet.SCORE_THRESHOLD,
                    max_input: tuple[int, int] = yunet.INPUT_SIZE,
                    providers: Sequence[str] | None = None,
                    first_input: tuple[int, int] | None = None) -> AdaptiveYuNet:
    """YuNet on every input size the policy may use, sessions created now (not per frame).

    The 640x640 file is required. A variant that is not built is skipped (the frame
    runs on a larger graph at the same scale); a variant that fails its hash check is
    an error, never skipped. ``first_input``: the first pass's size (policy rule 4 in
    :mod:`fr_pbd.capture.yunet`), e.g. ``yunet.FIRST_PASS_INPUT``; its graph is loaded too.
    """
    def make(name: str) -> YuNet:
        session = create_session(models.resolve(name), threads=threads, providers=providers)
        return YuNet(session, score_threshold=score_threshold)

    detectors = {yunet.INPUT_SIZE: make(yunet.MODEL_NAME)}
    missing: list[str] = []
    wanted = _useful_sizes(max_input)
    if first_input is not None:
        wanted += [s for s in _useful_sizes(first_input) if s not in wanted]
    for size in wanted:
        try:
            detectors[size] = make(VARIANT_MODELS[size])
        except ModelNotFoundError:
            missing.append(VARIANT_MODELS[size])
    return AdaptiveYuNet(detectors, max_input=max_input, missing_variants=tuple(missing), first_input=first_input)


@lru_cache(maxsize=4)
def load_detector(threads: int | None = None, max_input: tuple[int, int] = yunet.INPUT_SIZE) -> AdaptiveYuNet:
    """The detector from verified model files, created once per process."""
    return create_detector(threads=threads, max_input=max_input)


def detect_faces(image: ImageSource) -> list[Face]:
    """Every face in an image (path, bytes or BGR array), best first."""
    return load_detector().detect(load_image(image))
