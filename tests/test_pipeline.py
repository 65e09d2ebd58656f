"""Phase (a) end to end on real photos: alignment, quality reason codes, templates."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from fr_pbd import models
from fr_pbd.capture import dlib_resnet, quality
from fr_pbd.capture.align import similarity_transform
from fr_pbd.capture.image import load_image
from fr_pbd.errors import QualityError
from fr_pbd.template import Template

OBAMA = ["obama.jpg", "obama2.jpg", "obama3.jpg", "obama4.jpg"]
BIDEN = ["biden.jpg", "biden2.jpg"]


@pytest.fixture(scope="module")
def templates(extractor, faces_dir):
    return {n: extractor.template(faces_dir / n) for n in OBAMA + BIDEN + ["astronaut.png"]}


@pytest.fixture(scope="module")
def threshold():
    t = models.spec(dlib_resnet.MODEL_ID).default_threshold
    assert t is not None and 0 < t < 1
    return t


def test_similarity_transform_recovers_a_known_one():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 200, (5, 2))
    a = np.radians(17)
    true = np.array([[1.3 * np.cos(a), -1.3 * np.sin(a), 12.0], [1.3 * np.sin(a), 1.3 * np.cos(a), -7.0]])
    dst = src @ true[:, :2].T + true[:, 2]
    np.testing.assert_allclose(similarity_transform(src, dst), true, atol=1e-9)


def test_aligned_landmarks_land_on_the_reference(extractor, faces_dir):
    cap = extractor.capture(load_image(faces_dir / "obama.jpg"))
    m = similarity_transform(cap.face.landmarks, dlib_resnet.ALIGNMENT_REFERENCE)
    mapped = cap.face.landmarks @ m[:, :2].T + m[:, 2]
    assert np.abs(mapped - dlib_resnet.ALIGNMENT_REFERENCE).max() < 6  # 5-point fit residual, px
    assert cap.chip_bgr.shape == (150, 150, 3)
    # The chip is centred on the face: re-detecting in it (padded) finds the eyes near the reference.


def test_genuine_pairs_same_impostor_pairs_different(templates, threshold):
    """Every impostor pair is refused and scores below every genuine pair. Since the default
    threshold became 0.95831 (per-attempt FRR about 11 %, manifest), two of the seven genuine
    pairs (obama2/obama4, biden/biden2) fall below it: at most two may."""
    score = lambda a, b: float(templates[a].vector @ templates[b].vector)  # noqa: E731
    genuine = [score(a, b) for a, b in itertools.combinations(OBAMA, 2)] + [score(*BIDEN)]
    impostor = [score(a, b) for a in OBAMA for b in BIDEN + ["astronaut.png"]]
    impostor += [score(b, "astronaut.png") for b in BIDEN]
    assert max(impostor) < threshold
    assert min(genuine) > max(impostor)
    assert sum(g >= threshold for g in genuine) >= len(genuine) - 2


def test_template_is_unit_length_tagged_and_opaque(templates):
    t = templates["obama.jpg"]
    assert isinstance(t, Template) and t.model_id == "dlib-resnet-v1" and t.dim == 128
    assert abs(float(np.linalg.norm(t.vector)) - 1) < 1e-5
    assert repr(t) == "Template(model_id='dlib-resnet-v1', dim=128)"
    import pickle

    with pytest.raises(TypeError):
        pickle.dumps(t)


def reason_of(extractor, image, purpose="verify") -> str:
    with pytest.raises(QualityError) as info:
        extractor.capture(image, purpose)
    assert f"[{info.value.reason}]" in str(info.value)
    return info.value.reason


def test_reason_no_face(extractor, faces_dir):
    assert reason_of(extractor, load_image(faces_dir / "no_face_coffee.png")) == quality.NO_FACE
    assert reason_of(extractor, load_image(faces_dir / "no_face_cat_chelsea.png")) == quality.NO_FACE


def test_reason_multiple_faces_only_for_enrolment(extractor, faces_dir):
    img = load_image(faces_dir / "two_people.jpg")
    assert reason_of(extractor, img, "enrol") == quality.MULTIPLE_FACES
    extractor.capture(img, "verify")  # verification uses the largest face


def test_reason_too_small(extractor, faces_dir):
    img = load_image(faces_dir / "obama.jpg")
    tiny = cv2.resize(img, (img.shape[1] // 12, img.shape[0] // 12), interpolation=cv2.INTER_AREA)
    small = cv2.resize(img, (img.shape[1] // 5, img.shape[0] // 5), interpolation=cv2.INTER_AREA)
    # Padded onto a canvas so that the detector still sees a face at a realistic scale.
    canvas = np.full((480, 640, 3), 128, np.uint8)
    canvas[:small.shape[0], :small.shape[1]] = small
    assert reason_of(extractor, canvas, "enrol") == quality.FACE_TOO_SMALL
    extractor.capture(canvas, "verify")
    assert reason_of(extractor, tiny) in (quality.FACE_TOO_SMALL, quality.NO_FACE)


def test_reason_blurred(extractor, faces_dir):
    img = load_image(faces_dir / "obama.jpg")
    assert reason_of(extractor, cv2.GaussianBlur(img, (0, 0), 15)) == quality.TOO_BLURRED
    mild = cv2.GaussianBlur(img, (0, 0), 6)
    assert reason_of(extractor, mild, "enrol") == quality.TOO_BLURRED
    extractor.capture(mild, "verify")


def test_reason_dark_and_bright(extractor, faces_dir):
    img = load_image(faces_dir / "obama.jpg").astype(np.float32)
    assert reason_of(extractor, np.clip(img * 0.2, 0, 255).astype(np.uint8)) == quality.TOO_DARK
    dim = np.clip(img * 0.45, 0, 255).astype(np.uint8)
    assert reason_of(extractor, dim, "enrol") == quality.TOO_DARK
    extractor.capture(dim, "verify")
    bright = np.clip(img * 1.6 + 60, 0, 255).astype(np.uint8)
    assert reason_of(extractor, bright) == quality.TOO_BRIGHT


def rotated(img: np.ndarray, degrees: float) -> np.ndarray:
    h, w = img.shape[:2]
    size = int(np.hypot(h, w))
    canvas = np.zeros((size, size, 3), np.uint8)
    canvas[(size - h) // 2:(size - h) // 2 + h, (size - w) // 2:(size - w) // 2 + w] = img
    return cv2.warpAffine(canvas, cv2.getRotationMatrix2D((size / 2, size / 2), degrees, 1.0), (size, size))


def test_reason_pose_from_rotation(extractor, faces_dir):
    img = load_image(faces_dir / "obama.jpg")
    # YuNet's landmarks under-report roll (about half of a 30 degree tilt), so the
    # enrolment limit of 15 degrees refuses a face tilted by 30.
    tilted = rotated(img, 30)
    assert reason_of(extractor, tilted, "enrol") == quality.POSE_OFF_FRONTAL
    extractor.capture(tilted, "verify")
    assert reason_of(extractor, rotated(img, 90)) == quality.NO_FACE


def test_enrolment_accepts_good_photos(extractor, faces_dir):
    for name in OBAMA + BIDEN:
        extractor.capture(load_image(faces_dir / name), "enrol")


def test_quality_check_order_and_policies():
    q = quality.QualityMeasures(eye_distance_px=5, roll_deg=80, yaw=0, pitch=0.5, sharpness=0, brightness=0)
    with pytest.raises(QualityError) as info:
        quality.check(q, quality.VERIFY)
    assert info.value.reason == quality.FACE_TOO_SMALL
    for field in ("min_eye_distance_px", "min_sharpness", "min_brightness", "min_face_score", "min_pitch"):
        assert getattr(quality.ENROL, field) >= getattr(quality.VERIFY, field), field
    for field in ("max_brightness", "max_abs_roll_deg", "max_abs_yaw", "max_pitch"):
        assert getattr(quality.ENROL, field) <= getattr(quality.VERIFY, field), field


def test_a_built_pipeline_holds_numpys_blas_at_one_thread(extractor):
    """One BLAS thread: OpenBLAS's idle workers spin and wake late; a verification's products are tiny (fr_pbd.runtime)."""
    import threadpoolctl

    from fr_pbd.pipeline import build_pipeline

    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        build_pipeline()
        blas = [i for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
        assert blas and all(i["num_threads"] == 1 for i in blas)
