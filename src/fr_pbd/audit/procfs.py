"""What the kernel says about a process: its children, its descriptors, its sockets, its mappings.

Everything here is read from ``/proc`` (the kernel's view), never asked of the
process itself. A socket descriptor (``/proc/PID/fd/N -> socket:[INODE]``) is
joined by inode with the socket tables of the process's own network namespace
(``/proc/PID/net/{tcp,tcp6,udp,udp6,udplite,udplite6,raw,raw6,icmp,icmp6,
packet,netlink,unix}``): that gives its family and, for IP sockets, both
endpoints. A socket in no table is of a family the audit does not decode; it is
not AF_UNIX (every Unix socket of the namespace is in ``net/unix``).

Reading another user's ``/proc/PID/fd`` needs that user's uid or root (and a
process that made itself non-dumpable needs root): a descriptor that cannot be
read is reported as a gap, never assumed harmless.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["SocketEntry", "Snapshot", "comm", "holders", "peer_cred", "process_tree", "snapshot", "socket_table",
           "classify_socket"]

_PEERCRED = struct.Struct("3i")
#: /proc/PID/net/<table> -> family name reported for a socket found there.
_TABLES = (("tcp", "AF_INET/TCP"), ("tcp6", "AF_INET6/TCP"), ("udp", "AF_INET/UDP"), ("udp6", "AF_INET6/UDP"),
           ("udplite", "AF_INET/UDPLITE"), ("udplite6", "AF_INET6/UDPLITE"), ("raw", "AF_INET/RAW"),
           ("raw6", "AF_INET6/RAW"), ("icmp", "AF_INET/ICMP"), ("icmp6", "AF_INET6/ICMP"),
           ("packet", "AF_PACKET"), ("netlink", "AF_NETLINK"), ("unix", "AF_UNIX"))
_TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2", 6: "TIME_WAIT",
               7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING"}
O_ACCMODE = 0o3


def peer_cred(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the peer of a connected Unix socket, from the kernel (SO_PEERCRED)."""
    return _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm is in parentheses and may hold spaces or ')': the fields after the last ')' are fixed.
    fields = stat[stat.rfind(")") + 2:].split()
    try:
        return int(fields[1])
    except (IndexError, ValueError):
        return None


