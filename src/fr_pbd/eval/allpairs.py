"""Every comparison of a data set, in blocks: all genuine pairs exactly, all
cross-identity impostor pairs into a :class:`~fr_pbd.eval.metrics.StreamedScores`.

Why not :class:`fr_pbd.match.Gallery`: it folds scores into a per-user maximum
(the 1:N decision), while FMR needs every single comparison. This module does its
own blocked GEMM over the (N, D) float32 template matrix instead: templates are
sorted by identity, so for template ``g`` the genuine partners are the columns
``(g, end_of_identity(g))`` and the impostor partners are the columns
``[end_of_identity(g), N)``. A block of rows is multiplied with every later
column at once; nothing N x N is ever allocated (the largest temporary is one
``block_rows x N`` score block).

Scores stay in this process: nothing here writes or logs them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from fr_pbd.errors import EvaluationError
from fr_pbd.eval.metrics import StreamedScores

__all__ = ["AllPairsScores", "score_all_pairs", "impostor_pairs_at_or_above", "comparison_counts"]

ProgressFn = Callable[[int, int], None]


def _c2(n: np.ndarray | int) -> np.ndarray | int:
    return n * (n - 1) // 2


def comparison_counts(identity: np.ndarray, acquired: np.ndarray) -> dict[str, int]:
    """Genuine/impostor comparison counts: all, between acquired templates, failed."""
    identity = np.asarray(identity)
    acquired = np.asarray(acquired, dtype=bool)
    n_all = np.bincount(identity).astype(np.int64) if identity.size else np.zeros(0, np.int64)
    n_ok = np.bincount(identity[acquired], minlength=n_all.size).astype(np.int64) if identity.size else n_all
    gen_all = int(_c2(n_all).sum())
    gen_ok = int(_c2(n_ok).sum())
    imp_all = int(_c2(int(identity.size))) - gen_all
    imp_ok = int(_c2(int(acquired.sum()))) - gen_ok
    return {
        "genuine_all": gen_all,
        "genuine_acquired": gen_ok,
        "genuine_failed": gen_all - gen_ok,
        "impostor_all": imp_all,
        "impostor_acquired": imp_ok,
        "impostor_failed": imp_all - imp_ok,
    }


@dataclass
class AllPairsScores:
    """Every comparison among the acquired templates.

    ``genuine`` (exact, float32) with the identity code of each comparison;
    ``impostors`` streamed; failed comparisons (involving an image that failed
    to acquire) are counted, per identity for the genuine ones.
    """

    genuine: np.ndarray = field(repr=False)
    genuine_identity: np.ndarray = field(repr=False)
    genuine_failed: int
    genuine_failed_per_identity: np.ndarray = field(repr=False)
    impostors: StreamedScores = field(repr=False)
    impostor_failed: int
    images: int
    acquired: int
    identities: int


def _prepare(templates: np.ndarray, identity: np.ndarray, acquired: np.ndarray | None):
    x = np.asarray(templates)
    ids = np.asarray(identity)
    if x.ndim != 2 or ids.ndim != 1 or x.shape[0] != ids.shape[0]:
        raise EvaluationError("templates must be (N, D) with one identity code per row")
    if ids.size and (ids.dtype.kind not in "iu" or ids.min() < 0):
        raise EvaluationError("identity codes must be non-negative integers")
    ok = np.ones(ids.size, dtype=bool) if acquired is None else np.asarray(acquired, dtype=bool)
    if ok.shape != ids.shape:
        raise EvaluationError("acquired must give one flag per template")
    rows = np.flatnonzero(ok)
    order = rows[np.argsort(ids[rows], kind="stable")]  # acquired rows, grouped by identity
    xs = np.ascontiguousarray(x[order], dtype=np.float32)
    if not np.all(np.isfinite(xs)):
        raise EvaluationError("acquired templates must be finite")
    lab = ids[order]
    # end (exclusive) of each row's identity run, in sorted order
    if lab.size:
        starts = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]])
        ends = np.r_[starts[1:], lab.size]
        run_end = np.repeat(ends, np.diff(np.r_[starts, lab.size]))
    else:
        run_end = np.zeros(0, dtype=np.int64)
    return xs, lab, order.astype(np.int64), run_end.astype(np.int64), ok


def _blocks(xs: np.ndarray, run_end: np.ndarray, block_rows: int,
            right: np.ndarray | None = None) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """Yield (r0, S, local genuine column start/end per row as (lo, hi), impostor column start per row).

    ``S[a, c]`` is the score of sorted rows ``r0 + a`` and ``r0 + c``: ``xs[a] . right[c]``
    (``right`` defaults to ``xs``: cosine).
    """
    m = xs.shape[0]
    right = xs if right is None else right
    for r0 in range(0, m, block_rows):
        r1 = min(m, r0 + block_rows)
        s = xs[r0:r1] @ right[r0:].T
        a = np.arange(r1 - r0)
        gen_lo = a + 1
        imp_lo = run_end[r0:r1] - r0
        yield r0, s, np.stack([gen_lo, imp_lo]), imp_lo


def score_all_pairs(
    templates: np.ndarray,
    identity: np.ndarray,
    acquired: np.ndarray | None = None,
    *,
    block_rows: int = 512,
    bins: int = 2**20,
    top_k: int = 2**17,
    progress: ProgressFn | None = None,
    features: tuple[np.ndarray, np.ndarray] | None = None,
    score_range: tuple[float, float] = (-1.0, 1.0),
) -> AllPairsScores:
    """All genuine and all cross-identity impostor comparisons of the acquired templates.

    ``templates`` (N, D) unit vectors (rows of failed images may hold anything),
    ``identity`` (N,) integer identity codes, ``acquired`` (N,) flags (default all).
    Scores are dot products (cosine similarity of unit vectors) in float32; with
    ``features = (left, right)`` (N, D') each, the score of images i and j is
    ``left[i] . right[j]`` instead (a score model's pairwise score, e.g. PLDA with K = 1:
    :func:`fr_pbd.eval.twofold.pair_features`), counted on ``score_range``.
    """
    xs, lab, order, run_end, ok = _prepare(templates, identity, acquired)
    right = None
    if features is not None:
        xs = np.ascontiguousarray(np.asarray(features[0])[order], dtype=np.float32)
        right = np.ascontiguousarray(np.asarray(features[1])[order], dtype=np.float32)
    counts = comparison_counts(np.asarray(identity), ok)
    n_ids = int(np.asarray(identity).max()) + 1 if np.asarray(identity).size else 0
    imp = StreamedScores(bins=bins, lo=score_range[0], hi=score_range[1], top_k=top_k)
    gen_s: list[np.ndarray] = []
    gen_id: list[np.ndarray] = []
    m = xs.shape[0]
    done = 0
    total_rows = m
    for r0, s, (gen_lo, gen_hi), imp_lo in _blocks(xs, run_end, block_rows, right):
        b, w = s.shape
        cols = np.arange(w)
        imp_mask = cols[None, :] >= imp_lo[:, None]
        gen_mask = (cols[None, :] >= gen_lo[:, None]) & (cols[None, :] < gen_hi[:, None])
        if gen_mask.any():
            gen_s.append(s[gen_mask].astype(np.float32))
            ra, _ = np.nonzero(gen_mask)
            gen_id.append(lab[r0 + ra])
        vals = s[imp_mask]
        if vals.size:
            imp.add_hist(vals)
            floor = imp.top_floor
            cand = imp_mask & (s > floor) if np.isfinite(floor) else imp_mask
            ra, ca = np.nonzero(cand)
            if ra.size:
                imp.add_top(s[ra, ca], order[r0 + ra].astype(np.int32), order[r0 + ca].astype(np.int32))
        done += b
        if progress is not None:
            progress(done, total_rows)
    genuine = np.concatenate(gen_s) if gen_s else np.zeros(0, np.float32)
    genuine_identity = np.concatenate(gen_id) if gen_id else np.zeros(0, np.int64)
    ids_arr = np.asarray(identity)
    n_all = np.bincount(ids_arr, minlength=n_ids).astype(np.int64)
    n_ok = np.bincount(ids_arr[ok], minlength=n_ids).astype(np.int64)
    failed_per_id = _c2(n_all) - _c2(n_ok)
    if imp.n != counts["impostor_acquired"] or genuine.size != counts["genuine_acquired"]:
        raise EvaluationError("internal: comparison counts do not add up")  # pragma: no cover
    return AllPairsScores(
        genuine=genuine,
        genuine_identity=genuine_identity.astype(np.int64),
        genuine_failed=counts["genuine_failed"],
        genuine_failed_per_identity=failed_per_id,
        impostors=imp,
        impostor_failed=counts["impostor_failed"],
        images=int(ids_arr.size),
        acquired=int(ok.sum()),
        identities=int(np.unique(ids_arr).size),
    )


def impostor_pairs_at_or_above(
    templates: np.ndarray,
    identity: np.ndarray,
    threshold: float,
    acquired: np.ndarray | None = None,
    *,
    block_rows: int = 512,
    max_pairs: int = 50_000_000,
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (i, j) of every impostor comparison accepted at ``threshold``.

    A second blocked pass, used for per-group counts when the threshold is below
    the exact top-K kept by :func:`score_all_pairs`. Returns indices, no scores.
    """
    xs, _lab, order, run_end, _ok = _prepare(templates, identity, acquired)
    out_i: list[np.ndarray] = []
    out_j: list[np.ndarray] = []
    found = 0
    t = np.float64(threshold)  # compare in float64: a Python float would be cast to float32
    for r0, s, _gen, imp_lo in _blocks(xs, run_end, block_rows):
        cols = np.arange(s.shape[1])
        hit = (cols[None, :] >= imp_lo[:, None]) & (s >= t)
        ra, ca = np.nonzero(hit)
        found += ra.size
        if found > max_pairs:
            raise EvaluationError("too many impostor comparisons accepted at this threshold to count per group")
        out_i.append(order[r0 + ra])
        out_j.append(order[r0 + ca])
    if not out_i:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(out_i), np.concatenate(out_j)
