"""The vectorised matcher: a gallery of unit-length templates and a fused per-user max.

Layout
------
All templates live in one C-contiguous ``float32`` array of shape ``(N, D)``,
owned by the :class:`Gallery` and made read-only. Internally the rows are
grouped by *template count per user*: every user with exactly ``c`` templates
sits in one contiguous region of ``n_c * c`` rows. That lets the per-user max be
a handful of whole-array ``np.maximum`` calls over a ``(n_c, c, B)`` view
instead of a ragged ``reduceat`` (which numpy runs one tiny segment at a time,
about 20x slower). The output column order is the order given by the caller
(``Gallery.users``), independent of the internal layout.

Scoring a batch of probes ``P`` (``B x D``) walks each region in blocks of whole
users, about ``2**18 / B`` rows at a time (so the ``rows x B`` score block stays
in the L2 cache), computes ``block @ P.T`` with one BLAS call (GEMV when
``B == 1``, GEMM otherwise) and folds it into the per-user max at once. Nothing
``N x B``-sized is ever allocated; the largest temporary is one score block.

Privacy contract
----------------
Scores are biometric-derived data. :meth:`Gallery.matches` returns only a
``bool``. :meth:`Gallery.best_per_user` returns scores because the evaluation
harness needs them: its result must never leave the process (no logging, no
file, no socket, no exception message). The verifier must call only
:meth:`Gallery.matches`.

Work is independent of the probe: :meth:`Gallery.matches` always scores the
whole gallery, then reads the answer; it never stops early, whether or where a
match occurred, and also when a ``user`` is claimed. (This is a "same work"
guarantee at the numpy level, not a cycle-exact constant-time claim.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["Gallery"]

# Score block budget: rows * B * 4 bytes ~ 1 MiB (fits L2), between these bounds.
_SCORE_BLOCK_ELEMS = 2**18
_MIN_BLOCK_ROWS = 1024
_MAX_BLOCK_ROWS = 65536
# Above this many templates per user, reduce a (n, c, B) view with .max(axis=1)
# (long inner loops); at or below it, fold the c rows with c-1 np.maximum calls.
_LOOP_FOLD_MAX_C = 32
_NORM_TOL = 1e-3


def _check_user_id(u: object) -> str:
    if not isinstance(u, str) or not u:
        raise TypeError("user ids must be non-empty strings")
    return u


def _cols(cols, k0: int, k1: int):
    """Output rows of users k0..k1-1 of a group: a slice when contiguous, else an index array."""
    if isinstance(cols, slice):
        return slice(cols.start + k0, cols.start + k1)
    return cols[k0:k1]


def _col(cols, k: int) -> int:
    return cols.start + k if isinstance(cols, slice) else int(cols[k])


class Gallery:
    """An immutable gallery of unit-length templates with per-user segments.

    ``Gallery(vectors, labels)``: ``vectors`` is an ``(N, D)`` array of unit
    vectors (converted to a private C-contiguous ``float32`` copy), ``labels``
    a sequence of ``N`` user ids (strings), one per row, in any order. Users
    appear in :attr:`users` (the column order of :meth:`best_per_user`) in the
    order of their first row. Use :meth:`from_counts` when rows are already
    grouped per user (the store does this).

    An empty gallery (``N == 0``) is allowed: ``best_per_user`` returns a
    ``(B, 0)`` array and ``matches`` returns ``False`` for every probe.

    Invalid arguments (wrong shape, non-finite values, vectors that are not unit
    length within 1e-3, bad labels) raise ``ValueError`` / ``TypeError``; the
    messages never contain values.
    """

    __slots__ = ("_dim", "_users", "_index", "_vectors", "_groups", "_n", "_block_rows")

    def __init__(self, vectors: np.ndarray, labels: Sequence[str], *, _block_rows: int | None = None) -> None:
        arr = self._as_matrix(vectors, None)
        labels = list(labels)
        if len(labels) != arr.shape[0]:
            raise ValueError("labels must give one user id per gallery row")
        users: list[str] = []
        rows_of: dict[str, list[int]] = {}
        for i, u in enumerate(labels):
            _check_user_id(u)
            if u not in rows_of:
                rows_of[u] = []
                users.append(u)
            rows_of[u].append(i)
        order = np.fromiter((i for u in users for i in rows_of[u]), dtype=np.int64, count=arr.shape[0])
        counts = [len(rows_of[u]) for u in users]
        self._build(arr, order, users, counts, _block_rows)

    @classmethod
    def from_counts(
        cls,
        vectors: np.ndarray,
        users: Sequence[str],
        counts: Sequence[int],
        *,
        dim: int | None = None,
        _block_rows: int | None = None,
    ) -> "Gallery":
        """Build from rows grouped per user: user ``users[k]`` owns the next ``counts[k]`` rows.

        Every count must be >= 1 and user ids must be distinct. ``dim`` fixes
        ``D`` for an empty gallery (``vectors`` of shape ``(0, D)`` also does).
        """
        arr = cls._as_matrix(vectors, dim)
        users = [_check_user_id(u) for u in users]
        counts = [int(c) for c in counts]
        if len(users) != len(counts):
            raise ValueError("users and counts must have the same length")
        if len(set(users)) != len(users):
            raise ValueError("user ids must be distinct")
        if any(c < 1 for c in counts) or sum(counts) != arr.shape[0]:
            raise ValueError("counts must be >= 1 and add up to the number of rows")
        self = cls.__new__(cls)
        self._build(arr, np.arange(arr.shape[0], dtype=np.int64), users, counts, _block_rows)
        return self

    # -- construction -----------------------------------------------------------
    @staticmethod
    def _as_matrix(vectors: np.ndarray, dim: int | None) -> np.ndarray:
        arr = np.asarray(vectors)
        if arr.ndim != 2:
            raise ValueError("gallery vectors must be a 2-d (N, D) array")
        if dim is not None and arr.shape[1] != dim:
            raise ValueError("gallery vectors have the wrong dimension")
        if arr.shape[1] == 0:
            raise ValueError("gallery dimension must be at least 1")
        if not np.issubdtype(arr.dtype, np.floating):
            raise ValueError("gallery vectors must be floating point")
        return arr

    def _build(self, arr, order, users, counts, block_rows) -> None:
        n, d = arr.shape
        # Private, C-contiguous float32 copy in grouped-by-count order.
        counts_np = np.asarray(counts, dtype=np.int64)
        starts = np.zeros(len(counts), dtype=np.int64)
        if len(counts) > 1:
            np.cumsum(counts_np[:-1], out=starts[1:])
        ucounts = np.unique(counts_np)
        groups = []
        perm_parts = []
        row = 0
        for c in ucounts.tolist():
            cols = np.flatnonzero(counts_np == c)
            # rows of those users, user after user
            idx = (starts[cols][:, None] + np.arange(c)[None, :]).reshape(-1)
            perm_parts.append(order[idx])
            n_users = int(cols.size)
            # a contiguous column range lets the fold write straight into the output rows
            if n_users and cols[-1] - cols[0] + 1 == n_users:
                cols = slice(int(cols[0]), int(cols[-1]) + 1)
            groups.append((int(c), row, n_users, cols))
            row += n_users * c
        if perm_parts:
            perm = np.concatenate(perm_parts)
            if np.array_equal(perm, np.arange(n)) and arr.dtype == np.float32:
                vec = np.array(arr, dtype=np.float32, order="C", copy=True)
            else:
                vec = np.ascontiguousarray(np.take(arr, perm, axis=0), dtype=np.float32)
        else:
            vec = np.zeros((0, d), dtype=np.float32)
        if vec.size:
            if not np.isfinite(vec).all():
                raise ValueError("gallery vectors must be finite")
            norms = np.einsum("ij,ij->i", vec, vec, dtype=np.float64)
            if np.abs(norms - 1.0).max() > 2 * _NORM_TOL:
                raise ValueError("gallery vectors must have unit length")
        vec.setflags(write=False)
        self._dim = int(d)
        self._n = int(n)
        self._users = tuple(users)
        self._index = {u: k for k, u in enumerate(users)}
        self._vectors = vec
        self._groups = tuple(groups)
        self._block_rows = None if block_rows is None else max(1, int(block_rows))

    # -- properties -------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self._dim

    @property
    def users(self) -> tuple[str, ...]:
        """User ids, in the column order of :meth:`best_per_user`."""
        return self._users

    def __len__(self) -> int:
        """Number of templates (rows)."""
        return self._n

    @property
    def nbytes(self) -> int:
        return int(self._vectors.nbytes)

    def __repr__(self) -> str:
        return f"Gallery(templates={self._n}, users={len(self._users)}, dim={self._dim})"

    __str__ = __repr__

    def __reduce__(self):  # biometric data: never pickled
        raise TypeError("a gallery holds biometric data and cannot be pickled")

    # -- scoring ----------------------------------------------------------------
    def _check_probes(self, probes: np.ndarray) -> np.ndarray:
        p = np.asarray(probes)
        if p.ndim != 2 or p.shape[1] != self._dim:
            raise ValueError("probes must be a (B, D) array with the gallery's D")
        if not np.issubdtype(p.dtype, np.floating):
            raise ValueError("probes must be floating point")
        p = np.ascontiguousarray(p, dtype=np.float32)
        if not np.isfinite(p).all():
            raise ValueError("probes must be finite")
        if p.size:
            norms = np.einsum("ij,ij->i", p, p, dtype=np.float64)
            if np.abs(norms - 1.0).max() > 2 * _NORM_TOL:
                raise ValueError("probes must have unit length")
        return p

    def _rows_per_block(self, b: int) -> int:
        if self._block_rows is not None:
            return self._block_rows
        return int(min(_MAX_BLOCK_ROWS, max(_MIN_BLOCK_ROWS, _SCORE_BLOCK_ELEMS // max(b, 1))))

    def best_per_user(self, probes: np.ndarray) -> np.ndarray:
        """Per-user maximum cosine score for each probe: ``(B, D) -> (B, U)`` float32.

        Column ``k`` belongs to ``self.users[k]``. A 1-d probe ``(D,)`` is taken
        as ``B == 1`` and still gives a ``(1, U)`` result.

        THE RESULT IS BIOMETRIC-DERIVED DATA: for in-process evaluation only. It
        must never be logged, written, sent, or put into an exception message.
        """
        p = np.asarray(probes)
        if p.ndim == 1:
            p = p[None, :]
        p = self._check_probes(p)
        return self._best(p)

    def _best(self, p: np.ndarray) -> np.ndarray:
        b = p.shape[0]
        u = len(self._users)
        if u == 0 or b == 0:
            return np.empty((b, u), dtype=np.float32)
        block = self._rows_per_block(b)
        vec = self._vectors
        if b == 1:
            out1 = np.empty(u, dtype=np.float32)
            q = p[0]
            for c, row0, n_users, cols in self._groups:
                self._fold_group_1(vec, q, c, row0, n_users, cols, block, out1)
            return out1[None, :]
        out = np.empty((b, u), dtype=np.float32)
        pt = p.T  # (D, B), F-order view: BLAS takes the transpose for free
        s_buf = np.empty(max(block, 1) * b, dtype=np.float32)  # one score block, reused
        m_buf = np.empty(max(block, 1) * b, dtype=np.float32)  # its per-user max, reused
        for c, row0, n_users, cols in self._groups:
            self._fold_group(vec, pt, c, row0, n_users, cols, block, out, s_buf, m_buf)
        return out

    @staticmethod
    def _fold_group_1(vec, q, c, row0, n_users, cols, block, out1) -> None:
        """B == 1: matrix-vector products (memory-bandwidth bound)."""
        if c > block:  # huge segments: split each user's rows, running max
            for k in range(n_users):
                r = row0 + k * c
                best = -np.inf
                for s in range(r, r + c, block):
                    e = min(s + block, r + c)
                    best = max(best, float((vec[s:e] @ q).max()))
                out1[_col(cols, k)] = best
            return
        per = max(1, block // c)  # whole users per block
        for k0 in range(0, n_users, per):
            k1 = min(k0 + per, n_users)
            dst = _cols(cols, k0, k1)
            s = vec[row0 + k0 * c : row0 + k1 * c] @ q  # (rows,)
            if c == 1:
                out1[dst] = s
                continue
            s2 = s.reshape(k1 - k0, c)
            if c <= _LOOP_FOLD_MAX_C and isinstance(dst, slice):
                m = out1[dst]
                np.maximum(s2[:, 0], s2[:, 1], out=m)
                for j in range(2, c):
                    np.maximum(m, s2[:, j], out=m)
            elif c <= _LOOP_FOLD_MAX_C:
                m = np.maximum(s2[:, 0], s2[:, 1])
                for j in range(2, c):
                    np.maximum(m, s2[:, j], out=m)
                out1[dst] = m
            else:
                out1[dst] = s2.max(axis=1)

    @staticmethod
    def _fold_group(vec, pt, c, row0, n_users, cols, block, out, s_buf, m_buf) -> None:
        """B > 1: one GEMM per block of whole users into a cache-resident buffer, then the
        fused per-user max, written as (B, users) straight into the output."""
        b = pt.shape[1]
        if c > block:
            for k in range(n_users):
                r = row0 + k * c
                best = np.full(b, -np.inf, dtype=np.float32)
                for s in range(r, r + c, block):
                    e = min(s + block, r + c)
                    np.maximum(best, (vec[s:e] @ pt).max(axis=0), out=best)
                out[:, _col(cols, k)] = best
            return
        per = max(1, block // c)
        for k0 in range(0, n_users, per):
            k1 = min(k0 + per, n_users)
            n = k1 - k0
            dst = _cols(cols, k0, k1)
            s = s_buf[: n * c * b].reshape(n * c, b)
            np.matmul(vec[row0 + k0 * c : row0 + k1 * c], pt, out=s)  # (rows, B), C-order
            if c == 1:
                out[:, dst] = s.T
                continue
            s3 = s.reshape(n, c, b)
            m = m_buf[: n * b].reshape(n, b)
            if c <= _LOOP_FOLD_MAX_C:
                np.maximum(s3[:, 0, :], s3[:, 1, :], out=m)
                for j in range(2, c):
                    np.maximum(m, s3[:, j, :], out=m)
            else:
                np.max(s3, axis=1, out=m)
            out[:, dst] = m.T

    def matches(self, probe: np.ndarray, threshold: float, user: str | None = None) -> bool:
        """Yes or no: does ``probe`` (a unit ``(D,)`` vector) match?

        ``user is None``: ``True`` iff some enrolled user's best score is
        ``>= threshold``. ``user`` given: ``True`` iff *that* user's best score is
        ``>= threshold``; an unknown user gives ``False``. In every case the
        whole gallery is scored first (no early exit), so the work done does not
        depend on whether, or where, the probe matched. An empty gallery gives
        ``False``. ``threshold`` must be a finite float.
        """
        p = np.asarray(probe)
        if p.ndim != 1:
            raise ValueError("matches() takes one probe, a (D,) vector")
        thr = float(threshold)
        if not math.isfinite(thr):
            raise ValueError("threshold must be finite")
        p = self._check_probes(p[None, :])
        scores = self._best(p)[0]  # (U,)
        hits = scores >= np.float32(thr)
        n_hits = int(np.count_nonzero(hits))  # scans all of it
        if user is None:
            return n_hits > 0
        k = self._index.get(user, -1)
        return bool(hits[k]) if k >= 0 else False
