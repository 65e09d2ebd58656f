"""Centroid fusion has one implementation (fr_pbd.match.fusion): the store's matcher and the evaluation
use it, and the evaluation's transaction scores are the store's decisions' scores."""

from __future__ import annotations

import numpy as np

from fr_pbd.eval import transactions as tx
from fr_pbd.match import fusion
from fr_pbd.match.score_model import Cosine, protected_gallery
from fr_pbd.store import protection
from fr_pbd.store.protection import protect_rows, random_rotation


def data(seed: int = 0, n_ids: int = 8, per: int = 5, d: int = 12):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_ids, d))
    ids = np.repeat(np.arange(n_ids), per)
    x = centres[ids] + 0.7 * rng.standard_normal((ids.size, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), ids


def test_the_store_and_the_evaluation_call_the_same_function() -> None:
    assert protection.centroid is fusion.centroid
    x, _ = data()
    sets = x[:15].reshape(3, 5, -1)
    one = np.stack([fusion.centroid(s) for s in sets])
    np.testing.assert_array_equal(fusion.centroids(sets), one)
    # what the evaluation's cosine model enrols is that centroid
    e = Cosine().enrolled(sets, np.ones((3, 5), bool))
    np.testing.assert_allclose(e.scores(np.eye(x.shape[1], dtype=np.float32)), one.T, atol=1e-7)


def test_transaction_scores_are_the_probe_against_the_store_centroid() -> None:
    """Brute force: the evaluation's genuine scores at K = 3 equal probe . centroid(enrolled) computed
    with the store's function, for the same seeded enrolment draw."""
    x, ids = data(1)
    ok = np.ones(ids.size, bool)
    k = 3
    ts = tx.score_transactions(x, ids, ok, k, draws=1, seed=0)
    eligible = np.bincount(ids) >= k + 1
    enrolled = tx._enrolment(ids, k, np.random.default_rng([0, k, 0]), eligible)
    want = []
    for p in range(ids.size):
        if enrolled[p]:
            continue
        c = protection.centroid(x[enrolled & (ids == ids[p])])
        want.append(float(x[p] @ c))
    np.testing.assert_allclose(np.sort(ts.genuine), np.sort(want), atol=1e-6)


def test_the_protected_gallery_fuses_the_protected_templates_like_the_plain_ones() -> None:
    """The rotation commutes with the centroid: the store's decision on protected templates is the plain
    centroid cosine against the threshold (here cosine is in force: a model id the manifest does not list)."""
    x, ids = data(2)
    d = x.shape[1]
    r = random_rotation(d)
    users = ["a", "b", "c"]
    plain = [x[ids == i][:3] for i in range(3)]
    g = protected_gallery("not-in-manifest", users, [protect_rows(t, r) for t in plain], r, d)
    cents = np.stack([fusion.centroid(t) for t in plain])
    for p in x[ids >= 3][:10]:
        s = cents @ p
        thr = float(s.max()) - 1e-4
        q = protect_rows(p[None], r)[0]
        assert g.matches(q, thr) and g.matches(q, thr, users[int(s.argmax())])
        assert not g.matches(q, float(s.max()) + 1e-4)
