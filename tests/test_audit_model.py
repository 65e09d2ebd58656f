"""A black box's DPIA checks from the model its TARGET.toml declares in [model] (fr_pbd.audit.model).

The figures are read from the committed `fr-pbd eval lfw --groups` report behind README's
numbers (docs/results/lfw-eval-fp32.json) and compared with the report's own counts, read
here independently. The Howdy-like declaration (dlib's model, Euclidean distance 0.35 on
raw descriptors) is judged on the lengths of real dlib descriptors, measured with dlib.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from fr_pbd import models
from fr_pbd.audit import FAIL, INCONCLUSIVE, PASS, checks
from fr_pbd.audit.model import RAW_NORMS, DeclaredModel, dpia_accuracy, dpia_bias, dpia_provenance, parse_model
from fr_pbd.audit.table import Context, spec
from fr_pbd.errors import AuditError
from tests.conftest import missing, need_tool

ROOT = Path(__file__).resolve().parent.parent
RECORD = ROOT / "docs" / "results" / "lfw-eval-fp32.json"
REPORT = json.loads(RECORD.read_text(encoding="utf-8"))["result"]
DLIB = "dlib-resnet-v1"
ONNX_SHA = models.spec(DLIB).sha256
DAT_SHA = models.spec(DLIB).extra["source_sha256"]
THRESHOLD = models.spec(DLIB).default_threshold  # the product's real operating point, in the report's units
CLAIM = models.spec(DLIB).extra["target_fmr"]
DPIA = ("DPIA.model-provenance", "DPIA.accuracy", "DPIA.bias")


def declare(**table) -> DeclaredModel:
    return parse_model(table, "TARGET.toml")


def groups_of(report: dict) -> dict[str, dict]:
    return {f"{a}={g}": s["curve"] for a, attr in report["groups"]["attributes"].items()
            for g, s in attr["groups"].items()}


def curve_at(curve: dict, t: float, strict: bool = False) -> tuple[float, float]:
    """(FMR at the grid point at or below t: at least FMR(t); FMR at the first point above t: at most FMR(t))."""
    ts = curve["thresholds"]
    below = max(k for k in range(len(ts)) if ts[k] <= t)
    above = min(k for k in range(len(ts)) if (ts[k] > t if strict else ts[k] >= t))
    n = curve["impostor_comparisons"]
    return curve["false_matches"][below] / n, curve["false_matches"][above] / n


# --------------------------------------------------------------------------------------
# the table: one-line errors
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("table, says", [
    ("dlib", "must be a table"),
    ({"id": DLIB, "metric": "cosine", "threshold": 0.9, "distance": 1}, "unknown key(s) distance"),
    ({"id": DLIB, "threshold": 0.9}, "metric must be"),
    ({"id": DLIB, "metric": "manhattan", "threshold": 0.9}, "metric must be"),
    ({"id": DLIB, "metric": "cosine"}, "threshold must be a finite number"),
    ({"id": DLIB, "metric": "cosine", "threshold": "0.9"}, "threshold must be a finite number"),
    ({"id": DLIB, "metric": "cosine", "threshold": True}, "threshold must be a finite number"),
    ({"id": DLIB, "metric": "euclidean", "threshold": math.nan}, "threshold must be a finite number"),
    ({"id": DLIB, "metric": "euclidean", "threshold": math.inf}, "threshold must be a finite number"),
    ({"id": DLIB, "metric": "cosine", "threshold": 1.5}, "from -1 to 1"),
    ({"id": DLIB, "metric": "euclidean", "threshold": -0.35}, "a distance (>= 0)"),
    ({"metric": "euclidean", "threshold": 0.35}, "needs sha256"),
    ({"sha256": DAT_SHA[:63], "metric": "euclidean", "threshold": 0.35}, "64 hexadecimal digits"),
    ({"sha256": "g" * 64, "metric": "euclidean", "threshold": 0.35}, "64 hexadecimal digits"),
    ({"sha256": 5, "metric": "euclidean", "threshold": 0.35}, "64 hexadecimal digits"),
    ({"id": "", "metric": "cosine", "threshold": 0.9}, "id must be a model name"),
    ({"id": DLIB, "metric": "cosine", "threshold": 0.9, "target_fmr": 2}, "target_fmr must be a rate"),
    ({"id": DLIB, "metric": "euclidean", "threshold": 0.35, "unit_norm": "yes"}, "unit_norm must be true or false"),
    ({"id": DLIB, "sha256": "0" * 64, "metric": "cosine", "threshold": 0.9}, "sha256 is not a file of dlib-resnet-v1"),
    ({"id": "yunet-2023mar", "metric": "cosine", "threshold": 0.9}, "a detector, not a face-recognition model"),
])
def test_a_bad_model_table_is_a_one_line_error(table, says):
    with pytest.raises(AuditError) as e:
        parse_model(table, "T.toml")
    assert says in str(e.value) and str(e.value).startswith("T.toml: [model]") and "\n" not in str(e.value)


def test_load_target_reads_model_and_refuses_a_bad_one(tmp_path):
    base = '[socket]\npath = "s.sock"\n[answer]\nyes = "Y"\nno = "N"\n'
    from fr_pbd.audit.target import load_target

    (tmp_path / "t.toml").write_text(base)
    assert load_target(tmp_path / "t.toml").model is None
    (tmp_path / "t.toml").write_text(base + f'[model]\nid = "{DLIB}"\nmetric = "cosine"\nthreshold = 0.95\n')
    assert load_target(tmp_path / "t.toml").model.known == DLIB
    (tmp_path / "t.toml").write_text(base + '[model]\nmetric = "cosine"\nthreshold = 0.95\n')
    with pytest.raises(AuditError, match=r"t\.toml: \[model\] needs sha256"):
        load_target(tmp_path / "t.toml")


def test_the_declared_model_resolves_by_id_by_either_files_sha256_or_not_at_all():
    assert (declare(id=DLIB, metric="cosine", threshold=0.9).known, declare(sha256=ONNX_SHA.upper(), metric="cosine",
            threshold=0.9).known) == (DLIB, DLIB)
    m = declare(sha256=DAT_SHA, metric="euclidean", threshold=0.35)
    assert m.known == DLIB and "dlib_face_recognition_resnet_model_v1.dat" in m.matched_by
    assert declare(sha256="ab" * 32, metric="euclidean", threshold=0.35).known is None
    assert declare(id="arcface-r100", metric="cosine", threshold=0.3).known is None


def test_the_upstream_dlib_file_a_product_loads_is_the_one_the_manifest_names():
    """The sha256 the Howdy-like declaration gives is the real file's: hashed from the installed package."""
    try:
        frm = importlib.import_module("face_recognition_models")
    except ModuleNotFoundError:
        missing("face_recognition_models is not installed (pip install face_recognition_models)")
    dat = Path(frm.__file__).parent / "models" / "dlib_face_recognition_resnet_model_v1.dat"
    assert declare(sha256=hashlib.sha256(dat.read_bytes()).hexdigest(), metric="euclidean",
                   threshold=0.35).known == DLIB


