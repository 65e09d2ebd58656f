"""Phase (a), end to end: image -> detect -> choose face -> quality gate -> align -> embed -> Template.

:class:`TemplateExtractor` runs the steps in order; each model module does its own
pre- and post-processing only. Which models, on which execution provider and with how
many threads is decided in one place, :func:`fr_pbd.pipeline.build_pipeline`.
"""

from __future__ import annotations

import time
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Callable, Literal, Protocol

import cv2
import numpy as np

from fr_pbd.capture import dlib_resnet, quality, sface
from fr_pbd.capture.align import align_face, similarity_transform, warp_chip
from fr_pbd.capture.image import ImageSource, load_image
from fr_pbd.capture.yunet import AdaptiveYuNet, Face, YuNet
from fr_pbd.errors import ModelError
from fr_pbd.template import Template
from fr_pbd.timing import StageHook, stage

# The detector keeps faces down to the lowest score any policy accepts; each policy
# then applies its own minimum (quality.QualityPolicy.min_face_score).
DETECTION_THRESHOLD = min(p.min_face_score for p in quality.POLICIES.values())

Purpose = Literal["verify", "enrol"]
Selection = Literal["largest", "center"]


class Embedder(Protocol):
    """What the pipeline needs of an embedder: how to cut and order its chip, and ``embed``."""

    model_id: str
    input_size: int
    embedding_dim: int  # the template's length: what a store made for this model records
    alignment_reference: np.ndarray
    channel_order: str  # "RGB" or "BGR": the order ``embed`` takes
    flip_average: bool
    area_prefilter: bool  # shrink large faces with area averaging before the warp

    def embed(self, chips: np.ndarray) -> np.ndarray: ...


