"""Phase (a), end to end: image -> detect -> choose face -> quality gate -> align -> embed -> Template.

This is the only place where the steps are put together; each model module
does its own pre- and post-processing only.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np

from fr_pbd import models
from fr_pbd.capture import dlib_resnet, quality, yunet
from fr_pbd.capture.align import align_face
from fr_pbd.capture.image import ImageSource, load_image
from fr_pbd.capture.yunet import Face, YuNet
from fr_pbd.runtime import create_session
from fr_pbd.template import Template

# The detector keeps faces down to the lowest score any policy accepts; each policy
# then applies its own minimum (quality.QualityPolicy.min_face_score).
DETECTION_THRESHOLD = min(p.min_face_score for p in quality.POLICIES.values())

Purpose = Literal["verify", "enrol"]
Selection = Literal["largest", "center"]


@dataclass(frozen=True)
class Capture:
    """What phase (a) keeps of one image: the chosen face, its chip and its quality.

    Internal: it holds pixels. Never logged, never returned by the public API.
    """

    face: Face
    chip_bgr: np.ndarray
    measures: quality.QualityMeasures


def choose_face(faces: list[Face], image_shape: tuple[int, ...], select: Selection) -> Face:
    """The face the user presents: the largest (a device camera), or the most central (LFW)."""
    if select == "largest":
        return max(faces, key=lambda f: float(f.box[2] * f.box[3]))
    h, w = image_shape[:2]
    centre = np.array([w / 2, h / 2])
    return min(faces, key=lambda f: float(np.hypot(*(f.box[:2] + f.box[2:] / 2 - centre))))


class TemplateExtractor:
    """Detector + aligner + embedder, created once and reused."""

    def __init__(self, detector: YuNet, embedder: dlib_resnet.DlibResNetEmbedder) -> None:
        self.detector = detector
        self.embedder = embedder
        self.model_id = embedder.model_id

    def capture(self, image: np.ndarray, purpose: Purpose = "verify", select: Selection = "largest") -> Capture:
        """Find, check and align the face; raise QualityError with a reason code if unusable."""
        policy = quality.POLICIES[purpose]
        faces = [f for f in self.detector.detect(image) if f.score >= policy.min_face_score]
        if not faces:
            raise quality.fail(quality.NO_FACE)
        if policy.exactly_one_face and len(faces) > 1:
            raise quality.fail(quality.MULTIPLE_FACES)
        face = choose_face(faces, image.shape, select)
        chip = align_face(image, face.landmarks, dlib_resnet.ALIGNMENT_REFERENCE, dlib_resnet.INPUT_SIZE)
        measures = quality.measure(face.landmarks, chip)
        quality.check(measures, policy)
        return Capture(face, chip, measures)

    def embed(self, captures: list[Capture]) -> list[Template]:
        if not captures:
            return []
        chips = np.stack([c.chip_bgr[:, :, ::-1] for c in captures])  # BGR -> RGB
        if not dlib_resnet.FLIP_AVERAGE:
            return [Template(v, self.model_id) for v in self.embedder.embed(chips)]
        # One batch: the chips and their mirror images; the template is the mean of
        # both unit vectors (see dlib_resnet.FLIP_AVERAGE).
        out = self.embedder.embed(np.concatenate([chips, chips[:, :, ::-1]]))
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        n = len(captures)
        return [Template(out[i] + out[n + i], self.model_id) for i in range(n)]

    def template(self, image: ImageSource, purpose: Purpose = "verify", select: Selection = "largest") -> Template:
        return self.embed([self.capture(load_image(image), purpose, select)])[0]


@lru_cache(maxsize=2)
def load_extractor(threads: int | None = None) -> TemplateExtractor:
    """The default extractor (YuNet + dlib ResNet) from verified model files."""
    detector = YuNet(create_session(models.resolve(yunet.MODEL_NAME), threads=threads),
                     score_threshold=DETECTION_THRESHOLD)
    session = create_session(models.resolve(dlib_resnet.MODEL_ID), threads=threads)
    return TemplateExtractor(detector, dlib_resnet.DlibResNetEmbedder(session))


def template_from_image(image: ImageSource, purpose: Purpose = "verify", select: Selection = "largest") -> Template:
    """A Template from an image, or QualityError (with ``.reason``) if no usable face."""
    return load_extractor().template(image, purpose, select)
