"""What every command module shares: exit codes, the parser class, the common options.

Exit codes, for every command: 0 yes / success, 1 a negative answer (``no``,
``different``, an audit that failed), 2 an error (one line on stderr, never a
traceback; also a full disk, a used-up quota, an I/O error, a read-only or
unwritable home and a missing one: the user's to fix, see
:func:`fr_pbd.fileio.storage_error`), 3 an incomplete audit (no check failed, but
some evidence is missing), 4 an internal error (a bug in fr-pbd).
"""

from __future__ import annotations

import argparse
import sys

EXIT_OK, EXIT_NO, EXIT_ERROR, EXIT_INCOMPLETE, EXIT_INTERNAL = 0, 1, 2, 3, 4
HOME_HELP = "state directory (default: $FR_PBD_HOME, else ~/.local/share/fr-pbd)"
BOARD_HELP = ("board: how the models run here (rpi4, rpi5, jetson-nano, jetson-orin-nano, x86-generic, "
              "or a path to a board file; default: board in config.toml, else the defaults)")


class Parser(argparse.ArgumentParser):
    """Usage errors: the usage line, then one error line, exit 2."""

    def error(self, message: str) -> None:
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"fr-pbd: error: {message}\n")


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
