"""Verification metrics by the book, in pure numpy.

Conventions (used everywhere in :mod:`fr_pbd.eval`):

* a score is a *similarity* (higher = more likely the same person);
* a comparison is *accepted* (declared a match) when ``score >= threshold``;
* FMR(t) = impostor comparisons accepted at t / impostor comparisons (ISO/IEC 19795-1);
* FNMR(t) = genuine comparisons rejected at t / genuine comparisons, where a genuine
  comparison that could not be made (an image failed to acquire) is a rejection at
  every threshold (NIST FRTE 1:1 convention: a failed template scores "-inf");
* FNMR@FMR (NIST FRTE 1:1): the threshold is the *smallest* threshold whose FMR does
  not exceed the target, and FNMR is read at that threshold.

Impostor scores may be held exactly (:class:`ExactScores`, any size that fits in
memory) or streamed (:class:`StreamedScores`: a fine histogram whose bin edges give
exact counts, plus the exact top-K scores, so low-FMR thresholds stay exact).

Scores are biometric-derived data: nothing here logs them, and error messages
never contain them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from fr_pbd.errors import EvaluationError

__all__ = [
    "TARGET_FMRS",
    "fmr_key",
    "ScoreDistribution",
    "ExactScores",
    "StreamedScores",
    "as_distribution",
    "OperatingPoint",
    "fnmr_at_fmr",
    "fnmr_at_fmrs",
    "EER",
    "eer",
    "det_curve",
    "FoldResult",
    "TenFoldResult",
    "best_threshold",
    "kfold_accuracy",
    "wilson_interval",
    "probit",
]

#: The NIST FRTE 1:1 operating points fr-pbd reports.
TARGET_FMRS: tuple[float, ...] = (1e-3, 1e-4, 1e-5, 1e-6)

#: Comparisons needed for a target FMR to be worth reporting: with n impostor
#: comparisons and zero errors the 95 % upper bound on FMR is ~3/n ("rule of 3").
RULE_OF_THREE = 3.0


def fmr_key(target: float) -> str:
    """``1e-4`` -> ``"1e-4"``: the key used in ``report.json``."""
    mant, exp = f"{target:.0e}".split("e")
    return f"{mant}e{int(exp)}"


def _check_scores(x: np.ndarray | Sequence[float], what: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu":
        raise EvaluationError(f"{what} scores must be numbers")
    if arr.ndim != 1:
        raise EvaluationError(f"{what} scores must be a 1-d array")
    if arr.dtype.kind != "f":
        arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise EvaluationError(f"{what} scores must be finite (represent a failed comparison by a count, not a value)")
    return arr


def _next_up(value: float, dtype: np.dtype) -> float:
    """The smallest number of ``dtype`` strictly above ``value``.

    The FNMR@FMR threshold sits just above an impostor score, in the scores'
    own precision, so that ``score >= threshold`` is exact in that precision.
    """
    dt = np.dtype(dtype)
    return float(np.nextafter(dt.type(value), dt.type(np.inf)))


def _allowed_false_matches(target: float, n: int) -> int:
    """floor(target * n), robust to 1e-3 * 1000 = 0.9999999 style rounding."""
    return int(math.floor(target * n * (1.0 + 1e-12)))


@runtime_checkable
class ScoreDistribution(Protocol):
    """Impostor scores, however they are held."""

    @property
    def n(self) -> int: ...

    @property
    def dtype(self) -> np.dtype: ...

    def count_ge(self, t: float) -> int:
        """Number of scores >= t (exact where the class says so)."""

    def fmr_threshold(self, target: float) -> tuple[float, int, bool]:
        """(smallest threshold with FMR <= target, false matches there, exact?)."""

    def grid(self, extra: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ascending thresholds and the exact count of scores >= each one."""


