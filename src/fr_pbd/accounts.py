"""Unix accounts, read from ``/etc/passwd`` itself and never through the name service.

Why: glibc's ``getpwnam``/``getpwuid`` first ask the name-service cache daemon
(``connect`` to ``/var/run/nscd/socket``) and, on hosts with ``passwd: files
systemd``, systemd's userdb sockets, before they read the file. A verifier that
did so would hand the name of the account being checked to another local
service at every attempt, and an auditor tracing the daemon cannot tell that
from a leak (C3.network: any contact with another local service fails). The
accounts of a household device live in ``/etc/passwd``; an account that exists
only in LDAP, sssd or systemd-homed is not one face login serves: it is treated
as no account, which fails closed (the password still works).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["PASSWD", "name_of", "uid_of"]

#: The account database read; a constant, not a knob.
PASSWD = Path("/etc/passwd")


def _entries() -> list[tuple[str, int]]:
    try:
        text = PASSWD.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) < 7 or not fields[0] or fields[0].startswith(("+", "-", "#")):
            continue  # short lines, NIS compat markers and comments name no local account
        try:
            out.append((fields[0], int(fields[2])))
        except ValueError:
            continue
    return out


def uid_of(name: str) -> int | None:
    """The uid of the local account called ``name``, or None if ``/etc/passwd`` has none."""
    if not isinstance(name, str) or not name or "\x00" in name or ":" in name or "\n" in name:
        return None
    for n, uid in _entries():
        if n == name:
            return uid
    return None


def name_of(uid: int) -> str | None:
    """The name of the first local account with ``uid`` (as getpwuid answers), or None."""
    if not isinstance(uid, int) or isinstance(uid, bool) or uid < 0:
        return None
    for n, u in _entries():
        if u == uid:
            return n
    return None
