"""fr-pbd against the reference pipelines, on the same frames, in one run.

Frames: ``fr-pbd bench``'s fixed set (faces/ photos except the enrolled obama.jpg, and 20
LFW pairsDevTest images, each a 640x480 JPEG as a camera sends it). Per image:

(a) end to end, decode -> yes/no against one enrolled face (obama.jpg):
    * ``dlib``: face_recognition's recipe with dlib-bin: HOG detector (1 upsample, as
      face_recognition.face_locations does by default), the 5-point shape predictor, the
      same ResNet (``compute_face_descriptor``), Euclidean distance <= 0.6;
    * ``fr-pbd core``: the same job in fr-pbd: YuNet (variant per frame), alignment,
      quality gate, the ResNet on onnxruntime (chip + mirror), cosine >= threshold;
      no liveness, no store -- what dlib's pipeline does, nothing more;
    * ``fr-pbd verify``: the real ``Verifier.verify`` (liveness on, encrypted store read,
      lockout write): what a device runs.
(b) detection only: fr-pbd's detector vs ``cv2.FaceDetectorYN`` (the same YuNet file, OpenCV
    DNN, ``setInputSize`` 640x480) on the same decoded frames.

Accuracy is not measured on these few frames: benchmarks/lfw_devtest_side_by_side.py scores
both pipelines on the LFW pairs.

The ratios are of p50s over every (frame, round) sample of each runner, per frame:
``dlib_over_fr_pbd_verify`` = dlib's pipeline / fr-pbd's full verification (liveness and
encrypted store included); ``dlib_over_fr_pbd_core`` = dlib's pipeline / fr-pbd's same job.
Without ``--board`` fr-pbd runs its defaults (fp32 embedder, every core), as ``fr-pbd bench``
does; a board may choose the int8 embedder (``config.precision`` says which).
dlib (dlib-bin) runs as built (``config.dlib`` records its BLAS and AVX flags).

    FR_PBD_MODELS=../shared/models FR_PBD_DATA=../shared/data \\
        .venv/bin/python benchmarks/bench_side_by_side.py [--board x86-generic] [--rounds 5] [--out FILE.json]

``--out`` writes the p50/p95 per runner, the ratios, the yes/no agreement counts and the
configuration (precision, liveness per runner, threads, board, machine, load averages):
timings and counts only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fr_pbd import bench  # noqa: E402
from fr_pbd.machine import machine_info  # noqa: E402
from fr_pbd.pipeline import build_pipeline, run_settings  # noqa: E402
from fr_pbd.capture.image import decode_image  # noqa: E402
from fr_pbd.capture.yunet import NMS_THRESHOLD, SCORE_THRESHOLD, TOP_K  # noqa: E402
from fr_pbd.errors import QualityError  # noqa: E402


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3


def dlib_pipeline(enrolled_rgb: np.ndarray):
    """face_recognition's recipe; returns frame(jpeg) -> bool."""
    import dlib
    import face_recognition_models

    d = Path(face_recognition_models.__file__).parent / "models"
    hog = dlib.get_frontal_face_detector()
    sp5 = dlib.shape_predictor(str(d / "shape_predictor_5_face_landmarks.dat"))
    net = dlib.face_recognition_model_v1(str(d / "dlib_face_recognition_resnet_model_v1.dat"))

    def descriptor(rgb: np.ndarray) -> np.ndarray | None:
        dets = hog(rgb, 1)
        if len(dets) == 0:
            return None
        det = max(dets, key=lambda r: r.width() * r.height())  # the largest face, as fr-pbd's "largest"
        return np.array(net.compute_face_descriptor(rgb, sp5(rgb, det), 0))

    ref = descriptor(enrolled_rgb)
    if ref is None:
        raise SystemExit("dlib found no face in the enrolment image")

    def run(jpeg: bytes) -> bool:
        rgb = np.ascontiguousarray(decode_image(jpeg)[:, :, ::-1])
        q = descriptor(rgb)
        return q is not None and float(np.linalg.norm(q - ref)) <= 0.6

    return run


