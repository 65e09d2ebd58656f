"""Key providers: where the key-encryption key (KEK) comes from.

The store's payload is encrypted with a random 256-bit data key (DEK). The DEK
is stored in the store header *wrapped* (RFC 3394 AES key wrap) by a KEK that a
:class:`KeyProvider` controls. A provider never hands its KEK out: it only
wraps and unwraps DEKs, so a hardware provider (a TPM 2.0 that seals the DEK,
or a secure element) can implement the same interface later without the KEK
ever entering process memory.

Three providers ship:

* :class:`DeviceFileKeyProvider` (the default): a 256-bit random KEK in a key
  file (mode 0600) inside a directory (mode 0700), separate from the store file,
  by default ``$home/keys/kek``. A copy of the disk holds both: it reveals the
  templates.
* :class:`PassphraseKeyProvider`: the KEK is derived from a passphrase with
  scrypt (N = 2**17, r = 8, p = 1, the OWASP minimum; readers refuse anything
  weaker), with a fresh random 128-bit salt kept in the store header.
* :class:`fr_pbd.store.tpm.TpmKeyProvider`: the data key is sealed by a TPM 2.0
  under its storage root key, which never leaves the TPM; the store's generation
  is bound to a TPM NV counter (rollback protection). ``docs/tpm.md``.

:func:`fr_pbd.store.store.provider_for` picks the provider a store's header names.

There are no knobs: no cipher choice, no KDF cost parameter, no nonce.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import hmac
import os
import struct
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from fr_pbd import fileio
from fr_pbd.errors import KeyProviderError, StoreError, WrongKeyError
from fr_pbd.store import _format as fmt
from fr_pbd.store import _fs

__all__ = [
    "KeyProvider",
    "WrappedKey",
    "DeviceFileKeyProvider",
    "PassphraseKeyProvider",
    "superseded_key_files",
]

KEY_LEN = 32
_KEY_ID_LABEL = b"fr-pbd/v1/key-id"
_KEYFILE_MAGIC = b"FRPBDKEK"
_KEYFILE_VERSION = 1
_KEYFILE_LEN = len(_KEYFILE_MAGIC) + 4 + KEY_LEN
# Store defaults are the minimums: raising them later needs no format change.
_SCRYPT_LOG2_N = fmt.SCRYPT_MIN_LOG2_N
_SCRYPT_R = fmt.SCRYPT_MIN_R
_SCRYPT_P = fmt.SCRYPT_MIN_P
MIN_PASSPHRASE_LEN = 8


def key_id_of(kek: bytes) -> bytes:
    """Public 128-bit identifier of a KEK: HMAC-SHA256(KEK, label), truncated.

    Lets a reader tell "wrong key" from "damaged store" before decrypting,
    without revealing anything about the KEK (a PRF output under a 256-bit key).
    """
    return hmac.new(kek, _KEY_ID_LABEL, hashlib.sha256).digest()[: fmt.KEY_ID_LEN]


def scrypt_derive(secret: bytes, params: fmt.ScryptParams) -> bytes:
    """scrypt with parameters that have been checked against the minimums."""
    if not params.acceptable():
        raise KeyProviderError("key-derivation parameters below the accepted minimum")
    kdf = Scrypt(salt=params.salt, length=KEY_LEN, n=1 << params.log2_n, r=params.r, p=params.p)
    return kdf.derive(secret)


def normalise_secret(secret: str) -> bytes:
    if not isinstance(secret, str):
        raise TypeError("a passphrase or PIN must be a str")
    return unicodedata.normalize("NFC", secret).encode("utf-8")


@dataclass(frozen=True)
class WrappedKey:
    """The header fields a provider writes: who wraps, its public parameters, key id, wrapped DEK."""

    provider_id: int
    params: bytes
    key_id: bytes
    wrapped: bytes = field(repr=False)


class KeyProvider(abc.ABC):
    """Abstract source of the KEK. Subclasses wrap/unwrap 256-bit data keys.

    Contract for implementers (e.g. a future ``TpmKeyProvider``):

    * :meth:`wrap` wraps a DEK under this provider's *current* KEK, creating key
      material if none exists yet, and returns the header fields.
    * :meth:`unwrap` returns the DEK or raises :class:`~fr_pbd.errors.WrongKeyError`
      (this is not the key of that store) / :class:`~fr_pbd.errors.KeyProviderError`
      (key unavailable). It must not modify anything.
    * Rotation: :meth:`begin_rotation` returns a provider that wraps under a
      *fresh* KEK; after the store has been durably written with that wrap, the
      store calls ``commit_rotation()`` on it (or ``abort_rotation()`` if the
      write failed). :meth:`destroy` crypto-shreds this provider's key material.
    * Never log, repr, or put key material in an exception message.
    """

    provider_id: ClassVar[int]
    #: True iff opening refuses a stale copy of the store (a hardware monotonic counter).
    rollback_protection: ClassVar[bool] = False
    #: The home whose store this provider opens, once known (custody lines check it for superseded key files).
    _home: Path | None = None

    def attach_home(self, home: str | os.PathLike[str]) -> None:
        """Note the home this provider opens (the store does it on open; :func:`provider_for` too)."""
        self._home = Path(home)

    @abc.abstractmethod
    def wrap(self, dek: bytes) -> WrappedKey: ...

    def custody(self) -> str:
        """One line: where the key-encryption key is, what a copy of the disk gives a thief."""
        return "a key provider supplied by the caller"

    # -- rollback hooks (the store calls them; no-ops without a monotonic counter) --------
    def bind(self, wrapped: WrappedKey, generation: int) -> WrappedKey:
        """Before a new header is written with store generation ``generation``: add a counter binding."""
        return wrapped

    def check_fresh(self, wrapped: WrappedKey, generation: int) -> None:
        """After a store opened: raise StaleStoreError if this copy is older than the counter."""
        return None

    def committed(self, wrapped: WrappedKey, generation: int) -> None:
        """After a write of ``generation`` is durable: advance the counter to it."""
        return None

    @abc.abstractmethod
    def unwrap(self, wrapped: WrappedKey) -> bytes: ...

    def begin_rotation(self) -> "KeyProvider":
        return self

    def commit_rotation(self) -> None:
        return None

    def abort_rotation(self) -> None:
        return None

    def destroy(self) -> None:
        """Crypto-shred the key material this provider owns (no-op if it owns none)."""
        return None

    def same_key_material(self, other: "KeyProvider") -> bool:
        """True iff ``other`` uses the same key material (so rotation must not destroy it)."""
        return other is self

    def after_open(self, key_id: bytes) -> None:
        """Hook called with the exclusive lock held after the store opened: finish or clean up."""
        return None

    def reserve_with(self, record: Callable[[int, bytes], None] | None) -> None:
        """Before :meth:`bind` creates key material outside the store (a TPM NV counter), it calls
        ``record(handle, auth)``, which makes that durable in the migration journal
        (:mod:`fr_pbd.store.migration`) so that a crash can undo it. None: stop recording."""
        return None

    def pending(self) -> bool:
        """True if the last open found a write this provider has not finished (a TPM counter behind the
        store after a crash between the write and :meth:`committed`)."""
        return False

    def __reduce__(self):
        raise TypeError("key providers hold key material and cannot be pickled")


def check_provider(p: object) -> KeyProvider:
    """``p`` itself, if it is a :class:`KeyProvider` (TypeError otherwise)."""
    if not isinstance(p, KeyProvider):
        raise TypeError("key_provider must be a fr_pbd.store.KeyProvider")
    return p


PROVIDER_NAMES = {fmt.PROVIDER_DEVICE_FILE: "a key file", fmt.PROVIDER_PASSPHRASE: "a passphrase",
                  fmt.PROVIDER_TPM2: "a TPM 2.0"}


def superseded_key_files(home: str | os.PathLike[str]) -> list[Path]:
    """The device-file provider's key files in ``home`` (``keys/kek``, ``keys/kek.next``) that exist.

    For a store whose header names another provider each one is superseded: it opens the older
    copies of the store that were wrapped under it (the store before a ``keys migrate``), never the
    current one. The migration journal removes them (:mod:`fr_pbd.store.migration`); until then no
    custody line may claim that the TPM or a passphrase alone holds the key. Existence only: a file
    at those names is counted whatever it holds (nothing is read, no key enters memory).
    """
    keys = Path(home) / "keys"
    return [p for p in (keys / "kek", keys / "kek.next") if os.path.lexists(p)]


def protected_by(provider_id: int) -> str:
    return PROVIDER_NAMES.get(provider_id, f"unknown key provider {provider_id}")


def _aes_wrap(kek: bytes, dek: bytes) -> bytes:
    if len(dek) != KEY_LEN:
        raise ValueError("a data key is 32 bytes")
    return aes_key_wrap(kek, dek)


def _aes_unwrap(kek: bytes, wrapped: bytes, what: str) -> bytes:
    try:
        dek = aes_key_unwrap(kek, wrapped)
    except (InvalidUnwrap, ValueError):
        raise WrongKeyError(f"{what} does not open this store") from None
    if len(dek) != KEY_LEN:
        raise WrongKeyError(f"{what} does not open this store")
    return dek


# --------------------------------------------------------------------------------------
# device file
# --------------------------------------------------------------------------------------
def _encode_keyfile(kek: bytes) -> bytes:
    return _KEYFILE_MAGIC + struct.pack("<HH", _KEYFILE_VERSION, 0) + kek


def _decode_keyfile(raw: bytes, path: Path) -> bytes:
    if len(raw) != _KEYFILE_LEN or raw[: len(_KEYFILE_MAGIC)] != _KEYFILE_MAGIC:
        raise KeyProviderError(f"{path} is not an fr-pbd key file")
    version, reserved = struct.unpack_from("<HH", raw, len(_KEYFILE_MAGIC))
    if version != _KEYFILE_VERSION or reserved != 0:
        raise KeyProviderError(f"{path} has an unsupported key file version")
    return raw[len(_KEYFILE_MAGIC) + 4 :]


class DeviceFileKeyProvider(KeyProvider):
    """KEK = 256 random bits in a key file (0600) inside a private directory (0700).

    ``DeviceFileKeyProvider(path)``: the key file lives at ``path``; its parent
    directory must exist or be creatable (one level) and is kept at 0700.
    :meth:`default` gives ``$home/keys/kek``. The key file is created on the
    first :meth:`wrap` and is never overwritten; rotation stages a new key in
    ``<path>.next`` and swaps it in only after the store was written with it.
    For more protection put the key on another medium than the store.
    """

    provider_id = fmt.PROVIDER_DEVICE_FILE

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)

    @classmethod
    def default(cls, home: str | os.PathLike[str]) -> "DeviceFileKeyProvider":
        return cls(Path(home) / "keys" / "kek")

    @property
    def path(self) -> Path:
        return self._path

    @property
    def _next(self) -> Path:
        return self._path.with_name(self._path.name + ".next")

    def __repr__(self) -> str:
        return f"DeviceFileKeyProvider(path={str(self._path)!r})"

    def custody(self) -> str:
        return (f"key file {self._path} on the same machine (software only): a copy of the disk reveals the "
                "templates; rollback (restoring an older store) is not detected")

    def _load(self, path: Path) -> bytes:
        _fs.check_private(path.parent, directory=True)
        raw = _fs.read_private_file(path, max_size=_KEYFILE_LEN)
        return _decode_keyfile(raw, path)

    def _load_or_create(self) -> bytes:
        try:
            return self._load(self._path)
        except FileNotFoundError:
            pass
        _fs.ensure_private_dir(self._path.parent)
        try:
            fileio.atomic_create(self._path, _encode_keyfile(os.urandom(KEY_LEN)))
        except FileExistsError:
            pass  # another process won the race: use its key
        return self._load(self._path)

    def wrap(self, dek: bytes) -> WrappedKey:
        kek = self._load_or_create()
        return WrappedKey(self.provider_id, b"", key_id_of(kek), _aes_wrap(kek, dek))

    def _candidates(self) -> list[bytes]:
        """The key, and a staged rotation key if one is pending (crash between steps)."""
        keys = []
        try:
            _fs.check_private(self._path.parent, directory=True)
        except FileNotFoundError:
            raise KeyProviderError(f"the key directory {self._path.parent} is missing") from None
        for p in (self._path, self._next):
            try:
                keys.append(self._load(p))
            except FileNotFoundError:
                continue
            except KeyProviderError:
                if p == self._path and not self._next.exists():
                    raise
        if not keys:
            raise KeyProviderError(f"the key file {self._path} is missing")
        return keys

    def unwrap(self, wrapped: WrappedKey) -> bytes:
        if wrapped.provider_id != self.provider_id:
            raise WrongKeyError(f"this store is protected by {protected_by(wrapped.provider_id)}, not a key file")
        for kek in self._candidates():
            if hmac.compare_digest(key_id_of(kek), wrapped.key_id):
                return _aes_unwrap(kek, wrapped.wrapped, "the key file")
        raise WrongKeyError(f"the key file {self._path} does not belong to this store")

    def after_open(self, key_id: bytes) -> None:
        # Finish a rotation interrupted after the store write, or drop a stale staged key.
        try:
            staged = self._load(self._next)
        except (FileNotFoundError, KeyProviderError):
            if self._next.exists():
                _fs.shred_file(self._next)
            return
        if hmac.compare_digest(key_id_of(staged), key_id):
            _StagedDeviceKey(self, staged).commit_rotation()
        else:
            _fs.shred_file(self._next)

    def begin_rotation(self) -> KeyProvider:
        _fs.ensure_private_dir(self._path.parent)
        if self._next.exists():
            _fs.shred_file(self._next)
        kek = os.urandom(KEY_LEN)
        fileio.atomic_create(self._next, _encode_keyfile(kek))
        return _StagedDeviceKey(self, kek)

    def destroy(self) -> None:
        for p in (self._next, self._path):
            with contextlib.suppress(FileNotFoundError):
                _fs.shred_file(p)
        with contextlib.suppress(OSError):
            os.rmdir(self._path.parent)  # only if empty

    def same_key_material(self, other: KeyProvider) -> bool:
        if isinstance(other, _StagedDeviceKey):
            other = other._owner
        return isinstance(other, DeviceFileKeyProvider) and os.path.abspath(other._path) == os.path.abspath(self._path)


class _StagedDeviceKey(KeyProvider):
    """A fresh KEK written to ``<path>.next``, swapped in by :meth:`commit_rotation`."""

    provider_id = fmt.PROVIDER_DEVICE_FILE

    def __init__(self, owner: DeviceFileKeyProvider, kek: bytes) -> None:
        self._owner = owner
        self._kek = kek

    def __repr__(self) -> str:
        return f"_StagedDeviceKey(path={str(self._owner.path)!r})"

    def wrap(self, dek: bytes) -> WrappedKey:
        return WrappedKey(self.provider_id, b"", key_id_of(self._kek), _aes_wrap(self._kek, dek))

    def unwrap(self, wrapped: WrappedKey) -> bytes:
        return self._owner.unwrap(wrapped)

    def commit_rotation(self) -> None:
        path, nxt = self._owner.path, self._owner._next
        # Overwrite the old key in place first (best effort on flash), then rename the
        # staged key (already durable) over it: no further copy of a KEK is written.
        with contextlib.suppress(FileNotFoundError):
            _fs.overwrite(path, os.urandom(_KEYFILE_LEN))
        fileio.durable_rename(nxt, path)

    def abort_rotation(self) -> None:
        _fs.shred_file(self._owner._next)

    def same_key_material(self, other: KeyProvider) -> bool:
        return self._owner.same_key_material(other)


# --------------------------------------------------------------------------------------
# passphrase
# --------------------------------------------------------------------------------------
class PassphraseKeyProvider(KeyProvider):
    """KEK = scrypt(passphrase, salt), N = 2**17, r = 8, p = 1; the salt is in the header.

    The passphrase must have at least 8 characters (NIST SP 800-63B); it is
    NFC-normalised and UTF-8 encoded. A fresh salt is drawn at every
    :meth:`wrap` (creation, key rotation). Readers refuse headers with weaker
    parameters. A wrong passphrase raises :class:`~fr_pbd.errors.WrongKeyError`.
    Derived KEKs are cached in this object (one derivation per store open).
    """

    provider_id = fmt.PROVIDER_PASSPHRASE

    def __init__(self, passphrase: str) -> None:
        secret = normalise_secret(passphrase)
        if len(unicodedata.normalize("NFC", passphrase)) < MIN_PASSPHRASE_LEN:
            raise ValueError(f"a store passphrase needs at least {MIN_PASSPHRASE_LEN} characters")
        self._secret = secret
        self._cache: dict[bytes, bytes] = {}

    def __repr__(self) -> str:
        return "PassphraseKeyProvider(<hidden>)"

    def custody(self) -> str:
        left = superseded_key_files(self._home) if self._home is not None else []
        if left:
            return (f"derived from a passphrase (scrypt), BUT the key file {', '.join(map(str, left))} of the "
                    "store's earlier key custody is still there and opens every older copy of this store (an "
                    "interrupted key migration); the next fr-pbd command that can write the home removes it")
        return ("derived from a passphrase (scrypt): a copy of the disk is only as safe as the passphrase is hard "
                "to guess; rollback (restoring an older store) is not detected")

    def _derive(self, params: fmt.ScryptParams) -> bytes:
        enc = params.encode()
        kek = self._cache.get(enc)
        if kek is None:
            kek = scrypt_derive(self._secret, params)
            self._cache = {enc: kek}  # keep only the latest
        return kek

    def wrap(self, dek: bytes) -> WrappedKey:
        params = fmt.ScryptParams(_SCRYPT_LOG2_N, _SCRYPT_R, _SCRYPT_P, os.urandom(16))
        kek = self._derive(params)
        return WrappedKey(self.provider_id, params.encode(), key_id_of(kek), _aes_wrap(kek, dek))

    def unwrap(self, wrapped: WrappedKey) -> bytes:
        if wrapped.provider_id != self.provider_id:
            raise WrongKeyError(f"this store is protected by {protected_by(wrapped.provider_id)}, not a passphrase")
        try:
            params = fmt.ScryptParams.decode(wrapped.params)
        except StoreError as e:  # parameters out of range: refuse before deriving
            raise KeyProviderError(str(e)) from None
        kek = self._derive(params)
        if not hmac.compare_digest(key_id_of(kek), wrapped.key_id):
            raise WrongKeyError("wrong passphrase for this store")
        return _aes_unwrap(kek, wrapped.wrapped, "the passphrase")

    def same_key_material(self, other: KeyProvider) -> bool:
        return isinstance(other, PassphraseKeyProvider) and hmac.compare_digest(other._secret, self._secret)
