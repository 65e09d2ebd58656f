"""Presentation-attack detection (PAD): the MiniFASNetV2 + MiniFASNetV1SE ensemble, pre/post-processing only.

Weights: minivision-ai/Silent-Face-Anti-Spoofing (Apache-2.0), ONNX export by
yakhyo/face-anti-spoofing; both files are pinned in ``models/manifest.toml``.
This module does what upstream's ``test.py`` does around the networks, step by
step:

1. crop: :func:`crop_box` is upstream's ``CropImage._get_new_box``
   (``src/generate_patches.py``): a box ``scale`` times the face box, centred
   on it, shrunk only if it would not fit the image, and *shifted* (not
   clipped) back inside the frame at the borders; the slice includes the
   right/bottom pixel (``[y1:y2+1, x1:x2+1]``) and ``cv2.resize`` (bilinear)
   takes it to 80x80;
2. input: BGR, raw 0-255 floats, NCHW, no mean/std (upstream's ``to_tensor``
   has the ``div(255)`` commented out);
3. output: softmax over 3 classes per model, the two softmaxes averaged;
   class 1 is "real".

It must see the **raw** frame: the exact pixels the camera gave, before any
contrast, gamma or denoising step. A peer project ran liveness after contrast
enhancement and a print attack passed; the verifier therefore calls it on the
frame it decoded, never on a chip or an enhanced copy.

The score is biometric-derived: it is returned to the caller (the verifier
turns it into a yes/no; ``fr-pbd eval pad`` aggregates it) and never logged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from fr_pbd.capture.yunet import Face
from fr_pbd.errors import ImageError, ModelError

MODEL_V2 = "minifasnet-v2"  # manifest name; upstream 2.7_80x80_MiniFASNetV2.pth
MODEL_V1SE = "minifasnet-v1se"  # manifest name; upstream 4_0_0_80x80_MiniFASNetV1SE.pth
MODEL_NAMES = (MODEL_V2, MODEL_V1SE)
CROP_SCALE_V2 = 2.7
CROP_SCALE_V1SE = 4.0
CROP_SCALES = {MODEL_V2: CROP_SCALE_V2, MODEL_V1SE: CROP_SCALE_V1SE}
INPUT_SIZE = 80  # (80, 80): width and height of each network's input
INPUT_NAME = "input"  # float32 [1, 3, 80, 80], BGR, raw 0-255
OUTPUT_NAME = "output"  # float32 [1, 3] logits
NUM_CLASSES = 3
REAL_CLASS = 1  # classes 0 and 2 are the two spoof classes upstream trained on

# Decision rule. Upstream calls a face real when class 1 is the argmax of the
# averaged softmax, i.e. p_real anywhere in (1/3, 1] can pass depending on how
# the spoof mass is split. fr-pbd uses a fixed threshold on p_real instead, so
# that the operating point is one number that eval and verify share: p_real >= 0.5
# implies upstream's argmax (no other class can then be larger), so it is never
# looser than upstream. Measured on the samples and on LFW/faces in docs/pad.md.
DEFAULT_THRESHOLD = 0.5


def crop_box(src_w: int, src_h: int, bbox: Sequence[float], scale: float) -> tuple[int, int, int, int]:
    """Upstream's ``CropImage._get_new_box``: (x1, y1, x2, y2), inclusive corners, in image pixels.

    ``bbox`` is (x, y, w, h). The scale is lowered if the enlarged box would be
    wider or taller than the image; a box past an edge is moved back inside
    (so the face is off-centre in the crop, as in training), never clipped.
    """
    x, y, box_w, box_h = (float(v) for v in bbox)
    if not (box_w > 0 and box_h > 0) or src_w < 2 or src_h < 2:
        raise ImageError("face box or image too small for the liveness crop")
    scale = min((src_h - 1) / box_h, min((src_w - 1) / box_w, scale))
    new_width = box_w * scale
    new_height = box_h * scale
    center_x, center_y = box_w / 2 + x, box_h / 2 + y
    left_top_x = center_x - new_width / 2
    left_top_y = center_y - new_height / 2
    right_bottom_x = center_x + new_width / 2
    right_bottom_y = center_y + new_height / 2
    if left_top_x < 0:
        right_bottom_x -= left_top_x
        left_top_x = 0
    if left_top_y < 0:
        right_bottom_y -= left_top_y
        left_top_y = 0
    if right_bottom_x > src_w - 1:
        left_top_x -= right_bottom_x - src_w + 1
        right_bottom_x = src_w - 1
    if right_bottom_y > src_h - 1:
        left_top_y -= right_bottom_y - src_h + 1
        right_bottom_y = src_h - 1
    return int(left_top_x), int(left_top_y), int(right_bottom_x), int(right_bottom_y)


def upstream_bbox(face: Face) -> tuple[int, int, int, int]:
    """The face box as upstream's detector hands it over: ``[int(left), int(top), int(w+1), int(h+1)]``.

    Upstream's ``Detection.get_bbox`` returns ``int(right-left+1)``; YuNet gives
    float (x, y, w, h), so right - left = w.
    """
    x, y, w, h = (float(v) for v in face.box)
    return int(x), int(y), int(w + 1), int(h + 1)


def crop(frame_bgr: np.ndarray, face: Face, scale: float) -> np.ndarray:
    """The 80x80 BGR patch one network sees (upstream's ``CropImage.crop``)."""
    h, w = frame_bgr.shape[:2]
    x1, y1, x2, y2 = crop_box(w, h, upstream_bbox(face), scale)
    patch = frame_bgr[y1:y2 + 1, x1:x2 + 1]
    if patch.size == 0:
        raise ImageError("empty liveness crop")
    return cv2.resize(patch, (INPUT_SIZE, INPUT_SIZE))


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


class LivenessDetector:
    """Two MiniFASNet networks; ``score`` is the averaged probability that the face is real."""

    def __init__(self, sessions: dict[str, Any], threshold: float = DEFAULT_THRESHOLD) -> None:
        """``sessions``: manifest name -> a network made from verified bytes with onnxruntime's ``run``:
        :class:`fr_pbd.runtime.OpenCvNet` in the pipeline (2.3-2.6x faster for these graphs), or an
        onnxruntime session (the tests' oracle)."""
        if set(sessions) != set(MODEL_NAMES):
            raise ModelError(f"liveness needs both {', '.join(MODEL_NAMES)}")
        for name, s in sessions.items():
            if [i.name for i in s.get_inputs()] != [INPUT_NAME] or OUTPUT_NAME not in [o.name for o in s.get_outputs()]:
                raise ModelError(f"{name} is not a MiniFASNet model (unexpected input/output names)")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError("liveness threshold must be in [0, 1]")
        self._sessions = dict(sessions)
        self.threshold = float(threshold)

    def probabilities(self, frame_bgr: np.ndarray, face: Face) -> np.ndarray:
        """The averaged 3-class softmax (upstream's ``prediction / 2``)."""
        frame = np.asarray(frame_bgr)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ImageError("liveness needs the raw BGR uint8 frame")
        total = np.zeros(NUM_CLASSES, dtype=np.float64)
        for name in MODEL_NAMES:
            patch = crop(frame, face, CROP_SCALES[name])
            x = np.ascontiguousarray(patch.transpose(2, 0, 1)[None], dtype=np.float32)
            (logits,) = self._sessions[name].run([OUTPUT_NAME], {INPUT_NAME: x})
            total += softmax(np.asarray(logits).reshape(NUM_CLASSES))
        return total / len(MODEL_NAMES)

    def score(self, frame_bgr: np.ndarray, face: Face) -> float:
        """Probability of a bona fide (real) presentation, in [0, 1]. Biometric-derived: never log it."""
        return float(self.probabilities(frame_bgr, face)[REAL_CLASS])

    def is_live(self, frame_bgr: np.ndarray, face: Face, threshold: float | None = None) -> bool:
        """True if the face is taken as real: ``score >= threshold``."""
        t = self.threshold if threshold is None else threshold
        return self.score(frame_bgr, face) >= t
