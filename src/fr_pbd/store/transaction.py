"""What callers hold on a decrypted store: a read-only :class:`StoreView` and a :class:`Transaction`.

Both wrap a :class:`~fr_pbd.store.records.StoreState` and expose no template
and no rotation. A transaction changes the state in memory and marks it dirty;
:meth:`fr_pbd.store.Store.transaction` writes it (locking and file I/O are
there, not here).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import numpy as np

from fr_pbd.errors import ConsentError, StoreError
from fr_pbd.store import _format as fmt
from fr_pbd.store.fallback import check_fallback, hash_fallback
from fr_pbd.store.protection import ProtectedMatcher, protect_rows
from fr_pbd.store.records import ConsentRecord, LockoutState, StoreState, UserRecord, utc
from fr_pbd.template import Template

__all__ = ["StoreView", "Transaction"]


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

    @property
    def lockout(self) -> LockoutState:
        return self._st().lockout

    @property
    def has_fallback(self) -> bool:
        return self._st().fallback is not None

    def check_fallback(self, secret: str) -> bool:
        """Constant-time check of the fallback PIN/passphrase (scrypt, ~0.3 s). False if none is set."""
        return check_fallback(self._st().fallback, secret)

    def matcher(self) -> ProtectedMatcher:
        """A :class:`ProtectedMatcher` over every user's templates (users without templates are absent)."""
        return ProtectedMatcher.of(self._st())


class Transaction(StoreView):
    """A :class:`StoreView` that can change the store; only valid inside ``Store.transaction()``.

    Changes are written (atomically, durably) when the ``with`` block exits
    normally, and discarded if it raises. Nothing is written if nothing changed.
    """

    def __init__(self, state: StoreState) -> None:
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
        rec = ConsentRecord(user, utc(time), text_version, device_id)
        old = st.users.get(user)
        tpl = old.templates if old is not None else np.zeros((0, st.dim), dtype=np.float32)
        st.users[user] = UserRecord(rec, tpl)
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
        st.fallback = hash_fallback(secret)
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
