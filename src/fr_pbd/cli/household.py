"""``fr-pbd enroll | verify | unenroll | erase | status | keys | fallback``: the household's own commands.

Verification prints only ``yes`` or ``no`` (condition 5); enrolment needs the user's
explicit consent and a fallback PIN set first (condition 2).
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources

from fr_pbd.cli._common import EXIT_NO, EXIT_OK, add_board, add_home, subcommands

CONSENT_TEXT_VERSION = "1"


def consent_text() -> str:
    """The consent text v1 the user confirms (shipped in the package)."""
    return resources.files("fr_pbd").joinpath("_data", "consent-v1.txt").read_text(encoding="utf-8")


def _verifier(args: argparse.Namespace):
    from fr_pbd.verify import Verifier

    return Verifier(home=args.home, board=getattr(args, "board", None))


def _read_secret(args: argparse.Namespace, confirm: bool) -> str:
    from fr_pbd.errors import ConsentError

    if args.secret_stdin:
        return sys.stdin.readline().rstrip("\n")
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
        print(consent_text(), file=sys.stderr)
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


def register(sub: argparse._SubParsersAction) -> None:
    e = add_board(add_home(sub.add_parser(
        "enroll", help="enrol a user's face (explicit consent; a fallback PIN must be set)")))
    e.add_argument("--user", required=True)
    e.add_argument("--image", action="append", metavar="PATH", help="an enrolment photo (repeatable)")
    e.add_argument("--camera", default=None, metavar="SRC",
                   help="device index, /dev/videoN, GStreamer pipeline or video file")
    e.add_argument("--consent", action="store_true", help="the user has read and accepted consent text v1")
    e.set_defaults(func=cmd_enroll)

    v = add_board(add_home(sub.add_parser("verify", help="is this an enrolled user? prints yes or no (exit 0/1)")))
    v.add_argument("--user", default=None, help="the claimed user (default: any enrolled user)")
    src = v.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", metavar="PATH")
    src.add_argument("--camera", metavar="SRC")
    v.set_defaults(func=cmd_verify)

    u = add_home(sub.add_parser("unenroll", help="withdraw consent: delete a user's templates and consent record"))
    u.add_argument("--user", required=True)
    u.set_defaults(func=cmd_unenroll)

    er = add_home(sub.add_parser("erase", help="destroy the data key and the store (crypto-shredding)"))
    er.add_argument("--yes", action="store_true", help="confirm without asking")
    er.set_defaults(func=cmd_erase)

    add_home(sub.add_parser("status", help="users, template counts, store and key health (no biometric data)")
             ).set_defaults(func=cmd_status)

    ksub = subcommands(sub.add_parser("keys", help="key management"), "keys_command")
    kr = add_home(ksub.add_parser("rotate", help="new data key and key-encryption key"))
    kr.add_argument("--renew", action="store_true", help="also renew the template protection (unlinks old leaks)")
    kr.set_defaults(func=cmd_keys_rotate)

    fsub = subcommands(sub.add_parser("fallback", help="the PIN/passphrase alternative to the face"),
                       "fallback_command")
    for name, func, helptext in (("set", cmd_fallback_set, "set or replace the fallback credential"),
                                 ("check", cmd_fallback_check, "check it (exit 0 yes, 1 no); clears a lockout")):
        fp = add_home(fsub.add_parser(name, help=helptext))
        fp.add_argument("--secret-stdin", action="store_true", help="read the PIN from standard input")
        fp.set_defaults(func=func)
