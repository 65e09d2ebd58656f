"""Template protection (ISO/IEC 24745): a secret random rotation per store.

Templates are stored as ``R t`` and probes are rotated the same way before
matching; R is orthonormal, so scores and decisions do not change, but stored
vectors from two stores do not link, and :func:`renew` revokes them. This is
*not* encryption (R sits in the same encrypted payload): that is
:mod:`fr_pbd.store.envelope`. Why and what it does not do:
``docs/store-format.md``, section 6.
"""

from __future__ import annotations

import os

import numpy as np

from fr_pbd.errors import StoreError
from fr_pbd.match import Gallery
from fr_pbd.match.fusion import centroid  # re-exported: the one implementation
from fr_pbd.match.score_model import PldaGallery, protected_gallery
from fr_pbd.store import _format as fmt
from fr_pbd.store.records import StoreState
from fr_pbd.template import Template

__all__ = ["random_rotation", "protect_rows", "renew", "centroid", "ProtectedMatcher"]


def random_rotation(d: int) -> np.ndarray:
    """Haar-random orthonormal D x D matrix from the OS CSPRNG (Box-Muller, QR, sign fix).

    The Gaussians come straight from ``os.urandom`` (no seeded PRNG whose state
    could be recovered), and the matrix itself is stored (numpy's distribution
    algorithms are not stable across versions, a seed would not be).
    """
    m = (d * d + 1) // 2
    raw = np.frombuffer(os.urandom(16 * m), dtype="<u8").reshape(2, m)
    u1 = 1.0 - (raw[0] >> np.uint64(11)).astype(np.float64) * 2.0**-53  # (0, 1]
    u2 = (raw[1] >> np.uint64(11)).astype(np.float64) * 2.0**-53
    rad = np.sqrt(-2.0 * np.log(u1))
    g = np.concatenate([rad * np.cos(2 * np.pi * u2), rad * np.sin(2 * np.pi * u2)])[: d * d].reshape(d, d)
    q, r = np.linalg.qr(g)
    s = np.sign(np.diag(r))
    s[s == 0] = 1.0
    return np.ascontiguousarray(q * s[None, :])


def protect_rows(x: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Rotate unit row vectors: x @ R.T, renormalised, float32."""
    y = np.asarray(x, dtype=np.float64) @ rotation.T
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    return np.ascontiguousarray(y, dtype=np.float32)


def renew(state: StoreState) -> None:
    """Draw a new rotation R' and a new store id; re-protect every template with ``R' R.T``.

    Match decisions are unchanged; templates leaked before renewal no longer
    link to the renewed store.
    """
    new_rot = random_rotation(state.dim)
    step = new_rot @ state.rotation.T
    for u in state.users.values():
        if u.templates.shape[0]:
            t = protect_rows(u.templates, step)
            t.setflags(write=False)
            u.templates = t
    new_rot.setflags(write=False)
    state.rotation = new_rot
    state.store_id = os.urandom(fmt.STORE_ID_LEN)


class ProtectedMatcher:
    """Matches *raw* probe templates against the store's *protected* gallery; answers only bool.

    Obtained from :meth:`StoreView.matcher`. It applies the store's secret
    rotation to the probe, then scores the whole gallery (no early exit; see
    :meth:`fr_pbd.match.Gallery.matches`). It exposes no score, no template and
    no rotation.
    """

    __slots__ = ("_gallery", "_rotation", "_model_id")

    def __init__(self, gallery: Gallery | PldaGallery, rotation: np.ndarray, model_id: str) -> None:
        self._gallery = gallery
        self._rotation = rotation
        self._model_id = model_id

    @classmethod
    def of(cls, state: StoreState, exclude: frozenset[str] = frozenset()) -> "ProtectedMatcher":
        """A matcher over every user's templates but ``exclude``'s (users without templates are absent).

        How a probe meets a user's K templates is the score model in force for the store's
        model (:mod:`fr_pbd.match.score_model`: centroid cosine, or PLDA rotated with the
        store's rotation), so every comparison stays in the protected domain.
        """
        names = [n for n in sorted(state.users) if state.users[n].templates.shape[0] > 0 and n not in exclude]
        gallery = protected_gallery(state.model_id, names, [state.users[n].templates for n in names],
                                    state.rotation, state.dim)
        return cls(gallery, state.rotation, state.model_id)

    @property
    def users(self) -> tuple[str, ...]:
        """Users with at least one template."""
        return self._gallery.users

    @property
    def model_id(self) -> str:
        return self._model_id

    def __repr__(self) -> str:
        return f"ProtectedMatcher(users={len(self._gallery.users)}, model_id={self._model_id!r})"

    def __reduce__(self):
        raise TypeError("a matcher holds biometric data and cannot be pickled")

    def matches(self, probe: Template, threshold: float, user: str | None = None) -> bool:
        """True iff ``probe`` matches any enrolled user (or the claimed ``user``) at ``threshold``.

        Raises StoreError if the probe comes from another model than the store's.
        """
        if not isinstance(probe, Template):
            raise TypeError("probe must be a fr_pbd.template.Template")
        if probe.model_id != self._model_id or probe.dim != self._rotation.shape[0]:
            raise StoreError("the probe template comes from another model than the store's templates")
        q = protect_rows(probe.vector[None, :], self._rotation)[0]
        return self._gallery.matches(q, threshold, user)