def tgid(tid: int) -> int | None:
    """The process a thread id belongs to."""
    try:
        for line in Path(f"/proc/{tid}/status").read_text().splitlines():
            if line.startswith("Tgid:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _all_pids() -> list[int]:
    return [int(n) for n in os.listdir("/proc") if n.isdigit()]


def process_tree(pid: int | Iterable[int]) -> list[int]:
    """``pid`` (or every pid of several) and every live descendant (children, grandchildren, ...), by parent pid."""
    children: dict[int, list[int]] = {}
    for p in _all_pids():
        pp = _ppid(p)
        if pp is not None:
            children.setdefault(pp, []).append(p)
    out, todo = [], [pid] if isinstance(pid, int) else list(pid)[::-1]
    while todo:
        p = todo.pop()
        if p in out:
            continue
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _hex_ip(text: str) -> str:
    addr, _, port = text.partition(":")
    raw = bytes.fromhex(addr)
    if len(raw) == 4:
        ip = socket.inet_ntop(socket.AF_INET, raw[::-1])
    elif len(raw) == 16:
        words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
        ip = "[" + socket.inet_ntop(socket.AF_INET6, words) + "]"
    else:
        ip = addr
    return f"{ip}:{int(port, 16)}" if port else ip


def socket_table(pid: int) -> tuple[dict[int, tuple[str, str]], list[str]]:
    """inode -> (family, 'local -> peer' or detail), from the process's network namespace."""
    found: dict[int, tuple[str, str]] = {}
    gaps: list[str] = []
    for name, family in _TABLES:
        try:
            lines = Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        except OSError as exc:
            gaps.append(f"/proc/{pid}/net/{name}: {exc.strerror}")
            continue
        for line in lines:
            f = line.split()
            try:
                if name == "unix":
                    inode = int(f[6])
                    found[inode] = (family, f[7] if len(f) > 7 else "(unnamed)")
                elif name == "packet":
                    found[int(f[8])] = (family, f"protocol 0x{f[3]}, interface {f[4]}")
                elif name == "netlink":
                    found[int(f[9])] = (family, f"netlink protocol {f[1]}")
                else:
                    state = _TCP_STATES.get(int(f[3], 16), f[3]) if name.startswith("tcp") else ""
                    found[int(f[9])] = (family, f"{_hex_ip(f[1])} -> {_hex_ip(f[2])}" + (f" {state}" if state else ""))
            except (IndexError, ValueError):
                continue
    return found, gaps


@dataclass
class SocketEntry:
    pid: int
    fd: int
    inode: int
    family: str  # "AF_UNIX", "AF_INET/TCP", ..., or "unknown"
    detail: str

    @property
    def unix(self) -> bool:
        return self.family == "AF_UNIX"

    def describe(self) -> str:
        return (f"pid {self.pid} ({comm(self.pid)}) fd {self.fd}: {self.family} socket, {self.detail} "
                f"(inode {self.inode})")


@dataclass
class Snapshot:
    """One look at a process tree: its processes, descriptors, sockets and shared writable mappings."""

    root: int
    #: every process whose tree was looked at: ``root`` first, then the others that serve the same socket
    roots: list[int] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)
    #: (pid, fd, link target, open flags or None)
    fds: list[tuple[int, int, str, int | None]] = field(default_factory=list)
    sockets: list[SocketEntry] = field(default_factory=list)
    #: (pid, path) of shared mappings another process can reach: MAP_SHARED and writable, or of shared memory
    #: (/dev/shm, a memfd, System V): data moves there without a system call
    shared_writable: list[tuple[int, str]] = field(default_factory=list)
    #: pid -> {"Seccomp": ..., "NoNewPrivs": ...} from /proc/PID/status
    status: dict[int, dict[str, str]] = field(default_factory=dict)
    #: (pid, tracer pid) of processes already traced by someone else
    traced_by: list[tuple[int, int]] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)

    @property
    def non_unix(self) -> list[SocketEntry]:
        return [s for s in self.sockets if not s.unix]

    def writable_files(self) -> list[str]:
        """Regular files open for writing (or read-write) anywhere in the tree."""
        out = []
        for _pid, _fd, target, flags in self.fds:
            if target.startswith("/") and flags is not None and flags & O_ACCMODE and not target.startswith("/dev/"):
                out.append(target)
        out += [path for _pid, path in self.shared_writable]
        return list(dict.fromkeys(out))

    def inodes(self, kind: str) -> dict[int, list[int]]:
        """'socket' or 'pipe' inode -> pids of this tree holding it."""
        out: dict[int, list[int]] = {}
        for pid, _fd, target, _flags in self.fds:
            if target.startswith(f"{kind}:["):
                out.setdefault(int(target[len(kind) + 2:-1]), []).append(pid)
        return out


def classify_socket(pid: int, fd: int, target: str, table: dict[int, tuple[str, str]]) -> SocketEntry | None:
    """The socket behind ``/proc/PID/fd/FD -> target``; None if it closed while it was being looked at."""
    inode = int(target[8:-1])
    if inode not in table:  # opened after the table was read, or closed meanwhile: look again
        table.update(socket_table(pid)[0])
    if inode not in table:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != target:
                return None
        except OSError:
            return None
        table.update(socket_table(pid)[0])
    family, detail = table.get(inode, ("unknown", "a family the audit does not decode; not AF_UNIX "
                                                  "(absent from net/unix)"))
    return SocketEntry(pid, fd, inode, family, detail)


