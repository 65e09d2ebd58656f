"""The 2-fold identity-disjoint protocol (fr_pbd.eval.twofold) and `fr-pbd eval lfw --score-model`: both
score models on the same attempts, report.json's shape, per-group figures, pooled counts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fr_pbd.errors import EvaluationError
from fr_pbd.eval import lfw as lfw_mod
from fr_pbd.eval import transactions as tx
from fr_pbd.eval import twofold
from tests.test_eval_lfw import PEOPLE, fake_embedder, make_lfw, write_groups


def synthetic(n_ids: int = 40, seed: int = 0, d: int = 16):
    rng = np.random.default_rng(seed)
    counts = rng.integers(2, 9, n_ids)
    ids = np.repeat(np.arange(n_ids), counts)
    x = rng.standard_normal((n_ids, d))[ids] + 0.6 * rng.standard_normal((ids.size, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), ids, np.ones(ids.size, bool)


def test_pooled_table_is_both_held_out_halves() -> None:
    x, ids, ok = synthetic()
    names = [f"p{i}" for i in range(40)]
    reps = {m: twofold.evaluate_two_fold(x, ids, ok, names, [1, 3], score_model=m, draws=2) for m in ("cosine", "plda")}
    for k in (1, 3):
        a, b = reps["cosine"].results[k], reps["plda"].results[k]
        # the same attempts for both models
        assert (a.genuine_attempts, a.impostor_attempts, a.users) == (b.genuine_attempts, b.impostor_attempts, b.users)
        # every identity is held out once: the genuine attempts are those of the whole set
        eligible = np.bincount(ids) >= k + 1
        assert a.genuine_attempts == 2 * int((np.bincount(ids)[eligible] - k).sum())
        # impostors only within a half
        half = tx.half_a_rows(ids, 0)
        users_a = np.unique(ids[half & eligible[ids]]).size
        users_b = np.unique(ids[~half & eligible[ids]]).size
        assert a.impostor_attempts == 2 * (users_a * (half.sum() - 0) + users_b * (~half).sum()
                                          - int(np.bincount(ids)[eligible].sum()))
    d = reps["plda"].to_dict()
    assert d["score_model"]["name"] == "plda" and len(d["folds"]) == 2
    assert d["folds"][0]["split"].startswith("identities shuffled with seed 0; selection = first half")
    assert d["folds"][1]["split"].startswith("identities shuffled with seed 0; selection = second half")
    # the pooled rates at the chosen thresholds add up the folds' counts
    at = d["K"]["3"]["at_threshold"]
    per = [f["held_out_half_per_k"]["3"]["at_threshold"] for f in d["folds"]]
    assert at["false_rejects"] == sum(p["false_rejects"] for p in per)
    assert at["impostor_attempts"] == sum(p["impostor_attempts"] for p in per)
    assert at["thresholds"] == [f["threshold"] for f in d["folds"]]


def parser():
    from fr_pbd.cli import build_parser

    return build_parser()


@pytest.mark.parametrize("model", ["cosine", "plda"])
def test_cli_eval_lfw_score_model(tmp_path: Path, monkeypatch, capsys, model: str) -> None:
    lfw = make_lfw(tmp_path)
    monkeypatch.setattr(lfw_mod, "pipeline_embedder", lambda: (fake_embedder(noise=0.9), "synthetic"))
    groups = write_groups(tmp_path / "groups.csv")
    out = tmp_path / "o"
    args = parser().parse_args(["eval", "lfw", "--data", str(lfw), "--out", str(out), "--groups", str(groups),
                                "--enrol", "1-3", "--enrol-draws", "2", "--score-model", model])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert f"score model {model}; 2-fold" in printed
    d = json.loads((out / "report.json").read_text())
    t = d["transactions"]
    assert isinstance(t["K"]["3"]["frr_at_far"]["2e-5"]["frr"], float)  # today's shape
    assert t["score_model"]["name"] == model and d["accuracy_10fold_score_model"] == model
    assert set(t["K"]["3"]["groups"]["group"]) == {"A", "B"}
    assert "at_threshold" in t["K"]["3"]["groups"]["group"]["A"]
    assert t["K"]["3"]["genuine_attempts"] == 2 * sum(n - 3 for n in PEOPLE.values() if n >= 4)
    assert f"--score-model {model}" in d["command"]
    assert d["accuracy_10fold_mean"] is not None


def test_cli_score_model_errors(tmp_path: Path, monkeypatch) -> None:
    lfw = make_lfw(tmp_path)
    monkeypatch.setattr(lfw_mod, "pipeline_embedder", lambda: (fake_embedder(), "synthetic"))
    p = parser()
    for argv, match in ((["--score-model", "plda"], "need --enrol"),
                        (["--enrol", "1", "--score-model", "lda"], "--score-model must be"),
                        (["--enrol", "1", "--score-model", "plda", "--fusion", "max"], "cosine only")):
        args = p.parse_args(["eval", "lfw", "--data", str(lfw), "--out", str(tmp_path / "o"), *argv])
        with pytest.raises(EvaluationError, match=match):
            args.func(args)
