"""The store handle: create/open a home, read and write the store file under a lock.

This module is the file I/O and locking. What it reads and writes is sealed
and opened by :mod:`fr_pbd.store.envelope`; the state inside is
:mod:`fr_pbd.store.records`; callers change it through
:mod:`fr_pbd.store.transaction`. See :mod:`fr_pbd.store` for the overview and
``docs/store-format.md`` for the format and threat model.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path

from fr_pbd import fileio, hardening
from fr_pbd.errors import StoreError
from fr_pbd.store import _format as fmt
from fr_pbd.store import _fs, migration, protection
from fr_pbd.store.envelope import Opened, make_header, new_dek, open_bytes, seal
from fr_pbd.store.fallback import check_fallback as _compare_fallback
from fr_pbd.store.keys import DeviceFileKeyProvider, KeyProvider, WrappedKey, check_provider, normalise_secret
from fr_pbd.store.records import ConsentRecord, LockoutState, StoreState
from fr_pbd.store.transaction import ClaimsView, StoreView, Transaction
from fr_pbd.template import Template

__all__ = ["Store", "STORE_FILE", "LOCK_FILE", "provider_for", "stored_provider_id"]

STORE_FILE = "store.frpbd"
LOCK_FILE = "store.lock"
#: The largest payload bucket this store reads or writes: 256 MiB, half a million 128-d templates,
#: far beyond a household. The format allows 16 GiB (``_format.MAX_BUCKET``); a file above this is
#: refused from its size (``fstat``) and header before its body is read, so a planted 1 GB file
#: costs neither the memory nor the time of reading it.
MAX_STORE_BUCKET = 2**28
MAX_STORE_FILE = fmt.MAX_HEADER_LEN + fmt.NONCE_LEN + MAX_STORE_BUCKET + fmt.TAG_LEN


class Store:
    """Handle on the encrypted store in a home directory (``$FR_PBD_HOME``).

    Get one with :meth:`create` or :meth:`open`. The handle holds the home path
    and the key provider, and no template, rotation or key: every operation
    re-reads the file under a lock, but :meth:`claims` (enrolled names, uid
    bindings, lockouts) is served from memory while the file is the version it
    was read from. Read with :meth:`read` (shared lock); change with
    ``with store.transaction() as tx:`` (exclusive lock held across
    read-modify-write, so concurrent processes never lose each other's writes).

    Files: ``$home`` (0700), ``$home/store.frpbd`` (0600), ``$home/store.lock``
    (0600), and by default the key ``$home/keys/kek`` (0600 in a 0700 dir). A
    store that does not authenticate raises StoreIntegrityError and is never
    written over or deleted.
    """

    def __init__(self, home: Path, provider: KeyProvider, _token: object = None) -> None:
        if _token is not _CONSTRUCT:
            raise TypeError("use Store.create() or Store.open()")
        self._home = home
        self._provider = provider
        # The pre-check's cache (:meth:`claims`): (identity of the file version it was read from, the view).
        self._claims: tuple[_fs.Identity, ClaimsView] | None = None

    def __repr__(self) -> str:
        return f"Store(home={str(self._home)!r})"

    def __reduce__(self):
        raise TypeError("a store handle cannot be pickled")

    @property
    def home(self) -> Path:
        return self._home

    @property
    def path(self) -> Path:
        return self._home / STORE_FILE

    @property
    def key_provider(self) -> KeyProvider:
        """The provider that opens this store (for ``status`` and the audit: what custody the key has)."""
        return self._provider

    # -- construction -----------------------------------------------------------
    @classmethod
    def create(
        cls,
        home: str | os.PathLike[str],
        *,
        model_id: str,
        dim: int,
        key_provider: KeyProvider | None = None,
    ) -> "Store":
        """Create a new, empty store in ``home`` (created 0700 if missing; its parent must exist).

        ``key_provider`` defaults to ``DeviceFileKeyProvider.default(home)``
        (creating the key file if needed). Raises StoreError if a store already
        exists there: fr-pbd never replaces a store.
        """
        home = Path(home)
        fmt.check_model_id(model_id)
        if not isinstance(dim, int) or isinstance(dim, bool) or not 1 <= dim <= fmt.MAX_DIM:
            raise ValueError(f"dim must be an int in [1, {fmt.MAX_DIM}]")
        provider = check_provider(key_provider if key_provider is not None else DeviceFileKeyProvider.default(home))
        _fs.ensure_private_dir(home)
        with _fs.file_lock(home / LOCK_FILE, exclusive=True):
            if os.path.lexists(home / STORE_FILE):
                raise StoreError(f"a store already exists in {home}; fr-pbd never replaces a store")
            state = StoreState.new(model_id, dim, protection.random_rotation(dim))
            change = migration.begin(home, None, 0, None, provider)  # journals a TPM counter it creates
            dek = new_dek()
            try:
                wrapped = provider.bind(provider.wrap(dek), state.generation)
                _write(home, make_header(state, wrapped).encode(), dek, state)
            finally:
                hardening.release(dek)
            provider.committed(wrapped, state.generation)
            change.end()
        return cls(home, provider, _CONSTRUCT)

    @classmethod
    def open(cls, home: str | os.PathLike[str], *, key_provider: KeyProvider | None = None) -> "Store":
        """Open the store in ``home``, checking permissions and that the key opens it.

        Raises StoreError (no store), StorePermissionError (modes), KeyProviderError
        (key missing), WrongKeyError (another key/passphrase), StoreIntegrityError
        (damaged/tampered/truncated), StaleStoreError (an older copy than the TPM counter says),
        TpmError (TPM missing or cleared). Nothing is written on any failure. ``key_provider``
        defaults to the provider the store's header names (:func:`fr_pbd.store.keys.provider_for`).
        """
        home = Path(home)
        provider = check_provider(key_provider if key_provider is not None else provider_for(home))
        store = cls(home, provider, _CONSTRUCT)
        store.read()
        migration.settle(store)  # finish or roll back a key change a crash interrupted (docs/tpm.md)
        return store

    # -- reading and writing ----------------------------------------------------
    def _load(self) -> tuple[Opened, _fs.Identity]:
        """Read, parse, unwrap, decrypt; and the identity of the file version read. Caller holds the lock."""
        _fs.check_home(self._home)
        try:
            data, st = _fs.read_private_file_identified(self.path, max_size=MAX_STORE_FILE, check=_check_size)
        except FileNotFoundError:
            raise StoreError(f"no fr-pbd store in {self._home}; "
                             f"{_fs.START_HINT.format(home=self._home)}") from None
        opened = open_bytes(data, self._provider)
        try:
            self._provider.check_fresh(_wrapped_of(opened.header), opened.state.generation)  # rollback (TPM counter)
        except BaseException:
            hardening.release(opened.dek)
            raise
        return opened, _fs.identity_of(st, data[:len(opened.header_bytes) + fmt.NONCE_LEN])

    def read(self) -> StoreView:
        """A decrypted, read-only snapshot (shared lock while reading)."""
        with _fs.file_lock(self._lock_path(), exclusive=False):
            opened, ident = self._load()
        hardening.release(opened.dek)  # a snapshot needs no key
        self._claims = (ident, ClaimsView(opened.state))
        return StoreView(opened.state)

    def claims(self) -> ClaimsView:
        """Enrolled names, uid bindings and lockouts: what a verification checks before it takes a frame.

        Served from memory while the store file is the version it was read from, checked
        on every call under the shared lock: same device, inode, size, mtime and ctime
        (``fstat``), and the same header and nonce (the first bytes, re-read; the nonce is
        drawn afresh on every write). Any write (a transaction here or in another process,
        ``keys migrate``, ``unenroll``, ``erase``, a restored copy) changes them, and then
        the file is read, authenticated and decrypted in full, as :meth:`read` does. Holds
        no template and no secret (:class:`~fr_pbd.store.transaction.ClaimsView`). A
        decision never rests on it alone: the transaction that counts an attempt re-reads
        the file under the exclusive lock and checks the claim and the lockout again.
        """
        with _fs.file_lock(self._lock_path(), exclusive=False):
            cached = self._claims
            if cached is not None and _fs.file_identity(self.path, len(cached[0][5])) == cached[0]:
                return cached[1]
            opened, ident = self._load()
        hardening.release(opened.dek)
        view = ClaimsView(opened.state)
        self._claims = (ident, view)
        return view

    def _remember(self, state: StoreState, head: bytes) -> None:
        """After a write, under the exclusive lock: the new version's claims, if the file is what was written."""
        ident = _fs.file_identity(self.path, len(head))
        self._claims = (ident, ClaimsView(state)) if ident is not None and ident[5] == head else None

    def _lock_path(self) -> Path:
        _fs.check_home(self._home)
        return self._home / LOCK_FILE

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[Opened]:
        with self._exclusive_identified() as (loaded, _ident):
            yield loaded

    @contextlib.contextmanager
    def _exclusive_identified(self) -> Iterator[tuple[Opened, _fs.Identity]]:
        with _fs.file_lock(self._lock_path(), exclusive=True):
            loaded, ident = self._load()
            try:
                self._provider.after_open(loaded.header.key_id)
                _fs.remove_stale_temps(self._home)
                yield loaded, ident
            finally:
                hardening.release(loaded.dek)  # overwritten when the transaction ends, whatever happened

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """``with store.transaction() as tx:`` re-reads under an exclusive lock, writes on success.

        The lock is held for the whole block; keep it short (do not run the
        face model inside it unless you mean to serialise verifications).
        """
        with self._exclusive_identified() as ((hbytes, header, dek, state), ident):
            tx = Transaction(state)
            try:
                yield tx
                if tx._dirty:
                    state.generation += 1
                    self._claims = None  # from here on the file may be either version: read it in full
                    head = _write(self._home, hbytes, dek, state)
                    self._provider.committed(_wrapped_of(header), state.generation)
                    self._remember(state, head)
                else:
                    self._claims = (ident, ClaimsView(state))
            finally:
                tx._open = False

    # -- one-operation conveniences --------------------------------------------
    def record_consent(self, user: str, *, text_version: str, device_id: str, time: datetime | None = None) -> ConsentRecord:
        with self.transaction() as tx:
            return tx.record_consent(user, text_version=text_version, device_id=device_id, time=time)

    def add_templates(self, user: str, templates: Iterable[Template]) -> int:
        with self.transaction() as tx:
            return tx.add_templates(user, templates)

    def remove_user(self, user: str) -> bool:
        """Withdraw ``user``: delete the templates, consent record and lockout, and re-key, in one write.

        The store is written under a fresh data key, a fresh key-encryption key
        and a fresh template rotation and store id (:meth:`renew`), so a copy of
        the store taken before the withdrawal no longer opens with the current
        key file (a passphrase store: see docs/store-format.md, section 5).
        False (nothing written) if there is no such user.
        """
        return self._rewrite(None, renew=True, change=lambda state: state.users.pop(user, None) is not None)

    def set_fallback(self, secret: str) -> None:
        """Set or replace the fallback credential. The CLI and the API ask for the current one first
        (:meth:`fr_pbd.verify.Verifier.set_fallback`)."""
        with self.transaction() as tx:
            tx.set_fallback(secret)

    def fallback_attempt(self, secret: str, now: datetime | None = None) -> str:
        """One rate-limited entry of the fallback PIN: ``"accepted"``, ``"wrong"`` or ``"locked"``.

        The attempt is counted as a failure under the exclusive lock *before* the
        comparison (so no number of parallel entries compares more than the
        attempts left: 5, then one per lock period of 30 s doubling), and the
        count is cleared only when the entry is right; a right entry also clears
        every face lockout. While locked nothing is compared. A face success
        never clears this counter.
        """
        normalise_secret(secret)  # TypeError before anything is counted
        with self.transaction() as tx:
            lock = tx.fallback_lockout
            if lock.is_locked(now):
                return "locked"
            tx.set_fallback_lockout(lock.after_failure(now))
            record = tx._st().fallback
        if not _compare_fallback(record, secret):
            return "wrong"
        with self.transaction() as tx:
            tx.set_fallback_lockout(LockoutState())
            tx.reset_face_lockouts()
        return "accepted"

    def check_fallback(self, secret: str) -> bool:
        """:meth:`fallback_attempt` is ``"accepted"``: rate limited, counted, clears lockouts when right."""
        return self.fallback_attempt(secret) == "accepted"

    # -- keys -------------------------------------------------------------------
    def rotate_key(self, new_provider: KeyProvider | None = None) -> None:
        """Fresh data key and fresh KEK, re-encrypt. ``new_provider`` switches provider (or passphrase).

        With the device-file provider a new key file is staged, the store is
        written with it, then the new key replaces (and overwrites) the old one.
        Switching provider destroys the old provider's key material afterwards.
        """
        self._rewrite(new_provider, renew=False)

    def renew(self, new_provider: KeyProvider | None = None) -> None:
        """:meth:`rotate_key` plus a new rotation and a new store id (ISO/IEC 24745 renewal).

        Every stored template is re-protected with ``R_new @ R_old.T``: match
        decisions are unchanged, and templates leaked from the old store no
        longer link to the new one.
        """
        self._rewrite(new_provider, renew=True)

    def _rewrite(self, new_provider: KeyProvider | None, *, renew: bool,
                 change: Callable[[StoreState], bool] | None = None) -> bool:
        """Re-key (and with ``renew`` re-protect); ``change`` edits the state first (False: write nothing)."""
        target_owner = check_provider(new_provider if new_provider is not None else self._provider)
        with self._exclusive() as (_hbytes, _header, _dek, state):
            if change is not None and not change(state):
                return False
            self._claims = None
            if renew:
                protection.renew(state)
            change = migration.begin(self._home, _header, state.generation, self._provider, target_owner)
            staged = target_owner.begin_rotation()
            dek = new_dek()
            try:
                state.generation += 1
                wrapped = staged.bind(staged.wrap(dek), state.generation)
                _write(self._home, make_header(state, wrapped).encode(), dek, state)
            except BaseException:
                staged.abort_rotation()
                raise
            finally:
                hardening.release(dek)
            staged.commit_rotation()
            staged.committed(wrapped, state.generation)
            if not self._provider.same_key_material(target_owner):
                self._provider.destroy()
            self._provider = target_owner
            change.end()
        return True


_CONSTRUCT = object()


def stored_provider_id(home: str | os.PathLike[str]) -> int | None:
    """The provider id in the header of ``home``'s store (None: no store, or no readable header).

    A hint to pick the provider; the store re-reads and authenticates everything under its lock.
    """
    try:
        with open(Path(home) / STORE_FILE, "rb") as f:
            head = f.read(fmt.MAX_HEADER_LEN)
    except OSError:
        return None
    try:
        return fmt.parse_header(head)[0].provider_id
    except StoreError:
        return None


def provider_for(home: str | os.PathLike[str]) -> KeyProvider:
    """The provider that opens ``home``'s store by default: the one its header names.

    A TPM store gets :class:`~fr_pbd.store.tpm.TpmKeyProvider` on the transport of
    ``$FR_PBD_TPM`` / ``tpm`` in config.toml; anything else the device key file (which
    refuses a passphrase store with WrongKeyError: the caller must give the passphrase).
    """
    if stored_provider_id(home) == fmt.PROVIDER_TPM2:
        from fr_pbd.store.tpm import TpmKeyProvider

        return TpmKeyProvider.for_home(home)
    return DeviceFileKeyProvider.default(home)


def _wrapped_of(header: fmt.Header) -> WrappedKey:
    return WrappedKey(header.provider_id, header.provider_params, header.key_id, header.wrapped_dek)


def _check_size(fd: int, st: os.stat_result) -> None:
    """Before the body is read: the header parses and the file's size is one the format writes."""
    header_bytes = os.pread(fd, fmt.MAX_HEADER_LEN, 0)
    _header, hlen = fmt.parse_header(header_bytes)
    fmt.check_body_length(st.st_size - hlen)


def _write(home: Path, header_bytes: bytes, dek: bytes, state: StoreState) -> bytes:
    """Seal and durably replace the store file; returns its first bytes (header and nonce: the file's identity).

    A full disk, a read-only home or an I/O error raises StorageError and leaves the old file as it was.
    """
    data = seal(header_bytes, dek, state)
    if len(data) > MAX_STORE_FILE:
        raise StoreError(f"the store in {home} would exceed {MAX_STORE_BUCKET >> 20} MiB; unenrol someone first")
    fileio.atomic_write(home / STORE_FILE, data)
    return data[:len(header_bytes) + fmt.NONCE_LEN]


# tests/test_fuzz.py imports these by their names from before the split (store.py held
# the codec and the envelope); drop once it imports them from envelope/records.
_open_bytes = open_bytes
_State = StoreState
