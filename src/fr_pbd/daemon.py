"""The verification daemon: yes or no across a process boundary, and nothing else (condition 5).

``fr-pbd serve --socket PATH (--camera SRC | --frames DIR)`` owns the camera,
the store and its key. Other processes (a PAM module, a screen locker) never
see a frame, a template, a score or the key: they connect to a Unix-domain
socket and get one byte.

Protocol (version 1), one request per connection::

    client: "VERIFY\\n"  or  "VERIFY <user>\\n"   ASCII, at most 256 bytes with the LF
    daemon: "Y" or "N"                           exactly one byte, then it closes

Everything that is not an accepted verification is ``N``: no match, no usable
face, locked out, a malformed / oversized / non-ASCII / late (> 2 s) request,
a peer not on the allowlist, an internal error. The reason goes only to the
daemon's own log (stderr, or ``--log FILE``), which never holds a score, a
template or an image. Malformed requests and refused peers are answered
without looking at the camera, so they never count towards the lockout.

Access: the socket is created 0660 (umask while binding, then chmod); the
kernel's ``SO_PEERCRED`` uid/gid of every peer is checked against
``[daemon] allowed_uids/allowed_gids`` of ``config.toml`` (default: only the
daemon's own uid). The daemon runs with the egress guard installed and writes
the guard's counts (no addresses) to ``PATH.egress.json`` for the audit.

Concurrency: one accept loop; at most :data:`MAX_IN_FLIGHT` connections are
handled at a time by :data:`WORKERS` threads (more are answered ``N`` at
once); each has :data:`READ_TIMEOUT_S` in total to send its line; verifications
run one at a time (one camera, one lockout counter). A client that disconnects
at any point only ends its own connection.

``--frames DIR`` is the test camera: each ``VERIFY`` reads ``DIR/current.jpg``
(or the file itself if a file was given) at that moment, so a test can swap
the frame between requests. With ``--camera`` the camera is opened for each
verification and closed after it: it is never on while nobody asks.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import stat
import struct
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from fr_pbd import config as _config
from fr_pbd import egress
from fr_pbd.errors import CameraError, DaemonError, FrPbdError
from fr_pbd.fileio import atomic_write

if TYPE_CHECKING:  # keep `fr-pbd --help` from importing OpenCV
    from fr_pbd.capture.image import ImageSource

__all__ = [
    "MAX_REQUEST",
    "READ_TIMEOUT_S",
    "ProtocolError",
    "parse_request",
    "ask",
    "serve",
    "socket_from_config",
]

MAX_REQUEST = 256  # bytes, including the LF
MAX_USER = 128
READ_TIMEOUT_S = 2.0
WORKERS = 4
MAX_IN_FLIGHT = 16
SOCKET_MODE = 0o660
ASK_TIMEOUT_S = 30.0
YES, NO = b"Y", b"N"
FRAME_FILE = "current.jpg"
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class ProtocolError(DaemonError):
    """A request that is not one well-formed ``VERIFY`` line; the reason is for the log only."""


def parse_request(data: bytes) -> str | None:
    """The claimed user of a ``VERIFY [user]`` line (None = any enrolled user); ProtocolError otherwise."""
    if len(data) > MAX_REQUEST:
        raise ProtocolError(f"request longer than {MAX_REQUEST} bytes")
    if not data.endswith(b"\n"):
        raise ProtocolError("request not terminated by LF (client gone or too slow)")
    line = data[:-1]
    if b"\n" in line:
        raise ProtocolError("more than one line")
    if any(b < 0x20 or b > 0x7E for b in line):
        raise ProtocolError("request holds non-ASCII or control bytes")
    text = line.decode("ascii")
    if text == "VERIFY":
        return None
    if not text.startswith("VERIFY "):
        raise ProtocolError("unknown request (only VERIFY and VERIFY <user>)")
    user = text[len("VERIFY "):]
    if not 1 <= len(user) <= MAX_USER or user != user.strip():
        raise ProtocolError(f"user name must be 1-{MAX_USER} printable characters without surrounding spaces")
    return user


# --------------------------------------------------------------------------------------
# frame sources
# --------------------------------------------------------------------------------------
class FrameSource:
    """Gives one image per verification."""

    def read(self) -> "ImageSource":  # pragma: no cover - interface
        raise NotImplementedError

    def describe(self) -> str:  # pragma: no cover - interface
        raise NotImplementedError


class FileFrames(FrameSource):
    """Test camera: the bytes of ``DIR/current.jpg`` (or of a given file) at the moment of the request."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        p = Path(path)
        self.path = p / FRAME_FILE if p.is_dir() else p
        if not self.path.parent.is_dir():
            raise DaemonError(f"frames directory {self.path.parent} does not exist")

    def read(self) -> "ImageSource":
        try:
            return self.path.read_bytes()  # read once: a swap mid-decode cannot mix two frames
        except OSError as exc:
            raise CameraError(f"no frame at {self.path}: {exc.strerror or exc}") from None

    def describe(self) -> str:
        return f"frames file {self.path}"


