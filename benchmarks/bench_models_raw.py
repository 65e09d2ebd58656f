"""What the models alone cost: one onnxruntime session per model, random input, no pre/post-processing.

    FR_PBD_MODELS=../shared/models .venv/bin/python benchmarks/bench_models_raw.py --out RESULT.json [--runs 50]

Where does a verification's time go: in the models or around them? ``fr-pbd bench`` times the stages of the real
verifier (pre/post-processing, lanes and contention included); this times each graph the
default board runs, alone, at 1 and 2 intra-op threads, so the difference between the two
is the overhead around the models. Input shapes: the 640x480 YuNet graph (a 640x480 frame),
the dlib ResNet on a batch of 2 (chip and mirror), each MiniFASNet on one 80x80 crop.

Two more comparisons, each interleaved run by run so that the load falls on both alike:

* ``opencv_dnn``: each graph on onnxruntime and on OpenCV's DNN module (``cv2.dnn``, the
  runtime ``fr_pbd.runtime.OpenCvNet`` uses for the MiniFASNets), 1 and 2 threads, and the
  largest difference between their outputs;
* ``blas_contention``: a 128x128 float64 product (the store's rotation check) with the cores
  idle, and with every core running a one-thread embedder (as a verification's lanes do),
  numpy's BLAS at 2 threads and at 1 (``fr_pbd.runtime.one_blas_thread``).
"""

from __future__ import annotations

import argparse
import json
import os
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
    out["opencv_dnn"] = _opencv_vs_onnxruntime(args.runs, rng)
    out["blas_contention"] = _blas_contention(args.runs)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    return 0


def _opencv_vs_onnxruntime(runs: int, rng: np.random.Generator) -> dict:
    import cv2
    import onnxruntime as ort

    from fr_pbd import models

    res: dict = {}
    before = cv2.getNumThreads()
    for name, shape in GRAPHS:
        data = models.resolve(name).data
        x = (rng.random(shape, dtype=np.float32) * 255).astype(np.float32)
        net = cv2.dnn.readNetFromONNX(np.frombuffer(data, dtype=np.uint8))
        outs = list(net.getUnconnectedOutLayersNames())
        for threads in (1, 2):
            so = ort.SessionOptions()
            so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
            sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
            feed = {sess.get_inputs()[0].name: x}
            cv2.setNumThreads(threads)
            t_ort, t_cv = [], []
            for k in range(runs + 5):
                t0 = time.perf_counter()
                want = sess.run(outs, feed)
                t1 = time.perf_counter()
                net.setInput(x)
                got = net.forward(outs)
                t2 = time.perf_counter()
                if k >= 5:
                    t_ort.append(1000 * (t1 - t0))
                    t_cv.append(1000 * (t2 - t1))
            diff = max(float(np.abs(np.asarray(g).reshape(w.shape) - w).max()) for g, w in zip(got, want))
            o, c = statistics.median(t_ort), statistics.median(t_cv)
            res.setdefault(name, {"input": list(shape)})[f"threads_{threads}"] = {
                "onnxruntime_p50_ms": o, "opencv_dnn_p50_ms": c, "onnxruntime_over_opencv": o / c,
                "max_abs_output_difference": diff}
            print(f"{name} threads {threads}: onnxruntime {o:.2f} ms, cv2.dnn {c:.2f} ms ({o / c:.2f}x), "
                  f"outputs differ by at most {diff:.1e}")
    cv2.setNumThreads(before)
    return res


def _blas_contention(runs: int) -> dict:
    import threading

    import onnxruntime as ort
    from threadpoolctl import threadpool_limits

    from fr_pbd import models

    r = np.linalg.qr(np.random.default_rng(1).normal(size=(128, 128)))[0]
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
    sess = ort.InferenceSession(models.resolve("dlib-resnet-v1").data, so, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: np.zeros((1, 3, 150, 150), np.float32)}
    stop = threading.Event()

    def lane() -> None:  # a one-thread embedder run after run, as in a verification's lanes
        while not stop.is_set():
            sess.run(None, feed)

    def products() -> float:
        t = []
        for _ in range(runs):
            t0 = time.perf_counter()
            r @ r.T
            t.append(1000 * (time.perf_counter() - t0))
            time.sleep(0.002)
        return statistics.median(t)

    res: dict = {}
    for threads in (2, 1):
        with threadpool_limits(limits=threads, user_api="blas"):
            idle = products()
            lanes = [threading.Thread(target=lane) for _ in range(os.cpu_count() or 1)]
            for t in lanes:
                t.start()
            time.sleep(0.05)
            busy = products()
            stop.set()
            for t in lanes:
                t.join()
            stop.clear()
        res[f"blas_threads_{threads}"] = {"cores_idle_p50_ms": idle, "every_core_running_onnxruntime_p50_ms": busy}
        print(f"128x128 float64 product, BLAS {threads} thread(s): cores idle {idle:.3f} ms, "
              f"every core running onnxruntime {busy:.3f} ms")
    return res


if __name__ == "__main__":
    raise SystemExit(main())
