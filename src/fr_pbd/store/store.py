"""The encrypted template store: one file, AES-256-GCM, a wrapped data key, protected templates.

See :mod:`fr_pbd.store` for the public API overview and ``docs/store-format.md``
for the format and threat model.
"""

from __future__ import annotations

import contextlib
import hmac
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fr_pbd.errors import ConsentError, StoreError, StoreIntegrityError
from fr_pbd.match import Gallery
from fr_pbd.store import _format as fmt
from fr_pbd.store import _fs
from fr_pbd.store.keys import (
    DeviceFileKeyProvider,
    KeyProvider,
    WrappedKey,
    normalise_secret,
    scrypt_derive,
)
from fr_pbd.template import Template

__all__ = [
    "Store",
    "StoreView",
    "Transaction",
    "ConsentRecord",
    "LockoutState",
    "ProtectedMatcher",
    "erase",
    "STORE_FILE",
    "LOCK_FILE",
]

STORE_FILE = "store.frpbd"
LOCK_FILE = "store.lock"
DEK_LEN = 32
MIN_FALLBACK_LEN = 4
_TIME_FMT = "%Y-%m-%dT%H:%M:%SZ"
_MAX_FILE = fmt.MAX_HEADER_LEN + fmt.NONCE_LEN + fmt.MAX_BUCKET + fmt.TAG_LEN


# --------------------------------------------------------------------------------------
# small value types
# --------------------------------------------------------------------------------------
def _utc(t: datetime | None, *, ceil: bool = False) -> datetime:
    if t is None:
        t = datetime.now(timezone.utc)
    if not isinstance(t, datetime) or t.tzinfo is None:
        raise ValueError("times must be timezone-aware datetimes")
    t = t.astimezone(timezone.utc)
    whole = t.replace(microsecond=0)
    if ceil and whole != t:
        whole += timedelta(seconds=1)
    return whole


def _fmt_time(t: datetime) -> str:
    return t.strftime(_TIME_FMT)


def _parse_time(s: str) -> datetime:
    return datetime.strptime(s, _TIME_FMT).replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class ConsentRecord:
    """An explicit, recorded opt-in: who, when (UTC, whole seconds), which consent text, on which device."""

    user: str
    time: datetime
    text_version: str
    device_id: str


@dataclass(frozen=True)
class LockoutState:
    """Per-store lockout state; the policy (5 failures, 30 s doubling) is the verifier's.

    ``failures``: consecutive failed face attempts. ``locked_until``: UTC time
    until which face verification is refused, or ``None``. Stored with whole
    seconds, rounded *up* so that storing never shortens a lock.
    """

    failures: int = 0
    locked_until: datetime | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.failures, int) or isinstance(self.failures, bool) or not 0 <= self.failures < 2**31:
            raise ValueError("failures must be an int in [0, 2**31)")
        if self.locked_until is not None:
            object.__setattr__(self, "locked_until", _utc(self.locked_until, ceil=True))

    def is_locked(self, now: datetime | None = None) -> bool:
        return self.locked_until is not None and _utc(now) < self.locked_until


# --------------------------------------------------------------------------------------
# template protection (ISO/IEC 24745): a secret random rotation
# --------------------------------------------------------------------------------------
def _random_rotation(d: int) -> np.ndarray:
    """Haar-random orthonormal D x D matrix from the OS CSPRNG (Box-Muller, QR, sign fix).

    The Gaussians come straight from ``os.urandom`` (no seeded PRNG whose state
    could be recovered), and the matrix itself is stored (numpy's distribution
    algorithms are not stable across versions, a seed would not be).
    """
    m = (d * d + 1) // 2
    raw = np.frombuffer(os.urandom(16 * m), dtype="<u8").reshape(2, m)
    u1 = 1.0 - (raw[0] >> np.uint64(11)).astype(np.float64) * 2.0**-53  # (0, 1]
    u2 = (raw[1] >> np.uint64(11)).astype(np.float64) * 2.0**-53
    rad = np.sqrt(-2.0 * np.log(u1))
    g = np.concatenate([rad * np.cos(2 * np.pi * u2), rad * np.sin(2 * np.pi * u2)])[: d * d].reshape(d, d)
    q, r = np.linalg.qr(g)
    s = np.sign(np.diag(r))
    s[s == 0] = 1.0
    return np.ascontiguousarray(q * s[None, :])


