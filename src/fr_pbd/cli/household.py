"""``fr-pbd enroll | verify | unenroll | erase | status | fallback``: the household's own commands.

Verification prints only ``yes`` or ``no`` on stdout (condition 5); when a ``no``
was not a comparison (locked, no face, several faces, a user not enrolled) it
says why on stderr, never with a score. Enrolment needs the fallback PIN and the
user's explicit consent, in that order, before any image is read (condition 2;
``docs/lockout.md``).
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources

from fr_pbd.cli._common import EXIT_NO, EXIT_OK, add_board, add_home, add_json, print_json, subcommands

CONSENT_TEXT_VERSION = "1"
#: Enrolment asks for this many captures by default (issue 15: fewer refusals with more).
MIN_CAPTURES = 3
#: Between camera captures: time to turn the head slightly.
CAPTURE_PAUSE_S = 0.7


def consent_text() -> str:
    """The consent text v1 the user confirms (shipped in the package)."""
    return resources.files("fr_pbd").joinpath("_data", "consent-v1.txt").read_text(encoding="utf-8")


def _verifier(args: argparse.Namespace):
    from fr_pbd.verify import Verifier

    if getattr(args, "system", False):  # root: the daemon's home, as the daemon's user (fr_pbd.system)
        from fr_pbd.system import enter_system_home

        args.home, args.system = enter_system_home(args.home), False
    return Verifier(home=args.home, board=getattr(args, "board", None))


def _read_secret(args: argparse.Namespace, confirm: bool, prompt: str = "PIN or passphrase: ") -> str:
    from fr_pbd.errors import ConsentError

    if args.secret_stdin:
        line = sys.stdin.readline()
        if not line:
            raise ConsentError("no PIN on standard input (--secret-stdin reads one line)")
        return line.rstrip("\n")
    import getpass

    if not sys.stdin.isatty():
        raise ConsentError("no terminal to ask for the PIN; pass it on standard input with --secret-stdin")
    secret = getpass.getpass(prompt)
    if confirm and getpass.getpass("again: ") != secret:
        raise ConsentError("the two entries differ; nothing was changed")
    return secret


def _say(message: str) -> None:
    """One line for the person at the terminal (stderr): never a score, a template or an image."""
    print(message, file=sys.stderr)


def cmd_enroll(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fr_pbd.errors import ConsentError, ImageError
    from fr_pbd.verify import Consent, check_user_name

    # Arguments and proof first, then the consent text, and only then any image.
    check_user_name(args.user)
    images = list(args.image or [])
    if not images and args.camera is None:
        raise ConsentError("give at least one --image or a --camera")
    for path in images:
        if not Path(path).is_file():
            raise ImageError(f"{path}: no such image file; nothing was stored")
    v = _verifier(args)
    v.check_enrolment(args.user)
    pin = _read_secret(args, confirm=False, prompt="fallback PIN or passphrase (proof for enrolment): ")
    v.check_enrolment(args.user, pin)
    if not args.consent:
        print(consent_text(), file=sys.stderr)
        if not sys.stdin.isatty():
            raise ConsentError("enrolment needs consent: run it in a terminal and answer yes, or pass --consent")
        if _ask(args).strip().lower() != "yes":
            raise ConsentError("no consent given; nothing was stored")
    if args.camera is not None:
        images += _camera_captures(args.camera, args.captures)
    if len(images) < MIN_CAPTURES:
        _say(f"note: {len(images)} capture(s); enrol at least {MIN_CAPTURES} (head turned slightly, other light) "
             f"and the user is refused far less often (docs/evaluation.md, 'Several enrolled images')")
    count = v.enroll(args.user, images, Consent(CONSENT_TEXT_VERSION), fallback=pin)
    uid = v.store().read().uid_of(args.user)
    if args.json:  # uid null: not a Unix account here, so this face can never unlock a login
        print_json({"user": args.user, "templates": count, "uid": uid})
        return EXIT_OK
    print(f"enrolled {args.user}: {count} template(s)")
    if uid is None:
        print(f"{args.user} is not a Unix account here: this face answers for {args.user!r} but can never "
              f"unlock a login")
    else:
        print(f"bound to the Unix account {args.user} (uid {uid}): it can unlock only that account")
    return EXIT_OK


def _ask(args: argparse.Namespace) -> str:
    """The answer to the consent text; under --json the prompt goes to stderr, stdout holds only JSON."""
    if not args.json:
        return input("> ")
    sys.stderr.write("> ")
    sys.stderr.flush()
    return input()


def _camera_captures(source: str, n: int) -> list:
    """``n`` frames from the camera, with a prompt to turn the head slightly between them."""
    import time

    from fr_pbd.capture.camera import CameraSource

    frames = []
    with CameraSource(source) as cam:
        for k in range(n):
            if k:
                _say(f"capture {k + 1} of {n}: turn your head slightly and keep looking at the camera")
                time.sleep(CAPTURE_PAUSE_S)
            frames.append(cam.read())
    return frames


_WHY = {
    "no_face": "no face in the image: nothing was compared",
    "unknown_user": "{user} is not enrolled here: nothing was compared",
    "account_changed": "the Unix account {user} is not the one {user} was enrolled for: nothing was compared "
                       "(unenroll and enrol again)",
}


def _say_why(outcome, user: str | None) -> None:
    """The reason on stderr, for the person at the device (never a score)."""
    from fr_pbd.capture.quality import REASONS, fail

    if outcome.reason == "locked":
        _say(f"face verification is locked for {outcome.retry_after} s after too many failed attempts; "
             f"the fallback PIN unlocks it now: fr-pbd fallback check")
    elif outcome.reason in _WHY:
        _say(_WHY[outcome.reason].format(user=user))
    elif outcome.reason == "low_quality":
        _say(f"{fail(outcome.detail) if outcome.detail in REASONS else 'no usable face'}: nothing was compared")


def cmd_verify(args: argparse.Namespace) -> int:
    v = _verifier(args)
    if args.camera is not None:
        import time

        from fr_pbd import config
        from fr_pbd.capture.frames import CameraFrames
        from fr_pbd.errors import CameraError, CameraUnavailableError

        capture = config.load(v.home).capture
        v.load_models()  # before the clock starts: the frame budget is for frames, not for loading
        try:  # one attempt: up to max_frames frames within the budget, yes at the first live match
            outcome = v.attempt(CameraFrames(args.camera), user=args.user, max_frames=capture.max_frames,
                                until=time.monotonic() + capture.frame_budget_ms / 1000)
        except CameraUnavailableError:
            raise  # a setup error: one line, exit 2
        except CameraError as exc:
            print("no")  # a camera that stops delivering is a no, not a hang
            _say(f"{exc}: nothing was compared")
            return EXIT_NO
    else:
        outcome = v.verify(args.image, user=args.user)
    v.settle()  # a success's count is cleared before the answer is printed: StorageError if it cannot be
    if args.json:
        print_json(outcome.to_dict())
    else:
        print("yes" if outcome.accepted else "no")
        _say_why(outcome, args.user)
    return EXIT_OK if outcome.accepted else EXIT_NO


def _fail_closed(command):
    """A verification whose attempt cannot be counted, or whose success's count cannot be cleared
    (a full disk, a read-only home, an I/O error: StorageError), answers no on stdout; the cause is
    the one line on stderr and the exit status is 2 (:func:`fr_pbd.cli.run_command`, which under
    --json prints the error object instead: never ``accepted``)."""
    def run(args: argparse.Namespace) -> int:
        from fr_pbd.errors import StorageError

        try:
            return command(args)
        except StorageError:
            if not args.json:
                print("no")
            raise
    return run


def cmd_unenroll(args: argparse.Namespace) -> int:
    from fr_pbd.errors import StoreError

    if not _verifier(args).store().remove_user(args.user):
        raise StoreError(f"no enrolled user {args.user!r}")
    print(f"unenrolled {args.user}: templates and consent record deleted; the store is re-keyed "
          f"(new data key, key file and template protection: older copies no longer open)")
    return EXIT_OK


def cmd_erase(args: argparse.Namespace) -> int:
    from fr_pbd.errors import StorageError, StoreError
    from fr_pbd.store import erase

    home = _verifier(args).home
    if not args.yes:
        if not sys.stdin.isatty():
            raise StoreError("erase destroys every template and the key; confirm with --yes")
        if input(f"Erase the store and its key in {home}? Type 'erase': ").strip() != "erase":
            raise StoreError("not confirmed; nothing was erased")
    try:
        erase(home)
    except StorageError as exc:  # the keys may be destroyed already: the same command finishes it
        raise StorageError(f"{exc}; if the erase got under way, run fr-pbd erase again once this is fixed",
                           exc.errno, exc.filename) from exc
    print(f"erased: the data key and the store in {home} are destroyed")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    v = _verifier(args)
    store = v.store()
    view = store.read()
    if args.json:
        print_json(_status_object(v.home, store, view))
        return EXIT_OK
    print(f"store: {v.home} (encrypted, AES-256-GCM; opens with its key)")
    print(f"key: {store.key_provider.custody()}")
    print(f"model: {view.model_id}")
    if not view.has_fallback:
        print("fallback credential: NOT SET")
    else:
        pin = view.fallback_lockout
        state = (f"locked for {pin.retry_after()} s more" if pin.is_locked()
                 else "available")
        print(f"fallback credential: set, {state} ({pin.failures} wrong entries)")
        if (view.fallback_min_len or 0) < 6:
            print("  set before the 6-character minimum: replace it (fr-pbd fallback set)")
    print(f"face verification, any enrolled user: {_lock_text(view.lockout)}")
    print(f"users: {len(view.users)}")
    for user in view.users:
        c = view.consent(user)
        uid = view.uid_of(user)
        account = "not a Unix account" if uid is None else f"Unix account uid {uid}"
        print(f"  {user}: {view.template_count(user)} template(s), consent v{c.text_version} "
              f"given {c.time:%Y-%m-%d %H:%M} UTC on {c.device_id}; {account}; "
              f"face {_lock_text(view.lockout_of(user))}")
    return EXIT_OK


def _status_object(home, store, view) -> dict:
    """``status --json``: what the text says, as fields; counts, states and times, never biometric data."""
    from fr_pbd.store import _format as fmt

    words = {fmt.PROVIDER_DEVICE_FILE: "file", fmt.PROVIDER_PASSPHRASE: "passphrase", fmt.PROVIDER_TPM2: "tpm2"}
    provider = store.key_provider
    fallback = {"set": view.has_fallback}
    if view.has_fallback:
        fallback.update(_lock_object(view.fallback_lockout), below_minimum=(view.fallback_min_len or 0) < 6)
    users = []
    for user in view.users:
        c = view.consent(user)
        users.append({"user": user, "templates": view.template_count(user), "uid": view.uid_of(user),
                      "consent": {"text_version": c.text_version, "time": c.time.isoformat(timespec="seconds"),
                                  "device_id": c.device_id},
                      "face": _lock_object(view.lockout_of(user))})
    return {"home": str(home), "model": view.model_id,
            "key": {"provider": words.get(getattr(provider, "provider_id", None)), "custody": provider.custody(),
                    "rollback_protection": bool(provider.rollback_protection)},
            "fallback": fallback, "any_user": _lock_object(view.lockout), "users": users}


def _lock_object(lock) -> dict:
    locked = lock.is_locked()
    return {"locked": locked, "retry_after": lock.retry_after() if locked else 0, "failures": lock.failures}


def _lock_text(lock) -> str:
    if lock.is_locked():
        return f"locked for {lock.retry_after()} s more ({lock.failures} consecutive failures)"
    return f"available ({lock.failures} consecutive failures)"


def cmd_fallback_set(args: argparse.Namespace) -> int:
    import os

    from fr_pbd.store import STORE_FILE

    v = _verifier(args)
    current = None
    if os.path.lexists(v.home / STORE_FILE) and v.store().read().has_fallback:
        current = _read_secret(args, confirm=False, prompt="current PIN or passphrase: ")
    v.set_fallback(_read_secret(args, confirm=True, prompt="new PIN or passphrase (6 or more): "), current=current)
    print("fallback credential set")
    return EXIT_OK


def cmd_fallback_check(args: argparse.Namespace) -> int:
    v = _verifier(args)
    check = v.check_fallback(_read_secret(args, confirm=False))
    print("yes" if check else "no")
    if check.locked:
        _say(f"the fallback PIN is locked for {check.retry_after} s after too many wrong entries; nothing was "
             "compared")
    elif not check and check.retry_after:
        _say(f"wrong; the fallback PIN is now locked for {check.retry_after} s")
    return EXIT_OK if check else EXIT_NO


def _add_system(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--system", action="store_true", help="the daemon's home /var/lib/fr-pbd, as the daemon's "
                        "user (root, after fr-pbd system install; docs/pam.md)")
    return parser


def register(sub: argparse._SubParsersAction) -> None:
    e = add_board(_add_system(add_home(sub.add_parser(
        "enroll", help="enrol a user's face (the fallback PIN as proof, then explicit consent)"))))
    e.add_argument("--user", required=True, help="the Unix login name (bound to that account's uid, if there is one)")
    e.add_argument("--image", action="append", metavar="PATH", help="an enrolment photo (repeatable)")
    e.add_argument("--camera", default=None, metavar="SRC",
                   help="device index, /dev/videoN, GStreamer pipeline or video file")
    e.add_argument("--captures", type=int, default=MIN_CAPTURES, choices=range(1, 11), metavar="N",
                   help=f"frames taken from --camera, with a prompt between them (default {MIN_CAPTURES})")
    e.add_argument("--consent", action="store_true", help="the user has read and accepted consent text v1")
    e.add_argument("--secret-stdin", action="store_true",
                   help="read the fallback PIN (the proof enrolment needs) from standard input")
    add_json(e, "{user, templates, uid}")
    e.set_defaults(func=cmd_enroll)

    v = add_board(add_home(sub.add_parser("verify", help="is this an enrolled user? prints yes or no (exit 0/1)")))
    v.add_argument("--user", default=None, help="the claimed user (default: any enrolled user)")
    src = v.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", metavar="PATH")
    src.add_argument("--camera", metavar="SRC")
    v.add_argument("--json", action="store_true", help="print {accepted, reason, retry_after, detail} as JSON "
                   "instead of yes/no: the reason for the user's own screen, never a score")
    v.set_defaults(func=_fail_closed(cmd_verify))

    u = _add_system(add_home(sub.add_parser("unenroll", help="withdraw consent: delete a user's templates and consent "
                                            "record")))
    u.add_argument("--user", required=True)
    u.set_defaults(func=cmd_unenroll)

    er = add_home(sub.add_parser("erase", help="destroy the data key and the store (crypto-shredding)"))
    er.add_argument("--yes", action="store_true", help="confirm without asking")
    er.set_defaults(func=cmd_erase)

    st = _add_system(add_home(sub.add_parser("status", help="users, template counts, store and key health (no "
                                             "biometric data)")))
    add_json(st, "users, template counts, lockouts, key custody and the fallback's state")
    st.set_defaults(func=cmd_status)

    fsub = subcommands(sub.add_parser("fallback", help="the PIN/passphrase alternative to the face"),
                       "fallback_command")
    for name, func, helptext, stdin_help in (
            ("set", cmd_fallback_set, "set the fallback credential (6+ characters; replacing it needs the current one)",
             "read the PIN from standard input (replacing: the current one on the first line, the new one on "
             "the second)"),
            ("check", cmd_fallback_check, "check it (exit 0 yes, 1 no); clears a face lockout; 5 wrong entries "
             "lock it 30 s, doubling", "read the PIN from standard input")):
        fp = _add_system(add_home(fsub.add_parser(name, help=helptext)))
        fp.add_argument("--secret-stdin", action="store_true", help=stdin_help)
        fp.set_defaults(func=func)
