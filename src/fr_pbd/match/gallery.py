"""The vectorised matcher: a gallery of unit-length templates and a fused per-user max.

Layout
------
All templates live in one C-contiguous ``float32`` array of shape ``(N, D)``,
owned by the :class:`Gallery` and made read-only. Internally the rows are
grouped by *template count per user* (every user with exactly ``c`` templates
sits in one region), and each region is cut into chunks of whole users, about
4096 rows each. Inside a chunk of ``n`` users the rows are *template-major*:
row ``j * n + i`` is template ``j`` of the chunk's user ``i``. So the scores of
a chunk, computed as ``P @ chunk.T`` (shape ``(B, c * n)``), reshape for free to
``(B, c, n)``, and the per-user max is ``c - 1`` element-wise ``np.maximum``
calls over contiguous ``(B, n)`` slices, written straight into the output. (A
ragged ``np.maximum.reduceat`` runs one tiny segment at a time and is about 20x
slower.) The output column order is the order given by the caller
(``Gallery.users``), independent of the internal layout.

Scoring a batch of probes ``P`` (``B x D``) with ``B > 1`` costs one GEMM per
*span* of whole chunks (up to 65536 rows, fewer when ``B`` is large so that the
reused score buffer stays at most 16 MiB), then the fold of every chunk in the
span at once. One GEMM per 4096-row chunk reached 0.44 of numpy's large GEMM
rate at N = 10**6, B = 64 (K = 128 is small: each call's packing and thread
start dominate); spans of 16 chunks amortise them (docs/performance.md). With
``B == 1`` it is one GEMV per 16 chunks (about 65536 rows), which is
memory-bandwidth bound. Nothing ``N x B``-sized is ever allocated: the largest
temporary is one score span, the output is ``B x U``.

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

# Rows per chunk of whole users (layout), and rows per GEMV call when B == 1.
_CHUNK_ROWS = 4096
_GEMV_ROWS = 65536
# Rows per GEMM call when B > 1: up to _GEMV_ROWS, with a score buffer of at most this many floats.
_SPAN_FLOATS = 1 << 22
# Above this many templates per user, fold with one np.max(axis=1) call instead of c-1 np.maximum.
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


def _fold(s3: np.ndarray, o: np.ndarray, c: int) -> None:
    """o[..., i] = max_j s3[..., j, i] for a (X, c, n) score view; slices over i are contiguous."""
    if c <= _LOOP_FOLD_MAX_C:
        np.maximum(s3[:, 0, :], s3[:, 1, :], out=o)
        for j in range(2, c):
            np.maximum(o, s3[:, j, :], out=o)
    else:
        np.max(s3, axis=1, out=o)


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

    __slots__ = ("_dim", "_users", "_index", "_vectors", "_groups", "_n", "_chunk_rows")

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
        chunk_rows = _CHUNK_ROWS if block_rows is None else max(1, int(block_rows))
        groups = []
        perm_parts = []
        row = 0
        for c in ucounts.tolist():
            cols = np.flatnonzero(counts_np == c)
            n_users = int(cols.size)
            cu = max(1, chunk_rows // c)  # users per chunk
            ust = starts[cols]
            nf = n_users // cu
            j = np.arange(c, dtype=np.int64)
            # template-major inside each chunk: (chunk, template j, user i)
            perm_parts.append(order[(ust[: nf * cu].reshape(nf, 1, cu) + j.reshape(1, c, 1)).reshape(-1)])
            if n_users > nf * cu:
                last = ust[nf * cu :]
                perm_parts.append(order[(last.reshape(1, 1, -1) + j.reshape(1, c, 1)).reshape(-1)])
            # a contiguous column range lets the fold write straight into the output
            if n_users and cols[-1] - cols[0] + 1 == n_users:
                cols = slice(int(cols[0]), int(cols[-1]) + 1)
            groups.append((int(c), row, n_users, cols, cu))
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
        self._chunk_rows = chunk_rows

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
        vec = self._vectors
        if b == 1:
            out1 = np.empty(u, dtype=np.float32)
            for g in self._groups:
                self._score_group_1(vec, p[0], g, out1)
            return out1[None, :]
        out = np.empty((b, u), dtype=np.float32)
        span = max(self._chunk_rows, min(_GEMV_ROWS, _SPAN_FLOATS // b))  # rows per GEMM call
        rows = max(c * cu * max(1, span // (c * cu)) if c <= self._chunk_rows else 1
                   for c, _, _, _, cu in self._groups)
        s_buf = np.empty(b * rows, dtype=np.float32)  # one span's scores, reused
        for g in self._groups:
            self._score_group(vec, p, g, out, s_buf)
        return out

    def _score_group_1(self, vec, q, group, out1) -> None:
        """B == 1: matrix-vector products over many chunks at once (memory-bandwidth bound)."""
        c, row0, n_users, cols, cu = group
        if c > self._chunk_rows:  # huge users: running max over sub-blocks
            step = max(self._chunk_rows, _GEMV_ROWS)
            for k in range(n_users):
                r = row0 + k * c
                best = max(float((vec[s : min(s + step, r + c)] @ q).max()) for s in range(r, r + c, step))
                out1[_col(cols, k)] = best
            return
        nf = n_users // cu
        kb = max(1, _GEMV_ROWS // (c * cu))  # full chunks per GEMV call
        spans = [(k0, min(kb, nf - k0 // cu), cu) for k0 in range(0, nf * cu, kb * cu)]
        if n_users > nf * cu:
            spans.append((nf * cu, 1, n_users - nf * cu))
        for k0, nchunks, n in spans:
            r0 = row0 + k0 * c
            s = vec[r0 : r0 + nchunks * c * n] @ q  # (nchunks * c * n,)
            dst = _cols(cols, k0, k0 + nchunks * n)
            if c == 1:
                out1[dst] = s
                continue
            s3 = s.reshape(nchunks, c, n)
            o = out1[dst].reshape(nchunks, n) if isinstance(dst, slice) else np.empty((nchunks, n), np.float32)
            _fold(s3, o, c)
            if not isinstance(dst, slice):
                out1[dst] = o.reshape(-1)

    def _score_group(self, vec, p, group, out, s_buf) -> None:
        """B > 1: one GEMM per chunk into a reused buffer, fused per-user max into the output."""
        c, row0, n_users, cols, cu = group
        b = p.shape[0]
        if c > self._chunk_rows:  # huge users: running max over sub-blocks
            step = self._chunk_rows
            for k in range(n_users):
                r = row0 + k * c
                best = np.full(b, -np.inf, dtype=np.float32)
                for s0 in range(r, r + c, step):
                    np.maximum(best, (p @ vec[s0 : min(s0 + step, r + c)].T).max(axis=1), out=best)
                out[:, _col(cols, k)] = best
            return
        nf = n_users // cu
        kb = max(1, (s_buf.size // b) // (c * cu))  # full chunks per GEMM call
        spans = [(k0, min(kb, nf - k0 // cu), cu) for k0 in range(0, nf * cu, kb * cu)]
        if n_users > nf * cu:
            spans.append((nf * cu, 1, n_users - nf * cu))
        for k0, nchunks, n in spans:
            r0 = row0 + k0 * c
            rows = nchunks * c * n
            s = s_buf[: b * rows].reshape(b, rows)
            np.matmul(p, vec[r0 : r0 + rows].T, out=s)  # (B, rows): the faster GEMM orientation here
            dst = _cols(cols, k0, k0 + nchunks * n)
            if c == 1:
                out[:, dst] = s
                continue
            if nchunks == 1 and isinstance(dst, slice):
                _fold(s.reshape(b, c, n), out[:, dst], c)
                continue
            o = np.empty((b * nchunks, n), np.float32)  # (probe, chunk) rows; users of a chunk along a row
            _fold(s.reshape(b * nchunks, c, n), o, c)
            out[:, dst] = o.reshape(b, nchunks * n)

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
