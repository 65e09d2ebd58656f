"""The dlib -> ONNX conversion, checked against dlib itself (the oracle).

Run with ``FR_PBD_DATA=../shared/data pytest -s tests/test_dlib_conversion.py`` to
see the parse time and the maximum difference printed.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from fr_pbd.errors import ImageError, ModelBuildError, ModelNotFoundError

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
N_IDENTITIES = 60  # first image of the first 60 identities of pairsDevTest.txt
MIN_CHIPS = 50
TOLERANCE = 1e-4


def _require(module: str):
    """Import an optional test dependency: fail in CI, skip elsewhere."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError:
        if IN_CI:
            pytest.fail(f"required test dependency missing in CI: {module}", pytrace=False)
        pytest.skip(f"{module} is not installed")


@pytest.fixture(scope="session")
def build_dlib():
    _require("onnx")
    from fr_pbd.build import dlib_resnet as build_dlib

    return build_dlib


@pytest.fixture(scope="session")
def dat_path(build_dlib) -> Path:
    try:
        return build_dlib.default_dat_path()
    except ModelBuildError as e:
        if IN_CI:
            pytest.fail(str(e), pytrace=False)
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def built(build_dlib, dat_path, tmp_path_factory):
    """The ONNX model, built once per session."""
    out = tmp_path_factory.mktemp("dlib_onnx") / "dlib_resnet_v1.onnx"
    report = build_dlib.build_dlib_resnet_report(out, dat_path)
    print(f"\n[dlib conversion] parsed {report.n_weights} weights in {report.parse_seconds:.3f} s; "
          f"total build {report.total_seconds:.3f} s; {report.size_bytes} bytes; sha256 {report.sha256}")
    return report


@pytest.fixture(scope="session")
def embedder(built):
    _require("onnxruntime")
    from fr_pbd.capture.dlib_resnet import DlibResNetEmbedder

    return DlibResNetEmbedder.from_path(built.path)


# --------------------------------------------------------------------------- parsing
def test_parse_is_fast_and_reports_its_time(build_dlib, dat_path, caplog):
    with caplog.at_level(logging.INFO, logger="fr_pbd.build.dlib_resnet"):
        net = build_dlib.parse_dlib_dat(dat_path)
    print(f"\n[dlib conversion] parse time {net.parse_seconds:.3f} s for {net.n_weights} weights")
    assert any("parsed" in r.getMessage() and " s" in r.getMessage() for r in caplog.records), \
        "the parse time is not logged"
    assert 0 < net.parse_seconds < 10, f"parsing took {net.parse_seconds:.1f} s"
    assert net.n_weights == 5_614_592
    assert net.input_size == (150, 150)
    # input_rgb_image_sized's means, stored as float32 in the file
    np.testing.assert_allclose(net.mean_rgb, (122.782, 117.001, 104.298), atol=1e-4)
    assert net.loss["distance_threshold"] == pytest.approx(0.6)
    kinds = [type(l).__name__ for l in net.layers]
    assert kinds.count("Conv") == 29 and kinds.count("Affine") == 29 and kinds.count("Fc") == 1


def test_build_is_deterministic(build_dlib, dat_path, built, tmp_path):
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    ha = build_dlib.build_dlib_resnet(a, dat_path)
    hb = build_dlib.build_dlib_resnet(b, dat_path)
    assert ha == hb == built.sha256
    assert a.read_bytes() == b.read_bytes()
    assert hashlib.sha256(a.read_bytes()).hexdigest() == ha


