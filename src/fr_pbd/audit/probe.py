"""Drive a running daemon through its socket while the kernel watches it.

The audit does not trust the product's code (not even fr-pbd's): the wire
format below is written down here on purpose, not imported from
:mod:`fr_pbd.daemon`. The probe

1. finds every process that can answer from the socket: the peer of the first
   contact (``SO_PEERCRED``) and every process holding the listening socket
   (``/proc``), which need not be one another's descendants: any of them may
   accept a connection, so the product is all of them;
2. takes a kernel inventory of them and their children (:mod:`fr_pbd.audit.procfs`)
   before, during and after, and keeps polling them while it runs (and the
   listening socket's holders, in case another process takes it up);
3. attaches ``strace -f -yy`` (:mod:`fr_pbd.audit.trace`) to all of them
   and sends the live verifications, the malformed requests, a vanishing client
   and one round of every probe frame (genuine, impostor, no face, attack);
4. detaches and, untraced (so that the tracer does not distort the clock), times
   several rounds of every probe frame and of the locked-out state.

Every answer is read to the end (until the daemon closes, or a timeout) and
kept only in memory, for classification: reports say how long an answer was
and whether it was a declared yes or no, never what else it held.
"""

from __future__ import annotations

import os
import re
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fr_pbd.audit import procfs
from fr_pbd.audit.trace import Event, Tracer, parse
from fr_pbd.errors import AuditError

__all__ = ["Protocol", "FRPBD_PROTOCOL", "FramePlan", "Answer", "ProbeResult", "probe", "no_face_png",
           "CLASSES", "TIMING_CLASSES"]

LIVE_TIMEOUT_S = 30.0
GIVE_UP_AFTER = 3  # requests in a row without an answer: the rest are not sent
BAD_TIMEOUT_S = 10.0
AFTER_ANSWER_S = 5.0
MAX_ANSWER = 4096
#: Probe frame classes, in the order of a round.
CLASSES = ("genuine", "impostor", "no-face", "attack")
LOCKED = "locked-out"
TIMING_CLASSES = (*CLASSES, LOCKED)
#: Failed attempts in a row sent to reach the locked-out state (SEC.lockout; fr-pbd locks at the 5th; Android CDD
#: 7.3.10 C-1-3: at least 30 s after five false trials).
LOCK_ATTEMPTS = 5
POLL_S = 0.01
LISTENERS_S = 0.5  # how often the poller looks who holds the listening socket


@dataclass(frozen=True)
class Protocol:
    """How a product is asked and what it may answer: exactly one declared yes and one declared no."""

    name: str
    request: bytes
    yes: bytes | None = None
    no: bytes | None = None
    yes_regex: re.Pattern[bytes] | None = None
    no_regex: re.Pattern[bytes] | None = None
    #: (label, payload, close the write side after sending)
    malformed: tuple[tuple[str, bytes, bool], ...] = ()
    #: a malformed request may also be answered by closing without a byte
    silent_close_ok: bool = False
    #: the request that names an account (``{user}`` stands for its name), when the protocol has one: the second
    #: asker and root then ask the same question about the second asker's account (a product may verify an
    #: unprivileged asker only as itself, so a plain request would be another question for it than for root)
    request_for_user: bytes | None = None

    def request_naming(self, user: str | None) -> bytes:
        """The request about ``user``'s account, or the plain request (no name, or none in the protocol)."""
        if user is None or self.request_for_user is None:
            return self.request
        return self.request_for_user.replace(b"{user}", user.encode("ascii"))

    def outcome(self, data: bytes) -> str | None:
        """'yes', 'no', or None when the answer is neither declared answer."""
        if (self.yes is not None and data == self.yes) or (self.yes_regex and self.yes_regex.fullmatch(data)):
            return "yes"
        if (self.no is not None and data == self.no) or (self.no_regex and self.no_regex.fullmatch(data)):
            return "no"
        return None

    def describe(self) -> str:
        def one(lit: bytes | None, rx: re.Pattern[bytes] | None) -> str:
            return repr(lit) if lit is not None else f"regex {rx.pattern!r}" if rx else "?"
        return f"{self.name}: request {self.request!r}, yes {one(self.yes, self.yes_regex)}, " \
               f"no {one(self.no, self.no_regex)}"