# --------------------------------------------------------------------------------------
# provenance
# --------------------------------------------------------------------------------------
def test_a_known_model_has_its_provenance_from_the_manifest_an_unknown_one_is_inconclusive():
    c = dpia_provenance(declare(sha256=DAT_SHA, metric="euclidean", threshold=0.35))
    assert c.status == PASS and "CC0-1.0" in c.summary
    assert any(models.spec(DLIB).training_data in d for d in c.details)
    assert any("covers the face-recognition model only" in d for d in c.details)
    c = dpia_provenance(declare(sha256="ab" * 32, metric="euclidean", threshold=0.35))
    assert c.status == INCONCLUSIVE and "not in fr-pbd's manifest" in c.summary and "manifest knows" in c.needs


# --------------------------------------------------------------------------------------
# accuracy and bias at the real threshold, in the report's units
# --------------------------------------------------------------------------------------
def test_the_real_threshold_in_the_reports_units_gets_the_reports_numbers_and_verdicts(tmp_path):
    m = declare(id=DLIB, metric="cosine", threshold=THRESHOLD)
    bias, acc = dpia_bias(m, RECORD), dpia_accuracy(m, RECORD)
    expect_bad = False
    for key, curve in groups_of(REPORT).items():
        hi, lo = curve_at(curve, THRESHOLD)
        got = bias.values["groups"][key]["fmr_bracket"]
        assert (got["at_most"], got["at_least"]) == (hi, lo) and bias.values["groups"][key]["fmr"] == hi
        expect_bad |= hi > CLAIM
    assert bias.status == (FAIL if expect_bad else PASS) == PASS, bias.summary
    from fr_pbd.audit.report import bias_figure

    assert "<svg" in bias_figure(bias.values) and "sex=female" in bias_figure(bias.values)  # audit.html draws it
    # fr-pbd's own home check reads the same curve at the same (manifest) threshold: the same FMR per group
    bare = tmp_path / "eval.json"  # the home check reads a bare report, not a result record
    bare.write_text(json.dumps(REPORT))
    home = checks.dpia_bias(bare, None)
    assert home.status == PASS and home.values["threshold"] == THRESHOLD
    for key, v in home.values["groups"].items():
        assert {k: bias.values["groups"][key][k] for k in v} == v
    # all comparisons: the report's own operating points bracket it
    ops = sorted((op["threshold"], op["false_matches"] / op["impostor_comparisons"])
                 for op in REPORT["fnmr_at_fmr"].values())
    assert acc.values["fmr"]["at_most"] == min(f for t, f in ops if t <= THRESHOLD) <= CLAIM
    assert acc.status == PASS and f"within the claimed {CLAIM:g}" in acc.summary
    assert any("the manifest's target_fmr" in d for d in acc.details)


