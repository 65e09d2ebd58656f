"""fr-pbd vs dlib's own pipeline (face_recognition style) on LFW pairs, in one run.

Peer: dlib HOG detector (1 upsample) + 5-point shape predictor + the same ResNet,
via dlib-bin and face_recognition_models, as face_recognition does it. Ours:
YuNet + calibrated alignment + the converted ResNet on onnxruntime. Both pick
the face nearest the image centre when several are found. A pair with a
failed image counts as wrong at every threshold. Prints accuracy at the best
single threshold, FTA, median per-image latency (decode to descriptor), and,
for the peer, accuracy at dlib's customary distance 0.6.

    FR_PBD_MODELS=../shared/models .venv/bin/python benchmarks/lfw_devtest_side_by_side.py ../shared/data/lfw [--pairs pairs.txt] [--out FILE.json]

With ``--pairs pairs.txt`` it also gives the 10-fold accuracy of both (threshold
chosen on the other 9 folds). FNMR at FMR 1e-4 needs all cross-identity
comparisons (``fr-pbd eval lfw``); the 3,000 impostor pairs of a pairs file
cannot resolve it, so this script does not report it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.helpers import lfw_image_path, read_pairs  # noqa: E402

from fr_pbd.capture.image import load_image  # noqa: E402
from fr_pbd.errors import QualityError  # noqa: E402
from fr_pbd.machine import machine_info  # noqa: E402
from fr_pbd.pipeline import build_pipeline  # noqa: E402


def load_extractor():
    """fr-pbd's default pipeline: no board, so the fp32 embedder on every core."""
    return build_pipeline(board=None, liveness=False).extractor


def best_threshold_accuracy(scores: np.ndarray, same: np.ndarray, higher_is_same: bool) -> tuple[float, float]:
    """Accuracy at the best single threshold; NaN scores (failed images) are always wrong."""
    s = scores if higher_is_same else -scores
    ok = ~np.isnan(s)
    cands = np.unique(s[ok])
    best, best_t = 0.0, float("nan")
    for t in np.concatenate([cands, [np.inf]]):
        pred = s >= t
        acc = float(((pred == same) & ok).mean())
        if acc > best:
            best, best_t = acc, float(t)
    return best, best_t if higher_is_same else -best_t


def run_ours(paths: list[Path]) -> tuple[dict, list[float]]:
    ext = load_extractor()
    ext.template(paths[0], "verify", "center")  # warm-up
    out, times = {}, []
    for p in paths:
        t0 = time.perf_counter()
        try:
            out[p] = ext.template(p, "verify", "center").vector
        except QualityError:
            out[p] = None
        times.append(time.perf_counter() - t0)
    return out, times


def run_dlib(paths: list[Path]) -> tuple[dict, list[float]]:
    import dlib
    import face_recognition_models

    models = Path(face_recognition_models.__file__).parent / "models"
    hog = dlib.get_frontal_face_detector()
    sp5 = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
    net = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))
    out, times = {}, []
    for p in paths:
        t0 = time.perf_counter()
        rgb = np.ascontiguousarray(load_image(p)[:, :, ::-1])
        dets = hog(rgb, 1)
        if len(dets) == 0:
            out[p] = None
        else:
            h, w = rgb.shape[:2]
            d = min(dets, key=lambda r: np.hypot((r.left() + r.right()) / 2 - w / 2, (r.top() + r.bottom()) / 2 - h / 2))
            shape = sp5(rgb, d)
            out[p] = np.array(net.compute_face_descriptor(rgb, shape, 0), dtype=np.float32)
        times.append(time.perf_counter() - t0)
    return out, times


