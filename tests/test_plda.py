"""The PLDA score model (fr_pbd.match.plda, fr_pbd.match.score_model): the closed form against explicit
Gaussian densities, the vectorised scorer against the closed form, rotation with the store's key, the
file format, the fit, the build's pin, and the store's matcher deciding with it."""

from __future__ import annotations

import numpy as np
import pytest

from fr_pbd.errors import ModelBuildError, ModelError
from fr_pbd.match import score_model as sm
from fr_pbd.match.plda import Plda, fit
from fr_pbd.store.protection import protect_rows, random_rotation


def spd(rng: np.random.Generator, d: int, scale: float) -> np.ndarray:
    a = rng.standard_normal((d, d))
    return scale * (a @ a.T / d + 0.2 * np.eye(d))


def small_model(d: int = 3, seed: int = 0) -> Plda:
    rng = np.random.default_rng(seed)
    return Plda(rng.standard_normal(d) * 0.3, spd(rng, d, 1.0), spd(rng, d, 0.3))


def log_normal(x: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> float:
    """log N(x; mean, cov) by the textbook formula (slogdet and solve of the whole covariance)."""
    r = x - mean
    sign, logdet = np.linalg.slogdet(cov)
    assert sign > 0
    return float(-0.5 * (r @ np.linalg.solve(cov, r) + logdet + r.size * np.log(2 * np.pi)))


def brute_llr(m: Plda, probe: np.ndarray, enrolled: np.ndarray) -> float:
    """log p(probe, enrolled | one identity) - log p(probe) - log p(enrolled), with the stacked
    (K+1) D-dimensional Gaussians written out: B in every block (the shared identity), W on the diagonal."""
    def joint(xs: np.ndarray) -> float:
        n, d = xs.shape
        cov = np.kron(np.ones((n, n)), m.B) + np.kron(np.eye(n), m.W)
        return log_normal(xs.reshape(-1), np.tile(m.mu, n), cov)

    return joint(np.vstack([probe[None], enrolled])) - joint(probe[None]) - joint(enrolled)


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_closed_form_llr_equals_explicit_gaussian_densities(k: int) -> None:
    m = small_model(3, seed=k)
    rng = np.random.default_rng(10 + k)
    prep = m.prepare()
    for _ in range(5):
        probe, enrolled = rng.standard_normal(3), rng.standard_normal((k, 3))
        assert prep.llr(probe, enrolled) == pytest.approx(brute_llr(m, probe, enrolled), abs=1e-9)


def test_the_scorer_equals_the_closed_form_for_mixed_enrolment_sizes() -> None:
    """The gallery's one-GEMM scorer (float32) against the float64 closed form, users with 1..4 templates
    and a failed (masked) template."""
    m = sm.PldaModel(small_model(8, seed=3))
    rng = np.random.default_rng(4)
    sets = rng.standard_normal((5, 4, 8))
    mask = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 1, 1]], bool)
    probes = rng.standard_normal((7, 8))
    got = m.enrolled(sets, mask).scores(probes)
    for i in range(7):
        for u in range(5):
            want = m.prepared.llr(probes[i], sets[u][mask[u]])
            assert got[i, u] == pytest.approx(want, rel=1e-5, abs=1e-3)


def test_pairwise_features_are_the_k1_score() -> None:
    from fr_pbd.eval.transactions import pair_features

    m = sm.PldaModel(small_model(6, seed=5))
    x = np.random.default_rng(6).standard_normal((4, 6))
    left, right = pair_features(m, x)
    for i in range(4):
        for j in range(4):
            assert left[i] @ right[j] == pytest.approx(m.prepared.llr(x[i], x[j][None]), abs=1e-9)
    assert pair_features(sm.Cosine(), x) is None


