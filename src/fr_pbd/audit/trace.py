"""Watch a running process's system calls with ``strace -f -yy -p PID`` and read what it did.

Attached to the daemon that is already running (a leak opened at start-up is
the realistic case), following every thread and child (``-f``), with every
descriptor decoded by the kernel (``-yy``: ``7<TCP:[10.0.0.2:41000->1.2.3.4:443]>``,
``3</var/log/x.log>``, ``8<UNIX-STREAM:[123->456]>``, ``4<pipe:[789]>``) and
every string in hex (``-xx``, so nothing in it can confuse the parser).

The trace covers every call that moves data or makes an endpoint or a process
(:data:`CALLS`). The trace goes through a pipe into this process's memory; it
is never written to disk, because what a dishonest daemon writes can be a
score or a template. Payloads are kept only until they are scanned
(:mod:`fr_pbd.audit.scan`); reports name where data went, never what it was.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["CALLS", "Event", "Tracer", "parse", "describe_fd"]

#: Every system call that moves data, makes an endpoint or starts a process.
CALLS = ("socket", "socketpair", "pipe", "pipe2", "connect", "bind", "listen", "accept", "accept4",
         "sendto", "sendmsg", "sendmmsg", "write", "writev", "pwrite64", "pwritev", "pwritev2",
         "sendfile", "splice", "vmsplice", "tee", "copy_file_range",
         "io_uring_setup", "io_uring_enter", "io_uring_register",
         "execve", "execveat", "fork", "vfork", "clone", "clone3",
         "open", "openat", "openat2", "creat", "rename", "renameat", "renameat2", "link", "linkat",
         "memfd_create", "ptrace", "process_vm_writev", "msgsnd", "mq_timedsend", "shmat",
         "kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "setxattr", "lsetxattr", "fsetxattr")
MAX_STRING = 1 << 20  # bytes of each buffer strace prints
MAX_TRACE = 256 << 20  # bytes of trace kept; beyond that the trace is incomplete
ATTACH_TIMEOUT_S = 15.0

_LINE = re.compile(r"^(\d+)\s+(?:<\.\.\. ([a-z_0-9]+) resumed>|([a-z_0-9]+)\()")
_FD = re.compile(r"(?<![\w\"])(\d+)<((?:[^<>]|->)*?)>(?=[,)\]}\s])")
_HEX = re.compile(r"(?:\\x[0-9a-f]{2})+")
_STR = re.compile(r'"((?:\\x[0-9a-f]{2})*)"(\.\.\.)?')
_FAMILY_ARG = re.compile(r"^(?:socket|socketpair)\((AF_[A-Z0-9]+|\d+)")
_SA_FAMILY = re.compile(r"sa_family=(AF_[A-Z0-9]+|\d+)")
_SUN_PATH = re.compile(r'sun_path=(@?)"((?:\\x[0-9a-f]{2})*)"')


_RESULT = re.compile(r".*\)\s+= (.*)$")  # strace pads short calls: "vfork( <...> resumed>)          = 1234"


def _result(line: str) -> str:
    """What the call returned ("-1 ENOENT (...)", "1234"), or "" when the line has no result."""
    m = _RESULT.match(line)
    return m.group(1) if m else ""


def _unhex(text: str) -> str:
    return _HEX.sub(lambda m: bytes.fromhex(m.group(0).replace("\\x", "")).decode("utf-8", "backslashreplace"),
                    text)


@dataclass
class Event:
    pid: int
    call: str
    text: str  # the line without its payload strings, descriptors and paths decoded
    fds: list[tuple[int, str]] = field(default_factory=list)  # (fd, decoded description) in argument order
    payload: bytes | None = None  # data written by a write-like call (possibly truncated)
    truncated: bool = False
    families: list[str] = field(default_factory=list)  # address families named (socket() or sockaddrs)
    sun_paths: list[str] = field(default_factory=list)
    result: str = ""

    @property
    def failed(self) -> bool:
        return self.result.startswith("-1 ")


#: Calls whose second argument is the data (the first is the descriptor written to).
_WRITE_BUF = {"write", "pwrite64", "sendto", "mq_timedsend", "msgsnd"}
_WRITE_IOV = {"writev", "pwritev", "pwritev2", "sendmsg", "sendmmsg", "vmsplice"}


def _payload(call: str, line: str) -> tuple[bytes | None, bool]:
    """The data argument of a write-like call (the strings before it are paths inside its descriptor)."""
    fd = _FD.search(line)
    line = line[fd.end():] if fd else line
    if call in _WRITE_BUF:
        m = _STR.search(line)
        if not m:
            return None, False
        return bytes.fromhex(m.group(1).replace("\\x", "")), bool(m.group(2))
    if call in _WRITE_IOV:
        parts, trunc = [], False
        for m in re.finditer(r'iov_base="((?:\\x[0-9a-f]{2})*)"(\.\.\.)?', line):
            parts.append(bytes.fromhex(m.group(1).replace("\\x", "")))
            trunc = trunc or bool(m.group(2))
        return b"".join(parts), trunc
    return None, False


def parse(text: str) -> list[Event]:
    """strace lines (``PID call(args) = result``) -> events; ``<... resumed>`` halves only add results."""
    events: list[Event] = []
    pending: dict[tuple[int, str], Event] = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        pid = int(m.group(1))
        if m.group(2):  # "<... call resumed>": the end of an unfinished call
            ev = pending.pop((pid, m.group(2)), None)
            if ev is not None:
                ev.result = _result(line) or ev.result
            continue
        call = m.group(3)
        body = line[m.end(1):].strip()
        payload, trunc = _payload(call, body)
        fds = [(int(fm.group(1)), _unhex(fm.group(2))) for fm in _FD.finditer(body)]
        fams = []
        fm = _FAMILY_ARG.match(body)
        if fm:
            fams.append(fm.group(1))
        fams += _SA_FAMILY.findall(body)
        suns = [(a + _unhex(p)) for a, p in _SUN_PATH.findall(body)]
        if payload is not None:  # show the call without its data: "<N bytes>" in place of every buffer
            fd_end = _FD.search(body)
            cut = fd_end.end() if fd_end else 0
            shown = body[:cut] + _STR.sub(lambda s: f'"<{len(s.group(1)) // 4} bytes>"', body[cut:])
        else:
            shown = body
        ev = Event(pid, call, _unhex(shown)[:400], fds, payload, trunc, fams, suns)
        if "<unfinished ...>" in body:
            pending[(pid, call)] = ev
        else:
            ev.result = _result(body)
        events.append(ev)
    return events


def describe_fd(desc: str) -> tuple[str, str]:
    """(kind, detail) of a ``-yy`` descriptor: kind is unix, net, pipe, file, tty, null, anon or other."""
    if desc.startswith(("UNIX", "UNIX-STREAM", "UNIX-DGRAM", "UNIX-SEQPACKET")):
        return "unix", desc
    if re.match(r"^(TCP|TCPv6|UDP|UDPv6|UDPLITE|UDPLITEv6|RAW|RAWv6|PACKET|NETLINK|SCTP|SCTPv6|L2TP|MPTCP|"
                r"DCCP|DCCPv6|PING|PINGv6|ICMP|ICMPv6|VSOCK|XDP|TIPC|BLUETOOTH)\b", desc):
        return "net", desc
    if desc.startswith("socket:["):
        return "net", f"{desc} (a socket strace cannot decode: not a Unix socket)"
    if desc.startswith("pipe:["):
        return "pipe", desc
    if desc == "/dev/null":
        return "null", desc
    if desc.startswith(("/dev/pts/", "/dev/tty", "/dev/console")):
        return "tty", desc
    if desc.startswith("/"):
        return "file", desc
    if desc.startswith("anon_inode:"):
        return "anon", desc
    return "other", desc


class Tracer:
    """``strace`` attached to a running process tree; the trace stays in memory."""

    def __init__(self, pid: int, children: list[int] | None = None) -> None:
        self.pid = pid
        self.children = [p for p in children or [] if p != pid]  # already running: -f only follows new ones
        self.proc: subprocess.Popen | None = None
        self.error: str | None = None
        self.truncated = False
        self._chunks: list[bytes] = []
        self._size = 0
        self._reader: threading.Thread | None = None
        self._stderr = bytearray()
        self._err_reader: threading.Thread | None = None

    def _read(self, fd: int) -> None:
        with os.fdopen(fd, "rb", buffering=0) as f:
            while True:
                chunk = f.read(1 << 16)
                if not chunk:
                    return
                if self._size + len(chunk) > MAX_TRACE:
                    self.truncated = True
                    continue  # keep draining so that strace never blocks
                self._chunks.append(chunk)
                self._size += len(chunk)

    def _read_err(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for chunk in iter(lambda: self.proc.stderr.read1(4096), b""):  # type: ignore[union-attr]
            if len(self._stderr) < 1 << 20:
                self._stderr += chunk

    def start(self) -> bool:
        exe = shutil.which("strace")
        if exe is None:
            self.error = "strace is not installed (apt-get install strace)"
            return False
        r, w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [exe, "-f", "-yy", "-xx", "-s", str(MAX_STRING), "-e", "trace=" + ",".join(CALLS),
                 "-o", f"/dev/fd/{w}", "-p", str(self.pid), *[a for p in self.children for a in ("-p", str(p))]],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, pass_fds=(w,))
        finally:
            os.close(w)
        self._reader = threading.Thread(target=self._read, args=(r,), daemon=True)
        self._reader.start()
        self._err_reader = threading.Thread(target=self._read_err, daemon=True)
        self._err_reader.start()
        want = {self.pid, *self.children}
        end = time.monotonic() + ATTACH_TIMEOUT_S
        while time.monotonic() < end:
            seen = self._stderr.decode(errors="replace")
            attached = {int(m) for m in re.findall(r"Process (\d+) attached", seen)}
            refused = re.findall(r"attach: ptrace\(PTRACE_\w+, (\d+)\): (.*)", seen)
            if self.proc.poll() is not None:
                self._join()
                lines = [ln for ln in self._stderr.decode(errors="replace").splitlines() if ln.strip()]
                self.error = "strace could not attach: " + (lines[-1] if lines else f"exit {self.proc.returncode}")
                return False
            if refused:  # some process of the tree could not be traced: the trace would have a hole
                self.error = "strace could not attach to pid " + "; pid ".join(f"{p}: {why}" for p, why in refused)
                self.stop()
                return False
            if want <= attached:  # "Process N attached [with K threads]": all of N's threads at once
                time.sleep(0.2)
                return True
            time.sleep(0.02)
        self.error = f"strace did not attach within {ATTACH_TIMEOUT_S:g} s"
        self.stop()
        return False

    def _join(self) -> None:
        for t in (self._reader, self._err_reader):
            if t is not None:
                t.join(timeout=10)

    def stop(self) -> str:
        """Detach and return the trace (text: the buffers are hex, so it is ASCII)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._join()
        text = b"".join(self._chunks).decode("ascii", "replace")
        self._chunks.clear()
        return text

    @property
    def detached_early(self) -> bool:
        """strace lost the process before the end (it died, or someone else took it over)."""
        return self.proc is not None and self.proc.poll() is not None and self.proc.returncode not in (0, -2)


def fd_target_path(desc: str) -> Path | None:
    kind, _ = describe_fd(desc)
    return Path(desc) if kind == "file" else None
