"""Measure where dlib's own chip extraction puts YuNet's 5 landmarks.

The dlib face descriptor was trained on chips made by dlib's
``get_face_chip(img, shape_5pt, size=150, padding=0.25)``. fr-pbd aligns with
YuNet's 5 landmarks instead of dlib's 5-point shape predictor (whose points are
eye *corners*, not eye centres, and which needs a non-shippable HOG pipeline).
This script finds the 150x150 chip coordinates at which dlib's geometry puts
YuNet's points, averaged over LFW faces:

1. dlib: HOG detector + 5-point shape predictor -> the face's shape.
2. dlib's exact image->chip mapping, measured rather than re-derived: chip a
   "coordinate image" whose red channel holds x and green channel holds y
   (LFW images are 250x250, so coordinates fit in uint8). Bilinear
   interpolation of a linear ramp is exact, so a least-squares affine fit over
   the chip's interior pixels recovers dlib's transform (rounding noise
   averages out over ~20k pixels).
3. YuNet on the same image; its landmarks mapped through that transform.

Data: the first image (``NAME_0001.jpg``) of LFW's View 1 *training* people
(peopleDevTrain.txt, in file order) until N faces are used. View 1's training and test
people are disjoint, so none of these people is in pairsDevTest.txt. View 2 (pairs.txt)
is drawn from all of LFW, so most of them are in pairs.txt, often with the very image
used here, and ``fr-pbd eval lfw`` compares every LFW image: the calibration *does* see
images of the pairs.txt and all-comparisons evaluations. What it takes from them is 10
numbers (the mean chip position of 5 landmarks), not a threshold or anything about who
is who. The script prints how many of the images it used are in pairs.txt and in
pairsDevTest.txt. Usage:

    FR_PBD_MODELS=../shared/models python tools/calibrate_dlib_alignment.py ../shared/data/lfw [N]
"""

from __future__ import annotations

import sys
from pathlib import Path

import dlib
import face_recognition_models
import numpy as np

from fr_pbd.capture.detect import load_detector
from fr_pbd.capture.image import load_image

CHIP = 150
PADDING = 0.25


def ramp_image(h: int, w: int) -> np.ndarray:
    if h > 256 or w > 256:
        raise ValueError("the coordinate trick needs images of at most 256x256")
    img = np.zeros((h, w, 3), np.uint8)
    img[:, :, 0] = np.arange(w, dtype=np.uint8)[None, :]
    img[:, :, 1] = np.arange(h, dtype=np.uint8)[:, None]
    return img


def image_to_chip_transform(shape, h: int, w: int) -> np.ndarray | None:
    """2x3 affine that maps image (x, y) to dlib's chip (x, y)."""
    chip = dlib.get_face_chip(ramp_image(h, w), shape, size=CHIP, padding=PADDING).astype(np.float64)
    r, c = np.mgrid[0:CHIP, 0:CHIP]
    x, y = chip[:, :, 0], chip[:, :, 1]
    inside = (x > 1) & (x < w - 2) & (y > 1) & (y < h - 2)
    if inside.sum() < 2000:
        return None
    src = np.stack([c[inside], r[inside], np.ones(inside.sum())], axis=1)  # chip coords
    dst = np.stack([x[inside], y[inside]], axis=1)  # image coords
    a, *_ = np.linalg.lstsq(src, dst, rcond=None)  # chip -> image, 3x2
    m = np.vstack([a.T, [0, 0, 1]])
    return np.linalg.inv(m)[:2]


def pair_images(pairs_file: Path) -> set[tuple[str, int]]:
    """(name, number) of every image a pairs file names."""
    out = set()
    for line in pairs_file.read_text().split("\n")[1:]:
        p = line.split()
        if len(p) == 3:
            out |= {(p[0], int(p[1])), (p[0], int(p[2]))}
        elif len(p) == 4:
            out |= {(p[0], int(p[1])), (p[2], int(p[3]))}
    return out


def main(lfw: Path, limit: int) -> None:
    models = Path(face_recognition_models.__file__).parent / "models"
    hog = dlib.get_frontal_face_detector()
    sp5 = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
    yunet = load_detector()
    people = [line.split()[0] for line in (lfw / "peopleDevTrain.txt").read_text().split("\n")[1:] if line.strip()]
    points, used = [], []
    for name in people:
        if len(points) >= limit:
            break
        path = lfw / name / f"{name}_0001.jpg"
        bgr = load_image(path)
        rgb = bgr[:, :, ::-1].copy()
        dets = hog(rgb, 1)
        faces = yunet.detect(bgr)
        if len(dets) != 1 or len(faces) != 1:
            continue
        shape = sp5(rgb, dets[0])
        t = image_to_chip_transform(shape, *rgb.shape[:2])
        if t is None:
            continue
        lm = faces[0].landmarks
        points.append(lm @ t[:, :2].T + t[:, 2])
        used.append((name, 1))
    pts = np.array(points)
    mean, std = pts.mean(axis=0), pts.std(axis=0)
    print(f"faces used: {len(pts)} (one HOG face and one YuNet face, first image of each peopleDevTrain identity)")
    for pairs_name in ("pairs.txt", "pairsDevTest.txt"):
        named = pair_images(lfw / pairs_name)
        print(f"  of them in {pairs_name}: {sum(u in named for u in used)} images, "
              f"{len({n for n, _ in used} & {n for n, _ in named})} people")
    names = ("right_eye", "left_eye", "nose_tip", "right_mouth", "left_mouth")
    for n, m, s in zip(names, mean, std):
        print(f"  {n:12s} x={m[0]:8.3f} y={m[1]:8.3f}   (sd {s[0]:.2f}, {s[1]:.2f})")
    print("REFERENCE_150 = np.array([")
    for m in mean:
        print(f"    [{m[0]:.3f}, {m[1]:.3f}],")
    print("], dtype=np.float32)")


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 1000)
