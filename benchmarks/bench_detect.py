"""Detection latency, side by side: fr-pbd's YuNet on onnxruntime vs cv2.FaceDetectorYN.

Both run on the same 640x480 frame. OpenCV reshapes the graph to 640x480;
fr-pbd runs its derived 640x480 variant when it is built
(`fr-pbd models build yunet-variants`), else the 640x640 graph.

    pytest benchmarks/bench_detect.py --benchmark-enable
    .venv/bin/python benchmarks/bench_detect.py        # prints medians and the ratio
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from fr_pbd import models
from fr_pbd.capture.detect import load_detector
from fr_pbd.capture.image import load_image
from fr_pbd.capture.yunet import NMS_THRESHOLD, SCORE_THRESHOLD, TOP_K


def frame_640x480(faces: Path) -> np.ndarray:
    """A real 4:3 camera-like frame: the centre of obama4.jpg scaled to 640x480."""
    img = load_image(faces / "obama4.jpg")
    h, w = img.shape[:2]
    cw = h * 4 // 3
    x0 = (w - cw) // 2
    return cv2.resize(img[:, x0:x0 + cw], (640, 480), interpolation=cv2.INTER_AREA)


def opencv_detector(w: int = 640, h: int = 480):
    path = models.resolve("yunet-2023mar").path
    det = cv2.FaceDetectorYN.create(str(path), "", (w, h), SCORE_THRESHOLD, NMS_THRESHOLD, TOP_K)
    return det


@pytest.fixture(scope="module")
def frame(faces_dir, models_env):
    return frame_640x480(faces_dir)


@pytest.mark.benchmark(group="detect-640x480")
def test_fr_pbd_yunet_onnxruntime(benchmark, frame):
    det = load_detector()
    faces = benchmark(det.detect, frame)
    assert len(faces) == 1


@pytest.mark.benchmark(group="detect-640x480")
def test_opencv_face_detector_yn(benchmark, frame):
    det = opencv_detector()
    _, faces = benchmark(det.detect, frame)
    assert faces is not None and len(faces) == 1


def _median_ms(fn, frame, warmup: int = 10, runs: int = 200) -> float:
    for _ in range(warmup):
        fn(frame)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn(frame)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main() -> None:
    faces = Path(os.environ.get("FR_PBD_DATA", "../shared/data")) / "faces"
    frame = frame_640x480(faces)
    ours = load_detector()
    cv = opencv_detector()
    ours_ms = _median_ms(ours.detect, frame)
    cv_ms = _median_ms(cv.detect, frame)
    print(f"cpus={os.cpu_count()} cv2.getNumThreads()={cv2.getNumThreads()}")
    print(f"fr-pbd YuNet onnxruntime:                      median {ours_ms:.2f} ms")
    print(f"cv2.FaceDetectorYN (640x480):                 median {cv_ms:.2f} ms")
    print(f"ratio fr-pbd / OpenCV: {ours_ms / cv_ms:.2f}x")


if __name__ == "__main__":
    main()
