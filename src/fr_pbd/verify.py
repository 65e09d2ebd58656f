"""The verifier: where the two phases meet, and where the answer becomes yes or no.

Phase (a) (:mod:`fr_pbd.capture`) turns an image into a Template; phase (b)
(:mod:`fr_pbd.store`, :mod:`fr_pbd.match`) compares it with the encrypted
gallery. This module is the only one that imports both, and what leaves it is a
:class:`Decision` holding one boolean: no score, no template, no matched user.

Lockout (``docs/lockout.md``) follows Android CDD 7.3.10 and NIST SP 800-63B:
after 5 consecutive failed attempts a scope is refused for 30 s, doubling with
each further failure. A scope is one enrolled user (``verify(image, user=...)``,
what the daemon does for PAM_USER) or "any enrolled user" (no claim). The
attempt is counted under the store's exclusive lock *before* the comparison
and cleared only by a success in its scope (or the fallback credential), so no
number of parallel attempts compares more than the attempts left; a success's
clear is written just after the yes is returned (:meth:`Verifier.settle`). A claimed
user that is not enrolled (or whose Unix account changed) is a ``no`` that is
neither looked at nor counted: it cannot lock anyone out. Without a claim,
users whose own lockout is in force are left out of the comparison. While
locked, no image is even looked at. The state lives in the encrypted store, so
it survives a restart.

Accounts: an enrolled name that is a Unix account here is bound to that
account's uid at enrolment; ``verify(user=name)`` matches only that user's
templates, and only while the name still resolves to the same uid. A name that
was no account at enrolment can never open one: if an account of that name
appears later, claims of it are refused.

Presentation-attack detection (:mod:`fr_pbd.capture.liveness`) is on by
default: it looks at the raw decoded frame and the chosen face before the
embedding is computed. An attack is a ``no`` and counts as a failed attempt
(it is a presentation to the lock, so repeated photos lead to the lockout).
It can be switched off only with ``Verifier(..., liveness=False)``, which the
CLI does not expose and which warns (research and tests only; docs/pad.md).

The models come from :func:`fr_pbd.pipeline.build_pipeline`: the board in force
(``board=`` here, else ``board`` in the home's ``config.toml``, else the defaults)
decides how they run, never what is decided.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from fr_pbd import models
from fr_pbd.config import check_home_parents, default_home
from fr_pbd.capture.extractor import TemplateExtractor
from fr_pbd.capture.image import ImageSource
from fr_pbd.capture.liveness import LivenessDetector
from fr_pbd.capture.yunet import Face
from fr_pbd.errors import CameraError, ConsentError, KeyProviderError, QualityError, StoreError
from fr_pbd.pipeline import Pipeline, build_pipeline
from fr_pbd.store import STORE_FILE, Store
from fr_pbd.store.fallback import check_strength
from fr_pbd.store.protection import ProtectedMatcher
from fr_pbd.store.transaction import ClaimsView
from fr_pbd.store.records import (
    LOCKOUT_AFTER_FAILURES,
    LOCKOUT_BASE_SECONDS,
    LOCKOUT_MAX_SECONDS,
    LockoutState,
    account_uid,
    lock_seconds,
)
from fr_pbd.timing import StageHook, stage

__all__ = ["Verifier", "Decision", "Consent", "lock_seconds", "open_or_create_store", "check_user_name",
           "LOCKOUT_AFTER_FAILURES", "LOCKOUT_BASE_SECONDS", "LOCKOUT_MAX_SECONDS"]

#: Names a new enrolment may use: the portable Unix login-name characters (POSIX), at most 32.
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


@dataclass(frozen=True, slots=True)
class Decision:
    """The only thing verification returns: accepted or not."""

    accepted: bool

    def __bool__(self) -> bool:
        return self.accepted


@dataclass(frozen=True)
class Consent:
    """The user's explicit opt-in to enrolment: which consent text they confirmed, on which device."""

    text_version: str
    device_id: str = socket.gethostname() or "device"


def _now() -> datetime:
    return datetime.now(timezone.utc)