@dataclass(frozen=True)
class ExactScores:
    """Every score, sorted ascending. Exact everywhere."""

    sorted_scores: np.ndarray = field(repr=False)

    @classmethod
    def from_scores(cls, scores: np.ndarray | Sequence[float], what: str = "impostor") -> "ExactScores":
        arr = np.sort(_check_scores(scores, what), kind="stable")
        arr.setflags(write=False)
        return cls(arr)

    @property
    def n(self) -> int:
        return int(self.sorted_scores.size)

    @property
    def dtype(self) -> np.dtype:
        return self.sorted_scores.dtype

    def count_ge(self, t: float) -> int:
        return int(self.n - np.searchsorted(self.sorted_scores, t, side="left"))

    def fmr_threshold(self, target: float) -> tuple[float, int, bool]:
        k = _allowed_false_matches(target, self.n)
        if k >= self.n:  # every impostor may be accepted
            t = float(self.sorted_scores[0])
        else:
            v = self.sorted_scores[self.n - 1 - k]  # the (k+1)-th largest
            t = _next_up(v, self.dtype)
        return t, self.count_ge(t), True

    def grid(self, extra: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        vals = np.unique(np.concatenate([self.sorted_scores.astype(np.float64), np.asarray(extra, np.float64)]))
        counts = self.n - np.searchsorted(self.sorted_scores, vals, side="left")
        return vals, counts.astype(np.int64)


class StreamedScores:
    """Impostor scores too many to keep: histogram + exact top-K.

    ``hist`` has ``bins`` equal bins on ``[lo, hi)``; a score s goes to bin
    ``floor((s - lo) * bins / (hi - lo))`` computed in float64 (clipped into
    the end bins). With ``lo = -1``, ``hi = 1`` and a power-of-two ``bins`` that
    computation is exact for float32 scores, so the number of scores ``>=`` any
    bin edge is *exact*. ``top`` holds the K largest scores exactly (descending),
    with the indices of the two templates behind each (in memory only; used for
    per-group counts). Thresholds above the K-th largest score are exact; below
    it they are read on bin edges (at most one bin width, 2/bins, off the exact
    one, and then flagged ``exact=False``).
    """

    def __init__(self, bins: int = 2**20, lo: float = -1.0, hi: float = 1.0, top_k: int = 2**17) -> None:
        if bins < 2 or not hi > lo or top_k < 1:
            raise EvaluationError("StreamedScores needs bins >= 2, hi > lo and top_k >= 1")
        self.bins = int(bins)
        self.lo = float(lo)
        self.hi = float(hi)
        self.top_k = int(top_k)
        self.hist = np.zeros(self.bins, dtype=np.int64)
        self.top = np.empty(0, dtype=np.float32)
        self.top_i = np.empty(0, dtype=np.int32)
        self.top_j = np.empty(0, dtype=np.int32)
        self._n = 0
        self._scale = self.bins / (self.hi - self.lo)

    # -- accumulation ----------------------------------------------------------
    def _bin(self, s: np.ndarray) -> np.ndarray:
        idx = np.floor((s.astype(np.float64) - self.lo) * self._scale)
        return np.clip(idx, 0, self.bins - 1).astype(np.int64)

    def add(self, scores: np.ndarray, i: np.ndarray | None = None, j: np.ndarray | None = None) -> None:
        """Add a batch of impostor scores (float32), with optional template indices."""
        s = np.asarray(scores, dtype=np.float32).ravel()
        self.add_hist(s)
        if s.size == 0:
            return
        ii = np.full(s.size, -1, np.int32) if i is None else np.asarray(i, np.int32).ravel()
        jj = np.full(s.size, -1, np.int32) if j is None else np.asarray(j, np.int32).ravel()
        keep = s > self.top_floor
        self.add_top(s[keep], ii[keep], jj[keep])

    def add_hist(self, scores: np.ndarray) -> None:
        """Count a batch into the histogram (and the total). Pair with :meth:`add_top`."""
        s = np.asarray(scores).ravel()
        if s.size == 0:
            return
        if not np.all(np.isfinite(s)):
            raise EvaluationError("impostor scores must be finite")
        self._n += int(s.size)
        self.hist += np.bincount(self._bin(s), minlength=self.bins)

    @property
    def top_floor(self) -> float:
        """Scores at or below this cannot enter the top-K (-inf until it is full)."""
        return float(self.top[-1]) if self.top.size >= self.top_k else float("-inf")

    def add_top(self, scores: np.ndarray, i: np.ndarray, j: np.ndarray) -> None:
        """Merge candidates (already counted by :meth:`add_hist`) into the exact top-K."""
        s = np.asarray(scores, dtype=np.float32).ravel()
        if s.size == 0:
            return
        cs = np.concatenate([self.top, s])
        ci = np.concatenate([self.top_i, np.asarray(i, dtype=np.int32).ravel()])
        cj = np.concatenate([self.top_j, np.asarray(j, dtype=np.int32).ravel()])
        if cs.size > self.top_k:
            part = np.argpartition(-cs, self.top_k - 1)[: self.top_k]
            cs, ci, cj = cs[part], ci[part], cj[part]
        order = np.argsort(-cs, kind="stable")
        self.top, self.top_i, self.top_j = cs[order], ci[order], cj[order]

    def merge(self, other: "StreamedScores") -> None:
        """Add another stream's scores (same bins and range): histograms add, the top-K lists merge."""
        if (other.bins, other.lo, other.hi) != (self.bins, self.lo, self.hi):
            raise EvaluationError("only streams with the same bins and range can be merged")
        self.hist += other.hist
        self._n += other._n
        self.add_top(other.top, other.top_i, other.top_j)

    # -- queries -----------------------------------------------------------------
    @property
    def n(self) -> int:
        return self._n

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32)

    @property
    def complete(self) -> bool:
        """True when every score is in ``top`` (then everything is exact)."""
        return self.top.size == self._n

    def edges(self) -> np.ndarray:
        return self.lo + np.arange(self.bins + 1, dtype=np.float64) / self._scale

    def _hist_ge_edge(self) -> np.ndarray:
        """Count of scores >= edge k, for k = 0..bins (exact for 1..bins-1)."""
        c = np.zeros(self.bins + 1, dtype=np.int64)
        c[:-1] = np.cumsum(self.hist[::-1])[::-1]
        return c

    def _top_count_ge(self, t: np.ndarray | float) -> np.ndarray:
        asc = self.top[::-1]
        return self.top.size - np.searchsorted(asc, np.asarray(t, dtype=np.float64), side="left")

    def count_ge(self, t: float) -> int:
        if self.complete or (self.top.size and t > float(self.top[-1])):
            return int(self._top_count_ge(t))
        k = int(math.ceil((t - self.lo) * self._scale))  # first edge >= t
        if k <= 0:
            return self._n
        if k >= self.bins:
            return int(self._top_count_ge(t))
        return int(self.hist[k:].sum())

    def fmr_threshold(self, target: float) -> tuple[float, int, bool]:
        if self._n == 0:
            raise EvaluationError("no impostor comparisons")
        k = _allowed_false_matches(target, self._n)
        if k < self.top.size:
            t = _next_up(float(self.top[k]), self.dtype)
            return t, int(self._top_count_ge(t)), True
        if k >= self._n:
            return self.lo, self._n, True
        c = self._hist_ge_edge()
        # smallest edge index e with c[e] <= k (c is non-increasing)
        e = int(np.searchsorted(-c, -k, side="left"))
        e = min(max(e, 1), self.bins)
        return float(self.edges()[e]), int(c[e]), False

    def grid(self, extra: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.complete:
            return ExactScores(np.sort(self.top.astype(np.float64))).grid(extra)
        top_min = float(self.top[-1]) if self.top.size else self.hi
        edges = self.edges()
        c = self._hist_ge_edge()
        keep = (edges <= top_min) & (np.arange(edges.size) >= 1) & (np.arange(edges.size) < self.bins)
        high = np.asarray(extra, np.float64)
        high = np.unique(np.concatenate([self.top.astype(np.float64), high]))
        high = high[high > top_min]
        vals = np.concatenate([edges[keep], high])
        counts = np.concatenate([c[keep], self._top_count_ge(high)])
        order = np.argsort(vals, kind="stable")
        return vals[order], counts[order].astype(np.int64)


def as_distribution(impostor: ScoreDistribution | np.ndarray | Sequence[float]) -> ScoreDistribution:
    """Accept a plain array of impostor scores where a distribution is expected."""
    if isinstance(impostor, (ExactScores, StreamedScores)):
        return impostor
    return ExactScores.from_scores(impostor)


def _genuine(genuine: np.ndarray | Sequence[float], genuine_failed: int) -> tuple[np.ndarray, int]:
    g = np.sort(_check_scores(genuine, "genuine"), kind="stable")
    if genuine_failed < 0:
        raise EvaluationError("genuine_failed must be >= 0")
    total = g.size + int(genuine_failed)
    if total == 0:
        raise EvaluationError("no genuine comparisons")
    return g, total


def _fnmr_at(g_sorted: np.ndarray, total: int, t: np.ndarray | float) -> np.ndarray:
    """Genuine rejected at t (score < t, plus every failed comparison) / total."""
    rejected = np.searchsorted(g_sorted, t, side="left") + (total - g_sorted.size)
    return rejected / total


# --- FNMR @ FMR -------------------------------------------------------------------
@dataclass(frozen=True)
class OperatingPoint:
    """FNMR at the smallest threshold whose FMR does not exceed ``target_fmr``."""

    target_fmr: float
    threshold: float
    fnmr: float
    fmr: float  # observed FMR at the threshold (<= target)
    false_matches: int
    impostor_comparisons: int
    genuine_comparisons: int
    false_non_matches: int
    resolvable: bool  # impostor_comparisons >= 1/target: at least one false match is allowed
    rule_of_three: bool  # impostor_comparisons >= 3/target: the target is measured with some confidence
    exact: bool  # threshold exact (False: read on a histogram bin edge, within one bin width)

    @property
    def min_comparisons(self) -> int:
        return int(math.ceil(1.0 / self.target_fmr))

    def to_dict(self) -> dict:
        return {
            "fnmr": self.fnmr,
            "threshold": self.threshold,
            "impostor_comparisons": self.impostor_comparisons,
            "resolvable": self.resolvable,
            "rule_of_three": self.rule_of_three,
            "min_impostor_comparisons": self.min_comparisons,
            "fmr_observed": self.fmr,
            "false_matches": self.false_matches,
            "false_non_matches": self.false_non_matches,
            "genuine_comparisons": self.genuine_comparisons,
            "threshold_exact": self.exact,
        }


def fnmr_at_fmr(
    genuine: np.ndarray | Sequence[float],
    impostor: ScoreDistribution | np.ndarray | Sequence[float],
    target_fmr: float,
    *,
    genuine_failed: int = 0,
) -> OperatingPoint:
    """NIST FRTE 1:1 FNMR@FMR.

    The threshold is the smallest one with FMR(t) <= target: with n impostor
    comparisons at most floor(target * n) may be accepted, so t is the next
    representable number above the (floor(target * n) + 1)-th largest impostor
    score. When n < 1/target no false match is allowed at all: the threshold is
    then just above the largest impostor score and the figure is *not resolved*
    (``resolvable=False``): the data cannot tell FMR = target from FMR = 0.
    """
    if not (0.0 < target_fmr < 1.0):
        raise EvaluationError("target FMR must be in (0, 1)")
    imp = as_distribution(impostor)
    if imp.n == 0:
        raise EvaluationError("no impostor comparisons")
    g, total = _genuine(genuine, genuine_failed)
    t, fm, exact = imp.fmr_threshold(target_fmr)
    fnmr = float(_fnmr_at(g, total, t))
    return OperatingPoint(
        target_fmr=target_fmr,
        threshold=t,
        fnmr=fnmr,
        fmr=fm / imp.n,
        false_matches=fm,
        impostor_comparisons=imp.n,
        genuine_comparisons=total,
        false_non_matches=int(round(fnmr * total)),
        resolvable=imp.n * target_fmr >= 1.0 - 1e-9,
        rule_of_three=imp.n * target_fmr >= RULE_OF_THREE - 1e-9,
        exact=exact,
    )


def fnmr_at_fmrs(
    genuine: np.ndarray | Sequence[float],
    impostor: ScoreDistribution | np.ndarray | Sequence[float],
    targets: Sequence[float] = TARGET_FMRS,
    *,
    genuine_failed: int = 0,
) -> dict[str, OperatingPoint]:
    """:func:`fnmr_at_fmr` for each target, keyed ``"1e-4"`` style."""
    imp = as_distribution(impostor)
    return {fmr_key(t): fnmr_at_fmr(genuine, imp, t, genuine_failed=genuine_failed) for t in targets}


# --- EER and DET --------------------------------------------------------------------
def _curves(
    genuine: np.ndarray | Sequence[float],
    impostor: ScoreDistribution | np.ndarray | Sequence[float],
    genuine_failed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds ascending, FMR, FNMR), exact at every threshold returned."""
    imp = as_distribution(impostor)
    if imp.n == 0:
        raise EvaluationError("no impostor comparisons")
    g, total = _genuine(genuine, genuine_failed)
    thr, counts = imp.grid(g)
    # a threshold above every score: FMR = 0, FNMR = 1
    top = max(float(thr[-1]) if thr.size else -np.inf, float(g[-1]) if g.size else -np.inf)
    sentinel = float(np.nextafter(top, np.inf)) if np.isfinite(top) else 1.0
    thr = np.append(thr, sentinel)
    counts = np.append(counts, 0)
    fmr = counts / imp.n
    fnmr = _fnmr_at(g, total, thr)
    return thr, fmr, fnmr


@dataclass(frozen=True)
class EER:
    """Equal error rate: where the FMR and FNMR curves cross (linear interpolation
    between the two adjacent thresholds that bracket the crossing)."""

    eer: float
    threshold: float


def eer(
    genuine: np.ndarray | Sequence[float],
    impostor: ScoreDistribution | np.ndarray | Sequence[float],
    *,
    genuine_failed: int = 0,
) -> EER:
    """Equal error rate (FMR = FNMR), failed genuine comparisons counted as rejections."""
    thr, fmr, fnmr = _curves(genuine, impostor, genuine_failed)
    d = fnmr - fmr  # non-decreasing in the threshold
    hit = np.flatnonzero(d == 0)
    if hit.size:
        k = int(hit[hit.size // 2])
        return EER(float(fmr[k]), float(thr[k]))
    b = int(np.searchsorted(d, 0.0, side="right"))
    if b == 0:  # FNMR > FMR everywhere (only failures can do this)
        return EER(float((fmr[0] + fnmr[0]) / 2), float(thr[0]))
    a = b - 1
    lam = d[a] / (d[a] - d[b])
    value = fmr[a] + lam * (fmr[b] - fmr[a])
    return EER(float(value), float(thr[a] + lam * (thr[b] - thr[a])))


def det_curve(
    genuine: np.ndarray | Sequence[float],
    impostor: ScoreDistribution | np.ndarray | Sequence[float],
    *,
    genuine_failed: int = 0,
    max_points: int = 2000,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DET points (FMR, FNMR, threshold), ascending threshold.

    Every point is an exact (FMR, FNMR) pair of the data. When there are more
    than ``max_points`` thresholds, points are kept evenly along the curve in
    normal-deviate space (what the plot shows), always keeping both ends.
    """
    thr, fmr, fnmr = _curves(genuine, impostor, genuine_failed)
    # drop thresholds where neither rate changes
    change = np.ones(thr.size, dtype=bool)
    change[1:] = (np.diff(fmr) != 0) | (np.diff(fnmr) != 0)
    thr, fmr, fnmr = thr[change], fmr[change], fnmr[change]
    if thr.size > max_points:
        lo = 1e-9
        x = probit(np.clip(fmr, lo, 1 - lo))
        y = probit(np.clip(fnmr, lo, 1 - lo))
        arc = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(x), np.diff(y)))])
        want = np.linspace(0.0, arc[-1], max_points)
        idx = np.unique(np.concatenate([[0, thr.size - 1], np.searchsorted(arc, want).clip(0, thr.size - 1)]))
        thr, fmr, fnmr = thr[idx], fmr[idx], fnmr[idx]
    return fmr, fnmr, thr


