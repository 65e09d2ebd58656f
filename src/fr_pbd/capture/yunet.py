"""YuNet 2023mar face detector on onnxruntime (pre- and post-processing only).

The ONNX graph is fixed at 640x640, so a frame is scaled to fit (aspect kept)
and padded at the right and bottom; detections are mapped back by the same
scale. Decoding and NMS follow OpenCV's ``FaceDetectorYN`` (face_detect.cpp)
step by step, so ``cv2.FaceDetectorYN`` on the same input is an exact oracle.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
import onnxruntime as ort

MODEL_NAME = "yunet-2023mar"
INPUT_SIZE = (640, 640)  # (width, height), fixed by the graph
STRIDES = (8, 16, 32)
NUM_LANDMARKS = 5
LANDMARK_NAMES = ("right_eye", "left_eye", "nose_tip", "right_mouth_corner", "left_mouth_corner")
SCORE_THRESHOLD = 0.9  # OpenCV's default; score = sqrt(cls * obj)
NMS_THRESHOLD = 0.3
TOP_K = 5000


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


def letterbox(image: np.ndarray, size: tuple[int, int] = INPUT_SIZE) -> tuple[np.ndarray, float]:
    """Scale ``image`` to fit ``size`` (w, h), pad right/bottom with zeros; return it and the scale."""
    h, w = image.shape[:2]
    tw, th = size
    scale = min(tw / w, th / h)
    nw, nh = max(1, min(tw, round(w * scale))), max(1, min(th, round(h * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (nw, nh), interpolation=interp) if (nw, nh) != (w, h) else image
    out = np.zeros((th, tw, 3), dtype=np.uint8)
    out[:nh, :nw] = resized
    return out, scale


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

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in a BGR uint8 image, in its own pixel coordinates, best first."""
        padded, scale = letterbox(image, self.input_size)
        faces = self.decode(self.infer(padded))
        return [
            Face(box=row[:4] / scale, landmarks=row[4:14].reshape(5, 2) / scale, score=float(row[14]))
            for row in faces
        ]
