"""The client side: ``fr-pbd ask``'s question, asked only of the real daemon.

The client authenticates the daemon (:func:`ask`): the socket, its directory and every
directory above must belong to root or the daemon's uid, and the kernel's ``SO_PEERCRED``
of the listening end must be the daemon's uid (``[daemon] daemon_uid``, default the
home's owner). A process of another uid that took the socket's name gets no question and
the asker exits 2. Under PAM, :mod:`fr_pbd.daemon.pam` first decides whether the login may
be answered by a face at all.
"""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Mapping
from pathlib import Path

from fr_pbd import config as _config
from fr_pbd.daemon.protocol import NO, YES, peer_credentials, request_line
from fr_pbd.errors import ConfigError, DaemonError

__all__ = ["ASK_TIMEOUT_S", "ask", "check_socket", "claim_for", "daemon_identity", "socket_from_config"]

ASK_TIMEOUT_S = 30.0


def claim_for(environ: Mapping[str, str], user: str | None, pam: bool) -> str | None:
    """The account ``fr-pbd ask`` claims: ``PAM_USER`` with ``--pam``; DaemonError for any doubt.

    Run by PAM (``PAM_USER`` set) without ``--pam``, a request for any enrolled user or
    for another account than ``PAM_USER`` would let one person's face open another's
    account (root's, for ``sudo``): refused.
    """
    pam_user = environ.get("PAM_USER")
    if pam:
        if user is not None:
            raise DaemonError("--pam takes the account from PAM_USER; do not give --user as well")
        if environ.get("PAM_TYPE") != "auth":
            raise DaemonError(f"--pam answers only PAM's auth stack (PAM_TYPE is "
                              f"{environ.get('PAM_TYPE') or 'not set'}); use it on an `auth` line of pam_exec")
        if not pam_user:
            raise DaemonError("--pam needs PAM_USER in the environment, which pam_exec sets")
        return pam_user
    if pam_user is not None and user != pam_user:
        raise DaemonError("run by PAM without --pam: use `fr-pbd ask --pam` so that only PAM_USER's own "
                          "face can open PAM_USER's account")
    return user


def daemon_identity(home: str | os.PathLike[str] | None) -> tuple[int, _config.Config]:
    """The uid ``ask`` requires of the daemon, and the home's config (for its socket).

    ``[daemon] daemon_uid`` of the home's config, else the owner of the home. Without an
    explicit home and none at the default place: this process's own uid (a daemon you run
    yourself). The home and its parents must be safe from other users, as for the daemon.
    """
    explicit = home is not None
    h = Path(home) if home is not None else _config.default_home()
    try:
        st = os.stat(h)
    except FileNotFoundError:
        if explicit:
            raise DaemonError(f"the home {h} does not exist: cannot tell which uid the daemon runs as") from None
        return os.geteuid(), _config.Config()
    except OSError as exc:
        raise DaemonError(f"cannot read the home {h}: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise DaemonError(f"the home {h} is not a directory")
    _config.check_home_parents(h, owner=st.st_uid)
    cfg = _config.load(h, owner=st.st_uid)
    return (cfg.daemon.daemon_uid if cfg.daemon.daemon_uid is not None else st.st_uid), cfg


def check_socket(path: Path, daemon_uid: int) -> None:
    """The socket must be the daemon's, in directories only root and the daemon can change; DaemonError."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise DaemonError(f"no fr-pbd daemon at {path} (no such socket)") from None
    except OSError as exc:
        raise DaemonError(f"cannot check the socket {path}: {exc.strerror or exc}") from None
    if not stat.S_ISSOCK(st.st_mode):
        raise DaemonError(f"{path} is not a socket (a link or a file): not trusting it")
    if st.st_uid != daemon_uid:
        raise DaemonError(f"the socket {path} belongs to uid {st.st_uid}, not to the daemon's uid {daemon_uid}: "
                          "not trusting it")
    try:
        _config.check_dir_chain(path.parent, {daemon_uid}, f"directory of the socket {path.name}")
    except ConfigError as exc:
        raise DaemonError(f"not trusting the socket: {exc}") from None


def ask(socket_path: str | os.PathLike[str], user: str | None = None, timeout: float = ASK_TIMEOUT_S,
        *, daemon_uid: int | None = None) -> bool:
    """Ask the daemon; True for ``Y``, False for ``N``; DaemonError for anything else, including any doubt.

    The daemon must run as ``daemon_uid`` (default: this process's uid): the socket, its
    directories (:func:`check_socket`) and the kernel's ``SO_PEERCRED`` of the listening
    end are checked before the question is sent.
    """
    uid = os.geteuid() if daemon_uid is None else daemon_uid
    line = request_line(user)
    path = Path(os.fspath(socket_path))
    check_socket(path, uid)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
            _pid, peer_uid, _gid = peer_credentials(sock)
            if peer_uid != uid:
                raise DaemonError(f"the process listening on {path} runs as uid {peer_uid}, not as the daemon's "
                                  f"uid {uid}: not trusting it")
            try:
                sock.sendall(line)
            except (BrokenPipeError, ConnectionResetError):
                pass  # a refusal at once: the daemon wrote its N and closed before it read the question
            answer = bytearray()
            while len(answer) < 2:
                try:
                    chunk = sock.recv(2 - len(answer))
                except ConnectionResetError:  # closed with our question unread: the end, after its answer
                    break
                if not chunk:
                    break
                answer += chunk
        except OSError as exc:
            raise DaemonError(f"cannot get an answer from the fr-pbd daemon at {path}: "
                              f"{exc.strerror or type(exc).__name__}") from None
    finally:
        sock.close()
    if bytes(answer) == YES:
        return True
    if bytes(answer) == NO:
        return False
    raise DaemonError(f"the daemon at {path} did not answer with exactly one byte Y or N "
                      f"({len(answer)}{'+' if len(answer) >= 2 else ''} bytes); not trusting it")


def socket_from_config(home: str | os.PathLike[str] | None) -> Path:
    """``[daemon] socket`` of the home's config.toml; DaemonError if none is set."""
    path = _config.load(home).daemon.socket
    if path is None:
        raise DaemonError("no socket path: give --socket or set [daemon] socket in config.toml")
    return path
