"""``fr-pbd system install | uninstall``: the daemon, its account, home, models, unit and PAM profile (root).

The work is :mod:`fr_pbd.system`'s; this module only parses the options. Every change is
printed (stdout) as it is made, or only printed with ``--dry-run``. Like ``fr-pbd audit``, these
commands run without egress's seccomp filter (their children need a netlink socket, below).
"""

from __future__ import annotations

import argparse

from fr_pbd.cli._common import EXIT_OK, subcommands


def cmd_install(args: argparse.Namespace) -> int:
    from fr_pbd.system import install

    install(root=args.root, dry_run=args.dry_run)
    return EXIT_OK


def cmd_uninstall(args: argparse.Namespace) -> int:
    from fr_pbd.system import uninstall

    uninstall(root=args.root, dry_run=args.dry_run, keep_store=args.keep_store)
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    s = subcommands(sub.add_parser("system", help="install or remove the daemon for face login through PAM "
                                   "(root; docs/pam.md)"), "system_command")
    i = s.add_parser("install", help="the daemon's account, home (/var/lib/fr-pbd), verified models, systemd unit "
                     "and pam-auth-update profile; every change recorded for uninstall")
    u = s.add_parser("uninstall", help="undo the install from its record: every file it touched put back as it "
                     "was, the store crypto-shredded")
    u.add_argument("--keep-store", action="store_true",
                   help="keep /var/lib/fr-pbd (store, key, config.toml) and the daemon's account")
    for p, func in ((i, cmd_install), (u, cmd_uninstall)):
        p.add_argument("--dry-run", action="store_true", help="print each change and make none")
        p.add_argument("--root", default="/", metavar="DIR",
                       help="install under DIR instead of / (a prefix like DESTDIR; for tests and image builds)")
        # The Python audit hook still refuses every network socket in this process; the kernel filter
        # (inherited by children) is left off because useradd and userdel must open the kernel's audit
        # netlink socket to log the account change, and abort when they cannot.
        p.set_defaults(func=func, kernel_filter=False)
