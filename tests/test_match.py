"""The matcher: equals a naive reference; blocks, B=1/B>1, empty gallery, no early exit."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fr_pbd.match import Gallery
from fr_pbd.match import gallery as gallery_mod


def unit_rows(rng, n, d):
    x = rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def naive(vectors, labels, users, probes):
    """Reference: a Python loop over templates, float64."""
    out = np.full((len(probes), len(users)), -np.inf)
    col = {u: k for k, u in enumerate(users)}
    for b, p in enumerate(probes.astype(np.float64)):
        for v, u in zip(vectors.astype(np.float64), labels):
            out[b, col[u]] = max(out[b, col[u]], float(v @ p))
    return out


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    counts=st.lists(st.integers(1, 40), min_size=1, max_size=25),
    d=st.sampled_from([1, 2, 3, 8, 17, 64]),
    b=st.sampled_from([1, 2, 3, 7, 64]),
    block=st.sampled_from([None, 1, 2, 3, 5, 16, 33]),
    shuffle=st.booleans(),
)
def test_equals_naive_reference(seed, counts, d, b, block, shuffle):
    rng = np.random.default_rng(seed)
    n = sum(counts)
    vec = unit_rows(rng, n, d)
    labels = [f"user{k}" for k, c in enumerate(counts) for _ in range(c)]
    if shuffle:
        perm = rng.permutation(n)
        vec, labels = vec[perm], [labels[i] for i in perm]
    g = Gallery(vec, labels, _block_rows=block)
    probes = unit_rows(rng, b, d)
    got = g.best_per_user(probes)
    assert got.shape == (b, len(counts)) and got.dtype == np.float32 and got.flags.c_contiguous
    ref = naive(vec, labels, g.users, probes)
    np.testing.assert_allclose(got, ref, atol=2e-6, rtol=0)
    # B == 1 path gives the same as the B > 1 path, row by row
    for k in range(min(b, 3)):
        np.testing.assert_allclose(g.best_per_user(probes[k]), got[k : k + 1], atol=2e-6, rtol=0)


def test_users_order_is_first_appearance_and_from_counts_agrees():
    rng = np.random.default_rng(0)
    vec = unit_rows(rng, 6, 4)
    g = Gallery(vec, ["z", "a", "z", "m", "a", "z"])
    assert g.users == ("z", "a", "m") and len(g) == 6
    order = [0, 2, 5, 1, 4, 3]
    g2 = Gallery.from_counts(vec[order], ["z", "a", "m"], [3, 2, 1])
    p = unit_rows(rng, 5, 4)
    np.testing.assert_array_equal(g.best_per_user(p), g2.best_per_user(p))


@pytest.mark.parametrize("b", [1, 4, 64])
@pytest.mark.parametrize("c", [1, 5, 33, 100])  # small, loop-fold, reshape-fold, and c > block
def test_block_boundaries(b, c):
    rng = np.random.default_rng(c * 100 + b)
    n_users = 37
    vec = unit_rows(rng, n_users * c, 16)
    users = [f"u{k}" for k in range(n_users)]
    probes = unit_rows(rng, b, 16)
    ref = naive(vec, [u for u in users for _ in range(c)], users, probes)
    for block in (None, 1, c - 1 or 1, c, c + 1, 2 * c, 7 * c + 3, 10_000):
        g = Gallery.from_counts(vec, users, [c] * n_users, _block_rows=block)
        np.testing.assert_allclose(g.best_per_user(probes), ref, atol=2e-6, rtol=0)


def test_large_gallery_uses_default_blocks():
    rng = np.random.default_rng(5)
    counts = rng.integers(1, 9, size=40_000)
    n = int(counts.sum())
    vec = unit_rows(rng, n, 32)
    users = [f"u{k}" for k in range(len(counts))]
    g = Gallery.from_counts(vec, users, counts)
    probes = unit_rows(rng, 3, 32)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    ref = np.maximum.reduceat(vec.astype(np.float64) @ probes.T.astype(np.float64), starts, axis=0).T
    np.testing.assert_allclose(g.best_per_user(probes), ref, atol=2e-6, rtol=0)
    np.testing.assert_allclose(g.best_per_user(probes[:1]), ref[:1], atol=2e-6, rtol=0)


def test_matches_semantics():
    rng = np.random.default_rng(1)
    vec = unit_rows(rng, 9, 8)
    g = Gallery.from_counts(vec, ["a", "b", "c"], [2, 3, 4])
    probe = vec[4]  # one of b's templates
    assert g.matches(probe, 0.999) is True
    assert g.matches(probe, 0.999, user="b") is True
    assert g.matches(probe, 0.999, user="a") is False
    assert g.matches(probe, 0.999, user="nobody") is False
    assert g.matches(probe, 1.5) is False
    assert g.matches(probe, -1.5) is True
    with pytest.raises(ValueError):
        g.matches(probe, float("nan"))
    with pytest.raises(ValueError):
        g.matches(vec[:2], 0.5)


def test_matches_does_the_same_work_whatever_the_outcome(monkeypatch):
    """No early exit: the whole gallery is scored (same BLAS calls) for a hit, a miss, a claimed user."""
    rng = np.random.default_rng(2)
    vec = unit_rows(rng, 50, 8)
    g = Gallery.from_counts(vec, [f"u{k}" for k in range(10)], [5] * 10, _block_rows=10)
    calls = []
    real = Gallery._best

    def spy(self, p):
        out = real(self, p)
        calls.append(out.shape)
        return out

    monkeypatch.setattr(Gallery, "_best", spy)
    for probe, user in ((vec[0], None), (vec[49], None), (unit_rows(rng, 1, 8)[0], None), (vec[0], "u9"), (vec[0], "x")):
        g.matches(probe, 0.9, user=user)
    assert calls == [(1, 10)] * 5


def test_empty_gallery():
    g = Gallery(np.zeros((0, 8), np.float32), [])
    assert g.users == () and len(g) == 0
    rng = np.random.default_rng(0)
    assert g.best_per_user(unit_rows(rng, 3, 8)).shape == (3, 0)
    assert g.matches(unit_rows(rng, 1, 8)[0], -1.0) is False
    assert g.matches(unit_rows(rng, 1, 8)[0], -1.0, user="a") is False
    g2 = Gallery.from_counts(np.zeros((0, 8), np.float32), [], [], dim=8)
    assert g2.best_per_user(unit_rows(rng, 1, 8)).shape == (1, 0)


def test_input_validation():
    rng = np.random.default_rng(0)
    vec = unit_rows(rng, 4, 8)
    with pytest.raises(ValueError):
        Gallery(vec, ["a", "b"])  # wrong label count
    with pytest.raises(ValueError):
        Gallery(vec * 2, ["a"] * 4)  # not unit length
    bad = vec.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError):
        Gallery(bad, ["a"] * 4)
    with pytest.raises(TypeError):
        Gallery(vec, ["a", "b", 3, "c"])
    with pytest.raises(ValueError):
        Gallery.from_counts(vec, ["a", "a"], [2, 2])
    with pytest.raises(ValueError):
        Gallery.from_counts(vec, ["a", "b"], [4, 0])
    g = Gallery(vec, list("aabb"))
    with pytest.raises(ValueError):
        g.best_per_user(unit_rows(rng, 2, 7))
    with pytest.raises(ValueError):
        g.best_per_user(2 * unit_rows(rng, 2, 8))


def test_gallery_is_private_copy_readonly_unpicklable():
    rng = np.random.default_rng(0)
    vec = unit_rows(rng, 4, 8)
    g = Gallery(vec, list("aabb"))
    first = vec[0].copy()
    before = g.best_per_user(first)
    vec[:] = unit_rows(rng, 4, 8)  # the caller mutates its array: the gallery is unaffected
    np.testing.assert_array_equal(g.best_per_user(first), before)
    assert before[0, 0] > 0.9999
    assert not g._vectors.flags.writeable and g._vectors.flags.c_contiguous and g._vectors.dtype == np.float32
    assert "0." not in repr(g)
    with pytest.raises(TypeError):
        pickle.dumps(g)


# -- the matcher's second pass: spans sized for L2, (rows, B) scores, one thread per core ---------------
class _FakeBlas:
    """Stands in for OpenBLAS's thread setter where numpy has none (the parallel path still runs)."""

    def __init__(self):
        self.n = 3
        self.calls = []

    def get(self):
        return self.n

    def set(self, n):
        self.calls.append(n)
        self.n = n


