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

Whose face: a request is checked against the templates of one account. A
peer other than root may ask only for its own account (its uid's name in the
password database; ``VERIFY`` alone means that account); root names the
account, as ``fr-pbd ask --pam`` does with ``PAM_USER``. ``VERIFY`` alone
from root still means "any enrolled user", for root's own tools (the audit):
``fr-pbd ask`` refuses to send it when PAM runs it.

Access: the socket is created 0660 (umask while binding, then chmod) in a
directory no other user can change (:func:`fr_pbd.config.check_dir_chain`); the
kernel's ``SO_PEERCRED`` uid/gid of every peer is checked against
``[daemon] allowed_uids/allowed_gids`` of ``config.toml`` (default: only the
daemon's own uid). The daemon runs with the egress guard installed and writes
the guard's counts (no addresses) to ``PATH.egress.json`` for the audit.

The client authenticates the daemon (:func:`ask`): the socket, its directory
and every directory above must belong to root or the daemon's uid, and the
kernel's ``SO_PEERCRED`` of the listening end must be the daemon's uid
(``[daemon] daemon_uid``, default the home's owner). A process of another uid
that took the socket's name gets no question and the asker exits 2.

Fixed-time answers: every verification is answered ``answer_deadline_ms`` after
its request line arrived, whatever the outcome and reason (match, no match, no
face, attack, locked out, unknown user), so the answer's timing does not tell
the reason. A verification that takes longer is answered at the next multiple
of the deadline and logged as an overrun. Refusals that depend only on the
request (malformed, peer not allowed, account not the peer's) are answered at
once: the asker knows them already.

Concurrency: one thread reads every connection without blocking (``selectors``);
a peer uid may hold at most ``max_connections_per_uid`` open connections and all
peers together :data:`MAX_CONNECTIONS` (beyond that: ``N`` at once); each has
:data:`READ_TIMEOUT_S` to send its line. So idle or refused peers never hold a
worker: one worker thread runs the verifications one at a time (one camera, one
lockout counter) and one thread sends each answer at its deadline. A client that
disconnects at any point only ends its own connection.

``--frames DIR`` is the test camera: each ``VERIFY`` reads ``DIR/current.jpg``
(or the file itself if a file was given) at that moment, so a test can swap
the frame between requests (a still: one frame per attempt). With ``--camera``
the camera is opened for each verification and closed after it: it is never on
while nobody asks. One attempt looks at up to ``[capture] max_frames`` frames
within ``frame_budget_ms`` and 90 % of the answer deadline, and says yes at the
first live match; a claim that cannot succeed (locked, not enrolled, account
changed) never opens the camera.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import logging
import math
import os
import pwd
import queue
import selectors
import signal
import socket
import stat
import struct
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from fr_pbd import config as _config
from fr_pbd import egress, hardening
from fr_pbd.errors import CameraError, ConfigError, DaemonError, FrPbdError
from fr_pbd.fileio import atomic_write

if TYPE_CHECKING:  # keep `fr-pbd --help` from importing OpenCV
    from fr_pbd.capture.image import ImageSource

__all__ = [
    "MAX_REQUEST",
    "READ_TIMEOUT_S",
    "ProtocolError",
    "parse_request",
    "ask",
    "check_socket",
    "claim_for",
    "claimed_user",
    "daemon_identity",
    "serve",
    "socket_from_config",
]

MAX_REQUEST = 256  # bytes, including the LF
MAX_USER = 128
READ_TIMEOUT_S = 2.0
DRAIN_S = 1.0
DRAIN_LIMIT = 64 * 1024
MAX_CONNECTIONS = 128  # open connections of all peers together (each holds one file descriptor)
LISTEN_BACKLOG = 128
SOCKET_MODE = 0o660
ASK_TIMEOUT_S = 30.0
YES, NO = b"Y", b"N"
FRAME_FILE = "current.jpg"
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
# The answer thread wakes this long before a deadline and spins until it: a thread already
# running at the deadline answers within microseconds, one woken at the deadline may wait
# for the scheduler. It also asks for real-time priority (SCHED_FIFO 1) where allowed.
_SPIN_S = 0.001


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
    """Gives the frames of one verification attempt."""

    def read(self) -> "ImageSource":  # pragma: no cover - interface
        raise NotImplementedError

    @contextlib.contextmanager
    def attempt(self) -> "Iterator[Iterator[ImageSource]]":
        """The frames of one attempt (a still source: one frame), released at the end."""
        yield iter((self.read(),))

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

    @contextlib.contextmanager
    def attempt(self) -> "Iterator[Iterator[ImageSource]]":
        """The camera, opened for one attempt: frames as the verifier asks for them, then closed."""
        from fr_pbd.capture.camera import CameraSource

        with CameraSource(self.source) as cam:
            yield cam.frames()

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


def _peer(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the other end, from the kernel (``SO_PEERCRED``), never from the peer's words."""
    pid, uid, gid = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
    return pid, uid, gid


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
        _pid, uid, _gid = _peer(probe)
    except OSError:
        os.unlink(path)  # nobody listens: stale
        return
    finally:
        probe.close()
    if uid != os.geteuid():
        raise DaemonError(f"a process of uid {uid}, not this daemon's uid {os.geteuid()}, listens on {path}: "
                          "someone may be posing as fr-pbd; stop it and remove the socket")
    raise DaemonError(f"another daemon already listens on {path}")


def _check_socket_dir(path: Path) -> None:
    """Nobody but root and the daemon may be able to take the socket's name away (DaemonError)."""
    if not path.parent.is_dir():
        raise DaemonError(f"the socket's directory {path.parent} does not exist")
    if len(os.fsencode(str(path))) > 107:
        raise DaemonError(f"socket path {path} is longer than 107 bytes")
    try:
        _config.check_dir_chain(path.parent, {os.geteuid()}, f"directory of the socket {path.name}")
    except ConfigError as exc:
        raise DaemonError(f"refusing to listen: {exc}") from None


def _bind(path: Path) -> socket.socket:
    _check_socket_dir(path)
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
    sock.listen(LISTEN_BACKLOG)
    return sock


def account_name(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


class _Refused(Exception):
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
        raise _Refused(f"uid {peer_uid} has no account name, and only root may ask for another account")
    if user is not None and user != name:
        raise _Refused(f"uid {peer_uid} ({name}) may ask only for its own account, not for {user!r}")
    return name


class _Conn:
    """One client connection, owned by one thread at a time (reader loop -> worker -> answerer -> loop)."""

    __slots__ = ("sock", "pid", "uid", "gid", "buf", "until", "draining", "drained", "busy")

    def __init__(self, sock: socket.socket, pid: int, uid: int, gid: int) -> None:
        self.sock, self.pid, self.uid, self.gid = sock, pid, uid, gid
        self.buf = bytearray()
        self.until = 0.0
        self.draining = False
        self.drained = 0
        self.busy = False  # handed to the worker/answerer: not in the selector

    @property
    def who(self) -> str:
        return f"pid {self.pid} uid {self.uid} gid {self.gid}"


@dataclass
class _Job:
    conn: _Conn
    user: str | None
    arrived: float  # time.monotonic() when the request line was complete


class Daemon:
    """One reader loop (selectors), one verification worker, one answer thread at the deadlines."""

    def __init__(self, *, home: Path, socket_path: Path, frames: FrameSource, cfg: _config.Config,
                 log: logging.Logger, verifier=None, board: str | None = None) -> None:
        from fr_pbd.verify import Verifier

        self.home = home
        self.socket_path = socket_path
        self.frames = frames
        self.cfg = cfg
        self.log = log
        self.verifier = verifier if verifier is not None else Verifier(home, board=board or cfg.board)
        self.deadline_s = cfg.daemon.answer_deadline_ms / 1000.0
        self.per_uid = cfg.daemon.max_connections_per_uid
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._sel: selectors.BaseSelector | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._conns: set[_Conn] = set()
        self._open: dict[int, int] = {}
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._due: list[tuple[float, int, _Conn, bytes, str]] = []
        self._due_cv = threading.Condition()
        self._seq = 0
        self._answers_stop = False
        self._handback: list[_Conn] = []
        self._handback_lock = threading.Lock()
        self._record_lock = threading.Lock()
        self._quiet: dict[str, tuple[float, int]] = {}
        self._egress_dirty = False
        self._record_due = threading.Event()
        self.requests = 0

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> None:
        """Check the store and model before listening, so a broken installation fails at start."""
        self.verifier.store()  # raises StoreError & co. with a one-line message
        self.verifier.load_models()  # model files hashed and loaded now, not at the first request
        self._sock = _bind(self.socket_path)
        self._write_egress_record()
        self.log.info("%s", self.verifier.describe())
        self.log.info("egress guard: %s", egress.enforcement())
        d = self.cfg.daemon
        self.log.info("listening on %s (mode 0660; allowed uids %s, gids %s; answers %d ms after each request; "
                      "at most %d connection(s) per uid; %s; config %s)",
                      self.socket_path, list(d.allowed_uids), list(d.allowed_gids), d.answer_deadline_ms,
                      self.per_uid, self.frames.describe(), self.cfg.path or "defaults")

    def stop(self) -> None:
        self._stop.set()
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"\0")
        except (BlockingIOError, OSError):
            pass  # already awake (pipe full) or closed

    def serve_forever(self) -> None:
        assert self._sock is not None, "call start() first"
        self._sock.setblocking(False)
        sel = self._sel = selectors.DefaultSelector()
        sel.register(self._sock, selectors.EVENT_READ, None)
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        worker = threading.Thread(target=self._verify_loop, name="fr-pbd-verify", daemon=True)
        answerer = threading.Thread(target=self._answer_loop, name="fr-pbd-answer", daemon=True)
        recorder = threading.Thread(target=self._record_loop, name="fr-pbd-record", daemon=True)
        worker.start()
        answerer.start()
        recorder.start()
        try:
            while not self._stop.is_set():
                for key, _ in sel.select(self._next_timeout()):
                    if key.data is None:
                        self._accept()
                    elif key.data == "wake":
                        self._take_back()
                    else:
                        self._readable(key.data)
                self._expire()
        finally:
            self._jobs.put(None)
            worker.join(timeout=60)
            with self._due_cv:
                self._answers_stop = True
                self._due_cv.notify()
            answerer.join(timeout=self.deadline_s + 5)
            self._record_due.set()
            recorder.join(timeout=30)
            self._take_back()
            for c in list(self._conns):
                self._close(c)
            sel.close()
            self._sock.close()
            fds, (self._wake_r, self._wake_w) = (self._wake_r, self._wake_w), (-1, -1)
            for fd in fds:  # a late signal's _wake() now writes to -1 (EBADF), never to a reused number
                os.close(fd)
            try:
                if stat.S_ISSOCK(os.lstat(self.socket_path).st_mode):
                    os.unlink(self.socket_path)
            except OSError:
                pass
            self._write_egress_record()
            self.log.info("stopped after %d request(s)", self.requests)

    # -- the reader loop (main thread): never blocks on a peer ----------------------------
    def _next_timeout(self) -> float:
        now = time.monotonic()
        nearest = min((c.until for c in self._conns if not c.busy), default=now + 0.5)
        return max(0.0, min(nearest - now, 0.5))

    def _accept(self) -> None:
        assert self._sock is not None and self._sel is not None
        while True:
            try:
                s, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and the like: the peers wait in the backlog
                self._log_limited("accept", f"accept failed: {exc.strerror or type(exc).__name__}")
                return
            self.requests += 1
            s.setblocking(False)
            try:
                c = _Conn(s, *_peer(s))
            except OSError:
                s.close()
                self.log.info("cannot read a peer's credentials; closed")
                continue
            if self._open.get(c.uid, 0) >= self.per_uid or len(self._conns) >= MAX_CONNECTIONS:
                whose = (f"uid {c.uid} holds {self._open.get(c.uid, 0)} (limit {self.per_uid})"
                         if self._open.get(c.uid, 0) >= self.per_uid else f"{len(self._conns)} open in all")
                self._send_now(s, f"busy-{c.uid}", f"{c.who}: refused at once, {whose} connection(s)")
                continue
            self._open[c.uid] = self._open.get(c.uid, 0) + 1
            self._conns.add(c)
            c.until = time.monotonic() + READ_TIMEOUT_S
            self._sel.register(s, selectors.EVENT_READ, c)
            if not self.cfg.daemon.allows(c.uid, c.gid):
                self._finish(c, NO, f"{c.who}: refused, uid/gid not on the allowlist", quiet=f"refused-{c.uid}")

    def _send_now(self, s: socket.socket, key: str, reason: str) -> None:
        """N and close, holding nothing (the peer is over its limit)."""
        try:
            s.send(NO)
            s.shutdown(socket.SHUT_WR)
            s.recv(MAX_REQUEST + 1)  # what has arrived already: closing on unread bytes would reset the answer
        except OSError:
            pass
        s.close()
        self._log_limited(key, reason + " -> N")

    def _readable(self, c: _Conn) -> None:
        if c.draining:
            try:
                chunk = c.sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                chunk = b""
            c.drained += len(chunk)
            if not chunk or c.drained > DRAIN_LIMIT:
                self._close(c)
            return
        try:
            chunk = c.sock.recv(MAX_REQUEST + 1 - len(c.buf))
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.log.info("%s: connection lost while reading (%s)", c.who, exc.strerror or type(exc).__name__)
            self._close(c)
            return
        c.buf += chunk
        if chunk and b"\n" not in c.buf and len(c.buf) <= MAX_REQUEST:
            return  # more to come
        arrived = time.monotonic()
        try:
            user = claimed_user(c.uid, parse_request(bytes(c.buf)))
        except ProtocolError as exc:
            self._finish(c, NO, f"{c.who}: malformed request: {exc}")
            return
        except _Refused as exc:
            self._finish(c, NO, f"{c.who}: refused: {exc}")
            return
        assert self._sel is not None
        self._sel.unregister(c.sock)
        c.busy = True
        self._jobs.put(_Job(c, user, arrived))

    def _finish(self, c: _Conn, byte: bytes, reason: str, quiet: str | None = None) -> None:
        """Answer now (the reader loop's refusals) and wait for the client's end (see :func:`_drain`)."""
        try:
            c.sock.send(byte)
            c.sock.shutdown(socket.SHUT_WR)
        except OSError:
            reason += " (client gone before the answer)"
        c.draining, c.until = True, time.monotonic() + DRAIN_S
        line = f"{reason} -> {byte.decode()}"
        if quiet:
            self._log_limited(quiet, line)
        else:
            self.log.info("%s", line)

    def _expire(self) -> None:
        now = time.monotonic()
        for c in [c for c in self._conns if not c.busy and c.until <= now]:
            if c.draining:
                self._close(c)
            else:
                self._finish(c, NO, f"{c.who}: no complete request within {READ_TIMEOUT_S:g} s")

    def _close(self, c: _Conn) -> None:
        if c not in self._conns:
            return
        if not c.busy and self._sel is not None:
            try:
                self._sel.unregister(c.sock)
            except (KeyError, ValueError):
                pass
        c.sock.close()
        self._conns.discard(c)
        left = self._open.get(c.uid, 1) - 1
        if left:
            self._open[c.uid] = left
        else:
            self._open.pop(c.uid, None)

    def _take_back(self) -> None:
        """Connections the answer thread has answered: wait for the client's end, then close."""
        try:
            while os.read(self._wake_r, 4096):
                pass
        except (BlockingIOError, OSError):
            pass
        with self._handback_lock:
            back, self._handback = self._handback, []
        if back and self._egress_dirty:
            self._egress_dirty = False
            self._record_due.set()  # the recorder thread writes it: this loop must never block
        now = time.monotonic()
        for c in back:
            c.busy = False
            if self._stop.is_set() or self._sel is None:
                self._close(c)
                continue
            c.draining, c.until = True, now + DRAIN_S
            self._sel.register(c.sock, selectors.EVENT_READ, c)

    def _log_limited(self, key: str, line: str) -> None:
        """At most one line per second per kind of refusal: a flood of connections cannot fill the disk."""
        now = time.monotonic()
        last, skipped = self._quiet.get(key, (-1e9, 0))
        if now - last >= 1.0:
            self.log.info("%s%s", line, f" ({skipped} more like it in the last second, not logged)" if skipped else "")
            self._quiet[key] = (now, 0)
        else:
            self._quiet[key] = (last, skipped + 1)

    # -- the verification worker ----------------------------------------------------------
    def _verify_loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            claim = "any enrolled user" if job.user is None else f"user {job.user!r}"
            if self._stop.is_set():
                accepted, reason = False, "daemon stopping, not verified"
            else:
                accepted, reason = self._verify(job.user, job.arrived)
            took = time.monotonic() - job.arrived
            due = job.arrived + self.deadline_s
            if took > self.deadline_s:
                k = math.ceil(took / self.deadline_s)
                due = job.arrived + k * self.deadline_s
                self.log.info("%s: verification overran the answer deadline (%.0f ms > %d ms); answered at %d x "
                              "the deadline", job.conn.who, took * 1e3, self.cfg.daemon.answer_deadline_ms, k)
            with self._due_cv:
                self._seq += 1
                heapq.heappush(self._due, (due, self._seq, job.conn, YES if accepted else NO,
                                           f"{job.conn.who}: VERIFY {claim}: {reason}"))
                self._due_cv.notify()
            self._egress_dirty = True  # written by the reader loop after the answer, not before it

    def _verify(self, user: str | None, started: float) -> tuple[bool, str]:
        """Decision and a reason for the log (no score: the verifier does not even return one)."""
        try:
            refused = self.verifier.refusal_without_look(user)  # the camera is not even opened
            if refused == "locked_out":
                return False, "locked out (too many failed attempts; the fallback PIN unlocks)"
            if refused:
                return False, f"not accepted ({refused}; no frame taken)"
            # One attempt: up to max_frames frames within the frame budget, and never past
            # the answer deadline less one frame (the verifier stops before a frame that would overrun).
            until = min(started + self.cfg.capture.frame_budget_ms / 1000, started + 0.9 * self.deadline_s)
            with self.frames.attempt() as frames:
                decision = self.verifier.verify_frames(frames, user=user, max_frames=self.cfg.capture.max_frames,
                                                       until=until)
        except FrPbdError as exc:  # one-line messages that never hold biometric data
            return False, f"error: {exc}"
        except Exception as exc:  # noqa: BLE001
            return False, f"internal error: {type(exc).__name__}"
        if decision.accepted:
            return True, "accepted"
        why = getattr(self.verifier, "last_reason", None)
        return False, f"not accepted ({why})" if why else "not accepted (no match or no usable face)"

    # -- the answer thread: each answer at its deadline -----------------------------------
    def _answer_loop(self) -> None:
        try:  # this thread only sleeps and sends one byte: at real-time priority, load cannot delay it
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
        except (OSError, AttributeError):
            self.log.info("answers at normal priority (no CAP_SYS_NICE or RLIMIT_RTPRIO; systemd: LimitRTPRIO=1): "
                          "a loaded machine may delay them by milliseconds")
        while True:
            with self._due_cv:
                while True:
                    if self._due:
                        left = self._due[0][0] - time.monotonic()
                        if left <= _SPIN_S:
                            due, _, c, byte, reason = heapq.heappop(self._due)
                            break
                        self._due_cv.wait(left - _SPIN_S)
                    elif self._answers_stop:
                        return
                    else:
                        self._due_cv.wait()
            while time.monotonic() < due:
                pass  # on the CPU at the deadline: no wake-up latency (up to _SPIN_S per answer)
            try:
                c.sock.send(byte)
                c.sock.shutdown(socket.SHUT_WR)
            except OSError:
                reason += " (client gone before the answer)"
            with self._handback_lock:
                self._handback.append(c)
            self._wake()
            self.log.info("%s -> %s", reason, byte.decode())

    def _record_loop(self) -> None:
        """Publish the egress record after answers, off the reader loop and the answer thread."""
        while not self._stop.is_set():
            self._record_due.wait()
            self._record_due.clear()
            if not self._stop.is_set():
                self._write_egress_record()

    def _write_egress_record(self) -> None:
        rec = dict(egress.record(), pid=os.getpid(), requests=self.requests)
        path = egress_record_path(self.socket_path)
        with self._record_lock:
            try:
                atomic_write(path, json.dumps(rec, sort_keys=True).encode(), mode=0o640)
            except OSError as exc:
                self.log.info("cannot write the egress record %s: %s", path, exc.strerror or exc)


def serve(*, home: str | os.PathLike[str] | None, socket_path: str | os.PathLike[str] | None,
          frames: FrameSource, log_path: str | None = None, board: str | None = None) -> int:
    """Run the daemon until SIGTERM/SIGINT. Hardens the process and installs the egress guard first.

    ``board`` (else ``board`` in config.toml) decides how the models run (fr_pbd.boards).
    """
    problems = hardening.harden_process()
    egress.install()
    home_p = Path(home) if home is not None else _config.default_home()
    _config.check_home_parents(home_p)
    cfg = _config.require_verification(_config.load(home_p))
    if cfg.daemon.daemon_uid is not None and cfg.daemon.daemon_uid != os.geteuid():
        raise DaemonError(f"{cfg.path}: daemon_uid is {cfg.daemon.daemon_uid} but this process runs as uid "
                          f"{os.geteuid()}; `fr-pbd ask` would refuse every answer")
    sock = socket_path if socket_path is not None else cfg.daemon.socket
    if sock is None:
        raise DaemonError("no socket path: give --socket or set [daemon] socket in config.toml")
    _check_socket_dir(Path(sock))  # before the models load: a bad place fails at once
    log = _make_logger(log_path)
    unlocked = hardening.lock_all_memory()
    for problem in [*problems, *([unlocked] if unlocked else [])]:
        log.info("hardening: %s", problem)
    # The answer thread must get the interpreter within ~1 ms of its deadline, even while the
    # worker runs Python code (default switch interval: 5 ms).
    sys.setswitchinterval(0.0005)
    daemon = Daemon(home=home_p, socket_path=Path(sock), frames=frames, cfg=cfg, log=log, board=board)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: daemon.stop())
    daemon.start()
    daemon.serve_forever()
    return 0


# --------------------------------------------------------------------------------------
# the client
# --------------------------------------------------------------------------------------
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
    try:  # strict: a replaced character could turn one name into another
        line = b"VERIFY\n" if user is None else b"VERIFY " + user.encode("ascii") + b"\n"
        parse_request(line)
    except UnicodeEncodeError:
        raise DaemonError("invalid user name: only printable ASCII") from None
    except ProtocolError as exc:
        raise DaemonError(f"invalid user name: {exc}") from None
    path = Path(os.fspath(socket_path))
    check_socket(path, uid)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
            _pid, peer_uid, _gid = _peer(sock)
            if peer_uid != uid:
                raise DaemonError(f"the process listening on {path} runs as uid {peer_uid}, not as the daemon's "
                                  f"uid {uid}: not trusting it")
            sock.sendall(line)
            answer = bytearray()
            while len(answer) < 2:
                chunk = sock.recv(2 - len(answer))
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
