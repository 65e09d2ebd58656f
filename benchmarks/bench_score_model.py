"""The match stage with each score model, side by side: centroid cosine vs PLDA (fr_pbd.match.score_model).

    .venv/bin/python benchmarks/bench_score_model.py [--users 1,5,100,1000] [--rounds 200] [--json FILE]

What a verification does in phase (b) after the store is open: build the protected gallery of the
score model in force from the store's protected templates and rotation (``ProtectedMatcher.of``), then
answer one probe (``matches``: every user scored, no early exit). Each user holds 3 templates (128-d).
The PLDA model is the built one (``fr-pbd models build plda``) when present, else one fitted here on
synthetic templates (the same shapes, the same work). numpy's BLAS runs one thread, as in a
verification (``fr_pbd.runtime.one_blas_thread``). Rounds alternate the two models, so the load of
other processes affects both alike; medians in milliseconds, and the ratio PLDA / cosine.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from fr_pbd.match import score_model as sm
from fr_pbd.match.plda import Plda, fit
from fr_pbd.store.protection import protect_rows, random_rotation

D, K = 128, 3


def plda_model() -> tuple[sm.PldaModel, str]:
    from fr_pbd import models
    from fr_pbd.build.plda import NAME

    if models.status(NAME).verified:
        return sm.PldaModel(Plda.from_bytes(models.resolve(NAME).data)), NAME
    rng = np.random.default_rng(0)
    ids = np.repeat(np.arange(600), 6)
    x = rng.standard_normal((600, D))[ids] + 0.5 * rng.standard_normal((ids.size, D))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return sm.PldaModel(fit(x, ids)), "synthetic (the built model is absent)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", default="1,5,100,1000")
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    from fr_pbd.runtime import one_blas_thread

    one_blas_thread()  # as in a verification (fr_pbd.pipeline.build_pipeline): every product here is tiny
    model, source = plda_model()
    rng = np.random.default_rng(1)
    r = random_rotation(D)
    rows = []
    for n in [int(v) for v in a.users.split(",")]:
        t = rng.standard_normal((n * K, D))
        t /= np.linalg.norm(t, axis=1, keepdims=True)
        users = [f"u{i}" for i in range(n)]
        templates = [protect_rows(t[i * K:(i + 1) * K], r) for i in range(n)]
        probe = protect_rows(t[:1] + 0.1, r)[0]
        times: dict[str, list[float]] = {"cosine": [], "plda": []}
        for _ in range(a.rounds):
            for name, m in (("cosine", sm.Cosine()), ("plda", model)):
                sm.in_force = lambda model_id, m=m: m  # the score model "in force" for this round
                t0 = time.perf_counter()
                g = sm.protected_gallery("bench", users, templates, r, D)
                g.matches(probe, 0.5)
                times[name].append(1e3 * (time.perf_counter() - t0))
        c, p = float(np.median(times["cosine"])), float(np.median(times["plda"]))
        rows.append({"users": n, "templates_per_user": K, "cosine_ms": round(c, 4), "plda_ms": round(p, 4),
                     "plda_p95_ms": round(float(np.percentile(times["plda"], 95)), 4), "ratio": round(p / c, 2)})
        print(f"users {n:5d}: gallery + one answer, median cosine {c:.3f} ms, PLDA {p:.3f} ms "
              f"(p95 {rows[-1]['plda_p95_ms']:.3f}), PLDA / cosine {p / c:.2f}x")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"config": {"precision": "fp32", "liveness": False}, "plda_model": source,
                       "rounds": a.rounds, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
