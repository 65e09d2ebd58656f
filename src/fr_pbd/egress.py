"""Egress guard: a process that holds faces cannot open a network connection (condition 3).

:func:`install` adds a :func:`sys.addaudithook` hook. From then on, in this
process:

* creating a socket of any family but ``AF_UNIX`` raises :class:`EgressError`
  (``socket.__new__``; also a socket built from a bare file descriptor, whose
  family Python does not know yet);
* ``connect``/``connect_ex``/``sendto``/``sendmsg``/``bind`` to any address that
  is not a Unix-domain path raises :class:`EgressError`. IP addresses count as
  non-local *including loopback*: a port on 127.0.0.1 can be a proxy to anywhere;
* name resolution (``getaddrinfo`` with a host, ``gethostbyname``,
  ``gethostbyaddr``, ``getnameinfo``) raises :class:`EgressError`: a DNS query
  is itself a message to a third party.

Why an audit hook: CPython raises these events from C, below every library
(``socket``, ``ssl``, ``urllib``, ``http``, ``asyncio``), and an audit hook
cannot be removed once added. The hook keeps its state in a closure and reads
no module global, so rebinding names in this module does not disable it.

What it cannot see: native code that calls the C library directly (a C
extension, ``ctypes``, onnxruntime's own threads) and child processes (which
start without the hook). The hook is a tripwire with good error messages, not
the barrier. The barrier is the kernel filter that :func:`install` adds as well
(:func:`install_kernel_filter`): a seccomp-BPF program, installed with
``PR_SET_NO_NEW_PRIVS`` and ``SECCOMP_FILTER_FLAG_TSYNC`` (every thread of the
process, and every child it starts, inherits it; it cannot be removed) that
makes ``socket()`` of any family but ``AF_UNIX`` fail with ``EACCES`` (also
``socketpair()``), ``io_uring_setup()`` fail, and every system call of a
foreign ABI (32-bit ``int 0x80``, x32) fail. It is written in BPF by hand with
``ctypes`` (no dependency), for x86_64 and aarch64; on another architecture or
a kernel without seccomp the process runs with the hook only and says so
(:func:`enforcement`). The audit (``fr-pbd audit``) still watches the daemon's
real system calls with ``strace``: it is the check, these are the means.
Every fr-pbd process installs the guard except ``fr-pbd models fetch``, the one
command that downloads; ``fr-pbd audit`` (the products it starts must run as
they would without it) and ``fr-pbd system install | uninstall`` (``useradd``
and ``userdel`` abort when they cannot open the kernel's audit netlink socket)
get the hook only. ``fr_pbd.cli.main`` installs it before it builds its parser.

Another process as the way out. A filtered process cannot open a socket, but
another process of the same user can, and the kernel lets a process reach into
its siblings of the same uid: ptrace (inject ``socket``+``connect``+``write``),
``process_vm_writev`` (write code or data), ``pidfd_getfd`` (take a TCP
descriptor the sibling holds), ``/proc/PID/mem`` (``open`` + ``write``: the
same as ptrace, no ptrace call). So the filter also refuses, with ``EACCES``:
``ptrace`` (every request, ``PTRACE_TRACEME`` too), ``process_vm_readv``,
``process_vm_writev``, ``pidfd_open``, ``pidfd_getfd``, ``kcmp`` (compares
another process's descriptors and memory) and ``perf_event_open`` (samples
another process's registers and stack). The barrier for descriptors is
``pidfd_getfd``: a pidfd also comes without ``pidfd_open`` (``SO_PEERPIDFD`` on
a Unix socket, ``CLONE_PIDFD``), and a pidfd alone only signals and waits;
``pidfd_open`` is refused as well: nothing fr-pbd runs calls it (the verifier,
the daemon and its answers run under the filter in the tests). ``EACCES`` and not
``EPERM``: it is what the filter already answers for sockets, so every refusal
of this guard is one errno, and it is not what the kernel's own ptrace checks
answer (``EPERM`` for a target that is not dumpable, of another uid, or behind
Yama), so a trace tells which layer refused; callers treat it as any permission
error. Being traced is not affected: seccomp filters the calls a process makes,
not what a tracer does to it, so ``strace -p`` of a filtered daemon (the audit)
works as before.

What seccomp cannot stop: ``/proc/PID/mem``. It is ``open()`` of a path and
``write()`` to a descriptor, and a seccomp filter sees a pointer, not the path.
``PR_SET_DUMPABLE`` 0 (``fr_pbd.hardening``) makes fr-pbd's own processes
unreachable to their siblings, but it protects only the process that sets it:
alice's shell or editor stays dumpable. What closes it is a Landlock domain
(:func:`install_kernel_filter` adds one where the kernel has Landlock, 5.13+):
a process in a domain fails the ptrace-mode access checks on a process outside
it (``ptrace``, ``process_vm_*``, ``pidfd_getfd`` again, and the ``/proc/PID``
files behind such a check: ``mem``, ``environ``, ``maps``, ``exe``),
and ``/proc/PID/mem`` stays closed to root too (root can still read
``environ`` and ``maps``). The ruleset handles one right, making block devices,
so the only other thing it refuses is ``mknod`` of a block device. Limits:
Landlock binds the thread that installs it and the threads and children it
starts afterwards, not threads that already run (numpy and OpenCV start thread
pools at import: ``fr-pbd`` installs the guard before it builds its parser, and
:func:`enforcement` says when other threads existed); on a kernel
without Landlock ``/proc/PID/mem`` of the user's other processes stays open, and
:func:`enforcement` says so. Neither layer stops what another process does with
what a filtered process leaves for it: files it reads or runs (a shell's rc
file, an autostart entry, a user systemd unit), or a local service on a Unix
socket that acts for its caller (the user's systemd manager or D-Bus starting a
command, a tmux or screen server, an ssh-agent, a container engine's socket).

The hook records what it saw, as counts per event and address family (never an
address or a payload), for the audit: :func:`record`.
"""

