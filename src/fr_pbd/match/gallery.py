"""The vectorised matcher: a gallery of unit-length templates and a fused per-user max.

Layout
------
All templates live in one C-contiguous ``float32`` array of shape ``(N, D)``,
owned by the :class:`Gallery` and made read-only. Internally the rows are
grouped by *template count per user* (every user with exactly ``c`` templates
sits in one region), and each region is cut into chunks of whole users, about
4096 rows each. Inside a chunk of ``n`` users the rows are *template-major*:
row ``j * n + i`` is template ``j`` of the chunk's user ``i``. So the scores of
a chunk, computed as ``chunk @ P.T`` (shape ``(c * n, B)``), reshape for free to
``(c, n * B)``, and the per-user max is ``c - 1`` element-wise ``np.maximum``
calls over contiguous blocks (below). (A ragged ``np.maximum.reduceat`` runs one
tiny segment at a time and is about 20x slower.) The output column order is the order given by the caller
(``Gallery.users``), independent of the internal layout.

Scoring
-------
The work is cut into *spans* of whole chunks. ``B > 1``: one GEMM per span,
``vec_span @ P.T``, into a reused ``(rows, B)`` score block, then the fold:
the block reshapes for free to ``(nchunks, c, n * B)``, the per-user max is
``c - 1`` ``np.maximum`` over contiguous blocks of ``n * B`` floats, and its
``(n, B)`` result is written transposed into ``out[:, users]``, while the block
is still in L2. ``B == 1``: one GEMV (``np.matmul(..., out=)`` into a reused
buffer) per span of about ``_GEMV_ROWS`` rows, then the same fold;
memory-bandwidth bound.

Threads, ``B > 1`` only: above ``_PAR_MIN_WORK`` multiply-adds the spans are
handed out one at a time to one Python thread per usable core (at most
``_MAX_WORKERS``); each thread (numpy releases the GIL in BLAS calls and
ufuncs) has its own buffers and 2 MiB score blocks (``_SPAN_FLOATS_PAR``, in
that core's L2 while folded), and numpy's BLAS is set to one thread for the
duration (through threadpoolctl; restored after; a module lock makes concurrent
callers take turns). Why: no span waits for a fork/join of OpenBLAS's threads,
and a thread slowed by another process takes fewer spans. ``B == 1`` keeps
OpenBLAS's own threads, whose two-thread GEMV reads about twice as fast as one.
With one worker (small work, ``B == 1``, or no OpenBLAS next to numpy) the
blocks are 4 MiB (``_SPAN_FLOATS``: fewer BLAS calls, fewer fork/joins).
The measurements behind these choices, and the variants that were tried and
dropped, are in docs/performance.md ("Matcher: the layout and threads, as measured").

Nothing ``N x B``-sized is ever allocated: the largest temporaries are one
score block and one fold block per thread, the output is ``B x U``.

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
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np

__all__ = ["Gallery"]

# Rows per chunk of whole users (layout), and rows per GEMV call when B == 1.
_CHUNK_ROWS = 4096
_GEMV_ROWS = 1 << 18
# Floats in one span's score block when B > 1 (whole chunks, at least one): with BLAS's own threads
# (fewer, larger calls: each is a fork/join of BLAS's threads), and with one thread per core (kept in
# that core's L2 while it is folded).
_SPAN_FLOATS = 1 << 20
_SPAN_FLOATS_PAR = 1 << 19
# Above this many templates per user, fold with one np.max(axis=1) call instead of c-1 np.maximum.
_LOOP_FOLD_MAX_C = 32
_NORM_TOL = 1e-3
# Split the work over one thread per core (each with a one-thread BLAS) above this many multiply-adds,
# for B >= _PAR_MIN_B only (B == 1 stays on OpenBLAS's own threads: see the module docstring).
_PAR_MIN_WORK = 1 << 26
_PAR_MIN_B = 2
_MAX_WORKERS = 8


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


def _span_1(vec, q, group, k0, nchunks, n, out1, s_buf) -> None:
    """B == 1: one GEMV over ``nchunks`` chunks into the reused buffer, folded into ``out1`` (U,)."""
    c, row0, _, cols, _ = group
    r0 = row0 + k0 * c
    s = s_buf[: nchunks * c * n]
    np.matmul(vec[r0 : r0 + s.size], q, out=s)
    dst = _cols(cols, k0, k0 + nchunks * n)
    if c == 1:
        out1[dst] = s
        return
    s3 = s.reshape(nchunks, c, n)
    if isinstance(dst, slice):
        _fold(s3, out1[dst].reshape(nchunks, n), c)
    else:
        o = np.empty((nchunks, n), np.float32)
        _fold(s3, o, c)
        out1[dst] = o.reshape(-1)


def _span(vec, p, group, k0, nchunks, n, out, s_buf, o_buf) -> None:
    """B > 1: one GEMM ``vec_span @ P.T`` into the reused (rows, B) buffer, per-user max, transposed into ``out``.

    Rows ``(chunk, template j, user i)``, so the scores reshape for free to ``(nchunks, c, n * B)``
    and the fold is ``c - 1`` ``np.maximum`` over contiguous blocks of ``n * B`` floats, giving
    (user, probe) rows that are written into ``out[:, users]`` transposed.
    """
    c, row0, _, cols, _ = group
    b = p.shape[0]
    r0 = row0 + k0 * c
    rows = nchunks * c * n
    s = s_buf[: rows * b].reshape(rows, b)
    np.matmul(vec[r0 : r0 + rows], p.T, out=s)
    dst = _cols(cols, k0, k0 + nchunks * n)
    if c == 1:
        out[:, dst] = s.T
        return
    o = o_buf[: nchunks * n * b].reshape(nchunks, n * b)
    _fold(s.reshape(nchunks, c, n * b), o, c)
    out[:, dst] = o.reshape(nchunks * n, b).T


class _Feed:
    """Spans handed out one at a time to the threads that ask (so a thread slowed by another
    process on its core simply takes fewer spans); stops handing out after a failure."""

    def __init__(self, tasks) -> None:
        self._tasks = tasks
        self._next = 0
        self._lock = threading.Lock()

    def take(self):
        with self._lock:
            if self._next >= len(self._tasks):
                return None
            t = self._tasks[self._next]
            self._next += 1
            return t

    def stop(self) -> None:
        with self._lock:
            self._next = len(self._tasks)


# -- threads -------------------------------------------------------------------------
class _Blas:
    """numpy's BLAS thread count (get/set), through threadpoolctl, as ``fr_pbd.runtime.one_blas_thread``.

    threadpoolctl finds whichever BLAS numpy was built with (scipy-openblas, OpenBLAS,
    MKL, BLIS) on x86 and aarch64; with none found, ``get`` and ``set`` are None and the
    threads path is off.
    """

    def __init__(self) -> None:
        self.get = self.set = None
        try:
            from threadpoolctl import ThreadpoolController

            libs = ThreadpoolController().select(user_api="blas").lib_controllers
        except Exception:  # noqa: BLE001 - no usable BLAS controller: the threads path stays off
            return
        if libs:
            self.get = lambda: max(lib.num_threads for lib in libs)
            self.set = lambda n: [lib.set_num_threads(n) for lib in libs] and None


_blas: _Blas | None = None
_blas_lock = threading.Lock()
_pool_lock = threading.Lock()
_executor: tuple[int, int, ThreadPoolExecutor] | None = None  # (pid, size, pool)


def _blas_handle() -> _Blas:
    global _blas
    if _blas is None:
        _blas = _Blas()
    return _blas


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _workers(b: int, flop: int) -> int:
    """Parts to run in parallel for ``b`` probes, ``flop`` multiply-adds: 1 (this thread, BLAS's own threads) or one per core."""
    if b < _PAR_MIN_B or flop < _PAR_MIN_WORK or _MAX_WORKERS <= 1:
        return 1
    if _blas_handle().set is None:
        return 1
    return max(1, min(_cores(), _MAX_WORKERS))


def _pool(n: int) -> ThreadPoolExecutor:
    """A pool of at least ``n`` threads, made again in a forked child (its threads do not survive a fork)."""
    global _executor
    with _pool_lock:
        if _executor is None or _executor[0] != os.getpid() or _executor[1] < n:
            if _executor is not None and _executor[0] == os.getpid():
                _executor[2].shutdown(wait=False)  # idle: a smaller pool made earlier
            _executor = (os.getpid(), n, ThreadPoolExecutor(max_workers=n, thread_name_prefix="fr-pbd-match"))
        return _executor[2]


@contextmanager
def _single_threaded_blas():
    """OpenBLAS at one thread for the duration (process-wide: serialised by a lock, restored after)."""
    blas = _blas_handle()
    with _blas_lock:
        prev = int(blas.get())
        blas.set(1)
        try:
            yield
        finally:
            blas.set(prev)


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
        workers = _workers(b, b * self._n * self._dim)
        tasks, rows = self._tasks(b, _SPAN_FLOATS if workers == 1 else _SPAN_FLOATS_PAR)
        out = np.empty((b, u), dtype=np.float32)
        flat = out.reshape(-1) if b == 1 else out  # B == 1: the fold writes into the (U,) row
        if workers == 1 or len(tasks) < 2:
            self._run(p, tasks, rows, flat)
            return out
        feed = _Feed(tasks)

        def part():
            try:
                self._run(p, iter(feed.take, None), rows, flat)
            except BaseException:
                feed.stop()
                raise

        with _single_threaded_blas():  # one BLAS thread per Python thread, one Python thread per core
            futs = [_pool(workers - 1).submit(part) for _ in range(workers - 1)]
            try:
                part()
            finally:
                for f in futs:  # always wait: they write into ``out``, and BLAS's threads are restored after
                    f.exception()
            for f in futs:
                f.result()
        return out

    def _tasks(self, b: int, span_floats: int):
        """The work as a list of spans ``(group, k0, nchunks, n)`` plus the largest span's row count.

        A span is ``nchunks`` full chunks of ``n`` users from user ``k0`` of a group (or the group's
        last, partial chunk, ``nchunks == 1``). ``n == 0`` marks one user bigger than a chunk
        (``k0`` is that user). B == 1: about _GEMV_ROWS rows a span; B > 1: a score block of about
        ``span_floats`` floats.
        """
        target = _GEMV_ROWS if b == 1 else max(1, span_floats // b)
        tasks = []
        rows = 1
        for g in self._groups:
            c, _, n_users, _, cu = g
            if c > self._chunk_rows:
                tasks.extend((g, k, 1, 0) for k in range(n_users))
                rows = max(rows, min(c, self._chunk_rows if b > 1 else max(self._chunk_rows, _GEMV_ROWS)))
                continue
            nf = n_users // cu
            kb = max(1, target // (c * cu))  # full chunks per span
            tasks.extend((g, k0, min(kb, nf - k0 // cu), cu) for k0 in range(0, nf * cu, kb * cu))
            if n_users > nf * cu:
                tasks.append((g, nf * cu, 1, n_users - nf * cu))
            rows = max(rows, c * cu * min(kb, max(nf, 1)))
        return tasks, rows

    def _run(self, p, tasks, rows, out) -> None:
        """Score and fold ``tasks`` into ``out``, with this thread's own score buffers."""
        vec = self._vectors
        b = p.shape[0]
        s_buf = np.empty(b * rows, dtype=np.float32)
        if b == 1:
            q = p[0]
            for g, k0, nchunks, n in tasks:
                if n == 0:
                    self._huge_user_1(vec, q, g, k0, out, s_buf)
                else:
                    _span_1(vec, q, g, k0, nchunks, n, out, s_buf)
            return
        o_buf = np.empty(b * rows, dtype=np.float32)
        for g, k0, nchunks, n in tasks:
            if n == 0:
                self._huge_user(vec, p, g, k0, out)
            else:
                _span(vec, p, g, k0, nchunks, n, out, s_buf, o_buf)

    def _huge_user_1(self, vec, q, group, k, out1, s_buf) -> None:
        """B == 1, one user with more templates than a chunk: running max over sub-blocks."""
        c, row0, _, cols, _ = group
        r = row0 + k * c
        step = s_buf.size
        best = -np.inf
        for s0 in range(r, r + c, step):
            s = s_buf[: min(step, r + c - s0)]
            np.matmul(vec[s0 : s0 + s.size], q, out=s)
            best = max(best, float(s.max()))
        out1[_col(cols, k)] = best

    def _huge_user(self, vec, p, group, k, out) -> None:
        """B > 1, one user with more templates than a chunk: running max over sub-blocks."""
        c, row0, _, cols, _ = group
        r = row0 + k * c
        step = self._chunk_rows
        best = np.full(p.shape[0], -np.inf, dtype=np.float32)
        for s0 in range(r, r + c, step):
            np.maximum(best, (p @ vec[s0 : min(s0 + step, r + c)].T).max(axis=1), out=best)
        out[:, _col(cols, k)] = best

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
