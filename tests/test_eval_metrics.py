"""fr_pbd.eval.metrics on synthetic score sets with known answers."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

from fr_pbd.errors import EvaluationError
from fr_pbd.eval.metrics import (
    ExactScores,
    StreamedScores,
    best_threshold,
    det_curve,
    eer,
    fmr_key,
    fnmr_at_fmr,
    fnmr_at_fmrs,
    kfold_accuracy,
    probit,
    wilson_interval,
)

ND = NormalDist()


def quantile_sample(n: int, mu: float = 0.0, sigma: float = 1.0) -> np.ndarray:
    """n scores at the exact quantiles (i + 0.5) / n of N(mu, sigma): a noise-free 'sample'."""
    p = (np.arange(n) + 0.5) / n
    return mu + sigma * probit(p)


# --- two Gaussians: closed forms ----------------------------------------------------
@pytest.mark.parametrize("target", [1e-2, 1e-3, 1e-4])
def test_fnmr_at_fmr_two_gaussians_closed_form(target: float) -> None:
    # impostor N(0, 1), genuine N(3, 0.8): t = Phi^-1(1 - FMR), FNMR = Phi((t - 3) / 0.8)
    imp = quantile_sample(200_000)
    gen = quantile_sample(100_000, 3.0, 0.8)
    op = fnmr_at_fmr(gen, imp, target)
    k = math.floor(target * imp.size * (1 + 1e-12))
    # the (k+1)-th largest of the quantile sample sits at 1 - (k + 0.5) / n: closed form of the sample
    t_sample = ND.inv_cdf(1 - (k + 0.5) / imp.size)
    assert op.threshold == pytest.approx(t_sample, abs=1e-6)
    assert op.fnmr == pytest.approx(ND.cdf((t_sample - 3.0) / 0.8), abs=2e-5)
    # and the population closed form, up to the discreteness of k
    t_closed = ND.inv_cdf(1 - target)
    assert op.threshold == pytest.approx(t_closed, abs=2e-3 if target > 1e-4 else 2e-2)
    assert op.fnmr == pytest.approx(ND.cdf((t_closed - 3.0) / 0.8), abs=5e-3)
    # and exactly what the empirical definition gives
    assert op.false_matches <= k
    assert op.fmr <= target
    assert op.threshold > np.sort(imp)[imp.size - 1 - k]
    assert op.fnmr == pytest.approx(np.mean(gen < op.threshold), abs=0)
    assert op.impostor_comparisons == imp.size and op.exact


def test_fnmr_at_fmr_random_gaussians() -> None:
    rng = np.random.default_rng(7)
    imp = rng.standard_normal(1_000_000).astype(np.float32)
    gen = (2.5 + rng.standard_normal(50_000)).astype(np.float32)
    for target in (1e-3, 1e-4):
        op = fnmr_at_fmr(gen, imp, target)
        closed = ND.cdf(ND.inv_cdf(1 - target) - 2.5)
        # sampling error of a tail quantile and of a proportion: generous but meaningful
        assert op.fnmr == pytest.approx(closed, rel=0.08)


def test_eer_symmetric_gaussians() -> None:
    # genuine N(mu, 1), impostor N(0, 1): EER = Phi(-mu / 2) at t = mu / 2
    for mu in (1.0, 2.0, 3.3):
        r = eer(quantile_sample(20_000, mu), quantile_sample(40_000))
        assert r.eer == pytest.approx(ND.cdf(-mu / 2), abs=2e-4)
        assert r.threshold == pytest.approx(mu / 2, abs=5e-3)


def test_streamed_equals_exact_in_top_k_and_close_below() -> None:
    rng = np.random.default_rng(3)
    imp = np.tanh(0.3 * rng.standard_normal(300_000)).astype(np.float32)
    gen = np.tanh(1.5 + 0.4 * rng.standard_normal(5_000)).astype(np.float32)
    full = StreamedScores(top_k=1000)
    for chunk in np.array_split(imp, 7):
        full.add(chunk)
    assert full.n == imp.size and full.hist.sum() == imp.size
    assert np.array_equal(full.top, np.sort(imp)[::-1][:1000])
    exact = ExactScores.from_scores(imp)
    for target in (1e-3, 1e-4, 1e-5):  # k + 1 <= 1000: exact thresholds from the top-K
        a, b = fnmr_at_fmr(gen, full, target), fnmr_at_fmr(gen, exact, target)
        assert (a.threshold, a.fnmr, a.false_matches, a.exact) == (b.threshold, b.fnmr, b.false_matches, True)
    # 1e-2: k = 3000 > K: read on a bin edge, within one bin of the exact threshold, never above target
    a, b = fnmr_at_fmr(gen, full, 1e-2), fnmr_at_fmr(gen, exact, 1e-2)
    assert not a.exact and a.fmr <= 1e-2
    assert abs(a.threshold - b.threshold) <= 2.0 / full.bins + 1e-9
    assert a.false_matches == exact.count_ge(a.threshold)  # counts at bin edges are exact
    # EER / DET agree
    assert eer(gen, full).eer == pytest.approx(eer(gen, exact).eer, abs=1e-4)


def test_streamed_bin_edges_exact_for_float32() -> None:
    s = StreamedScores(bins=2**10, top_k=1)
    vals = np.array([-1.0, -0.5, 0.0, 0.5, 0.999, 1.0, 1.0000001], dtype=np.float32)
    s.add(vals)
    edges = s.edges()
    for k in (1, 256, 512, 768, 1023):
        assert s._hist_ge_edge()[k] == int(np.sum(vals.astype(np.float64) >= edges[k]))


# --- tiny hand-made cases ----------------------------------------------------------------
def test_tiny_case_thresholds() -> None:
    imp = [0.1, 0.2, 0.3, 0.4]
    gen = [0.35, 0.5]
    op = fnmr_at_fmr(gen, imp, 0.25)  # one false match allowed: just above 0.3
    assert 0.3 < op.threshold < 0.3000001 and op.false_matches == 1 and op.fmr == 0.25
    assert op.fnmr == 0.0 and op.resolvable
    op = fnmr_at_fmr(gen, imp, 0.2)  # 4 * 0.2 < 1: none allowed, not resolvable
    assert op.threshold > 0.4 and op.false_matches == 0 and op.fnmr == 0.5
    assert not op.resolvable and not op.rule_of_three


def test_ties_force_a_stricter_threshold() -> None:
    imp = [0.5, 0.5, 0.5, 0.1]
    op = fnmr_at_fmr([0.5, 0.7], imp, 0.5)  # two allowed, but the three tie: none can be accepted
    assert op.false_matches == 0 and op.threshold > 0.5
    assert op.fnmr == 0.5
    assert fnmr_at_fmr([0.5], imp, 0.75).false_matches == 3


def test_all_equal_scores() -> None:
    r = eer([0.5] * 3, [0.5] * 3)
    assert r.eer == pytest.approx(0.5)
    op = fnmr_at_fmr([0.5] * 3, [0.5] * 3, 0.5)
    assert op.fnmr == 1.0 and op.false_matches == 0


def test_perfect_separation() -> None:
    assert eer([0.8, 0.9], [0.1, 0.2]).eer == 0.0
    assert fnmr_at_fmr([0.8, 0.9], [0.1, 0.2], 0.5).fnmr == 0.0


def test_float32_threshold_is_exact_in_float32() -> None:
    imp = np.array([0.1, 0.7, 0.6999999], dtype=np.float32)
    op = fnmr_at_fmr(np.array([0.7], np.float32), imp, 0.4)  # one allowed: just above 0.6999999
    t = np.float32(op.threshold)
    assert float(t) == op.threshold  # representable in float32
    assert int(np.sum(imp >= t)) == op.false_matches == 1
    assert op.fnmr == 0.0  # the genuine 0.7 (== the accepted impostor) passes


def test_failed_genuine_comparisons_are_rejections() -> None:
    op = fnmr_at_fmr([0.9, 0.9], [0.1, 0.2], 0.5, genuine_failed=2)
    assert op.fnmr == 0.5 and op.genuine_comparisons == 4 and op.false_non_matches == 2
    assert eer([0.9, 0.9], [0.1, 0.2], genuine_failed=2).eer > 0


@pytest.mark.parametrize(
    "call",
    [
        lambda: fnmr_at_fmr([], [0.1], 1e-3),
        lambda: fnmr_at_fmr([0.5], [], 1e-3),
        lambda: fnmr_at_fmr([0.5], [0.1], 0.0),
        lambda: fnmr_at_fmr([0.5], [0.1], 1.0),
        lambda: fnmr_at_fmr([float("nan")], [0.1], 1e-3),
        lambda: fnmr_at_fmr([[0.5]], [0.1], 1e-3),
        lambda: fnmr_at_fmr(["a"], [0.1], 1e-3),
        lambda: eer([], []),
        lambda: det_curve([0.5], []),
        lambda: kfold_accuracy(np.array([]), np.array([], bool), np.array([])),
        lambda: kfold_accuracy(np.array([0.5]), np.array([True]), np.array([0])),
        lambda: best_threshold(np.array([]), np.array([], bool)),
        lambda: StreamedScores().fmr_threshold(1e-3),
    ],
)
def test_empty_and_invalid_inputs_raise_typed_errors(call) -> None:
    with pytest.raises(EvaluationError):
        call()


def test_fnmr_at_fmrs_keys_and_resolution() -> None:
    imp = quantile_sample(50_000)
    ops = fnmr_at_fmrs(quantile_sample(1000, 3), imp)
    assert list(ops) == ["1e-3", "1e-4", "1e-5", "1e-6"]
    assert [ops[k].resolvable for k in ops] == [True, True, False, False]
    assert [ops[k].rule_of_three for k in ops] == [True, True, False, False]
    d = ops["1e-4"].to_dict()
    assert {"fnmr", "threshold", "impostor_comparisons", "resolvable"} <= set(d)
    assert fmr_key(1e-4) == "1e-4" and fmr_key(0.001) == "1e-3" and fmr_key(5e-5) == "5e-5"


def test_det_curve_monotone_and_bounded() -> None:
    gen, imp = quantile_sample(3000, 2), quantile_sample(50_000)
    fmr, fnmr, thr = det_curve(gen, imp, max_points=300)
    assert fmr.size <= 302
    assert np.all(np.diff(thr) > 0) and np.all(np.diff(fmr) <= 0) and np.all(np.diff(fnmr) >= 0)
    assert fmr[0] == 1.0 and fnmr[-1] == 1.0 and fmr[-1] == 0.0


# --- k-fold accuracy ------------------------------------------------------------------------
def lfw_like(folds: int = 10, per: int = 300, seed: int = 0, sep: float = 10.0):
    rng = np.random.default_rng(seed)
    s, y, f = [], [], []
    for k in range(folds):
        s += list(sep + rng.standard_normal(per)) + list(rng.standard_normal(per))
        y += [True] * per + [False] * per
        f += [k] * (2 * per)
    return np.array(s), np.array(y), np.array(f)


def test_kfold_perfect_and_failed_pairs_count_as_errors() -> None:
    s, y, f = lfw_like()
    r = kfold_accuracy(s, y, f)
    assert len(r.folds) == 10 and r.mean == 1.0 and r.std == 0.0
    s[3 * 600 + 5] = np.nan  # a matched pair of fold 4 whose image failed
    s[7 * 600 + 400] = np.nan  # a mismatched pair of fold 8
    r = kfold_accuracy(s, y, f)
    acc = r.accuracies
    assert acc[3] == acc[7] == 599 / 600 and np.all(np.delete(acc, [3, 7]) == 1.0)
    assert r.folds[3].failed_pairs == 1 and r.folds[3].pairs == 600


def test_kfold_threshold_comes_from_the_other_folds() -> None:
    s = np.array([0.9, 0.8, 0.1, 0.2, 0.15, 0.85])
    y = np.array([True, True, False, False, True, False])
    f = np.array([0, 0, 0, 0, 1, 1])
    r = kfold_accuracy(s, y, f)
    assert r.folds[1].threshold == pytest.approx(0.5)  # midway in (0.2, 0.8), from fold 0
    assert r.folds[1].accuracy == 0.0
    assert r.folds[0].accuracy == 0.5  # fold 1 alone prefers "accept all"
    assert r.mean == 0.25 and r.std == pytest.approx(math.sqrt(0.125))  # ddof = 1
    assert r.sem == pytest.approx(r.std / math.sqrt(2))


def test_kfold_std_is_sample_std() -> None:
    s, y, f = lfw_like(sep=1.5, seed=4)
    r = kfold_accuracy(s, y, f)
    assert r.std == pytest.approx(float(np.std(r.accuracies, ddof=1)))
    assert 0.7 < r.mean < 0.85  # Phi(0.75) = 0.773 for a midway threshold


def test_best_threshold_ties_and_extremes() -> None:
    assert best_threshold(np.array([0.2, 0.8]), np.array([False, True])) == pytest.approx(0.5)
    assert best_threshold(np.array([0.5, 0.5]), np.array([True, True])) < 0.5  # accept all
    assert best_threshold(np.array([0.5, 0.6]), np.array([False, False])) > 0.6  # reject all


def test_wilson_interval_known_values() -> None:
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = wilson_interval(5, 10)
    assert (lo, hi) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    with pytest.raises(EvaluationError):
        wilson_interval(3, 2)
