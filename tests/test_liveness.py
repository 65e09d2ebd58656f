"""Presentation-attack detection: upstream's crop, the samples, the verifier's use of it, ``eval pad``."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest

from fr_pbd.cli import main as cli_main
from fr_pbd.pipeline import build_pipeline
from fr_pbd.capture import liveness
from fr_pbd.capture.image import load_image
from fr_pbd.capture.liveness import DEFAULT_THRESHOLD, REAL_CLASS, crop_box
from fr_pbd.capture.yunet import Face
from fr_pbd.errors import ImageError
from fr_pbd.eval import pad
from fr_pbd.store import LockoutState, Store
from fr_pbd.verify import Consent, Decision, Verifier
from tests.conftest import missing

PIN = "correct horse battery"


# --- the crop: upstream's CropImage._get_new_box ------------------------------------
def test_constants_follow_upstream_and_the_manifest():
    from fr_pbd import models

    assert liveness.CROP_SCALES == {"minifasnet-v2": 2.7, "minifasnet-v1se": 4.0}
    assert liveness.INPUT_SIZE == 80 and REAL_CLASS == 1 and liveness.NUM_CLASSES == 3
    for name in liveness.MODEL_NAMES:
        assert models.spec(name).role == "liveness"


def test_crop_box_in_the_interior_is_centred_and_scaled():
    # box 100x100 at (400, 300) in 1000x800: centre (450, 350), 2.7x -> 270 wide
    assert crop_box(1000, 800, (400, 300, 100, 100), 2.7) == (315, 215, 585, 485)


def test_crop_box_is_shifted_not_clipped_at_each_border():
    w, h = 640, 480
    for box, expect in [
        ((0, 200, 100, 100), (0, 115, 270, 385)),  # left: moved right, keeps 270
        ((200, 0, 100, 100), (115, 0, 385, 270)),  # top: moved down
        ((560, 200, 80, 80), (423, 132, 639, 348)),  # right: ends at src_w - 1
        ((200, 420, 60, 60), (149, 317, 311, 479)),  # bottom: ends at src_h - 1
    ]:
        got = crop_box(w, h, box, 2.7)
        assert got == expect, (box, got)
        x1, y1, x2, y2 = got
        assert 0 <= x1 and 0 <= y1 and x2 <= w - 1 and y2 <= h - 1


def test_crop_box_scale_is_lowered_when_the_box_cannot_fit():
    # 4.0 x 200 = 800 > 479: the scale becomes (480 - 1) / 200, the crop spans the full height
    x1, y1, x2, y2 = crop_box(640, 480, (220, 140, 200, 200), 4.0)
    assert (y1, y2) == (0, 479) and x2 - x1 == 479


def test_crop_box_refuses_a_degenerate_box():
    with pytest.raises(ImageError):
        crop_box(640, 480, (10, 10, 0, 20), 2.7)


def test_upstream_bbox_matches_upstreams_detector_convention():
    f = Face(np.array([10.7, 20.2, 99.6, 120.1]), np.zeros((5, 2)), 0.99)
    assert liveness.upstream_bbox(f) == (10, 20, 100, 121)  # [int(l), int(t), int(r-l+1), int(b-t+1)]


# --- the models on the samples ------------------------------------------------------
@pytest.fixture(scope="module")
def pad_models(models_env):
    try:
        return build_pipeline().liveness
    except Exception as exc:  # noqa: BLE001
        missing(f"MiniFASNet models: {exc}")


@pytest.fixture(scope="module")
def detector(models_env):
    from fr_pbd.capture.detect import load_detector

    return load_detector()


def _face(detector, frame):
    from fr_pbd.capture.extractor import choose_face

    faces = detector.detect(frame)
    assert faces
    return choose_face(faces, frame.shape, "largest")


def test_print_and_replay_refused_live_accepted(pad_models, detector, spoof_dir):
    for name, live in (("spoof_print_F1.jpg", False), ("spoof_replay_F2.jpg", False), ("live_T1.jpg", True)):
        frame = load_image(spoof_dir / name)  # EXIF orientation 6 applied: upright 480x640
        assert frame.shape == (640, 480, 3)
        face = _face(detector, frame)
        probs = pad_models.probabilities(frame, face)
        assert probs.shape == (3,) and abs(probs.sum() - 1) < 1e-6
        assert pad_models.is_live(frame, face) is live, name
        assert (int(np.argmax(probs)) == REAL_CLASS) is live, name  # upstream's argmax agrees


def test_real_photos_in_faces_are_bona_fide(pad_models, detector, faces_dir):
    """Photos of real people (photos of photos, but not presented to a camera) pass at the default threshold."""
    names = ["obama.jpg", "obama2.jpg", "obama3.jpg", "obama4.jpg", "biden.jpg", "biden2.jpg", "astronaut.png"]
    refused = [n for n in names if not pad_models.is_live(load_image(faces_dir / n),
                                                          _face(detector, load_image(faces_dir / n)))]
    assert refused == []


def test_wrong_models_and_thresholds_are_refused(pad_models):
    from fr_pbd.errors import ModelError

    with pytest.raises(ModelError, match="needs both"):
        liveness.LivenessDetector({})
    with pytest.raises(ValueError):
        liveness.LivenessDetector(pad_models._sessions, threshold=1.5)


def _onnxruntime_pad():
    """The same two models on onnxruntime: the oracle for OpenCV's DNN module (fr_pbd.runtime.OpenCvNet)."""
    from fr_pbd import models
    from fr_pbd.runtime import create_session

    return liveness.LivenessDetector({m: create_session(models.resolve(m), threads=1) for m in liveness.MODEL_NAMES})


