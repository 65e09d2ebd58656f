"""What the models alone cost: one onnxruntime session per model, random input, no pre/post-processing.

    FR_PBD_MODELS=../shared/models python benchmarks/bench_models_raw.py --out RESULT.json [--runs 50]

Issue 16 asks where a verification's time goes. ``fr-pbd bench`` times the stages of the real
verifier (pre/post-processing, lanes and contention included); this times each graph the
default board runs, alone, at 1 and 2 intra-op threads, so the difference between the two
is the overhead around the models. Input shapes: the 640x480 YuNet graph (a 640x480 frame),
the dlib ResNet on a batch of 2 (chip and mirror), each MiniFASNet on one 80x80 crop.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

GRAPHS = (  # manifest name, input shape
    ("yunet-2023mar-640x480", (1, 3, 480, 640)),
    ("dlib-resnet-v1", (2, 3, 150, 150)),
    ("minifasnet-v2", (1, 3, 80, 80)),
    ("minifasnet-v1se", (1, 3, 80, 80)),
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--runs", type=int, default=50)
    args = ap.parse_args(argv)

    import onnxruntime as ort

    from fr_pbd import models
    from fr_pbd.machine import machine_info

    rng = np.random.default_rng(0)
    out: dict = {"config": {"precision": "fp32", "liveness": True, "threads": None},
                 "onnxruntime": ort.__version__, "machine": machine_info(), "graphs": {}}
    for name, shape in GRAPHS:
        path = models.resolve(name).path
        x = rng.random(shape, dtype=np.float32)
        for threads in (1, 2):
            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
            feed = {sess.get_inputs()[0].name: x}
            for _ in range(5):
                sess.run(None, feed)
            times = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                sess.run(None, feed)
                times.append(1000 * (time.perf_counter() - t0))
            times.sort()
            out["graphs"].setdefault(name, {"input": list(shape)})[f"threads_{threads}"] = {
                "p50_ms": statistics.median(times), "p95_ms": times[int(0.95 * (len(times) - 1))]}
            print(f"{name} {shape} threads {threads}: p50 {statistics.median(times):.2f} ms")
    # The four in turn, as a verification runs them (2 threads), so that each run finds the
    # caches as the previous model left them; without spinning (fr_pbd.runtime's setting) and
    # with it (onnxruntime's default).
    for spin in (False, True):
        sessions = []
        for name, shape in GRAPHS:
            so = ort.SessionOptions()
            so.intra_op_num_threads, so.inter_op_num_threads = 2, 1
            so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
            sess = ort.InferenceSession(str(models.resolve(name).path), so, providers=["CPUExecutionProvider"])
            sessions.append((name, sess, {sess.get_inputs()[0].name: rng.random(shape, dtype=np.float32)}))
        per: dict[str, list[float]] = {name: [] for name, _, _ in sessions}
        cycle = []
        for k in range(args.runs + 5):
            t0 = time.perf_counter()
            for name, sess, feed in sessions:
                t = time.perf_counter()
                sess.run(None, feed)
                if k >= 5:
                    per[name].append(1000 * (time.perf_counter() - t))
            if k >= 5:
                cycle.append(1000 * (time.perf_counter() - t0))
        key = "in_turn_threads_2_spin" if spin else "in_turn_threads_2_no_spin"
        out[key] = {"cycle_p50_ms": statistics.median(cycle), "p50_ms": {n: statistics.median(v) for n, v in per.items()}}
        del sessions
        print(f"the four in turn (2 threads, spinning {'on' if spin else 'off'}): p50 {statistics.median(cycle):.2f} ms "
              f"per cycle")
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
