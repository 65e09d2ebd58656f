"""Durable file writes: the one place fr-pbd replaces or creates a file atomically.

A reader sees either the old file or the new one, never a half-written one, and
after the call returns the new content survives a power cut: the data goes to a
temp file in the same directory (``O_EXCL``, ``O_NOFOLLOW``, the exact mode
whatever the umask), is fsynced, is renamed over the target, and the directory
is fsynced. On any error the temp file is removed. Standard library only (and
:mod:`fr_pbd.errors`), so every layer (store, models, daemon, build tools) can use it.

A full disk, a quota, an I/O error, a read-only file system or a permission refused
is the user's to fix, not a bug: :func:`storage_error` turns such an ``OSError`` into a
:class:`~fr_pbd.errors.StorageError` whose one line names the cause, the path and what
to do. The helpers here and in ``fr_pbd.store._fs`` raise it; the CLI and the public API
apply the same function to anything that slipped past them.

The fault seam (:func:`set_fault_hook`) is for tests: it plays a device that fails a
write or an fsync (EIO, EDQUOT), which no file system fr-pbd can mount in a test does on
demand. It is a function set by code inside the process, never an environment variable:
an environment is what a PAM caller or a service manager hands in, and a knob that makes
the lockout count's write fail would be one more thing an outsider could set. Code that
can call :func:`set_fault_hook` already runs inside fr-pbd and could do worse.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from fr_pbd.errors import StorageError

__all__ = ["TMP_PREFIX", "atomic_write", "atomic_create", "durable_rename", "fsync_dir", "fsync", "pwrite",
           "read_limited", "storage", "storage_error", "set_fault_hook", "STORAGE_ERRNOS"]

# Temp files are ``<dir>/.fr-pbd-tmp-<16 hex>``; the store deletes stale ones
# left by a crash (docs/store-format.md, section 1).
TMP_PREFIX = ".fr-pbd-tmp-"
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_CHUNK = 1 << 24

#: errno -> (the cause, what to do) for the faults that are the user's to fix (exit 2).
_FAULTS: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("no space left on the device",
                   "free some space there (df -h {dir}) and run the command again"),
    errno.EDQUOT: ("the disk quota is used up",
                   "free some space or ask for a larger quota (quota -s) and run the command again"),
    errno.EIO: ("input/output error: the storage device failed",
                "check the device (dmesg) and run the command again"),
    errno.EROFS: ("the file system is read-only",
                  "remount it read-write (findmnt -T {dir}; mount -o remount,rw MOUNTPOINT) and run the command again"),
    errno.EACCES: ("permission denied",
                   "run fr-pbd as the owner of {dir}, or give it back to them (chown, chmod u+rwx {dir})"),
    errno.EPERM: ("operation not permitted",
                  "run fr-pbd as the owner of {dir}, or give it back to them (chown, chmod u+rwx {dir})"),
    errno.EFBIG: ("the file is too large for the file system",
                  "free some space or move the home to another file system"),
}
STORAGE_ERRNOS = frozenset(_FAULTS)

_fault_hook: Callable[[str, Path], None] | None = None


def set_fault_hook(hook: Callable[[str, Path], None] | None) -> Callable[[str, Path], None] | None:
    """Tests only: call ``hook(op, path)`` before every write (``"write"``) and fsync (``"fsync"``,
    ``"fsync_dir"``) these helpers make; an ``OSError`` it raises is what the device said. Returns
    the previous hook; None switches it off (the default)."""
    global _fault_hook
    previous, _fault_hook = _fault_hook, hook
    return previous


def _fault(op: str, path: Path) -> None:
    hook = _fault_hook
    if hook is not None:
        hook(op, path)


def storage_error(exc: OSError, path: str | os.PathLike[str] | None = None, doing: str = "write",
                  after: str = "") -> OSError:
    """The :class:`~fr_pbd.errors.StorageError` for ``exc`` (one line: the cause, ``path``, what to do,
    then ``after``), or ``exc`` itself if its errno is not a fault of the storage (see :data:`STORAGE_ERRNOS`)."""
    if isinstance(exc, StorageError) or exc.errno not in _FAULTS:
        return exc
    where = Path(os.fsdecode(path if path is not None else (exc.filename or "?")))
    cause, todo = _FAULTS[exc.errno]
    directory = where if where.is_dir() else where.parent
    message = f"cannot {doing} {where}: {cause}; {todo.format(dir=directory)}"
    if after:
        message += f"; {after}"
    return StorageError(message, exc.errno, str(where))


@contextlib.contextmanager
def storage(path: str | os.PathLike[str], doing: str = "write", after: str = "") -> Iterator[None]:
    """Inside the ``with`` block, a storage fault (:func:`storage_error`) becomes a StorageError about ``path``."""
    try:
        yield
    except OSError as exc:
        err = storage_error(exc, path, doing, after)
        if err is exc:
            raise
        raise err from exc


def fsync(fd: int, path: Path) -> None:
    """``os.fsync(fd)`` of the file at ``path`` (through the fault seam)."""
    _fault("fsync", path)
    os.fsync(fd)


def pwrite(fd: int, data: bytes, offset: int, path: Path) -> None:
    """Write all of ``data`` at ``offset`` of the file at ``path`` (through the fault seam)."""
    view = memoryview(data)
    while view:
        _fault("write", path)
        n = os.pwrite(fd, view[:_CHUNK], offset)
        view, offset = view[n:], offset + n


def fsync_dir(path: Path) -> None:
    """fsync a directory, so that a rename or unlink in it is durable."""
    with storage(path, "sync the directory"):
        fd = os.open(path, os.O_RDONLY | _O_CLOEXEC)
        try:
            _fault("fsync_dir", Path(path))
            os.fsync(fd)
        finally:
            os.close(fd)


def durable_rename(src: Path, dst: Path) -> None:
    """``os.replace(src, dst)`` (atomic; a symlink at ``dst`` is replaced, not followed), then fsync the directory."""
    with storage(dst, "rename onto", f"{dst.name} was left as it was"):
        os.replace(src, dst)
    fsync_dir(dst.parent)


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Durably replace (or create) ``path`` with ``data``, file mode exactly ``mode``."""
    with storage(path, "write", f"{path.name} was left as it was"):
        tmp = _write_temp(path.parent, data, mode)
        try:
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    fsync_dir(path.parent)


