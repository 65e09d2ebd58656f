"""Does the time of the decision step depend on the decision? Genuine vs impostor timings.

    .venv/bin/python benchmarks/bench_decision_timing.py [--quick] [--sizes 20 10000] [--reps 3000]

The decision step is ``StoreView.matcher().matches(probe, threshold, user)``: the
store's secret rotation applied to the probe, then the whole gallery scored
(fused per-user max, no early exit) and one comparison with the threshold. It
runs on a real encrypted store (created in a temporary directory) holding N users
of 3 random unit templates each (D = 128), at the manifest's threshold for
``dlib-resnet-v1`` (``fr_pbd.models.spec(...).default_threshold``, read at start).

Three kinds of probe, each a fresh vector per call from a pool of 64:

* ``genuine``: an enrolled template plus noise, cosine threshold + 0.03 to it (accepted);
* ``impostor``: a random unit vector, cosine ~0 to everything (refused);
* ``near-miss``: cosine threshold - 0.01 to an enrolled template, just below the
  threshold (refused): if the matcher exited early or did more work near the
  threshold, this is where it would show.

Two modes: ``any`` (identification: is it any enrolled user? ``user=None``) and
``claimed`` (the probe claims user 0: genuine probes are user 0's).

Calls of all kinds are interleaved in a random order in every round (GC off), so
drift and other processes' load hit every kind alike. Reported: median and p95
in microseconds, and a two-sample Mann-Whitney U test of each refused kind
against ``genuine`` (normal approximation with tie correction, two-sided), with
its effect size A = P(t_kind > t_genuine) (0.5 = no difference). With thousands
of samples the test detects differences of a few tens of nanoseconds; read the
effect size and the medians beside the p-value.

What this does not cover: after the decision, ``Verifier.verify`` writes the
lockout counter on a failure (an fsynced store write) and writes nothing on a
success with no prior failures. That difference reveals only the decision
itself, which the caller receives anyway; it reveals nothing about the score.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import sys
import tempfile
import time

import numpy as np

try:
    from fr_pbd.store import Store
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
    from fr_pbd.store import Store
from fr_pbd import models
from fr_pbd.template import Template

D = 128
PER_USER = 3
POOL = 64
MODEL_ID = "dlib-resnet-v1"
THRESHOLD = models.spec(MODEL_ID).default_threshold
GENUINE_COS = min(THRESHOLD + 0.03, 0.999)
NEAR_MISS_COS = THRESHOLD - 0.01
KINDS = ("genuine", "impostor", "near-miss")


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _at_cosine(base: np.ndarray, cos: float, rng: np.random.Generator) -> np.ndarray:
    """A unit vector at exactly cosine ``cos`` to unit ``base``."""
    r = rng.standard_normal(base.shape[0])
    r -= (r @ base) * base
    r = _unit(r)
    return cos * base + math.sqrt(1 - cos * cos) * r


def build_store(home: str, n_users: int, rng: np.random.Generator) -> tuple[Store, np.ndarray]:
    """A real store with n_users x PER_USER random templates; returns it and the raw templates."""
    store = Store.create(home, model_id=MODEL_ID, dim=D)
    store.set_fallback("bench-pin-1234")
    raw = _unit(rng.standard_normal((n_users, PER_USER, D)))
    with store.transaction() as tx:
        for u in range(n_users):
            name = f"user{u:06d}"
            tx.record_consent(name, text_version="1", device_id="bench")
            tx.add_templates(name, [Template(v, MODEL_ID) for v in raw[u]])
    return store, raw


def probes(raw: np.ndarray, rng: np.random.Generator, claimed_only: bool) -> dict[str, list[Template]]:
    n = raw.shape[0]
    out: dict[str, list[Template]] = {k: [] for k in KINDS}
    for _ in range(POOL):
        u = 0 if claimed_only else int(rng.integers(n))
        base = raw[u, int(rng.integers(PER_USER))]
        out["genuine"].append(Template(_at_cosine(base, GENUINE_COS, rng), MODEL_ID))
        out["near-miss"].append(Template(_at_cosine(base, NEAR_MISS_COS, rng), MODEL_ID))
        out["impostor"].append(Template(_unit(rng.standard_normal(D)), MODEL_ID))
    return out


def measure(matcher, pool: dict[str, list[Template]], user: str | None, reps: int,
            rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Interleaved timings (ns) of ``matcher.matches`` per kind; checks every answer."""
    times = {k: np.empty(reps, dtype=np.int64) for k in KINDS}
    expect = {"genuine": True, "impostor": False, "near-miss": False}
    for k in KINDS:  # warm-up
        for p in pool[k][:8]:
            assert matcher.matches(p, THRESHOLD, user) is expect[k]
    order = np.array([i % len(KINDS) for i in range(len(KINDS))])
    clock = time.perf_counter_ns
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for r in range(reps):
            for ki in rng.permutation(order):
                k = KINDS[ki]
                p = pool[k][r % POOL]
                t0 = clock()
                ok = matcher.matches(p, THRESHOLD, user)
                t1 = clock()
                times[k][r] = t1 - t0
                if ok is not expect[k]:
                    raise AssertionError(f"{k} probe answered {ok}")
    finally:
        if gc_was:
            gc.enable()
    return times


