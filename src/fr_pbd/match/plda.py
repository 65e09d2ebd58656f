"""Two-covariance PLDA: the score of "this probe and these K enrolled templates are one person".

The model (Ioffe 2006; Sizov, Lee and Kinnunen 2014, "two-covariance"): an identity is a
point ``y ~ N(mu, B)`` (between-identity covariance ``B``), and each of its templates is
``x = y + e``, ``e ~ N(0, W)`` (within-identity covariance ``W``). The score of a probe ``x``
against a user enrolled with templates ``x_1..x_K`` is the log-likelihood ratio

    LLR = log p(x, x_1..x_K | one identity) - log p(x) - log p(x_1..x_K)

in closed form, with the K templates entering only through their sum and their number (their
sufficient statistics). With ``T`` such that ``T W T' = I`` and ``T B T' = diag(psi)``, and
``u = T (x - mu)``, ``s = sum_j T (x_j - mu)``, ``a_n = psi / (1 + n psi)``:

    LLR = u' diag(a_{K+1}) s + 1/2 u' diag(a_{K+1} - a_1) u + 1/2 s' diag(a_{K+1} - a_K) s
          - 1/2 sum log((1 + (K+1) psi) / ((1 + K psi) (1 + psi)))

so scoring a gallery is one matrix-vector product plus a bias per user, as cosine is.

Template protection: the store keeps ``R t`` for a secret orthogonal ``R``. The model of the
rotated templates is ``(R mu, R B R', R W R')`` (:meth:`Plda.rotated`), and its transform is
``T R'`` (:meth:`Prepared.rotated`): every comparison stays in the protected domain and gives
the same score (tests/test_plda.py).

File format (``fr-pbd models build plda`` writes it; the manifest pins its sha256): 16 bytes of
header, ``b"FRPBDPLD"``, version (uint16 LE, 1), D (uint16 LE), 4 zero bytes; then ``mu`` (D),
``B`` (D x D, row-major), ``W`` (D x D, row-major) as float32 little-endian. No template, no
image: two covariance matrices and a mean over thousands of identities.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from fr_pbd.errors import ModelError

__all__ = ["Plda", "Prepared", "fit", "MAGIC", "VERSION"]

MAGIC = b"FRPBDPLD"
VERSION = 1
_HEADER = struct.Struct("<8sHH4x")
#: EM iterations of :func:`fit`.
EM_ITERATIONS = 25
#: A ridge added to both covariances at every step, relative to the mean variance of the data: it keeps
#: them invertible when there are fewer within-identity degrees of freedom than dimensions (a small
#: subset); on a half of LFW (about 4,000 within-identity degrees of freedom, D = 128) it moves nothing
#: that matters.
RIDGE = 1e-4


@dataclass(frozen=True)
class Plda:
    """The parameters: mean ``mu`` (D,), between- and within-identity covariances ``B``, ``W`` (D, D)."""

    mu: np.ndarray
    B: np.ndarray
    W: np.ndarray

    @property
    def dim(self) -> int:
        return int(self.mu.shape[0])

    def rotated(self, r: np.ndarray) -> "Plda":
        """The model of templates rotated by the orthogonal ``r`` (rows ``t @ r.T``)."""
        r = np.asarray(r, dtype=np.float64)
        return Plda(r @ self.mu, r @ self.B @ r.T, r @ self.W @ r.T)

    def to_bytes(self) -> bytes:
        d = self.dim
        body = np.concatenate([self.mu.ravel(), self.B.ravel(), self.W.ravel()]).astype("<f4")
        return _HEADER.pack(MAGIC, VERSION, d) + body.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> "Plda":
        if len(data) < _HEADER.size:
            raise ModelError("the PLDA file is truncated")
        magic, version, d = _HEADER.unpack_from(data)
        if magic != MAGIC or version != VERSION or d < 1:
            raise ModelError("the PLDA file has an unknown header (expected FRPBDPLD version 1)")
        n = d + 2 * d * d
        if len(data) != _HEADER.size + 4 * n:
            raise ModelError("the PLDA file has the wrong size for its dimension")
        v = np.frombuffer(data, dtype="<f4", offset=_HEADER.size).astype(np.float64)
        if not np.all(np.isfinite(v)):
            raise ModelError("the PLDA file holds non-finite values")
        return cls(v[:d].copy(), v[d:d + d * d].reshape(d, d).copy(), v[d + d * d:].reshape(d, d).copy())

    def prepare(self) -> "Prepared":
        """Diagonalise ``W`` and ``B`` together (``T W T' = I``, ``T B T' = diag(psi)``)."""
        w = (self.W + self.W.T) / 2
        b = (self.B + self.B.T) / 2
        try:
            lw = np.linalg.cholesky(w)
        except np.linalg.LinAlgError:
            raise ModelError("the PLDA within-identity covariance is not positive definite") from None
        li = np.linalg.inv(lw)
        m = li @ b @ li.T
        psi, q = np.linalg.eigh((m + m.T) / 2)
        return Prepared(mu=self.mu.copy(), T=q.T @ li, psi=np.maximum(psi, 0.0))


@dataclass(frozen=True)
class Prepared:
    """The model ready to score: ``u = T (x - mu)``, per-dimension ``psi``."""

    mu: np.ndarray
    T: np.ndarray
    psi: np.ndarray

    @property
    def dim(self) -> int:
        return int(self.mu.shape[0])

    def rotated(self, r: np.ndarray) -> "Prepared":
        """The same model for templates rotated by the orthogonal ``r``: ``mu -> r mu``, ``T -> T r'``."""
        r = np.asarray(r, dtype=np.float64)
        return Prepared(mu=r @ self.mu, T=self.T @ r.T, psi=self.psi)

    def a(self, n: np.ndarray | int) -> np.ndarray:
        """``psi / (1 + n psi)`` for each n: shape ``(*n.shape, D)``."""
        n = np.asarray(n, dtype=np.float64)
        return self.psi / (1.0 + n[..., None] * self.psi)

    def const(self, n: np.ndarray | int) -> np.ndarray:
        """The LLR's constant for K = n enrolled templates."""
        n = np.asarray(n, dtype=np.float64)[..., None]
        p = self.psi
        return -0.5 * np.sum(np.log1p((n + 1) * p) - np.log1p(n * p) - np.log1p(p), axis=-1)

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Rows ``x`` (N, D) -> ``u`` (N, D) float64."""
        return (np.asarray(x, dtype=np.float64) - self.mu) @ self.T.T

    def enrol(self, u_sum: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per user (sum of its transformed templates, their number) -> the probe weights
        ``a_{n+1} * s`` (U, D) and the bias ``1/2 s' (a_{n+1} - a_n) s + const_n`` (U,)."""
        s = np.asarray(u_sum, dtype=np.float64)
        n = np.asarray(n)
        a1 = self.a(n + 1)
        bias = 0.5 * np.einsum("ud,ud->u", s * (a1 - self.a(n)), s) + self.const(n)
        return a1 * s, bias

    def probe_terms(self, u: np.ndarray, ns: np.ndarray) -> np.ndarray:
        """``1/2 u' (a_{n+1} - a_1) u`` for every probe row and every n in ``ns``: (N, len(ns))."""
        ns = np.asarray(ns)
        coef = 0.5 * (self.a(ns + 1) - self.a(1)[None, :])  # (len(ns), D)
        return (np.asarray(u, dtype=np.float64) ** 2) @ coef.T

    def llr(self, probe: np.ndarray, enrolled: np.ndarray) -> float:
        """The score of one probe (D,) against one user's templates (K, D), in float64 (tests, reference)."""
        u = self.transform(np.asarray(probe)[None])[0]
        e = self.transform(np.asarray(enrolled))
        n = np.array([e.shape[0]])
        w, bias = self.enrol(e.sum(axis=0)[None], n)
        return float(w[0] @ u + bias[0] + self.probe_terms(u[None], n)[0, 0])


