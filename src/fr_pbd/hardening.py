"""Process hardening: no core dumps, no ptrace by peers, key pages kept out of swap where allowed.

:func:`harden_process` runs first in every real ``fr-pbd`` process (``fr_pbd.cli.main``)
and in the daemon (``fr_pbd.daemon.serve``):

* ``prctl(PR_SET_DUMPABLE, 0)``: the kernel writes no core file of this process, and
  processes of the same uid without ``CAP_SYS_PTRACE`` can neither attach to it nor read
  its ``/proc/PID/mem``, ``environ`` or ``maps`` (they become root's);
* ``RLIMIT_CORE`` 0, soft and hard: no core file even if something sets the process
  dumpable again (a ``setuid`` or ``exec``), and none for its children.

:func:`lock_all_memory` (the daemon) keeps every page of the process out of swap where
the limits allow, and says why not otherwise; :func:`lock_buffer` ``mlock``\\ s the pages
of one ``bytearray`` (a key), warning once per process where ``RLIMIT_MEMLOCK`` does not
allow it. :func:`wipe` overwrites a buffer in place.

What Python cannot guarantee is said in ``docs/store-format.md`` ("Keys in memory"):
immutable ``bytes`` copies made by libraries cannot be overwritten or locked.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
import sys
import warnings

__all__ = ["harden_process", "lock_all_memory", "lock_buffer", "unlock_buffer", "wipe", "is_dumpable",
           "secret_buffer", "release"]

PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3
_warned = False
_libc: ctypes.CDLL | None = None


def _c() -> ctypes.CDLL | None:
    global _libc
    if _libc is None and sys.platform.startswith("linux"):
        try:
            # dlopen(NULL): the C library already in the process; ctypes.util.find_library would run
            # `ldconfig -p` in a child process (in every PAM login, under the audit's trace)
            _libc = ctypes.CDLL(None, use_errno=True)
        except OSError:
            return None
    return _libc


def harden_process() -> list[str]:
    """Not dumpable, no core files. Returns what could not be done (empty on Linux), never raises."""
    problems: list[str] = []
    libc = _c()
    if libc is None:
        problems.append("prctl is not available on this system")
    elif libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        problems.append(f"prctl(PR_SET_DUMPABLE, 0) failed (errno {ctypes.get_errno()})")
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (OSError, ValueError) as exc:
        problems.append(f"setrlimit(RLIMIT_CORE, 0) failed: {exc}")
    return problems


def is_dumpable() -> bool | None:
    """The kernel's dumpable flag of this process (None where it cannot be read)."""
    libc = _c()
    if libc is None:
        return None
    return bool(libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0))


MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT = 1, 2, 4
_CAP_IPC_LOCK = 14
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def _may_lock_everything() -> bool:
    """RLIMIT_MEMLOCK unlimited, or CAP_IPC_LOCK (which ignores the limit)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    if soft == resource.RLIM_INFINITY:
        return True
    # capget(2), not /proc/self/status: a program that reads its status, where a tracer shows, is one the
    # audit cannot trust to behave the same unwatched (docs/audit.md, C3.network)
    libc = _c()
    if libc is None:
        return False
    header = (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()  # two {effective, permitted, inheritable}: capabilities 0-31, 32-63
    if libc.capget(header, data) != 0:
        return False
    return bool(data[0] >> _CAP_IPC_LOCK & 1)


def lock_all_memory() -> str | None:
    """Keep every page of this process out of swap (the daemon: keys, templates, frames).

    ``mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)``: pages are locked as they are
    touched, so reserved but unused memory costs nothing. Only where nothing can fail
    later: with a finite ``RLIMIT_MEMLOCK`` and no ``CAP_IPC_LOCK``, MCL_FUTURE would make
    allocations past the limit fail, so this returns why it did not lock (the caller logs
    it once); None when locked.
    """
    libc = _c()
    if libc is None:
        return "mlockall is not available on this system"
    if not _may_lock_everything():
        soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
        return (f"memory not locked (RLIMIT_MEMLOCK {soft} bytes, no CAP_IPC_LOCK): keys and templates may reach "
                "swap; set LimitMEMLOCK=infinity or use encrypted swap")
    if libc.mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) != 0:
        return f"mlockall failed (errno {ctypes.get_errno()}): keys and templates may reach swap"
    return None


def _address(buf: bytearray) -> int:
    return ctypes.addressof((ctypes.c_char * len(buf)).from_buffer(buf))


def lock_buffer(buf: bytearray) -> bool:
    """``mlock`` the buffer's pages (kept out of swap); False, with one warning per process, if not allowed.

    The buffer must not be resized while locked (a resize moves it).
    """
    global _warned
    libc = _c()
    if not buf or libc is None:
        return False
    if libc.mlock(ctypes.c_void_p(_address(buf)), ctypes.c_size_t(len(buf))) == 0:
        return True
    if not _warned:
        _warned = True
        soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
        warnings.warn(f"cannot lock key memory (mlock errno {ctypes.get_errno()}, RLIMIT_MEMLOCK {soft} bytes): "
                      "keys may reach swap; raise LimitMEMLOCK or use encrypted swap", RuntimeWarning, stacklevel=2)
    return False


def unlock_buffer(buf: bytearray) -> None:
    libc = _c()
    if buf and libc is not None:
        libc.munlock(ctypes.c_void_p(_address(buf)), ctypes.c_size_t(len(buf)))


def wipe(buf: bytearray | memoryview) -> None:
    """Overwrite a mutable buffer with zeros, in place (the only copy Python lets us reach)."""
    mv = memoryview(buf).cast("B")
    mv[:] = bytes(len(mv))


def secret_buffer(data: bytes | bytearray | None = None, size: int = 0) -> bytearray:
    """A key's own buffer: mutable (so :func:`release` can overwrite it) and mlocked where allowed.

    With ``data``, a copy of it (the caller drops the original, which Python cannot
    overwrite); without, ``size`` random bytes drawn by ``getrandom(2)`` straight into
    the buffer, so that no other copy of a fresh key ever exists in Python.
    """
    buf = bytearray(len(data) if data is not None else size)
    lock_buffer(buf)
    if data is not None:
        buf[:] = data
    else:
        _random_into(buf)
    return buf


def release(buf: bytearray) -> None:
    """Overwrite a :func:`secret_buffer` and unlock its pages (mlock is per page: a neighbour on the
    same page is unlocked too; the daemon locks all its memory instead where it may)."""
    wipe(buf)
    unlock_buffer(buf)


_GRND_FLAGS = 0


def _random_into(buf: bytearray) -> None:
    libc = _c()
    n = len(buf)
    if libc is not None and hasattr(libc, "getrandom"):
        c_buf = (ctypes.c_char * n).from_buffer(buf)
        done = 0
        while done < n:
            got = libc.getrandom(ctypes.byref(c_buf, done), ctypes.c_size_t(n - done), _GRND_FLAGS)
            if got < 0:
                if ctypes.get_errno() == 4:  # EINTR
                    continue
                break
            done += got
        del c_buf
        if done == n:
            return
    buf[:] = os.urandom(n)  # no getrandom(2): a transient bytes copy, as everywhere in Python
