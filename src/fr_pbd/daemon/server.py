"""The server: one reader loop, one verification worker, one thread that answers at the deadlines.

Everything that is not an accepted verification is ``N``: no match, no usable face,
locked out, a malformed / oversized / non-ASCII / late (> 2 s) request, a peer not on
the allowlist, an internal error. The reason goes only to the daemon's own log (stderr,
or ``--log FILE``), which never holds a score, a template or an image. Malformed
requests and refused peers are answered without looking at the camera, so they never
count towards the lockout.

Fixed-time answers: every verification is answered ``answer_deadline_ms`` after its
request line arrived, whatever the outcome and reason, so the answer's timing does not
tell the reason. A verification that takes longer is answered at the next multiple of
the deadline and logged as an overrun. Refusals that depend only on the request
(malformed, peer not allowed, account not the peer's) are answered at once: the asker
knows them already.

Concurrency: one thread reads every connection without blocking (``selectors``); each
peer has the answer deadline (at most :data:`READ_TIMEOUT_S`) to send its line; idle or
refused peers never hold a worker. One worker runs the verifications one at a time (one
camera, one lockout counter), taking them in fair turns across askers (:class:`_FairQueue`),
and one thread sends each answer at its deadline. A client that disconnects at any point
only ends its own connection.

Who is an asker, and the order of turns: :mod:`fr_pbd.daemon.turns`.
"""

from __future__ import annotations

import heapq
import json
import logging
import math
import os
import selectors
import socket
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from fr_pbd import config as _config
from fr_pbd import egress
from fr_pbd.capture.frames import FrameSource
from fr_pbd.daemon.listen import Refused, bind_socket, claimed_user
from fr_pbd.daemon.turns import FairQueue, asker_key
from fr_pbd.daemon.protocol import MAX_REQUEST, NO, YES, ProtocolError, egress_record_path, parse_request, \
    peer_credentials
from fr_pbd.errors import FrPbdError
from fr_pbd.fileio import atomic_write

__all__ = ["MAX_CONNECTIONS", "READ_TIMEOUT_S", "Daemon"]

READ_TIMEOUT_S = 2.0
DRAIN_S = 1.0
DRAIN_LIMIT = 64 * 1024
MAX_CONNECTIONS = 128  # open connections of all peers together (each holds one file descriptor)
# The answer thread wakes this long before a deadline and spins until it: a thread already
# running at the deadline answers within microseconds, one woken at the deadline may wait
# for the scheduler. It also asks for real-time priority (SCHED_FIFO 1) where allowed.
_SPIN_S = 0.001


class _Conn:
    """One client connection, owned by one thread at a time (reader loop -> worker -> answerer -> loop)."""

    __slots__ = ("sock", "pid", "uid", "gid", "key", "buf", "until", "draining", "drained", "busy")

    def __init__(self, sock: socket.socket, pid: int, uid: int, gid: int) -> None:
        self.sock, self.pid, self.uid, self.gid = sock, pid, uid, gid
        self.key = asker_key(pid, uid)
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
        self._open: dict[tuple[int, str | None], int] = {}
        self._jobs: FairQueue[_Job] = FairQueue()
        self.read_timeout_s = min(READ_TIMEOUT_S, self.deadline_s)
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
        self._sock = bind_socket(self.socket_path)
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
            self._jobs.close()
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
                c = _Conn(s, *peer_credentials(s))
            except OSError:
                s.close()
                self.log.info("cannot read a peer's credentials; closed")
                continue
            held = self._open.get(c.key, 0)
            if held >= self.per_uid or len(self._conns) >= MAX_CONNECTIONS:
                asker = f"uid {c.uid}" + (f" session {c.key[1]}" if c.key[1] is not None else "")
                whose = (f"{asker} holds {held} (limit {self.per_uid})" if held >= self.per_uid
                         else f"{len(self._conns)} open in all")
                self._send_now(s, f"busy-{c.key}", f"{c.who}: refused at once, {whose} connection(s)")
                continue
            self._open[c.key] = held + 1
            self._conns.add(c)
            c.until = time.monotonic() + self.read_timeout_s
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
        except Refused as exc:
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
                self._finish(c, NO, f"{c.who}: no complete request within {self.read_timeout_s:g} s")

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
        left = self._open.get(c.key, 1) - 1
        if left:
            self._open[c.key] = left
        else:
            self._open.pop(c.key, None)

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
            try:  # a success's clear is written after the answer: its failure is this request's to log,
                self.verifier.settle()  # not the next requester's N
            except FrPbdError as exc:
                self.log.info("%s: %s", job.conn.who, exc)

    def _verify(self, user: str | None, started: float) -> tuple[bool, str]:
        """Decision and a reason for the log (no score: the verifier does not even return one).

        One camera attempt (:meth:`fr_pbd.verify.Verifier.attempt`): up to ``max_frames``
        frames within the frame budget, and never past the answer deadline less one frame; a
        claim that cannot succeed (locked, not enrolled, account changed) never opens the camera.
        """
        until = min(started + self.cfg.capture.frame_budget_ms / 1000, started + 0.9 * self.deadline_s)
        try:
            outcome = self.verifier.attempt(self.frames, user, max_frames=self.cfg.capture.max_frames, until=until)
        except FrPbdError as exc:  # one-line messages that never hold biometric data
            return False, f"error: {exc}"
        except Exception as exc:  # noqa: BLE001
            return False, f"internal error: {type(exc).__name__}"
        return outcome.accepted, "accepted" if outcome else f"not accepted ({outcome.describe()})"

    # -- the answer thread: each answer at its deadline -----------------------------------
    def _answer_loop(self) -> None:
        try:  # this thread only sleeps and sends one byte: at real-time priority, load cannot delay it
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
        except (OSError, AttributeError):
            self.log.info("answers at normal priority (real-time scheduling not allowed here; the shipped unit "
                          "restricts it): a loaded machine may delay them by milliseconds")
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