def test_a_lower_threshold_fails_both_with_the_reports_counts():
    m = declare(id=DLIB, metric="cosine", threshold=0.94)
    bias, acc = dpia_bias(m, RECORD), dpia_accuracy(m, RECORD)
    female = groups_of(REPORT)["sex=female"]
    assert bias.status == FAIL and bias.values["groups"]["sex=female"]["fmr_bracket"]["at_least"] == \
        curve_at(female, 0.94)[1]
    assert curve_at(female, 0.94)[1] > CLAIM and "sex=female: FMR at least" in bias.summary
    # the groups' same-group false matches alone put the overall FMR above the claim
    assert acc.status == FAIL and acc.values["fmr"]["at_least"] > CLAIM


def test_at_the_reports_own_worst_group_threshold_the_figures_are_exact():
    wg = REPORT["groups"]["worst_group"]
    m = declare(id=DLIB, metric="cosine", threshold=wg["threshold"])
    bias, acc = dpia_bias(m, RECORD), dpia_accuracy(m, RECORD)
    binding = bias.values["groups"][wg["binding"]]["fmr_bracket"]
    assert binding["exact"] and binding["at_most"] <= wg["target_fmr"] and bias.status == PASS
    overall = wg["all_comparisons_at_worst_group_threshold"]
    assert acc.values["fmr"] == {"at_least": overall["fmr"], "at_most": overall["fmr"], "exact": True}
    assert acc.values["fnmr"]["exact"] and acc.values["fnmr"]["at_most"] == overall["fnmr"]


def test_overall_counts_on_both_sides_of_the_claim_do_not_decide_accuracy():
    """Just below the report's FMR=1e-4 point: FMR over all comparisons between 1e-4 and the 1e-3 point."""
    t = REPORT["fnmr_at_fmr"]["1e-4"]["threshold"] - 1e-4
    c = dpia_accuracy(declare(id=DLIB, metric="cosine", threshold=t), RECORD)
    assert c.status == INCONCLUSIVE and c.values["fmr"]["at_least"] <= CLAIM < c.values["fmr"]["at_most"]
    assert f"--threshold {t:.6g}" in c.needs