def _force_parallel(monkeypatch, workers, fake=False):
    monkeypatch.setattr(gallery_mod, "_PAR_MIN_WORK", 0)
    monkeypatch.setattr(gallery_mod, "_PAR_MIN_B", 1)
    monkeypatch.setattr(gallery_mod, "_MAX_WORKERS", workers)
    monkeypatch.setattr(gallery_mod, "_cores", lambda: workers)
    if fake or gallery_mod._blas_handle().set is None:
        fb = _FakeBlas()
        monkeypatch.setattr(gallery_mod, "_blas_handle", lambda: fb)
        return fb
    return None


def _ragged(rng, n_users, d, max_c):
    counts = rng.integers(1, max_c + 1, size=n_users)
    vec = unit_rows(rng, int(counts.sum()), d)
    users = [f"u{k}" for k in range(n_users)]
    return vec, users, [int(c) for c in counts]


def _reduceat_ref(vec, counts, probes):
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    return np.maximum.reduceat(vec.astype(np.float64) @ probes.T.astype(np.float64), starts, axis=0).T


@pytest.mark.parametrize("b", [1, 2, 63, 64, 65])
@pytest.mark.parametrize("span_floats,gemv_rows", [(1, 1), (64, 7), (1000, 100), (1 << 18, 65536)])
def test_span_boundaries_ragged_and_batch_sizes(monkeypatch, b, span_floats, gemv_rows):
    """Spans of one chunk up to many, ragged users, B around 64: equal to the float64 reference."""
    monkeypatch.setattr(gallery_mod, "_SPAN_FLOATS", span_floats)
    monkeypatch.setattr(gallery_mod, "_SPAN_FLOATS_PAR", span_floats)
    monkeypatch.setattr(gallery_mod, "_GEMV_ROWS", gemv_rows)
    rng = np.random.default_rng(b * 7 + span_floats)
    vec, users, counts = _ragged(rng, 300, 24, 9)
    probes = unit_rows(rng, b, 24)
    ref = _reduceat_ref(vec, counts, probes)
    for block in (None, 1, 5, 64, 100):
        g = Gallery.from_counts(vec, users, counts, _block_rows=block)
        got = g.best_per_user(probes)
        assert got.shape == (b, len(users)) and got.dtype == np.float32 and got.flags.c_contiguous
        np.testing.assert_allclose(got, ref, atol=2e-6, rtol=0)


