"""YuNet 2023mar face detector on onnxruntime (pre- and post-processing only).

The released ONNX graph is fixed at 640x640; fr-pbd also builds input-size
variants of it (``fr_pbd.build.yunet_variants``: 640x480, 320x256, 160x128). A
frame is scaled (aspect kept) and padded at the right and bottom to the input
size of one graph; detections are mapped back by the same scale. Decoding and
NMS follow OpenCV's ``FaceDetectorYN`` (face_detect.cpp) step by step, so
``cv2.FaceDetectorYN`` at the same input size on the same input is an exact oracle.

Which graph runs a frame (:class:`AdaptiveYuNet`, the policy):

1. The *detection scale* is the one that fits the frame into ``max_input``
   (default 640x640): ``s = min(max_w / w, max_h / h)``, as the 640x640 letterbox
   always did. So the default never changes what the detector sees, only how much
   padding it runs on; a board profile lowers ``max_input`` (e.g. 320x240) to trade
   small-face recall for speed.
2. The scaled frame, ``round(w*s) x round(h*s)``, runs on the *smallest-area graph
   that holds it* among those present and verified. A 640x480 frame at the default
   runs on 640x480 (no padding, 25 % less work); at 320x240 on 320x256.
3. A variant whose file is missing (not built) is skipped with no error: the frame
   then runs on the next larger one, at worst on the 640x640 file, at the same
   scale, so results agree and only speed is lost (``missing_variants`` says so).
4. First pass (``first_input``; **off** in :func:`fr_pbd.pipeline.build_pipeline`: measured
   in docs/performance.md, its face box is too coarse for the liveness crop), for a
   verification of the largest face only: a face at
   unlock distance is large, so the frame first runs at the scale that fits
   ``first_input`` (320x240: a quarter of the work). Its faces are kept when the largest
   has eyes at least :data:`FIRST_PASS_MIN_EYE_PX` apart at that scale; otherwise (no
   face, or only small ones) the frame runs again at the detection scale of rule 1, and
   only that second answer counts. Enrolment and the ``center`` choice (LFW) never take
   the first pass: a smaller face the first pass might miss could change their answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
import onnxruntime as ort

MODEL_NAME = "yunet-2023mar"
INPUT_SIZE = (640, 640)  # (width, height) of the released graph: the fallback every frame fits
STRIDES = (8, 16, 32)
NUM_LANDMARKS = 5
LANDMARK_NAMES = ("right_eye", "left_eye", "nose_tip", "right_mouth_corner", "left_mouth_corner")
SCORE_THRESHOLD = 0.9  # OpenCV's default; score = sqrt(cls * obj)
NMS_THRESHOLD = 0.3
TOP_K = 5000

# The first pass (policy rule 4): its input, and the smallest face it may answer for,
# as the distance between the eyes at the first pass's scale, in pixels. 32 px there
# is 64 px in a 640x480 frame (a face about 25 cm wide at 50 cm from a 60-degree
# webcam); docs/performance.md gives the template agreement measured with it.
FIRST_PASS_INPUT = (320, 240)
FIRST_PASS_MIN_EYE_PX = 32.0


@dataclass(frozen=True)
class Face:
    """One detected face in original-image pixels.

    ``box`` is (x, y, w, h); ``landmarks`` is 5x2 in YuNet's order: right eye,
    left eye, nose tip, right and left mouth corner (the subject's right/left).
    """

    box: np.ndarray = field(repr=False)
    landmarks: np.ndarray = field(repr=False)
    score: float = field(repr=False)

    def to_dict(self) -> dict:
        return {
            "box": [round(float(v), 2) for v in self.box],
            "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks],
            "score": round(float(self.score), 4),
        }


def fit_scale(image_wh: tuple[int, int], size: tuple[int, int]) -> float:
    """The scale that fits a (w, h) image into ``size`` (w, h), aspect kept."""
    return min(size[0] / image_wh[0], size[1] / image_wh[1])


def scaled_size(image_wh: tuple[int, int], scale: float, size: tuple[int, int]) -> tuple[int, int]:
    """Pixel size of the image at ``scale``, clipped to ``size``: the letterbox's content area."""
    w, h = image_wh
    return max(1, min(size[0], round(w * scale))), max(1, min(size[1], round(h * scale)))


def letterbox(image: np.ndarray, size: tuple[int, int] = INPUT_SIZE,
              scale: float | None = None) -> tuple[np.ndarray, float]:
    """Scale ``image`` (to fit ``size`` (w, h) unless ``scale`` is given), pad right/bottom with zeros."""
    h, w = image.shape[:2]
    tw, th = size
    if scale is None:
        scale = fit_scale((w, h), size)
    nw, nh = scaled_size((w, h), scale, size)
    out = np.zeros((th, tw, 3), dtype=np.uint8)
    out[:nh, :nw] = _resize(image, nw, nh, scale)
    return out, scale


def _resize(image: np.ndarray, nw: int, nh: int, scale: float) -> np.ndarray:
    h, w = image.shape[:2]
    if (nw, nh) == (w, h):
        return image
    return cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def _overlap(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """IoU of integer rectangles as cv::dnn::NMSBoxes computes it (Rect2i, area w*h)."""
    x1 = np.maximum(box[0], others[:, 0])
    y1 = np.maximum(box[1], others[:, 1])
    x2 = np.minimum(box[0] + box[2], others[:, 0] + others[:, 2])
    y2 = np.minimum(box[1] + box[3], others[:, 1] + others[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    union = box[2] * box[3] + others[:, 2] * others[:, 3] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, score_threshold: float, nms_threshold: float,
        top_k: int = TOP_K) -> np.ndarray:
    """Greedy NMS, OpenCV's rules: int boxes, stable score order, suppress IoU > threshold."""
    rects = np.trunc(boxes).astype(np.int64)  # Rect2i(int(x), int(y), int(w), int(h))
    candidates = np.flatnonzero(scores > score_threshold)
    order = candidates[np.argsort(-scores[candidates], kind="stable")][:top_k]
    keep: list[int] = []
    for i in order:
        if not keep or np.all(_overlap(rects[i], rects[keep]) <= nms_threshold):
            keep.append(int(i))
    return np.asarray(keep, dtype=np.int64)


class YuNet:
    """The YuNet detector. Create once; call :meth:`detect` per frame."""

    def __init__(self, session: ort.InferenceSession, score_threshold: float = SCORE_THRESHOLD,
                 nms_threshold: float = NMS_THRESHOLD, top_k: int = TOP_K) -> None:
        self._session = session
        self._input_name = session.get_inputs()[0].name
        shape = session.get_inputs()[0].shape
        self.input_size = (int(shape[3]), int(shape[2]))
        self._output_names = [f"{k}_{s}" for k in ("cls", "obj", "bbox", "kps") for s in STRIDES]
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.top_k = top_k
        w, h = self.input_size
        self._blob = np.zeros((1, 3, h, w), dtype=np.float32)
        self._canvas = np.zeros((h, w, 3), dtype=np.uint8)  # reused letterbox, padding stays zero
        self._content = (w, h)  # area of the canvas the last frame wrote
        self._grids = {s: self._grid(w // s, h // s) for s in STRIDES}

    @staticmethod
    def _grid(cols: int, rows: int) -> np.ndarray:
        c, r = np.meshgrid(np.arange(cols, dtype=np.float32), np.arange(rows, dtype=np.float32))
        return np.stack([c.ravel(), r.ravel()], axis=1)  # (rows*cols, 2) as (c, r)

    def infer(self, padded: np.ndarray) -> list[np.ndarray]:
        """Run the network on an already padded BGR uint8 image of the input size."""
        np.copyto(self._blob[0], padded.transpose(2, 0, 1), casting="unsafe")
        return self._session.run(self._output_names, {self._input_name: self._blob})

    def decode(self, outputs: list[np.ndarray]) -> np.ndarray:
        """Raw outputs -> (K, 15) rows [x, y, w, h, 10 landmark coords, score], after NMS."""
        rows = []
        n = len(STRIDES)
        for i, s in enumerate(STRIDES):
            cls = np.clip(outputs[i][0, :, 0], 0.0, 1.0)
            obj = np.clip(outputs[i + n][0, :, 0], 0.0, 1.0)
            score = np.sqrt(cls * obj)
            idx = np.flatnonzero(score >= self.score_threshold)
            if idx.size == 0:
                continue
            grid = self._grids[s][idx]
            bbox = outputs[i + 2 * n][0, idx]
            kps = outputs[i + 3 * n][0, idx]
            cxy = (grid + bbox[:, :2]) * s
            wh = np.exp(bbox[:, 2:4]) * s
            xy = cxy - wh / 2
            lm = (kps.reshape(-1, NUM_LANDMARKS, 2) + grid[:, None, :]) * s
            rows.append(np.concatenate([xy, wh, lm.reshape(-1, 10), score[idx, None]], axis=1))
        if not rows:
            return np.zeros((0, 15), dtype=np.float32)
        faces = np.concatenate(rows).astype(np.float32)
        if len(faces) > 1:
            faces = faces[nms(faces[:, :4], faces[:, 14], self.score_threshold, self.nms_threshold, self.top_k)]
        return faces

    def prepare(self, image: np.ndarray, scale: float) -> np.ndarray:
        """The letterboxed input in the reused canvas (same pixels as :func:`letterbox`)."""
        h, w = image.shape[:2]
        nw, nh = scaled_size((w, h), scale, self.input_size)
        if (nw, nh) == self.input_size:
            return _resize(image, nw, nh, scale)  # fills the input exactly: no canvas copy
        if (nw, nh) != self._content:
            self._canvas.fill(0)  # a smaller frame than last time: clear the old content
            self._content = (nw, nh)
        self._canvas[:nh, :nw] = _resize(image, nw, nh, scale)
        return self._canvas

    def detect_at(self, image: np.ndarray, scale: float) -> list[Face]:
        """Faces found with the image scaled by ``scale`` (it must fit the input size)."""
        faces = self.decode(self.infer(self.prepare(image, scale)))
        return [
            Face(box=row[:4] / scale, landmarks=row[4:14].reshape(5, 2) / scale, score=float(row[14]))
            for row in faces
        ]

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in a BGR uint8 image, in its own pixel coordinates, best first."""
        h, w = image.shape[:2]
        return self.detect_at(image, fit_scale((w, h), self.input_size))


def choose_input(image_wh: tuple[int, int], max_input: tuple[int, int],
                 sizes: list[tuple[int, int]]) -> tuple[tuple[int, int], float]:
    """The policy (module docstring): the detection scale, and the smallest graph that holds the frame at it."""
    scale = fit_scale(image_wh, max_input)
    nw, nh = scaled_size(image_wh, scale, max_input)
    fits = [s for s in sizes if s[0] >= nw and s[1] >= nh]
    if not fits:
        raise ValueError(f"no detector input holds {nw}x{nh}")
    return min(fits, key=lambda s: (s[0] * s[1], s)), scale


class AdaptiveYuNet:
    """YuNet on the graph that fits each frame (policy in the module docstring).

    Holds one :class:`YuNet` (session, buffers) per input size, all created once.
    ``detectors`` must include the 640x640 base, so every frame has a graph.
    """

    def __init__(self, detectors: dict[tuple[int, int], YuNet], max_input: tuple[int, int] = INPUT_SIZE,
                 missing_variants: tuple[str, ...] = (), first_input: tuple[int, int] | None = None,
                 first_min_eye_px: float = FIRST_PASS_MIN_EYE_PX) -> None:
        if INPUT_SIZE not in detectors:
            raise ValueError("the 640x640 YuNet is required as the fallback")
        mw, mh = max_input
        if not (16 <= mw <= INPUT_SIZE[0] and 16 <= mh <= INPUT_SIZE[1]):
            raise ValueError(f"max_input {mw}x{mh} must lie within 16x16 .. 640x640")
        self.detectors = dict(sorted(detectors.items(), key=lambda kv: kv[0][0] * kv[0][1]))
        self.max_input = (int(mw), int(mh))
        self.missing_variants = missing_variants
        self.first_input = first_input
        self.first_min_eye_px = float(first_min_eye_px)
        self.last_input_size: tuple[int, int] | None = None  # for the benchmark's record
        self.first_pass_kept = 0  # counts, for the benchmark: first passes kept / run again
        self.first_pass_rerun = 0

    @property
    def score_threshold(self) -> float:
        return self.detectors[INPUT_SIZE].score_threshold

    @property
    def input_sizes(self) -> list[tuple[int, int]]:
        return list(self.detectors)

    def plan(self, image_wh: tuple[int, int]) -> tuple[YuNet, float]:
        """The detector and the scale a frame of this size runs at."""
        size, scale = choose_input(image_wh, self.max_input, list(self.detectors))
        self.last_input_size = size
        return self.detectors[size], scale

    def first_plan(self, image_wh: tuple[int, int]) -> tuple[YuNet, float] | None:
        """The first pass's detector and scale (rule 4), or None when it would not be smaller than the full one."""
        if self.first_input is None:
            return None
        sizes = list(self.detectors)
        full_size, scale = choose_input(image_wh, self.max_input, sizes)
        size, first = choose_input(image_wh, self.first_input, sizes)
        if size == full_size or first >= scale:
            return None
        return self.detectors[size], first

    def detect(self, image: np.ndarray, first_pass: bool = False) -> list[Face]:
        """Faces in a BGR uint8 image, in its own pixel coordinates, best first.

        ``first_pass``: try the first pass (rule 4) before the full one; only for a
        verification that will take the largest face.
        """
        h, w = image.shape[:2]
        first = self.first_plan((w, h)) if first_pass else None
        if first is not None:
            det, scale = first
            faces = det.detect_at(image, scale)
            if faces and max(eye_distance(f) for f in faces) * scale >= self.first_min_eye_px:
                self.last_input_size = det.input_size
                self.first_pass_kept += 1
                return faces
            self.first_pass_rerun += 1
        det, scale = self.plan((w, h))
        return det.detect_at(image, scale)


def eye_distance(face: Face) -> float:
    """Distance between the two eye landmarks, in the face's (image) pixels."""
    return float(np.hypot(*(face.landmarks[1] - face.landmarks[0])))