#: fr-pbd's daemon protocol v1 (docs: src/fr_pbd/daemon.py), written down independently:
#: "VERIFY[ user]\n" (ASCII, at most 256 bytes); the answer is one byte, Y or N, then close.
FRPBD_MALFORMED: tuple[tuple[str, bytes, bool], ...] = (
    ("oversized request (300 bytes)", b"VERIFY " + b"a" * 292 + b"\n", True),
    ("non-ASCII bytes", b"VERIFY \xc3\xa9\xff\n", True),
    ("unknown command", b"HELLO\n", True),
    ("no line end (client closes)", b"VERIFY", True),
    ("two lines", b"VERIFY\nVERIFY\n", True),
    ("CRLF line end", b"VERIFY\r\n", True),
    ("empty request", b"", True),
    ("control byte", b"VERIFY\x00\n", True),
)
FRPBD_PROTOCOL = Protocol("fr-pbd daemon protocol v1 (one byte)", b"VERIFY\n", yes=b"Y", no=b"N",
                          malformed=FRPBD_MALFORMED, request_for_user=b"VERIFY {user}\n")


@dataclass
class FramePlan:
    """How probe frames reach the product: the file it reads its next frame from, and the frames."""

    directory: Path
    name: str = "current.jpg"
    images: dict[str, bytes] = field(default_factory=dict)  # class -> encoded image
    _original: bytes | None = None
    _saved: bool = False

    @property
    def path(self) -> Path:
        return self.directory / self.name

    def present(self, cls: str) -> None:
        if not self._saved:
            try:
                self._original = self.path.read_bytes()
            except OSError:
                self._original = None
            self._saved = True
        tmp = self.directory / f".fr-pbd-audit-{os.getpid()}.tmp"
        try:
            tmp.write_bytes(self.images[cls])
            os.replace(tmp, self.path)
        except OSError as exc:
            raise AuditError(f"cannot show the daemon a probe frame in {self.directory}: "
                             f"{exc.strerror or exc}") from None

    def restore(self) -> None:
        if not self._saved:
            return
        if self._original is None:
            self.path.unlink(missing_ok=True)
        else:
            tmp = self.directory / f".fr-pbd-audit-{os.getpid()}.tmp"
            tmp.write_bytes(self._original)
            os.replace(tmp, self.path)


def no_face_png(width: int = 320, height: int = 240) -> bytes:
    """A frame with no face in it (a smooth grey gradient): made here, so that every audit has one."""
    y, x = [float(v) for v in (height, width)]
    rows = []
    for j in range(height):
        row = bytearray([0])  # filter: none
        for i in range(width):
            v = int(40 + 150 * (i / x) * 0.6 + 150 * (j / y) * 0.4)
            row += bytes((v, v, min(255, v + 10)))
        rows.append(bytes(row))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"".join(rows), 9)) \
        + chunk(b"IEND", b"")


@dataclass
class Answer:
    label: str
    kind: str  # "live" | "malformed" | "timing"
    data: bytes = field(default=b"", repr=False)  # in memory only: never reported
    outcome: str | None = None  # "yes" | "no" | None
    closed: bool = False
    seconds: float | None = None  # request sent -> first answer byte
    close_seconds: float | None = None  # request sent -> the daemon closed
    error: str | None = None
    cls: str | None = None  # probe frame class of a timing request
    reset: bool = False  # the product reset the connection (after what it sent: e.g. request bytes it left unread)
    #: SO_PEERCRED of this connection: the kernel names the process that last called listen() on the socket
    #: (not necessarily the one that accepted: any holder of the listening socket can), None without one
    server_pid: int | None = None
    client_inode: int | None = None  # the audit's end of the connection (the trace names the other end's holder)

    @property
    def length(self) -> int:
        return len(self.data)

    def describe(self) -> str:
        if self.error:
            return f"{self.label}: no answer ({self.error})"
        s = f"{self.label}: {self.length} byte(s)"
        s += f", the declared {self.outcome!r}" if self.outcome else ", NOT a declared yes/no answer"
        if not self.closed:
            s += "; the daemon did not close the connection"
        elif self.reset:
            s += "; then the connection was reset (request bytes left unread), which ends it like a close"
        return s


