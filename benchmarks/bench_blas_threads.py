"""``fr-pbd bench`` with numpy's BLAS at one thread (what ``build_pipeline`` sets) and at OpenBLAS's default.

Why: ``fr_pbd.runtime.one_blas_thread`` holds numpy's BLAS at one thread in a verifying
process. This measures what that buys, end to end: the same ``fr-pbd bench`` run in fresh
processes, alternately with the limit and with it switched off (``one_blas_thread`` replaced
by a no-op in that process only), ``--pairs`` times each, back to back, so the load falls on
both alike.

    FR_PBD_MODELS=../shared/models FR_PBD_DATA=../shared/data \\
        .venv/bin/python benchmarks/bench_blas_threads.py --out RESULT.json [--pairs 2] [--rounds 5]

Timings only (the bench's own JSON: no score, no template).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
_RUN = """
import sys
sys.path.insert(0, {src!r})
import fr_pbd.runtime as runtime
if {off}:
    runtime.one_blas_thread = lambda: None  # OpenBLAS's default: one thread per core
from fr_pbd.cli import main
sys.exit(main(["bench", "--rounds", {rounds!r}, "--out", {out!r}]))
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--pairs", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    runs: dict[str, list[dict]] = {"blas_one_thread": [], "blas_default_threads": []}
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.pairs):
            for mode in (("blas_default_threads", "blas_one_thread") if k % 2 == 0
                         else ("blas_one_thread", "blas_default_threads")):
                out = Path(tmp) / f"{mode}-{k}.json"
                code = _RUN.format(src=str(SRC), off=mode == "blas_default_threads", rounds=str(args.rounds),
                                   out=str(out))
                subprocess.run([sys.executable, "-c", code], check=True, stdout=subprocess.DEVNULL)
                doc = json.loads(out.read_text())
                e2e = doc["end_to_end_ms"] if "end_to_end_ms" in doc else doc["end_to_end"]
                runs[mode].append({"end_to_end": e2e, "stages_p50_ms": {
                    s: v.get("p50") for s, v in doc.get("stages_ms", doc.get("stages", {})).items()}})
                print(f"{mode}: end to end p50 {e2e['p50']:.1f} ms, p95 {e2e['p95']:.1f} ms")
    p50 = {m: sorted(r["end_to_end"]["p50"] for r in v) for m, v in runs.items()}
    result = {"config": {"precision": "fp32", "liveness": True, "threads": os.cpu_count(), "board": "default",
                         "rounds_per_run": args.rounds, "pairs": args.pairs},
              "runs": runs,
              "default_over_one_thread_p50": [d / o for d, o in zip(p50["blas_default_threads"], p50["blas_one_thread"])]}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