def test_scores_on_rotated_templates_with_the_rotated_model_equal_plain_ones() -> None:
    """The store keeps R t; the model rotated with R (R B R', R W R', R mu; or T R') scores the same."""
    d = 16
    rng = np.random.default_rng(7)
    x = rng.standard_normal((40, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = np.repeat(np.arange(10), 4)
    plda = fit(x, ids)
    r = random_rotation(d)
    sets = x[:12].reshape(4, 3, d)
    mask = np.ones((4, 3), bool)
    probes = x[12:20]
    plain = sm.PldaModel(plda).enrolled(sets, mask).scores(probes)
    rot_sets = protect_rows(sets.reshape(-1, d), r).reshape(4, 3, d)
    rot_probes = protect_rows(probes, r)
    by_matrices = sm.PldaModel(plda.rotated(r)).enrolled(rot_sets, mask).scores(rot_probes)
    np.testing.assert_allclose(by_matrices, plain, rtol=1e-4, atol=1e-3)
    rot_model = sm._rotated_model(sm.PldaModel(plda), sm.PldaModel(plda).prepared.rotated(r))
    np.testing.assert_allclose(rot_model.enrolled(rot_sets, mask).scores(rot_probes), plain, rtol=1e-4, atol=1e-3)
    # control: the unrotated model on rotated templates does not give the plain scores
    wrong = sm.PldaModel(plda).enrolled(rot_sets, mask).scores(rot_probes)
    assert np.abs(wrong - plain).max() > 1.0


def test_the_store_gallery_decides_as_the_plain_domain(monkeypatch) -> None:
    """protected_gallery (what ProtectedMatcher.of builds) with PLDA in force: yes/no on protected
    templates equals the plain-domain score against the threshold, for every probe and claim."""
    d = 16
    rng = np.random.default_rng(8)
    centres = rng.standard_normal((6, d))
    x = centres[np.repeat(np.arange(6), 5)] + 0.3 * rng.standard_normal((30, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = np.repeat(np.arange(6), 5)
    model = sm.PldaModel(fit(x, ids))
    monkeypatch.setattr(sm, "in_force", lambda model_id: model)
    r = random_rotation(d)
    users = ["u0", "u1", "u2"]
    templates = [protect_rows(x[5 * i: 5 * i + 3], r) for i in range(3)]
    g = sm.protected_gallery("m", users, templates, r, d)
    assert isinstance(g, sm.PldaGallery) and g.users == tuple(users)
    plain = model.enrolled(np.stack([x[5 * i: 5 * i + 3] for i in range(3)]), np.ones((3, 3), bool))
    probes = x[[3, 4, 8, 9, 13, 14, 20, 25]]
    s = plain.scores(probes)
    thr = float(np.median(s))
    for i, p in enumerate(protect_rows(probes, r)):
        assert g.matches(p, thr) == bool((s[i] >= thr).any())
        for k, u in enumerate(users):
            assert g.matches(p, thr, u) == bool(s[i, k] >= thr)
        assert g.matches(p, thr, "nobody") is False
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(g)


def test_file_round_trip_and_refusals() -> None:
    m = small_model(4)
    data = m.to_bytes()
    assert data[:8] == b"FRPBDPLD" and len(data) == 16 + 4 * (4 + 2 * 16)
    back = Plda.from_bytes(data)
    np.testing.assert_allclose(back.B, m.B.astype(np.float32), rtol=0)
    assert back.to_bytes() == data  # float32 on disk: a second write is the same bytes
    for bad in (data[:10], b"XXXXXXXX" + data[8:], data[:-4], data[:16] + b"\x00\x00\xc0\x7f" + data[20:]):
        with pytest.raises(ModelError):
            Plda.from_bytes(bad)


def test_fit_recovers_the_covariances_and_is_deterministic() -> None:
    rng = np.random.default_rng(9)
    d, ids_n, per = 4, 400, 6
    true = Plda(np.array([0.5, -0.2, 0.1, 0.0]), np.diag([1.0, 0.5, 0.25, 0.1]), np.diag([0.05, 0.1, 0.05, 0.02]))
    y = true.mu + rng.standard_normal((ids_n, d)) @ np.sqrt(true.B)
    ids = np.repeat(np.arange(ids_n), per)
    x = y[ids] + rng.standard_normal((ids_n * per, d)) @ np.sqrt(true.W)
    m = fit(x, ids)
    np.testing.assert_allclose(np.diag(m.W), np.diag(true.W), rtol=0.1)
    np.testing.assert_allclose(np.diag(m.B), np.diag(true.B), rtol=0.2)
    assert fit(x, ids).to_bytes() == m.to_bytes()


def test_build_keeps_only_the_pinned_bytes(tmp_path, monkeypatch) -> None:
    """A build whose sha256 is not the manifest's is refused and not kept; the error says whether the
    scores agree with the pinned fingerprint."""
    from fr_pbd import models
    from fr_pbd.build import plda as build

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    rng = np.random.default_rng(11)
    x = rng.standard_normal((60, 8))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = np.repeat(np.arange(12), 5)
    with pytest.raises(ModelBuildError, match="not kept.*differ from the pinned"):
        build.build_plda(x, ids)
    assert not (models.cache_dir() / models.spec(build.NAME).file).exists()
    # the pinned bytes are kept: pin this build, as the manifest pins the reference build
    data = fit(x, ids).to_bytes()
    spec = models.spec(build.NAME)
    pinned = type(spec)(**{**spec.__dict__, "sha256": models.sha256_bytes(data), "size": len(data)})
    monkeypatch.setattr(models, "spec", lambda name: pinned if name == build.NAME else spec)
    path, fp = build.build_plda(x, ids)
    assert open(path, "rb").read() == data and fp == build.fingerprint(fit(x, ids))


def test_the_pinned_model_if_built_here_verifies_and_matches_its_fingerprint() -> None:
    """`fr-pbd models build plda --data LFW` output (optional: the default score model is the manifest's)."""
    from fr_pbd import models
    from fr_pbd.build.plda import FINGERPRINT_TOL, NAME, fingerprint

    st = models.status(NAME)
    if st.path is None:
        pytest.skip(f"{NAME} not built here (fr-pbd models build plda --data ../shared/data/lfw)")
    m = models.resolve(NAME)
    pinned = models.spec(NAME).extra["fingerprint"]
    got = fingerprint(Plda.from_bytes(m.data))
    assert max(abs(a - b) for a, b in zip(got, pinned)) <= FINGERPRINT_TOL


def test_the_threshold_follows_the_score_model_in_force(monkeypatch) -> None:
    """The manifest names the score model; the decision threshold is that model's (a PLDA LLR), so a
    verifier can never compare one model's score with the other's threshold."""
    import dataclasses

    from fr_pbd import models

    real = models.manifest()
    emb = real["dlib-resnet-v1"]
    assert sm.name_in_force("dlib-resnet-v1") == "cosine"  # in force today: centroid cosine
    assert sm.threshold("dlib-resnet-v1") == models.threshold("dlib-resnet-v1") == emb.default_threshold
    switched = dict(real)
    switched["dlib-resnet-v1"] = dataclasses.replace(emb, extra={**emb.extra, "score_model": "plda-dlib-resnet-v1-lfw-a"})
    monkeypatch.setattr(models, "manifest", lambda: switched)
    assert sm.name_in_force("dlib-resnet-v1") == "plda-dlib-resnet-v1-lfw-a"
    assert models.threshold("dlib-resnet-v1") == real["plda-dlib-resnet-v1-lfw-a"].default_threshold
    assert sm.name_in_force("an-embedder-not-in-the-manifest") == "cosine"
    switched["dlib-resnet-v1"] = dataclasses.replace(emb, extra={**emb.extra, "score_model": "yunet-2023mar"})
    with pytest.raises(ModelError):  # a detector is no score model
        sm.name_in_force("dlib-resnet-v1")


def test_protected_matcher_uses_the_score_model_in_force(monkeypatch) -> None:
    """ProtectedMatcher.of (what the verifier gets from the store) on a real StoreState: with PLDA in
    force its yes/no on a raw probe is the plain-domain PLDA score against the threshold; with cosine,
    the plain centroid cosine."""
    from datetime import datetime, timezone

    from fr_pbd.store.protection import ProtectedMatcher
    from fr_pbd.store.records import ConsentRecord, StoreState, UserRecord
    from fr_pbd.template import Template

    d = 128
    rng = np.random.default_rng(12)
    centres = rng.standard_normal((40, d))
    ids = np.repeat(np.arange(40), 6)
    x = centres[ids] + 0.8 * rng.standard_normal((ids.size, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    model = sm.PldaModel.train(x[60:], ids[60:])  # users 0..9 are not in the training set
    state = StoreState.new("dlib-resnet-v1", d, random_rotation(d))
    when = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for u in range(3):
        state.users[f"u{u}"] = UserRecord(ConsentRecord(f"u{u}", when, "v1", "dev"),
                                          protect_rows(x[6 * u: 6 * u + 3], state.rotation))
    probes = x[[3, 4, 9, 10, 15, 16, 30, 40]]
    plain = model.enrolled(np.stack([x[6 * u: 6 * u + 3] for u in range(3)]), np.ones((3, 3), bool)).scores(probes)
    monkeypatch.setattr(sm, "in_force", lambda model_id: model)
    m = ProtectedMatcher.of(state)
    for thr in (float(np.quantile(plain, q)) for q in (0.3, 0.6, 0.9)):
        for i, p in enumerate(probes):
            t = Template(vector=p.astype(np.float32), model_id="dlib-resnet-v1")
            assert m.matches(t, thr) == bool((plain[i] >= thr).any())
            assert m.matches(t, thr, "u1") == bool(plain[i, 1] >= thr)
    monkeypatch.setattr(sm, "in_force", lambda model_id: sm.Cosine())
    m = ProtectedMatcher.of(state)
    from fr_pbd.match.fusion import centroid

    cos = probes @ np.stack([centroid(x[6 * u: 6 * u + 3]) for u in range(3)]).T
    for i, p in enumerate(probes):
        t = Template(vector=p.astype(np.float32), model_id="dlib-resnet-v1")
        assert m.matches(t, float(cos[i].max()) - 1e-4) and not m.matches(t, float(cos[i].max()) + 1e-4)