def test_a_claim_declared_in_model_is_the_one_judged():
    c = dpia_bias(declare(id=DLIB, metric="cosine", threshold=THRESHOLD, target_fmr=1e-6), RECORD)
    assert c.status == FAIL and c.values["target_fmr"] == 1e-6
    assert any("target_fmr in [model]" in d for d in c.details)


# --------------------------------------------------------------------------------------
# the Howdy-like declaration: dlib's model, Euclidean distance 0.35
# --------------------------------------------------------------------------------------
def test_howdys_raw_euclidean_threshold_is_inconclusive_with_the_measured_reason():
    m = declare(sha256=DAT_SHA, metric="euclidean", threshold=0.35)
    for c in (dpia_accuracy(m, RECORD), dpia_bias(m, RECORD)):
        assert c.status == INCONCLUSIVE and "not unit length" in c.summary
        assert f"{RAW_NORMS[DLIB]['min']:.2f} to {RAW_NORMS[DLIB]['max']:.2f}" in c.summary
        assert "Euclidean distance" in c.needs and "unit_norm = true" in c.needs
        assert not c.values and any("no figure is read" in d for d in c.details)


def test_unit_length_descriptors_convert_exactly_and_get_figures():
    t = 1 - 0.35 ** 2 / 2
    m = declare(sha256=DAT_SHA, metric="euclidean", threshold=0.35, unit_norm=True)
    bias, acc = dpia_bias(m, RECORD), dpia_accuracy(m, RECORD)
    assert bias.values["report_threshold"] == acc.values["report_threshold"] == t and bias.values["strict"]
    for key, curve in groups_of(REPORT).items():
        hi, lo = curve_at(curve, t, strict=True)
        assert bias.values["groups"][key]["fmr_bracket"] == {"at_least": lo, "at_most": hi, "exact": lo == hi}
    assert curve_at(groups_of(REPORT)["sex=female"], t, strict=True)[1] > CLAIM
    assert bias.status == FAIL and acc.status == FAIL
    assert "0.3500" not in json.dumps([bias.to_dict(), acc.to_dict()])  # a distance is never printed as a score


def test_the_raw_dlib_descriptor_lengths_are_what_the_evidence_says(data_dir):
    """RAW_NORMS measured again with dlib itself, the same 60 faces: Howdy's descriptors are not unit length."""
    try:
        dlib = importlib.import_module("dlib")
        frm = importlib.import_module("face_recognition_models")
    except ModuleNotFoundError as exc:
        missing(f"{exc.name} is not installed (pip install dlib-bin face_recognition_models)")
    lfw = data_dir / "lfw"
    if not lfw.is_dir():
        missing(f"{lfw} is missing")
    mdir = Path(frm.__file__).parent / "models"
    det = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(str(mdir / "shape_predictor_5_face_landmarks.dat"))
    net = dlib.face_recognition_model_v1(str(mdir / "dlib_face_recognition_resnet_model_v1.dat"))
    people = sorted(p.name for p in lfw.iterdir() if p.is_dir())[::97][:60]
    norms = []
    for name in people:
        img = dlib.load_rgb_image(str(sorted((lfw / name).glob("*.jpg"))[0]))
        faces = det(img, 1)
        if faces:
            norms.append(float(np.linalg.norm(np.array(net.compute_face_descriptor(img, sp(img, faces[0]))))))
    want = RAW_NORMS[DLIB]
    assert len(norms) == want["faces"]
    assert abs(min(norms) - want["min"]) < 5e-4 and abs(max(norms) - want["max"]) < 5e-4
    assert abs(float(np.mean(norms)) - want["mean"]) < 5e-4
    assert min(norms) > 1.1  # far from 1: a Euclidean threshold on them is no single cosine