def fit(x: np.ndarray, identity: np.ndarray, iterations: int = EM_ITERATIONS) -> Plda:
    """Maximum-likelihood two-covariance PLDA by EM, from rows ``x`` (N, D) and identity codes (N,).

    Started from the moment estimates (``W``: pooled within-identity scatter, ``B``: the
    covariance of identity means); each E-step's posterior covariance depends only on an
    identity's image count, so it is computed once per distinct count. Deterministic for a
    given input and BLAS (no random start).
    """
    x = np.asarray(x, dtype=np.float64)
    ids = np.asarray(identity)
    if x.ndim != 2 or ids.shape != (x.shape[0],):
        raise ValueError("fit() takes (N, D) rows and one identity code per row")
    _, inv = np.unique(ids, return_inverse=True)
    m = int(inv.max()) + 1
    d = x.shape[1]
    counts = np.bincount(inv, minlength=m).astype(np.float64)
    sums = np.zeros((m, d))
    np.add.at(sums, inv, x)
    n_tot = float(x.shape[0])
    xx = x.T @ x  # sum of x x'
    means = sums / counts[:, None]
    mu = means.mean(axis=0)
    ridge = RIDGE * float(np.trace(xx / n_tot - np.outer(x.mean(axis=0), x.mean(axis=0)))) / d * np.eye(d)
    w = (xx - (sums.T / counts) @ sums) / n_tot + ridge
    b = np.cov(means.T, bias=True) + ridge
    ucounts = np.unique(counts)
    for _ in range(iterations):
        bi = np.linalg.inv(b)
        wi = np.linalg.inv(w)
        cov_of = {c: np.linalg.inv(bi + c * wi) for c in ucounts.tolist()}
        post_mean = np.empty((m, d))
        cov_sum = np.zeros((d, d))
        cov_sum_w = np.zeros((d, d))
        h = sums @ wi + (bi @ mu)[None, :]
        for c, cv in cov_of.items():
            sel = counts == c
            post_mean[sel] = h[sel] @ cv
            k = float(sel.sum())
            cov_sum += k * cv
            cov_sum_w += k * c * cv
        mu = post_mean.mean(axis=0)
        b = (cov_sum + post_mean.T @ post_mean) / m - np.outer(mu, mu)
        # sum_ij (x_ij - m_i)(x_ij - m_i)' = xx - S'M - M'S + sum_i n_i m_i m_i'
        sm = sums.T @ post_mean
        w = (xx - sm - sm.T + (post_mean.T * counts) @ post_mean + cov_sum_w) / n_tot
        b = (b + b.T) / 2 + ridge
        w = (w + w.T) / 2 + ridge
    return Plda(mu, b, w)