from __future__ import annotations

import ctypes
import errno as _errno
import os
import platform
import socket as _socket
import sys
import threading
from pathlib import Path
from typing import Any, Callable

from fr_pbd.errors import EgressError

__all__ = ["install", "installed", "install_kernel_filter", "enforcement", "record", "record_path", "EgressError"]

# Set once by install(); reading them is for reporting only: the hook never looks here.
_record_fn: Callable[[], dict[str, Any]] | None = None
_installed = False
_install_lock = threading.Lock()
_kernel: str | None = None  # None: not tried; "": active; otherwise why not
_landlock: str | None = None  # the same for the Landlock domain (may end in a note: see _load_landlock)

_ADDRESS_EVENTS = frozenset({"socket.connect", "socket.sendto", "socket.sendmsg", "socket.bind"})
_RESOLVER_EVENTS = frozenset({"socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr",
                              "socket.getnameinfo"})


def _make_hook() -> tuple[Callable[[str, tuple], None], Callable[[], dict[str, Any]]]:
    """Build the hook and its reporter; everything they use is bound here, in the closure."""
    af_unix = int(_socket.AF_UNIX)
    lock = threading.Lock()
    seen: dict[str, dict[str, int]] = {}
    refused: dict[str, dict[str, int]] = {}
    error = EgressError
    address_events = _ADDRESS_EVENTS
    resolver_events = _RESOLVER_EVENTS
    family_names = {int(f): f.name for f in _socket.AddressFamily}

    def family_name(family: Any) -> str:
        try:
            return family_names.get(int(family), f"family {int(family)}")
        except (TypeError, ValueError):
            return "unknown"

    def note(table: dict[str, dict[str, int]], event: str, family: str) -> None:
        with lock:
            per = table.setdefault(event, {})
            per[family] = per.get(family, 0) + 1

    def sock_family(sock: Any) -> str:
        try:
            return family_name(sock.family)
        except Exception:  # noqa: BLE001 - a half-built socket: report, never crash here
            return "unknown"

    def hook(event: str, args: tuple) -> None:
        if not event.startswith("socket."):
            return
        if event == "socket.__new__":
            family = args[1] if len(args) > 1 else -1
            name = family_name(family)
            note(seen, event, name)
            if family != af_unix:
                note(refused, event, name)
                raise error(f"network access is disabled in this process: refused to create a socket of family "
                            f"{name} (fr-pbd only talks over local Unix sockets; see fr_pbd.egress)")
            return
        if event in address_events:
            address = args[1] if len(args) > 1 else None
            name = sock_family(args[0]) if args else "unknown"
            note(seen, event, name)
            if event == "socket.sendmsg" and address is None:
                return  # sendmsg on a connected socket: its peer was checked at connect
            if isinstance(address, (str, bytes, bytearray)):
                return  # a Unix-domain path (or abstract name): stays on this machine
            note(refused, event, name)
            verb = event.split(".", 1)[1]
            raise error(f"network access is disabled in this process: refused {verb} to a non-local "
                        f"{name} address (only Unix-domain sockets are allowed)")
        if event in resolver_events:
            if event == "socket.getaddrinfo" and args and args[0] is None:
                note(seen, event, "no host")
                return
            note(seen, event, "lookup")
            note(refused, event, "lookup")
            raise error("network access is disabled in this process: refused a host name lookup")

    def report() -> dict[str, Any]:
        with lock:
            return {
                "installed": True,
                "seen": {e: dict(v) for e, v in seen.items()},
                "refused": {e: dict(v) for e, v in refused.items()},
                "refused_total": sum(sum(v.values()) for v in refused.values()),
            }

    return hook, report