# The embedders fr-pbd can use, by manifest name. dlib-resnet-v1 is the default;
# SFace is optional (used only when asked for and its file is present). A test adds
# its own through fr_pbd.pipeline.register_embedder (registry and manifest together).
EMBEDDERS: dict[str, Any] = {
    dlib_resnet.MODEL_ID: dlib_resnet.DlibResNetEmbedder,
    sface.MODEL_ID: sface.SFaceEmbedder,
}


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

    def __init__(self, detector: YuNet | AdaptiveYuNet, embedder: Embedder, lanes: Executor | None = None) -> None:
        """``lanes``: workers that run the mirror chip and the ``check`` beside the caller's thread
        (:func:`fr_pbd.runtime.lane_pool`); None runs everything in the caller's thread, in turn."""
        if embedder.channel_order not in ("RGB", "BGR"):
            raise ModelError(f"unsupported channel order {embedder.channel_order!r} for {embedder.model_id}")
        self.detector = detector
        self.embedder = embedder
        self.lanes = lanes
        self.model_id = embedder.model_id
        # The quality gate's sharpness and exposure limits were measured on dlib-geometry
        # chips (tools/measure_quality_lfw.py), so it always looks at one: the embedder's
        # own chip when it has that geometry, else a second, gate-only chip.
        self._gate_on_chip = (
            embedder.input_size == dlib_resnet.INPUT_SIZE
            and embedder.area_prefilter == dlib_resnet.AREA_PREFILTER
            and np.array_equal(embedder.alignment_reference, dlib_resnet.ALIGNMENT_REFERENCE)
        )

    def align(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """The embedder's BGR chip: its reference points, its size, with or without area pre-filter."""
        emb = self.embedder
        m = similarity_transform(landmarks, emb.alignment_reference)
        if emb.area_prefilter:
            return warp_chip(image, m, emb.input_size)
        return cv2.warpAffine(image, m, (emb.input_size, emb.input_size), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    def capture(self, image: np.ndarray, purpose: Purpose = "verify", select: Selection = "largest",
                hook: StageHook | None = None, on_face: Callable[[Face], None] | None = None) -> Capture:
        """Find, check and align the face; raise QualityError with a reason code if unusable.

        ``on_face`` is called with the chosen face as soon as it is chosen, before the
        alignment and the quality gate (:meth:`template` starts the liveness lane there).
        """
        policy = quality.POLICIES[purpose]
        with stage(hook, "detect"):
            if isinstance(self.detector, AdaptiveYuNet):  # the first pass only where it cannot change the answer
                found = self.detector.detect(image, first_pass=purpose == "verify" and select == "largest")
            else:
                found = self.detector.detect(image)
        with stage(hook, "align"):
            faces = [f for f in found if f.score >= policy.min_face_score]
            if not faces:
                raise quality.fail(quality.NO_FACE)
            if policy.exactly_one_face and len(faces) > 1:
                raise quality.fail(quality.MULTIPLE_FACES)
            face = choose_face(faces, image.shape, select)
            if on_face is not None:
                on_face(face)
            chip = self.align(image, face.landmarks)
        with stage(hook, "quality"):
            gate_chip = chip if self._gate_on_chip else align_face(
                image, face.landmarks, dlib_resnet.ALIGNMENT_REFERENCE, dlib_resnet.INPUT_SIZE)
            measures = quality.measure(face.landmarks, gate_chip)
            quality.check(measures, policy)
        return Capture(face, chip, measures)

    def embed(self, captures: list[Capture]) -> list[Template]:
        if not captures:
            return []
        rgb = self.embedder.channel_order == "RGB"
        chips = np.stack([c.chip_bgr[:, :, ::-1] if rgb else c.chip_bgr for c in captures])  # the embedder's order
        if not self.embedder.flip_average:
            return [Template(v, self.model_id) for v in self.embedder.embed(chips)]
        # The chips and their mirror images; the template is the mean of both unit
        # vectors (see the embedder module's FLIP_AVERAGE). With lanes, the mirrors run in a
        # worker while this thread runs the chips (docs/performance.md); else one batch.
        mirrors = np.ascontiguousarray(chips[:, :, ::-1])
        if self.lanes is None:
            out = self.embedder.embed(np.concatenate([chips, mirrors]))
        else:
            pending = self.lanes.submit(self.embedder.embed, mirrors)
            try:
                first = self.embedder.embed(chips)
            finally:
                second = pending.result()
            out = np.concatenate([first, second])
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        n = len(captures)
        return [Template(out[i] + out[n + i], self.model_id) for i in range(n)]

    def template(self, image: ImageSource, purpose: Purpose = "verify", select: Selection = "largest",
                 check: Callable[[np.ndarray, Face], None] | None = None,
                 hook: StageHook | None = None, on_usable: Callable[[], None] | None = None) -> Template:
        """``check`` (e.g. liveness) sees the raw decoded frame and the chosen face; it may raise.

        ``on_usable`` is called (no argument: it learns nothing of the face) once the face has
        passed the quality gate, before the embedder runs: from there on the frame is an
        attempt whatever the check says, so the verifier starts counting it then, beside the
        embedder (docs/lockout.md).

        With lanes, ``check`` starts in a worker as soon as the face is chosen and runs while
        the face is aligned, gated and embedded. A quality refusal still wins (the check's
        outcome is then dropped, as if it had not run); otherwise the check's exception (an
        attack) is raised after both are done and takes precedence, so the caller sees what it
        saw when the check ran first; the template is then dropped.

        ``hook`` receives each stage's duration (``fr-pbd bench``); it never sees pixels or vectors.
        With lanes, ``liveness`` and ``embed`` overlap; ``liveness_embed`` is their wall time.
        """
        with stage(hook, "decode"):
            frame = load_image(image)
        if check is None or self.lanes is None:
            capture = self.capture(frame, purpose, select, hook)
            if on_usable is not None:
                on_usable()
            if check is not None:
                with stage(hook, "liveness"):
                    check(frame, capture.face)
            with stage(hook, "embed"):
                return self.embed([capture])[0]
        lanes, started = self.lanes, []

        def start(face: Face) -> None:
            started.append((time.perf_counter(), lanes.submit(_timed, check, frame, face)))

        try:
            capture = self.capture(frame, purpose, select, hook, on_face=start)
        except BaseException:
            for _, pending in started:  # the refusal stands; the check's outcome is dropped
                pending.exception()
            raise
        t0, pending = started[0]
        try:
            if on_usable is not None:
                on_usable()
            with stage(hook, "embed"):
                template = self.embed([capture])[0]
        finally:
            seconds, error = pending.result()
            if hook is not None:
                hook("liveness", seconds)
                hook("liveness_embed", time.perf_counter() - t0)  # from the check's start to both done
            if error is not None:
                raise error
        return template


def _timed(check: Callable[[np.ndarray, Face], None], frame: np.ndarray, face: Face) -> tuple[float, Exception | None]:
    """Run ``check`` in a lane: (its duration, the exception it raised or None), for the caller's thread."""
    t0 = time.perf_counter()
    try:
        check(frame, face)
    except Exception as exc:  # noqa: BLE001 - handed back to the caller's thread and raised there
        return time.perf_counter() - t0, exc
    return time.perf_counter() - t0, None
