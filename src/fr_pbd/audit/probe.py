"""Drive a running daemon through its socket and watch what it does on the network.

Every answer is read to the end (until the daemon closes, or a timeout), so an
answer longer than one byte is seen. While the requests run, ``strace -f -e
trace=network`` is attached to the daemon (found through ``SO_PEERCRED`` on the
socket, so the audit watches the process that really answers); without strace
(or without permission to attach) the daemon's own egress-guard record,
``SOCKET.egress.json``, is compared before and after. The strace output is
parsed into counts and deleted: it is recorded with ``-s 0`` (no payloads).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LIVE_TIMEOUT_S = 60.0
BAD_TIMEOUT_S = 10.0

#: (label, payload, close the write side after sending). All must be answered with exactly b"N".
MALFORMED: tuple[tuple[str, bytes, bool], ...] = (
    ("oversized request (300 bytes)", b"VERIFY " + b"a" * 292 + b"\n", True),
    ("non-ASCII bytes", b"VERIFY \xc3\xa9\xff\n", True),
    ("unknown command", b"HELLO\n", True),
    ("no line end (client closes)", b"VERIFY", True),
    ("two lines", b"VERIFY\nVERIFY\n", True),
    ("CRLF line end", b"VERIFY\r\n", True),
    ("empty request", b"", True),
    ("control byte", b"VERIFY\x00\n", True),
)


@dataclass
class Answer:
    label: str
    kind: str  # "live" | "malformed"
    length: int
    first: str | None
    numeric_tail: bool
    closed: bool
    error: str | None = None

    @property
    def one_byte(self) -> bool:
        return self.error is None and self.length == 1 and self.first in ("Y", "N") and self.closed

    def describe(self) -> str:
        if self.error:
            return f"{self.label}: no answer ({self.error})"
        s = f"{self.label}: {self.length} byte(s)"
        if self.length:
            s += f", first {self.first!r}"
        if self.length > 1:
            s += "; the extra bytes are not recorded here (they may be biometric data)"
            if self.numeric_tail:
                s += " and look like a number: a score?"
        if not self.closed:
            s += "; the daemon did not close the connection"
        return s


@dataclass
class NetworkObservation:
    method: str  # "strace" | "none"
    ok: bool
    summary: str
    details: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)
    self_report: list[str] = field(default_factory=list)


@dataclass
class ProbeResult:
    socket: Path
    server_pid: int | None = None
    server_uid: int | None = None
    answers: list[Answer] = field(default_factory=list)
    alive_after_disconnect: bool | None = None
    network: NetworkObservation | None = None
    error: str | None = None


def _exchange(path: Path, payload: bytes, close_write: bool, timeout: float) -> tuple[bytes, bool, tuple | None]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(str(path))
        cred = struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        if payload:
            s.sendall(payload)
        if close_write:
            s.shutdown(socket.SHUT_WR)
        out = bytearray()
        closed = False
        try:
            while len(out) < 4096:
                chunk = s.recv(4096)
                if not chunk:
                    closed = True
                    break
                out += chunk
        except TimeoutError:
            pass
        return bytes(out), closed, cred
    finally:
        s.close()


def _answer(path: Path, label: str, kind: str, payload: bytes, close_write: bool, timeout: float) -> tuple[Answer, tuple | None]:
    try:
        data, closed, cred = _exchange(path, payload, close_write, timeout)
    except OSError as exc:
        return Answer(label, kind, 0, None, False, False, exc.strerror or type(exc).__name__), None
    tail = data[1:].strip()
    numeric = bool(re.fullmatch(rb"[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?", tail)) if tail else False
    first = chr(data[0]) if data and 32 <= data[0] < 127 else (f"\\x{data[0]:02x}" if data else None)
    return Answer(label, kind, len(data), first, numeric, closed), cred


# --------------------------------------------------------------------------------------
# strace
# --------------------------------------------------------------------------------------
class _Strace:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.proc: subprocess.Popen | None = None
        self.tmpdir = tempfile.mkdtemp(prefix="fr-pbd-audit-")
        self.out = Path(self.tmpdir) / "trace"
        self.error: str | None = None

    def start(self) -> bool:
        exe = shutil.which("strace")
        if exe is None:
            self.error = "strace is not installed"
            return False
        self.err = Path(self.tmpdir) / "stderr"
        with open(self.err, "wb") as err:
            self.proc = subprocess.Popen(
                [exe, "-f", "-s", "0", "-e", "trace=network", "-o", str(self.out), "-p", str(self.pid)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            seen = self.err.read_text(errors="replace")
            if self.proc.poll() is not None:
                self.error = "strace could not attach: " + (seen.strip().splitlines() or ["no message"])[-1]
                return False
            if "attached" in seen:
                time.sleep(0.3)  # let it attach to every thread
                return True
            time.sleep(0.05)
        self.error = "strace did not attach within 10 s"
        self.stop()
        return False

    def stop(self) -> str:
        text = ""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        try:
            text = self.out.read_text(errors="replace")
        except OSError:
            pass
        shutil.rmtree(self.tmpdir, ignore_errors=True)  # no trace (and no payload) stays behind
        return text


_CALL = re.compile(r"^(?:\[pid\s+\d+\]\s+|\d+\s+)?(?:<\.\.\.\s+)?([a-z_0-9]+)\(")
_FAMILY_ARG = re.compile(r"^(?:\[pid\s+\d+\]\s+|\d+\s+)?(socket|socketpair)\((AF_[A-Z0-9]+|\d+)")
_SA_FAMILY = re.compile(r"sa_family=(AF_[A-Z0-9]+|\d+)")


def parse_strace(text: str) -> tuple[Counter, Counter, list[str]]:
    """(calls by name, address families seen, offending calls as 'name(FAMILY)' strings)."""
    calls: Counter = Counter()
    families: Counter = Counter()
    bad: list[str] = []
    for line in text.splitlines():
        if "resumed>" in line:
            continue
        m = _CALL.match(line)
        if not m:
            continue
        name = m.group(1)
        calls[name] += 1
        fams = []
        fm = _FAMILY_ARG.match(line)
        if fm:
            fams.append(fm.group(2))
        fams += _SA_FAMILY.findall(line)
        for fam in fams:
            families[fam] += 1
            if fam not in ("AF_UNIX", "AF_LOCAL"):
                bad.append(f"{name}({fam})")
    return calls, families, bad


def _egress_record(sock: Path) -> dict | None:
    try:
        return json.loads(Path(str(sock) + ".egress.json").read_text())
    except (OSError, ValueError):
        return None


def _non_unix(rec: dict) -> int:
    return sum(n for fams in rec.get("seen", {}).values() for fam, n in fams.items()
               if fam not in ("AF_UNIX", "no host"))


def probe(sock: str | os.PathLike[str], verifications: int = 3, use_strace: bool = True) -> ProbeResult:
    """Send ``verifications`` live requests and every malformed request; watch the network meanwhile."""
    path = Path(sock)
    res = ProbeResult(socket=path)
    first, cred = _answer(path, "first contact, malformed (control byte)", "malformed", b"\x00\n", True,
                          BAD_TIMEOUT_S)
    if first.error:
        res.error = f"cannot talk to the daemon at {path}: {first.error}"
        res.answers.append(first)
        return res
    res.answers.append(first)
    if cred:
        res.server_pid, res.server_uid = cred[0], cred[1]
    tracer = _Strace(res.server_pid) if use_strace and res.server_pid else None
    traced = tracer.start() if tracer else False
    for i in range(verifications):
        a, _ = _answer(path, f"live verification {i + 1} (VERIFY)", "live", b"VERIFY\n", False, LIVE_TIMEOUT_S)
        res.answers.append(a)
    for label, payload, close_write in MALFORMED:
        a, _ = _answer(path, label, "malformed", payload, close_write, BAD_TIMEOUT_S)
        res.answers.append(a)
    try:  # a client that vanishes mid-request must not take the daemon down
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(path))
        s.sendall(b"VERI")
        s.close()
        time.sleep(0.2)
        a, _ = _answer(path, "after a client vanished mid-request (HELLO)", "malformed", b"HELLO\n", True,
                       BAD_TIMEOUT_S)
        res.answers.append(a)
        res.alive_after_disconnect = a.error is None and a.length >= 1
    except OSError:
        res.alive_after_disconnect = False
    text = tracer.stop() if tracer else ""
    requests = len(res.answers)
    if traced:
        calls, families, bad = parse_strace(text)
        listing = ", ".join(f"{k} x{v}" for k, v in sorted(calls.items())) or "none"
        fams = ", ".join(f"{k} x{v}" for k, v in sorted(families.items())) or "none"
        if bad:
            badc = Counter(bad)
            summary = (f"the daemon (pid {res.server_pid}) made non-local network system calls: "
                       + ", ".join(f"{k} x{v}" for k, v in sorted(badc.items())))
        else:
            summary = (f"strace saw only Unix-domain socket calls in the daemon (pid {res.server_pid}) "
                       f"during {requests} requests incl. {verifications} live verifications")
        res.network = NetworkObservation(
            "strace", not bad, summary,
            [f"strace -f -s 0 -e trace=network -p {res.server_pid}", f"network system calls: {listing}",
             f"address families: {fams}"],
            {"syscalls": dict(calls), "families": dict(families), "offending": dict(Counter(bad))})
        return res
    why = tracer.error if tracer else "strace not used"
    rec = _egress_record(path)
    shown = []
    if rec is not None:
        shown.append(f"{path}.egress.json (written by the daemon about itself, pid {rec.get('pid')}): "
                     f"guard installed {bool(rec.get('installed'))}, {_non_unix(rec)} non-Unix socket event(s), "
                     f"{rec.get('refused_total', 0)} refused")
    res.network = NetworkObservation(
        "none", False, f"the daemon's system calls were not observed: {why}",
        [why, "the daemon's own egress record is a self-report and decides nothing"], self_report=shown)
    return res