def record_path(socket_path: str | os.PathLike[str]) -> Path:
    """Where a daemon publishes its guard's :func:`record` beside its socket (the daemon writes it, the audit reads
    it as a self-report): here, below both, so that neither application imports the other for a file name."""
    p = Path(socket_path)
    return p.with_name(p.name + ".egress.json")


def install(kernel: bool = True) -> None:
    """Install the guard in this process (idempotent). It cannot be removed afterwards.

    The audit hook always; the kernel filter too unless ``kernel`` is false (``fr-pbd audit``,
    whose children are the products under test). :func:`enforcement` says what is active.
    """
    global _record_fn, _installed
    with _install_lock:
        if not _installed:
            hook, report = _make_hook()
            sys.addaudithook(hook)
            _record_fn = report
            _installed = True
    if kernel:
        install_kernel_filter()


def installed() -> bool:
    """True once :func:`install` ran in this process."""
    return _installed


def enforcement() -> str:
    """One line for logs and ``fr-pbd doctor``: which layers of the egress guard are active here."""
    if _kernel == "":
        layers = ("kernel (seccomp: socket() of any family but AF_UNIX refused, io_uring refused, ptrace, "
                  "process_vm_readv/writev, pidfd_open/getfd, kcmp and perf_event_open refused; ")
        if _landlock == "":
            layers += "landlock: no ptrace-mode access to processes outside it, /proc/PID/mem included)"
        elif _landlock and _landlock.startswith("partial: "):
            layers += f"landlock: {_landlock[len('partial: '):]})"
        else:
            layers += f"no landlock, so /proc/PID/mem of this user's other processes stays open: {_landlock})"
        return layers + (" + audit hook" if _installed else "")
    if not _installed:
        return "none: the egress guard is not installed in this process"
    return f"audit hook only: {_kernel}" if _kernel else "audit hook only: the kernel filter was not requested"


def record() -> dict[str, Any]:
    """What the guard saw: counts per socket event and address family, refusals; no addresses, no data."""
    if _record_fn is None:
        return {"installed": False, "seen": {}, "refused": {}, "refused_total": 0}
    return _record_fn()


# --------------------------------------------------------------------------------------
# the kernel filter (seccomp-BPF, by hand: no dependency)

# Per architecture: AUDIT_ARCH_*, and the system call numbers (x86_64: asm/unistd_64.h; aarch64:
# asm-generic/unistd.h, which arm64 uses; calls added since 5.1 have one number everywhere).
_ARCHES: dict[str, tuple[int, dict[str, int]]] = {
    "x86_64": (0xC000003E, {"seccomp": 317, "socket": 41, "socketpair": 53, "io_uring_setup": 425,
                            "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312,
                            "perf_event_open": 298, "pidfd_open": 434, "pidfd_getfd": 438,
                            "landlock_create_ruleset": 444, "landlock_restrict_self": 446}),
    "aarch64": (0xC00000B7, {"seccomp": 277, "socket": 198, "socketpair": 199, "io_uring_setup": 425,
                             "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271, "kcmp": 272,
                             "perf_event_open": 241, "pidfd_open": 434, "pidfd_getfd": 438,
                             "landlock_create_ruleset": 444, "landlock_restrict_self": 446}),
}
# Refused outright: the calls that reach into another process's memory or descriptors, and io_uring
# (a second way to make every other call, unseen by this filter).
REFUSED = ("io_uring_setup", "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_open", "pidfd_getfd",
           "kcmp", "perf_event_open")
