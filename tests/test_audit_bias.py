"""DPIA.bias (issue 17): the installation's threshold must keep every labelled group within the FMR the
product claims; the audit reads it from the evaluation report's per-group curve.

Reports are made by the real evaluation code on the synthetic LFW folder of test_eval_lfw, with a
built-in differential: group A's people look alike (their impostor comparisons score higher).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from fr_pbd.audit import checks as audit_checks
from fr_pbd.audit.checks import FAIL, INCONCLUSIVE, PASS, dpia_bias
from fr_pbd.audit.report import render_html
from fr_pbd.audit.storefacts import StoreFacts
from fr_pbd.eval.groups import read_groups
from fr_pbd.eval.lfw import evaluate_lfw
from fr_pbd.eval.report import write_report
from tests.test_eval_lfw import make_lfw, write_groups

TARGET = 2e-2


def look_alike_embedder(dim: int = 16):
    """Group A (odd-numbered people) share a direction: their impostors score higher than B's."""
    shared = np.random.default_rng(99).standard_normal(dim)
    shared /= np.linalg.norm(shared)

    def embed(path: Path) -> np.ndarray:
        name = path.parent.name
        k = int(name.rsplit("_", 1)[1])
        number = int(path.stem.rsplit("_", 1)[1])
        seed = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)
        centre = np.random.default_rng(seed).standard_normal(dim)
        centre /= np.linalg.norm(centre)
        if k % 2:
            centre = centre + 1.2 * shared
            centre /= np.linalg.norm(centre)
        jitter = np.random.default_rng(seed + number).standard_normal(dim)
        v = centre + 0.5 * jitter / np.sqrt(dim)
        return (v / np.linalg.norm(v)).astype(np.float32)

    return embed


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("bias")
    lfw = make_lfw(root)
    table = read_groups(write_groups(root / "groups.csv"))
    res = evaluate_lfw(lfw, "pairs.txt", look_alike_embedder(), groups=table, operating_fmr=TARGET,
                       group_resamples=200, model_id="dlib-resnet-v1")
    files = write_report(res, root / "out", plots=False)
    return json.loads(files["report.json"].read_text())


def judge(tmp_path: Path, doc: dict, threshold: float, monkeypatch, facts: StoreFacts | None = None):
    """DPIA.bias on ``doc`` for an installation whose manifest says ``threshold`` and claims TARGET."""
    monkeypatch.setattr(audit_checks, "_claim", lambda model_id: (threshold, TARGET, None))
    p = tmp_path / "report.json"
    p.write_text(json.dumps(doc))
    return dpia_bias(p, facts)


def test_the_report_has_a_differential(report) -> None:
    g = report["groups"]["attributes"]["group"]["groups"]
    a, b = g["A"]["at_global_threshold"], g["B"]["at_global_threshold"]
    assert a["fmr"] > TARGET >= b["fmr"]  # the global threshold breaks the promise for A only
    assert report["groups"]["worst_group"]["binding"] == "group=A"


def test_a_threshold_that_lets_one_group_exceed_the_claim_fails(report, tmp_path, monkeypatch) -> None:
    c = judge(tmp_path, report, report["groups"]["threshold"], monkeypatch)
    assert c.status == FAIL
    assert "group=A" in c.summary and "group=B" not in c.summary and "times the claimed" in c.summary
    assert c.values["groups"]["group=A"]["fmr"] > TARGET
    assert any("conservative" in d for d in c.details)  # the evidence says how the curve is read


def test_the_worst_group_threshold_passes(report, tmp_path, monkeypatch) -> None:
    t = report["groups"]["worst_group"]["threshold"]
    c = judge(tmp_path, report, t, monkeypatch)
    assert c.status == PASS, c.summary
    assert all(v["fmr"] <= TARGET for v in c.values["groups"].values())
    assert set(c.values["groups"]) == {"group=A", "group=B", "band=x", "band=y"}
    # rounded up as a manifest would hold it: still a pass
    assert judge(tmp_path, report, round(t + 5e-5, 4), monkeypatch).status == PASS


def test_between_curve_points_the_audit_reads_the_point_below(report, tmp_path, monkeypatch) -> None:
    """Just below the worst-group threshold the point at or below it is an earlier one: over-stated, FAIL."""
    t = report["groups"]["worst_group"]["threshold"]
    c = judge(tmp_path, report, float(np.nextafter(t, -1.0)), monkeypatch)
    assert c.status == FAIL and "group=A" in c.summary
    assert c.values["groups"]["group=A"]["curve_threshold"] < t


def test_no_group_breakdown_fails_and_no_report_is_inconclusive(report, tmp_path, monkeypatch) -> None:
    c = judge(tmp_path, dict(report, groups=None), 0.9, monkeypatch)
    assert c.status == FAIL and "no per-group analysis" in c.summary
    assert dpia_bias(None).status == INCONCLUSIVE
    old = json.loads(json.dumps(report))
    for g in old["groups"]["attributes"]["group"]["groups"].values():
        del g["curve"]
    c = judge(tmp_path, old, report["groups"]["worst_group"]["threshold"], monkeypatch)
    assert c.status == FAIL and "no per-group curve" in c.summary


def test_a_report_for_another_model_is_not_evidence(report, tmp_path, monkeypatch) -> None:
    facts = StoreFacts(path=tmp_path / "store", model_id="sface-2021dec")
    c = judge(tmp_path, report, report["groups"]["worst_group"]["threshold"], monkeypatch, facts)
    assert c.status == INCONCLUSIVE and "sface-2021dec" in c.summary


def test_a_manifest_without_a_claim_is_inconclusive(report, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(audit_checks, "_claim", lambda model_id: (0.9, None, "claims no target_fmr"))
    p = tmp_path / "r.json"
    p.write_text(json.dumps(report))
    c = dpia_bias(p)
    assert c.status == INCONCLUSIVE and "target_fmr" in c.summary


def test_the_html_report_shows_the_per_group_det(report, tmp_path, monkeypatch) -> None:
    c = judge(tmp_path, report, report["groups"]["threshold"], monkeypatch)
    doc = {"result": "FAIL", "created_utc": "now", "installation": {"home": "h"}, "tool": "fr-pbd audit"}
    html = render_html(doc, [c])
    body = html.split("<body>")[1]
    assert body.count("<svg") == 1 and body.count("<polyline") == 4 and "group=A" in body
    assert "above the claim" in body and "claimed FMR 0.02" in body
    assert "<script" not in html and "src=" not in html and "http" not in body.split("Generated")[0]


def test_the_shipped_claim_is_read_from_the_manifest() -> None:
    from fr_pbd import models

    threshold, target, why = audit_checks._claim("dlib-resnet-v1")
    assert why is None and threshold == models.threshold("dlib-resnet-v1") and target == 1e-4
    assert audit_checks._claim("no-such-model")[2] is not None
