"""Latency: the verification's lanes (chip, mirror and liveness side by side) and the detector's first pass.

Real models, real photos: the lanes must give the template the one-batch path gives, an
attack found in a lane must still be the answer, and the first pass must answer only
for a face large enough, with the full pass's answer otherwise.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest

from fr_pbd.capture import quality, yunet
from fr_pbd.capture.extractor import TemplateExtractor
from fr_pbd.capture.image import load_image
from fr_pbd.runtime import LANES, cores, lane_threads


def camera_frame(img: np.ndarray, zoom: float, centre: tuple[float, float]) -> np.ndarray:
    """``img`` scaled by ``zoom``, ``centre`` (image pixels) in the middle of a 640x480 frame, grey around."""
    big = cv2.resize(img, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_AREA if zoom < 1 else cv2.INTER_LINEAR)
    out = cv2.copyMakeBorder(big, 480, 480, 640, 640, cv2.BORDER_CONSTANT, value=(128, 128, 128))
    cx, cy = int(centre[0] * zoom) + 640, int(centre[1] * zoom) + 480
    return np.ascontiguousarray(out[cy - 240:cy + 240, cx - 320:cx + 320])


@pytest.fixture(scope="module")
def first_pass(extractor):
    """The default pipeline's embedder with a detector that has the first pass on (it is off by default)."""
    from fr_pbd.capture.detect import create_detector
    from fr_pbd.capture.extractor import DETECTION_THRESHOLD

    det = create_detector(score_threshold=DETECTION_THRESHOLD, first_input=yunet.FIRST_PASS_INPUT)
    if det.first_plan((640, 480)) is None:
        pytest.skip("the 320x256 YuNet variant is not built")
    return TemplateExtractor(det, extractor.embedder, lanes=extractor.lanes)


def test_default_pipeline_has_no_first_pass(extractor):
    assert extractor.detector.first_input is None and extractor.detector.first_plan((640, 480)) is None


@pytest.fixture(scope="module")
def obama(extractor, faces_dir):
    """obama.jpg and the centre of its face."""
    img = load_image(faces_dir / "obama.jpg")
    face = extractor.capture(img, "enrol").face
    return img, (float(face.box[0] + face.box[2] / 2), float(face.box[1] + face.box[3] / 2))


@pytest.fixture(scope="module")
def one_batch(extractor):
    """The same detector and embedder session, without lanes: the one-batch path."""
    return TemplateExtractor(extractor.detector, extractor.embedder)


def test_pipeline_runs_in_lanes_with_one_lane_thread_per_session(extractor):
    if cores() < LANES:
        pytest.skip("one core: no lanes")
    assert extractor.lanes is not None
    opts = extractor.embedder._session.get_session_options()
    assert opts.intra_op_num_threads == lane_threads() == max(1, cores() // LANES)


@pytest.mark.parametrize("name", ["obama.jpg", "biden.jpg", "obama3.jpg"])
def test_lanes_give_the_one_batch_template(extractor, one_batch, faces_dir, name):
    img = load_image(faces_dir / name)
    a = extractor.template(img, "enrol").vector
    b = one_batch.template(img, "enrol").vector
    np.testing.assert_allclose(a, b, atol=2e-6)


def test_check_runs_in_a_lane_and_its_attack_wins(extractor, faces_dir):
    seen = []

    class Attack(Exception):
        pass

    def check(frame, face):
        seen.append((threading.current_thread() is threading.main_thread(), frame.shape, face.box.shape))
        raise Attack

    stages = []
    with pytest.raises(Attack):
        extractor.template(faces_dir / "obama.jpg", "verify", check=check, hook=lambda s, t: stages.append(s))
    assert seen == [(extractor.lanes is None, load_image(faces_dir / "obama.jpg").shape, (4,))]
    assert {"detect", "embed", "liveness"} <= set(stages)
    # a check that passes leaves the template as without one
    t = extractor.template(faces_dir / "obama.jpg", "verify", check=lambda f, face: None).vector
    np.testing.assert_allclose(t, extractor.template(faces_dir / "obama.jpg", "verify").vector, atol=2e-6)


def test_first_pass_answers_for_a_large_face(first_pass, obama):
    extractor = first_pass
    det = extractor.detector
    frame = camera_frame(obama[0], 0.6, obama[1])
    full = det.detect(frame)
    kept = det.first_pass_kept
    first = det.detect(frame, first_pass=True)
    assert det.first_pass_kept == kept + 1 and det.last_input_size == (320, 256)
    big = max(first, key=lambda f: f.box[2] * f.box[3])
    assert yunet.eye_distance(big) / 2 >= yunet.FIRST_PASS_MIN_EYE_PX
    ref = max(full, key=lambda f: f.box[2] * f.box[3])
    # YuNet's landmarks move by a few pixels between scales (as between two frames of a video)
    assert np.abs(big.landmarks - ref.landmarks).max() < 0.1 * yunet.eye_distance(ref)
    # and the template it leads to is the full pass's, to within alignment noise
    a = extractor.template(frame, "verify").vector
    det.first_input, saved = None, det.first_input
    try:
        b = extractor.template(frame, "verify").vector
    finally:
        det.first_input = saved
    assert float(a @ b) / float(np.linalg.norm(a) * np.linalg.norm(b)) > 0.99


def test_small_face_runs_again_at_full_scale_with_the_full_answer(first_pass, obama):
    extractor = first_pass
    det = extractor.detector
    frame = camera_frame(obama[0], 0.3, obama[1])
    full = det.detect(frame)
    assert full, "the full pass finds the small face"
    rerun = det.first_pass_rerun
    again = det.detect(frame, first_pass=True)
    assert det.first_pass_rerun == rerun + 1
    assert [f.to_dict() for f in again] == [f.to_dict() for f in full]


def test_enrolment_and_centre_choice_never_take_the_first_pass(first_pass, obama):
    extractor = first_pass
    det = extractor.detector
    frame = camera_frame(obama[0], 0.6, obama[1])
    counts = (det.first_pass_kept, det.first_pass_rerun)
    extractor.capture(frame, "enrol")
    extractor.capture(frame, "verify", "center")
    assert (det.first_pass_kept, det.first_pass_rerun) == counts


def test_quality_refusal_wins_over_a_check_started_early(extractor, faces_dir):
    from fr_pbd.errors import QualityError

    img = cv2.GaussianBlur(load_image(faces_dir / "obama.jpg"), (0, 0), 15)
    calls = []

    def attack(frame, face):
        calls.append(face.box.shape)
        raise RuntimeError("attack")

    with pytest.raises(QualityError) as e:
        extractor.template(img, "verify", check=attack)
    assert e.value.reason == quality.TOO_BLURRED
    assert calls == ([(4,)] if extractor.lanes is not None else [])  # started at the face, outcome dropped