def score_pairs(pairs, lfw: Path, desc: dict, metric: str) -> np.ndarray:
    s = np.full(len(pairs), np.nan)
    for i, (a, na, b, nb) in enumerate(pairs):
        x, y = desc[lfw_image_path(lfw, a, na)], desc[lfw_image_path(lfw, b, nb)]
        if x is None or y is None:
            continue
        s[i] = float(x @ y) if metric == "cosine" else float(np.linalg.norm(x - y))
    return s


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("lfw", type=Path)
    ap.add_argument("--pairs", default="pairsDevTest.txt")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    pairs = read_pairs(args.lfw / args.pairs)
    same = np.array([a == b for a, _, b, _ in pairs])
    paths = list(dict.fromkeys(lfw_image_path(args.lfw, n, k) for a, na, b, nb in pairs for n, k in ((a, na), (b, nb))))
    print(f"{args.pairs}: {len(pairs)} pairs, {len(paths)} images", flush=True)
    load_before = [round(x, 2) for x in os.getloadavg()]
    result = {"benchmark": "lfw_devtest_side_by_side", "pairs_file": args.pairs, "pairs": len(pairs),
              "images": len(paths)}
    for name, runner, metric, higher in (("fr-pbd", run_ours, "cosine", True), ("dlib", run_dlib, "euclidean", False)):
        t0 = time.time()
        desc, times = runner(paths)
        scores = score_pairs(pairs, args.lfw, desc, metric)
        acc, thr = best_threshold_accuracy(scores, same, higher)
        fta = sum(v is None for v in desc.values())
        tenfold = None
        if len(pairs) == 6000:  # pairs.txt: 10 folds of 600, threshold chosen on the other 9
            from fr_pbd.eval.metrics import kfold_accuracy

            folds = np.arange(len(pairs)) // 600
            tenfold = kfold_accuracy(scores if higher else -scores, same, folds)
        r = {"accuracy_best_threshold": acc, "threshold": thr, "fta_images": fta,
             "median_ms_per_image": statistics.median(times) * 1e3, "wall_s": time.time() - t0}
        if tenfold is not None:
            r["accuracy_10fold_mean"], r["accuracy_10fold_std"] = tenfold.mean, tenfold.std
        if name == "dlib":
            ok = ~np.isnan(scores)
            r["accuracy_at_0.6"] = float((((scores <= 0.6) == same) & ok).mean())
        result[name] = r
        print(f"{name:7s} accuracy {100 * acc:.2f} % at {metric} threshold {thr:.4f}; FTA {fta}/{len(paths)} images; "
              f"median {r['median_ms_per_image']:.1f} ms/image; {r['wall_s']:.0f} s"
              + (f"; at dlib's 0.6: {100 * r['accuracy_at_0.6']:.2f} %" if name == "dlib" else "")
              + (f"; 10-fold {100 * tenfold.mean:.2f} % +- {100 * tenfold.std:.2f}" if tenfold else ""), flush=True)
    result["latency_ratio_dlib_over_fr_pbd"] = result["dlib"]["median_ms_per_image"] / result["fr-pbd"]["median_ms_per_image"]
    print(f"fr-pbd is {result['latency_ratio_dlib_over_fr_pbd']:.1f}x faster per image (median)")
    import dlib

    ext_model = "dlib-resnet-v1"
    result["config"] = {
        "precision": "fp32", "liveness": False, "threads": os.cpu_count(), "board": None,
        "fr-pbd": f"fr-pbd's default pipeline: YuNet, alignment, quality gate, {ext_model} (fp32, chip + mirror) "
                  "on onnxruntime; the face nearest the centre; cosine",
        "dlib": "HOG (1 upsample) + 5-point shape predictor + dlib ResNet (compute_face_descriptor, no jitter); "
                "the face nearest the centre; Euclidean",
        "dlib_build": {"version": dlib.__version__, "blas": bool(dlib.DLIB_USE_BLAS),
                       "avx": bool(dlib.USE_AVX_INSTRUCTIONS)},
        "timing": "per image, decode to descriptor, one image after another; median",
        "latency_ratio": "median ms per image of dlib / median ms per image of fr-pbd",
    }
    result["machine"] = machine_info()
    result["load"] = {"loadavg_before": load_before, "loadavg_after": [round(x, 2) for x in os.getloadavg()]}
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
