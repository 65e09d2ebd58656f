"""The key-change journal: a ``keys migrate`` (or ``keys init``, ``keys rotate``) cut short by a crash
is finished or rolled back by the next command that opens the store.

A change of key custody touches three places that no single write can change together: the
store file (its header names the provider and wraps the data key), key material outside it
(the device key file ``keys/kek``; a TPM NV counter), and the old provider's material that must
be destroyed afterwards. The store file is replaced atomically (temporary file, fsync, rename,
fsync of the directory): **the rename is the commit point**. What lies on either side of it is
recorded in ``$home/keys.journal`` (132 bytes, docs/tpm.md, "Migration journal"), written
durably before anything outside the store is created, and removed (overwritten, unlinked,
directory fsynced) after everything superseded is destroyed.

Recovery (:func:`settle`, run by :meth:`Store.open <fr_pbd.store.store.Store.open>` and so by
every command that opens the store; :func:`begin` runs it too) holds the store's exclusive lock:

* the header's key id equals the journal's *old key id*: the rename never happened, **roll
  back**: the NV counter the journal reserved for the new custody is undefined (if it is ours:
  its authorisation value is in the journal);
* otherwise the change **committed**: the directory is fsynced (the new store is durable
  before the key that opens the old one is destroyed), the old provider's NV counter is
  undefined (if it is not the store's counter now), and a TPM counter left behind the store by
  a crash between the write and its increment is caught up;
* in both cases: for a store whose header names another provider than the key file, every file
  at ``keys/kek`` or ``keys/kek.next`` is overwritten, unlinked and the directory fsynced.

Invariant: never is the store reported TPM-sealed (or passphrase-only) while a key file that
opens it, or any older copy of it, exists: the custody lines check for those files
(:func:`fr_pbd.store.keys.superseded_key_files`), and recovery removes them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fr_pbd import fileio
from fr_pbd.errors import ConfigError, StoreError
from fr_pbd.store import _format as fmt
from fr_pbd.store import _fs
from fr_pbd.store.keys import KeyProvider, WrappedKey, superseded_key_files

__all__ = ["JOURNAL_FILE", "Journal", "begin", "settle", "discard", "needs_settling"]

JOURNAL_FILE = "keys.journal"
_MAGIC = b"FRPBDKMJ"
_VERSION = 1
_BODY = struct.Struct("<8sHBB16sI32sI32s")  # magic, version, from, to, old key id, old NV, auth, new NV, auth
JOURNAL_LEN = _BODY.size + 32  # + SHA-256 of the body: 132 bytes
_NO_AUTH = bytes(fmt.TPM_AUTH_LEN)


@dataclass(frozen=True)
class Journal:
    """One change of key custody in progress (``docs/tpm.md``, "Migration journal", byte by byte)."""

    source: int  # provider id of the store before the change; 0: there was no store (keys init)
    target: int  # provider id after it
    old_key_id: bytes  # the header's key id before the change (zeros when source is 0)
    old_nv_index: int = 0  # the old store's TPM counter (0: none)
    old_nv_auth: bytes = field(default=_NO_AUTH, repr=False)
    new_nv_index: int = 0  # the counter reserved for the new custody (0: none reserved yet)
    new_nv_auth: bytes = field(default=_NO_AUTH, repr=False)

    def encode(self) -> bytes:
        body = _BODY.pack(_MAGIC, _VERSION, self.source, self.target, self.old_key_id, self.old_nv_index,
                          self.old_nv_auth, self.new_nv_index, self.new_nv_auth)
        return body + hashlib.sha256(body).digest()

    @classmethod
    def decode(cls, raw: bytes) -> "Journal":
        if len(raw) != JOURNAL_LEN or hashlib.sha256(raw[:_BODY.size]).digest() != raw[_BODY.size:]:
            raise StoreError("the key-change journal is damaged")
        magic, version, source, target, old_id, old_nv, old_auth, new_nv, new_auth = _BODY.unpack(raw[:_BODY.size])
        if magic != _MAGIC or version != _VERSION:
            raise StoreError("the key-change journal has an unknown format")
        return cls(source, target, old_id, old_nv, old_auth, new_nv, new_auth)


def _path(home: Path) -> Path:
    return home / JOURNAL_FILE


def _counter_of(provider_id: int, params: bytes) -> tuple[int, bytes]:
    if provider_id != fmt.PROVIDER_TPM2:
        return 0, _NO_AUTH
    p = fmt.TpmParams.decode(params)
    return p.nv_index, p.nv_auth


def _read(home: Path) -> "Journal | None | bool":
    """The journal; None if there is none; False if one is there but unreadable (damaged)."""
    try:
        raw = _fs.read_private_file(_path(home), max_size=JOURNAL_LEN)
    except FileNotFoundError:
        return None
    try:
        return Journal.decode(raw)
    except StoreError:
        return False


def _write(home: Path, journal: Journal) -> None:
    fileio.atomic_write(_path(home), journal.encode())


def _remove(home: Path) -> None:
    _fs.shred_file(_path(home))  # overwrite, fsync, unlink, fsync the directory (it holds NV authorisations)


def _transport(home: Path, provider: KeyProvider | None) -> str:
    from fr_pbd.store.tpm import TpmKeyProvider, resolve_transport

    if isinstance(provider, TpmKeyProvider):
        return provider.transport
    return resolve_transport(home)


def _release(home: Path, provider: KeyProvider | None, index: int, auth: bytes) -> None:
    from fr_pbd.store.tpm import release_counter

    release_counter(_transport(home, provider), index, auth)


def _shred_superseded(home: Path) -> None:
    """Overwrite and delete ``keys/kek`` and ``keys/kek.next`` (a store that no key file opens), durably."""
    left = superseded_key_files(home)
    for p in left:
        _fs.shred_file(p)  # each: overwrite, fsync, unlink, fsync keys/
    keys = home / "keys"
    if left or os.path.isdir(keys):
        with contextlib.suppress(OSError):
            os.rmdir(keys)  # only if empty
        fileio.fsync_dir(home)


def _recover(home: Path, header: fmt.Header | None, generation: int, provider: KeyProvider | None) -> None:
    """Finish or roll back what the journal says is in progress (caller holds the exclusive lock).

    ``header``: the store's authenticated header now (None: there is no store). Raises what the
    file system or the TPM raises; the journal is removed only once everything it names is done.
    """
    journal = _read(home)
    if header is not None:
        fileio.fsync_dir(home)  # the store file as it is now is durable before anything it supersedes goes
        if header.provider_id != fmt.PROVIDER_DEVICE_FILE:
            _shred_superseded(home)
        if provider is not None:
            # A TPM counter behind the store (a crash between the write and the increment) catches up here,
            # so an older copy is refused from now on, not from the next write on.
            provider.committed(WrappedKey(header.provider_id, header.provider_params, header.key_id,
                                          header.wrapped_dek), generation)
    if journal:
        current, _auth = _counter_of(header.provider_id, header.provider_params) if header else (0, _NO_AUTH)
        committed = header is not None and header.key_id != journal.old_key_id
        if header is None:  # no store any more (an interrupted keys init, or erased): nothing here uses them
            drop = [(journal.new_nv_index, journal.new_nv_auth), (journal.old_nv_index, journal.old_nv_auth)]
        elif committed:
            drop = [(journal.old_nv_index, journal.old_nv_auth)]
        else:
            drop = [(journal.new_nv_index, journal.new_nv_auth)]
        for index, auth in drop:
            if index and index != current:
                _release(home, provider, index, auth)
    if journal is not None:
        _remove(home)


def needs_settling(store: Any) -> bool:
    """Cheap (a few ``lstat``s and one listing of the home, no TPM command): anything for :func:`settle`?"""
    home, provider = store.home, store.key_provider
    if os.path.lexists(_path(home)) or provider.pending():
        return True
    with contextlib.suppress(OSError), os.scandir(home) as entries:  # a journal or store a kill left half-written
        if any(e.name.startswith(fileio.TMP_PREFIX) for e in entries):
            return True
    if provider.provider_id == fmt.PROVIDER_DEVICE_FILE:
        path = getattr(provider, "path", None)
        return path is not None and os.path.lexists(path.with_name(path.name + ".next"))
    return bool(superseded_key_files(home))


def settle(store: Any) -> None:
    """After a :class:`~fr_pbd.store.store.Store` opened: finish or roll back an interrupted key change (module docstring).

    Takes the exclusive lock only when :func:`needs_settling`. A home this process cannot write
    (read-only, full) or a TPM it cannot reach leaves things as they are, to the next command: the
    store opened, so the command goes on, and the custody lines say what is left.
    """
    store.key_provider.attach_home(store.home)
    if not needs_settling(store):
        return
    with contextlib.suppress(StoreError, ConfigError):  # StorageError, TpmError, a permission: not now
        with store._exclusive() as opened:  # re-read under the lock; finishes a staged key-file rotation
            _recover(store.home, opened.header, opened.state.generation, store.key_provider)


class _Change:
    """A key change in progress: its journal is on disk until :meth:`end`."""

    def __init__(self, home: Path, journal: Journal | None, target: KeyProvider) -> None:
        self._home, self._journal, self._target = home, journal, target

    def _reserve(self, index: int, auth: bytes) -> None:
        assert self._journal is not None
        self._journal = replace(self._journal, new_nv_index=index, new_nv_auth=auth)
        _write(self._home, self._journal)

    def end(self) -> None:
        """After the store is written and the old provider's material destroyed: finish, remove the journal.

        A counter of the old custody that is not the store's counter now is undefined (``keys migrate
        --to tpm2`` on a TPM store makes a new one). If the TPM or the disk refuses now, the journal
        stays and the next open finishes (the store itself is written: no error for this command).
        """
        self._target.reserve_with(None)
        j = self._journal
        if j is None:
            return
        with contextlib.suppress(StoreError, ConfigError):
            if j.old_nv_index and j.new_nv_index and j.old_nv_index != j.new_nv_index or (
                    j.old_nv_index and j.target != fmt.PROVIDER_TPM2):
                _release(self._home, self._target, j.old_nv_index, j.old_nv_auth)
            if j.target != fmt.PROVIDER_DEVICE_FILE:
                _shred_superseded(self._home)
            _remove(self._home)


def begin(home: Path, header: fmt.Header | None, generation: int, old: KeyProvider | None,
          target: KeyProvider) -> _Change:
    """Before a key change writes anything (caller holds the exclusive lock): settle an earlier journal,
    then write this change's, durably, if the change creates or destroys key material outside the store
    (a TPM counter) or changes the provider. ``header``/``old``: the store now (None: no store yet)."""
    target.attach_home(home)
    _fs.remove_stale_temps(home)  # a journal or store a kill left half-written (keys init has no open to do it)
    source = header.provider_id if header is not None else 0
    needed = fmt.PROVIDER_TPM2 in (source, target.provider_id) or (source and source != target.provider_id)
    if os.path.lexists(_path(home)):
        if needed:
            _recover(home, header, generation, old)  # raises if it cannot: this change then writes nothing
        else:
            with contextlib.suppress(StoreError, ConfigError):
                _recover(home, header, generation, old)
    if not needed:
        return _Change(home, None, target)
    old_nv, old_auth = _counter_of(source, header.provider_params) if header is not None else (0, _NO_AUTH)
    journal = Journal(source, target.provider_id, header.key_id if header is not None else bytes(fmt.KEY_ID_LEN),
                      old_nv, old_auth)
    _write(home, journal)
    change = _Change(home, journal, target)
    target.reserve_with(change._reserve)
    return change


def discard(home: Path, provider: KeyProvider | None) -> None:
    """For ``erase``, after the store is gone: every key file left is superseded (overwritten, deleted);
    every counter the journal names is undefined (if ours) and the journal removed. A TPM that cannot be
    reached leaves the journal (a counter is not key material: the sealed key died with the header)."""
    _shred_superseded(home)
    if os.path.lexists(_path(home)):
        with contextlib.suppress(StoreError, ConfigError):
            _recover(home, None, 0, provider)