def _fd_flags(pid: int, fd: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/fdinfo/{fd}").read_text().splitlines():
            if line.startswith("flags:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _tracer(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("TracerPid:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


#: Where shared memory shows in /proc/PID/maps: a mapping of it is shared with whoever opens it too.
SHARED_MEMORY = ("/dev/shm/", "/memfd:", "/SYSV")


def process_status(pid: int) -> dict[str, str]:
    """Seccomp and NoNewPrivs of a process, as the kernel reports them (empty when it is gone)."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("Seccomp", "NoNewPrivs"):
                out[key] = value.strip()
    except OSError:
        pass
    return out


def snapshot(pid: int, *, also: Iterable[int] = (), ignore_tracer: int | None = None) -> Snapshot:
    """Descriptors, sockets and shared writable mappings of ``pid``, the processes ``also`` and all their
    descendants, now (``also``: the other processes that hold the socket ``pid`` serves, which need not be
    its descendants)."""
    snap = Snapshot(root=pid, roots=list(dict.fromkeys([pid, *also])))
    snap.pids = process_tree(snap.roots)
    for r in snap.roots:
        if r not in snap.pids:
            snap.gaps.append(f"process {r} is gone")
    for p in snap.pids:
        tracer = _tracer(p)
        if tracer and tracer != ignore_tracer:
            snap.traced_by.append((p, tracer))
        table, gaps = socket_table(p)
        snap.gaps += gaps
        try:
            names = os.listdir(f"/proc/{p}/fd")
        except FileNotFoundError:
            continue  # exited meanwhile
        except OSError as exc:
            snap.gaps.append(f"cannot list /proc/{p}/fd ({exc.strerror}): run the audit as root or as the "
                             "daemon's user")
            continue
        for name in names:
            fd = int(name)
            try:
                target = os.readlink(f"/proc/{p}/fd/{fd}")
            except FileNotFoundError:
                continue
            except OSError as exc:
                snap.gaps.append(f"cannot read /proc/{p}/fd/{fd} ({exc.strerror})")
                continue
            snap.fds.append((p, fd, target, _fd_flags(p, fd)))
            if target.startswith("socket:["):
                entry = classify_socket(p, fd, target, table)
                if entry is not None:
                    snap.sockets.append(entry)
        snap.status[p] = process_status(p)
        try:
            for line in Path(f"/proc/{p}/maps").read_text().splitlines():
                f = line.split(maxsplit=5)
                if len(f) == 6 and f[1][3] == "s" and f[5].startswith("/") and not f[5].startswith("/dev/zero") \
                        and (f[1][1] == "w" or f[5].startswith(SHARED_MEMORY)):
                    snap.shared_writable.append((p, f[5]))
        except OSError as exc:
            snap.gaps.append(f"cannot read /proc/{p}/maps ({exc.strerror})")
    snap.shared_writable = list(dict.fromkeys(snap.shared_writable))
    return snap


def fd_targets(pid: int) -> list[tuple[int, str]]:
    """(fd, what it points to) for every descriptor of ``pid`` now; best effort (a gone process or fd is skipped)."""
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return []
    out = []
    for name in names:
        try:
            out.append((int(name), os.readlink(f"/proc/{pid}/fd/{name}")))
        except OSError:
            continue
    return out


_LISTENING = 0x00010000  # __SO_ACCEPTCON in /proc/net/unix's Flags


def listeners(path: str | os.PathLike[str]) -> list[tuple[int, int, int]]:
    """(pid, fd, socket inode) of every process holding a listening Unix socket bound to the file ``path``.

    ``/proc/net/unix`` names the path as it was given to ``bind`` (it may be relative to the
    binder's directory then): each listening entry is resolved against its holder's working
    directory and compared with ``path`` by device and inode, so a stale socket file (nobody
    listening on it), or another socket once bound to the same name, never counts.
    """
    try:
        want = os.stat(path)
    except OSError:
        return []
    candidates: dict[int, str] = {}
    try:
        lines = Path("/proc/net/unix").read_text().splitlines()[1:]
    except OSError:
        return []
    for line in lines:
        f = line.split()
        if len(f) < 8 or f[7].startswith("@"):
            continue
        try:
            if int(f[3], 16) & _LISTENING:
                candidates[int(f[6])] = f[7]
        except ValueError:
            continue
    if not candidates:
        return []
    found = []
    for (inode, pids) in holders("socket", set(candidates)).items():
        for p in pids:
            bound = candidates[inode]
            full = bound if bound.startswith("/") else os.path.join(f"/proc/{p}/cwd", bound)
            try:
                st = os.stat(full)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) != (want.st_dev, want.st_ino):
                continue
            for fd, target in fd_targets(p):
                if target == f"socket:[{inode}]":
                    found.append((p, fd, inode))
    return found


def holders(kind: str, inodes: set[int]) -> dict[int, list[int]]:
    """Every process on the machine holding a 'socket' or 'pipe' of these inodes (best effort, this instant)."""
    want = {f"{kind}:[{i}]": i for i in inodes}
    out: dict[int, list[int]] = {}
    if not want:
        return out
    for p in _all_pids():
        for _fd, target in fd_targets(p):
            if target in want:
                out.setdefault(want[target], [])
                if p not in out[want[target]]:
                    out[want[target]].append(p)
    return out
