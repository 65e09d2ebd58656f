"""int8 dlib embedder: deterministic build, and the same yes/no as fp32 on LFW pairsDevTest.

The build needs only the verified fp32 file and the committed range table, so it runs
here into a temporary directory. What matters of a quantised model is the decision it
takes, so it is judged by yes/no agreement with fp32 at the manifest's default threshold
on the 1,000 pairsDevTest pairs, and by accuracy at the best single threshold (a failed
image makes its pairs wrong). Both models embed the same chips (tests/test_accuracy.py
captures them once per session), so every difference is the quantisation alone.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from fr_pbd import models
from fr_pbd.build import dlib_resnet_int8 as quantize
from fr_pbd.capture.dlib_resnet import DlibResNetEmbedder
from fr_pbd.capture.extractor import TemplateExtractor
from fr_pbd.errors import ModelBuildError, ModelError
from fr_pbd.runtime import create_session
from tests.conftest import missing
from tests.test_accuracy import best_threshold_accuracy, devtest

MAX_LOSS = 0.002  # 0.2 percentage points of best-threshold accuracy
MIN_AGREEMENT = 0.975
"""int8 and fp32 give the same yes/no at the default threshold on >= 97.5 % of the 1,000 pairs.

Measured 2026-11-29 (commit 0f79efe, x86-64 CPU, onnxruntime) at the default 0.95831: 982 of
1,000 (98.20 %); the 18 differences are all matched pairs (int8 FNMR 49.00 % vs 47.40 %): the
threshold chosen for transaction FAR 2e-5 lies where matched pairs' scores are
denser than at the earlier 0.94365, where the same chips gave 991 of 1,000 (9 matched pairs
within 0.016 of the threshold, the largest int8-fp32 score difference). 97.5 % leaves room
for 7 more such near-threshold flips on another CPU's int8 kernels, no more; impostor flips
stay at none (MAX_IMPOSTOR_FLIPS).
"""
MAX_IMPOSTOR_FLIPS = 0  # measured 0: int8 never accepts a mismatched pair that fp32 rejects


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
def test_int8_takes_the_fp32_decision_on_pairs_dev_test(extractor, fp32, int8_path, lfw_dir):
    dt = devtest(extractor, lfw_dir)
    int8 = TemplateExtractor(extractor.detector, DlibResNetEmbedder(create_session(
        models.VerifiedModel(models.spec("dlib-resnet-v1-int8"), int8_path, int8_path.read_bytes()))))
    assert int8.model_id == extractor.model_id  # same model, another precision: matches fp32 enrolments
    ok = list(dt.fp32)
    v8 = {}
    for i in range(0, len(ok), 32):
        batch = ok[i:i + 32]
        for p, t in zip(batch, int8.embed([dt.captures[p] for p in batch])):
            v8[p] = t.vector
    threshold = models.spec("dlib-resnet-v1").default_threshold
    s32, s8, same = dt.scores(lfw_dir, dt.fp32), dt.scores(lfw_dir, v8), dt.same
    yes32, yes8 = s32 >= threshold, s8 >= threshold  # NaN (failed image): no, for both
    agree = yes32 == yes8
    acc32, acc8 = best_threshold_accuracy(s32, same), best_threshold_accuracy(s8, same)
    print(f"\n[int8] pairsDevTest yes/no agreement with fp32 at {threshold}: {int(agree.sum())}/{agree.size} "
          f"({int((~agree & same).sum())} matched, {int((~agree & ~same).sum())} mismatched pairs differ); "
          f"FNMR fp32 {100 * np.mean(~yes32[same]):.2f} % int8 {100 * np.mean(~yes8[same]):.2f} %; "
          f"best-threshold accuracy fp32 {100 * acc32:.2f} % int8 {100 * acc8:.2f} %")
    assert agree.mean() >= MIN_AGREEMENT
    assert int((yes8 & ~yes32 & ~same).sum()) <= MAX_IMPOSTOR_FLIPS
    assert acc8 >= acc32 - MAX_LOSS
