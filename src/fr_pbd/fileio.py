"""Durable file writes: the one place fr-pbd replaces or creates a file atomically.

A reader sees either the old file or the new one, never a half-written one, and
after the call returns the new content survives a power cut: the data goes to a
temp file in the same directory (``O_EXCL``, ``O_NOFOLLOW``, the exact mode
whatever the umask), is fsynced, is renamed over the target, and the directory
is fsynced. On any error the temp file is removed. Standard library only, so
every layer (store, models, daemon, build tools) can use it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["TMP_PREFIX", "atomic_write", "atomic_create", "durable_rename", "fsync_dir"]

# Temp files are ``<dir>/.fr-pbd-tmp-<16 hex>``; the store deletes stale ones
# left by a crash (docs/store-format.md, section 1).
TMP_PREFIX = ".fr-pbd-tmp-"
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_CHUNK = 1 << 24


def fsync_dir(path: Path) -> None:
    """fsync a directory, so that a rename or unlink in it is durable."""
    fd = os.open(path, os.O_RDONLY | _O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_rename(src: Path, dst: Path) -> None:
    """``os.replace(src, dst)`` (atomic; a symlink at ``dst`` is replaced, not followed), then fsync the directory."""
    os.replace(src, dst)
    fsync_dir(dst.parent)


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Durably replace (or create) ``path`` with ``data``, file mode exactly ``mode``."""
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
    tmp = _write_temp(path.parent, data, mode)
    try:
        os.link(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    fsync_dir(path.parent)


def _write_temp(directory: Path, data: bytes, mode: int) -> Path:
    """A new, fsynced temp file in ``directory`` holding ``data``; removed again if anything fails."""
    tmp = directory / f"{TMP_PREFIX}{os.urandom(8).hex()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC, mode)
    try:
        try:
            os.fchmod(fd, mode)  # undo the umask
            view = memoryview(data)
            while view:
                n = os.write(fd, view[:_CHUNK])
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return tmp
