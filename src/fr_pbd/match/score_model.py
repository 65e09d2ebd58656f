"""Score models: how a probe meets a user's K enrolled templates, for the matcher and the evaluation.

* ``cosine``: the probe against the user's centroid (:mod:`fr_pbd.match.fusion`), cosine
  similarity; no parameters.
* ``plda``: the two-covariance PLDA log-likelihood ratio of :mod:`fr_pbd.match.plda`, the K
  templates as sufficient statistics; its parameters are a manifest model (role
  ``score-model``), built by ``fr-pbd models build plda``.

Which one decides is the manifest's: the embedder's ``score_model`` key (``"cosine"`` when
absent, else the name of a ``score-model`` entry, whose ``default_threshold`` is then the
operating threshold). :func:`threshold` and :func:`protected_gallery` both read it, so the
score and its threshold cannot come from two different models.

Both models work on protected templates: the store's rotation ``R`` is orthogonal, the
centroid commutes with it, and the PLDA model is rotated with it (``T -> T R'``,
``mu -> R mu``), so no template leaves the protected domain to be scored.

Scores are biometric-derived data: the evaluation's :meth:`Enrolled.scores` stays in the
process; the store's gallery answers only ``bool``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from fr_pbd import models
from fr_pbd.errors import ManifestError
from fr_pbd.match.fusion import centroid, centroids
from fr_pbd.match.gallery import Gallery
from fr_pbd.match.plda import Plda, Prepared, fit

__all__ = ["COSINE", "NAMES", "Cosine", "PldaModel", "Enrolled", "in_force", "name_in_force", "threshold",
           "protected_gallery", "PldaGallery"]

COSINE = "cosine"
PLDA = "plda"
#: The score models ``fr-pbd eval lfw --score-model`` knows.
NAMES = (COSINE, PLDA)


class Enrolled:
    """Users' enrolments under one score model: ``scores(probes)`` -> (B, U) float32 (in-process only)."""

    def __init__(self, weights: np.ndarray, bias: np.ndarray | None, probe_coef: np.ndarray | None,
                 n_of_user: np.ndarray | None, prep: Prepared | None) -> None:
        self._w = np.ascontiguousarray(weights.T, dtype=np.float32)  # (D, U)
        self._bias = None if bias is None else bias.astype(np.float32)
        self._coef = probe_coef  # (distinct n, D) float64 or None
        self._n_idx = n_of_user
        self._prep = prep

    @property
    def users(self) -> int:
        return int(self._w.shape[1])

    def scores(self, probes: np.ndarray) -> np.ndarray:
        x = np.asarray(probes, dtype=np.float32)
        if self._prep is None:
            return x @ self._w
        u = self._prep.transform(x)
        s = u.astype(np.float32) @ self._w
        s += self._bias[None, :]
        q = ((u * u) @ self._coef.T).astype(np.float32)  # (B, distinct n)
        s += q[:, self._n_idx]
        return s


class Cosine:
    """Centroid fusion, cosine similarity."""

    name = COSINE
    score_range = (-1.0, 1.0)

    def enrolled(self, sets: np.ndarray, mask: np.ndarray) -> Enrolled:
        """``sets`` (U, K, D) unit templates, ``mask`` (U, K) acquired."""
        return Enrolled(centroids(sets, mask), None, None, None, None)

    def describe(self) -> dict:
        return {"name": self.name, "fusion": "centroid (L2-normalised sum, fr_pbd.match.fusion)"}


class PldaModel:
    """Two-covariance PLDA, K templates as sufficient statistics."""

    name = PLDA
    #: Impostor scores are counted in a histogram on this range (values outside land in the end bins;
    #: the thresholds of interest lie well inside: tests/test_plda.py).
    score_range = (-4096.0, 4096.0)

    def __init__(self, plda: Plda, trained_on: str = "") -> None:
        self.plda = plda
        self.prepared = plda.prepare()
        self.trained_on = trained_on

    @classmethod
    def train(cls, x: np.ndarray, identity: np.ndarray, trained_on: str = "") -> "PldaModel":
        """Fit, then keep the parameters as the file stores them (float32), so that what is evaluated
        is exactly what a device loads."""
        return cls(Plda.from_bytes(fit(x, identity).to_bytes()), trained_on)

    def enrolled(self, sets: np.ndarray, mask: np.ndarray) -> Enrolled:
        p = self.prepared
        sets = np.asarray(sets, dtype=np.float64)
        mask = np.asarray(mask, dtype=bool)
        u, k, d = sets.shape
        t = p.transform(sets.reshape(u * k, d)).reshape(u, k, d) * mask[:, :, None]
        n = mask.sum(axis=1)
        w, bias = p.enrol(t.sum(axis=1), n)
        ns, n_idx = np.unique(n, return_inverse=True)
        coef = 0.5 * (p.a(ns + 1) - p.a(1)[None, :])
        return Enrolled(w, bias, coef, n_idx.reshape(-1), p)

    def describe(self) -> dict:
        return {"name": self.name, "model": "two-covariance PLDA (fr_pbd.match.plda), EM, "
                f"{self.plda.dim}-d; K templates as sufficient statistics", "trained_on": self.trained_on}


