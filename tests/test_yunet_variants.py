"""YuNet input-size variants: deterministic build, the size policy, and the OpenCV oracle.

Each variant is checked against ``cv2.FaceDetectorYN`` on the *released* 640x640 file,
reshaped by OpenCV itself with ``setInputSize`` to the variant's size, on the same
letterboxed input (so the rewrite is checked against OpenCV's own reshaping): same face
count, IoU >= 0.999, landmarks within 0.05 px (tests/test_detect.py's bounds), on faces/
and on 300 LFW images. The variants are built here, into a temporary directory
(deterministic, no network), so the test does not depend on the machine's cache; their
hashes must be the manifest's.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from fr_pbd import models
from fr_pbd.build import yunet_variants as build_yunet
from fr_pbd.capture import detect as detect_mod
from fr_pbd.capture.image import load_image
from fr_pbd.capture.yunet import (INPUT_SIZE, NMS_THRESHOLD, SCORE_THRESHOLD, TOP_K, AdaptiveYuNet, YuNet,
                                  choose_input)
from fr_pbd.errors import ModelBuildError, ModelHashMismatchError
from fr_pbd.runtime import create_session
from tests.conftest import missing
from tests.helpers import lfw_images_from_pairs
from tests.test_detect import assert_agreement, compare_with_oracle, iou

SIZES = [(v.width, v.height) for v in build_yunet.VARIANTS.values()]


@pytest.fixture(scope="module")
def source(models_env) -> models.VerifiedModel:
    try:
        return models.resolve("yunet-2023mar")
    except Exception as exc:  # noqa: BLE001
        missing(str(exc))


@pytest.fixture(scope="module")
def built(source, tmp_path_factory) -> dict[tuple[int, int], Path]:
    out = tmp_path_factory.mktemp("yunet_variants")
    paths = build_yunet.build_yunet_variants(out_dir=out)
    return {(build_yunet.VARIANTS[n].width, build_yunet.VARIANTS[n].height): p for n, p in paths.items()}


def _ours(path: Path) -> YuNet:
    vm = models.VerifiedModel(spec=models.spec("yunet-2023mar"), path=path, data=path.read_bytes())
    return YuNet(create_session(vm, threads=1))


def test_build_is_deterministic_and_pinned(source, built):
    for size, path in built.items():
        data = path.read_bytes()
        name = build_yunet.variant_name(*size)
        assert hashlib.sha256(data).hexdigest() == models.spec(name).sha256
        assert models.spec(name).obtain == "build"
        assert build_yunet.build_variant_bytes(source.data, *size) == data  # twice, same bytes
        meta = build_yunet.describe(data)
        assert meta["fr_pbd.input_size"] == f"{size[0]}x{size[1]}"
        assert meta["fr_pbd.source_sha256"] == source.spec.sha256


def test_sizes_must_be_multiples_of_32(source):
    with pytest.raises(ModelBuildError, match="multiple of 32"):
        build_yunet.build_variant_bytes(source.data, 320, 240)
    with pytest.raises(ModelBuildError, match="not an ONNX model|1x3x640x640"):
        build_yunet.build_variant_bytes(b"not a model", 320, 256)


# Faces found at the 0.9 threshold on faces/ (14 photos) and 300 LFW images: fewer at 160x128,
# where small faces fall below the detector's reach (the cost of that working size).
MIN_FACES = {(640, 480): (13, 300), (320, 256): (13, 300), (160, 128): (8, 300)}


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_variant_agrees_with_opencv_oracle(size, built, source, faces_dir, lfw_dir):
    det = _ours(built[size])
    assert det.input_size == size
    oracle = cv2.FaceDetectorYN.create(str(source.path), "", (640, 640), SCORE_THRESHOLD, NMS_THRESHOLD, TOP_K)
    oracle.setInputSize(size)
    photos = sorted(p for p in faces_dir.iterdir() if p.suffix in {".jpg", ".png"})
    s1 = compare_with_oracle(photos, oracle, det, size)
    assert_agreement(s1, f"{size[0]}x{size[1]} faces/")
    lfw = lfw_images_from_pairs(lfw_dir, "pairsDevTest.txt", 300)
    assert len(lfw) == 300
    s2 = compare_with_oracle(lfw, oracle, det, size)
    assert_agreement(s2, f"{size[0]}x{size[1]} LFW")
    assert s1["faces"] >= MIN_FACES[size][0] and s2["faces"] >= MIN_FACES[size][1]


# ---------------------------------------------------------------------------- the policy
ALL = [(640, 640), *SIZES]


@pytest.mark.parametrize("frame,max_input,expect_size,expect_scale", [
    ((640, 480), (640, 640), (640, 480), 1.0),      # default: same scale as before, no padding
    ((1280, 960), (640, 640), (640, 480), 0.5),
    ((250, 250), (640, 640), (640, 640), 2.56),     # LFW: the scale the 640 letterbox always used
    ((640, 480), (320, 240), (320, 256), 0.5),      # a profile's 320x240 working size
    ((640, 480), (160, 120), (160, 128), 0.25),
    ((480, 640), (320, 240), (320, 256), 0.375),    # portrait frame: fits, narrower
])
def test_policy_picks_smallest_graph_at_the_fit_scale(frame, max_input, expect_size, expect_scale):
    size, scale = choose_input(frame, max_input, ALL)
    assert size == expect_size and scale == pytest.approx(expect_scale)


def test_policy_falls_back_to_640_when_variants_are_missing():
    assert choose_input((640, 480), (320, 240), [(640, 640)]) == ((640, 640), 0.5)
    assert choose_input((640, 480), (640, 640), [(640, 640), (320, 256)])[0] == (640, 640)


def test_missing_variant_falls_back_with_the_same_faces(source, built, faces_dir, tmp_path, monkeypatch):
    """Only the 640 file present: a 640x480 frame runs on it at the same scale."""
    only = tmp_path / "only640"
    only.mkdir()
    shutil.copy(source.path, only / source.spec.file)
    monkeypatch.setenv("FR_PBD_MODELS", str(only))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    fallback = detect_mod.create_detector(threads=1)
    assert fallback.input_sizes == [INPUT_SIZE]
    assert set(fallback.missing_variants) == {"yunet-2023mar-640x480"}  # the only one useful at 640x640
    for size, path in built.items():
        shutil.copy(path, only / path.name)
    full = detect_mod.create_detector(threads=1)
    assert full.missing_variants == ()
    img = load_image(faces_dir / "obama4.jpg")
    h, w = img.shape[:2]
    cw = h * 4 // 3
    frame = cv2.resize(img[:, (w - cw) // 2:(w - cw) // 2 + cw], (640, 480), interpolation=cv2.INTER_AREA)
    a, b = fallback.detect(frame), full.detect(frame)
    assert fallback.last_input_size == (640, 640) and full.last_input_size == (640, 480)
    assert len(a) == len(b) == 1
    assert iou(a[0].box, b[0].box) > 0.95 and np.abs(a[0].landmarks - b[0].landmarks).max() < 2.0


def test_tampered_variant_is_refused_not_skipped(source, built, tmp_path, monkeypatch):
    d = tmp_path / "tampered"
    d.mkdir()
    shutil.copy(source.path, d / source.spec.file)
    data = bytearray(built[(640, 480)].read_bytes())
    data[-10] ^= 1
    (d / build_yunet.variant_file(640, 480)).write_bytes(bytes(data))
    monkeypatch.setenv("FR_PBD_MODELS", str(d))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    with pytest.raises(ModelHashMismatchError):
        detect_mod.create_detector(threads=1)


def test_adaptive_detector_needs_the_640_fallback(built):
    with pytest.raises(ValueError):
        AdaptiveYuNet({(320, 256): _ours(built[(320, 256)])})
