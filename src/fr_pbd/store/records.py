"""What the store holds, in plaintext: consent and lockout records, the decrypted state, its payload codec.

:class:`StoreState` is the whole decrypted store in memory; ``encode``/``decode``
map it to and from the payload's metadata dict and arrays, and
:mod:`fr_pbd.store._format` turns those into bytes (and validates them). No file
I/O and no keys here: encryption is :mod:`fr_pbd.store.envelope`.

The lockout policy lives here too, because the store applies it to the fallback
PIN itself and the verifier to face attempts (``docs/lockout.md``): after
:data:`LOCKOUT_AFTER_FAILURES` consecutive failures the scope is locked for
:data:`LOCKOUT_BASE_SECONDS`, doubling with each further failure, capped at
:data:`LOCKOUT_MAX_SECONDS`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import numpy as np

from fr_pbd import accounts
from fr_pbd.errors import StoreIntegrityError
from fr_pbd.store import _format as fmt

__all__ = [
    "ConsentRecord",
    "LockoutState",
    "UserRecord",
    "StoreState",
    "utc",
    "lock_seconds",
    "account_uid",
    "LOCKOUT_AFTER_FAILURES",
    "LOCKOUT_BASE_SECONDS",
    "LOCKOUT_MAX_SECONDS",
]

_TIME_FMT = "%Y-%m-%dT%H:%M:%SZ"

#: Android CDD 7.3.10: 5 failed attempts, then at least 30 s; NIST SP 800-63B allows at most
#: 100 consecutive failures per account. Both the face and the fallback PIN follow this.
LOCKOUT_AFTER_FAILURES = 5
LOCKOUT_BASE_SECONDS = 30
LOCKOUT_MAX_SECONDS = 24 * 3600


def lock_seconds(failures: int) -> int:
    """30 s at the 5th consecutive failure, doubling with each further one (capped at a day)."""
    if failures < LOCKOUT_AFTER_FAILURES:
        return 0
    return min(LOCKOUT_MAX_SECONDS, LOCKOUT_BASE_SECONDS * 2 ** min(failures - LOCKOUT_AFTER_FAILURES, 20))


def account_uid(name: str) -> int | None:
    """The uid of the Unix account called ``name`` on this machine, or None if there is none.

    Read from /etc/passwd itself: the daemon calls this at every attempt, and must not
    tell nscd or systemd's userdb who is logging in (:mod:`fr_pbd.accounts`)."""
    return accounts.uid_of(name)


def utc(t: datetime | None, *, ceil: bool = False) -> datetime:
    """``t`` (default: now) in UTC, whole seconds (rounded up with ``ceil``); refuses naive datetimes."""
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
    return fmt.parse_time(s, "time")  # strptime's strictness, without its cost in the usual case


@dataclass(frozen=True)
class ConsentRecord:
    """An explicit, recorded opt-in: who, when (UTC, whole seconds), which consent text, on which device."""

    user: str
    time: datetime
    text_version: str
    device_id: str


@dataclass(frozen=True)
class LockoutState:
    """One lockout scope's state: an enrolled user's face, "any enrolled user", or the fallback PIN.

    ``failures``: consecutive failed attempts. ``locked_until``: UTC time until
    which attempts are refused, or ``None``. Stored with whole seconds, rounded
    *up* so that storing never shortens a lock.
    """

    failures: int = 0
    locked_until: datetime | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.failures, int) or isinstance(self.failures, bool) or not 0 <= self.failures < 2**31:
            raise ValueError("failures must be an int in [0, 2**31)")
        if self.locked_until is not None:
            object.__setattr__(self, "locked_until", utc(self.locked_until, ceil=True))

    def is_locked(self, now: datetime | None = None) -> bool:
        return self.locked_until is not None and utc(now) < self.locked_until

    def retry_after(self, now: datetime | None = None) -> int:
        """Whole seconds until the lock ends (rounded up); 0 if not locked."""
        if not self.is_locked(now):
            return 0
        now = datetime.now(timezone.utc) if now is None else now
        return max(1, math.ceil((self.locked_until - now).total_seconds()))

    def after_failure(self, now: datetime | None = None) -> "LockoutState":
        """The state once one more failure is counted (the policy above decides the lock)."""
        failures = min(self.failures + 1, 2**31 - 1)
        seconds = lock_seconds(failures)
        now = datetime.now(timezone.utc) if now is None else now
        return LockoutState(failures, now + timedelta(seconds=seconds) if seconds else None)