_MACHINES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}
_X32_SYSCALL_BIT = 0x40000000  # x86_64 only: the x32 ABI shares AUDIT_ARCH_X86_64

_PR_SET_NO_NEW_PRIVS = 38
_PR_GET_NO_NEW_PRIVS = 39
_PR_GET_SECCOMP = 21
_SECCOMP_SET_MODE_FILTER = 1
_SECCOMP_FILTER_FLAG_TSYNC = 1
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
# BPF opcodes: BPF_LD|BPF_W|BPF_ABS, BPF_JMP|BPF_JEQ|BPF_K, BPF_JMP|BPF_JGE|BPF_K, BPF_RET|BPF_K
_LD_ABS, _JEQ, _JGE, _RET = 0x20, 0x15, 0x35, 0x06
# struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6] (little-endian)
_OFF_NR, _OFF_ARCH, _OFF_ARG0 = 0, 4, 16


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def _arch() -> str | None:
    if sys.byteorder != "little" or ctypes.sizeof(ctypes.c_void_p) != 8:
        return None
    return _MACHINES.get(platform.machine().lower())


def filter_program(arch: str) -> list[tuple[int, int, int, int]]:
    """The BPF program for ``arch`` as (code, jt, jf, k) tuples (exposed for tests and review).

    foreign ABI -> EACCES; socket/socketpair: domain AF_UNIX -> allow, else EACCES;
    each call in :data:`REFUSED` -> EACCES; everything else -> allow.
    """
    audit_arch, nr = _ARCHES[arch]
    deny = _RET_ERRNO | _errno.EACCES
    # (label or None, code, jump-true label or 0, jump-false label or 0, k)
    asm: list[tuple[str | None, int, Any, Any, int]] = [
        (None, _LD_ABS, 0, 0, _OFF_ARCH),
        (None, _JEQ, 0, "deny", audit_arch),
        (None, _LD_ABS, 0, 0, _OFF_NR),
    ]
    if arch == "x86_64":
        asm.append((None, _JGE, "deny", 0, _X32_SYSCALL_BIT))
    asm += [
        (None, _JEQ, "domain", 0, nr["socket"]),
        (None, _JEQ, "domain", 0, nr["socketpair"]),
        *[(None, _JEQ, "deny", 0, nr[name]) for name in REFUSED],
        ("allow", _RET, 0, 0, _RET_ALLOW),
        ("domain", _LD_ABS, 0, 0, _OFF_ARG0),  # low 32 bits of args[0]: the kernel reads an int
        (None, _JEQ, "allow2", "deny", int(_socket.AF_UNIX)),
        ("allow2", _RET, 0, 0, _RET_ALLOW),
        ("deny", _RET, 0, 0, deny),
    ]
    where = {label: i for i, (label, *_rest) in enumerate(asm) if label}

    def rel(i: int, target: Any) -> int:
        if target == 0:
            return 0
        off = where[target] - (i + 1)
        assert 0 <= off < 256
        return off

    return [(code, rel(i, jt), rel(i, jf), k) for i, (_l, code, jt, jf, k) in enumerate(asm)]


