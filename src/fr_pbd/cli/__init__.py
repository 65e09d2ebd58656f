"""The ``fr-pbd`` command: the only place that knows argparse.

One module per command group (:mod:`.household`, :mod:`.keys`, :mod:`.faces`, :mod:`.models`,
:mod:`.daemon`, :mod:`.audit`, :mod:`.eval`, :mod:`.bench`, :mod:`.system`), each with a
``register(subparsers)``; the libraries below never import this package. Errors are
handled once, in :func:`run_command`: one line on stderr and an exit status (0 yes,
1 no, 2 error, 3 an incomplete audit, 4 internal error), never a traceback; under ``--json``
also one ``{"error": ...}`` object on stdout (:mod:`fr_pbd.cli._common`).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Sequence

from fr_pbd._version import __version__
from fr_pbd.cli import audit, bench, daemon, faces, household, keys, models, system
from fr_pbd.cli import eval as evaluation
from fr_pbd.cli._common import (EXIT_ERROR, EXIT_INTERNAL, EXIT_NO, EXIT_OK, Parser, UsageError, error_object,
                                print_json, wants_json)
from fr_pbd.errors import FrPbdError

__all__ = ["main", "build_parser", "run_command", "EXIT_OK", "EXIT_NO", "EXIT_ERROR", "EXIT_INTERNAL"]

_GROUPS = (faces, household, keys, evaluation, daemon, audit, models, bench, system)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="fr-pbd", description="Privacy-by-design on-device face verification.")
    p.add_argument("--version", action="version", version=f"fr-pbd {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for group in _GROUPS:
        group.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        # A real fr-pbd process (console script or python -m): not dumpable, no core file
        # (fr_pbd.hardening), and no network, ever, except `fr-pbd models fetch`. Tests that
        # call main([...]) in-process leave their interpreter alone; they run the CLI as a
        # subprocess to test this.
        _guard_before_parsing(sys.argv[1:])
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:  # asked for JSON: the refusal is JSON too (the usage line stays on stderr)
        if "--json" in (sys.argv[1:] if argv is None else argv):
            print_json(error_object(exc, exc.message, "UsageError"))
        raise
    if argv is None and not getattr(args, "network", False):
        from fr_pbd import egress

        egress.install(kernel=getattr(args, "kernel_filter", True))  # idempotent: a second look
    return run_command(args)


# The commands whose parsers leave the guard off (``network``) or the kernel filter off
# (``kernel_filter`` false), known before the parser is built; tests/test_egress.py checks this
# table against every parser's defaults.
_UNGUARDED = {("models", "fetch"): "none", ("audit",): "hook", ("system",): "hook"}


def guard_for(words: Sequence[str]) -> str:
    """What :func:`main` installs before parsing ``words``: "none", "hook" or "kernel"."""
    return _UNGUARDED.get(tuple(words[:2]), _UNGUARDED.get(tuple(words[:1]), "kernel"))


def _guard_before_parsing(words: Sequence[str]) -> None:
    """Harden and guard this process before the parser is built: the guard's Landlock domain binds
    only the threads started after it, and a module the parser imports may start some (numpy and
    OpenCV start their thread pools at import)."""
    from fr_pbd import egress, hardening

    hardening.harden_process()
    guard = guard_for(words)
    if guard != "none":
        egress.install(kernel=guard == "kernel")


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed command: every error becomes one line on stderr and an exit status (and, under
    ``--json``, one ``{"error": ...}`` object on stdout)."""
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except FrPbdError as exc:
        return _error(args, exc, exc.exit_code, str(exc))
    except ValueError as exc:  # argument checks in the library (e.g. a PIN that is too short)
        return _error(args, exc, EXIT_ERROR, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    except KeyboardInterrupt as exc:
        return _error(args, exc, 130, "interrupted", kind="Interrupted", prefix="")
    except OSError as exc:  # a full disk, a read-only home, a permission: the user's to fix, not a bug
        from fr_pbd.fileio import storage_error

        err = storage_error(exc)
        if err is exc:
            return _internal(args, exc)
        return _error(args, err, EXIT_ERROR, str(err))
    except Exception as exc:  # noqa: BLE001 - last line of defence: one line, no traceback
        return _internal(args, exc)


def _error(args: argparse.Namespace, exc: BaseException, code: int, message: str, *, kind: str | None = None,
           prefix: str = "error: ") -> int:
    """``fr-pbd: {prefix}{message}`` on stderr; under ``--json`` the same message in the object on stdout."""
    print(f"fr-pbd: {prefix}{message}", file=sys.stderr)
    if wants_json(args):
        print_json(error_object(exc, message, kind))
    return code


def _internal(args: argparse.Namespace, exc: Exception) -> int:
    if os.environ.get("FR_PBD_DEBUG"):
        raise exc
    return _error(args, exc, EXIT_INTERNAL, f"{type(exc).__name__}: {exc} (set FR_PBD_DEBUG=1 for details)",
                  kind="InternalError", prefix="internal error: ")
