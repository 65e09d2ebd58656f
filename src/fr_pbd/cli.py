"""The ``fr-pbd`` command.

Every command prints one-line errors (never a traceback) and exits with
0 on success, 1 for a negative answer (``no``, ``different``), 2 for an error.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from typing import Callable, Sequence

from fr_pbd import __version__
from fr_pbd.errors import FrPbdError

EXIT_OK, EXIT_NO, EXIT_ERROR, EXIT_INTERNAL = 0, 1, 2, 3


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # usage errors: one line + usage, exit 2
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"fr-pbd: error: {message}\n")


# --- detect ---------------------------------------------------------------------
def cmd_detect(args: argparse.Namespace) -> int:
    from fr_pbd.capture.detect import detect_faces

    faces = detect_faces(args.image)
    if args.json:
        print(json.dumps([f.to_dict() for f in faces]))
        return EXIT_OK
    print(f"{len(faces)} face(s) in {args.image}")
    for i, f in enumerate(faces, 1):
        x, y, w, h = (round(float(v)) for v in f.box)
        print(f"  face {i}: box x={x} y={y} w={w} h={h}  score={f.score:.3f}")
    return EXIT_OK


# --- compare ------------------------------------------------------------------------
def cmd_compare(args: argparse.Namespace) -> int:
    from fr_pbd import models
    from fr_pbd.capture import dlib_resnet
    from fr_pbd.capture.pipeline import load_extractor
    from fr_pbd.errors import ModelError, QualityError

    threshold = models.spec(dlib_resnet.MODEL_ID).default_threshold
    if threshold is None:
        raise ModelError(f"the manifest gives no default threshold for {dlib_resnet.MODEL_ID}")
    ext = load_extractor()
    templates = []
    for image in (args.image_a, args.image_b):
        try:
            templates.append(ext.template(image, "verify"))
        except QualityError as exc:
            raise QualityError(exc.reason, f"{image}: {exc}") from None
    score = float(templates[0].vector @ templates[1].vector)
    same = score >= threshold
    print("same" if same else "different")
    if args.show_score:
        print("fr-pbd: warning: a similarity score is biometric data; do not store or share it", file=sys.stderr)
        print(f"score {score:.4f} (cosine; threshold {threshold:.4f})")
    return EXIT_OK if same else EXIT_NO


# --- models -----------------------------------------------------------------------
def cmd_models_list(args: argparse.Namespace) -> int:
    from fr_pbd import models

    rows = []
    for name, spec in models.manifest().items():
        st = models.status(name)
        state = "verified" if st.verified else ("HASH MISMATCH" if st.path else "missing")
        rows.append((name, spec.role, spec.licence, state, str(st.path) if st.path else f"-> {spec.fix_command}"))
    if args.json:
        print(json.dumps([dict(zip(("name", "role", "licence", "state", "where"), r)) for r in rows]))
        return EXIT_OK
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4])
    return EXIT_OK


def cmd_models_fetch(args: argparse.Namespace) -> int:
    from fr_pbd import models
    from fr_pbd.models.fetch import fetch

    names = [n for n, s in models.manifest().items() if s.obtain == "fetch"] if args.name == "all" else [args.name]
    for name in names:
        print(f"fetching {name}", file=sys.stderr)
        path = fetch(name)
        print(f"{name}: verified {path}")
    return EXIT_OK


def cmd_models_build(args: argparse.Namespace) -> int:
    from fr_pbd import models
    from fr_pbd.errors import ModelError

    if args.name not in ("dlib-resnet", "dlib-resnet-v1"):
        raise ModelError(f"no build recipe for {args.name!r}; buildable: dlib-resnet")
    from fr_pbd.models.build_dlib import build_dlib_resnet

    spec = models.spec("dlib-resnet-v1")
    out_dir = models.cache_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / spec.file
    digest = build_dlib_resnet(out, args.dat)
    if digest != spec.sha256:
        out.unlink(missing_ok=True)
        raise ModelError(
            f"the built {spec.file} has sha256 {digest}, the manifest pins {spec.sha256}; "
            "removed (is face_recognition_models the pinned 0.3.0?)"
        )
    print(f"dlib-resnet-v1: built and verified {out}")
    return EXIT_OK


# --- doctor -------------------------------------------------------------------------
def cmd_doctor(args: argparse.Namespace) -> int:
    import cv2
    import cryptography
    import numpy as np
    import onnxruntime as ort

    from fr_pbd import models

    ok = True
    print(f"fr-pbd {__version__}")
    print(f"python {platform.python_version()} ({platform.machine()}, {platform.system()} {platform.release()})")
    print(f"cpus {os.cpu_count()}")
    print(f"numpy {np.__version__}, opencv {cv2.__version__}, onnxruntime {ort.__version__}, "
          f"cryptography {cryptography.__version__}")
    print(f"onnxruntime providers: {', '.join(ort.get_available_providers())}")
    print(f"model search path: {' , '.join(str(d) for d in models.search_dirs())}")
    for name, spec in models.manifest().items():
        st = models.status(name)
        needed = spec.role == "detector" or name == "dlib-resnet-v1"
        state = "verified" if st.verified else ("HASH MISMATCH" if st.path else "missing")
        flag = "required" if needed else "optional"
        print(f"  {name:18s} {state:14s} ({flag})" + ("" if st.verified else f"  fix: {spec.fix_command}"))
        if needed and not st.verified:
            ok = False
    print("pipeline: ready" if ok else "pipeline: NOT ready (see above)")
    return EXIT_OK if ok else EXIT_ERROR


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="fr-pbd", description="Privacy-by-design on-device face verification.")
    p.add_argument("--version", action="version", version=f"fr-pbd {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    d = sub.add_parser("detect", help="find faces in an image")
    d.add_argument("image")
    d.add_argument("--json", action="store_true", help="print a JSON list of faces")
    d.set_defaults(func=cmd_detect)

    c = sub.add_parser("compare", help="same person in two images? prints same/different (exit 0/1)")
    c.add_argument("image_a")
    c.add_argument("image_b")
    c.add_argument("--show-score", action="store_true",
                   help="also print the similarity score (biometric data: for developers only)")
    c.set_defaults(func=cmd_compare)

    m = sub.add_parser("models", help="list, fetch or build models")
    msub = m.add_subparsers(dest="models_command", metavar="ACTION", parser_class=_Parser)
    msub.required = True
    ml = msub.add_parser("list", help="which models are present and verified")
    ml.add_argument("--json", action="store_true")
    ml.set_defaults(func=cmd_models_list)
    mf = msub.add_parser("fetch", help="download a model (pinned URL, sha256 checked); the only network use")
    mf.add_argument("name", help="model name from `fr-pbd models list`, or 'all'")
    mf.set_defaults(func=cmd_models_fetch, network=True)
    mb = msub.add_parser("build", help="build a model from a local source (dlib-resnet)")
    mb.add_argument("name")
    mb.add_argument("--dat", default=None, help="path to dlib_face_recognition_resnet_model_v1.dat")
    mb.set_defaults(func=cmd_models_build)

    doc = sub.add_parser("doctor", help="check that this machine can run the pipeline")
    doc.set_defaults(func=cmd_doctor)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except FrPbdError as exc:
        print(f"fr-pbd: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("fr-pbd: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - last line of defence: one line, no traceback
        if os.environ.get("FR_PBD_DEBUG"):
            raise
        print(f"fr-pbd: internal error: {type(exc).__name__}: {exc} (set FR_PBD_DEBUG=1 for details)",
              file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
