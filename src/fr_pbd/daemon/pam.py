"""Where face login may answer: the PAM context ``fr-pbd ask --pam`` checks before it asks.

A face is evidence about who sits in front of *this* device's camera, nothing more. It says
nothing about who typed ``ssh alice@host`` or ``su alice`` from another account: if the
face line answered for those, anyone who can reach the machine gets in whenever the account's
owner happens to be in front of the camera. So ``ask --pam`` refuses (no question reaches the
daemon, the PAM stack falls through to the password) unless every one of these holds:

* ``PAM_RHOST`` is unset or empty. Every network login sets it (sshd, telnetd, rlogind, xrdp,
  FTP and mail daemons); a loopback ``ssh alice@127.0.0.1`` is a network login too.
* ``PAM_SERVICE`` is on the allow-list (``[pam] services`` of the daemon's config.toml;
  default :data:`~fr_pbd.config.DEFAULT_PAM_SERVICES`: the console ``login``, the display managers, screen lockers
  and ``sudo``). Services that log in from the network or switch identity
  (:data:`~fr_pbd.config.NEVER_PAM_SERVICES`: ``sshd``, ``su``, ...) cannot be put on it.
* ``PAM_RUSER``, where the application sets it (``su``, ``sudo``), names ``PAM_USER`` itself:
  someone else asking to become this account is not this account's face.
* ``PAM_TTY`` is unset, a virtual console (``tty1``, ``/dev/tty1``) or a local X display
  (``:0``), or matches a glob of ``[pam] ttys``. A pseudo-terminal (``/dev/pts/N``) may be an
  ssh session's, so it is accepted only where systemd-logind says the caller's session is local
  (below).
* The caller's login session, where systemd-logind knows it (``/proc/self/sessionid``, the audit
  session id that pam_loginuid set at login and that a process cannot change without
  ``CAP_AUDIT_CONTROL``, names ``/run/systemd/sessions/ID``), is not remote (``REMOTE=1``) and
  was not opened by a network service. A program of an ssh session that detached from its
  terminal keeps that session id.
* ``PAM_USER`` is a local account (``/etc/passwd``, read as :mod:`fr_pbd.accounts` does, the
  same answer the daemon will use): a name that is not one never gets a yes.

Every refusal is a :class:`PamRefusal` with a one-line reason for stderr (pam_exec's log);
nothing is asked, so nothing is counted against the account's lockout.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from pathlib import Path

from fr_pbd import accounts
from fr_pbd.config import DEFAULT_PAM_SERVICES, DEFAULT_PAM_TTYS, NEVER_PAM_SERVICES, PamPolicy

__all__ = [
    "DEFAULT_PAM_SERVICES",
    "DEFAULT_PAM_TTYS",
    "NEVER_PAM_SERVICES",
    "PamPolicy",
    "PamRefusal",
    "check_pam_context",
]

#: Where systemd-logind keeps one file per session (KEY=VALUE lines).
LOGIND_SESSIONS = Path("/run/systemd/sessions")
_NO_SESSION = "4294967295"  # (uint32_t)-1: no audit session
_PTY_PREFIXES = ("/dev/pts/", "pts/")


class PamRefusal(Exception):
    """Face login is not offered in this PAM context; the message says why, in one line."""


def _session_id() -> str | None:
    try:
        return Path("/proc/self/sessionid").read_text().strip()
    except OSError:
        return None


def _session_facts(sessions: Path, sid: str | None) -> dict[str, str] | None:
    """The caller's logind session record, or None where there is no audit session or no logind."""
    if sid is None or not sid.isdigit() or sid == _NO_SESSION:
        return None
    try:
        text = (sessions / sid).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    facts: dict[str, str] = {}
    for line in text.splitlines()[:200]:
        key, sep, value = line.partition("=")
        if sep:
            facts[key.strip()] = value.strip()
    return facts


def check_pam_context(environ: Mapping[str, str], policy: PamPolicy | None = PamPolicy(), *,
                      sessions: Path = LOGIND_SESSIONS, session_id: str | None = None) -> str:
    """``PAM_USER`` if face login may answer in this PAM context; :class:`PamRefusal` otherwise.

    ``policy=None`` checks only what no config can change (the remote host, the never-services,
    another caller, a remote session, the account), before the daemon's config is read: ``su``
    runs pam_exec's command as its caller, who may not be able to read that config.
    ``sessions`` and ``session_id`` (default: this process's audit session) are logind's.
    """
    user = environ.get("PAM_USER", "")
    service = environ.get("PAM_SERVICE", "")
    rhost = environ.get("PAM_RHOST", "")
    ruser = environ.get("PAM_RUSER", "")
    tty = environ.get("PAM_TTY", "")
    if rhost.strip():
        raise PamRefusal(f"the login comes from the network (PAM_RHOST={rhost[:64]!r}): a face at this camera "
                         "says nothing about who is asking")
    if not service:
        raise PamRefusal("PAM_SERVICE is not set: cannot tell which program asks (pam_exec sets it)")
    if service in NEVER_PAM_SERVICES or (policy is not None and service not in policy.services):
        raise PamRefusal(f"face login is not offered to the PAM service {service[:64]!r} "
                         "(config.toml [pam] services; never to sshd, su or other network services)")
    if ruser and ruser != user:
        raise PamRefusal(f"{ruser[:64]!r} asks to become {user[:64]!r} (PAM_RUSER): only the account's own "
                         "login may use its face")
    facts = _session_facts(sessions, session_id if session_id is not None else _session_id())
    if facts is not None and (facts.get("REMOTE") == "1" or facts.get("SERVICE", "") in NEVER_PAM_SERVICES
                              or facts.get("REMOTE_HOST")):
        raise PamRefusal("the caller's login session is remote (systemd-logind): face login answers only "
                         "at the device")
    if tty and policy is not None:
        local_pty = tty.startswith(_PTY_PREFIXES) and facts is not None and facts.get("REMOTE") == "0" \
            and bool(facts.get("SEAT"))
        if not local_pty and not any(fnmatch.fnmatchcase(tty, g) for g in policy.ttys):
            raise PamRefusal(f"the terminal {tty[:64]!r} is not a local console or display (config.toml "
                             "[pam] ttys; a pseudo-terminal only in a local seat's session)")
    if accounts.uid_of(user) is None:
        raise PamRefusal(f"{user[:64]!r} is not a Unix account here (/etc/passwd): no face opens it")
    return user