@dataclass
class UserRecord:
    """One user: consent record, *protected* templates ((n, D) float32, read-only), account, lockout.

    ``uid``: the Unix account the name was bound to at enrolment (its uid), or
    ``None`` if the name was no account on this machine then. ``lockout``: this
    user's face attempts (a claimed ``verify(user=...)``).
    """

    consent: ConsentRecord
    templates: np.ndarray
    uid: int | None = None
    lockout: LockoutState = field(default_factory=LockoutState)


class StoreState:
    """The decrypted store. ``rotation`` is the secret template protection (:mod:`fr_pbd.store.protection`)."""

    __slots__ = ("store_id", "model_id", "dim", "generation", "users", "fallback", "lockout", "rotation",
                 "fallback_lockout")

    def __init__(
        self,
        store_id: bytes,
        model_id: str,
        dim: int,
        generation: int,
        users: dict[str, UserRecord],
        fallback: dict | None,
        lockout: LockoutState,
        rotation: np.ndarray,
        fallback_lockout: LockoutState | None = None,
    ) -> None:
        self.store_id = store_id
        self.model_id = model_id
        self.dim = dim
        self.generation = generation
        self.users = users
        self.fallback = fallback
        self.lockout = lockout  # "any enrolled user" (no claimed user)
        self.rotation = rotation
        self.fallback_lockout = fallback_lockout if fallback_lockout is not None else LockoutState()

    @classmethod
    def new(cls, model_id: str, dim: int, rotation: np.ndarray) -> "StoreState":
        """An empty store with a fresh random store id, protected by ``rotation``."""
        return cls(os.urandom(fmt.STORE_ID_LEN), model_id, dim, 0, {}, None, LockoutState(), rotation)

    @classmethod
    def decode(cls, payload: bytes, header: fmt.Header) -> "StoreState":
        """Parse an authenticated payload; StoreIntegrityError if it is malformed or not this header's.

        A payload of format 1 (before accounts and per-user lockouts) is read as
        format 2: each name that is a Unix account *now* is bound to that
        account's uid (format 1 enrolled login names without recording them), its
        lockout counters start at zero, and its fallback is marked as set before
        the 6-character minimum. The next write stores format 2.
        """
        meta, rotation, templates = fmt.decode_payload(payload)
        if meta["model_id"] != header.model_id or bytes.fromhex(meta["store_id"]) != header.store_id:
            raise StoreIntegrityError("the store payload does not belong to its header")
        v1 = meta["format"] == 1
        users: dict[str, UserRecord] = {}
        row = 0
        for u in meta["users"]:
            n = u["templates"]
            c = u["consent"]
            rec = ConsentRecord(u["name"], _parse_time(c["time"]), c["text_version"], c["device_id"])
            t = templates[row : row + n]
            t.setflags(write=False)
            if v1:
                users[u["name"]] = UserRecord(rec, t, account_uid(u["name"]), LockoutState())
            else:
                users[u["name"]] = UserRecord(rec, t, u["uid"], _lockout(u["lockout"]))
            row += n
        fallback = meta["fallback"]
        if v1 and fallback is not None:
            fallback = {**fallback, "min_len": 0}  # unknown: set under the old 4-character minimum
        rotation.setflags(write=False)
        return cls(
            header.store_id,
            header.model_id,
            meta["dim"],
            meta["generation"],
            users,
            fallback,
            _lockout(meta["lockout"]),
            rotation,
            LockoutState() if v1 else _lockout(meta["fallback_lockout"]),
        )

    def encode(self) -> bytes:
        """The padded plaintext payload (docs/store-format.md, section 3)."""
        names = sorted(self.users)
        meta = {
            "format": fmt.PAYLOAD_FORMAT,
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
                    "uid": self.users[n].uid,
                    "lockout": _lockout_meta(self.users[n].lockout),
                }
                for n in names
            ],
            "fallback": self.fallback,
            "lockout": _lockout_meta(self.lockout),
            "fallback_lockout": _lockout_meta(self.fallback_lockout),
        }
        if names:
            tpl = np.concatenate([self.users[n].templates for n in names], axis=0)
        else:
            tpl = np.zeros((0, self.dim), dtype=np.float32)
        return fmt.encode_payload(meta, self.rotation, tpl)


def _lockout(lo: dict) -> LockoutState:
    until = None if lo["locked_until"] is None else _parse_time(lo["locked_until"])
    return LockoutState(lo["failures"], until)


def _lockout_meta(lo: LockoutState) -> dict:
    return {
        "failures": lo.failures,
        "locked_until": None if lo.locked_until is None else _fmt_time(lo.locked_until),
    }
