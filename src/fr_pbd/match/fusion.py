"""Centroid fusion: one user's K unit templates as one unit template.

The one implementation: the store's matcher (:mod:`fr_pbd.store.protection`, through
:class:`fr_pbd.match.score_model.Cosine`) and the evaluation
(:mod:`fr_pbd.eval.transactions`) both call :func:`centroids`, so the threshold measured on
LFW is the threshold of the same arithmetic (tests/test_fusion.py ties them).

The fused template is the L2-normalised sum of the acquired templates, summed in float64 and
returned as float32. A rotation ``R`` commutes with it (``centroid(T R^T) == centroid(T) R^T``),
so the centroid of the protected templates is the protected centroid.
"""

from __future__ import annotations

import numpy as np

from fr_pbd.errors import StoreError

__all__ = ["centroid", "centroids"]


def centroids(templates: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """``(U, K, D)`` templates (``mask`` ``(U, K)``: True where acquired) -> ``(U, D)`` float32 unit rows.

    A user with no acquired template (or whose templates cancel out) gets a zero row: the
    caller decides what that means (the evaluation: failed to enrol; the store: corrupt).
    """
    x = np.asarray(templates, dtype=np.float64)
    if x.ndim != 3:
        raise ValueError("centroids() takes a (U, K, D) array")
    if mask is not None:
        x = x * np.asarray(mask, dtype=bool)[:, :, None]
    c = x.sum(axis=1)
    n = np.sqrt(np.einsum("ij,ij->i", c, c))
    return (c / np.where(n > 0, n, 1.0)[:, None]).astype(np.float32)


def centroid(templates: np.ndarray) -> np.ndarray:
    """One user's ``(K, D)`` unit templates as one ``(D,)`` float32 unit vector."""
    c = centroids(np.asarray(templates)[None])[0]
    if not np.any(c):
        raise StoreError("a user's templates cancel out (corrupt store)")
    return c