def fr_pbd_core(ext, enrolled_bgr: np.ndarray, threshold: float):
    """Detect, align, gate, embed, match in memory: the same job as dlib's pipeline."""
    ref = ext.template(enrolled_bgr, "enrol").vector

    def run(jpeg: bytes) -> bool:
        try:
            t = ext.template(decode_image(jpeg), "verify")
        except QualityError:
            return False
        return float(t.vector @ ref) >= threshold

    return run


def summary_ms(samples: list[float]) -> dict[str, float]:
    a = np.array(samples) * 1e3
    return {"p50": round(float(np.percentile(a, 50)), 3), "p95": round(float(np.percentile(a, 95)), 3),
            "n": int(a.size)}


def main() -> None:
    import cv2
    import dlib

    from fr_pbd import models

    ap = argparse.ArgumentParser()
    ap.add_argument("--board", default=None,
                    help="board name or file (default: none, fr-pbd's defaults: fp32 embedder, every core)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--data", default=os.environ.get("FR_PBD_DATA", "../shared/data"))
    ap.add_argument("--out", type=Path, help="write the figures and the configuration here (JSON)")
    args = ap.parse_args()
    load_before = [round(x, 2) for x in os.getloadavg()]
    data = Path(args.data)
    frames = bench.build_frames(data)
    settings = run_settings(args.board)
    pipeline = build_pipeline(settings, liveness=True)
    ext = pipeline.extractor
    enrolled = decode_image((data / "faces" / bench.ENROLLED).read_bytes())
    threshold = models.threshold(settings.embedder)
    runners = {
        "dlib": dlib_pipeline(np.ascontiguousarray(enrolled[:, :, ::-1])),
        "fr-pbd core": fr_pbd_core(ext, enrolled, threshold),
    }
    home = Path(tempfile.mkdtemp(prefix="fr-pbd-sbs."))
    verifier = bench._make_store(home, pipeline, data, hook=lambda stage, seconds: None)

    runners["fr-pbd verify"] = lambda jpeg: verifier.verify(jpeg).accepted
    yn = cv2.FaceDetectorYN.create(str(models.resolve("yunet-2023mar").path), "", bench.FRAME_SIZE,
                                   SCORE_THRESHOLD, NMS_THRESHOLD, TOP_K)
    decoded = [decode_image(f.jpeg) for f in frames]
    det_runners = {"fr-pbd detect": ext.detector.detect, "cv2.FaceDetectorYN": lambda img: yn.detect(img)}

    per_image: dict[str, dict[str, list[float]]] = {k: {f.label: [] for f in frames} for k in (*runners, *det_runners)}
    answers: dict[str, dict[str, bool]] = {k: {} for k in runners}
    for name, fn in runners.items():  # warm-up
        fn(frames[0].jpeg)
    bench._reset_lockout(verifier)
    for _ in range(args.rounds):
        for f, img in zip(frames, decoded):
            for name, fn in runners.items():
                t0 = time.perf_counter()
                answers[name][f.label] = fn(f.jpeg)
                per_image[name][f.label].append(time.perf_counter() - t0)
                if name == "fr-pbd verify":
                    bench._reset_lockout(verifier)  # untimed: keeps impostor frames from locking the store
            for name, fn in det_runners.items():
                t0 = time.perf_counter()
                fn(img)
                per_image[name][f.label].append(time.perf_counter() - t0)
    load_after = [round(x, 2) for x in os.getloadavg()]

    med = {name: {label: _median_ms(s) for label, s in v.items()} for name, v in per_image.items()}
    precision = settings.embedder_variant
    print(f"board {settings.board} ({precision} embedder); {len(frames)} frames 640x480 x {args.rounds} rounds; "
          f"load average {load_before[0]:.2f} -> {load_after[0]:.2f} on {os.cpu_count()} cores")
    print(f"{'frame':34s} {'dlib':>8s} {'core':>8s} {'verify':>8s} {'x core':>7s} {'x verify':>8s} "
          f"{'det':>7s} {'cv2 det':>8s} {'det/cv2':>7s}")
    for f in frames:
        m = {k: med[k][f.label] for k in med}
        print(f"{f.label[:34]:34s} {m['dlib']:8.1f} {m['fr-pbd core']:8.1f} {m['fr-pbd verify']:8.1f} "
              f"{m['dlib'] / m['fr-pbd core']:6.1f}x {m['dlib'] / m['fr-pbd verify']:7.1f}x "
              f"{m['fr-pbd detect']:7.2f} {m['cv2.FaceDetectorYN']:8.2f} "
              f"{m['fr-pbd detect'] / m['cv2.FaceDetectorYN']:6.2f}x")
    pooled = {name: summary_ms([t for s in v.values() for t in s]) for name, v in per_image.items()}
    p50 = {k: v["p50"] for k, v in pooled.items()}
    ratios = {
        "dlib_over_fr_pbd_core": p50["dlib"] / p50["fr-pbd core"],
        "dlib_over_fr_pbd_verify": p50["dlib"] / p50["fr-pbd verify"],
        "fr_pbd_detect_over_cv2": p50["fr-pbd detect"] / p50["cv2.FaceDetectorYN"],
    }
    print("p50 over all samples (ms): " + ", ".join(f"{k} {v:.2f}" for k, v in p50.items()))
    print(f"fr-pbd core is {ratios['dlib_over_fr_pbd_core']:.1f}x faster than dlib's pipeline; "
          f"full verify (liveness + encrypted store) {ratios['dlib_over_fr_pbd_verify']:.1f}x; "
          f"detection fr-pbd / cv2.FaceDetectorYN = {ratios['fr_pbd_detect_over_cv2']:.2f}x")
    agree = sum(answers["dlib"][f.label] == answers["fr-pbd core"][f.label] for f in frames)
    yes = {k: sum(v.values()) for k, v in answers.items()}
    print(f"same yes/no as dlib on {agree}/{len(frames)} frames "
          f"(yes: dlib {yes['dlib']}, fr-pbd core {yes['fr-pbd core']}, verify {yes['fr-pbd verify']})")
    if args.out:
        doc = {
            "benchmark": "bench_side_by_side",
            "config": {
                "board": settings.board, "precision": precision, "threads": settings.threads or os.cpu_count(),
                "providers": list(settings.providers), "detector_input": list(settings.detector_input),
                "embedder": settings.embedder,
                "liveness": True,
                "liveness_by_runner": {"dlib": False, "fr-pbd core": False, "fr-pbd verify": True},
                "runners": {
                    "dlib": "HOG (1 upsample) + 5-point shape predictor + dlib ResNet, Euclidean <= 0.6, "
                            "one enrolled face in memory; no liveness, no store",
                    "fr-pbd core": "YuNet, alignment, quality gate, ResNet (chip + mirror), cosine >= "
                                   f"{threshold}; no liveness, no store",
                    "fr-pbd verify": "Verifier.verify: core + liveness (both MiniFASNets) + encrypted store read, "
                                     "match against 6 users / 26 templates, lockout transaction",
                    "fr-pbd detect": "fr-pbd's YuNet detector on the decoded frame",
                    "cv2.FaceDetectorYN": "the same YuNet file through OpenCV DNN, input 640x480",
                },
                "dlib": {"version": dlib.__version__, "blas": bool(dlib.DLIB_USE_BLAS),
                         "avx": bool(dlib.USE_AVX_INSTRUCTIONS)},
            },
            "frames": len(frames), "rounds": args.rounds, "frame_size": list(bench.FRAME_SIZE),
            "timings_ms": pooled,
            "ratios": ratios,
            "ratio_definitions": {
                "dlib_over_fr_pbd_verify": "p50 per frame of dlib's pipeline / p50 per frame of fr-pbd's full "
                                           "verification (liveness and encrypted store included)",
                "dlib_over_fr_pbd_core": "p50 per frame of dlib's pipeline / p50 per frame of fr-pbd's same job "
                                         "(no liveness, no store)",
                "fr_pbd_detect_over_cv2": "p50 of fr-pbd's detector / p50 of cv2.FaceDetectorYN, same frames",
            },
            "yes_no": {"same_as_dlib_core": agree, "yes": yes},
            "machine": machine_info(),
            "load": {"loadavg_before": load_before, "loadavg_after": load_after},
        }
        args.out.write_text(json.dumps(doc, indent=2) + "\n")
    import shutil

    shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
