"""What callers hold on a decrypted store: a read-only :class:`StoreView` and a :class:`Transaction`.

Both wrap a :class:`~fr_pbd.store.records.StoreState` and expose no template
and no rotation. A transaction changes the state in memory and marks it dirty;
:meth:`fr_pbd.store.Store.transaction` writes it (locking and file I/O are
there, not here).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from types import MappingProxyType

import numpy as np

from fr_pbd.errors import ConsentError, StoreError
from fr_pbd.store import _format as fmt
from fr_pbd.store.fallback import check_fallback, hash_fallback
from fr_pbd.store.protection import ProtectedMatcher, protect_rows
from fr_pbd.store.records import ConsentRecord, LockoutState, StoreState, UserRecord, utc
from fr_pbd.template import Template

__all__ = ["StoreView", "Transaction", "ClaimsView"]


class StoreView:
    """A read-only, decrypted snapshot of the store (taken under a shared lock).

    Holds no key. Exposes no template and no rotation: only counts, consent
    records, lockout state, the fallback check, and a :class:`ProtectedMatcher`.
    """

    def __init__(self, state: StoreState) -> None:
        self._state = state
        self._open = True

    def _st(self) -> StoreState:
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

    def uid_of(self, user: str) -> int | None:
        """The uid of the Unix account ``user`` was bound to at enrolment; None if none (or no such user)."""
        u = self._st().users.get(user)
        return None if u is None else u.uid

    @property
    def lockout(self) -> LockoutState:
        """Face attempts that claim no user ("any enrolled user")."""
        return self._st().lockout

    def lockout_of(self, user: str | None) -> LockoutState:
        """Face attempts claiming ``user`` (None: no claim, :attr:`lockout`); a fresh state for an unknown user."""
        if user is None:
            return self._st().lockout
        u = self._st().users.get(user)
        return LockoutState() if u is None else u.lockout

    def locked_users(self, now: datetime | None = None) -> frozenset[str]:
        """Users whose own face lockout is in force at ``now``."""
        return frozenset(n for n, u in self._st().users.items() if u.lockout.is_locked(now))

    @property
    def fallback_lockout(self) -> LockoutState:
        """Wrong fallback PIN/passphrase entries (:meth:`fr_pbd.store.Store.check_fallback`)."""
        return self._st().fallback_lockout

    @property
    def has_fallback(self) -> bool:
        return self._st().fallback is not None

    @property
    def fallback_min_len(self) -> int | None:
        """The minimum length the fallback was set under (0: unknown, before 6); None if none is set."""
        fb = self._st().fallback
        return None if fb is None else int(fb.get("min_len", 0))

    def check_fallback(self, secret: str) -> bool:
        """The bare comparison (scrypt, ~0.3 s), not rate limited and writing nothing. False if none is set.

        Anything a person types must go through :meth:`fr_pbd.store.Store.check_fallback`
        (counted, locked after 5 wrong entries); this one is for an audit's read-only probe.
        """
        return check_fallback(self._st().fallback, secret)

    def matcher(self, exclude: frozenset[str] = frozenset()) -> ProtectedMatcher:
        """A :class:`ProtectedMatcher` over every user's templates but ``exclude``'s (those without are absent)."""
        return ProtectedMatcher.of(self._st(), frozenset(exclude))


class ClaimsView:
    """What a verification looks at before it takes a frame: who is enrolled, bound to which uid, and locked.

    Made from a decrypted state by :meth:`fr_pbd.store.Store.claims` and kept between
    verifications (``docs/store-format.md``, "Keys in process memory"): per user the
    template *count*, the uid binding and the face lockout; the "any enrolled user" and
    fallback lockouts; model id, dimension, store id, generation. No template, no rotation, no
    consent record, no fallback hash: nothing biometric and no secret. Immutable.
    """

    __slots__ = ("model_id", "dim", "store_id", "generation", "lockout", "fallback_lockout", "has_fallback",
                 "_users")

    def __init__(self, state: StoreState) -> None:
        set_ = object.__setattr__
        set_(self, "model_id", state.model_id)
        set_(self, "dim", state.dim)
        set_(self, "store_id", state.store_id.hex())
        set_(self, "generation", state.generation)
        set_(self, "lockout", state.lockout)
        set_(self, "fallback_lockout", state.fallback_lockout)
        set_(self, "has_fallback", state.fallback is not None)
        set_(self, "_users", MappingProxyType(
            {n: (int(u.templates.shape[0]), u.uid, u.lockout) for n, u in state.users.items()}))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("a ClaimsView is read-only")

    def __repr__(self) -> str:
        return f"ClaimsView(users={len(self._users)}, model_id={self.model_id!r})"

    @property
    def users(self) -> tuple[str, ...]:
        return tuple(sorted(self._users))

    def template_count(self, user: str) -> int:
        u = self._users.get(user)
        return 0 if u is None else u[0]

    def uid_of(self, user: str) -> int | None:
        u = self._users.get(user)
        return None if u is None else u[1]

    def lockout_of(self, user: str | None) -> LockoutState:
        """As :meth:`StoreView.lockout_of`."""
        if user is None:
            return self.lockout
        u = self._users.get(user)
        return LockoutState() if u is None else u[2]

    def locked_users(self, now: datetime | None = None) -> frozenset[str]:
        return frozenset(n for n, u in self._users.items() if u[2].is_locked(now))


class Transaction(StoreView):
    """A :class:`StoreView` that can change the store; only valid inside ``Store.transaction()``.

    Changes are written (atomically, durably) when the ``with`` block exits
    normally, and discarded if it raises. Nothing is written if nothing changed.
    """

    def __init__(self, state: StoreState) -> None:
        super().__init__(state)
        self._dirty = False

    def record_consent(
        self, user: str, *, text_version: str, device_id: str, time: datetime | None = None,
        uid: int | None = None,
    ) -> ConsentRecord:
        """Record (or renew) ``user``'s explicit opt-in, bound to the Unix account ``uid`` (None: no account).

        Existing templates and the user's lockout are kept; the binding is replaced
        (the verifier decides it: :meth:`fr_pbd.verify.Verifier.enroll`).
        """
        st = self._st()
        fmt.check_text(user, "user")
        fmt.check_text(text_version, "consent text version")
        fmt.check_text(device_id, "device id")
        if uid is not None and (not isinstance(uid, int) or isinstance(uid, bool) or not 0 <= uid <= fmt.MAX_UID):
            raise ValueError(f"uid must be None or an int in [0, {fmt.MAX_UID}]")
        rec = ConsentRecord(user, utc(time), text_version, device_id)
        old = st.users.get(user)
        if old is None:
            st.users[user] = UserRecord(rec, np.zeros((0, st.dim), dtype=np.float32), uid)
        else:
            st.users[user] = UserRecord(rec, old.templates, uid, old.lockout)
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
        new = protect_rows(np.stack([t.vector for t in tpls]), st.rotation)
        merged = np.concatenate([u.templates, new], axis=0)
        merged.setflags(write=False)
        u.templates = merged
        self._dirty = True
        return int(merged.shape[0])

    def remove_user(self, user: str) -> bool:
        """Remove ``user``'s templates and consent record in this transaction. False if unknown.

        To *withdraw* a user use :meth:`fr_pbd.store.Store.remove_user`, which also
        re-keys the store so that an older copy no longer opens with the current key.
        """
        st = self._st()
        if user not in st.users:
            return False
        del st.users[user]
        self._dirty = True
        return True

    def set_fallback(self, secret: str) -> None:
        """Set (or replace) the store's fallback PIN/passphrase: scrypt N=2**17, r=8, p=1, fresh salt."""
        st = self._st()
        st.fallback = hash_fallback(secret)
        self._dirty = True

    def set_lockout(self, state: LockoutState, user: str | None = None) -> None:
        """Replace the face lockout of ``user`` (None: attempts that claim no user). Unknown user: no-op."""
        if not isinstance(state, LockoutState):
            raise TypeError("state must be a LockoutState")
        st = self._st()
        if user is None:
            if state != st.lockout:
                st.lockout = state
                self._dirty = True
            return
        u = st.users.get(user)
        if u is not None and state != u.lockout:
            u.lockout = state
            self._dirty = True

    def reset_lockout(self, user: str | None = None) -> None:
        self.set_lockout(LockoutState(), user)

    def reset_face_lockouts(self) -> None:
        """Clear every face lockout: no claim and every user's (a correct fallback entry does this)."""
        self.reset_lockout()
        for name in list(self._st().users):
            self.reset_lockout(name)

    def set_fallback_lockout(self, state: LockoutState) -> None:
        """Replace the fallback PIN's lockout state (written with the transaction)."""
        if not isinstance(state, LockoutState):
            raise TypeError("state must be a LockoutState")
        st = self._st()
        if state != st.fallback_lockout:
            st.fallback_lockout = state
            self._dirty = True
