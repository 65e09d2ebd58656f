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


# --- enrol / verify / store management ----------------------------------------------
CONSENT_TEXT_VERSION = "1"


def _consent_text() -> str:
    from importlib import resources

    here = resources.files("fr_pbd").joinpath("_data", "consent-v1.txt")
    if here.is_file():
        return here.read_text(encoding="utf-8")
    from pathlib import Path

    return (Path(__file__).resolve().parents[2] / "docs" / "consent" / "v1.txt").read_text(encoding="utf-8")


def _verifier(args: argparse.Namespace):
    from fr_pbd.verify import Verifier

    return Verifier(home=args.home)


def _read_secret(args: argparse.Namespace, confirm: bool) -> str:
    from fr_pbd.errors import ConsentError

    if args.secret_stdin:
        secret = sys.stdin.readline().rstrip("\n")
    else:
        import getpass

        if not sys.stdin.isatty():
            raise ConsentError("no terminal to ask for the PIN; pass it on standard input with --secret-stdin")
        secret = getpass.getpass("PIN or passphrase: ")
        if confirm and getpass.getpass("again: ") != secret:
            raise ConsentError("the two entries differ; nothing was changed")
    return secret


def cmd_enroll(args: argparse.Namespace) -> int:
    from fr_pbd.errors import ConsentError
    from fr_pbd.verify import Consent

    if not args.consent:
        print(_consent_text(), file=sys.stderr)
        if not sys.stdin.isatty():
            raise ConsentError("enrolment needs consent: run it in a terminal and answer yes, or pass --consent")
        if input("> ").strip().lower() != "yes":
            raise ConsentError("no consent given; nothing was stored")
    images = list(args.image or [])
    if args.camera is not None:
        from fr_pbd.capture.camera import CameraSource

        with CameraSource(args.camera) as cam:
            images.append(cam.read())
    if not images:
        raise ConsentError("give at least one --image or a --camera")
    count = _verifier(args).enroll(args.user, images, Consent(CONSENT_TEXT_VERSION))
    print(f"enrolled {args.user}: {count} template(s)")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    v = _verifier(args)
    if args.camera is not None:
        from fr_pbd.capture.camera import CameraSource
        from fr_pbd.errors import CameraError

        try:
            with CameraSource(args.camera) as cam:
                image = cam.read()
        except CameraError:
            print("no")  # a camera that delivers nothing is a no, not a hang
            return EXIT_NO
    else:
        image = args.image
    decision = v.verify(image, user=args.user)
    print("yes" if decision.accepted else "no")
    return EXIT_OK if decision.accepted else EXIT_NO


def cmd_unenroll(args: argparse.Namespace) -> int:
    from fr_pbd.errors import StoreError

    if not _verifier(args).store().remove_user(args.user):
        raise StoreError(f"no enrolled user {args.user!r}")
    print(f"unenrolled {args.user}: templates and consent record deleted")
    return EXIT_OK


def cmd_erase(args: argparse.Namespace) -> int:
    from fr_pbd.errors import StoreError
    from fr_pbd.store import erase

    home = _verifier(args).home
    if not args.yes:
        if not sys.stdin.isatty():
            raise StoreError("erase destroys every template and the key; confirm with --yes")
        if input(f"Erase the store and its key in {home}? Type 'erase': ").strip() != "erase":
            raise StoreError("not confirmed; nothing was erased")
    erase(home)
    print(f"erased: the data key and the store in {home} are destroyed")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from datetime import datetime, timezone

    v = _verifier(args)
    view = v.store().read()
    print(f"store: {v.home} (encrypted, AES-256-GCM; opens with its key)")
    print(f"model: {view.model_id}")
    print(f"fallback credential: {'set' if view.has_fallback else 'NOT SET'}")
    lock = view.lockout
    if lock.is_locked():
        left = int((lock.locked_until - datetime.now(timezone.utc)).total_seconds()) + 1
        print(f"face verification: locked for {left} s more ({lock.failures} consecutive failures)")
    else:
        print(f"face verification: available ({lock.failures} consecutive failures)")
    print(f"users: {len(view.users)}")
    for user in view.users:
        c = view.consent(user)
        print(f"  {user}: {view.template_count(user)} template(s), consent v{c.text_version} "
              f"given {c.time:%Y-%m-%d %H:%M} UTC on {c.device_id}")
    return EXIT_OK


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    store = _verifier(args).store()
    if args.renew:
        store.renew()
        print("renewed: new data key, new key-encryption key, new template protection (old leaks no longer link)")
    else:
        store.rotate_key()
        print("rotated: new data key and key-encryption key")
    return EXIT_OK


def cmd_fallback_set(args: argparse.Namespace) -> int:
    _verifier(args).set_fallback(_read_secret(args, confirm=True))
    print("fallback credential set")
    return EXIT_OK