def mann_whitney(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Two-sided Mann-Whitney U: (p-value, A = P(a > b) + P(a == b) / 2), normal approx., tie-corrected."""
    n1, n2 = len(a), len(b)
    x = np.concatenate([a, b]).astype(np.float64)
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    ranks = np.empty_like(xs)
    _, first, counts = np.unique(xs, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0  # average rank of each tie group (1-based)
    ranks[order] = np.repeat(avg, counts)
    u1 = ranks[:n1].sum() - n1 * (n1 + 1) / 2.0
    n = n1 + n2
    tie = float((counts**3 - counts).sum())
    sigma = math.sqrt(n1 * n2 / 12.0 * ((n + 1) - tie / (n * (n - 1))))
    z = (u1 - n1 * n2 / 2.0) / sigma if sigma > 0 else 0.0
    p = math.erfc(abs(z) / math.sqrt(2))
    return p, u1 / (n1 * n2)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[20, 10_000], help="users in the gallery")
    ap.add_argument("--reps", type=int, default=None, help="calls per kind (default 4000 / 1000 by size)")
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--seed", type=int, default=20261123)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    print(f"# decision-step timing; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"numpy {np.__version__}, threshold {THRESHOLD}, {PER_USER} templates/user, D={D}")
    print(f"{'N users':>8} {'mode':>8} {'probe':>10} {'n':>6} {'median us':>10} {'p95 us':>9} "
          f"{'vs genuine: p (MWU)':>20} {'A':>6} {'median diff':>12}")
    for n_users in args.sizes:
        reps = args.reps or (4000 if n_users <= 1000 else 1000)
        if args.quick:
            reps = max(200, reps // 10)
        with tempfile.TemporaryDirectory() as tmp:
            store, raw = build_store(os.path.join(tmp, "home"), n_users, rng)
            matcher = store.read().matcher()
            for mode, user in (("any", None), ("claimed", "user000000")):
                pool = probes(raw, rng, claimed_only=user is not None)
                t = measure(matcher, pool, user, reps, rng)
                g = t["genuine"]
                for k in KINDS:
                    med, p95 = np.median(t[k]) / 1e3, np.percentile(t[k], 95) / 1e3
                    if k == "genuine":
                        cmp = f"{'-':>20} {'-':>6} {'-':>12}"
                    else:
                        p, a = mann_whitney(t[k], g)
                        diff = (np.median(t[k]) - np.median(g)) / 1e3
                        cmp = f"{p:>20.3g} {a:>6.3f} {diff:>+10.2f}us"
                    print(f"{n_users:>8} {mode:>8} {k:>10} {len(t[k]):>6} {med:>10.2f} {p95:>9.2f} {cmp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