def check_user_name(user: object) -> str:
    """``user`` if it may be enrolled: 1-32 of ``[A-Za-z0-9._-]``, not starting with ``-`` (ValueError)."""
    if (not isinstance(user, str) or not 1 <= len(user) <= 32 or not set(user) <= _NAME_CHARS
            or user.startswith("-") or user in (".", "..")):
        raise ValueError("a user name must be 1-32 characters of A-Z a-z 0-9 . _ - (not starting with -): "
                         "the Unix login name, for PAM")
    return user


def open_or_create_store(home: Path, model_id: str, dim: int) -> Store:
    """The store in ``home``; created (empty, with a fresh device key) only if there is none."""
    check_home_parents(home)  # a home another user could swap is refused before it is created
    if not os.path.lexists(home / STORE_FILE):
        try:
            return Store.create(home, model_id=model_id, dim=dim)
        except StoreError:
            if not os.path.lexists(home / STORE_FILE):  # not a lost creation race: a real error
                raise
    return Store.open(home)


class _PresentationAttack(Exception):
    """Internal: the liveness check refused the face (never leaves :meth:`Verifier.verify`)."""


class Verifier:
    """Enrolment and verification against the store in one home directory."""

    def __init__(self, home: Path | None = None, extractor: TemplateExtractor | None = None,
                 liveness: bool | LivenessDetector = True, *, board: str | None = None,
                 stage_hook: StageHook | None = None) -> None:
        """``liveness``: True (default) loads the PAD models; a detector uses that one; False disables PAD.

        ``extractor`` injects a ready extractor (tests); otherwise the models come from
        :func:`~fr_pbd.pipeline.build_pipeline` for ``board`` (else the config's board).
        ``stage_hook`` receives each stage's duration (``fr-pbd bench``), never data.
        """
        self.home = Path(home) if home is not None else default_home()
        self._extractor = extractor
        self._injected = extractor is not None
        self._home_checked = False
        self._store: Store | None = None
        # Clears after a success, written after the answer (docs/lockout.md): every later store
        # operation of this verifier waits for them (_settle), and so does process exit (not daemon threads).
        self._clears: list[threading.Thread] = []
        self._clear_errors: list[Exception] = []
        self._clears_lock = threading.Lock()
        self._counter: ThreadPoolExecutor | None = None  # counts an attempt beside the embedder (_start_count)
        if liveness is False:
            warnings.warn("presentation-attack detection is OFF: a photo or a screen may be accepted "
                          "(research and tests only)", stacklevel=2)
        self._liveness: LivenessDetector | bool = liveness
        self._board = board
        self._pipeline: Pipeline | None = None
        self.stage_hook = stage_hook
        # Why the last verify() said what it said, for a daemon's own log and the CLI's stderr:
        # "accepted", "no_match", "presentation_attack", "locked_out", "unknown_user",
        # "account_changed" or a quality reason code. Never a score. check_fallback() sets
        # "accepted", "wrong_fallback" or "fallback_locked".
        self.last_reason: str | None = None
        # With "locked_out" / "fallback_locked": whole seconds until the lock ends (else 0).
        self.retry_after: int = 0

    @property
    def board(self) -> str:
        """The board in force: the explicit one, else ``board`` in the home's config.toml, else the defaults."""
        if self._board is None:
            from fr_pbd import config
            from fr_pbd.pipeline import DEFAULT_BOARD

            self._board = config.load(self.home).board or DEFAULT_BOARD
        return self._board

    @property
    def pipeline(self) -> Pipeline:
        """The assembled models for this verifier's board (built once per process and board)."""
        if self._pipeline is None:
            self._pipeline = build_pipeline(self.board, liveness=self._liveness is True)
        return self._pipeline

    @property
    def liveness(self) -> LivenessDetector | None:
        """The PAD detector, or None if it was switched off explicitly."""
        if self._liveness is False:
            return None
        if self._liveness is True:
            self._liveness = self.pipeline.liveness or False
        return self._liveness or None

    def _check_presentation(self, frame: np.ndarray, face: Face) -> None:
        pad = self.liveness
        if pad is not None and not pad.is_live(frame, face):
            raise _PresentationAttack()

    def load_models(self) -> None:
        """Load the embedder and the PAD models now (a camera attempt's time budget is for frames)."""
        _ = self.extractor, self.liveness

    @property
    def extractor(self) -> TemplateExtractor:
        if self._extractor is None:
            self._extractor = self.pipeline.extractor
        return self._extractor

    def describe(self) -> str:
        """What runs here (board, embedder graph, liveness), for a log line: never what it saw."""
        if self._injected:
            return f"injected extractor ({self.extractor.model_id}); liveness {'on' if self.liveness else 'OFF'}"
        return self.pipeline.describe()

    @staticmethod
    def threshold(model_id: str) -> float:
        return models.threshold(model_id)

    def store(self) -> Store:
        """The store handle, opened once; waits for a success's clear still being written (:meth:`settle`).

        The handle keeps no template and no key between operations: only the claims and
        lockouts of the file version it last read (:meth:`fr_pbd.store.Store.claims`).
        """
        self.settle()
        if self._store is None:
            if not self._home_checked:  # ssh StrictModes: nobody else may swap the home or a directory above it
                check_home_parents(self.home)
                self._home_checked = True
            self._store = Store.open(self.home)
        return self._store

    def settle(self) -> None:
        """Wait until the lockout clears of this verifier's successes are written (docs/lockout.md).

        Called by every store operation of this verifier, and to be called before a daemon
        stops (process exit waits for them anyway). A clear that could not be written (the
        count stays one higher, the safe direction) raises its error here, once.
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

    def _read(self) -> "tuple[Store, ClaimsView]":
        """The handle and the claims and lockouts now (from the store's cache while the file is unchanged).

        The handle is opened afresh once if the key custody changed.
        """
        store = self.store()
        try:
            return store, store.claims()
        except KeyProviderError:
            if not os.path.lexists(self.home / STORE_FILE):
                raise
            self._store = None  # e.g. `fr-pbd keys migrate` in another process: the header names a new provider
            store = self.store()
            return store, store.claims()

    def _open_for_enrolment(self) -> Store:
        if not os.path.lexists(self.home / STORE_FILE):
            raise ConsentError("set a fallback PIN or passphrase first (fr-pbd fallback set): "
                               "face verification must never be the only way in")
        store = self.store()
        if not store.read().has_fallback:
            raise ConsentError("set a fallback PIN or passphrase first (fr-pbd fallback set): "
                               "face verification must never be the only way in")
        return store

    def _prove(self, store: Store, fallback: object, what: str) -> None:
        """The fallback credential, rate limited like every entry; ConsentError if it is not given right."""
        if not isinstance(fallback, str) or not fallback:
            raise ConsentError(f"{what} needs the fallback PIN or passphrase (proof that the household agrees)")
        result = store.fallback_attempt(fallback)
        self.last_reason = {"accepted": "accepted", "wrong": "wrong_fallback"}.get(result, "fallback_locked")
        if result == "locked":
            self.retry_after = store.read().fallback_lockout.retry_after()
            raise ConsentError(f"the fallback PIN is locked for {self.retry_after} s after too many wrong "
                               f"entries; nothing was changed")
        if result != "accepted":
            raise ConsentError("wrong fallback PIN or passphrase; nothing was changed")

    def check_enrolment(self, user: str, fallback: str | None = None) -> None:
        """Everything :meth:`enroll` checks before it looks at a face: name, store, account, and the proof.

        Without ``fallback`` all but the proof (so the CLI can say "set a fallback
        first" before it asks for one). The CLI calls it before it shows the consent
        text: no image is read before consent. Raises ValueError / ConsentError;
        writes nothing but the PIN's attempt count.
        """
        check_user_name(user)
        store = self._open_for_enrolment()
        self._binding(store.read(), user)
        if fallback is not None:
            self._prove(store, fallback, "enrolment")

    @staticmethod
    def _binding(view, user: str) -> int | None:
        """The uid to bind ``user`` to (None: no account of that name); ConsentError if it changed."""
        uid = account_uid(user)
        if view.template_count(user) and view.uid_of(user) != uid:
            raise ConsentError(f"the Unix account {user!r} is not the one {user!r} was enrolled for "
                               f"(deleted, re-created or created since): unenroll {user!r} first")
        return uid

    def enroll(self, user: str, images: Iterable[ImageSource], consent: Consent | None, *, fallback: str) -> int:
        """Record the opt-in and add one template per image; returns the user's template count.

        Proof first (``docs/lockout.md``): the store's fallback PIN/passphrase,
        ``fallback``, must be given right (rate limited: 5 wrong entries lock it
        30 s, doubling) before any image is looked at. Every image must pass the
        enrolment gate, and for a user who already has templates every new image
        must match them at the verification threshold (as phones ask for the
        passcode and the enrolled face before adding an appearance). The name is
        bound to the Unix account of that name (its uid) if there is one.
        Nothing is written unless all of this holds (but the PIN's attempt count).
        """
        if not isinstance(consent, Consent):
            raise ConsentError("enrolment needs the user's explicit consent (a Consent record)")
        check_user_name(user)
        images = list(images)
        if not images:
            raise ValueError("enrolment needs at least one image")
        store = self._open_for_enrolment()
        self._prove(store, fallback, "enrolment")
        uid = self._binding(store.read(), user)
        ext = self.extractor
        templates = []
        for i, image in enumerate(images, 1):
            try:
                templates.append(ext.template(image, "enrol"))
            except QualityError as exc:
                raise QualityError(exc.reason, f"{_where(image, i)}: {exc}") from None
        with store.transaction() as tx:
            if not tx.has_fallback:
                raise ConsentError("set a fallback PIN or passphrase first (fr-pbd fallback set): "
                                   "face verification must never be the only way in")
            if self._binding(tx, user) != uid:
                raise ConsentError(f"the Unix account {user!r} changed during enrolment; nothing was stored")
            if tx.template_count(user):
                matcher = tx.matcher()
                thr = self.threshold(tx.model_id)
                for i, (image, t) in enumerate(zip(images, templates), 1):
                    if not matcher.matches(t, thr, user):
                        raise ConsentError(f"{_where(image, i)} does not match {user}'s enrolled face: only the "
                                           f"same person can be added to {user}; nothing was stored")
            tx.record_consent(user, text_version=consent.text_version, device_id=consent.device_id, uid=uid)
            return tx.add_templates(user, templates)

    def _claim(self, view, user: str) -> str | None:
        """None if ``user`` may be verified; else the reason it is a no without a look."""
        if view.template_count(user) == 0:
            return "unknown_user"
        if account_uid(user) != view.uid_of(user):
            return "account_changed"
        return None

    def refusal_without_look(self, user: str | None = None) -> str | None:
        """Why an attempt for ``user`` would be a no before any frame is taken, else None.

        "unknown_user", "account_changed" or "locked_out" (then :attr:`retry_after`
        is set). The daemon asks this before it opens the camera: a claim that
        cannot succeed never costs a frame.
        """
        _store, view = self._read()
        if user is not None:
            refused = self._claim(view, user)
            if refused:
                return refused
        if view.lockout_of(user).is_locked(_now()):
            self.retry_after = view.lockout_of(user).retry_after(_now())
            return "locked_out"
        return None

    def verify(self, image: ImageSource, user: str | None = None) -> Decision:
        """Yes or no for one image. ``user``: that user's templates only; None: any enrolled user's.

        Locked out, or a claimed user that is not enrolled (or whose account
        changed): no, without looking at the image, not counted. No usable face:
        no, not counted. Otherwise the attempt is counted as a failure under the
        exclusive lock before the comparison and cleared if it succeeds (the
        clear is written after the answer: :meth:`settle`). A presentation
        attack: no, counted.
        """
        return self.verify_frames(iter((image,)), user)

    def verify_frames(self, frames: Iterator[ImageSource], user: str | None = None, *,
                      max_frames: int = 1, until: float | None = None) -> Decision:
        """One attempt over up to ``max_frames`` frames: yes at the first frame that is live and matches.

        The camera path (``docs/lockout.md``): a user who blinked or turned away in
        the first frame is not refused for it. Each frame goes through liveness and
        the embedder; the attempt is counted once, under the exclusive lock, before
        the first comparison (so a multi-frame attempt is one attempt for the
        lockout): the count starts as soon as a frame's face passes the quality gate and
        is written while the embedder runs (:meth:`_start_count`); it is cleared if a
        frame matches (after the answer). A presentation attack in any
        frame, with no frame matching, is a counted no. No new frame is started
        once ``until`` (``time.monotonic()``) would be passed by a frame as slow as
        the slowest so far. A source that fails after the first frame ends the
        attempt; one that fails on the first frame raises (CameraError).
        """
        if max_frames < 1:
            raise ValueError("an attempt needs at least one frame")
        hook = self.stage_hook
        self.last_reason, self.retry_after = None, 0
        with stage(hook, "store_read"):
            store, view = self._read()
        if user is not None:
            refused = self._claim(view, user)
            if refused:
                self.last_reason = refused
                return Decision(False)
        if view.lockout_of(user).is_locked(_now()):
            return self._locked(view, user)
        counting: list[Future] = []  # the count, started beside the embedder of the first usable frame

        def usable() -> None:
            if not counting:
                counting.append(self._start_count(store, user))

        try:
            return self._attempt(frames, user, max_frames, until, store, counting, usable)
        finally:
            for f in counting:  # an error on the way: the count still lands before the next store operation
                f.exception()

    def _attempt(self, frames: Iterator[ImageSource], user: str | None, max_frames: int, until: float | None,
                 store: Store, counting: "list[Future]", usable: Callable[[], None]) -> Decision:
        """The frames of one attempt (:meth:`verify_frames`, after its pre-check)."""
        hook = self.stage_hook
        matcher = None  # set when the attempt is counted (before the first comparison)
        attack, quality, decide, slowest = False, None, 0.0, 0.0
        for k in range(max_frames):
            t_frame = time.monotonic()
            if k and until is not None and t_frame + slowest > until:
                break
            try:
                image = next(frames)
            except StopIteration:
                break
            except CameraError:
                if k == 0:
                    raise
                break
            try:
                probe = self.extractor.template(image, "verify", check=self._check_presentation, hook=hook,
                                                on_usable=usable)
            except QualityError as exc:
                quality = exc.reason
                slowest = max(slowest, time.monotonic() - t_frame)
                continue
            except _PresentationAttack:
                attack = True
                slowest = max(slowest, time.monotonic() - t_frame)
                continue
            if matcher is None:
                t0 = time.perf_counter()
                counted = self._counted(store, user, counting)
                decide += time.perf_counter() - t0
                if counted is None:
                    return self._refused_late(store, user, hook, decide)
                matcher, thr, written = counted
            with stage(hook, "match"):
                accepted = matcher.matches(probe, thr, user)
            if accepted:
                del matcher
                t0 = time.perf_counter()
                self._clear_after_answer(store, user, written)
                decide += time.perf_counter() - t0
                if hook is not None:
                    hook("decide", decide)
                self.last_reason = "accepted"
                return Decision(True)
            slowest = max(slowest, time.monotonic() - t_frame)
        if attack and matcher is None:  # an attack is a presentation to the lock: it counts
            t0 = time.perf_counter()
            counted = self._counted(store, user, counting)
            decide += time.perf_counter() - t0
            if counted is None:
                return self._refused_late(store, user, hook, decide)
            matcher = counted[0]
        if hook is not None and matcher is not None:
            hook("decide", decide)
        if attack:
            self.last_reason = "presentation_attack"
        elif matcher is not None:
            self.last_reason = "no_match"
        else:
            self.last_reason = quality or "no_face"
        return Decision(False)

    def _start_count(self, store: Store, user: str | None) -> Future:
        """Count the attempt in this verifier's counting thread, while the embedder runs.

        Called (through the extractor's ``on_usable``) once a frame's face has passed the
        quality gate: from there the frame is an attempt whatever liveness says (an attack
        counts too), so counting it now changes nothing of what is counted, only when: its
        encrypted, fsync'd write overlaps the embedder instead of following it (issue 16,
        docs/lockout.md). The comparison still waits for it (:meth:`_counted`). The
        thread's duration goes to the stage hook as ``count``.
        """
        if self._counter is None:
            self._counter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fr-pbd-count")
        hook = self.stage_hook

        def count():
            t0 = time.perf_counter()
            try:
                return self._count_attempt(store, user)
            finally:
                if hook is not None:
                    hook("count", time.perf_counter() - t0)

        return self._counter.submit(count)

    def _counted(self, store: Store, user: str | None, counting: "list[Future]") \
            -> "tuple[ProtectedMatcher, float, LockoutState] | None":
        """The count started beside the embedder (waited for here), or one made now if none was started."""
        if counting:
            return counting[0].result()
        return self._count_attempt(store, user)

    def _count_attempt(self, store: Store, user: str | None) \
            -> "tuple[ProtectedMatcher, float, LockoutState] | None":
        """Count a failure first, under the exclusive lock: the matcher, threshold and the lockout state
        written, or None if refused now."""
        with store.transaction() as tx:
            now = _now()
            lock = tx.lockout_of(user)
            if lock.is_locked(now) or (user is not None and self._claim(tx, user)):
                return None
            written = lock.after_failure(now)
            tx.set_lockout(written, user)
            matcher = tx.matcher(exclude=tx.locked_users(now) if user is None else frozenset())
            return matcher, self.threshold(tx.model_id), written

    def _clear_after_answer(self, store: Store, user: str | None, written: LockoutState) -> None:
        """A success clears its scope's count: written by a thread, after the yes is returned (docs/lockout.md).

        Compare-and-set: the count is cleared only if it is still the state this attempt
        wrote, so an attempt counted since (another process, another thread) is never
        wiped. Until it is written the count is one higher than it will be, the safe
        direction: a crash before it leaves it so. The thread is not a daemon thread, so
        the interpreter waits for it at exit; :meth:`settle` waits for it before any other
        store operation of this verifier. Its duration goes to the stage hook as ``clear``.
        """
        hook = self.stage_hook

        def clear() -> None:
            t0 = time.perf_counter()
            try:
                with store.transaction() as tx:
                    if tx.lockout_of(user) == written:
                        tx.reset_lockout(user)
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

    def _refused_late(self, store: Store, user: str | None, hook: StageHook | None, decide: float) -> Decision:
        """Locked (or the claim went away) between the first look and the count: a no, not counted."""
        if hook is not None:
            hook("decide", decide)
        view = store.claims()
        if user is not None and self._claim(view, user):
            self.last_reason = self._claim(view, user)
            return Decision(False)
        return self._locked(view, user)

    def _locked(self, view, user: str | None) -> Decision:
        self.last_reason = "locked_out"
        self.retry_after = view.lockout_of(user).retry_after(_now())
        return Decision(False)

    def set_fallback(self, secret: str, model_id: str | None = None, dim: int = 128, *,
                     current: str | None = None) -> None:
        """Set the fallback PIN/passphrase (creating the store on first use); replacing it needs ``current``.

        At least 6 characters (a PIN of 6 digits or more), not one character
        repeated, not a straight run of digits. ``current`` is checked like any
        entry (rate limited) before anything changes.
        """
        check_strength(secret)
        self.settle()
        store = open_or_create_store(self.home, model_id or self.default_model_id(), dim)
        if store.read().has_fallback:
            if current is None:
                raise ConsentError("a fallback credential is already set: give the current one to replace it")
            self._prove(store, current, "replacing the fallback credential")
        store.set_fallback(secret)

    def check_fallback(self, secret: str) -> bool:
        """The alternative to the face: works while the face is locked, and a right entry clears every face lockout.

        Rate limited on its own (5 wrong entries, then 30 s doubling; counted
        before the comparison); a face success does not clear it. While it is
        locked the entry is not compared: False, ``last_reason`` "fallback_locked".
        """
        store = self.store()
        result = store.fallback_attempt(secret)
        self.last_reason = {"accepted": "accepted", "wrong": "wrong_fallback"}.get(result, "fallback_locked")
        self.retry_after = store.read().fallback_lockout.retry_after() if result != "accepted" else 0
        return result == "accepted"

    @staticmethod
    def default_model_id() -> str:
        from fr_pbd.capture import dlib_resnet

        return dlib_resnet.MODEL_ID


def _where(image: object, i: int) -> str:
    return str(image) if isinstance(image, (str, Path)) else f"image {i}"
