"""Measure the quality-gate quantities on every LFW image, to choose thresholds from data.

For each image: YuNet faces (score >= 0.9), the face nearest the centre, its
aligned dlib chip, and the measures of fr_pbd.capture.quality. Prints
percentiles per measure and the share of images each gate would refuse.

    FR_PBD_MODELS=../shared/models python tools/measure_quality_lfw.py ../shared/data/lfw
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from fr_pbd.capture import dlib_resnet, quality
from fr_pbd.capture.align import align_face
from fr_pbd.capture.detect import load_detector
from fr_pbd.capture.image import load_image
from fr_pbd.capture.extractor import choose_face

FIELDS = ("eye_distance_px", "roll_deg", "yaw", "pitch", "sharpness", "brightness")


def main(lfw: Path) -> None:
    det = load_detector()
    det.score_threshold = min(p.min_face_score for p in quality.POLICIES.values())
    paths = sorted(lfw.glob("*/*.jpg"))
    rows, no_face = [], 0
    t0 = time.time()
    for p in paths:
        img = load_image(p)
        faces = det.detect(img)
        if not faces:
            no_face += 1
            continue
        f = choose_face(faces, img.shape, "center")
        chip = align_face(img, f.landmarks, dlib_resnet.ALIGNMENT_REFERENCE, dlib_resnet.INPUT_SIZE)
        q = quality.measure(f.landmarks, chip)
        rows.append([getattr(q, k) for k in FIELDS] + [f.score])
    a = np.array(rows)
    print(f"images {len(paths)}, no face {no_face}, measured {len(a)}, {time.time() - t0:.0f} s")
    qs = (0.05, 0.1, 1, 5, 50, 95, 99, 99.9, 99.95)
    print("measure            " + " ".join(f"p{q:<7g}" for q in qs))
    for i, k in enumerate(FIELDS):
        print(f"{k:18s} " + " ".join(f"{v:8.3f}" for v in np.percentile(a[:, i], qs)))
    for name, pol in quality.POLICIES.items():
        refused = {}
        for row in a:
            q = quality.QualityMeasures(*row[:-1])
            try:
                if row[-1] < pol.min_face_score:
                    raise quality.fail(quality.NO_FACE)
                quality.check(q, pol)
            except Exception as exc:  # QualityError
                refused[exc.reason] = refused.get(exc.reason, 0) + 1
        total = sum(refused.values())
        print(f"policy {name}: refuses {total} of {len(a)} ({100 * total / len(a):.2f} %): {refused}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