def test_onnx_io_contract(built):
    onnx = _require("onnx")
    ort = _require("onnxruntime")
    model = onnx.load(str(built.path))
    assert model.ir_version == 7
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 13)]
    assert model.producer_name == "fr-pbd"
    (inp,) = model.graph.input
    (out,) = model.graph.output
    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    assert inp.name == "input" and dims(inp) == ["N", 3, 150, 150]
    assert out.name == "embedding" and dims(out) == ["N", 128]
    sess = ort.InferenceSession(str(built.path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).integers(0, 256, (3, 3, 150, 150)).astype(np.float32)
    (y,) = sess.run(None, {"input": x})
    assert y.shape == (3, 128) and y.dtype == np.float32
    (y1,) = sess.run(None, {"input": x[1:2]})
    np.testing.assert_allclose(y[1:2], y1, atol=1e-6)


# --------------------------------------------------------------------------- bad input files
@pytest.mark.parametrize("cut", [0, 1, 7, 300, 340, 1000, 11_000_000, -1])
def test_truncated_dat_gives_one_line_model_build_error(build_dlib, dat_path, tmp_path, cut):
    data = dat_path.read_bytes()
    bad = tmp_path / "truncated.dat"
    bad.write_bytes(data[:cut])
    with pytest.raises(ModelBuildError) as info:
        build_dlib.build_dlib_resnet(tmp_path / "out.onnx", bad)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out.onnx").exists()


@pytest.mark.parametrize("kind", ["garbage", "trailing", "flipped_version"])
def test_corrupt_dat_gives_model_build_error(build_dlib, dat_path, tmp_path, kind):
    data = bytearray(dat_path.read_bytes())
    if kind == "garbage":
        data = bytearray(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif kind == "trailing":
        data += b"\x00"
    else:
        data[1] = 0x09  # add_loss_layer version 9
    bad = tmp_path / "corrupt.dat"
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelBuildError) as info:
        build_dlib.parse_dlib_dat(bad)
    assert "\n" not in str(info.value)


def test_missing_models_package_says_how_to_install(build_dlib, monkeypatch):
    import importlib.resources

    def no_package(name):
        raise ModuleNotFoundError(name)

    monkeypatch.setattr(importlib.resources, "files", no_package)
    with pytest.raises(ModelBuildError, match="pip install face_recognition_models"):
        build_dlib.default_dat_path()


# --------------------------------------------------------------------------- wrapper
def test_embedder_shapes_and_errors(embedder, built):
    from fr_pbd.capture.dlib_resnet import DlibResNetEmbedder

    chip = np.random.default_rng(2).integers(0, 256, (150, 150, 3), dtype=np.uint8)
    one = embedder.embed(chip)
    assert one.shape == (1, 128) and one.dtype == np.float32
    batch = embedder.embed(np.stack([chip, chip[::-1]]))
    assert batch.shape == (2, 128)
    np.testing.assert_allclose(batch[0], one[0], atol=1e-6)
    with pytest.raises(ImageError):
        embedder.embed(chip[:100])
    with pytest.raises(ImageError):
        embedder.embed(chip.astype(np.float32))
    with pytest.raises(ModelNotFoundError):
        DlibResNetEmbedder.from_path(built.path.with_name("nope.onnx"))


# --------------------------------------------------------------------------- oracle
def _identities(pairs_file: Path, n: int) -> list[str]:
    names: list[str] = []
    for line in pairs_file.read_text().splitlines()[1:]:
        parts = line.split()
        for name in (parts[0],) if len(parts) == 3 else (parts[0], parts[2]):
            if name not in names:
                names.append(name)
        if len(names) >= n:
            break
    return names[:n]


@pytest.mark.slow
def test_onnx_matches_dlib_on_lfw_chips(lfw_dir, dat_path, embedder):
    dlib = _require("dlib")
    cv2 = _require("cv2")
    models = dat_path.parent
    sp5 = models / "shape_predictor_5_face_landmarks.dat"  # never the 68-point model (non-commercial)
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(sp5))
    facerec = dlib.face_recognition_model_v1(str(dat_path))

    chips, refs, names = [], [], []
    for name in _identities(lfw_dir / "pairsDevTest.txt", N_IDENTITIES):
        bgr = cv2.imread(str(lfw_dir / name / f"{name}_0001.jpg"))
        assert bgr is not None, f"cannot read the first image of {name}"
        img = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        dets = detector(img, 1)
        if len(dets) == 0:
            continue  # HOG miss: not what this test is about
        box = max(dets, key=lambda r: r.width() * r.height())
        chip = dlib.get_face_chip(img, predictor(img, box), size=150, padding=0.25)
        chips.append(chip)
        refs.append(np.array(facerec.compute_face_descriptor(chip), dtype=np.float64))
        names.append(name)
    assert len(chips) >= MIN_CHIPS, f"only {len(chips)} chips extracted"

    ours = embedder.embed(np.stack(chips)).astype(np.float64)
    ref = np.stack(refs)
    diff = np.abs(ours - ref)
    worst = float(diff.max())
    print(f"\n[dlib conversion] max abs diff over {len(chips)} LFW chips: {worst:.3e} "
          f"(mean {diff.mean():.3e}; worst chip {names[int(diff.max(axis=1).argmax())]})")
    assert worst <= TOLERANCE, f"max abs diff {worst:.3e} over {len(chips)} chips exceeds {TOLERANCE}"
