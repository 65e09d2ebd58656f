"""What every command module shares: exit codes, the parser class, the common options.

Exit codes, for every command: 0 yes / success, 1 a negative answer (``no``,
``different``, an audit that failed), 2 an error (one line on stderr, never a
traceback; also a full disk, a used-up quota, an I/O error, a read-only or
unwritable home and a missing one: the user's to fix, see
:func:`fr_pbd.fileio.storage_error`), 3 an incomplete audit (no check failed, but
some evidence is missing), 4 an internal error (a bug in fr-pbd).

``--json`` (``verify``, ``enroll``, ``status``, ``doctor``, ``audit``, ``eval lfw``, ``compare``):
standard output is then always exactly one JSON object, for a program to parse: the answer, or
on any error ``{"error": {"type": ..., "message": ...}}`` (``reason`` too when the error has
one, ``errno`` for a storage fault) with the same exit status; the error's one line still goes
to stderr, for the person or the log. Made in one place, :func:`fr_pbd.cli.run_command` (usage
errors: :func:`fr_pbd.cli.main`). No JSON output holds a score, a template or an image.
"""

from __future__ import annotations

import argparse
import errno
import json
import sys

EXIT_OK, EXIT_NO, EXIT_ERROR, EXIT_INCOMPLETE, EXIT_INTERNAL = 0, 1, 2, 3, 4
HOME_HELP = "state directory (default: $FR_PBD_HOME, else ~/.local/share/fr-pbd)"
BOARD_HELP = ("board: how the models run here (rpi4, rpi5, jetson-nano, jetson-orin-nano, x86-generic, "
              "or a path to a board file; default: board in config.toml, else the defaults)")


class UsageError(SystemExit):
    """A command line the parser refused (exit 2); ``message`` is the line printed on stderr."""

    def __init__(self, message: str) -> None:
        super().__init__(EXIT_ERROR)
        self.message = message


class Parser(argparse.ArgumentParser):
    """Usage errors: the usage line, then one error line, exit 2."""

    def error(self, message: str) -> None:
        self.print_usage(sys.stderr)
        sys.stderr.write(f"fr-pbd: error: {message}\n")
        raise UsageError(message)


def add_json(parser: argparse.ArgumentParser, what: str) -> argparse.ArgumentParser:
    parser.add_argument("--json", action="store_true", help=f"print {what} as one JSON object on stdout (an error: "
                        '{"error": {"type", "message"}}, same exit status); never a score')
    return parser


def wants_json(args: argparse.Namespace) -> bool:
    """``--json`` given as a flag (``eval pad --json FILE`` names a file: not this)."""
    return getattr(args, "json", None) is True


def print_json(obj: object) -> None:
    """The command's one JSON object, on one line of stdout."""
    print(json.dumps(obj, ensure_ascii=False))


def error_object(exc: BaseException, message: str, kind: str | None = None) -> dict:
    """``{"error": {...}}`` for ``exc``: its type (the class name in :mod:`fr_pbd.errors`), the
    message of its stderr line, its ``reason`` code if it has one, and a storage fault's errno name."""
    err: dict = {"type": kind or type(exc).__name__, "message": message}
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str):
        err["reason"] = reason
    code = getattr(exc, "errno", None)
    if isinstance(code, int) and code in errno.errorcode:
        err["errno"] = errno.errorcode[code]
    return {"error": err}


def add_home(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--home", default=None, help=HOME_HELP)
    return parser


def add_board(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--board", default=None, metavar="NAME", help=BOARD_HELP)
    return parser


def subcommands(parser: argparse.ArgumentParser, dest: str, metavar: str = "ACTION") -> argparse._SubParsersAction:
    sub = parser.add_subparsers(dest=dest, metavar=metavar, parser_class=Parser)
    sub.required = True
    return sub