def test_opencv_dnn_scores_as_onnxruntime_on_samples_and_photos(pad_models, detector, spoof_dir, faces_dir):
    """The pipeline runs the MiniFASNets on OpenCV's DNN module (faster there): same probabilities as onnxruntime."""
    from fr_pbd.runtime import OpenCvNet

    assert all(isinstance(s, OpenCvNet) for s in pad_models._sessions.values())
    oracle = _onnxruntime_pad()
    paths = [spoof_dir / n for n in ("spoof_print_F1.jpg", "spoof_replay_F2.jpg", "live_T1.jpg")]
    paths += [faces_dir / n for n in ("obama.jpg", "obama2.jpg", "biden.jpg", "astronaut.png")]
    for path in paths:
        frame = load_image(path)
        face = _face(detector, frame)
        got, want = pad_models.probabilities(frame, face), oracle.probabilities(frame, face)
        assert np.abs(got - want).max() < 1e-5, path.name
        assert pad_models.is_live(frame, face) == oracle.is_live(frame, face), path.name


def test_an_opencv_net_gives_each_thread_its_own_answer(pad_models, detector, spoof_dir):
    """OpenCV's Net keeps its blobs inside: concurrent verifications must not read each other's logits."""
    from concurrent.futures import ThreadPoolExecutor

    frames = [load_image(spoof_dir / n) for n in ("spoof_print_F1.jpg", "live_T1.jpg")]
    faces = [_face(detector, f) for f in frames]
    want = [pad_models.probabilities(f, face) for f, face in zip(frames, faces)]
    jobs = [i % 2 for i in range(64)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(lambda i: pad_models.probabilities(frames[i], faces[i]), jobs))
    assert all(np.array_equal(g, want[i]) for g, i in zip(got, jobs))
    assert not np.allclose(want[0], want[1])  # the two answers differ, so a mix-up would show


def test_a_file_opencv_cannot_read_is_a_one_line_model_error(models_env):
    from fr_pbd import models
    from fr_pbd.errors import ModelError
    from fr_pbd.models import VerifiedModel
    from fr_pbd.runtime import create_opencv_net

    spec = models.spec(liveness.MODEL_V2)
    with pytest.raises(ModelError, match="OpenCV cannot load minifasnet-v2") as e:
        create_opencv_net(VerifiedModel(spec, models_env / spec.file, b"not an onnx graph"))
    assert "\n" not in str(e.value)


# --- the verifier ---------------------------------------------------------------------
class StubPad:
    """Records what liveness was given; answers as told."""

    def __init__(self, live: bool):
        self.live = live
        self.calls: list[tuple[np.ndarray, Face]] = []

    def is_live(self, frame, face, threshold=None):
        self.calls.append((frame.copy(), face))
        return self.live


def _enrolled(home, extractor, faces_dir, pad_detector):
    v = Verifier(home, extractor, liveness=pad_detector)
    v.set_fallback(PIN)
    v.enroll("obama", [faces_dir / "obama.jpg"], Consent("1", "test-device"), fallback=PIN)
    return v


def test_attack_is_no_and_counts_as_a_failed_attempt(tmp_path, extractor, faces_dir):
    stub = StubPad(live=False)
    v = _enrolled(tmp_path / "h", extractor, faces_dir, stub)
    outcome = v.verify(faces_dir / "obama3.jpg")  # the right face, but "a photo"
    assert outcome == Decision(False, "presentation_attack")  # the reason for the user's screen; no score
    assert Store.open(tmp_path / "h").read().lockout.failures == 1
    # liveness saw the raw decoded frame and the face the pipeline chose
    frame, face = stub.calls[-1]
    assert np.array_equal(frame, load_image(faces_dir / "obama3.jpg"))
    assert face.box.shape == (4,)
    stub.live = True
    assert v.verify(faces_dir / "obama3.jpg") == Decision(True, "accepted")
    assert Store.open(tmp_path / "h").read().lockout == LockoutState()


