"""The manifest's default threshold keeps the promise it states, for every labelled group on LFW (issue 17).

Embedding all of LFW costs minutes, so this test reads the committed result of the real command,
docs/results/lfw-eval-fp32.json, and checks dlib-resnet-v1's ``default_threshold`` against each
group's curve there (the curve point at or below the threshold: FMR there is at least the FMR at
the threshold). Regenerate the file after a change to the pipeline, the model or the labels with:

    FR_PBD_MODELS=../shared/models FR_PBD_DATA=../shared/data nice -n 10 \\
        python benchmarks/record_result.py --out docs/results/lfw-eval-fp32.json \\
        --result /tmp/evalout/report.json --drop figures -- \\
        fr-pbd eval lfw --data ../shared/data/lfw --pairs pairs.txt \\
        --groups ../shared/data/lfw-groups/sex.csv --out /tmp/evalout

then `python tools/readme_figures.py` (README's figures table is generated from it).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fr_pbd import models

RESULT = Path(__file__).resolve().parent.parent / "docs" / "results" / "lfw-eval-fp32.json"
MODEL = "dlib-resnet-v1"


@pytest.fixture(scope="module")
def result() -> dict:
    return json.loads(RESULT.read_text(encoding="utf-8"))


def at_or_below(curve: dict, t: float) -> int:
    ks = [k for k, v in enumerate(curve["thresholds"]) if v <= t]
    assert ks, f"threshold {t} is below the committed curve"
    return max(ks, key=lambda k: curve["thresholds"][k])


def test_the_result_file_is_the_real_command_on_all_of_lfw(result) -> None:
    r = result["result"]
    assert result["config"]["precision"] == "fp32" and r["model_id"] == MODEL
    assert "--groups" in result["command"] and not r["dataset"]["limited"]
    assert r["images"] == 13233 and r["groups"]["groups_file"] == "sex.csv"
    assert set(r["groups"]["attributes"]["sex"]["groups"]) == {"female", "male"}


# The manifest's default_threshold is re-derived by issue 15's rule (the largest of the per-group transaction
# FAR 2e-5 and pairwise FMR 1e-4 thresholds on half of LFW's identities: tests/test_eval_transactions.py), so
# the claim holds for every group here; the strict xfail that waited for it is gone.


def test_the_default_threshold_meets_the_claimed_fmr_for_every_group(result) -> None:
    spec = models.spec(MODEL)
    t, target = spec.default_threshold, spec.extra["target_fmr"]
    g = result["result"]["groups"]
    for name, s in g["attributes"]["sex"]["groups"].items():
        c = s["curve"]
        k = at_or_below(c, t)
        fmr = c["false_matches"][k] / c["impostor_comparisons"]
        assert c["impostor_comparisons"] * target >= 3, f"{name}: too few comparisons to show FMR {target}"
        assert fmr <= target, (f"{name}: FMR {fmr:.3g} at {c['thresholds'][k]} (at or below the manifest's {t}) "
                               f"exceeds the claimed {target}")
    # and over all comparisons: the manifest threshold is at or above the report's own FMR threshold
    assert t >= result["result"]["fnmr_at_fmr"]["1e-4"]["threshold"] or target != 1e-4
    # the rule that produced it: no lower than the worst-group threshold for the claimed target
    assert g["worst_group"]["target_fmr"] == target and t >= g["worst_group"]["threshold"]


def test_the_audit_agrees(result, tmp_path) -> None:
    from fr_pbd.audit.checks import PASS, dpia_bias

    p = tmp_path / "report.json"
    p.write_text(json.dumps(result["result"]))
    c = dpia_bias(p)
    assert c.status == PASS, c.summary
