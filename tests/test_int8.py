"""int8 dlib embedder: deterministic build, accuracy on LFW pairsDevTest within 0.2 points of fp32.

The build needs only the verified fp32 file and the committed range table, so it runs
here into a temporary directory. Accuracy is scored as benchmarks/lfw_devtest_side_by_side.py
does (accuracy at the best single threshold, a failed image makes its pairs wrong), on the
same chips for both models, so the difference is the quantisation alone.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest

from fr_pbd import models
from fr_pbd.capture.dlib_resnet import DlibResNetEmbedder
from fr_pbd.capture.image import load_image
from fr_pbd.capture.pipeline import TemplateExtractor, load_extractor
from fr_pbd.errors import ModelBuildError, ModelError, QualityError
from fr_pbd.models import quantize
from fr_pbd.runtime import create_session
from tests.conftest import missing
from tests.helpers import lfw_image_path, read_pairs

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from lfw_devtest_side_by_side import best_threshold_accuracy  # noqa: E402

MAX_LOSS = 0.002  # 0.2 percentage points


@pytest.fixture(scope="module")
def fp32(models_env) -> models.VerifiedModel:
    try:
        return models.resolve("dlib-resnet-v1")
    except ModelError as exc:
        missing(str(exc))


@pytest.fixture(scope="module")
def int8_path(fp32, tmp_path_factory) -> Path:
    return quantize.build_dlib_int8(out_dir=tmp_path_factory.mktemp("int8"))


def test_int8_build_is_pinned_and_deterministic(fp32, int8_path):
    data = int8_path.read_bytes()
    spec = models.spec("dlib-resnet-v1-int8")
    assert hashlib.sha256(data).hexdigest() == spec.sha256 and len(data) == spec.size
    assert spec.obtain == "build" and spec.extra["source_sha256"] == fp32.spec.sha256
    ranges = quantize._load_ranges(quantize.RANGES_FILE)
    assert quantize.build_int8_bytes(fp32.data, ranges) == data
    assert len(data) < len(fp32.data) / 3  # int8 weights


def test_broken_range_table_is_a_build_error(fp32, tmp_path):
    bad = tmp_path / "ranges.json"
    bad.write_text("{not json")
    with pytest.raises(ModelBuildError, match="calibration table"):
        quantize.build_dlib_int8(out_dir=tmp_path, ranges_file=bad)


@pytest.mark.slow
def test_int8_accuracy_on_pairs_dev_test_within_0_2_points(fp32, int8_path, lfw_dir):
    pairs = read_pairs(lfw_dir / "pairsDevTest.txt")
    same = np.array([a == b for a, _, b, _ in pairs])
    paths = list(dict.fromkeys(lfw_image_path(lfw_dir, n, k) for a, na, b, nb in pairs for n, k in ((a, na), (b, nb))))
    ext = load_extractor()
    captures = {}
    for p in paths:
        try:
            captures[p] = ext.capture(load_image(p), "verify", "center")
        except QualityError:
            captures[p] = None
    ok = [p for p in paths if captures[p] is not None]
    int8 = TemplateExtractor(ext.detector, DlibResNetEmbedder(create_session(
        models.VerifiedModel(models.spec("dlib-resnet-v1-int8"), int8_path, int8_path.read_bytes()))))
    assert int8.model_id == ext.model_id  # same model, another precision: matches fp32 enrolments
    acc, vecs = {}, {}
    for name, ex in (("fp32", ext), ("int8", int8)):
        v = {}
        for i in range(0, len(ok), 32):
            batch = ok[i:i + 32]
            for p, t in zip(batch, ex.embed([captures[p] for p in batch])):
                v[p] = t.vector
        scores = np.array([float(v[x] @ v[y]) if x in v and y in v else np.nan
                           for x, y in ((lfw_image_path(lfw_dir, a, na), lfw_image_path(lfw_dir, b, nb))
                                        for a, na, b, nb in pairs)])
        acc[name] = best_threshold_accuracy(scores, same, True)[0]
        vecs[name] = np.stack([v[p] for p in ok])
    agreement = (vecs["fp32"] * vecs["int8"]).sum(axis=1)
    print(f"\n[int8] pairsDevTest accuracy fp32 {100 * acc['fp32']:.2f} % int8 {100 * acc['int8']:.2f} % "
          f"({len(ok)} images); template cosine int8 vs fp32 mean {agreement.mean():.5f} min {agreement.min():.5f}")
    assert acc["int8"] >= acc["fp32"] - MAX_LOSS
    assert agreement.min() > 0.98
