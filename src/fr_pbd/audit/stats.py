"""The timing rule of C5: does the answer time tell the outcome or the reason apart? (numpy and math only)

The samples are answer times (request sent -> first answer byte) per probe
class: genuine, impostor, no face, presentation attack, locked out. The rule
(docs/audit.md) needs three things at once, so that neither a tiny but steady
difference (a scheduler artefact far below what a caller could use) nor a
large one on a handful of noisy samples decides alone:

1. a rank test: Kruskal-Wallis H across the classes, p < :data:`ALPHA`
   (tie-corrected; p from the chi-square distribution with k - 1 degrees of
   freedom, exact closed forms);
2. an effect size: for some pair of classes, Cliff's delta |d| >= :data:`MIN_DELTA`
   (d = P(X > Y) - P(X < Y): 0 when the two are alike, +-1 when every time of
   one class is above every time of the other);
3. that pair's medians differ by at least :data:`MIN_SHIFT_S`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["ALPHA", "MIN_DELTA", "MIN_SHIFT_S", "MIN_SAMPLES", "MAX_SPREAD_S", "spread", "TimingVerdict", "kruskal_wallis", "cliffs_delta",
           "chi2_sf", "judge"]

ALPHA = 0.01
MIN_DELTA = 0.5
MIN_SHIFT_S = 0.001
MIN_SAMPLES = 5
#: The most spread (interquartile range) of answer or close times within one answer that a fixed deadline gives
#: on a loaded machine, with a margin (tests/test_audit.py holds fr-pbd's own daemon to it); more can carry bits
#: the answer does not. A keyed channel of 0-31 ms has an IQR near 16 ms.
MAX_SPREAD_S = 0.005


def spread(values: list[float]) -> float:
    """Interquartile range: robust to the odd late answer of a busy scheduler."""
    q1, q3 = np.percentile(np.asarray(values, float), (25, 75))
    return float(q3 - q1)


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (1-based) with ties sharing their mean rank."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    sx = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sx[j + 1] == sx[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def chi2_sf(x: float, df: int) -> float:
    """P(X >= x) for X ~ chi-square(df), df >= 1 (closed forms for integer df)."""
    if x <= 0:
        return 1.0
    h = x / 2
    if df % 2 == 0:
        term, total = 1.0, 1.0
        for i in range(1, df // 2):
            term *= h / i
            total += term
        return min(1.0, math.exp(-h) * total)
    total = math.erfc(math.sqrt(h))
    for i in range(1, (df - 1) // 2 + 1):
        total += math.exp(-h + (i - 0.5) * math.log(h) - math.lgamma(i + 0.5))
    return min(1.0, total)


def kruskal_wallis(groups: list[np.ndarray]) -> tuple[float, float]:
    """(H, p) of the Kruskal-Wallis rank test (tie-corrected)."""
    sizes = [len(g) for g in groups]
    x = np.concatenate(groups).astype(np.float64)
    n = len(x)
    r = _ranks(x)
    h, start = 0.0, 0
    for m in sizes:
        h += r[start:start + m].sum() ** 2 / m
        start += m
    h = 12.0 / (n * (n + 1)) * h - 3 * (n + 1)
    _, counts = np.unique(x, return_counts=True)
    tie = 1 - float((counts ** 3 - counts).sum()) / (n ** 3 - n)
    if tie > 0:
        h /= tie
    return h, chi2_sf(h, len(groups) - 1)


def cliffs_delta(a: np.ndarray, b: np.ndarray) -> float:
    """P(a > b) - P(a < b) over all pairs."""
    diff = np.subtract.outer(np.asarray(a, float), np.asarray(b, float))
    return float((np.sign(diff)).mean())


@dataclass
class TimingVerdict:
    tells_apart: bool
    h: float
    p: float
    pair: tuple[str, str] | None
    delta: float
    shift_s: float
    lines: list[str]


def judge(samples: dict[str, list[float]]) -> TimingVerdict:
    """Apply the rule to answer times per class (classes with fewer than MIN_SAMPLES are left out)."""
    used = {k: np.asarray(v, float) for k, v in samples.items() if len(v) >= MIN_SAMPLES}
    names = list(used)
    lines = [f"{k}: n={len(v)}, median {np.median(v) * 1000:.2f} ms, IQR {np.percentile(v, 25) * 1000:.2f}-"
             f"{np.percentile(v, 75) * 1000:.2f} ms" for k, v in used.items()]
    if len(names) < 2:
        return TimingVerdict(False, 0.0, 1.0, None, 0.0, 0.0, lines)
    h, p = kruskal_wallis([used[k] for k in names])
    best: tuple[float, float, tuple[str, str]] | None = None
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            d = cliffs_delta(used[a], used[b])
            shift = float(np.median(used[a]) - np.median(used[b]))
            lines.append(f"{a} vs {b}: Cliff's delta {d:+.2f}, median difference {shift * 1000:+.2f} ms")
            key = (abs(d) if abs(shift) >= MIN_SHIFT_S else 0.0, abs(shift), (a, b))
            if best is None or key[:2] > best[:2]:
                best = key
    assert best is not None
    pair = best[2]
    delta = cliffs_delta(used[pair[0]], used[pair[1]])
    shift = float(np.median(used[pair[0]]) - np.median(used[pair[1]]))
    tells = p < ALPHA and abs(delta) >= MIN_DELTA and abs(shift) >= MIN_SHIFT_S
    lines.insert(0, f"Kruskal-Wallis H = {h:.2f}, p = {p:.2g} over {len(names)} classes; strongest pair "
                    f"{pair[0]} vs {pair[1]}: Cliff's delta {delta:+.2f}, median difference {shift * 1000:+.2f} ms")
    return TimingVerdict(tells, h, p, pair, delta, shift, lines)
