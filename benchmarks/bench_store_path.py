"""The store's part of one verification, old tree against new, in interleaved rounds.

    .venv/bin/python benchmarks/bench_store_path.py --old /tmp/storebase/src [--new src] [--rounds 15] [--per-round 20]
        [--out result.json]

Why a store-only benchmark: ``fr-pbd bench`` times the whole verification, and the capture
side changes in the same checkout; this one times exactly the store operations of
``Verifier.verify`` and nothing of the capture: the pre-check (``store_read``: claim and
lockout before a frame is looked at), the attempt counted under the exclusive lock with
the matcher built (``decide``), the comparison (``match``), and on a success the clear
(``clear``: in the old tree inside ``decide``, in the new one written after the answer).

How: two worker processes, one importing fr-pbd from ``--old``, one from ``--new``; each
builds the same household store as ``fr-pbd bench`` (one enrolled user and 5 members with
5 templates each: 26 stand-in unit vectors; a real encrypted store with the device key
file, in a fresh temporary directory on the same file system; numpy's BLAS at one thread,
as in a process that has built the pipeline) and a ``Verifier`` whose
extractor returns a fixed template at once (liveness off: no frame is decoded). Each round
asks one worker, then the other (who goes first alternates), for ``--per-round``
iterations of four verifications: the enrolled user's template claiming nobody (yes), an
impostor's claiming nobody (no), the same two claiming the enrolled user. After each no
the count is reset outside the timings (as ``fr-pbd bench`` does), so nothing locks.

Trees for the store's latency work (the pre-check's cache, the clear written after the answer):
``--old`` a ``git archive`` of the commit before it;
``--new`` the same archive with the store work's files (``src/fr_pbd/verify.py``,
``src/fr_pbd/store/``, ``src/fr_pbd/bench.py``) taken from the commit after it, so that
nothing else (the capture side, the gallery) differs between the two.

Per verification: ``answer_ms`` (the ``verify`` call: what the caller waits for) and
``through_ms`` (``verify`` and then waiting for the clear: when the store is settled),
and the stage hook's ``store_read``, ``decide``, ``match``, ``clear``. Only timings and
counts are written: no score, no template.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DIM = 128
MEMBERS = 5
TEMPLATES_PER_MEMBER = 5
CASES = ("yes_any", "no_any", "yes_claimed", "no_claimed")
METRICS = ("answer_ms", "through_ms", "store_read", "decide", "match", "clear")


# ----------------------------------------------------------------------------------- worker
def _worker() -> None:  # pragma: no cover - runs in the subprocesses
    import shutil
    import tempfile
    import warnings

    import numpy as np

    import fr_pbd
    from fr_pbd.store import Store
    from fr_pbd.template import Template
    from fr_pbd.verify import Verifier

    model_id = Verifier.default_model_id()
    rng = np.random.default_rng(16)

    def unit() -> np.ndarray:
        v = rng.standard_normal(DIM)
        return (v / np.linalg.norm(v)).astype(np.float32)

    genuine, impostor = unit(), unit()

    class Stub:
        def __init__(self) -> None:
            self.model_id = model_id
            self.vector = genuine

        def template(self, image, purpose="verify", check=None, hook=None):
            return Template(self.vector, model_id)

    gap = float(os.environ.get("FR_PBD_STOREPATH_GAP_MS", "0")) / 1e3
    home = Path(tempfile.mkdtemp(prefix="fr-pbd-storepath.")) / "home"
    try:
        store = Store.create(home, model_id=model_id, dim=DIM)
        store.set_fallback("bench-store-" + os.urandom(4).hex())
        with store.transaction() as tx:
            tx.record_consent("obama", text_version="bench", device_id="bench")
            tx.add_templates("obama", [Template(genuine, model_id)])
            for m in range(MEMBERS):
                tx.record_consent(f"member{m}", text_version="bench", device_id="bench")
                tx.add_templates(f"member{m}", [Template(unit(), model_id) for _ in range(TEMPLATES_PER_MEMBER)])
        stages: dict[str, float] = {}
        stub = Stub()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # liveness off: no frame is looked at here
            v = Verifier(home, stub, liveness=False, stage_hook=lambda s, t: stages.__setitem__(s, t))
        settle = getattr(v, "settle", lambda: None)

        def reset() -> None:
            with v.store().transaction() as tx:
                tx.reset_lockout()
                tx.reset_lockout("obama")

        def one(case: str) -> dict[str, float]:
            stub.vector = genuine if case.startswith("yes") else impostor
            stages.clear()
            time.sleep(gap)  # what a frame's capture takes before the store is asked (not timed)
            t0 = time.perf_counter()
            d = v.verify(b"frame", user="obama" if case.endswith("claimed") else None)
            t1 = time.perf_counter()
            settle()
            t2 = time.perf_counter()
            if bool(d) != case.startswith("yes"):
                raise SystemExit(f"unexpected answer for {case}: {d.reason}")
            out = {"answer_ms": (t1 - t0) * 1e3, "through_ms": (t2 - t0) * 1e3}
            out.update({k: s * 1e3 for k, s in stages.items()})
            return out

        for _ in range(10):  # warm-up: every path once or more
            for case in CASES:
                one(case)
            reset()
        print(json.dumps({"ready": fr_pbd.__file__}), flush=True)
        for line in sys.stdin:
            n = int(line)
            samples: dict[str, list[dict[str, float]]] = {c: [] for c in CASES}
            for _ in range(n):
                for case in CASES:
                    samples[case].append(one(case))
                    if case.startswith("no"):
                        reset()
            print(json.dumps(samples), flush=True)
    finally:
        shutil.rmtree(home.parent, ignore_errors=True)


# ----------------------------------------------------------------------------------- driver
def _start(src: Path, gap_ms: float) -> subprocess.Popen:
    # one BLAS thread, as in every process that builds the pipeline (fr_pbd.runtime.one_blas_thread)
    env = dict(os.environ, PYTHONPATH=str(src), OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
               FR_PBD_STOREPATH_GAP_MS=str(gap_ms))
    p = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    ready = json.loads(p.stdout.readline())
    if not ready["ready"].startswith(str(src.resolve())):
        raise SystemExit(f"worker imported fr_pbd from {ready['ready']}, not {src}")
    return p


def _summary(xs: list[float]) -> dict[str, float]:
    import numpy as np

    if not xs:
        return {"n": 0}
    a = np.asarray(xs)
    return {"p50": round(float(np.percentile(a, 50)), 3), "p95": round(float(np.percentile(a, 95)), 3),
            "mean": round(float(a.mean()), 3), "n": int(a.size)}


def run(old: Path, new: Path, rounds: int, per_round: int, gap_ms: float) -> dict:
    workers = {"old": _start(old, gap_ms), "new": _start(new, gap_ms)}
    got: dict[str, dict[str, list[dict[str, float]]]] = {w: {c: [] for c in CASES} for w in workers}
    load_before = os.getloadavg()
    try:
        for r in range(rounds):
            for name in (("old", "new") if r % 2 == 0 else ("new", "old")):
                p = workers[name]
                p.stdin.write(f"{per_round}\n")
                p.stdin.flush()
                for case, xs in json.loads(p.stdout.readline()).items():
                    got[name][case].extend(xs)
    finally:
        for p in workers.values():
            p.stdin.close()
            p.wait(timeout=60)
    load_after = os.getloadavg()
    out: dict = {"cases": {}}
    for case in CASES:
        out["cases"][case] = {}
        for name in workers:
            out["cases"][case][name] = {m: _summary([s[m] for s in got[name][case] if m in s]) for m in METRICS}
        o, n = out["cases"][case]["old"], out["cases"][case]["new"]
        out["cases"][case]["speedup_p50"] = {m: round(o[m]["p50"] / n[m]["p50"], 2)
                                             for m in ("answer_ms", "through_ms")}
    return {
        "benchmark": "bench_store_path",
        "what": "the store operations of one Verifier.verify (pre-check, count with matcher, comparison, "
                "success clear), old tree vs new, interleaved rounds; stand-in templates, no capture",
        "old_src": str(old), "new_src": str(new),
        "workload": {"rounds": rounds, "per_round": per_round, "cases": list(CASES), "dim": DIM, "gap_ms": gap_ms,
                     "gallery_users": 1 + MEMBERS, "gallery_templates": 1 + MEMBERS * TEMPLATES_PER_MEMBER,
                     "store_key": "file", "tmpdir": os.environ.get("TMPDIR", "/tmp")},
        "load": {"loadavg_before": [round(x, 2) for x in load_before],
                 "loadavg_after": [round(x, 2) for x in load_after]},
        "config": {"precision": "none (stand-in templates)", "liveness": False, "blas_threads": 1},
        **out,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--old", type=Path, help="the old tree's src/ (e.g. /tmp/storebase/src)")
    ap.add_argument("--new", type=Path, default=ROOT / "src")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--per-round", type=int, default=20)
    ap.add_argument("--gap-ms", type=float, default=0.0,
                    help="sleep before each verification, untimed (default 0: store operations back to back)")
    ap.add_argument("--note", default="", help="what the two trees are, kept in the result")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    if a.worker:
        _worker()
        return 0
    if a.old is None:
        ap.error("--old is required")
    doc = run(a.old, a.new, a.rounds, a.per_round, a.gap_ms)
    doc["note"] = a.note
    text = json.dumps(doc, indent=1)
    if a.out:
        a.out.write_text(text + "\n")
    else:
        print(text)
    for case in CASES:
        c = doc["cases"][case]
        print(f"{case:12s} answer p50 old {c['old']['answer_ms']['p50']:.3f} ms new {c['new']['answer_ms']['p50']:.3f} "
              f"ms ({c['speedup_p50']['answer_ms']}x); through p50 old {c['old']['through_ms']['p50']:.3f} new "
              f"{c['new']['through_ms']['p50']:.3f} ({c['speedup_p50']['through_ms']}x)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