@dataclass
class ProbeResult:
    socket: Path | None  # None: the [invoke] shape (a program run per verification) has none
    protocol: Protocol
    server_pid: int | None = None
    server_uid: int | None = None
    server_gid: int | None = None
    answers: list[Answer] = field(default_factory=list)
    alive_after_disconnect: bool | None = None
    before: procfs.Snapshot | None = None
    during: list[procfs.Snapshot] = field(default_factory=list)
    after: procfs.Snapshot | None = None
    #: sockets, processes and writable files seen by the poller while the probe ran
    polled_sockets: dict[tuple[int, int], procfs.SocketEntry] = field(default_factory=dict)
    polled_pids: dict[int, str] = field(default_factory=dict)
    polls: int = 0
    events: list[Event] | None = None
    trace_error: str | None = None
    trace_truncated: bool = False
    #: the inodes of the audit's own client sockets (the daemon's peers on its answer channel)
    client_inodes: set[int] = field(default_factory=set)
    #: who held the pipes and Unix sockets the daemon wrote to, looked up right after the trace
    holders: dict[str, dict[int, list[int]]] = field(default_factory=dict)
    frames_missing: list[str] = field(default_factory=list)
    lock_observed: bool | None = None
    #: failed attempts sent before the genuine frame was shown again, and the answers of the whole sequence
    #: (label, outcome or None, error): the failures first, then the genuine tries (SEC.lockout)
    lock_attempts: int = LOCK_ATTEMPTS
    lock_sequence: list[tuple[str, str | None, str | None]] = field(default_factory=list)
    error: str | None = None
    #: (pid, fd, socket inode) of every process holding the listening socket, when the probe began
    listeners: list[tuple[int, int, int]] = field(default_factory=list)
    #: what the audit noticed about the product's start (a stale socket file it waited out, ...)
    notes: list[str] = field(default_factory=list)
    #: the second, unprivileged uid the answers were also asked as, and (label, root's answer, its answer)
    peer_uid: int | None = None
    peer_pairs: list[tuple[str, Answer, Answer]] = field(default_factory=list)
    #: the request both asked in the comparison (the named one when the protocol has it and the uid a name)
    peer_request: bytes | None = None
    #: every process inventoried and traced as the product, with its children: the first contact's peer, then
    #: every other holder of the listening socket (pid -> why it counts)
    serving: dict[int, str] = field(default_factory=dict)
    #: (pid, fd, socket inode) of processes that held the listening socket later, outside what was traced
    late_listeners: list[tuple[int, int, int]] = field(default_factory=list)
    #: (label, SO_PEERCRED pid) of the audit's connections that have no answer (the vanishing client)
    contacts: list[tuple[str, int]] = field(default_factory=list)
    #: pid -> the audit's connections it served, as the trace shows them (accept and answer on the connection)
    served: dict[int, int] = field(default_factory=dict)
    #: "socket" (a daemon asked over its socket), "invoke" (a program run once per verification,
    #: every run traced from its first instruction: :mod:`fr_pbd.audit.invoke`) or "pam" (PAM logins)
    shape: str = "socket"
    #: SEC.presentation-attack (:mod:`fr_pbd.audit.pad`): (species, the attack's outcome, the following
    #: bona fide photo's outcome) per presentation, and why a declared species was not presented
    #: programs the product declares it may run ([process] children): a child running only these is traced
    #: with the daemon and judged by what it does
    declared_children: tuple[str, ...] = ()
    pad: list[tuple[str, str | None, str | None]] = field(default_factory=list)
    pad_invalid: dict[str, str | None] = field(default_factory=dict)

    @property
    def timing(self) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {}
        for a in self.answers:
            if a.kind == "timing" and a.cls and a.seconds is not None and not a.error:
                out.setdefault(a.cls, []).append(a.seconds)
        return out

    @property
    def close_timing(self) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {}
        for a in self.answers:
            if a.kind == "timing" and a.cls and a.close_seconds is not None and not a.error:
                out.setdefault(a.cls, []).append(a.close_seconds)
        return out

    @property
    def snapshots(self) -> list[procfs.Snapshot]:
        return [s for s in (self.before, *self.during, self.after) if s is not None]