def atomic_create(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Durably create ``path`` with ``data``; FileExistsError if it exists (never overwrites).

    Uses ``link``, which is atomic and fails on an existing name, so of two
    racing creators exactly one wins and the other's file is discarded.
    """
    with storage(path, "create", "nothing was created"):
        tmp = _write_temp(path.parent, data, mode)
        try:
            os.link(tmp, path)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    fsync_dir(path.parent)


def read_limited(path: str | os.PathLike[str], limit: int, *, follow: bool = True) -> bytes | None:
    """The bytes of the regular file ``path``, or None if it holds more than ``limit`` bytes.

    The size is taken with ``fstat`` of the open file before anything is read, and at most
    ``limit + 1`` bytes are read (a file that grows meanwhile is too large too): an oversized
    file costs neither the memory nor the time of reading it. OSError as ``open`` raises it.
    """
    fd = os.open(path, os.O_RDONLY | _O_CLOEXEC | (0 if follow else _O_NOFOLLOW))
    try:
        if os.fstat(fd).st_size > limit:
            return None
        chunks, left = [], limit + 1
        while left > 0:
            b = os.read(fd, min(left, _CHUNK))
            if not b:
                break
            chunks.append(b)
            left -= len(b)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    return None if len(data) > limit else data


def _write_temp(directory: Path, data: bytes, mode: int) -> Path:
    """A new, fsynced temp file in ``directory`` holding ``data``; removed again if anything fails."""
    tmp = directory / f"{TMP_PREFIX}{os.urandom(8).hex()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC, mode)
    try:
        try:
            os.fchmod(fd, mode)  # undo the umask
            view = memoryview(data)
            while view:
                _fault("write", tmp)
                n = os.write(fd, view[:_CHUNK])
                view = view[n:]
            fsync(fd, tmp)
        finally:
            os.close(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return tmp