# --- the model in force (manifest) ----------------------------------------------------------------
def name_in_force(model_id: str) -> str:
    """The manifest's score model for the embedder ``model_id``: ``"cosine"`` or a score-model entry's name.

    An embedder the manifest does not list is scored with cosine (and has no threshold:
    :func:`threshold` refuses it). A test's own embedder is listed through
    :func:`fr_pbd.pipeline.register_embedder`.
    """
    known = models.manifest()
    if model_id not in known:
        return COSINE
    name = known[model_id].extra.get("score_model", COSINE)
    if name != COSINE and models.spec(name).role != "score-model":
        raise ManifestError(f"manifest entry {model_id!r}: score_model {name!r} is not a score-model entry")
    return name


@lru_cache(maxsize=4)
def _load(name: str, sha256: str) -> PldaModel:
    m = models.resolve(name)  # hash-checked against the manifest before it is parsed
    return PldaModel(Plda.from_bytes(m.data), trained_on=name)


def in_force(model_id: str) -> Cosine | PldaModel:
    """The score model that decides for the embedder ``model_id`` (a PLDA file is hash-checked once per process)."""
    name = name_in_force(model_id)
    if name == COSINE:
        return Cosine()
    return _load(name, models.spec(name).sha256)


def threshold(model_id: str) -> float:
    """The operating threshold of the score model in force for ``model_id`` (the verifier's one lookup)."""
    name_in_force(model_id)  # checks that a named score model is a score-model entry
    return models.threshold(model_id)  # the score model's own threshold when it is not cosine


# --- the store's gallery --------------------------------------------------------------------------
class PldaGallery:
    """Users' protected templates under a rotated PLDA model; answers only ``bool``.

    Every user is scored for every probe (one matrix-vector product and a bias), then the
    answer is read: the work does not depend on whether, or where, the probe matched.
    """

    __slots__ = ("_users", "_index", "_enrolled", "_dim")

    def __init__(self, users: Sequence[str], enrolled: Enrolled, dim: int) -> None:
        self._users = tuple(users)
        self._index = {u: k for k, u in enumerate(self._users)}
        self._enrolled = enrolled
        self._dim = dim

    @property
    def users(self) -> tuple[str, ...]:
        return self._users

    @property
    def dim(self) -> int:
        return self._dim

    def __reduce__(self):
        raise TypeError("a gallery holds biometric data and cannot be pickled")

    def matches(self, probe: np.ndarray, threshold: float, user: str | None = None) -> bool:
        p = np.asarray(probe)
        if p.ndim != 1 or p.shape[0] != self._dim or not np.all(np.isfinite(p)):
            raise ValueError("matches() takes one finite probe, a (D,) vector")
        thr = float(threshold)
        if not math.isfinite(thr):
            raise ValueError("threshold must be finite")
        if not self._users:
            return False
        hits = self._enrolled.scores(p[None, :])[0] >= np.float32(thr)
        n_hits = int(np.count_nonzero(hits))  # scans all of it
        if user is None:
            return n_hits > 0
        k = self._index.get(user, -1)
        return bool(hits[k]) if k >= 0 else False


def protected_gallery(model_id: str, users: Sequence[str], templates: Sequence[np.ndarray], rotation: np.ndarray,
                      dim: int) -> Gallery | PldaGallery:
    """The gallery the store matches a protected probe against, under the score model in force.

    ``templates[k]`` are ``users[k]``'s protected (rotated) templates, ``rotation`` the store's
    secret rotation: the PLDA model is rotated with it, so scores equal those of the plain domain.
    """
    model = in_force(model_id)
    if isinstance(model, Cosine):
        vec = np.stack([centroid(t) for t in templates]) if users else np.zeros((0, dim), np.float32)
        return Gallery.from_counts(vec, list(users), [1] * len(users), dim=dim)
    rot = model.prepared.rotated(rotation)
    kmax = max((t.shape[0] for t in templates), default=1)
    sets = np.zeros((len(users), kmax, dim))
    mask = np.zeros((len(users), kmax), dtype=bool)
    for i, t in enumerate(templates):
        sets[i, : t.shape[0]] = t
        mask[i, : t.shape[0]] = True
    return PldaGallery(users, _rotated_model(model, rot).enrolled(sets, mask), dim)


def _rotated_model(model: PldaModel, prepared: Prepared) -> PldaModel:
    m = PldaModel.__new__(PldaModel)
    m.plda, m.prepared, m.trained_on = model.plda, prepared, model.trained_on
    return m