def _exchange(path: Path, payload: bytes, close_write: bool, timeout: float, inodes: set[int]
              ) -> tuple[bytes, bool, tuple[int, int, int] | None, float | None, float | None, bool, int | None]:
    """(answer, closed, peer credentials, seconds to the first byte, seconds to the close, reset, client inode).

    A reset (ECONNRESET: the product closed with request bytes it had not read) ends the
    answer like a close: what it sent before is read first, in order, so nothing is lost.
    """
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(str(path))
        ino = os.fstat(s.fileno()).st_ino
        inodes.add(ino)
        cred = procfs.peer_cred(s)
        if payload:
            s.sendall(payload)
        t0 = time.perf_counter()
        deadline = time.monotonic() + timeout
        if close_write:
            s.shutdown(socket.SHUT_WR)
        out = bytearray()
        closed, first, end, reset = False, None, None, False
        try:
            while len(out) < MAX_ANSWER:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                s.settimeout(left)
                chunk = s.recv(MAX_ANSWER)
                if not chunk:
                    closed, end = True, time.perf_counter() - t0
                    break
                if first is None:
                    first = time.perf_counter() - t0
                    deadline = min(deadline, time.monotonic() + AFTER_ANSWER_S)  # the rest must follow at once
                out += chunk
        except TimeoutError:
            pass
        except ConnectionResetError:
            closed, end, reset = True, time.perf_counter() - t0, True
        return bytes(out), closed, cred, first, end, reset, ino
    finally:
        s.close()


class _Poller:
    """Kernel inventory of the daemon's trees every few milliseconds, in a thread, while the probe runs.

    Every :data:`LISTENERS_S` it also looks who holds the listening socket: a process outside the
    trees that takes it up can answer the next connection, untraced; it is recorded and inventoried.
    """

    def __init__(self, roots: list[int], result: ProbeResult) -> None:
        self.roots, self.result = list(roots), result
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _late_listeners(self) -> list[int]:
        """The trees now, after adding any holder of the listening socket outside them (a new child is in them)."""
        held = procfs.listeners(self.result.socket) if self.result.socket is not None else []
        pids = procfs.process_tree(self.roots)
        for h in held:
            if h[0] not in pids and h not in self.result.late_listeners:
                self.result.late_listeners.append(h)
                self.roots.append(h[0])
                pids = procfs.process_tree(self.roots)
        return pids

    def _run(self) -> None:
        pids = procfs.process_tree(self.roots)
        known: set[tuple[int, int, str]] = set()
        last_tree = last_listeners = time.monotonic()
        late = {p for p, _fd, _ino in self.result.late_listeners}
        while not self._stop.is_set():
            if time.monotonic() - last_listeners > LISTENERS_S:
                pids = self._late_listeners()
                late = {p for p, _fd, _ino in self.result.late_listeners}
                last_listeners = last_tree = time.monotonic()
            if time.monotonic() - last_tree > 0.2:
                pids = procfs.process_tree(self.roots)
                last_tree = time.monotonic()
            for p in pids:
                if p not in late:  # not the product's child: named apart (C3.network), inventoried all the same
                    self.result.polled_pids.setdefault(p, procfs.comm(p))
                for fd, target in procfs.fd_targets(p):
                    key = (p, fd, target)
                    if key in known or not target.startswith("socket:["):
                        continue
                    known.add(key)
                    entry = procfs.classify_socket(p, fd, target, procfs.socket_table(p)[0])
                    if entry is not None and not entry.unix:
                        self.result.polled_sockets[(p, fd)] = entry
            self.result.polls += 1
            self._stop.wait(POLL_S)

    def __enter__(self) -> _Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class _Session:
    def __init__(self, path: Path, protocol: Protocol, result: ProbeResult, frames: FramePlan | None) -> None:
        self.path, self.protocol, self.res, self.frames = path, protocol, result, frames
        self.silent = 0  # requests in a row without an answer

    def ask(self, label: str, kind: str, payload: bytes, close_write: bool, timeout: float,
            cls: str | None = None) -> Answer:
        if self.silent >= GIVE_UP_AFTER:  # a daemon that stopped answering must not hold the audit for hours
            a = Answer(label, kind, error="not sent: the daemon stopped answering", cls=cls)
            self.res.answers.append(a)
            return a
        try:
            data, closed, cred, first, end, reset, ino = _exchange(self.path, payload, close_write, timeout,
                                                                   self.res.client_inodes)
        except OSError as exc:
            a = Answer(label, kind, error=exc.strerror or type(exc).__name__, cls=cls)
        else:
            a = Answer(label, kind, data, self.protocol.outcome(data), closed, first, end, cls=cls, reset=reset,
                       server_pid=cred[0] if cred else None, client_inode=ino)
            if cred and self.res.server_pid is None:
                self.res.server_pid, self.res.server_uid, self.res.server_gid = cred
        self.silent = self.silent + 1 if a.error or (not a.data and not a.closed) else 0
        self.res.answers.append(a)
        return a

    def verify(self, label: str, cls: str | None = None, kind: str = "live", request: bytes | None = None) -> Answer:
        if cls is not None and self.frames is not None:
            self.frames.present(cls)
        return self.ask(label, kind, request or self.protocol.request, False, LIVE_TIMEOUT_S, cls)

    def round(self, r: int, classes: list[str], kind: str) -> None:
        order = classes[r % len(classes):] + classes[:r % len(classes)]  # rotate: no class always first
        for cls in order:
            self.verify(f"{cls} frame, round {r + 1}", cls, kind)


