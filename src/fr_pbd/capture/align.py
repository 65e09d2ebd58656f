"""Alignment: five landmarks -> a square face chip, by a similarity transform.

A similarity (rotation, uniform scale, translation) keeps the face's shape; the
embedder's own module says where the five points must land (its reference
points). Fitted in closed form (Umeyama 1991, no reflection), so the result is
deterministic, unlike RANSAC-based estimators.
"""

from __future__ import annotations

import cv2
import numpy as np


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 least-squares similarity that maps ``src`` points onto ``dst``."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    s, d = src - mu_s, dst - mu_d
    var_s = (s ** 2).sum() / len(src)
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1.0
    rot = u @ np.diag(sign) @ vt
    scale = (sig * sign).sum() / var_s
    m = np.empty((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - m[:, :2] @ mu_s
    return m


def transform_scale(m: np.ndarray) -> float:
    return float(np.sqrt(abs(np.linalg.det(m[:, :2]))))


def warp_chip(image: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    """Cut the chip that ``m`` (image -> chip) defines.

    When the face is much larger than the chip, the image is first shrunk with
    area averaging (only the region the chip covers), as dlib does with its
    pyramid, so the chip is not aliased.
    """
    scale = transform_scale(m)
    if scale < 0.75:
        inv = cv2.invertAffineTransform(m)
        corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float64)
        pts = corners @ inv[:, :2].T + inv[:, 2]
        h, w = image.shape[:2]
        x0, y0 = (int(max(0, np.floor(v) - 2)) for v in pts.min(axis=0))
        x1, y1 = (int(min(lim, np.ceil(v) + 2)) for v, lim in zip(pts.max(axis=0), (w, h)))
        if x1 > x0 and y1 > y0:
            roi = image[y0:y1, x0:x1]
            nw, nh = max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale))
            small = cv2.resize(roi, (nw, nh), interpolation=cv2.INTER_AREA)
            sx, sy = nw / (x1 - x0), nh / (y1 - y0)
            # chip <- image = m ; image <- small: x = x0 + (u + 0.5) / sx - 0.5
            to_image = np.array([[1 / sx, 0, x0 + 0.5 / sx - 0.5], [0, 1 / sy, y0 + 0.5 / sy - 0.5]])
            m2 = m[:, :2] @ to_image[:, :2]
            t2 = m[:, :2] @ to_image[:, 2] + m[:, 2]
            return cv2.warpAffine(small, np.hstack([m2, t2[:, None]]), (size, size),
                                  flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def align_face(image: np.ndarray, landmarks: np.ndarray, reference: np.ndarray, size: int) -> np.ndarray:
    """The ``size`` x ``size`` chip whose five points sit at ``reference``."""
    return warp_chip(image, similarity_transform(landmarks, reference), size)