def cmd_fallback_check(args: argparse.Namespace) -> int:
    ok = _verifier(args).check_fallback(_read_secret(args, confirm=False))
    print("yes" if ok else "no")
    return EXIT_OK if ok else EXIT_NO


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

    if args.name == "yunet-variants":
        from fr_pbd.models.build_yunet import build_yunet_variants

        for name, path in build_yunet_variants().items():
            print(f"{name}: built and verified {path}")
        return EXIT_OK
    if args.name in ("dlib-resnet-int8", "dlib-resnet-v1-int8"):
        from fr_pbd.models.quantize import build_dlib_int8

        print(f"dlib-resnet-v1-int8: built and verified {build_dlib_int8()}")
        return EXIT_OK
    if args.name not in ("dlib-resnet", "dlib-resnet-v1"):
        raise ModelError(f"no build recipe for {args.name!r}; buildable: dlib-resnet, dlib-resnet-int8, yunet-variants")
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
        needed = name in ("yunet-2023mar", "dlib-resnet-v1")  # variants are optional: the pipeline falls back
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

    def with_home(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument("--home", default=None,
                            help="state directory (default: $FR_PBD_HOME, else ~/.local/share/fr-pbd)")
        return parser

    e = with_home(sub.add_parser("enroll", help="enrol a user's face (explicit consent; a fallback PIN must be set)"))
    e.add_argument("--user", required=True)
    e.add_argument("--image", action="append", metavar="PATH", help="an enrolment photo (repeatable)")
    e.add_argument("--camera", default=None, metavar="SRC", help="device index, /dev/videoN, GStreamer pipeline or video file")
    e.add_argument("--consent", action="store_true", help="the user has read and accepted consent text v1")
    e.set_defaults(func=cmd_enroll)

    v = with_home(sub.add_parser("verify", help="is this an enrolled user? prints yes or no (exit 0/1)"))
    v.add_argument("--user", default=None, help="the claimed user (default: any enrolled user)")
    src = v.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", metavar="PATH")
    src.add_argument("--camera", metavar="SRC")
    v.set_defaults(func=cmd_verify)

    u = with_home(sub.add_parser("unenroll", help="withdraw consent: delete a user's templates and consent record"))
    u.add_argument("--user", required=True)
    u.set_defaults(func=cmd_unenroll)

    er = with_home(sub.add_parser("erase", help="destroy the data key and the store (crypto-shredding)"))
    er.add_argument("--yes", action="store_true", help="confirm without asking")
    er.set_defaults(func=cmd_erase)

    st = with_home(sub.add_parser("status", help="users, template counts, store and key health (no biometric data)"))
    st.set_defaults(func=cmd_status)

    k = sub.add_parser("keys", help="key management")
    ksub = k.add_subparsers(dest="keys_command", metavar="ACTION", parser_class=_Parser)
    ksub.required = True
    kr = with_home(ksub.add_parser("rotate", help="new data key and key-encryption key"))
    kr.add_argument("--renew", action="store_true", help="also renew the template protection (unlinks old leaks)")
    kr.set_defaults(func=cmd_keys_rotate)

    fb = sub.add_parser("fallback", help="the PIN/passphrase alternative to the face")
    fsub = fb.add_subparsers(dest="fallback_command", metavar="ACTION", parser_class=_Parser)
    fsub.required = True
    for name, func, helptext in (("set", cmd_fallback_set, "set or replace the fallback credential"),
                                 ("check", cmd_fallback_check, "check it (exit 0 yes, 1 no); clears a lockout")):
        fp = with_home(fsub.add_parser(name, help=helptext))
        fp.add_argument("--secret-stdin", action="store_true", help="read the PIN from standard input")
        fp.set_defaults(func=func)

    from fr_pbd.audit import add_audit_parser
    from fr_pbd.daemon import add_daemon_parsers
    from fr_pbd.eval.cli import add_eval_parser
    from fr_pbd.eval.pad import attach_pad_parser

    attach_pad_parser(add_eval_parser(sub))
    add_daemon_parsers(sub)
    add_audit_parser(sub)

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
    mb = msub.add_parser("build", help="build a model locally: dlib-resnet, dlib-resnet-int8, yunet-variants")
    mb.add_argument("name")
    mb.add_argument("--dat", default=None, help="path to dlib_face_recognition_resnet_model_v1.dat")
    mb.set_defaults(func=cmd_models_build)

    doc = sub.add_parser("doctor", help="check that this machine can run the pipeline")
    doc.set_defaults(func=cmd_doctor)

    from fr_pbd.bench import add_bench_parser

    add_bench_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if argv is None and not getattr(args, "network", False):
        # A real fr-pbd process (console script or python -m): no network, ever,
        # except `fr-pbd models fetch`. Tests that call main([...]) in-process
        # leave their interpreter alone; they run the CLI as a subprocess to test this.
        from fr_pbd import egress

        egress.install()
    return run_command(args)


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed command: every error becomes one line on stderr and an exit status.

    Shared by ``fr-pbd`` and the ``python -m fr_pbd.daemon|audit`` entry points.
    """
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except FrPbdError as exc:
        print(f"fr-pbd: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except ValueError as exc:  # argument checks in the library (e.g. a PIN that is too short)
        print(f"fr-pbd: error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return EXIT_ERROR
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
