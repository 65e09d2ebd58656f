"""Lanes vs one-after-the-other, side by side in one process (docs/performance.md).

Both modes share the detector and the frames; per frame, interleaved, each runs decode ->
detect -> align -> quality -> liveness (both MiniFASNets) -> embed (chip + mirror):

* ``sequential``: the capture path before the lanes: liveness then one batch of chip and
  mirror, every session with one intra-op thread per core;
* ``lanes``: what ``build_pipeline`` assembles now: the liveness lane starts when the face
  is chosen, the mirror runs in a second lane, sessions with ``cores // 2`` threads.

Interleaving per frame means the load of other processes falls on both alike; the ratio
is the figure. Wall time and process CPU time (all threads) per call are both kept: on an
idle core the lanes save wall time; on a saturated machine they cannot.

    FR_PBD_MODELS=../shared/models FR_PBD_DATA=../shared/data \\
        .venv/bin/python benchmarks/bench_lanes.py [--rounds 5] [--out FILE.json]

Timings and counts only: no score or template is written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from fr_pbd import bench, models  # noqa: E402
from fr_pbd.capture.extractor import TemplateExtractor  # noqa: E402
from fr_pbd.capture.liveness import MODEL_NAMES, LivenessDetector  # noqa: E402
from fr_pbd.errors import QualityError  # noqa: E402
from fr_pbd.machine import machine_info  # noqa: E402
from fr_pbd.pipeline import build_pipeline  # noqa: E402
from fr_pbd.runtime import cores, create_session  # noqa: E402


class _Refused(Exception):
    pass


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--data", default=os.environ.get("FR_PBD_DATA", "../shared/data"))
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    load_before = [round(x, 2) for x in os.getloadavg()]
    frames = bench.build_frames(Path(args.data))
    pipe = build_pipeline(None, liveness=True)
    n = cores()
    emb_cls = type(pipe.extractor.embedder)
    old_emb = emb_cls(create_session(models.resolve(pipe.settings.embedder), threads=n))
    old_pad = LivenessDetector({m: create_session(models.resolve(m), threads=n) for m in MODEL_NAMES})
    modes = {
        "sequential": (TemplateExtractor(pipe.extractor.detector, old_emb), old_pad),
        "lanes": (pipe.extractor, pipe.liveness),
    }

    def check_of(pad):
        def check(frame, face):
            if not pad.is_live(frame, face):
                raise _Refused
        return check

    wall: dict[str, list[float]] = {m: [] for m in modes}
    cpu: dict[str, list[float]] = {m: [] for m in modes}
    answers: dict[str, list[str]] = {m: [] for m in modes}
    for r in range(args.rounds + 1):  # round 0 warms up
        for f in frames:
            for name, (ext, pad) in modes.items():
                t0, c0 = time.perf_counter(), time.process_time()
                try:
                    ext.template(f.jpeg, "verify", check=check_of(pad))
                    answer = "template"
                except QualityError as e:
                    answer = e.reason
                except _Refused:
                    answer = "attack"
                if r:
                    wall[name].append(time.perf_counter() - t0)
                    cpu[name].append(time.process_time() - c0)
                    answers[name].append(answer)
    load_after = [round(x, 2) for x in os.getloadavg()]

    def ms(a: list[float]) -> dict[str, float]:
        x = np.asarray(a) * 1e3
        return {"p50": round(float(np.percentile(x, 50)), 3), "p95": round(float(np.percentile(x, 95)), 3),
                "n": int(x.size)}

    res = {m: {"wall_ms": ms(wall[m]), "cpu_ms": ms(cpu[m])} for m in modes}
    same = sum(a == b for a, b in zip(answers["sequential"], answers["lanes"]))
    ratio = res["sequential"]["wall_ms"]["p50"] / res["lanes"]["wall_ms"]["p50"]
    for m, v in res.items():
        print(f"{m:10s} wall p50 {v['wall_ms']['p50']:7.2f} p95 {v['wall_ms']['p95']:7.2f} ms; "
              f"cpu p50 {v['cpu_ms']['p50']:7.2f} ms")
    print(f"sequential / lanes (wall p50) = {ratio:.2f}; same outcome on {same}/{len(answers['lanes'])} calls; "
          f"load {load_before[0]} -> {load_after[0]} on {os.cpu_count()} cores")
    if args.out:
        doc = {"benchmark": "bench_lanes", "frames": len(frames), "rounds": args.rounds,
               "modes": {"sequential": "liveness then one batch of chip + mirror; sessions with every core",
                         "lanes": "build_pipeline's lanes (fr_pbd.runtime): liveness from the chosen face, "
                                  "mirror in a second lane; sessions with cores // 2 threads"},
               "timings": res, "sequential_over_lanes_wall_p50": round(ratio, 3),
               "same_outcome": {"calls": len(answers["lanes"]), "same": same},
               "config": {"precision": pipe.embedder_graph, "liveness": True, "threads": n,
                          "board": pipe.settings.board},
               "machine": machine_info(), "load": {"loadavg_before": load_before, "loadavg_after": load_after}}
        args.out.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