def _load_filter() -> str:
    """Install the filter in this process; '' on success, else why not (one line)."""
    arch = _arch()
    if arch is None:
        return (f"no kernel filter for this architecture ({platform.machine() or 'unknown'}, "
                f"{8 * ctypes.sizeof(ctypes.c_void_p)}-bit {sys.byteorder}-endian): only x86_64 and aarch64 are "
                "supported, so no kernel enforcement is claimed")
    if not sys.platform.startswith("linux"):
        return f"no seccomp on {sys.platform}"
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError as exc:
        return f"cannot load the C library: {exc}"
    prog = filter_program(arch)
    insns = (_SockFilter * len(prog))(*[_SockFilter(*ins) for ins in prog])
    fprog = _SockFprog(len(prog), ctypes.cast(insns, ctypes.POINTER(_SockFilter)))
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        return f"prctl(PR_SET_NO_NEW_PRIVS) failed: {os.strerror(ctypes.get_errno())}"
    rc = libc.syscall(ctypes.c_long(_ARCHES[arch][1]["seccomp"]), ctypes.c_long(_SECCOMP_SET_MODE_FILTER),
                      ctypes.c_long(_SECCOMP_FILTER_FLAG_TSYNC), ctypes.byref(fprog))
    if rc != 0:
        if rc > 0:
            return f"seccomp(TSYNC) could not apply the filter to thread {rc}"
        return f"seccomp(SECCOMP_SET_MODE_FILTER) failed: {os.strerror(ctypes.get_errno())} (kernel without seccomp?)"
    # Check it without a probe socket (a refused socket() is still an attempt in a trace the audit reads), and
    # without reading /proc/self/status, where a tracer shows: the audit rightly distrusts a program that looks.
    if libc.prctl(_PR_GET_SECCOMP, 0, 0, 0, 0) != 2 or libc.prctl(_PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1:
        return "seccomp() returned 0 but the kernel reports no filter mode (PR_GET_SECCOMP)"
    return ""


# Landlock (linux/landlock.h): the ruleset handles LANDLOCK_ACCESS_FS_MAKE_BLOCK only.
_LANDLOCK_CREATE_RULESET_VERSION = 1
_LANDLOCK_ACCESS_FS_MAKE_BLOCK = 1 << 11


def _load_landlock() -> str:
    """Put this thread (and what it starts) in a Landlock domain of its own: '' on success, else why not.

    "partial: ..." when it is active but other threads already ran (Landlock binds the calling thread).
    """
    arch = _arch()
    if arch is None or not sys.platform.startswith("linux"):
        return "no Landlock support for this system"
    nr = _ARCHES[arch][1]
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError as exc:
        return f"cannot load the C library: {exc}"
    abi = libc.syscall(ctypes.c_long(nr["landlock_create_ruleset"]), None, ctypes.c_long(0),
                       ctypes.c_long(_LANDLOCK_CREATE_RULESET_VERSION))
    if abi < 1:
        return f"the kernel has no Landlock ({os.strerror(ctypes.get_errno())}; needs 5.13+ with landlock in lsm=)"
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        return f"prctl(PR_SET_NO_NEW_PRIVS) failed: {os.strerror(ctypes.get_errno())}"
    attr = ctypes.c_uint64(_LANDLOCK_ACCESS_FS_MAKE_BLOCK)  # struct landlock_ruleset_attr, ABI 1 size
    fd = libc.syscall(ctypes.c_long(nr["landlock_create_ruleset"]), ctypes.byref(attr),
                      ctypes.c_long(ctypes.sizeof(attr)), ctypes.c_long(0))
    if fd < 0:
        return f"landlock_create_ruleset failed: {os.strerror(ctypes.get_errno())}"
    try:
        try:
            threads = len(os.listdir("/proc/self/task"))
        except OSError:
            threads = 0
        if libc.syscall(ctypes.c_long(nr["landlock_restrict_self"]), ctypes.c_long(fd), ctypes.c_long(0)) != 0:
            return f"landlock_restrict_self failed: {os.strerror(ctypes.get_errno())}"
    finally:
        os.close(fd)
    if threads != 1:
        return (f"partial: this thread and what it starts have no ptrace-mode access to processes outside it, but "
                f"{threads - 1 if threads else 'other'} threads started before the guard are not bound")
    return ""


def install_kernel_filter() -> bool:
    """Install the kernel filter in this process (idempotent, irreversible); True when it is active.

    The seccomp filter: every thread gets it at once (TSYNC), every thread and child process started
    later inherits it. The Landlock domain (where the kernel has one): this thread and every thread
    and child it starts afterwards. :func:`enforcement` says what is active.
    """
    global _kernel, _landlock
    with _install_lock:
        if _kernel is None:  # tried once: a failure is reported, not retried
            _kernel = _load_filter()
            _landlock = _load_landlock() if _kernel == "" else "the seccomp filter did not load"
        return _kernel == ""

