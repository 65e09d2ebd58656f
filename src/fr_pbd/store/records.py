"""What the store holds, in plaintext: consent and lockout records, the decrypted state, its payload codec.

:class:`StoreState` is the whole decrypted store in memory; ``encode``/``decode``
map it to and from the payload's metadata dict and arrays, and
:mod:`fr_pbd.store._format` turns those into bytes (and validates them). No I/O
and no keys here: encryption is :mod:`fr_pbd.store.envelope`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np

from fr_pbd.errors import StoreIntegrityError
from fr_pbd.store import _format as fmt

__all__ = ["ConsentRecord", "LockoutState", "UserRecord", "StoreState", "utc"]

_TIME_FMT = "%Y-%m-%dT%H:%M:%SZ"


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
            object.__setattr__(self, "locked_until", utc(self.locked_until, ceil=True))

    def is_locked(self, now: datetime | None = None) -> bool:
        return self.locked_until is not None and utc(now) < self.locked_until


@dataclass
class UserRecord:
    """One user: the consent record and the *protected* templates, (n, D) float32, read-only."""

    consent: ConsentRecord
    templates: np.ndarray


class StoreState:
    """The decrypted store. ``rotation`` is the secret template protection (:mod:`fr_pbd.store.protection`)."""

    __slots__ = ("store_id", "model_id", "dim", "generation", "users", "fallback", "lockout", "rotation")

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
    ) -> None:
        self.store_id = store_id
        self.model_id = model_id
        self.dim = dim
        self.generation = generation
        self.users = users
        self.fallback = fallback
        self.lockout = lockout
        self.rotation = rotation

    @classmethod
    def new(cls, model_id: str, dim: int, rotation: np.ndarray) -> "StoreState":
        """An empty store with a fresh random store id, protected by ``rotation``."""
        return cls(os.urandom(fmt.STORE_ID_LEN), model_id, dim, 0, {}, None, LockoutState(), rotation)

    @classmethod
    def decode(cls, payload: bytes, header: fmt.Header) -> "StoreState":
        """Parse an authenticated payload; StoreIntegrityError if it is malformed or not this header's."""
        meta, rotation, templates = fmt.decode_payload(payload)
        if meta["model_id"] != header.model_id or bytes.fromhex(meta["store_id"]) != header.store_id:
            raise StoreIntegrityError("the store payload does not belong to its header")
        users: dict[str, UserRecord] = {}
        row = 0
        for u in meta["users"]:
            n = u["templates"]
            c = u["consent"]
            rec = ConsentRecord(u["name"], _parse_time(c["time"]), c["text_version"], c["device_id"])
            t = templates[row : row + n]
            t.setflags(write=False)
            users[u["name"]] = UserRecord(rec, t)
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
        """The padded plaintext payload (docs/store-format.md, section 3)."""
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