class CameraFrames(FrameSource):
    """A real camera, opened for one frame per verification and closed at once."""

    def __init__(self, source: str) -> None:
        self.source = source

    def read(self) -> "ImageSource":
        from fr_pbd.capture.camera import CameraSource

        with CameraSource(self.source) as cam:
            return cam.read()

    def describe(self) -> str:
        return f"camera {self.source}"


# --------------------------------------------------------------------------------------
# the server
# --------------------------------------------------------------------------------------
def _make_logger(log_path: str | None) -> logging.Logger:
    """The daemon's own log: decisions and reasons, never a score, a template or an image."""
    logger = logging.getLogger(f"fr_pbd.daemon.{os.getpid()}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if log_path:
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0), 0o600)
        stream = os.fdopen(fd, "a", buffering=1, encoding="utf-8")
        handler: logging.Handler = logging.StreamHandler(stream)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s fr-pbd serve[%(process)d]: %(message)s",
                                           datefmt="%Y-%m-%dT%H:%M:%S%z"))
    logger.addHandler(handler)
    return logger


def egress_record_path(socket_path: str | os.PathLike[str]) -> Path:
    """Where the daemon publishes its egress guard's counts (read by ``fr-pbd audit``)."""
    p = Path(socket_path)
    return p.with_name(p.name + ".egress.json")


def _prepare_socket_path(path: Path) -> None:
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
    except OSError:
        os.unlink(path)  # nobody listens: stale
        return
    finally:
        probe.close()
    raise DaemonError(f"another daemon already listens on {path}")


def _bind(path: Path) -> socket.socket:
    if not path.parent.is_dir():
        raise DaemonError(f"the socket's directory {path.parent} does not exist")
    if len(os.fsencode(str(path))) > 107:
        raise DaemonError(f"socket path {path} is longer than 107 bytes")
    _prepare_socket_path(path)
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
    sock.listen(32)
    return sock