# --------------------------------------------------------------------------------------
# what is missing is never a pass
# --------------------------------------------------------------------------------------
def test_unknown_model_no_report_or_another_models_report_is_inconclusive(tmp_path):
    unknown = declare(sha256="ab" * 32, metric="euclidean", threshold=0.35)
    known = declare(id=DLIB, metric="cosine", threshold=THRESHOLD)
    other = tmp_path / "sface.json"
    other.write_text(json.dumps(dict(REPORT, model_id="sface-2021dec")))
    for c, says in ((dpia_accuracy(unknown, RECORD), "not one fr-pbd knows"), (dpia_bias(unknown, RECORD), "not one"),
                    (dpia_accuracy(known, None), "no evaluation report"), (dpia_bias(known, other), "sface-2021dec")):
        assert c.status == INCONCLUSIVE and says in c.summary and c.needs


def test_the_table_uses_model_and_without_it_the_dpia_rows_stay_out_of_reach():
    m = declare(id=DLIB, metric="cosine", threshold=THRESHOLD)
    with_model = Context(target=SimpleNamespace(model=m), eval_report=RECORD)
    control = Context(target=SimpleNamespace(model=None), eval_report=RECORD)
    for cid in DPIA:
        s = spec(cid)
        c = s.evaluate(with_model)
        assert (c.id, c.condition, c.title, c.status) == (cid, "DPIA", s.title, PASS), c.summary
        c = s.evaluate(control)  # the same target without [model]: as before
        assert (c.id, c.title, c.status) == (cid, s.title, INCONCLUSIVE) and "not fr-pbd's" in c.needs
        assert "[model]" in c.needs


# --------------------------------------------------------------------------------------
# end to end: the Howdy-like product, audited with its model declared
# --------------------------------------------------------------------------------------
def test_the_howdy_like_product_with_its_model_declared(tmp_path, data_dir, monkeypatch):
    need_tool("strace", "strace")
    from fr_pbd.audit import run_target
    from fr_pbd.audit.target import load_target

    adv = ROOT / "tests" / "adversarial"
    text = (adv / "targets" / "howdylike.toml").read_text(encoding="utf-8")
    assert "{target_dir}/../howdylike.py" in text
    text = text.replace("{target_dir}/../howdylike.py", str(adv / "howdylike.py"))
    control = tmp_path / "control.toml"
    control.write_text(text)
    declared = tmp_path / "howdylike-model.toml"
    declared.write_text(text + f'\n[dpia]\neval = "{RECORD}"\n\n[model]\nsha256 = "{DAT_SHA}"\n'
                        'metric = "euclidean"\nthreshold = 0.35\n')
    root = tmp_path / "root"
    (root / "frames").mkdir(parents=True)
    shutil.copyfile(data_dir / "faces" / "obama3.jpg", root / "frames" / "current.jpg")
    monkeypatch.setenv("FR_PBD_TARGET_ROOT", str(root))
    monkeypatch.setenv("FR_PBD_DATA", str(data_dir))
    found, info = run_target(declared, verifications=1, rounds=5)
    st = {c.id: c for c in found}
    assert st["DPIA.model-provenance"].status == PASS and DLIB in st["DPIA.model-provenance"].summary
    for cid in ("DPIA.accuracy", "DPIA.bias"):
        assert st[cid].status == INCONCLUSIVE and "not unit length" in st[cid].summary, st[cid].summary
    assert st["C3.plaintext-templates"].status == FAIL  # the rest of the audit is as without [model]
    assert "0.3500" not in json.dumps([c.to_dict() for c in found])
    # the control: the same target without [model] leaves every DPIA check out of reach, as before
    t = load_target(control)
    assert t.model is None
    for cid in DPIA:
        c = spec(cid).evaluate(Context(target=t, eval_report=t.eval_report))
        assert c.status == INCONCLUSIVE and "not fr-pbd's" in c.needs