@pytest.mark.parametrize("workers", [2, 3, 8])
@pytest.mark.parametrize("b", [1, 2, 63, 64, 65])
def test_parallel_path_equals_single_path_exactly(monkeypatch, workers, b):
    """One part per core (each a one-thread BLAS) gives the same bits as one thread with BLAS's threads."""
    rng = np.random.default_rng(workers * 100 + b)
    vec, users, counts = _ragged(rng, 2000, 32, 12)
    counts[7] = 700  # one user bigger than a chunk (block 512 below)
    vec = unit_rows(rng, sum(counts), 32)
    labels = [u for u, c in zip(users, counts) for _ in range(c)]
    perm = rng.permutation(len(labels))  # users' rows interleaved: non-contiguous output columns
    probes = unit_rows(rng, b, 32)
    for g in (Gallery.from_counts(vec, users, counts, _block_rows=512),
              Gallery(vec[perm], [labels[i] for i in perm], _block_rows=64)):
        monkeypatch.setattr(gallery_mod, "_MAX_WORKERS", 1)
        single = g.best_per_user(probes)
        with monkeypatch.context() as m:
            _force_parallel(m, workers)
            m.setattr(gallery_mod, "_SPAN_FLOATS", 4096)
            m.setattr(gallery_mod, "_SPAN_FLOATS_PAR", 4096)
            m.setattr(gallery_mod, "_GEMV_ROWS", 1000)
            par = g.best_per_user(probes)
            np.testing.assert_array_equal(par, g.best_per_user(probes))
        monkeypatch.setattr(gallery_mod, "_SPAN_FLOATS", 4096)
        monkeypatch.setattr(gallery_mod, "_SPAN_FLOATS_PAR", 4096)
        monkeypatch.setattr(gallery_mod, "_GEMV_ROWS", 1000)
        np.testing.assert_array_equal(par, g.best_per_user(probes))  # same spans, one thread
        np.testing.assert_allclose(par, single, atol=2e-6, rtol=0)  # other spans: GEMV/GEMM per span differ
        order = {u: k for k, u in enumerate(g.users)}
        col = [order[u] for u in users]
        np.testing.assert_allclose(par[:, col], _reduceat_ref(vec, counts, probes), atol=2e-6, rtol=0)
        monkeypatch.undo()


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    counts=st.lists(st.integers(1, 30), min_size=1, max_size=60),
    b=st.sampled_from([1, 2, 5, 64, 65]),
    block=st.sampled_from([None, 1, 4, 16, 37]),
    span_floats=st.sampled_from([1, 100, 5000]),
    workers=st.sampled_from([1, 2, 3]),
)
def test_parallel_equals_naive_reference(seed, counts, b, block, span_floats, workers):
    rng = np.random.default_rng(seed)
    d = 16
    vec = unit_rows(rng, sum(counts), d)
    users = [f"u{k}" for k in range(len(counts))]
    probes = unit_rows(rng, b, d)
    with pytest.MonkeyPatch.context() as m:
        _force_parallel(m, workers)
        m.setattr(gallery_mod, "_SPAN_FLOATS", span_floats)
        m.setattr(gallery_mod, "_SPAN_FLOATS_PAR", span_floats)
        m.setattr(gallery_mod, "_GEMV_ROWS", max(1, span_floats // 10))
        got = Gallery.from_counts(vec, users, counts, _block_rows=block).best_per_user(probes)
    np.testing.assert_allclose(got, _reduceat_ref(vec, counts, probes), atol=2e-6, rtol=0)


def test_parallel_path_restores_blas_threads_and_reports_errors(monkeypatch):
    fb = _force_parallel(monkeypatch, 2, fake=True)
    monkeypatch.setattr(gallery_mod, "_SPAN_FLOATS", 64)
    monkeypatch.setattr(gallery_mod, "_SPAN_FLOATS_PAR", 64)
    rng = np.random.default_rng(3)
    vec, users, counts = _ragged(rng, 200, 8, 5)
    g = Gallery.from_counts(vec, users, counts, _block_rows=8)
    g.best_per_user(unit_rows(rng, 4, 8))
    assert fb.calls == [1, 3] and fb.n == 3  # one thread during the call, the caller's count after

    def boom(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(gallery_mod, "_span", boom)
    with pytest.raises(RuntimeError):
        g.best_per_user(unit_rows(rng, 4, 8))
    assert fb.n == 3


def test_feed_hands_out_every_span_once_in_order_and_stops():
    import threading

    tasks = list(range(1000))
    feed = gallery_mod._Feed(tasks)
    got = [[] for _ in range(4)]

    def take(k):
        for t in iter(feed.take, None):
            got[k].append(t)

    ts = [threading.Thread(target=take, args=(k,)) for k in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert sorted(x for g in got for x in g) == tasks and all(g == sorted(g) for g in got)
    feed2 = gallery_mod._Feed(tasks)
    assert feed2.take() == 0
    feed2.stop()
    assert feed2.take() is None


def test_empty_gallery_and_empty_batch_on_parallel_path(monkeypatch):
    _force_parallel(monkeypatch, 2)
    g = Gallery.from_counts(np.zeros((0, 8), np.float32), [], [], dim=8)
    rng = np.random.default_rng(0)
    assert g.best_per_user(unit_rows(rng, 64, 8)).shape == (64, 0)
    assert g.matches(unit_rows(rng, 1, 8)[0], -1.0) is False
    vec = unit_rows(rng, 10, 8)
    g2 = Gallery.from_counts(vec, ["a", "b"], [4, 6])
    assert g2.best_per_user(np.zeros((0, 8), np.float32)).shape == (0, 2)
    assert g2.matches(vec[5], 0.999, user="b") is True and g2.matches(vec[5], 0.999, user="a") is False


def test_parallel_path_is_chosen_only_where_it_pays(monkeypatch):
    """B == 1 (the verifier's matches()) and small work stay on BLAS's own threads."""
    monkeypatch.setattr(gallery_mod, "_cores", lambda: 2)
    fb = _FakeBlas()
    monkeypatch.setattr(gallery_mod, "_blas_handle", lambda: fb)
    big = gallery_mod._PAR_MIN_WORK
    assert gallery_mod._workers(1, 100 * big) == 1
    assert gallery_mod._workers(64, big - 1) == 1
    assert gallery_mod._workers(64, big) == 2
    monkeypatch.setattr(gallery_mod, "_MAX_WORKERS", 1)
    assert gallery_mod._workers(64, big) == 1
    monkeypatch.setattr(gallery_mod, "_MAX_WORKERS", 8)
    none = _FakeBlas()
    none.set = None
    monkeypatch.setattr(gallery_mod, "_blas_handle", lambda: none)
    assert gallery_mod._workers(64, big) == 1  # no thread setter found: BLAS keeps its threads
