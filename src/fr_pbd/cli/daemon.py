"""``fr-pbd serve | ask``: the yes/no daemon and its client (``docs/pam.md``: login with ``pam_exec``)."""

from __future__ import annotations

import argparse
import os
import sys

from fr_pbd.cli._common import EXIT_NO, EXIT_OK, HOME_HELP, add_board


def cmd_serve(args: argparse.Namespace) -> int:
    from fr_pbd.capture.frames import CameraFrames, FileFrames, FrameSource
    from fr_pbd.daemon.process import serve

    frames: FrameSource = CameraFrames(args.camera) if args.camera is not None else FileFrames(args.frames)
    return serve(home=args.home, socket_path=args.socket, frames=frames, log_path=args.log, board=args.board)


def cmd_ask(args: argparse.Namespace) -> int:
    from fr_pbd import egress
    from fr_pbd.daemon.client import ask, claim_for, daemon_identity
    from fr_pbd.daemon.pam import PamRefusal, check_pam_context
    from fr_pbd.errors import DaemonError

    egress.install()
    user = claim_for(os.environ, args.user, args.pam)
    try:
        if args.pam:  # first what no config changes: su runs this as its caller, who may not read the config
            check_pam_context(os.environ, None)
        daemon_uid, cfg = daemon_identity(args.home)
        if args.pam:
            check_pam_context(os.environ, cfg.pam)
    except PamRefusal as refusal:  # nothing is asked: the stack falls through to the password
        print("no")
        print(f"fr-pbd: face login refused: {refusal}", file=sys.stderr)
        return EXIT_NO
    path = args.socket if args.socket is not None else cfg.daemon.socket
    if path is None:
        raise DaemonError("no socket path: give --socket or set [daemon] socket in the home's config.toml")
    ok = ask(path, user, timeout=args.timeout, daemon_uid=daemon_uid)
    print("yes" if ok else "no")
    return EXIT_OK if ok else EXIT_NO


def register(sub: argparse._SubParsersAction) -> None:
    from fr_pbd.daemon.client import ASK_TIMEOUT_S

    s = add_board(sub.add_parser("serve", help="run the yes/no verification daemon on a Unix socket"))
    s.add_argument("--socket", default=None, metavar="PATH",
                   help="Unix socket to listen on, created 0660 (default: [daemon] socket of config.toml)")
    s.add_argument("--home", default=None, help=HOME_HELP)
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument("--camera", metavar="SRC", help="camera opened for each verification "
                     "(device index, /dev/videoN, GStreamer pipeline or video file)")
    src.add_argument("--frames", metavar="DIR", help="test camera: each request reads DIR/current.jpg "
                     "(or the file given)")
    s.add_argument("--log", default=None, metavar="FILE",
                   help="append the daemon's log here (created 0600; default: stderr); never holds scores")
    s.set_defaults(func=cmd_serve)

    a = sub.add_parser("ask", help="ask the daemon: prints yes or no (exit 0/1; 2 if it cannot be reached "
                       "or cannot be trusted)")
    a.add_argument("--socket", default=None, metavar="PATH", help="the daemon's socket (default: from config.toml)")
    who = a.add_mutually_exclusive_group()
    who.add_argument("--user", default=None, help="the account to check (default: your own; root: any enrolled "
                     "user)")
    who.add_argument("--pam", action="store_true", help="run by pam_exec: check the face of PAM_USER's account "
                     "only, and only for a local login on an allowed service and terminal (docs/pam.md)")
    a.add_argument("--home", default=None, help="the daemon's home: its config.toml gives the socket and "
                   "daemon_uid, its owner is the uid the daemon must run as (default: your own home, else your uid)")
    a.add_argument("--timeout", type=float, default=ASK_TIMEOUT_S, help=argparse.SUPPRESS)
    a.set_defaults(func=cmd_ask)
