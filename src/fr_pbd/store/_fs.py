"""The store's file-system policy: private modes, no symlinks, locks, shredding.

Durable writes themselves are :mod:`fr_pbd.fileio` (one implementation for all of fr-pbd).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from fr_pbd import fileio
from fr_pbd.errors import StoreError, StorePermissionError
from fr_pbd.fileio import TMP_PREFIX, fsync_dir

FILE_MODE = 0o600
DIR_MODE = 0o700
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def check_private(path: Path, *, directory: bool) -> None:
    """Refuse (StorePermissionError) anything not ours, a symlink, or open to group/others."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise
    except OSError:
        raise StoreError(f"cannot inspect {path}") from None
    what = "directory" if directory else "file"
    if stat.S_ISLNK(st.st_mode):
        raise StorePermissionError(f"{path} is a symbolic link; fr-pbd refuses to follow it")
    if directory and not stat.S_ISDIR(st.st_mode):
        raise StorePermissionError(f"{path} is not a directory")
    if not directory and not stat.S_ISREG(st.st_mode):
        raise StorePermissionError(f"{path} is not a regular file")
    if st.st_uid != os.geteuid():
        raise StorePermissionError(f"{path} is owned by another user; refusing to use it")
    if st.st_mode & 0o077:
        want = "0700" if directory else "0600"
        raise StorePermissionError(
            f"{what} {path} is accessible by group or others (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"fr-pbd requires {want}"
        )


#: What to run when there is no home or no store yet: the PIN comes before any enrolment.
START_HINT = "start one with: fr-pbd fallback set --home {home} (then fr-pbd enroll)"


def check_home(home: Path) -> None:
    """The store's home must exist and be private (StoreError if missing, saying how to start one)."""
    try:
        check_private(home, directory=True)
    except FileNotFoundError:
        raise StoreError(f"no fr-pbd home at {home}; {START_HINT.format(home=home)}") from None


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` (one level) with mode 0700 if missing; then check it."""
    try:
        with fileio.storage(path, "create the directory", "nothing was created"):
            os.mkdir(path, DIR_MODE)
    except FileExistsError:
        pass
    except FileNotFoundError:
        raise StoreError(f"the parent directory of {path} does not exist; create it first "
                         f"(mkdir -p {path.parent})") from None
    else:
        with fileio.storage(path, "set the mode of"):
            os.chmod(path, DIR_MODE)  # undo any umask surprise
        fsync_dir(path.parent)
    check_private(path, directory=True)


def read_private_file(path: Path, max_size: int) -> bytes:
    """Read a 0600 regular file owned by us, without following symlinks."""
    return read_private_file_identified(path, max_size)[0]


#: What identifies one version of the store file: device, inode, size, mtime_ns, ctime_ns, and its first
#: bytes (the header and the nonce, which is fresh on every write).
Identity = tuple[int, int, int, int, int, bytes]


def _open_private(path: Path) -> tuple[int, os.stat_result]:
    check_private(path, directory=False)
    fd = os.open(path, os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_mode & 0o077 or st.st_uid != os.geteuid():
            raise StorePermissionError(f"{path} changed while being opened")
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def identity_of(st: os.stat_result, head: bytes) -> Identity:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, bytes(head))


def file_identity(path: Path, head_len: int) -> Identity | None:
    """The :data:`Identity` of the private file at ``path`` now (its first ``head_len`` bytes), without reading
    the rest; None if there is no such file. Same checks as :func:`read_private_file`."""
    try:
        fd, st = _open_private(path)
    except FileNotFoundError:
        return None
    try:
        return identity_of(st, os.pread(fd, head_len, 0))
    finally:
        os.close(fd)


def read_private_file_identified(path: Path, max_size: int,
                                 check: Callable[[int, os.stat_result], None] | None = None,
                                 ) -> tuple[bytes, os.stat_result]:
    """:func:`read_private_file`, and the ``fstat`` of the very file it read.

    Its size is checked (``fstat``) before anything is read: over ``max_size`` is a StoreError;
    ``check(fd, st)`` may refuse more (it may ``pread`` a header) before the rest is read.
    """
    fd, st = _open_private(path)
    try:
        if st.st_size > max_size:
            raise StoreError(f"{path} is larger than any file fr-pbd writes ({st.st_size} bytes); "
                             f"refused unread")
        if check is not None:
            check(fd, st)
        chunks = []
        remaining = st.st_size
        while remaining > 0:
            b = os.read(fd, min(remaining, 1 << 24))
            if not b:
                break
            chunks.append(b)
            remaining -= len(b)
        return b"".join(chunks), st
    finally:
        os.close(fd)


def overwrite(path: Path, data: bytes, offset: int = 0) -> None:
    """Overwrite bytes of an existing file in place and fsync (destroys key material; best effort on flash)."""
    with fileio.storage(path, "overwrite"):
        fd = os.open(path, os.O_WRONLY | _O_NOFOLLOW | _O_CLOEXEC)
        try:
            fileio.pwrite(fd, data, offset, path)
            fileio.fsync(fd, path)
        finally:
            os.close(fd)


def remove_stale_temps(directory: Path) -> None:
    """Delete temp files left by a crash (call with the exclusive lock held)."""
    with contextlib.suppress(OSError):
        for entry in os.scandir(directory):
            if entry.name.startswith(TMP_PREFIX) and entry.is_file(follow_symlinks=False):
                shred_file(Path(entry.path))


def shred_file(path: Path) -> None:
    """Best-effort overwrite with random bytes, fsync, then unlink.

    On flash storage (wear levelling, copy-on-write file systems) the old blocks
    may survive; fr-pbd's guarantee comes from destroying the keys, not from this.
    """
    with fileio.storage(path, "overwrite and delete"):
        try:
            fd = os.open(path, os.O_WRONLY | _O_NOFOLLOW | _O_CLOEXEC)
        except FileNotFoundError:
            return
        try:
            size = os.fstat(fd).st_size
            done = 0
            while done < size:
                n = min(size - done, 1 << 20)
                fileio.pwrite(fd, os.urandom(n), done, path)
                done += n
            fileio.fsync(fd, path)
        finally:
            os.close(fd)
        os.unlink(path)
    fsync_dir(path.parent)


@contextlib.contextmanager
def file_lock(path: Path, *, exclusive: bool) -> Iterator[None]:
    """Hold an ``flock`` on ``path`` (created 0600 if missing) for the ``with`` body.

    On a read-only file system, or in a home this process may not write, an existing lock
    file is opened read-only (``flock`` does not care): reading still works there (``status``,
    the pre-check), and a write fails where it is made, with the store's own path.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | _O_NOFOLLOW | _O_CLOEXEC, FILE_MODE)
    except OSError as exc:
        if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            err = fileio.storage_error(exc, path, "create the lock file", "nothing was changed")
            if err is exc:
                raise
            raise err from exc
        try:
            fd = os.open(path, os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC)
        except OSError:
            raise fileio.storage_error(exc, path, "create the lock file", "nothing was changed") from exc
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid() or st.st_mode & 0o077 or not stat.S_ISREG(st.st_mode):
            raise StorePermissionError(f"lock file {path} is not private to this user")
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