def _protect_rows(x: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Rotate unit row vectors: x @ R.T, renormalised, float32."""
    y = np.asarray(x, dtype=np.float64) @ rotation.T
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    return np.ascontiguousarray(y, dtype=np.float32)


class ProtectedMatcher:
    """Matches *raw* probe templates against the store's *protected* gallery; answers only bool.

    Obtained from :meth:`StoreView.matcher`. It applies the store's secret
    rotation to the probe, then scores the whole gallery (no early exit; see
    :meth:`fr_pbd.match.Gallery.matches`). It exposes no score, no template and
    no rotation.
    """

    __slots__ = ("_gallery", "_rotation", "_model_id")

    def __init__(self, gallery: Gallery, rotation: np.ndarray, model_id: str) -> None:
        self._gallery = gallery
        self._rotation = rotation
        self._model_id = model_id

    @property
    def users(self) -> tuple[str, ...]:
        """Users with at least one template."""
        return self._gallery.users

    @property
    def model_id(self) -> str:
        return self._model_id

    def __repr__(self) -> str:
        return f"ProtectedMatcher(users={len(self._gallery.users)}, model_id={self._model_id!r})"

    def __reduce__(self):
        raise TypeError("a matcher holds biometric data and cannot be pickled")

    def matches(self, probe: Template, threshold: float, user: str | None = None) -> bool:
        """True iff ``probe`` matches any enrolled user (or the claimed ``user``) at ``threshold``.

        Raises StoreError if the probe comes from another model than the store's.
        """
        if not isinstance(probe, Template):
            raise TypeError("probe must be a fr_pbd.template.Template")
        if probe.model_id != self._model_id or probe.dim != self._rotation.shape[0]:
            raise StoreError("the probe template comes from another model than the store's templates")
        q = _protect_rows(probe.vector[None, :], self._rotation)[0]
        return self._gallery.matches(q, threshold, user)


# --------------------------------------------------------------------------------------
# in-memory state
# --------------------------------------------------------------------------------------
@dataclass
class _User:
    consent: ConsentRecord
    templates: np.ndarray  # (n, D) float32, protected


class _State:
    __slots__ = ("store_id", "model_id", "dim", "generation", "users", "fallback", "lockout", "rotation")

    def __init__(self, store_id, model_id, dim, generation, users, fallback, lockout, rotation) -> None:
        self.store_id: bytes = store_id
        self.model_id: str = model_id
        self.dim: int = dim
        self.generation: int = generation
        self.users: dict[str, _User] = users
        self.fallback: dict | None = fallback
        self.lockout: LockoutState = lockout
        self.rotation: np.ndarray = rotation

    @classmethod
    def new(cls, model_id: str, dim: int) -> "_State":
        return cls(os.urandom(fmt.STORE_ID_LEN), model_id, dim, 0, {}, None, LockoutState(), _random_rotation(dim))

    @classmethod
    def decode(cls, payload: bytes, header: fmt.Header) -> "_State":
        meta, rotation, templates = fmt.decode_payload(payload)
        if meta["model_id"] != header.model_id or bytes.fromhex(meta["store_id"]) != header.store_id:
            raise StoreIntegrityError("the store payload does not belong to its header")
        users: dict[str, _User] = {}
        row = 0
        for u in meta["users"]:
            n = u["templates"]
            c = u["consent"]
            rec = ConsentRecord(u["name"], _parse_time(c["time"]), c["text_version"], c["device_id"])
            t = templates[row : row + n]
            t.setflags(write=False)
            users[u["name"]] = _User(rec, t)
            row += n
        lo = meta["lockout"]
        until = None if lo["locked_until"] is None else _parse_time(lo["locked_until"])
        rotation.setflags(write=False)
        return cls(
            header.store_id,
            header.model_id,
            meta["dim"],
            meta["generation"],
            users,
            meta["fallback"],
            LockoutState(lo["failures"], until),
            rotation,
        )

    def encode(self) -> bytes:
        names = sorted(self.users)
        meta = {
            "format": fmt.FORMAT_VERSION,
            "model_id": self.model_id,
            "store_id": self.store_id.hex(),
            "dim": self.dim,
            "generation": self.generation,
            "users": [
                {
                    "name": n,
                    "templates": int(self.users[n].templates.shape[0]),
                    "consent": {
                        "time": _fmt_time(self.users[n].consent.time),
                        "text_version": self.users[n].consent.text_version,
                        "device_id": self.users[n].consent.device_id,
                    },
                }
                for n in names
            ],
            "fallback": self.fallback,
            "lockout": {
                "failures": self.lockout.failures,
                "locked_until": None if self.lockout.locked_until is None else _fmt_time(self.lockout.locked_until),
            },
        }
        if names:
            tpl = np.concatenate([self.users[n].templates for n in names], axis=0)
        else:
            tpl = np.zeros((0, self.dim), dtype=np.float32)
        return fmt.encode_payload(meta, self.rotation, tpl)


# --------------------------------------------------------------------------------------
# views and transactions
# --------------------------------------------------------------------------------------
class StoreView:
    """A read-only, decrypted snapshot of the store (taken under a shared lock).

    Holds no key. Exposes no template and no rotation: only counts, consent
    records, lockout state, the fallback check, and a :class:`ProtectedMatcher`.
    """

    def __init__(self, state: _State) -> None:
        self._state = state
        self._open = True

    def _st(self) -> _State:
        if not self._open:
            raise StoreError("this transaction is closed; open a new one")
        return self._state

    def __repr__(self) -> str:
        s = self._state
        return f"{type(self).__name__}(users={len(s.users)}, model_id={s.model_id!r})"

    def __reduce__(self):
        raise TypeError("store contents are biometric data and cannot be pickled")

    @property
    def store_id(self) -> str:
        """Random 128-bit store id (hex). Changes on :meth:`Store.renew`."""
        return self._st().store_id.hex()

    @property
    def model_id(self) -> str:
        return self._st().model_id

    @property
    def dim(self) -> int:
        return self._st().dim

    @property
    def generation(self) -> int:
        """Write counter, incremented by every committed change."""
        return self._st().generation

    @property
    def users(self) -> tuple[str, ...]:
        """Users with a consent record (with or without templates), sorted."""
        return tuple(sorted(self._st().users))

    def template_count(self, user: str) -> int:
        u = self._st().users.get(user)
        return 0 if u is None else int(u.templates.shape[0])

    def consent(self, user: str) -> ConsentRecord | None:
        u = self._st().users.get(user)
        return None if u is None else u.consent

    @property
    def lockout(self) -> LockoutState:
        return self._st().lockout

    @property
    def has_fallback(self) -> bool:
        return self._st().fallback is not None

    def check_fallback(self, secret: str) -> bool:
        """Constant-time check of the fallback PIN/passphrase (scrypt, ~0.3 s). False if none is set."""
        fb = self._st().fallback
        raw = normalise_secret(secret)
        if fb is None:
            # same work as a real check, then no
            scrypt_derive(raw, fmt.ScryptParams(fmt.SCRYPT_MIN_LOG2_N, fmt.SCRYPT_MIN_R, fmt.SCRYPT_MIN_P, bytes(16)))
            return False
        params = fmt.ScryptParams(fb["log2_n"], fb["r"], fb["p"], bytes.fromhex(fb["salt"]))
        return hmac.compare_digest(scrypt_derive(raw, params), bytes.fromhex(fb["hash"]))

    def matcher(self) -> ProtectedMatcher:
        """A :class:`ProtectedMatcher` over every user's templates (users without templates are absent)."""
        st = self._st()
        names = [n for n in sorted(st.users) if st.users[n].templates.shape[0] > 0]
        counts = [int(st.users[n].templates.shape[0]) for n in names]
        if names:
            vec = np.concatenate([st.users[n].templates for n in names], axis=0)
        else:
            vec = np.zeros((0, st.dim), dtype=np.float32)
        return ProtectedMatcher(Gallery.from_counts(vec, names, counts, dim=st.dim), st.rotation, st.model_id)


class Transaction(StoreView):
    """A :class:`StoreView` that can change the store; only valid inside ``Store.transaction()``.

    Changes are written (atomically, durably) when the ``with`` block exits
    normally, and discarded if it raises. Nothing is written if nothing changed.
    """

    def __init__(self, state: _State) -> None:
        super().__init__(state)
        self._dirty = False

    def record_consent(
        self, user: str, *, text_version: str, device_id: str, time: datetime | None = None
    ) -> ConsentRecord:
        """Record (or renew) ``user``'s explicit opt-in. Existing templates are kept."""
        st = self._st()
        fmt.check_text(user, "user")
        fmt.check_text(text_version, "consent text version")
        fmt.check_text(device_id, "device id")
        rec = ConsentRecord(user, _utc(time), text_version, device_id)
        old = st.users.get(user)
        tpl = old.templates if old is not None else np.zeros((0, st.dim), dtype=np.float32)
        st.users[user] = _User(rec, tpl)
        self._dirty = True
        return rec

    def add_templates(self, user: str, templates: Iterable[Template]) -> int:
        """Protect and add ``templates`` for ``user``; return the user's new template count.

        Raises ConsentError if ``user`` has no consent record or no fallback
        credential is set; StoreError if a template comes from another model
        (model id or dimension) than the store's.
        """
        st = self._st()
        if st.fallback is None:
            raise ConsentError("set a fallback PIN or passphrase before the first enrolment")
        u = st.users.get(user)
        if u is None:
            raise ConsentError("no consent record for this user: record the opt-in before enrolling")
        tpls = list(templates)
        if not tpls:
            raise ValueError("no templates given")
        for t in tpls:
            if not isinstance(t, Template):
                raise TypeError("templates must be fr_pbd.template.Template objects")
            if t.model_id != st.model_id or t.dim != st.dim:
                raise StoreError("a template comes from another model than this store's templates")
        new = _protect_rows(np.stack([t.vector for t in tpls]), st.rotation)
        merged = np.concatenate([u.templates, new], axis=0)
        merged.setflags(write=False)
        u.templates = merged
        self._dirty = True
        return int(merged.shape[0])

    def remove_user(self, user: str) -> bool:
        """Remove ``user``'s templates and consent record (one atomic write). False if unknown."""
        st = self._st()
        if user not in st.users:
            return False
        del st.users[user]
        self._dirty = True
        return True

    def set_fallback(self, secret: str) -> None:
        """Set (or replace) the store's fallback PIN/passphrase: scrypt N=2**17, r=8, p=1, fresh salt."""
        st = self._st()
        raw = normalise_secret(secret)
        if len(secret) < MIN_FALLBACK_LEN:
            raise ValueError(f"a fallback PIN or passphrase needs at least {MIN_FALLBACK_LEN} characters")
        params = fmt.ScryptParams(fmt.SCRYPT_MIN_LOG2_N, fmt.SCRYPT_MIN_R, fmt.SCRYPT_MIN_P, os.urandom(16))
        st.fallback = {
            "kdf": "scrypt",
            "log2_n": params.log2_n,
            "r": params.r,
            "p": params.p,
            "salt": params.salt.hex(),
            "hash": scrypt_derive(raw, params).hex(),
        }
        self._dirty = True

    def set_lockout(self, state: LockoutState) -> None:
        """Replace the lockout state (written with the transaction)."""
        if not isinstance(state, LockoutState):
            raise TypeError("state must be a LockoutState")
        st = self._st()
        if state != st.lockout:
            st.lockout = state
            self._dirty = True

    def reset_lockout(self) -> None:
        self.set_lockout(LockoutState())


# --------------------------------------------------------------------------------------
# the store
# --------------------------------------------------------------------------------------
def _check_dek_not_erased(header: fmt.Header) -> None:
    if not any(header.wrapped_dek):
        raise StoreIntegrityError("this store was erased (its data key is destroyed); run erase again to finish")


class Store:
    """Handle on the encrypted store in a home directory (``$FR_PBD_HOME``).

    Get one with :meth:`create` or :meth:`open`. The handle holds the home path
    and the key provider, never decrypted data: every operation re-reads the
    file under a lock. Read with :meth:`read` (shared lock); change with
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
        provider = key_provider if key_provider is not None else DeviceFileKeyProvider.default(home)
        _check_provider(provider)
        _fs.ensure_private_dir(home)
        with _fs.file_lock(home / LOCK_FILE, exclusive=True):
            if os.path.lexists(home / STORE_FILE):
                raise StoreError(f"a store already exists in {home}; fr-pbd never replaces a store")
            state = _State.new(model_id, dim)
            dek = os.urandom(DEK_LEN)
            header = _make_header(state, provider.wrap(dek))
            _write(home, header.encode(), dek, state)
        return cls(home, provider, _CONSTRUCT)

    @classmethod
    def open(cls, home: str | os.PathLike[str], *, key_provider: KeyProvider | None = None) -> "Store":
        """Open the store in ``home``, checking permissions and that the key opens it.

        Raises StoreError (no store), StorePermissionError (modes), KeyProviderError
        (key missing), WrongKeyError (another key/passphrase), StoreIntegrityError
        (damaged/tampered/truncated). Nothing is written on any failure.
        """
        home = Path(home)
        provider = key_provider if key_provider is not None else DeviceFileKeyProvider.default(home)
        _check_provider(provider)
        store = cls(home, provider, _CONSTRUCT)
        store.read()
        return store

    # -- reading and writing ----------------------------------------------------
    def _load(self) -> tuple[bytes, fmt.Header, bytes, _State]:
        """Read, parse, unwrap, decrypt. Caller holds the lock. Writes nothing."""
        _check_home(self._home)
        try:
            data = _fs.read_private_file(self.path, max_size=_MAX_FILE)
        except FileNotFoundError:
            raise StoreError(f"no fr-pbd store in {self._home}") from None
        return _open_bytes(data, self._provider)

    def read(self) -> StoreView:
        """A decrypted, read-only snapshot (shared lock while reading)."""
        with _fs.file_lock(self._lock_path(), exclusive=False):
            _, _, _, state = self._load()
        return StoreView(state)

    def _lock_path(self) -> Path:
        _check_home(self._home)
        return self._home / LOCK_FILE

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[tuple[bytes, fmt.Header, bytes, _State]]:
        with _fs.file_lock(self._lock_path(), exclusive=True):
            loaded = self._load()
            self._provider.after_open(loaded[1].key_id)
            _fs.remove_stale_temps(self._home)
            yield loaded

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """``with store.transaction() as tx:`` re-reads under an exclusive lock, writes on success.

        The lock is held for the whole block; keep it short (do not run the
        face model inside it unless you mean to serialise verifications).
        """
        with self._exclusive() as (hbytes, _header, dek, state):
            tx = Transaction(state)
            try:
                yield tx
                if tx._dirty:
                    state.generation += 1
                    _write(self._home, hbytes, dek, state)
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
        with self.transaction() as tx:
            return tx.remove_user(user)

    def set_fallback(self, secret: str) -> None:
        with self.transaction() as tx:
            tx.set_fallback(secret)

    def check_fallback(self, secret: str) -> bool:
        return self.read().check_fallback(secret)

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

    def _rewrite(self, new_provider: KeyProvider | None, *, renew: bool) -> None:
        target_owner = new_provider if new_provider is not None else self._provider
        _check_provider(target_owner)
        with self._exclusive() as (_hbytes, _header, _dek, state):
            if renew:
                new_rot = _random_rotation(state.dim)
                step = new_rot @ state.rotation.T
                for u in state.users.values():
                    if u.templates.shape[0]:
                        t = _protect_rows(u.templates, step)
                        t.setflags(write=False)
                        u.templates = t
                new_rot.setflags(write=False)
                state.rotation = new_rot
                state.store_id = os.urandom(fmt.STORE_ID_LEN)
            staged = target_owner.begin_rotation()
            try:
                dek = os.urandom(DEK_LEN)
                header = _make_header(state, staged.wrap(dek))
                state.generation += 1
                _write(self._home, header.encode(), dek, state)
            except BaseException:
                staged.abort_rotation()
                raise
            staged.commit_rotation()
            if not self._provider.same_key_material(target_owner):
                self._provider.destroy()
            self._provider = target_owner


_CONSTRUCT = object()


def _check_home(home: Path) -> None:
    try:
        _fs.check_private(home, directory=True)
    except FileNotFoundError:
        raise StoreError(f"no fr-pbd home at {home}") from None


def _check_provider(p: object) -> None:
    if not isinstance(p, KeyProvider):
        raise TypeError("key_provider must be a fr_pbd.store.KeyProvider")


def _make_header(state: _State, w: WrappedKey) -> fmt.Header:
    return fmt.Header(state.store_id, state.model_id, w.provider_id, w.params, w.key_id, w.wrapped)


def _open_bytes(data: bytes, provider: KeyProvider) -> tuple[bytes, fmt.Header, bytes, _State]:
    """Parse, unwrap, authenticate and decode a whole store file held in memory.

    Raises StoreIntegrityError (incl. WrongKeyError) or KeyProviderError; nothing else
    for malformed input.
    """
    header, hlen = fmt.parse_header(data)
    fmt.check_body_length(len(data) - hlen)
    _check_dek_not_erased(header)
    dek = provider.unwrap(WrappedKey(header.provider_id, header.provider_params, header.key_id, header.wrapped_dek))
    hbytes = bytes(data[:hlen])
    nonce = bytes(data[hlen : hlen + fmt.NONCE_LEN])
    try:
        payload = AESGCM(dek).decrypt(nonce, bytes(data[hlen + fmt.NONCE_LEN :]), hbytes)
    except InvalidTag:
        raise StoreIntegrityError(
            "the store failed authentication: it was modified, truncated, or is not the file this key protects"
        ) from None
    return hbytes, header, dek, _State.decode(payload, header)


def _write(home: Path, hbytes: bytes, dek: bytes, state: _State) -> None:
    payload = state.encode()
    nonce = os.urandom(fmt.NONCE_LEN)
    ct = AESGCM(dek).encrypt(nonce, payload, hbytes)
    _fs.atomic_write(home / STORE_FILE, hbytes + nonce + ct)


# --------------------------------------------------------------------------------------
# erase
# --------------------------------------------------------------------------------------
def erase(home: str | os.PathLike[str], *, key_provider: KeyProvider | None = None) -> None:
    """Crypto-shred the store in ``home``. Irreversible; the CLI asks for confirmation first.

    The store must open with ``key_provider`` (default: the device key file) —
    fr-pbd never destroys a store it cannot open — except a store whose data
    key an interrupted erase already destroyed. Steps, each fsynced: (1) zero
    the wrapped data key in the store header, (2) overwrite and delete the key
    file(s) (device-file provider), (3) overwrite and delete the store file and
    the lock file. Overwriting is best effort on flash; the guarantee comes from
    destroying the keys. ``home`` itself is left in place.
    """
    home = Path(home)
    provider = key_provider if key_provider is not None else DeviceFileKeyProvider.default(home)
    _check_provider(provider)
    _check_home(home)
    path = home / STORE_FILE
    with _fs.file_lock(home / LOCK_FILE, exclusive=True):
        if os.path.lexists(path):
            data = _fs.read_private_file(path, max_size=_MAX_FILE)
            header, hlen = fmt.parse_header(data)
            if any(header.wrapped_dek):
                store = Store(home, provider, _CONSTRUCT)
                store._load()  # must open: raises and touches nothing otherwise
                off = fmt.wrapped_dek_offset(hlen)
                fd = os.open(path, os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0))
                try:
                    os.pwrite(fd, bytes(fmt.WRAPPED_DEK_LEN), off)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            provider.destroy()
            _fs.shred_file(path)
        else:
            provider.destroy()
        _fs.remove_stale_temps(home)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(home / LOCK_FILE)
    _fs.fsync_dir(home)

