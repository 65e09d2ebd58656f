"""Issue 17: the worst-group operating point, per-identity bootstrap intervals, per-group curves and DET.

Small hand-made sets with known answers, and the synthetic LFW folder of test_eval_lfw
checked against brute force over every comparison.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fr_pbd.errors import EvaluationError, QualityError
from fr_pbd.eval.bootstrap import IdentityCounts, _weights, identity_bootstrap
from fr_pbd.eval.groups import ALL, read_groups, worst_group_threshold
from fr_pbd.eval.lfw import evaluate_lfw, list_images
from fr_pbd.eval.metrics import ExactScores
from fr_pbd.eval.report import write_report
from tests.test_eval_lfw import PEOPLE, fake_embedder, make_lfw, write_groups


# --- worst_group_threshold ------------------------------------------------------------------
def fmr(scores: np.ndarray, t: float) -> float:
    return float(np.mean(scores >= t))


def test_worst_group_threshold_is_the_smallest_that_holds_for_every_group() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(0.0, 0.10, 20_000).astype(np.float32)  # group a: impostors score higher
    b = rng.normal(-0.1, 0.10, 50_000).astype(np.float32)
    every = np.concatenate([a, b, rng.normal(-0.2, 0.1, 30_000).astype(np.float32)])
    w = worst_group_threshold(1e-3, {"g=a": ExactScores.from_scores(a), "g=b": ExactScores.from_scores(b)},
                              ExactScores.from_scores(every))
    assert w.binding == "g=a" and w.exact and w.unresolved == ()
    assert w.threshold == max(w.own_thresholds.values())
    assert set(w.own_thresholds) == {"g=a", "g=b", ALL}
    for s in (a, b, every):
        assert fmr(s, w.threshold) <= 1e-3
    # no smaller threshold holds for group a (the threshold sits just above one of its scores)
    below = float(np.max(a[a < w.threshold]))
    assert fmr(a, below) > 1e-3
    # the global threshold alone breaks the promise for group a
    assert fmr(a, w.own_thresholds[ALL]) > 1e-3


def test_worst_group_threshold_flags_a_group_too_small_to_show_the_target() -> None:
    w = worst_group_threshold(1e-4, {"g=small": ExactScores.from_scores(np.linspace(-0.5, 0.5, 100)),
                                     "g=big": ExactScores.from_scores(np.linspace(-0.5, 0.2, 50_000))})
    assert w.unresolved == ("g=small",) and w.binding == "g=small" and w.threshold > 0.5
    with pytest.raises(EvaluationError):
        worst_group_threshold(0.0, {"g=big": ExactScores.from_scores([0.1, 0.2])})


# --- bootstrap ------------------------------------------------------------------------------
def toy_counts(seed: int = 3, n: int = 12):
    """Identities with 1..4 images and random accepted impostor counts between some pairs."""
    rng = np.random.default_rng(seed)
    images = rng.integers(1, 5, n)
    genuine = images * (images - 1) // 2
    rejected = np.array([rng.integers(0, g + 1) for g in genuine])
    pairs = [(a, b) for a in range(n) for b in range(a + 1, n) if rng.random() < 0.3]
    pa = np.array([p[0] for p in pairs])
    pb = np.array([p[1] for p in pairs])
    acc = np.array([rng.integers(1, images[a] * images[b] + 1) for a, b in pairs])
    return IdentityCounts(genuine, rejected, images, pa, pb, acc)


def test_bootstrap_equals_brute_force_over_resampled_people() -> None:
    """Each resample, expanded into copies of people, gives the same FNMR and FMR as the weighted formula."""
    c = toy_counts()
    n, resamples, seed = c.genuine.size, 50, 7
    w = _weights(np.random.default_rng(seed), n, resamples)
    accepted = np.zeros((n, n), np.int64)
    accepted[c.pair_a, c.pair_b] = c.accepted
    accepted = accepted + accepted.T
    fnmr, fmr_ = [], []
    for row in w:
        copies = [a for a in range(n) for _ in range(int(row[a]))]
        fnmr.append(sum(c.rejected[a] for a in copies) / sum(c.genuine[a] for a in copies))
        fm = im = 0
        for i in range(len(copies)):
            for j in range(i + 1, len(copies)):
                a, b = copies[i], copies[j]
                if a != b:  # a person drawn twice is not an impostor of their own copy
                    fm += accepted[a, b]
                    im += c.images[a] * c.images[b]
        fmr_.append(fm / im)
    (got,) = identity_bootstrap([c], resamples=resamples, seed=seed, block=resamples)
    assert got.fnmr == pytest.approx(tuple(np.quantile(fnmr, [0.025, 0.975])))
    assert got.fmr == pytest.approx(tuple(np.quantile(fmr_, [0.025, 0.975])))
    # blocks of another size draw the same resamples
    (again,) = identity_bootstrap([c], resamples=resamples, seed=seed, block=7)
    assert again == got


def test_bootstrap_is_wider_than_wilson_when_errors_cluster_in_a_few_people() -> None:
    from fr_pbd.eval.metrics import wilson_interval

    n = 200
    images = np.full(n, 10)
    genuine = images * 9 // 2
    rejected = np.zeros(n, np.int64)
    rejected[:5] = genuine[:5]  # five people are always refused, everyone else never
    c = IdentityCounts(genuine, rejected, images, np.array([0]), np.array([1]), np.array([100]))
    (b,) = identity_bootstrap([c], resamples=1000, seed=1)
    point = rejected.sum() / genuine.sum()
    lo, hi = wilson_interval(int(rejected.sum()), int(genuine.sum()))
    assert b.fnmr[0] <= point <= b.fnmr[1]
    assert b.fnmr[1] - b.fnmr[0] > 2 * (hi - lo)


def test_bootstrap_rejects_inconsistent_counts() -> None:
    c = toy_counts()
    with pytest.raises(EvaluationError):
        identity_bootstrap([IdentityCounts(c.genuine, c.genuine + 1, c.images, c.pair_a, c.pair_b, c.accepted)])
    with pytest.raises(EvaluationError):
        identity_bootstrap([IdentityCounts(c.genuine, c.rejected, c.images, c.pair_a, c.pair_a, c.accepted)])
    with pytest.raises(EvaluationError):
        identity_bootstrap([c, toy_counts(seed=4)])


# --- analyse_groups through evaluate_lfw, against brute force ---------------------------------
def brute_force(lfw: Path, embed, label: dict[str, str]):
    listing = list_images(lfw)
    vec = {}
    for name, n, p in listing:
        try:
            vec[(name, n)] = embed(p)
        except QualityError:
            vec[(name, n)] = None
    keys = list(vec)

    def counts(t: float, grp: str) -> tuple[int, int, int, int]:
        fn = gn = fm = im = 0
        for a in range(len(keys)):
            for b in range(a + 1, len(keys)):
                (na, _), (nb, _) = keys[a], keys[b]
                va, vb = vec[keys[a]], vec[keys[b]]
                if na == nb and label.get(na) == grp:
                    gn += 1
                    fn += va is None or vb is None or float(np.dot(va, vb)) < t
                elif na != nb and label.get(na) == grp and label.get(nb) == grp and va is not None \
                        and vb is not None:
                    im += 1
                    fm += float(np.dot(va, vb)) >= t
        return gn, fn, im, fm

    return counts


def test_worst_group_point_curves_and_report(tmp_path: Path, capsys) -> None:
    lfw = make_lfw(tmp_path)
    table = read_groups(write_groups(tmp_path / "groups.csv"))
    embed = fake_embedder(noise=0.9)
    res = evaluate_lfw(lfw, "pairs.txt", embed, groups=table, operating_fmr=2e-2, top_k=16,
                       group_resamples=200, model_id="synthetic")
    fair = res.groups.fairness
    label = {name: ("A" if k % 2 else "B") for k, name in enumerate(PEOPLE) if k != 29}
    counts = brute_force(lfw, embed, label)
    w = fair.worst["2e-2"]
    assert w.threshold >= res.operating_threshold
    for grp in ("A", "B"):
        d = fair.detail("group", grp)
        for p in (d.at_global, d.at_worst):
            assert (p.genuine_comparisons, p.false_non_matches, p.impostor_comparisons, p.false_matches) == \
                counts(p.threshold, grp)
        gn, fn, im, fm = counts(w.threshold, grp)
        assert fm / im <= 2e-2  # the promise holds for every group at the worst-group threshold
        # the grid curve: exact counts at every point
        c = d.curve
        for t, f_m, f_nm in list(zip(c["thresholds"], c["false_matches"], c["false_non_matches"]))[::7]:
            assert counts(t, grp)[3] == f_m and counts(t, grp)[1] == f_nm
        assert w.threshold in c["thresholds"]
        b = d.at_worst.bootstrap
        assert b.resamples == 200 and b.fnmr[0] <= fn / gn <= b.fnmr[1]
    # the global-threshold counts agree with the bare per-group counts
    for st in res.groups.attributes[0].groups:
        p = fair.detail("group", st.group).at_global
        assert (st.false_matches, st.false_non_matches) == (p.false_matches, p.false_non_matches)
    # the binding group is the one whose own threshold is the worst-group threshold
    assert w.own_thresholds[w.binding] == w.threshold

    files = write_report(res, tmp_path / "out", command="fr-pbd eval lfw")
    assert files["det-groups.png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and files["det-groups.svg"].is_file()
    d = json.loads(files["report.json"].read_text())
    g = d["groups"]
    assert g["worst_group"]["threshold"] == w.threshold and g["worst_group"]["binding"] == w.binding
    sa = g["attributes"]["group"]["groups"]["A"]
    for key in ("at_global_threshold", "at_worst_group_threshold", "curve", "det", "fnmr_at_own_fmr_threshold"):
        assert key in sa
    for key in ("fmr_ci95_bootstrap", "fnmr_ci95_bootstrap", "fmr_ci95_wilson", "fnmr_ci95_wilson"):
        assert key in sa["at_worst_group_threshold"]
    assert len(sa["det"]["fmr"]) == len(sa["det"]["fnmr"]) <= 150 and "threshold" not in sa["det"]
    md = files["report.md"].read_text()
    assert "worst-group threshold" in md and "det-groups.png" in md
    # aggregates only
    text = files["report.json"].read_text()
    for s in res.all_pairs.genuine[:50]:
        assert repr(float(s)) not in text


def test_cli_prints_both_thresholds_and_their_price(tmp_path: Path, monkeypatch, capsys) -> None:
    import fr_pbd.eval.lfw as lfw_mod
    from fr_pbd.cli import build_parser

    lfw = make_lfw(tmp_path)
    monkeypatch.setattr(lfw_mod, "pipeline_embedder", lambda: (fake_embedder(noise=0.9), "synthetic"))
    groups = write_groups(tmp_path / "groups.csv")
    args = build_parser().parse_args(["eval", "lfw", "--data", str(lfw), "--out", str(tmp_path / "o"),
                                      "--groups", str(groups), "--fmr", "0.02"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    glob = [ln for ln in out.splitlines() if ln.startswith("global threshold")]
    worst = [ln for ln in out.splitlines() if ln.startswith("worst-group threshold")]
    assert len(glob) == len(worst) == 1
    for ln in glob + worst:
        assert "FNMR" in ln and "overall" in ln and " A FMR " in ln and " B FMR " in ln
    assert "bound by group=" in worst[0]


def test_a_given_threshold_is_named_as_given(tmp_path: Path) -> None:
    from fr_pbd.eval.groups_report import summary_lines

    lfw = make_lfw(tmp_path)
    table = read_groups(write_groups(tmp_path / "groups.csv"))
    res = evaluate_lfw(lfw, "pairs.txt", fake_embedder(noise=0.9), groups=table, threshold=0.3, operating_fmr=2e-2,
                       group_resamples=50)
    lines = summary_lines(res.groups.to_dict())
    assert lines[0].startswith("global threshold 0.3000 (given with --threshold)")
    assert res.groups.fairness.global_threshold == 0.3
    assert res.groups.fairness.worst["2e-2"].threshold != 0.3  # the worst-group rule ignores the given one
