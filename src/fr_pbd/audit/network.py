"""What left the daemon while it was probed, read from the kernel's inventory and the system-call trace.

Rules (docs/audit.md, C3.network):

* FAIL: a socket that is not AF_UNIX in the daemon or a child (any snapshot or
  poll); a ``socket``/``connect``/``bind``/``sendto``/``sendmsg`` naming another
  family; data moved into a non-Unix socket by any call (``write``, ``send``,
  ``sendfile``, ``splice``, ...); a child process or program started; a
  connection to another local service; data handed to another process through
  a pipe or a Unix socket (only the answer to the client may leave, and the
  daemon's standard output/error, which are scanned as logs), also to the
  daemon's own children; data written into
  another process's memory or a message queue.
* INCONCLUSIVE: no trace (no strace, no permission, someone else already traces
  the daemon), a trace cut short, a shared mapping of shared memory or a shared
  writable file mapping (data moves there without a system call), ``io_uring`` (it moves data without system
  calls the trace can see), a descriptor that could not be read, data sent to a
  pipe or socket whose other end was gone before the audit could see who held it.

Everything the daemon wrote to files, pipes, terminals and its log streams is
collected per destination (:class:`Output`) for the scanners; the answers to the
audit's own requests are not (C5 reads them from the client side).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field

from fr_pbd.audit import procfs
from fr_pbd.audit.probe import POLL_S, ProbeResult
from fr_pbd.audit.trace import describe_fd

__all__ = ["Output", "NetworkFacts", "analyse", "LOG_SINKS"]

#: Local services that are log sinks: what the daemon sends there is scanned as a log.
LOG_SINKS = ("/dev/log", "/run/systemd/journal/socket", "/run/systemd/journal/stdout",
             "/run/systemd/journal/dev-log", "/run/systemd/journal/syslog")
MAX_OUTPUT = 32 << 20
_DATA_CALLS = {"write", "writev", "pwrite64", "pwritev", "pwritev2", "sendto", "sendmsg", "sendmmsg", "sendfile",
               "splice", "vmsplice", "tee", "copy_file_range"}
#: calls whose destination is not their first descriptor: index of the destination among the descriptors
_DEST_INDEX = {"splice": 1, "tee": 1, "copy_file_range": 1}
_UNIX_FAMILIES = {"AF_UNIX", "AF_LOCAL", "1"}
_OTHER_PROCESS_CALLS = {"ptrace": "ptrace writes", "process_vm_writev": "writes into another process's memory",
                        "msgsnd": "a System V message", "mq_timedsend": "a POSIX message queue",
                        "shmat": "System V shared memory"}
_UNIX_DESC = re.compile(r"UNIX(?:-[A-Z]+)?:\[(\d+)(?:->(\d+))?")


@dataclass
class Output:
    label: str
    kind: str  # "file" | "log" | "tty"
    data: bytearray = field(default_factory=bytearray, repr=False)
    calls: int = 0
    truncated: bool = False
    path: str | None = None

    def add(self, payload: bytes | None, truncated: bool) -> None:
        self.calls += 1
        if payload:
            room = MAX_OUTPUT - len(self.data)
            self.data += payload[:max(room, 0)]
            self.truncated = self.truncated or truncated or len(payload) > room
        elif truncated:
            self.truncated = True


@dataclass
class NetworkFacts:
    fail: list[str] = field(default_factory=list)
    inconclusive: list[str] = field(default_factory=list)
    info: list[str] = field(default_factory=list)
    outputs: dict[str, Output] = field(default_factory=dict)
    written_files: list[str] = field(default_factory=list)
    calls: Counter = field(default_factory=Counter)
    families: Counter = field(default_factory=Counter)
    traced: bool = False
    #: [invoke]: pipe and socket-pair inodes the product made itself (data between its own processes)
    internal: set[tuple[str, int]] = field(default_factory=set, repr=False)

    def _once(self, bucket: list[str], line: str) -> None:
        if line not in bucket:
            bucket.append(line)


def _tree(res: ProbeResult) -> set[int]:
    pids = set(res.polled_pids)
    for snap in res.snapshots:
        pids.update(snap.pids)
    return pids


def _who(pids: list[int]) -> str:
    return ", ".join(f"pid {p} ({procfs.comm(p)})" for p in pids)


def _program(ev) -> str:
    m = re.match(r'^execve(?:at)?\((?:[^,]*, )?"([^"]*)"', ev.text)
    return m.group(1) if m else "?"


def _declared(program: str, declared: tuple[str, ...]) -> bool:
    return any(program == d or (("/" not in d) and os.path.basename(program) == d) for d in declared)


def _child_verdicts(res: ProbeResult) -> dict[int, str]:
    """A daemon's children, judged by what the trace shows them do: pid -> "nothing ran" (every program it
    tried failed to start, and it ran none), "declared" (it ran only programs declared in [process] children,
    and is traced with them), or "undeclared"."""
    forks = {int(ev.result.split()[0]) for ev in res.events or [] if ev.result.split()[:1] and
             ev.result.split()[0].isdigit() and (ev.call in ("fork", "vfork") or (
                 ev.call in ("clone", "clone3") and "CLONE_THREAD" not in ev.text))}
    out = {}
    for pid in forks:
        execs = [e for e in res.events or [] if e.pid == pid and e.call in ("execve", "execveat")]
        ran = [_program(e) for e in execs if not e.failed]
        if execs and not ran:
            out[pid] = "nothing ran"
        elif ran and all(_declared(p, res.declared_children) for p in ran):
            out[pid] = "declared"
        else:
            out[pid] = "undeclared"
    return out


def analyse(res: ProbeResult) -> NetworkFacts:
    nf = NetworkFacts()
    tree = _tree(res)
    children = _child_verdicts(res) if res.events is not None else {}
    _inventory(res, nf, children)
    if res.events is None:
        nf._once(nf.inconclusive, f"the daemon's system calls were not traced: {res.trace_error}")
        return nf
    nf.traced = True
    # [invoke] and [pam]: every process of a run traced from its first instruction; a [pam] daemon
    # (attached, like a [socket] one) keeps the daemon's rules
    daemon_tree = set(tree)
    run_pids = {ev.pid for ev in res.events if ev.pid not in daemon_tree} if res.shape != "socket" else set()
    tree |= run_pids
    own_socket = os.path.realpath(res.socket) if res.shape == "pam" and res.socket is not None else None
    if own_socket is not None:  # the logins' connections to the product's own daemon: its answer channel
        for ev in res.events:
            if ev.call == "connect" and ev.pid in run_pids and ev.sun_paths and ev.fds \
                    and os.path.realpath(ev.sun_paths[0]) == own_socket:
                m = _UNIX_DESC.match(ev.fds[0][1])
                if m:
                    res.client_inodes.add(int(m.group(1)))
                    nf.internal.add(("unix", int(m.group(1))))
    if res.trace_truncated:
        nf._once(nf.inconclusive, "the trace was cut short (more than the audit keeps): what follows is incomplete")
    if res.trace_error:
        nf._once(nf.inconclusive, res.trace_error)
    for ev in res.events:
        nf.calls[ev.call] += 1
        for fam in ev.families:
            nf.families[fam] += 1
        line = f"pid {ev.pid}: {ev.text}"
        invoke = ev.pid in run_pids
        if res.shape == "pam" and invoke and _pam_audit_record(ev, nf, line):
            continue
        if ev.call in ("pipe", "pipe2", "socketpair") and not ev.failed:
            # made while traced: only the product's own processes hold its ends (children inherit them, and are
            # judged; an end handed to anyone else goes over a socket the rules already see)
            for _fd, desc in ev.fds:
                m = re.match(r"pipe:\[(\d+)\]", desc) or _UNIX_DESC.match(desc)
                if m:
                    nf.internal.add(("pipe" if desc.startswith("pipe") else "unix", int(m.group(1))))
        if ev.call in ("socket", "socketpair", "connect", "bind", "sendto", "sendmsg", "sendmmsg"):
            bad = [f for f in ev.families if f not in _UNIX_FAMILIES]
            if bad and ev.failed:  # refused (e.g. by the kernel's filter): no endpoint, nothing left
                nf._once(nf.info, f"refused attempt, {ev.call} with address family {bad[0]} returned "
                                  f"{ev.result.split(' (')[0]}: {line}")
                continue
            if bad:
                nf._once(nf.fail, f"{ev.call} with address family {bad[0]}: {line}")
                continue
        if ev.call in ("execve", "execveat"):
            if ev.failed:  # ENOENT, EACCES, ...: no program ran
                nf._once(nf.info, f"tried to start a program, which failed (nothing ran): {line}")
            elif invoke:  # traced from its start like the rest of the product: judged by what it does
                nf._once(nf.info, f"ran a program, traced with the product from its first instruction: {line}")
            elif _declared(_program(ev), res.declared_children):
                nf._once(nf.info, f"ran a program declared as part of the product ([process] children), traced "
                                  f"with it and judged by what it does: {line}")
            else:
                nf._once(nf.fail, f"started a program: {line}")
            continue
        if ev.call in ("fork", "vfork") or (ev.call in ("clone", "clone3") and "CLONE_THREAD" not in ev.text):
            child = int(ev.result.split()[0]) if ev.result.split()[:1] and ev.result.split()[0].isdigit() else None
            verdict = children.get(child) if child is not None else None
            if invoke:
                nf._once(nf.info, f"started a child process, traced with the product from its first instruction "
                                  f"(judged by what it does): {line}")
            elif verdict == "nothing ran":
                nf._once(nf.info, f"started a child process that tried to run a program and failed (nothing ran; "
                                  f"its calls are judged like the daemon's): {line}")
            elif verdict == "declared":
                nf._once(nf.info, f"started a child process that ran only declared programs ([process] children), "
                                  f"traced with it: {line}")
            else:
                nf._once(nf.fail, f"started a child process: {line}")
            continue
        if ev.call.startswith("io_uring"):
            nf._once(nf.inconclusive, f"uses io_uring, which moves data without system calls a trace can see: {line}")
            continue
        if ev.call in ("kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo"):
            m = re.match(r"^[a-z_]+\((-?\d+)(?:, (-?\d+))?", ev.text)
            target = int(m.group(1)) if m else None
            if ev.call == "tkill" and target is not None:  # a thread id: find its process
                target = procfs.tgid(target)
            if target is not None and target not in tree and "SIG_0" not in ev.text and ", 0)" not in ev.text:
                nf._once(nf.fail, f"signals another process (a signal can carry data): {line}")
            continue
        if ev.call in ("setxattr", "lsetxattr", "fsetxattr") and not ev.failed:
            nf._once(nf.inconclusive, f"writes extended attributes, which the audit does not read: {line}")
            continue
        if ev.call == "ptrace" and not re.search(r"PTRACE_(POKE|SETREGS|SETFPREGS|SETREGSET)", ev.text):
            nf._once(nf.inconclusive, f"controls another process with ptrace: {line}")
            continue
        if ev.call in _OTHER_PROCESS_CALLS:
            nf._once(nf.fail, f"hands data to another process ({_OTHER_PROCESS_CALLS[ev.call]}): {line}")
            continue
        if ev.call == "connect" and ev.sun_paths and not ev.failed:
            path = ev.sun_paths[0]
            if invoke and own_socket is not None and os.path.realpath(path) == own_socket:
                nf._once(nf.info, f"the login asked the product's own daemon at {path} (traced and inventoried "
                                  "as part of the product)")
            elif path in LOG_SINKS:
                nf._once(nf.info, f"connected to the log service {path}")
            else:
                nf._once(nf.fail, f"contacted another local service at {path!r}: {line}")
            continue
        if ev.call in ("open", "openat", "openat2") and re.search(r'"/proc/(self|thread-self|\d+)(/task/\d+)?/status"',
                                                                 ev.text):
            nf._once(nf.inconclusive, "reads its own process status, where an attached tracer shows (TracerPid): it "
                                      f"may behave differently while watched: {line}")
        if ev.call in ("open", "openat", "openat2", "creat") and not ev.failed:
            if ev.call == "creat" or re.search(r"O_WRONLY|O_RDWR|O_CREAT|O_APPEND|O_TRUNC", ev.text):
                target = ev.fds[-1][1] if ev.fds else None
                if target and describe_fd(target)[0] == "file" and target not in nf.written_files:
                    nf.written_files.append(target)
            continue
        if ev.call in ("rename", "renameat", "renameat2", "link", "linkat") and not ev.failed:
            m = re.findall(r'"([^"]*)"', ev.text)
            if m and m[-1].startswith("/") and m[-1] not in nf.written_files:
                nf.written_files.append(m[-1])
            continue
        if ev.call in _DATA_CALLS:
            _data(ev, res, nf, tree, line)
    return nf


def _inventory(res: ProbeResult, nf: NetworkFacts, children: dict[int, str] | None = None) -> None:
    seen: set[tuple[int, int, int]] = set()
    names = ["before the probe"] + [f"during the probe ({i + 1})" for i in range(len(res.during))] + ["after"]
    snaps = [res.before, *res.during, res.after]
    for when, snap in zip(names, snaps):
        if snap is None:
            continue
        for s in snap.non_unix:
            if (s.pid, s.fd, s.inode) not in seen:
                seen.add((s.pid, s.fd, s.inode))
                nf._once(nf.fail, f"{when}: {s.describe()}")
        for gap in snap.gaps:
            if "is gone" in gap and when == "after":
                nf._once(nf.info, f"after the probe: {gap}")
            else:
                nf._once(nf.inconclusive, f"{when}: {gap}")
        for pid, tracer in snap.traced_by:
            nf._once(nf.inconclusive, f"{when}: pid {pid} is already traced by pid {tracer} ({procfs.comm(tracer)}): "
                                      "its system calls are hidden from the audit's tracer")
        for pid, path in snap.shared_writable:
            nf._once(nf.inconclusive, f"pid {pid} ({procfs.comm(pid)}) maps {path} shared: data written there "
                                      "needs no system call and any process that maps it reads it, so what leaves "
                                      "this way cannot be seen (files among them are scanned)")
    for (pid, fd), s in res.polled_sockets.items():
        if (pid, fd, s.inode) not in seen:
            seen.add((pid, fd, s.inode))
            nf._once(nf.fail, f"while the probe ran (kernel inventory every {POLL_S * 1000:g} ms): {s.describe()}")
    if res.before is not None:
        started = sorted(set(res.polled_pids) - set(res.before.pids))
        for pid in started:
            verdict = (children or {}).get(pid)
            if verdict in ("nothing ran", "declared"):  # the trace shows what it did; judged there
                nf._once(nf.info, f"a child process appeared while the probe ran: pid {pid} ({res.polled_pids[pid]})"
                                  f", traced: {verdict}")
            else:
                nf._once(nf.fail, f"a child process appeared while the probe ran: pid {pid} ({res.polled_pids[pid]})")
        children = [p for p in res.before.pids if p not in (res.before.roots or [res.before.root])]
        if children:
            nf._once(nf.info, f"child processes already running before the probe (inventoried too): "
                              f"{_who(children)}")
    _answerers(res, nf)


def _answerers(res: ProbeResult, nf: NetworkFacts) -> None:
    """Every process that could answer must have been watched: any holder of the listening socket can accept."""
    for pid, fd, inode in res.late_listeners:
        nf._once(nf.inconclusive, f"pid {pid} ({procfs.comm(pid)}) took up the listening socket (fd {fd}, inode "
                                  f"{inode}) while the probe ran, outside the processes traced: it could answer "
                                  "untraced (its sockets were inventoried)")
    watched = _tree(res)
    unwatched: dict[int, list[str]] = {}
    for label, pid in [(a.label, a.server_pid) for a in res.answers if a.server_pid is not None] + res.contacts:
        if pid not in watched:
            unwatched.setdefault(pid, []).append(label)
    for pid, labels in unwatched.items():
        line = (f"{len(labels)} connection(s) (first: {labels[0]}): SO_PEERCRED names pid {pid} "
                f"({procfs.comm(pid)}), which the audit neither traced nor inventoried")
        if pid == res.server_pid and pid not in res.serving:  # it listened, then exited before the probe began
            nf._once(nf.info, f"{line}: it had exited before the probe began; the holders of the listening "
                              "socket were watched")
        else:
            nf._once(nf.inconclusive, line)


def _data(ev, res: ProbeResult, nf: NetworkFacts, tree: set[int], line: str) -> None:
    if not ev.fds:
        return
    idx = _DEST_INDEX.get(ev.call, 0)
    fd, desc = ev.fds[min(idx, len(ev.fds) - 1)]
    kind, _ = describe_fd(desc)
    n = len(ev.payload) if ev.payload is not None else None
    size = f"{n} byte(s)" if n is not None else "data"
    if kind == "net":
        nf._once(nf.fail, f"wrote {size} to a network socket: {line}")
        return
    if ev.failed:  # nothing was written (e.g. EPIPE: the client had gone)
        return
    if ev.sun_paths:  # a datagram sent to a named Unix socket
        path = ev.sun_paths[0]
        if path in LOG_SINKS:
            _out(nf, f"log service {path}", "log").add(ev.payload, ev.truncated)
        else:
            nf._once(nf.fail, f"sent {size} to the local service at {path!r}: {line}")
        return
    if kind == "unix":
        m = _UNIX_DESC.match(desc)
        peer = int(m.group(2)) if m and m.group(2) else None
        if peer is not None and peer in res.client_inodes:
            return  # the answer to one of the audit's own requests: C5 reads it
        if fd in (1, 2) or any(sink in desc for sink in LOG_SINKS):
            _out(nf, f"standard {'output' if fd == 1 else 'error'} (a Unix socket, e.g. the journal)"
                 if fd in (1, 2) else f"log service ({desc})", "log").add(ev.payload, ev.truncated)
            return
        if m and ("unix", int(m.group(1))) in nf.internal:
            _internal(nf, "a socket pair or the connection to its daemon", line)
            return
        _other_end(nf, res, tree, "socket", peer, f"sent {size} over a Unix socket", line)
        return
    if kind == "pipe":
        m = re.match(r"pipe:\[(\d+)\]", desc)
        if m and ("pipe", int(m.group(1))) in nf.internal:  # e.g. a program's output read by the product itself
            _internal(nf, "a pipe", line)
            return
        if fd in (1, 2):
            _out(nf, f"standard {'output' if fd == 1 else 'error'} (a pipe)", "log").add(ev.payload, ev.truncated)
            return
        _other_end(nf, res, tree, "pipe", int(m.group(1)) if m else None, f"wrote {size} into a pipe", line)
        return
    if kind == "file":
        o = _out(nf, f"file {desc}", "file")
        o.path = desc
        o.add(ev.payload, ev.truncated)
        if desc not in nf.written_files:
            nf.written_files.append(desc)
        return
    if kind == "tty":
        _out(nf, f"terminal {desc}", "tty").add(ev.payload, ev.truncated)


def _other_end(nf: NetworkFacts, res: ProbeResult, tree: set[int], kind: str, inode: int | None, what: str,
               line: str) -> None:
    held = res.holders.get(kind, {}).get(inode, []) if inode is not None else []
    others = [p for p in held if p != res.server_pid]
    if others:  # only the answer may leave the daemon's process, also towards its own children
        where = "" if all(p in tree for p in others) else ", outside the daemon's process tree"
        nf._once(nf.fail, f"{what} read by another process{where}, {_who(others)}: {line}")
    elif not held:
        nf._once(nf.inconclusive, f"{what} whose other end was gone before the audit could see who held it: {line}")


def _pam_audit_record(ev, nf: NetworkFacts, line: str) -> bool:
    """[pam]: libpam writes every login's result to the kernel's audit log (a NETLINK_AUDIT socket, the
    kernel its only peer), as for every login on the host. That is the host's login accounting, not the
    product's; what is written there is scanned as a log all the same (a module could use it)."""
    if ev.call == "socket" and ev.text.startswith("socket(AF_NETLINK") and "NETLINK_AUDIT" in ev.text:
        m = re.search(r"= \d+<NETLINK:\[(\d+)\]>", ev.text)
        if m:
            nf.internal.add(("audit", int(m.group(1))))
        nf._once(nf.info, f"PAM's login record for the kernel's audit log (NETLINK_AUDIT; the kernel is its only "
                          f"peer; what is sent there is scanned as a log): {line}")
        return True
    if ev.call in ("sendto", "sendmsg", "write", "writev") and ev.fds:
        m = re.match(r"NETLINK:\[(\d+)\]", ev.fds[0][1])
        if m and ("audit", int(m.group(1))) in nf.internal:
            _out(nf, "the kernel's audit log (PAM's login record)", "log").add(ev.payload, ev.truncated)
            return True
    return False


def _internal(nf: NetworkFacts, what: str, line: str) -> None:
    """Data through a pipe or socket pair made while traced: only the product's own processes (threads,
    children judged by what they do) hold its ends."""
    nf._once(nf.info, f"data through {what} the product made while traced, between its own processes: {line}")


def _out(nf: NetworkFacts, label: str, kind: str) -> Output:
    if label not in nf.outputs:
        nf.outputs[label] = Output(label, kind)
    return nf.outputs[label]
