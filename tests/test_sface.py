"""SFace's pre-processing against OpenCV's own FaceRecognizerSF, on real YuNet faces.

The SFace network cannot be fetched on the build machine, and alignCrop does not
run the network, so FaceRecognizerSF is built on tiny stand-in ONNX graphs with
SFace's input and output shapes: one that pools (enough to construct it), one
whose output is 128 chosen input values (to read what ``feature()`` feeds it).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from fr_pbd import models
from fr_pbd.capture import dlib_resnet, quality, sface, yunet
from fr_pbd.capture.align import align_face, similarity_transform
from fr_pbd.capture.image import load_image
from fr_pbd.capture.extractor import DETECTION_THRESHOLD, TemplateExtractor
from fr_pbd.pipeline import build_pipeline
from fr_pbd.capture.sface import SFaceEmbedder
from fr_pbd.capture.yunet import Face, YuNet
from fr_pbd.errors import ImageError, ModelError, ModelNotFoundError
from fr_pbd.runtime import create_session
from tests.conftest import missing

S = sface.INPUT_SIZE
# The photos of the brief; two_people.jpg gives both of its faces.
PHOTOS = ["obama.jpg", "biden2.jpg", "astronaut.png", "two_people.jpg"]
# 128 fixed positions in the flattened [3, 112, 112] input: what the probe graph outputs.
PROBE_INDEX = np.random.default_rng(7).choice(3 * S * S, sface.EMBEDDING_DIM, replace=False).astype(np.int64)


def _save(nodes: list, inits: list, path: Path, in_shape: list[int] | None = None) -> Path:
    graph = helper.make_graph(
        nodes, "sface_stand_in",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, in_shape or [1, 3, S, S])],
        [helper.make_tensor_value_info("fc1", TensorProto.FLOAT, [1, sface.EMBEDDING_DIM])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="fr-pbd-test")
    model.ir_version = 7
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def pooling_stand_in(path: Path, in_shape: list[int] | None = None) -> Path:
    """GlobalAveragePool + Flatten + MatMul to 128 with fixed weights: SFace's shapes, no meaning."""
    w = np.zeros((3, sface.EMBEDDING_DIM), np.float32)
    w[np.arange(sface.EMBEDDING_DIM) % 3, np.arange(sface.EMBEDDING_DIM)] = 1.0
    nodes = [helper.make_node("GlobalAveragePool", ["data"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["flat"]),
             helper.make_node("MatMul", ["flat", "w"], ["fc1"])]
    return _save(nodes, [numpy_helper.from_array(w, "w")], path, in_shape)


def probe_stand_in(path: Path) -> Path:
    """Output = the input tensor's values at PROBE_INDEX (NCHW, flattened): exposes layout, scale, order."""
    nodes = [helper.make_node("Flatten", ["data"], ["flat"]),
             helper.make_node("Gather", ["flat", "idx"], ["fc1"], axis=1)]
    return _save(nodes, [numpy_helper.from_array(PROBE_INDEX, "idx")], path)


def face_row(face: Face) -> np.ndarray:
    """Our Face as OpenCV's 1x15 YuNet row: x, y, w, h, 10 landmark coordinates, score."""
    return np.concatenate([face.box, face.landmarks.ravel(), [face.score]]).astype(np.float32)[None]


def opencv_matrix(landmarks: np.ndarray) -> np.ndarray:
    """FaceRecognizerSF's getSimilarityTransformMatrix, with its float32 steps and rounded dst mean.

    The same least-squares Umeyama fit as align.similarity_transform; only the
    arithmetic differs. Here to show that this arithmetic is the whole difference.
    """
    f = np.float32
    src = np.asarray(landmarks, f)
    mean = np.array([f(f(f(f(src[0, k] + src[1, k]) + src[2, k]) + src[3, k]) + src[4, k]) / f(5) for k in (0, 1)], f)
    dst_mean = np.array([56.0262, 71.9008], f)  # hard-coded in face_recognize.cpp
    s = (src - mean).astype(f)
    d = (sface.ALIGNMENT_REFERENCE - dst_mean).astype(f)
    a = np.array([[sum(float(f(d[i, r] * s[i, c])) for i in range(5)) / 5 for c in (0, 1)] for r in (0, 1)])
    u, sv, vt = np.linalg.svd(a)
    sign = np.array([1.0, -1.0 if np.linalg.det(a) < 0 else 1.0])
    rot = u @ np.diag(sign) @ vt
    var = sum(float(f(s[i, k] * s[i, k])) for i in range(5) for k in (0, 1)) / 5
    scale = float((sv * sign).sum()) / var
    t = dst_mean.astype(np.float64) - scale * (rot @ mean.astype(np.float64))
    return np.hstack([scale * rot, t[:, None]])


@pytest.fixture(scope="module")
def detector(models_env) -> YuNet:
    try:
        return YuNet(create_session(models.resolve(yunet.MODEL_NAME)), score_threshold=DETECTION_THRESHOLD)
    except ModelError as exc:
        missing(str(exc))


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("sface_stand_ins")
    return {"pool": pooling_stand_in(d / "pool.onnx"), "probe": probe_stand_in(d / "probe.onnx")}


@pytest.fixture(scope="module")
def extractor(detector, stand_ins) -> TemplateExtractor:
    """The real pipeline with SFaceEmbedder on the probe graph in place of the network."""
    return TemplateExtractor(detector, SFaceEmbedder.from_path(stand_ins["probe"]))


@pytest.fixture(scope="module")
def faces(detector, faces_dir) -> list[tuple[str, np.ndarray, Face]]:
    out = []
    for name in PHOTOS:
        img = load_image(faces_dir / name)
        found = detector.detect(img)
        assert len(found) == (2 if name == "two_people.jpg" else 1), name
        out += [(name, img, f) for f in found]
    return out


def test_constants_are_opencvs_and_the_manifests():
    spec = models.spec(sface.MODEL_ID)
    assert spec.role == "embedder" and spec.default_threshold == sface.DEFAULT_THRESHOLD == 0.363
    assert f"[1,3,{S},{S}] RGB" in spec.input and sface.CHANNEL_ORDER == "RGB"
    assert (S, sface.EMBEDDING_DIM) == (112, 128)
    # face_recognize.cpp hard-codes the reference's mean, rounded to 4 decimals.
    np.testing.assert_allclose(sface.ALIGNMENT_REFERENCE.mean(axis=0), [56.0262, 71.9008], atol=5e-5)
    for attr in ("alignment_reference", "input_size", "channel_order", "flip_average", "area_prefilter"):
        assert hasattr(dlib_resnet.DlibResNetEmbedder, attr) and hasattr(SFaceEmbedder, attr), attr


def test_chip_matches_opencv_align_crop(faces, extractor, stand_ins):
    """Same fit, same warp: our chip equals alignCrop's to within one grey level."""
    rec = cv2.FaceRecognizerSF.create(str(stand_ins["pool"]), "")
    worst_max, worst_frac, means = 0, 0.0, []
    for name, img, face in faces:
        ref = rec.alignCrop(img, face_row(face))
        ours = extractor.align(img, face.landmarks)
        assert ours.shape == ref.shape == (S, S, 3) and ours.dtype == ref.dtype == np.uint8
        diff = np.abs(ours.astype(np.int16) - ref)
        worst_max, worst_frac = max(worst_max, int(diff.max())), max(worst_frac, float((diff > 0).mean()))
        means.append(float(diff.mean()))
        # The one-level differences are arithmetic: OpenCV's float32 fit, warped the same way, is exact.
        exact = cv2.warpAffine(img, opencv_matrix(face.landmarks), (S, S), flags=cv2.INTER_LINEAR)
        assert np.array_equal(exact, ref), name
        ours_m = similarity_transform(face.landmarks, sface.ALIGNMENT_REFERENCE)
        assert np.abs(opencv_matrix(face.landmarks) - ours_m).max() < 1e-4
    print(f"\nalignCrop vs fr-pbd on {len(faces)} faces: max |diff| {worst_max}, "
          f"mean |diff| <= {max(means):.5f}, pixels differing <= {100 * worst_frac:.3f} %")
    assert worst_max <= 1 and worst_frac < 0.005


def test_pipeline_capture_gives_the_align_crop_chip_and_gates_on_the_dlib_chip(faces, extractor, stand_ins):
    rec = cv2.FaceRecognizerSF.create(str(stand_ins["pool"]), "")
    name, img, face = faces[0]
    cap = extractor.capture(img)
    assert cap.chip_bgr.shape == (S, S, 3)
    assert np.abs(cap.chip_bgr.astype(np.int16) - rec.alignCrop(img, face_row(face))).max() <= 1
    # The gate's limits were measured on dlib-geometry chips; it keeps using one.
    gate_chip = align_face(img, face.landmarks, dlib_resnet.ALIGNMENT_REFERENCE, dlib_resnet.INPUT_SIZE)
    assert cap.measures == quality.measure(face.landmarks, gate_chip)


def test_input_tensor_is_what_opencv_feature_feeds(faces, extractor, stand_ins):
    """Layout NCHW, raw 0-255, RGB: the probe graph returns the same values from both."""
    rec = cv2.FaceRecognizerSF.create(str(stand_ins["probe"]), "")
    embedder = extractor.embedder
    noise = np.random.default_rng(1).integers(0, 256, (S, S, 3), dtype=np.uint8)
    chips_bgr = [extractor.align(img, face.landmarks) for _, img, face in faces] + [noise]
    for chip in chips_bgr:
        theirs = rec.feature(chip).reshape(-1)
        ours = embedder.embed(chip[:, :, ::-1])[0]  # the pipeline passes CHANNEL_ORDER = RGB
        np.testing.assert_array_equal(ours, theirs)
        assert not np.array_equal(embedder.embed(chip)[0], theirs)  # BGR would be caught
    # A batch through a fixed-batch-1 graph equals one chip at a time.
    batch = np.stack(chips_bgr)[..., ::-1]
    np.testing.assert_array_equal(embedder.embed(batch), np.concatenate([embedder.embed(c) for c in batch]))
    assert embedder.embed(batch[:0]).shape == (0, sface.EMBEDDING_DIM)
    # Through the pipeline (capture -> Template): the same values, normalised, no mirror averaging.
    _, img, face = faces[0]
    t = extractor.embed([extractor.capture(img)])[0]
    want = rec.feature(extractor.align(img, face.landmarks)).reshape(-1)
    np.testing.assert_allclose(t.vector, want / np.linalg.norm(want), rtol=1e-6)
    assert t.model_id == sface.MODEL_ID


def test_wrong_graph_or_chip_is_a_typed_error(tmp_path):
    with pytest.raises(ModelError, match="not an SFace model"):
        SFaceEmbedder.from_path(pooling_stand_in(tmp_path / "x.onnx", [1, 3, 150, 150]))
    emb = SFaceEmbedder.from_path(pooling_stand_in(tmp_path / "ok.onnx"))
    with pytest.raises(ImageError):
        emb.embed(np.zeros((150, 150, 3), np.uint8))
    with pytest.raises(ImageError):
        emb.embed(np.zeros((S, S, 3), np.float32))


def test_missing_sface_file_names_the_fetch_command(models_env, tmp_path, monkeypatch):
    yunet_file = models.spec(yunet.MODEL_NAME).file
    if not (models_env / yunet_file).is_file():
        missing(f"{models_env / yunet_file} is missing")
    only_yunet = tmp_path / "models"
    only_yunet.mkdir()
    shutil.copy(models_env / yunet_file, only_yunet / yunet_file)
    monkeypatch.setenv(models.ENV_MODELS, str(only_yunet))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(ModelNotFoundError) as info:
        build_pipeline(liveness=False, embedder=sface.MODEL_ID)
    msg = str(info.value)
    assert "\n" not in msg and msg.endswith("run: fr-pbd models fetch sface-2021dec"), msg
    with pytest.raises(ModelNotFoundError, match="fr-pbd models fetch sface-2021dec"):
        SFaceEmbedder.from_path(tmp_path / "face_recognition_sface_2021dec.onnx")
    with pytest.raises(ModelError, match="not an embedder"):
        build_pipeline(liveness=False, embedder=yunet.MODEL_NAME)


def test_real_sface_when_present(faces_dir):
    """End to end, only where the real file has been fetched (never on the build machine)."""
    if not models.status(sface.MODEL_ID).verified:
        pytest.skip("optional model sface-2021dec not fetched (fr-pbd models fetch sface-2021dec)")
    ext = build_pipeline(liveness=False, embedder=sface.MODEL_ID).extractor
    t = {n: ext.template(faces_dir / n) for n in ("obama.jpg", "obama2.jpg", "biden.jpg", "biden2.jpg")}
    score = lambda a, b: float(t[a].vector @ t[b].vector)  # noqa: E731
    assert score("obama.jpg", "obama2.jpg") >= sface.DEFAULT_THRESHOLD
    assert score("biden.jpg", "biden2.jpg") >= sface.DEFAULT_THRESHOLD
    assert score("obama.jpg", "biden.jpg") < sface.DEFAULT_THRESHOLD