def test_liveness_is_on_by_default_and_off_only_explicitly(tmp_path, extractor):
    v = Verifier(tmp_path / "h", extractor)
    assert v._liveness is True  # loaded on first use
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        off = Verifier(tmp_path / "h", extractor, liveness=False)
    assert off.liveness is None
    assert any("presentation-attack detection is OFF" in str(w.message) for w in caught)


def test_real_models_refuse_the_print_attack_in_verify(tmp_path, extractor, pad_models, spoof_dir):
    """End to end with the real ensemble: the live sample's owner enrolled; print and replay are no."""
    v = Verifier(tmp_path / "h", extractor, liveness=pad_models)
    v.set_fallback(PIN)
    v.enroll("t1", [spoof_dir / "live_T1.jpg"], Consent("1", "test-device"), fallback=PIN)
    assert v.verify(spoof_dir / "live_T1.jpg") == Decision(True, "accepted")
    assert v.verify(spoof_dir / "spoof_print_F1.jpg") == Decision(False, "presentation_attack")
    assert v.verify(spoof_dir / "spoof_replay_F2.jpg") == Decision(False, "presentation_attack")
    assert Store.open(tmp_path / "h").read().lockout.failures == 2


# --- eval pad ---------------------------------------------------------------------
def test_attack_type_from_subdirectory_or_prefix(tmp_path):
    assert pad.attack_type(tmp_path / "print" / "a.jpg", tmp_path) == "print"
    assert pad.attack_type(tmp_path / "spoof_replay_F2.jpg", tmp_path) == "replay"
    assert pad.attack_type(tmp_path / "mask_3.png", None) == "mask"
    assert pad.attack_type(tmp_path / "x.png", None) == "x"


def test_metrics_by_the_book():
    res = pad.PadResult(0.5, {"print": pad.Group(3, 1, [0.1, 0.6]), "replay": pad.Group(2, 0, [0.2, 0.3])},
                        pad.Group(4, 0, [0.9, 0.4, 0.8, 0.7]))
    assert res.apcer("print") == 0.5 and res.apcer("replay") == 0.0
    assert res.worst_apcer() == ("print", 0.5)
    assert res.bpcer() == 0.25
    assert res.apnrr() == pytest.approx(1 / 5) and res.bpnrr() == 0.0
    d = res.to_dict()
    assert "scores" not in json.dumps(d)


def test_eval_pad_command_on_the_samples(tmp_path, spoof_dir, faces_dir, capsys, pad_models):
    attacks = tmp_path / "attacks"
    for kind, name in (("print", "spoof_print_F1.jpg"), ("replay", "spoof_replay_F2.jpg")):
        (attacks / kind).mkdir(parents=True)
        shutil.copy(spoof_dir / name, attacks / kind / name)
    out = tmp_path / "pad.json"
    rc = cli_main(["eval", "pad", "--attacks", str(attacks), "--bona-fide", str(spoof_dir / "live_T1.jpg"),
                   str(faces_dir / "obama.jpg"), str(faces_dir / "no_face_coffee.png"), "--quiet",
                   "--json", str(out)])
    assert rc == 0
    rep = json.loads(out.read_text())
    assert rep["threshold"] == DEFAULT_THRESHOLD
    assert rep["attacks"]["print"]["apcer"] == 0.0 and rep["attacks"]["replay"]["apcer"] == 0.0
    assert rep["apcer_worst_case"]["apcer"] == 0.0
    assert rep["bona_fide"] == {"presented": 3, "no_response": 1, "decided": 2, "classified_attack": 0,
                                "bpcer": 0.0}
    text = capsys.readouterr().out
    assert "APCER worst case: 0.00 %" in text and "BPCER: 0.00 %" in text
    assert "obama" not in text and "spoof_print" not in text  # aggregates only


def test_eval_pad_is_a_command_of_fr_pbd():
    from fr_pbd.cli import build_parser
    from fr_pbd.cli.eval import cmd_eval_pad

    args = build_parser().parse_args(["eval", "pad", "--attacks", "a", "b", "--bona-fide", "c", "--threshold", "0.7"])
    assert args.attacks == [["a", "b"]] and args.bona_fide == [["c"]] and args.threshold == 0.7
    assert args.func is cmd_eval_pad