class Daemon:
    """Accept loop + bounded worker pool; one verification at a time."""

    def __init__(self, *, home: Path, socket_path: Path, frames: FrameSource, cfg: _config.Config,
                 log: logging.Logger, verifier=None, board: str | None = None) -> None:
        from fr_pbd.verify import Verifier

        self.home = home
        self.socket_path = socket_path
        self.frames = frames
        self.cfg = cfg
        self.log = log
        self.verifier = verifier if verifier is not None else Verifier(home, board=board or cfg.board)
        self._verify_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(MAX_IN_FLIGHT)
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._record_lock = threading.Lock()
        self.requests = 0

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> None:
        """Check the store and model before listening, so a broken installation fails at start."""
        self.verifier.store()  # raises StoreError & co. with a one-line message
        _ = self.verifier.extractor  # model files hashed and loaded now, not at the first request
        self._sock = _bind(self.socket_path)
        self._write_egress_record()
        self.log.info("%s", self.verifier.describe())
        d = self.cfg.daemon
        self.log.info("listening on %s (mode 0660; allowed uids %s, gids %s; %s; config %s)",
                      self.socket_path, list(d.allowed_uids), list(d.allowed_gids), self.frames.describe(),
                      self.cfg.path or "defaults")

    def stop(self) -> None:
        self._stop.set()

    def serve_forever(self) -> None:
        assert self._sock is not None, "call start() first"
        self._sock.settimeout(0.25)
        pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="fr-pbd-conn")
        try:
            while not self._stop.is_set():
                try:
                    conn, _ = self._sock.accept()
                except TimeoutError:
                    continue
                except OSError as exc:
                    if self._stop.is_set():
                        break
                    self.log.info("accept failed: %s", exc.strerror or type(exc).__name__)
                    continue
                if not self._slots.acquire(blocking=False):
                    self._answer(conn, NO, "busy: too many connections in flight")
                    continue
                try:
                    pool.submit(self._run_one, conn)
                except RuntimeError:  # pool shut down
                    self._slots.release()
                    conn.close()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            self._sock.close()
            try:
                if stat.S_ISSOCK(os.lstat(self.socket_path).st_mode):
                    os.unlink(self.socket_path)
            except OSError:
                pass
            self.log.info("stopped after %d request(s)", self.requests)

    # -- one connection -----------------------------------------------------------------
    def _run_one(self, conn: socket.socket) -> None:
        try:
            self._handle(conn)
        except Exception as exc:  # noqa: BLE001 - a connection must never take the daemon down
            self.log.info("internal error on a connection: %s", type(exc).__name__)
            self._answer(conn, NO, None)
        finally:
            self._slots.release()
            self._write_egress_record()

    def _handle(self, conn: socket.socket) -> None:
        self.requests += 1
        deadline = time.monotonic() + READ_TIMEOUT_S
        try:
            pid, uid, gid = _PEERCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
        except OSError:
            self._answer(conn, NO, "cannot read the peer's credentials")
            return
        who = f"pid {pid} uid {uid} gid {gid}"
        if not self.cfg.daemon.allows(uid, gid):
            self._answer(conn, NO, f"{who}: refused, uid/gid not on the allowlist")
            return
        try:
            data = _read_line(conn, deadline)
            user = parse_request(data)
        except ProtocolError as exc:
            self._answer(conn, NO, f"{who}: malformed request: {exc}")
            return
        except TimeoutError:
            self._answer(conn, NO, f"{who}: no complete request within {READ_TIMEOUT_S:g} s")
            return
        except OSError as exc:
            self.log.info("%s: connection lost while reading (%s)", who, exc.strerror or type(exc).__name__)
            conn.close()
            return
        claim = "any enrolled user" if user is None else f"user {user!r}"
        with self._verify_lock:
            accepted, reason = self._verify(user)
        self._answer(conn, YES if accepted else NO, f"{who}: VERIFY {claim}: {reason}")

    def _verify(self, user: str | None) -> tuple[bool, str]:
        """Decision and a reason for the log (no score: the verifier does not even return one)."""
        try:
            if self.verifier.store().read().lockout.is_locked():
                return False, "locked out (too many failed attempts; the fallback PIN unlocks)"
            image = self.frames.read()
            decision = self.verifier.verify(image, user=user)
        except FrPbdError as exc:  # one-line messages that never hold biometric data
            return False, f"error: {exc}"
        except Exception as exc:  # noqa: BLE001
            return False, f"internal error: {type(exc).__name__}"
        return (True, "accepted") if decision.accepted else (False, "not accepted (no match or no usable face)")

    def _answer(self, conn: socket.socket, byte: bytes, reason: str | None) -> None:
        try:
            conn.settimeout(READ_TIMEOUT_S)
            conn.sendall(byte)
            conn.shutdown(socket.SHUT_WR)
            _drain(conn)
        except OSError:
            reason = (reason or "") + " (client gone before the answer)"
        finally:
            conn.close()
        if reason is not None:
            self.log.info("%s -> %s", reason, byte.decode())

    def _write_egress_record(self) -> None:
        rec = dict(egress.record(), pid=os.getpid(), requests=self.requests)
        path = egress_record_path(self.socket_path)
        with self._record_lock:
            try:
                atomic_write(path, json.dumps(rec, sort_keys=True).encode(), mode=0o640)
            except OSError as exc:
                self.log.info("cannot write the egress record %s: %s", path, exc.strerror or exc)


