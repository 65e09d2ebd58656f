"""``fr-pbd detect | compare``: developer tools on images (not part of an unlock).

``detect`` prints face boxes; ``compare`` prints same/different, and a score only on
explicit request, with a warning that a score is biometric data; ``compare --json`` prints
what :func:`fr_pbd.same_person` returns (a photo without a usable face is then an answer,
``no_face`` or ``low_quality``, exit 1, as there).
"""

from __future__ import annotations

import argparse
import json
import sys

from fr_pbd.cli._common import EXIT_NO, EXIT_OK, add_json, print_json


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


def cmd_compare(args: argparse.Namespace) -> int:
    from fr_pbd import models, same_person
    from fr_pbd.errors import QualityError
    from fr_pbd.pipeline import build_pipeline

    if args.json:  # the public API's answer, reasons included; no score to show
        answer = same_person(args.image_a, args.image_b)
        print_json(answer.to_dict())
        return EXIT_OK if answer else EXIT_NO
    ext = build_pipeline(liveness=False).extractor  # two photos, not a presentation to a lock
    threshold = models.threshold(ext.model_id)
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


def register(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("detect", help="find faces in an image")
    d.add_argument("image")
    d.add_argument("--json", action="store_true", help="print a JSON list of faces")
    d.set_defaults(func=cmd_detect)

    c = sub.add_parser("compare", help="same person in two images? prints same/different (exit 0/1)")
    c.add_argument("image_a")
    c.add_argument("image_b")
    shown = c.add_mutually_exclusive_group()
    shown.add_argument("--show-score", action="store_true",
                       help="also print the similarity score (biometric data: for developers only)")
    add_json(shown, "{accepted, reason, detail, image} (fr_pbd.same_person's answer)")
    c.set_defaults(func=cmd_compare)