_ND = NormalDist()


def probit(p: np.ndarray | float) -> np.ndarray:
    """Normal deviate Phi^-1(p) (the DET axis), for p in (0, 1)."""
    arr = np.asarray(p, dtype=np.float64)
    out = np.vectorize(_ND.inv_cdf, otypes=[np.float64])(arr.ravel()) if arr.size else arr.ravel()
    return out.reshape(arr.shape)


# --- LFW 10-fold accuracy -----------------------------------------------------------
def best_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """The threshold that maximises accuracy on (scores, same).

    Candidates are the gaps between consecutive distinct scores (accept if
    score >= t), plus "accept all" and "reject all". Among equally good
    candidates the lowest is taken, placed midway in its gap. Pairs that
    failed are errors at every threshold, so they do not move the optimum and
    are not passed here.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(same, dtype=bool)
    if s.size == 0:
        raise EvaluationError("no scored pairs to choose a threshold on")
    u = np.unique(s)
    # threshold u[k] accepts scores >= u[k]; k = len(u) means reject all
    order = np.argsort(s, kind="stable")
    ss, yy = s[order], y[order]
    below = np.searchsorted(ss, u, side="left")  # number of scores < u[k]
    neg_below = np.concatenate([[0], np.cumsum(~yy)])[below]
    pos_below = np.concatenate([[0], np.cumsum(yy)])[below]
    n_pos = int(yy.sum())
    correct = np.append((n_pos - pos_below) + neg_below, int((~yy).sum()))
    k = int(np.argmax(correct))
    gap = float(np.min(np.diff(u))) if u.size > 1 else 1.0
    if k == 0:  # accept all: just below the lowest score
        return float(u[0]) - gap / 2
    if k == u.size:  # reject all: just above the highest score
        return float(u[-1]) + gap / 2
    return float((u[k - 1] + u[k]) / 2)


@dataclass(frozen=True)
class FoldResult:
    fold: int
    threshold: float
    pairs: int
    correct: int
    failed_pairs: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.pairs if self.pairs else float("nan")


@dataclass(frozen=True)
class TenFoldResult:
    """k-fold accuracy: each fold tested at the threshold chosen on the others."""

    folds: tuple[FoldResult, ...]

    @property
    def accuracies(self) -> np.ndarray:
        return np.array([f.accuracy for f in self.folds], dtype=np.float64)

    @property
    def mean(self) -> float:
        return float(self.accuracies.mean())

    @property
    def std(self) -> float:
        """Sample standard deviation over folds (ddof=1)."""
        a = self.accuracies
        return float(a.std(ddof=1)) if a.size > 1 else 0.0

    @property
    def sem(self) -> float:
        """Standard error of the mean, what the LFW results page tabulates."""
        return self.std / math.sqrt(len(self.folds)) if self.folds else float("nan")


def kfold_accuracy(scores: np.ndarray, same: np.ndarray, fold: np.ndarray) -> TenFoldResult:
    """LFW View 2 protocol: for each fold, choose the threshold on the other folds
    (maximum accuracy), then count correct decisions on the fold.

    ``scores`` is NaN for a pair whose image failed: such a pair is an error at
    every threshold (counted in the fold size, never dropped).
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(same, dtype=bool)
    f = np.asarray(fold)
    if not (s.shape == y.shape == f.shape) or s.ndim != 1:
        raise EvaluationError("scores, same and fold must be 1-d arrays of one length")
    if s.size == 0:
        raise EvaluationError("no pairs")
    if np.any(np.isinf(s)):
        raise EvaluationError("pair scores must be finite, or NaN for a failed pair")
    ids = np.unique(f)
    if ids.size < 2:
        raise EvaluationError("k-fold accuracy needs at least 2 folds")
    ok = ~np.isnan(s)
    out = []
    for k in ids:
        test = f == k
        train = ~test & ok
        if not train.any():
            raise EvaluationError("a fold's training folds hold no scored pair")
        t = best_threshold(s[train], y[train])
        tt = test & ok
        decide = s[tt] >= t
        correct = int(np.sum(decide == y[tt]))
        out.append(FoldResult(int(k), t, int(test.sum()), correct, int((test & ~ok).sum())))
    return TenFoldResult(tuple(out))


# --- confidence intervals ---------------------------------------------------------------
def wilson_interval(errors: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion errors/n.

    It assumes independent trials. Impostor comparisons share images and
    identities, so they are not independent: for FMR the interval is too narrow.
    """
    if n <= 0:
        return (float("nan"), float("nan"))
    if not (0 <= errors <= n):
        raise EvaluationError("errors must be between 0 and n")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = errors / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if errors == 0 else max(0.0, centre - half)
    hi = 1.0 if errors == n else min(1.0, centre + half)
    return (lo, hi)
