"""The daemon's side of socket security: where it listens, and whose questions it takes.

The socket is created 0660 (umask while binding, then chmod) in a directory no other
user can change (:func:`fr_pbd.config.check_dir_chain`), after making sure no other
process of another uid listens on its name. A peer other than root may ask only for its
own account (:func:`claimed_user`).
"""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

from fr_pbd import accounts
from fr_pbd import config as _config
from fr_pbd.daemon.protocol import peer_credentials
from fr_pbd.errors import ConfigError, DaemonError

__all__ = ["LISTEN_BACKLOG", "SOCKET_MODE", "Refused", "account_name", "bind_socket", "check_socket_dir",
           "claimed_user", "prepare_socket_path"]

LISTEN_BACKLOG = 128
SOCKET_MODE = 0o660


def prepare_socket_path(path: Path) -> None:
    """Remove a stale socket left by a dead daemon; refuse to touch anything else."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise DaemonError(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(path))
        _pid, uid, _gid = peer_credentials(probe)
    except OSError:
        os.unlink(path)  # nobody listens: stale
        return
    finally:
        probe.close()
    if uid != os.geteuid():
        raise DaemonError(f"a process of uid {uid}, not this daemon's uid {os.geteuid()}, listens on {path}: "
                          "someone may be posing as fr-pbd; stop it and remove the socket")
    raise DaemonError(f"another daemon already listens on {path}")


def check_socket_dir(path: Path) -> None:
    """Nobody but root and the daemon may be able to take the socket's name away (DaemonError)."""
    if not path.parent.is_dir():
        raise DaemonError(f"the socket's directory {path.parent} does not exist")
    if len(os.fsencode(str(path))) > 107:
        raise DaemonError(f"socket path {path} is longer than 107 bytes")
    try:
        _config.check_dir_chain(path.parent, {os.geteuid()}, f"directory of the socket {path.name}")
    except ConfigError as exc:
        raise DaemonError(f"refusing to listen: {exc}") from None


def bind_socket(path: Path) -> socket.socket:
    check_socket_dir(path)
    prepare_socket_path(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o117)  # no window in which the socket is wider than 0660
    try:
        sock.bind(str(path))
    except OSError as exc:
        sock.close()
        raise DaemonError(f"cannot listen on {path}: {exc.strerror or exc}") from None
    finally:
        os.umask(old)
    os.chmod(path, SOCKET_MODE)
    sock.listen(LISTEN_BACKLOG)
    return sock


def account_name(uid: int) -> str | None:
    """The peer's account name, from /etc/passwd itself (never nscd: see :mod:`fr_pbd.accounts`)."""
    return accounts.name_of(uid)


class Refused(Exception):
    """Internal: a well-formed request this peer may not make (the reason is for the log)."""


def claimed_user(peer_uid: int, user: str | None) -> str | None:
    """The account whose templates a request from ``peer_uid`` is checked against (None: any, root only).

    A peer other than root may ask only for its own account: a screen locker running
    as alice must not unlock with bob's face, and alice cannot probe bob's templates.
    """
    if peer_uid == 0:
        return user
    name = account_name(peer_uid)
    if name is None:
        raise Refused(f"uid {peer_uid} has no account name, and only root may ask for another account")
    if user is not None and user != name:
        raise Refused(f"uid {peer_uid} ({name}) may ask only for its own account, not for {user!r}")
    return name
