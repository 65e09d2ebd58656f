"""``fr-pbd audit``: the conformance audit of an installation (library: :mod:`fr_pbd.audit`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fr_pbd.cli._common import EXIT_INCOMPLETE, EXIT_NO, EXIT_OK, add_json, print_json


def _frames(args: argparse.Namespace):
    """The probe frames for C5.timing: --frames DIR plus the images given (the no-face frame is made here)."""
    from fr_pbd.audit.probe import FramePlan, no_face_png
    from fr_pbd.errors import AuditError

    images = {"genuine": args.genuine, "impostor": args.impostor,
              "attack": _attack_path(args.attack[0]) if args.attack else None}
    if args.frames is None:
        if any(images.values()):
            raise AuditError("--genuine/--impostor/--attack need --frames DIR (where the daemon reads its frames)")
        return None
    directory = Path(args.frames)
    if not directory.is_dir():
        raise AuditError(f"--frames {directory} is not a directory")
    plan = FramePlan(directory, args.frame_name, {"no-face": no_face_png()})
    for cls, path in images.items():
        if path:
            try:
                plan.images[cls] = Path(path).read_bytes()
            except OSError as exc:
                raise AuditError(f"--{cls} {path}: {exc.strerror or exc}") from None
    return plan


def _attack_path(value: str) -> str:
    """``[SPECIES=]IMG`` -> IMG."""
    return value.split("=", 1)[1] if "=" in value and not Path(value).exists() else value


def _attacks(args: argparse.Namespace, plan) -> list:
    """--attack [SPECIES=]IMG (repeatable) with --attack-subject IMG (default --genuine): SEC.presentation-attack."""
    from fr_pbd.audit.pad import parse_attacks
    from fr_pbd.errors import AuditError

    if not args.attack:
        if args.attack_subject:
            raise AuditError("--attack-subject names the person --attack shows: give --attack too")
        return []
    if plan is None:
        raise AuditError("--attack needs --frames DIR (where the daemon reads its frames)")
    items = []
    for value in args.attack:
        path = _attack_path(value)
        item = {"image": path}
        if path != value:
            item["species"] = value.split("=", 1)[0]
        if args.attack_subject:
            item["genuine"] = args.attack_subject
        items.append(item)
    return parse_attacks(items, "--attack", path_of=lambda v, _w: Path(str(v)), genuine=plan.images.get("genuine"))


def cmd_audit(args: argparse.Namespace) -> int:
    from fr_pbd import config, egress
    from fr_pbd.audit import (DEFAULT_ROUNDS, DEFAULT_VERIFICATIONS, FAIL, INCONCLUSIVE, PASS, RESULT_FAIL,
                              RESULT_PASS, build_report, run_audit, run_target, write_reports)
    from fr_pbd.errors import AuditError

    egress.install(kernel=False)  # the audit hook only: the products it starts must run as they are
    if args.verifications is None:
        args.verifications = DEFAULT_VERIFICATIONS
    if args.timing_rounds is None:
        args.timing_rounds = DEFAULT_ROUNDS
    if args.target:
        given = [o for o, v in (("--home", args.home), ("--socket", args.socket), ("--frames", args.frames),
                                ("--genuine", args.genuine), ("--impostor", args.impostor), ("--attack", args.attack),
                                ("--attack-subject", args.attack_subject),
                                ("--eval", args.eval), ("--log", args.log),
                                ("--peer-uid", args.peer_uid is not None), ("--passphrase-stdin",
                                                                             args.passphrase_stdin)) if v]
        if given:
            raise AuditError(f"--target describes the product itself; do not combine it with {', '.join(given)}")
        checks, info = run_target(args.target, verifications=args.verifications, use_strace=not args.no_strace,
                                  rounds=args.timing_rounds)
        report = build_report(checks, installation=info)
    else:
        home = Path(args.home) if args.home else config.default_home()
        passphrase = sys.stdin.readline().rstrip("\n") if args.passphrase_stdin else None
        plan = _frames(args)
        checks = run_audit(home, socket_path=args.socket, eval_report=args.eval, logs=args.log or (),
                           verifications=args.verifications, passphrase=passphrase, use_strace=not args.no_strace,
                           frames=plan, rounds=args.timing_rounds, peer_uid=args.peer_uid,
                           attacks=_attacks(args, plan))
        report = build_report(checks, home=home, socket_path=Path(args.socket) if args.socket else None,
                              eval_report=Path(args.eval) if args.eval else None, verifications=args.verifications)
    jpath, hpath = write_reports(report, checks, args.out)
    code = {RESULT_PASS: EXIT_OK, RESULT_FAIL: EXIT_NO}.get(report["result"], EXIT_INCOMPLETE)
    if args.json:  # the summary; each check is in audit.json
        print_json({"result": report["result"], "counts": report["counts"], "exit": code,
                    "report": {"json": str(jpath), "html": str(hpath)}})
        return code
    width = max(len(c.id) for c in checks)
    for c in checks:
        print(f"{c.status:12s} {c.id:{width}s}  {c.summary}")
        if c.needs:
            print(f"{'':12s} {'':{width}s}  needs: {c.needs}")
    c = report["counts"]
    print(f"audit: {report['result']} ({c[PASS]} pass, {c[FAIL]} fail, {c[INCONCLUSIVE]} inconclusive); "
          f"report: {jpath}, {hpath}")
    return code


def register(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser("audit", help="conformance audit of an installation: audit.json + audit.html "
                       "(exit 0 PASS: every check ran and passed, 1 FAIL, 3 INCOMPLETE: evidence missing)")
    a.add_argument("--target", default=None, metavar="TARGET.toml", help="black-box mode: audit a product that is "
                   "not fr-pbd, described by a TARGET.toml (docs/audit.md); replaces --home/--socket/--frames/...")
    a.add_argument("--home", default=None, help="the fr-pbd home to audit (default: $FR_PBD_HOME, else "
                   "~/.local/share/fr-pbd)")
    a.add_argument("--socket", default=None, metavar="PATH", help="a running daemon's socket: drive live "
                   "verifications and malformed requests through it, watched with strace")
    a.add_argument("--eval", default=None, metavar="REPORT.json", help="an `fr-pbd eval` report.json: "
                   "accuracy and bias evidence for the DPIA")
    a.add_argument("--log", action="append", metavar="FILE", help="a log file to scan for scores "
                   "(repeatable; *.log files in the home are always scanned)")
    a.add_argument("--verifications", type=int, default=None, metavar="N",
                   help="live verifications through the daemon (default 3; each failed one counts "
                   "towards the lockout)")
    a.add_argument("--frames", default=None, metavar="DIR", help="the directory the daemon reads its frames from "
                   "(serve --frames DIR): the audit shows it probe frames there to time the answers (C5.timing)")
    a.add_argument("--frame-name", default="current.jpg", metavar="NAME", help="the frame file in --frames "
                   "(default current.jpg)")
    a.add_argument("--genuine", default=None, metavar="IMG", help="a photo of a person enrolled here (C5.timing)")
    a.add_argument("--impostor", default=None, metavar="IMG", help="a photo of someone not enrolled (C5.timing)")
    a.add_argument("--attack", action="append", default=None, metavar="[SPECIES=]IMG",
                   help="a presentation attack of an enrolled person, e.g. replay=screen.jpg (repeatable: one per "
                   "species; SEC.presentation-attack; the first is also C5.timing's attack frame)")
    a.add_argument("--attack-subject", default=None, metavar="IMG", help="a bona fide photo of the person the "
                   "attacks show, enrolled here (default --genuine), shown after each attack")
    a.add_argument("--timing-rounds", type=int, default=None, metavar="N",
                   help="timed rounds of every probe frame (default 8); the daemon is left locked out for a while "
                   "(the audit sends failed attempts to time that state)")
    a.add_argument("--peer-uid", type=int, default=None, metavar="UID", help="a second, unprivileged uid the daemon "
                   "serves (on its allowlist): the audit also asks as it (setpriv, with the socket's group) and its "
                   "answers must be byte-identical to root's for the same frame (needed for C5.answer on a home)")
    a.add_argument("--no-strace", action="store_true", help="do not trace the daemon (C3.network is then "
                   "INCONCLUSIVE)")
    a.add_argument("--passphrase-stdin", action="store_true", help="read the store passphrase from stdin "
                   "(stores protected by a passphrase)")
    a.add_argument("--out", required=True, metavar="DIR", help="where to write audit.json and audit.html")
    add_json(a, "the summary {result, counts, exit, report} instead of the table")
    # The audit's children are the products under test: no kernel filter for them to inherit (fr_pbd.egress).
    a.set_defaults(func=cmd_audit, kernel_filter=False)
