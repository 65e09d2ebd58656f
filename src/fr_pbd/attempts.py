"""The attempt and lockout protocol (docs/lockout.md), in one place.

After 5 consecutive failed attempts a scope is refused for 30 s, doubling with each further
failure (Android CDD 7.3.10, NIST SP 800-63B). A scope is one enrolled user (a claimed
attempt, what PAM asks) or "any enrolled user" (no claim). The protocol of one attempt:

1. :meth:`AttemptProtocol.precheck`, outside the store's lock, from the claims the store
   handle caches: a claimed user that is not enrolled (or whose Unix account changed) is a
   no that is neither looked at nor counted, so nobody can lock another user out with bogus
   names; a locked scope is a no before any frame is taken.
2. :meth:`AttemptProtocol.count`, under the store's exclusive lock, *before* the first
   comparison: the claim and the lock are checked again (another process may have changed
   them since step 1) and a failure is written, so no number of parallel attempts compares
   more than the attempts left. It runs beside the embedder (:meth:`start_count`).
3. A success clears its scope's count *after* the answer (:meth:`clear_after_answer`),
   compare-and-set, so an attempt counted since is never wiped; every later store operation
   waits for it (:meth:`settle`). A crash before it leaves the count one higher, the safe
   direction.

Clocks: a lock is stored as a UTC time (``locked_until``), so it survives a restart. A wall
clock can jump: set forward, it would end a lock early; set back, it would stretch it. So the
protocol also keeps, per scope it has seen locked, the end of the lock on the boot clock
(``CLOCK_BOOTTIME``: never set, counts suspend), and a scope is locked while *either* clock
says so. Set back, the wall clock makes a lock last longer, the safe direction, until it is
right again. Within a running process (the daemon) a clock change therefore cannot shorten a
lock. Across a restart only the stored time is known; that limit is in docs/lockout.md.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

from fr_pbd.errors import StoreError
from fr_pbd.outcome import ACCOUNT_CHANGED, LOCKED, UNKNOWN_USER, Outcome
from fr_pbd.store import Store
from fr_pbd.store.protection import ProtectedMatcher
from fr_pbd.store.records import LockoutState, account_uid, lock_seconds
from fr_pbd.timing import StageHook

__all__ = ["AttemptProtocol", "Counted", "utc_now"]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _boot_clock() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


@dataclass(frozen=True)
class Counted:
    """An attempt counted under the lock: the matcher to compare with, its threshold, the state written."""

    matcher: ProtectedMatcher
    threshold: float
    written: LockoutState


def claim_refusal(view, user: str) -> str | None:
    """Why a claim of ``user`` is a no without a look (``unknown_user``, ``account_changed``), else None."""
    if view.template_count(user) == 0:
        return UNKNOWN_USER
    if account_uid(user) != view.uid_of(user):
        return ACCOUNT_CHANGED
    return None


class AttemptProtocol:
    """Counts, refuses and clears attempts against one store; see the module docstring for the order."""

    def __init__(self, threshold: Callable[[str], float], *, now: Callable[[], datetime] = utc_now,
                 boot_clock: Callable[[], float] = _boot_clock) -> None:
        self._threshold = threshold
        self._now = now
        self._boot = boot_clock
        self._boot_until: dict[str | None, float] = {}  # scope -> end of its lock on the boot clock
        self._shadow_lock = threading.Lock()
        self._clears: list[threading.Thread] = []
        self._clear_errors: list[Exception] = []
        self._clears_lock = threading.Lock()
        self._counter: ThreadPoolExecutor | None = None

    # -- the lock, on both clocks -----------------------------------------------------------
    def _seconds_left(self, lock: LockoutState, scope: str | None, now: datetime) -> int:
        """Whole seconds the scope stays locked (0: not locked), the later of both clocks' answers."""
        boot = self._boot()
        stored = lock.retry_after(now)
        allowed = lock_seconds(lock.failures)
        with self._shadow_lock:
            if stored > allowed:  # the wall clock was set back: longer now, but the boot clock's end stays
                self._boot_until.setdefault(scope, boot + allowed)
            elif stored:
                self._boot_until[scope] = max(self._boot_until.get(scope, 0.0), boot + stored)
            elif lock.failures == 0:
                self._boot_until.pop(scope, None)  # cleared (a success or the fallback PIN)
            shadow = self._boot_until.get(scope, 0.0) - boot
        return max(stored, int(shadow) + (shadow % 1 > 0)) if shadow > 0 else stored

    def _locked(self, lock: LockoutState, scope: str | None, now: datetime) -> Outcome | None:
        left = self._seconds_left(lock, scope, now)
        return Outcome(False, LOCKED, retry_after=left) if left else None

    # -- 1. before a frame ------------------------------------------------------------------
    def precheck(self, view, user: str | None) -> Outcome | None:
        """The no an attempt for ``user`` gets before any frame is taken, else None (outside the lock)."""
        if user is not None:
            refused = claim_refusal(view, user)
            if refused:
                return Outcome(False, refused)
        return self._locked(view.lockout_of(user), user, self._now())

    # -- 2. counted before the first comparison ---------------------------------------------
    def count(self, store: Store, user: str | None) -> Counted | Outcome:
        """Count a failure under the exclusive lock; the no (not counted) if the claim or lock changed."""
        with store.transaction() as tx:
            now = self._now()
            lock = tx.lockout_of(user)
            if user is not None:
                refused = claim_refusal(tx, user)
                if refused:
                    return Outcome(False, refused)
            locked = self._locked(lock, user, now)
            if locked is not None:
                return locked
            written = lock.after_failure(now)
            tx.set_lockout(written, user)
            exclude = tx.locked_users(now) if user is None else frozenset()
            return Counted(tx.matcher(exclude=exclude), self._threshold(tx.model_id), written)

    def start_count(self, store: Store, user: str | None, hook: StageHook | None) -> "Future[Counted | Outcome]":
        """:meth:`count` in this protocol's counting thread, while the embedder runs.

        Called once a frame's face has passed the quality gate: from there the frame is an
        attempt whatever liveness says (an attack counts too), so counting it now changes
        nothing of what is counted, only when: its encrypted, fsync'd write overlaps the
        embedder instead of following it. The comparison waits for it. Its duration goes to
        the stage hook as ``count``.
        """
        if self._counter is None:
            self._counter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fr-pbd-count")

        def count() -> Counted | Outcome:
            t0 = time.perf_counter()
            try:
                return self.count(store, user)
            finally:
                if hook is not None:
                    hook("count", time.perf_counter() - t0)

        return self._counter.submit(count)

    # -- 3. a success's clear, after the answer ---------------------------------------------
    def clear_after_answer(self, store: Store, user: str | None, written: LockoutState,
                           hook: StageHook | None) -> None:
        """Clear the scope's count in a (non-daemon) thread, compare-and-set, after the yes is returned."""
        def clear() -> None:
            t0 = time.perf_counter()
            try:
                with store.transaction() as tx:
                    if tx.lockout_of(user) == written:
                        tx.reset_lockout(user)
                        with self._shadow_lock:
                            self._boot_until.pop(user, None)
            except Exception as exc:  # noqa: BLE001 - kept and raised by the next store operation (settle)
                with self._clears_lock:
                    self._clear_errors.append(exc)
                return
            if hook is not None:
                hook("clear", time.perf_counter() - t0)

        t = threading.Thread(target=clear, name="fr-pbd-lockout-clear", daemon=False)
        with self._clears_lock:
            self._clears.append(t)
            t.start()

    def settle(self) -> None:
        """Wait until the clears of this protocol's successes are written; a failed one raises here, once.

        A clear that could not be written leaves the count one higher, the safe direction.
        """
        with self._clears_lock:
            pending, self._clears = self._clears, []
        for t in pending:
            t.join()
        with self._clears_lock:
            errors, self._clear_errors = self._clear_errors, []
        if errors:
            exc = errors[0]
            if isinstance(exc, StoreError):
                raise exc
            raise StoreError(f"the lockout count after the last success could not be cleared "
                             f"({type(exc).__name__}); it stays counted") from None

    def forget_lock(self, scope: str | None) -> None:
        """The fallback PIN cleared the locks: the boot-clock shadow goes with them."""
        with self._shadow_lock:
            if scope is None:
                self._boot_until.clear()
            else:
                self._boot_until.pop(scope, None)
