"""The ``[pam]`` shape: a PAM service driven by ``pamtester``, the whole stack traced per login.

A face login is most often a line in a PAM stack: a module, or ``pam_exec`` running a
comparator or a client of the product's daemon. The audit logs in through that stack the way
``login`` would, once per verification (:mod:`fr_pbd.audit.invoke` runs and traces each login:
``pamtester`` from its first instruction, every module and every program they start with it),
and PAM's result is the answer: ``pamtester`` exits 0 on success, which is the yes.

    [pam]
    service = "login"                 # the service pamtester authenticates against
    user = "alice"                    # the account logged into (its face is the genuine probe)
    items = ["tty=tty1"]              # pamtester -I items: PAM_TTY, PAM_RUSER, ...
    lines = ["auth [success=done default=die] pam_exec.so quiet /usr/local/bin/fr-pbd ask --pam"]
    timeout = 20                      # seconds per login; past it: no
    socket = "run/fr-pbd.sock"        # optional: the product's daemon the module asks

With ``lines``, the audit writes the service with exactly those lines into a private copy of
``/etc/pam.d`` that only the logins see (a mount namespace: ``unshare -m`` and a bind mount;
root only), so the host's PAM files are never touched; without ``lines`` the installed
``/etc/pam.d/SERVICE`` is used as it is. With ``socket``, the daemon that listens there is
part of the product: it is traced and inventoried while the traced logins run, its socket is
judged (C3.socket), and the connections the stack makes to it are the product's own.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from fr_pbd.audit.invoke import InvokeSpec
from fr_pbd.errors import AuditError

__all__ = ["PamSpec", "parse_pam", "private_pam_dir", "login_spec"]

_KEYS = {"service", "user", "items", "lines", "timeout", "socket"}
_SERVICE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_ITEM = re.compile(r"^(service|user|tty|rhost|ruser)=[^\s]*$")
_TYPE = re.compile(r"^-?(auth|account|password|session)\s")
#: the wrapper that gives one login a private /etc/pam.d: its own mount namespace, the copy bound over it
_NAMESPACE = 'mount --bind "$1" /etc/pam.d && shift && exec "$@"'


@dataclass(frozen=True)
class PamSpec:
    service: str
    user: str
    items: tuple[str, ...] = ()
    lines: tuple[str, ...] | None = None
    timeout: float = 20.0
    socket: Path | None = None


def parse_pam(table: object, where: str, *, root: Path, target_dir: Path | None = None) -> PamSpec:
    """``[pam]`` of a TARGET.toml (strings already ``${VAR}``-expanded; in ``lines``, ``{python}`` is this
    Python and ``{target_dir}`` the directory of the TARGET.toml)."""
    if not isinstance(table, dict):
        raise AuditError(f"{where}: [pam] must be a table")
    unknown = set(table) - _KEYS
    if unknown:
        raise AuditError(f"{where}: unknown key(s) in [pam]: {', '.join(sorted(unknown))}")
    service, user = table.get("service"), table.get("user")
    if not isinstance(service, str) or not _SERVICE.match(service):
        raise AuditError(f"{where}: [pam] service must be a PAM service name (letters, digits, . _ -)")
    if not isinstance(user, str) or not user or any(c.isspace() for c in user) or "/" in user:
        raise AuditError(f"{where}: [pam] user must be an account name")
    items = table.get("items", [])
    if not isinstance(items, list) or not all(isinstance(i, str) and _ITEM.match(i) for i in items):
        raise AuditError(f"{where}: [pam] items must be a list of pamtester items such as \"tty=tty1\"")
    lines = table.get("lines")
    if lines is not None:
        if not isinstance(lines, list) or not lines or not all(
                isinstance(ln, str) and "\n" not in ln and _TYPE.match(ln.strip() + " ") for ln in lines):
            raise AuditError(f"{where}: [pam] lines must be PAM lines, each starting with auth, account, password "
                             "or session")
        lines = [ln.replace("{python}", sys.executable).replace("{target_dir}", str(target_dir or root))
                 for ln in lines]
    timeout = table.get("timeout", 20)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 300:
        raise AuditError(f"{where}: [pam] timeout must be a number of seconds from 0 to 300")
    sock = table.get("socket")
    if sock is not None and (not isinstance(sock, str) or not sock):
        raise AuditError(f"{where}: [pam] socket must be a path")
    sock_path = None if sock is None else (Path(sock) if Path(sock).is_absolute() else root / sock)
    return PamSpec(service, user, tuple(items), tuple(lines) if lines is not None else None, float(timeout),
                   sock_path)


def private_pam_dir(spec: PamSpec, tmp: Path) -> Path | None:
    """A copy of /etc/pam.d with the service written as declared (None: the installed service is used)."""
    if spec.lines is None:
        if not os.path.exists(f"/etc/pam.d/{spec.service}"):
            raise AuditError(f"/etc/pam.d/{spec.service} does not exist: install the product's PAM service, or "
                             "declare its lines in [pam] lines")
        return None
    if os.geteuid() != 0:
        raise AuditError("a private /etc/pam.d for [pam] lines needs root (unshare -m, mount --bind); run the audit "
                         "as root, or leave lines out to use the installed service")
    if shutil.which("unshare") is None:
        raise AuditError("unshare is not installed (apt-get install util-linux): it gives the logins a private "
                         "/etc/pam.d")
    pamd = tmp / "pam.d"
    shutil.copytree("/etc/pam.d", pamd, symlinks=True)
    (pamd / spec.service).write_text("".join(f"{ln.strip()}\n" for ln in spec.lines), encoding="utf-8")
    return pamd


def login_spec(spec: PamSpec, pamd: Path | None, *, cwd: Path, name: str) -> InvokeSpec:
    """One login through pamtester, as an [invoke] run: its exit status 0 (PAM_SUCCESS) is the yes."""
    exe = shutil.which("pamtester")
    if exe is None:
        raise AuditError("pamtester is not installed (apt-get install pamtester): the [pam] shape logs in with it")
    command = (exe, *[a for item in spec.items for a in ("-I", item)], spec.service, spec.user, "authenticate")
    wrapper = () if pamd is None else (shutil.which("unshare") or "unshare", "--mount", "--propagation", "private",
                                       "sh", "-c", _NAMESPACE, "sh", str(pamd))
    return InvokeSpec(command, cwd, (), spec.timeout, (0,), None, None, name, wrapper=wrapper)
