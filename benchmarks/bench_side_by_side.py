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

Accuracy is not measured on 26 frames: benchmarks/lfw_devtest_side_by_side.py scores both
pipelines on the 1,000 LFW pairsDevTest pairs (accuracy at the best threshold).

    FR_PBD_MODELS=../shared/models FR_PBD_DATA=../shared/data \\
        python benchmarks/bench_side_by_side.py [--profile x86-generic] [--rounds 5] [--out FILE.json]
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


def main() -> None:
    import cv2

    from fr_pbd import models

    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="x86-generic")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--data", default=os.environ.get("FR_PBD_DATA", "../shared/data"))
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    data = Path(args.data)
    frames = bench.build_frames(data)
    setup = bench.setup_for(args.profile)
    ext, pad = bench._load(setup, liveness=True)
    enrolled = decode_image((data / "faces" / bench.ENROLLED).read_bytes())
    threshold = models.spec("dlib-resnet-v1").default_threshold
    runners = {
        "dlib": dlib_pipeline(np.ascontiguousarray(enrolled[:, :, ::-1])),
        "fr-pbd core": fr_pbd_core(ext, enrolled, threshold),
    }
    home = Path(tempfile.mkdtemp(prefix="fr-pbd-sbs."))
    verifier = bench._make_store(home, ext, pad, data)

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

    med = {name: {label: _median_ms(s) for label, s in v.items()} for name, v in per_image.items()}
    print(f"profile {setup.name}; {len(frames)} frames 640x480 x {args.rounds} rounds; "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print(f"{'frame':34s} {'dlib':>8s} {'core':>8s} {'verify':>8s} {'x core':>7s} {'x verify':>8s} "
          f"{'det':>7s} {'cv2 det':>8s} {'det/cv2':>7s}")
    for f in frames:
        m = {k: med[k][f.label] for k in med}
        print(f"{f.label[:34]:34s} {m['dlib']:8.1f} {m['fr-pbd core']:8.1f} {m['fr-pbd verify']:8.1f} "
              f"{m['dlib'] / m['fr-pbd core']:6.1f}x {m['dlib'] / m['fr-pbd verify']:7.1f}x "
              f"{m['fr-pbd detect']:7.2f} {m['cv2.FaceDetectorYN']:8.2f} "
              f"{m['fr-pbd detect'] / m['cv2.FaceDetectorYN']:6.2f}x")
    overall = {k: statistics.median(v.values()) for k, v in med.items()}
    ratios = {
        "dlib_over_fr_pbd_core": overall["dlib"] / overall["fr-pbd core"],
        "dlib_over_fr_pbd_verify": overall["dlib"] / overall["fr-pbd verify"],
        "fr_pbd_detect_over_cv2": overall["fr-pbd detect"] / overall["cv2.FaceDetectorYN"],
    }
    print("median over frames (ms): " + ", ".join(f"{k} {v:.2f}" for k, v in overall.items()))
    print(f"fr-pbd core is {ratios['dlib_over_fr_pbd_core']:.1f}x faster than dlib's pipeline; "
          f"full verify (liveness + encrypted store) {ratios['dlib_over_fr_pbd_verify']:.1f}x; "
          f"detection fr-pbd / cv2.FaceDetectorYN = {ratios['fr_pbd_detect_over_cv2']:.2f}x")
    agree = sum(answers["dlib"][f.label] == answers["fr-pbd core"][f.label] for f in frames)
    print(f"same yes/no as dlib on {agree}/{len(frames)} frames "
          f"(yes: dlib {sum(answers['dlib'].values())}, fr-pbd core {sum(answers['fr-pbd core'].values())}, "
          f"verify {sum(answers['fr-pbd verify'].values())})")
    if args.out:
        args.out.write_text(json.dumps({"profile": setup.name, "rounds": args.rounds, "frames": len(frames),
                                        "median_ms": overall, "ratios": ratios,
                                        "loadavg": os.getloadavg()}, indent=2) + "\n")
    import shutil

    shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