def _drain(conn: socket.socket, limit: int = 64 * 1024, seconds: float = 1.0) -> None:
    """Read what the client still sends until it closes (bounded).

    Closing a Unix socket with unread bytes in its queue resets the connection,
    and the client may then lose the answer byte: so the daemon waits for the
    client's end of the conversation before it closes its own.
    """
    deadline = time.monotonic() + seconds
    got = 0
    while got < limit:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        conn.settimeout(left)
        try:
            chunk = conn.recv(4096)
        except OSError:
            return
        if not chunk:
            return
        got += len(chunk)


def _read_line(conn: socket.socket, deadline: float) -> bytes:
    """Bytes up to and including the first LF; stops early past MAX_REQUEST, at EOF or at the deadline."""
    buf = bytearray()
    while b"\n" not in buf and len(buf) <= MAX_REQUEST:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        conn.settimeout(left)
        chunk = conn.recv(MAX_REQUEST + 1 - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def serve(*, home: str | os.PathLike[str] | None, socket_path: str | os.PathLike[str] | None,
          frames: FrameSource, log_path: str | None = None, board: str | None = None) -> int:
    """Run the daemon until SIGTERM/SIGINT. Installs the egress guard first.

    ``board`` (else ``board`` in config.toml) decides how the models run (fr_pbd.boards).
    """
    egress.install()
    home_p = Path(home) if home is not None else _config.default_home()
    cfg = _config.require_verification(_config.load(home_p))
    sock = socket_path if socket_path is not None else cfg.daemon.socket
    if sock is None:
        raise DaemonError("no socket path: give --socket or set [daemon] socket in config.toml")
    log = _make_logger(log_path)
    daemon = Daemon(home=home_p, socket_path=Path(sock), frames=frames, cfg=cfg, log=log, board=board)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: daemon.stop())
    daemon.start()
    daemon.serve_forever()
    return 0


# --------------------------------------------------------------------------------------
# the client
# --------------------------------------------------------------------------------------
def ask(socket_path: str | os.PathLike[str], user: str | None = None, timeout: float = ASK_TIMEOUT_S) -> bool:
    """Ask the daemon; True for ``Y``, False for ``N``; DaemonError if it cannot be reached or answers anything else."""
    line = b"VERIFY\n" if user is None else b"VERIFY " + user.encode("ascii", "replace") + b"\n"
    try:
        parse_request(line)
    except ProtocolError as exc:
        raise DaemonError(f"invalid user name: {exc}") from None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(os.fspath(socket_path))
            sock.sendall(line)
            answer = bytearray()
            while len(answer) < 2:
                chunk = sock.recv(2 - len(answer))
                if not chunk:
                    break
                answer += chunk
        except OSError as exc:
            raise DaemonError(f"cannot get an answer from the fr-pbd daemon at {socket_path}: "
                              f"{exc.strerror or type(exc).__name__}") from None
    finally:
        sock.close()
    if bytes(answer) == YES:
        return True
    if bytes(answer) == NO:
        return False
    raise DaemonError(f"the daemon at {socket_path} did not answer with exactly one byte Y or N "
                      f"({len(answer)}{'+' if len(answer) >= 2 else ''} bytes); not trusting it")


def socket_from_config(home: str | os.PathLike[str] | None) -> Path:
    """``[daemon] socket`` of the home's config.toml; DaemonError if none is set."""
    path = _config.load(home).daemon.socket
    if path is None:
        raise DaemonError("no socket path: give --socket or set [daemon] socket in config.toml")
    return path
