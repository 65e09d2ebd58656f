"""Per-identity bootstrap intervals for FNMR and FMR.

Why not Wilson: comparisons share identities (and images), so they are not
independent trials, and a binomial interval over millions of impostor
comparisons is far too narrow. The unit that was sampled is the *person*, so
the bootstrap resamples identities with replacement (seeded) and recomputes the
rates from per-identity counts, never from scores:

* FNMR: identity ``a`` has ``genuine[a]`` genuine comparisons, ``rejected[a]`` of
  them rejected at the threshold; a resample with weights ``w`` (how often each
  identity was drawn) has FNMR = sum(w * rejected) / sum(w * genuine).
* FMR: identities ``a != b`` with ``m_a``, ``m_b`` acquired images make ``m_a * m_b``
  impostor comparisons, ``accepted[a, b]`` of them accepted (kept sparse: the
  pairs with at least one); a comparison between ``a`` and ``b`` counts ``w_a * w_b``
  times, and an identity drawn twice is not compared with its own copy, so
  FMR = sum(w_a w_b accepted_ab) / (((sum w m)^2 - sum (w m)^2) / 2).

Resamples are drawn in blocks (a ``block x identities`` weight matrix), so all of
LFW with 1,000 resamples takes seconds. The threshold is held fixed: its own
uncertainty (it was chosen on the same data) is not in these intervals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from fr_pbd.errors import EvaluationError

__all__ = ["IdentityCounts", "BootstrapInterval", "identity_bootstrap", "DEFAULT_RESAMPLES", "DEFAULT_SEED"]

DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 20261129


@dataclass(frozen=True)
class IdentityCounts:
    """One threshold's per-identity counts for one group (local identity indices 0..n-1)."""

    genuine: np.ndarray  # (n,) genuine comparisons per identity (failed ones included)
    rejected: np.ndarray  # (n,) of them rejected at the threshold
    images: np.ndarray  # (n,) acquired images per identity (impostor comparisons: m_a * m_b)
    pair_a: np.ndarray  # (k,) identity a of each identity pair with accepted impostor comparisons
    pair_b: np.ndarray  # (k,) identity b (a != b)
    accepted: np.ndarray  # (k,) accepted impostor comparisons between a and b

    def check(self) -> int:
        n = self.genuine.shape[0]
        if not (self.rejected.shape == self.images.shape == (n,)):
            raise EvaluationError("per-identity counts must have one entry per identity")
        if not (self.pair_a.shape == self.pair_b.shape == self.accepted.shape):
            raise EvaluationError("identity pairs and their counts must have one length")
        if np.any(self.rejected > self.genuine) or np.any(self.pair_a == self.pair_b):
            raise EvaluationError("inconsistent per-identity counts")
        if self.pair_a.size and (min(self.pair_a.min(), self.pair_b.min()) < 0
                                 or max(self.pair_a.max(), self.pair_b.max()) >= n):
            raise EvaluationError("identity pair index out of range")
        return n


@dataclass(frozen=True)
class BootstrapInterval:
    fnmr: tuple[float, float] | None
    fmr: tuple[float, float] | None
    resamples: int

    def to_dict(self) -> dict:
        return {"fnmr_ci95_bootstrap": list(self.fnmr) if self.fnmr else None,
                "fmr_ci95_bootstrap": list(self.fmr) if self.fmr else None}


def _weights(rng: np.random.Generator, n: int, rows: int) -> np.ndarray:
    """``rows`` resamples of n identities drawn with replacement: how often each was drawn."""
    draws = rng.integers(0, n, size=(rows, n))
    flat = draws + (np.arange(rows)[:, None] * n)
    return np.bincount(flat.ravel(), minlength=rows * n).reshape(rows, n).astype(np.float64)


def _interval(values: np.ndarray, confidence: float) -> tuple[float, float] | None:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return None
    a = (1.0 - confidence) / 2
    lo, hi = np.quantile(v, [a, 1.0 - a])
    return float(lo), float(hi)


def identity_bootstrap(
    counts: Sequence[IdentityCounts],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int | Sequence[int] = DEFAULT_SEED,
    confidence: float = 0.95,
    block: int = 200,
) -> list[BootstrapInterval]:
    """Percentile intervals of FNMR and FMR, one per entry of ``counts``.

    All entries describe the same identities (e.g. one group at two thresholds)
    and share the same resamples, so their intervals are comparable.
    """
    if not counts:
        return []
    if resamples < 1 or not (0.0 < confidence < 1.0):
        raise EvaluationError("the bootstrap needs at least one resample and a confidence in (0, 1)")
    n = counts[0].check()
    for c in counts[1:]:
        if c.check() != n or not np.array_equal(c.images, counts[0].images) \
                or not np.array_equal(c.genuine, counts[0].genuine):
            raise EvaluationError("bootstrap counts must describe the same identities")
    if n < 2:
        return [BootstrapInterval(None, None, 0) for _ in counts]
    rng = np.random.default_rng(seed)
    gen = counts[0].genuine.astype(np.float64)
    m = counts[0].images.astype(np.float64)
    fnmr = np.empty((len(counts), resamples))
    fmr = np.empty((len(counts), resamples))
    done = 0
    with np.errstate(divide="ignore", invalid="ignore"):
        while done < resamples:
            rows = min(block, resamples - done)
            w = _weights(rng, n, rows)
            g_tot = w @ gen
            wm = w * m
            imp_tot = (wm.sum(axis=1) ** 2 - (wm * wm).sum(axis=1)) / 2.0
            for k, c in enumerate(counts):
                fnmr[k, done:done + rows] = (w @ c.rejected.astype(np.float64)) / g_tot
                if c.accepted.size:
                    acc = (w[:, c.pair_a] * w[:, c.pair_b]) @ c.accepted.astype(np.float64)
                else:
                    acc = np.zeros(rows)
                fmr[k, done:done + rows] = acc / imp_tot
            done += rows
    out = []
    for k in range(len(counts)):
        has_gen = bool(gen.sum() > 0)
        has_imp = bool((m.sum() ** 2 - (m * m).sum()) > 0)
        out.append(BootstrapInterval(_interval(fnmr[k], confidence) if has_gen else None,
                                     _interval(fmr[k], confidence) if has_imp else None, resamples))
    return out