#: The second asker: connects, sends the request in hex argv[2], prints "<its socket's inode> <SO_PEERCRED pid>
#: <closed 0/1> <answer hex>" (a reset after the answer counts as the close, as for root's requests; the inode
#: makes the daemon's answer to it an answer to the audit, not data to another process).
_PEER_CLIENT = """import os, socket, struct, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(float(sys.argv[3]))
s.connect(sys.argv[1])
ino = os.fstat(s.fileno()).st_ino
pid = struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0]
s.sendall(bytes.fromhex(sys.argv[2]))
out, closed = b"", 0
try:
    while len(out) < 4096:
        c = s.recv(4096)
        if not c:
            closed = 1
            break
        out += c
except ConnectionResetError:
    closed = 1
except OSError:
    pass
print(ino, pid, closed, out.hex())
"""


def _peer_ask(path: Path, protocol: Protocol, uid: int, label: str, cls: str | None, inodes: set[int],
              request: bytes) -> Answer:
    """The same request, sent by a second, unprivileged uid (``setpriv``), with the socket file's group so that
    a socket the product opened to its group can be reached; kept apart from root's answers."""
    import shutil
    import subprocess
    import sys

    exe = shutil.which("setpriv")
    if exe is None:
        return Answer(label, "peer", error="setpriv is not installed (util-linux)", cls=cls)
    try:
        gid = os.stat(path).st_gid
        p = subprocess.run([exe, f"--reuid={uid}", f"--regid={gid}", f"--groups={gid}", sys.executable, "-I", "-S",
                            "-c", _PEER_CLIENT, str(path), request.hex(), str(LIVE_TIMEOUT_S)],
                           capture_output=True, text=True, timeout=LIVE_TIMEOUT_S + 10, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Answer(label, "peer", error=str(exc), cls=cls)
    if p.returncode != 0 or not p.stdout.strip():
        last = (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1]
        return Answer(label, "peer", error=f"as uid {uid}: {last[:200]}", cls=cls)
    parts = p.stdout.split()  # "<inode> <pid> <closed> [<answer hex>]" (no answer byte: no hex)
    if len(parts) < 3:
        return Answer(label, "peer", error=f"as uid {uid}: no result", cls=cls)
    ino, pid, closed = int(parts[0]), int(parts[1]), parts[2]
    inodes.add(ino)
    data = bytes.fromhex(parts[3]) if len(parts) > 3 else b""
    return Answer(label, "peer", data, protocol.outcome(data), closed == "1", cls=cls, server_pid=pid,
                  client_inode=ino)


def _peer_round(s: _Session, res: ProbeResult, classes: list[str], uid: int) -> None:
    """For the same frame, an answer to root and one to ``uid``: they must be byte-identical (C5.answer)."""
    import pwd

    res.peer_uid = uid
    try:
        name: str | None = pwd.getpwuid(uid).pw_name
        name.encode("ascii")
    except (KeyError, UnicodeEncodeError):
        name = None
    request = res.peer_request = s.protocol.request_naming(name)
    for cls in [c for c in ("genuine", "impostor") if c in classes] or [None]:
        label = f"{cls or 'the current'} frame"
        root = s.verify(f"{label}, asked as root beside uid {uid}", cls, request=request)
        res.peer_pairs.append((label, root, _peer_ask(res.socket, res.protocol, uid, label, cls,
                                                      res.client_inodes, request)))


def probe(sock: str | os.PathLike[str], protocol: Protocol = FRPBD_PROTOCOL, *, verifications: int = 3,
          use_strace: bool = True, frames: FramePlan | None = None, rounds: int = 8,
          peer_uid: int | None = None, lock_attempts: int = LOCK_ATTEMPTS, attacks: list | None = None
          ) -> ProbeResult:
    """Every request the audit sends, and everything the kernel showed meanwhile. Never raises for a finding.

    ``lock_attempts``: failed attempts in a row before the genuine frame is shown again (SEC.lockout).
    ``attacks``: :class:`fr_pbd.audit.pad.Attack` presentations, shown after the timing rounds and before the
    lockout sequence (SEC.presentation-attack).

    ``peer_uid``: also ask as this unprivileged uid, beside root, for the same frames (C5.answer)."""
    path = Path(sock)
    res = ProbeResult(socket=path, protocol=protocol, lock_attempts=lock_attempts)
    res.listeners = procfs.listeners(path)
    if not res.listeners:  # a stale file from an earlier run, or nothing yet: reported, never connected to
        res.error = (f"no process listens on {path}: " + ("a stale socket file (left by an earlier run?); the audit "
                     "neither connects to it nor removes it" if path.exists() else "it does not exist"))
        return res
    s = _Session(path, protocol, res, frames)
    first = s.ask("first contact (a malformed request: a control byte)", "malformed", b"\x00\n", True, BAD_TIMEOUT_S)
    if first.error or res.server_pid is None:
        res.error = f"cannot talk to the daemon at {path}: {first.error or 'no peer credentials'}"
        return res
    res.serving = _serving(path, res)
    pid, *others = res.serving
    classes = [c for c in CLASSES if frames is not None and c in frames.images]
    res.frames_missing = [c for c in CLASSES if c not in classes]
    res.before = procfs.snapshot(pid, also=others)
    tracer = Tracer(pid, res.before.pids) if use_strace else None
    traced = tracer.start() if tracer else False
    if not traced:
        res.trace_error = tracer.error if tracer else "strace was not used (--no-strace)"
    try:
        with _Poller(res.serving, res):
            for i in range(verifications):
                s.verify(f"live verification {i + 1} (the frame the daemon sees now)")
            for label, payload, close_write in protocol.malformed:
                s.ask(label, "malformed", payload, close_write, BAD_TIMEOUT_S)
            try:  # a client that vanishes mid-request must not take the daemon down
                c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                c.connect(str(path))
                res.client_inodes.add(os.fstat(c.fileno()).st_ino)
                res.contacts.append(("a client that vanished mid-request", procfs.peer_cred(c)[0]))
                c.sendall(protocol.request[:4])
                c.close()
                time.sleep(0.2)
                a = s.ask("after a client vanished mid-request", "malformed", b"HELLO\n", True, BAD_TIMEOUT_S)
                res.alive_after_disconnect = a.error is None and (a.length >= 1 or protocol.silent_close_ok)
            except OSError:
                res.alive_after_disconnect = False
            if classes:
                s.round(0, classes, "live")  # every code path once under the tracer
            if peer_uid is not None:
                _peer_round(s, res, classes, peer_uid)
            res.during.append(procfs.snapshot(pid, also=others,
                                              ignore_tracer=tracer.proc.pid if traced and tracer.proc else None))
            time.sleep(0.3)  # the daemon may log after it answered
            if traced:
                res.holders = {"socket": {}, "pipe": {}}
                text = tracer.stop()
                res.trace_truncated = tracer.truncated
                res.events = parse(text)
                del text
                _lookup_holders(res)
                _served(res)
                if tracer.detached_early:
                    res.trace_error = "strace lost the daemon before the end of the probe"
            if classes:
                for r in range(rounds):
                    s.round(r, classes, "timing")
                res.during.append(procfs.snapshot(pid, also=others))
            if attacks and frames is not None:
                from fr_pbd.audit.pad import run_presentations

                run_presentations(res, attacks, frames, lambda label: s.verify(label, None, "pad"))
            lockout_sequence(res, classes, lock_attempts, rounds, lambda label, cls, kind: s.verify(label, cls, kind),
                             fail_kind="live")
    finally:
        if tracer is not None and tracer.proc is not None and tracer.proc.poll() is None:
            tracer.stop()
        if frames is not None:
            frames.restore()
    time.sleep(0.2)
    res.after = procfs.snapshot(pid, also=others)
    return res


def _serving(path: Path, res: ProbeResult) -> dict[int, str]:
    """Every process that can answer from the socket, the first contact's peer first.

    ``SO_PEERCRED`` names the process that last called ``listen()``, not the one that accepted: any
    holder of the listening socket can accept (a descendant or not: the descriptor is inherited,
    or passed), so every holder, before and now, is the product too."""
    out: dict[int, str] = {}
    first = res.server_pid
    assert first is not None
    held: dict[int, list[int]] = {}
    for p, fd, _ino in [*res.listeners, *procfs.listeners(path)]:
        if not os.path.isdir(f"/proc/{p}"):  # held it when the probe began, gone since: it answers nothing
            continue
        if fd not in held.setdefault(p, []):
            held[p].append(fd)
    if os.path.isdir(f"/proc/{first}") or not held:  # gone (it listened, then left the socket to others)
        out[first] = "the first contact's peer (SO_PEERCRED)" + (
            f", holds the listening socket (fd {', '.join(map(str, held[first]))})" if first in held else "")
    else:
        res.notes.append(f"the first contact's peer (SO_PEERCRED) is pid {first}, which has exited: the "
                         "processes holding the listening socket serve it")
    for p, fds in held.items():
        if p not in out:
            out[p] = f"holds the listening socket (fd {', '.join(map(str, fds))})"
    return out


def _served(res: ProbeResult) -> None:
    """Which traced process held the server end of each of the audit's connections (it accepted and answered)."""
    conns: dict[int, set[int]] = {}
    for ev in res.events or []:
        for _fd, desc in ev.fds:
            m = re.match(r"UNIX(?:-[A-Z]+)?:\[\d+->(\d+)", desc)
            if m and int(m.group(1)) in res.client_inodes:
                conns.setdefault(procfs.tgid(ev.pid) or ev.pid, set()).add(int(m.group(1)))
    res.served = {p: len(c) for p, c in sorted(conns.items())}


def lockout_sequence(res: ProbeResult, classes: list[str], lock_attempts: int, rounds: int,
                     ask: Callable[[str, str, str], Answer], *, fail_kind: str = "probe") -> None:
    """SEC.lockout's sequence, in every shape: ``lock_attempts`` failures in a row (the impostor frame, else the
    attack frame), then the genuine frame once per timing round; a lock observed makes those tries the timed
    locked-out state (C5.timing). ``ask(label, cls, kind)`` shows the frame and asks."""
    if "genuine" not in classes or not ("impostor" in classes or "attack" in classes):
        return
    bad = "impostor" if "impostor" in classes else "attack"
    fails = [ask(f"failed attempt {i + 1} towards the lockout ({bad} frame)", bad, fail_kind)
             for i in range(lock_attempts)]
    tries = [ask(f"genuine frame after {lock_attempts} failures, {i + 1}", "genuine", "probe")
             for i in range(max(rounds, 1))]
    res.lock_sequence = [(a.label, a.outcome, a.error) for a in (*fails, *tries)]
    res.lock_observed = (True if all(a.outcome == "no" for a in tries) else
                         False if any(a.outcome == "yes" for a in tries) else None)
    if res.lock_observed:
        for a in tries:
            a.kind, a.cls = "timing", LOCKED


def _lookup_holders(res: ProbeResult) -> None:
    """Who holds the pipes and the peers of the Unix sockets the daemon wrote to (right after the trace)."""
    pipes, peers = set(), set()
    for ev in res.events or []:
        for _fd, desc in ev.fds:
            m = re.match(r"pipe:\[(\d+)\]", desc)
            if m:
                pipes.add(int(m.group(1)))
            m = re.match(r"UNIX(?:-[A-Z]+)?:\[(\d+)->(\d+)", desc)
            if m:
                peers.add(int(m.group(2)))
    res.holders = {"pipe": procfs.holders("pipe", pipes), "socket": procfs.holders("socket", peers - res.client_inodes)}
