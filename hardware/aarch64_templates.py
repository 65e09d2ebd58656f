#!/usr/bin/env python3
"""Templates of a few LFW images on one machine, and their comparison across two machines.

Used by ``hardware/aarch64-emulated.sh`` (issue 16, item 3): the same fr-pbd source
computes the templates on x86_64 and on aarch64 (under qemu-user), and ``compare``
checks that both give the same templates (cosine per image) and the same yes/no per
LFW pair at the manifest's threshold.

    python hardware/aarch64_templates.py extract --lfw DIR --out FILE [--pairs N]
    python hardware/aarch64_templates.py compare X86_FILE ARM_FILE [--out SUMMARY.json]

``extract`` writes the template vectors to FILE: LFW templates are biometric test data.
Keep FILE outside the repository and delete it after the comparison. ``compare``
prints (and writes with ``--out``) only figures: cosines, decisions, agreement. It
writes no vectors and no names: a pair is its line number in LFW's ``pairs.txt``.

The images are the first N matched and the first N mismatched pairs of fold 1 of
``pairs.txt`` that share no image (default N = 5: 20 distinct images), in the file's order. Each image goes
through ``TemplateExtractor.template(path, purpose="verify", select="center")``, the
call ``fr-pbd eval lfw`` uses, with the default pipeline (no board: the same graphs on
both machines).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path


def lfw_pairs(lfw: Path, n: int) -> list[tuple[str, str, bool, int]]:
    """The first ``n`` matched and ``n`` mismatched pairs of pairs.txt's first fold that share no image.

    (image, image, same, line number in pairs.txt), in the file's order; a pair that reuses an image already taken is
    skipped, so ``n`` = 5 gives 20 distinct images.
    """
    lines = (lfw / "pairs.txt").read_text(encoding="utf-8").splitlines()
    per_fold = int(lines[0].split()[1])
    matched = [(k + 1, ln.split()) for k, ln in enumerate(lines) if 1 <= k <= per_fold]
    mismatched = [(k + 1, ln.split()) for k, ln in enumerate(lines) if per_fold < k <= 2 * per_fold]

    def img(name: str, i: str) -> str:
        return f"{name}/{name}_{int(i):04d}.jpg"

    pairs: list[tuple[str, str, bool, int]] = []
    seen: set[str] = set()
    for same, rows in ((True, matched), (False, mismatched)):
        taken = 0
        for line, row in rows:
            x, y = (img(row[0], row[1]), img(row[0], row[2])) if same else (img(row[0], row[1]), img(row[2], row[3]))
            if taken < n and x not in seen and y not in seen:  # 2n pairs of 4n distinct images
                pairs.append((x, y, same, line))
                seen.update((x, y))
                taken += 1
    return pairs


def versions() -> dict[str, str]:
    import cv2
    import numpy
    import onnxruntime

    import fr_pbd

    return {"python": platform.python_version(), "machine": platform.machine(),
            "fr_pbd": getattr(fr_pbd, "__version__", "?"), "numpy": numpy.__version__,
            "opencv": cv2.__version__, "onnxruntime": onnxruntime.__version__}


def extract(args: argparse.Namespace) -> int:
    from fr_pbd import models
    from fr_pbd.errors import FrPbdError
    from fr_pbd.pipeline import build_pipeline

    pairs = lfw_pairs(args.lfw, args.pairs)
    images = list(dict.fromkeys(p for a, b, _, _ in pairs for p in (a, b)))
    t0 = time.perf_counter()
    pipe = build_pipeline(liveness=False)
    load_s = time.perf_counter() - t0
    ex = pipe.extractor
    out: dict[str, object] = {"versions": versions(), "pipeline": pipe.describe(), "model_id": ex.model_id,
                              "threshold": models.threshold(ex.model_id), "pairs": pairs, "templates": {},
                              "failures": {}, "load_s": round(load_s, 3)}
    t0 = time.perf_counter()
    for k, name in enumerate(images, 1):
        print(f"  image {k}/{len(images)} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
        try:
            out["templates"][name] = [float(x) for x in ex.template(args.lfw / name, purpose="verify",
                                                                    select="center").vector]
        except FrPbdError as exc:  # a quality refusal is an answer too: it must be the same on both sides
            out["failures"][name] = type(exc).__name__ + ": " + str(exc).split(":")[0]
    out["extract_s"] = round(time.perf_counter() - t0, 3)
    out["images"] = len(images)
    args.out.write_text(json.dumps(out), encoding="utf-8")
    print(f"{len(out['templates'])} templates, {len(out['failures'])} refused, of {len(images)} images "
          f"({out['versions']['machine']}; load {load_s:.1f} s, extract {out['extract_s']:.1f} s)")
    return 0


def compare(args: argparse.Namespace) -> int:
    import numpy as np

    a = json.loads(args.a.read_text(encoding="utf-8"))
    b = json.loads(args.b.read_text(encoding="utf-8"))
    problems = []
    if a["pairs"] != b["pairs"] or a["model_id"] != b["model_id"] or a["threshold"] != b["threshold"]:
        problems.append("the two files are not of the same pairs, model and threshold")
    if a["failures"] != b["failures"]:
        problems.append(f"different refusals: {a['failures']} vs {b['failures']}")
    common = sorted(set(a["templates"]) & set(b["templates"]))
    cos = {n: float(np.dot(a["templates"][n], b["templates"][n])
                    / (np.linalg.norm(a["templates"][n]) * np.linalg.norm(b["templates"][n]))) for n in common}
    t = a["threshold"]

    def decide(side: dict, x: str, y: str) -> str:
        if x in side["failures"] or y in side["failures"]:
            return "refused"
        return "yes" if float(np.dot(side["templates"][x], side["templates"][y])) >= t else "no"

    rows = []
    for x, y, same, line in a["pairs"]:
        da, db = decide(a, x, y), decide(b, x, y)
        sa = float(np.dot(a["templates"][x], a["templates"][y])) if da != "refused" else None
        sb = float(np.dot(b["templates"][x], b["templates"][y])) if db != "refused" else None
        # No scores (a result holds no comparison scores of people: hardware/results/README.md),
        # only how far the two machines' scores of one pair lie apart.
        rows.append({"pairs_txt_line": line, "same_person": same, "a": da, "b": db,
                     "score_diff": None if sa is None or sb is None else float(f"{abs(sa - sb):.3g}")})
    agree = sum(r["a"] == r["b"] for r in rows)
    values = sorted(cos.values())
    summary = {
        "what": "per-image template cosine between two machines (a, b) and yes/no per LFW pair at the "
                "manifest threshold; made by hardware/aarch64_templates.py compare",
        "a": {"versions": a["versions"], "pipeline": a["pipeline"]},
        "b": {"versions": b["versions"], "pipeline": b["pipeline"]},
        "model_id": a["model_id"], "threshold": t,
        "images": len(set(a["templates"]) | set(a["failures"])), "templates_compared": len(values),
        "refused_a": len(a["failures"]), "refused_b": len(b["failures"]),
        "cosine_min": float(f"{values[0]:.8f}") if values else None,
        "cosine_median": float(f"{statistics.median(values):.8f}") if values else None,
        "cosine_max": float(f"{values[-1]:.8f}") if values else None,
        "images_below_0.9999": sum(v < 0.9999 for v in values),
        "pairs": len(rows), "pairs_same_answer": agree,
        "pair_score_diff_max": max((r["score_diff"] for r in rows if r["score_diff"] is not None), default=None),
        "pairs_correct_a": sum((r["a"] == "yes") == r["same_person"] for r in rows),
        "pairs_correct_b": sum((r["b"] == "yes") == r["same_person"] for r in rows),
        "pair_rows": rows,
    }
    ok = not problems and values and values[0] >= 0.9999 and agree == len(rows)
    summary["problems"] = problems
    summary["pass"] = bool(ok)
    text = json.dumps(summary, indent=2)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    brief = {k: v for k, v in summary.items() if k not in ("pair_rows", "a", "b", "what")}
    print(json.dumps(brief, indent=None))
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("extract", help="templates of the LFW pair images (vectors: keep the file out of git)")
    e.add_argument("--lfw", type=Path, required=True, help="the LFW directory (with pairs.txt)")
    e.add_argument("--out", type=Path, required=True)
    e.add_argument("--pairs", type=int, default=5, help="matched and mismatched pairs each (default 5: 20 images)")
    c = sub.add_parser("compare", help="cosine per image and yes/no per pair, two extract files")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    c.add_argument("--out", type=Path, help="write the summary JSON (figures only) here")
    args = p.parse_args(argv)
    return extract(args) if args.cmd == "extract" else compare(args)


if __name__ == "__main__":
    sys.exit(main())
